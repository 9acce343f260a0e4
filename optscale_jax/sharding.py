"""The question axis over every local JAX device: a 1-D mesh, padding, sharded fits and N*.

Questions are independent (every fit and every N* is per row), so the natural way to use
several devices is to cut the question axis into equal shards, one per device, of a 1-D
:class:`jax.sharding.Mesh` whose only axis is :data:`AXIS`:

* :func:`question_mesh` builds that mesh over ``jax.local_devices()`` (or the devices
  given);
* :func:`pad_rows` pads the question axis to a multiple of the device count (padded
  rows carry no sample, or a harmless placeholder fit, and are cut off again);
* :func:`fit_prefixes_sharded` runs :func:`optscale_jax.fit.fit_prefixes` on each
  device's shard (the fit API validates its input on the host, so each shard is one
  dispatch of the same compiled program, placed on its device; the dispatches are
  asynchronous, so the devices work at once) and assembles the fields into global
  arrays sharded as ``PartitionSpec(AXIS)``;
* :func:`n_star_sharded` is :func:`optscale_jax.nstar.n_star_for_fits` with the fitted
  parameters placed on the mesh: :func:`optscale_jax.nstar.n_star` then runs as one
  SPMD program over the shards.

With one device every function here calls the plain one directly: a no-op. Results are
equal to the plain functions' (``tests/test_scale.py`` runs both under
``XLA_FLAGS=--xla_force_host_platform_device_count=2``). Multi-host runs and GPUs:
``docs/SCALING.md``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec
from jax.typing import ArrayLike

from optscale_jax.fit import FitResult, fit_prefixes, validate_scores
from optscale_jax.model import GaussianPrior
from optscale_jax.nstar import n_star, n_star_for_fits

__all__ = [
    "AXIS",
    "fit_prefixes_sharded",
    "n_star_sharded",
    "pad_rows",
    "question_mesh",
    "question_sharding",
    "slice_rows",
]

#: Name of the mesh axis the questions are cut along.
AXIS = "questions"


def question_mesh(devices: Sequence[Any] | None = None) -> Mesh:
    """A 1-D mesh over the given devices (default: every local device), axis :data:`AXIS`.

    Examples:
        >>> question_mesh().axis_names
        ('questions',)
    """
    devs = list(jax.local_devices() if devices is None else devices)
    if not devs:
        raise ValueError("devices: expected at least one JAX device, got none")
    return Mesh(np.array(devs), (AXIS,))


def question_sharding(mesh: Mesh) -> NamedSharding:
    """Rows (axis 0) split over the mesh's question axis, everything else replicated."""
    return NamedSharding(mesh, PartitionSpec(AXIS))


def pad_rows(x: np.ndarray, multiple: int, fill: Any) -> np.ndarray:
    """Pad axis 0 of ``x`` with ``fill`` up to a multiple of ``multiple`` rows.

    Examples:
        >>> pad_rows(np.arange(3), 2, -1).tolist()
        [0, 1, 2, -1]
    """
    if int(multiple) < 1:
        raise ValueError(f"multiple must be >= 1, got {multiple!r}")
    x = np.asarray(x)
    rows = x.shape[0]
    extra = -rows % int(multiple)
    if extra == 0:
        return x
    pad = np.full((extra,) + x.shape[1:], fill, dtype=x.dtype)
    return np.concatenate([x, pad], axis=0)


def slice_rows(value: Any, rows: slice | np.ndarray, n_rows: int) -> Any:
    """The rows of a per-question value: arrays whose axis 0 has ``n_rows`` entries are
    indexed, scalars and other shapes are kept, and named tuples (e.g.
    :class:`~optscale_jax.model.GaussianPrior`) are sliced field by field.

    Args:
        value: None, a scalar, an array, or a named tuple of those.
        rows: a slice or integer index array of the question axis.
        n_rows: the number of questions ``value`` is for.
    """
    if value is None:
        return None
    if isinstance(value, tuple) and hasattr(value, "_fields"):
        return type(value)(*(slice_rows(v, rows, n_rows) for v in value))
    if hasattr(value, "batch_shape"):  # a numpyro distribution: not sliced here
        return value
    shape = np.shape(value)
    if len(shape) >= 1 and shape[0] == n_rows:
        return np.asarray(value)[rows]
    return value


def _mesh(mesh: Mesh | None) -> Mesh:
    return question_mesh() if mesh is None else mesh


def _pad_prior(prior: GaussianPrior, q: int, total: int) -> GaussianPrior:
    """Per-question prior fields padded (with the last row's value) to ``total`` rows."""
    fields = []
    for value in prior:
        if np.shape(value) == (q,) and not isinstance(value, jax.Array):
            v = np.asarray(value, dtype=float)
            fields.append(pad_rows(v, max(total, 1), v[-1] if q else 0.0)[:total])
        else:
            fields.append(value)
    return GaussianPrior(*fields)


def fit_prefixes_sharded(
    scores: ArrayLike,
    mask: ArrayLike | None = None,
    prior: Any = None,
    *,
    lengths: ArrayLike | None = None,
    mesh: Mesh | None = None,
    **options: Any,
) -> FitResult:
    """:func:`~optscale_jax.fit.fit_prefixes` with the question axis over a 1-D mesh.

    Rows are padded (with sample-free rows) to a multiple of the device count, each
    device fits its shard, and the fields come back as ``(Q, L)`` arrays sharded along
    :data:`AXIS`. One device, a prior that is not a :class:`GaussianPrior` (numpyro
    distributions are not sliced), or a single question: the plain function.

    Args:
        scores, mask, prior, lengths, options: as :func:`~optscale_jax.fit.fit_prefixes`.
        mesh: a mesh from :func:`question_mesh` (default: every local device).

    Returns:
        A :class:`~optscale_jax.fit.FitResult` equal to ``fit_prefixes``'s.
    """
    if mesh is None and jax.local_device_count() == 1:  # one device: the plain function, no wrapper
        return fit_prefixes(scores, mask, prior, lengths=lengths, **options)
    mesh = _mesh(mesh)
    devices = list(mesh.devices.flat)
    d = len(devices)
    plain = d == 1 or np.ndim(scores) == 1 or not (prior is None or isinstance(prior, GaussianPrior))
    if plain:
        return fit_prefixes(scores, mask, prior, lengths=lengths, **options)
    s, m = validate_scores(scores, mask)
    q, n = s.shape
    if q < 2:
        return fit_prefixes(s, m, prior, lengths=lengths, **options)
    s = pad_rows(s, d, 0.5)
    m = pad_rows(m, d, False)
    total = s.shape[0]
    per = total // d
    full_prior = None if prior is None else _pad_prior(prior, q, total)
    parts = []
    for i, dev in enumerate(devices):
        rows = slice(i * per, (i + 1) * per)
        with jax.default_device(dev):
            part = fit_prefixes(s[rows], m[rows], slice_rows(full_prior, rows, total),
                                lengths=lengths, **options)
        parts.append(jax.device_put(part, dev))
    sharding = question_sharding(mesh)
    fields = []
    for k in range(len(FitResult._fields)):
        pieces = [p[k] for p in parts]
        shape = (total,) + pieces[0].shape[1:]
        glob = jax.make_array_from_single_device_arrays(shape, sharding, pieces)
        fields.append(glob[:q] if total != q else glob)
    return FitResult(*fields)


def n_star_sharded(
    mu: ArrayLike,
    sigma: ArrayLike,
    s_min: ArrayLike,
    alpha: ArrayLike,
    *,
    n_max: int,
    rule: str = "closed",
    mesh: Mesh | None = None,
) -> np.ndarray:
    """:func:`~optscale_jax.nstar.n_star_for_fits` with the question axis (axis 0 of
    ``mu`` and ``sigma``) over a 1-D mesh.

    The fitted parameters are padded to a multiple of the device count and placed on the
    mesh; ``s_min`` and ``alpha`` (small grids) are replicated. Failed fits get
    ``n_max`` as in the plain function. One device, 0-d ``mu``, or ``rule="official"``
    (the authors' grid scan first reduces the fits to their distinct pairs, on the host):
    the plain function.

    Returns:
        int64 numpy array equal to ``n_star_for_fits``'s.
    """
    if mesh is None and jax.local_device_count() == 1:  # one device: the plain function, no wrapper
        return n_star_for_fits(mu, sigma, s_min, alpha, n_max=n_max, rule=rule)
    mesh = _mesh(mesh)
    d = mesh.devices.size
    mu = np.asarray(mu, dtype=np.float64)
    sigma = np.asarray(sigma, dtype=np.float64)
    if d == 1 or rule != "closed" or mu.ndim == 0 or mu.shape[0] < 2:
        return n_star_for_fits(mu, sigma, s_min, alpha, n_max=n_max, rule=rule)
    mu, sigma = np.broadcast_arrays(mu, sigma)
    q = mu.shape[0]
    ok = np.isfinite(mu) & np.isfinite(sigma) & (sigma > 0)
    mu_s = pad_rows(np.where(ok, mu, 0.5), d, 0.5)
    sg_s = pad_rows(np.where(ok, sigma, 0.1), d, 0.1)
    sharding = question_sharding(mesh)
    dtype = jnp.result_type(float)
    mu_d = jax.device_put(mu_s.astype(dtype), sharding)
    sg_d = jax.device_put(sg_s.astype(dtype), sharding)
    s_arr = np.asarray(s_min, dtype=np.float64)
    a_arr = np.asarray(alpha, dtype=np.float64)
    out = n_star(mu_d, sg_d, s_arr, a_arr, n_min=1, n_max=int(n_max))
    n = np.asarray(out)[:q].astype(np.int64)
    ok_b = np.broadcast_to(ok, np.broadcast_shapes(ok.shape, n.shape))
    return np.where(ok_b, np.clip(n, 1, int(n_max)), int(n_max))


def shards(q: int, mesh: Mesh | None = None) -> int:
    """Rows per device for ``q`` questions on the mesh (after padding)."""
    d = _mesh(mesh).devices.size
    return math.ceil(q / d) if q else 0
