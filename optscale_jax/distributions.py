r"""The normal distribution truncated to [0, 1], stable in both tails.

A PRM score S of one question is modelled as a normal with location ``loc`` (μ)
and scale ``scale`` (σ) truncated to [0, 1]; μ and σ are the parameters of the
*untruncated* normal, not the mean and standard deviation of S.

Everything is computed in log space on the standardised interval
:math:`a = -\mu/\sigma`, :math:`b = (1-\mu)/\sigma`, with interval probabilities
mirrored into the left tail and split so that the large parts cancel exactly
(the numerics, and how, are in the private ``optscale_jax._truncnorm``); log
densities, CDFs and quantiles stay accurate 10⁵ standard deviations out, in
float32 too, with finite gradients.

numpyro's ``TruncatedNormal`` and ``jax.scipy.stats.truncnorm`` lose the
normaliser in the far tail (``tests/test_distributions.py`` shows where, against
60-digit mpmath); this module is what the score model uses instead.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from jax.typing import ArrayLike
from numpyro.distributions import constraints
from numpyro.distributions.distribution import Distribution
from numpyro.distributions.util import promote_shapes

from optscale_jax._truncnorm import (
    LN2,
    central_moments,
    log1mexp,
    log_cdf_sf_inside,
    log_density_formula,
    moment_match,
)

__all__ = [
    "TruncatedNormal01",
    "truncnorm01_log_prob",
    "truncnorm01_log_cdf",
    "truncnorm01_log_sf",
    "truncnorm01_icdf",
    "moments",
    "params_from_moments",
    "log1mexp",
]

# log1mexp lives with the numerics; its example still runs with this module's doctests.
__test__ = {"log1mexp": log1mexp}


def _broadcast(*args):
    arrays = [jnp.asarray(a) for a in args]
    dtype = jnp.result_type(*arrays, float)
    return jnp.broadcast_arrays(*[a.astype(dtype) for a in arrays])


@jax.jit
def truncnorm01_log_prob(x: ArrayLike, loc: ArrayLike, scale: ArrayLike) -> jax.Array:
    r"""Log density of N(loc, scale²) truncated to [0, 1]; ``-inf`` outside [0, 1].

    .. math:: \log p(x) = -\tfrac{(x-\mu)^2}{2\sigma^2} - \log\sigma - \tfrac12\log 2\pi
              - \log(\Phi(b) - \Phi(a))

    Args:
        x: points.
        loc: location μ of the untruncated normal.
        scale: scale σ > 0 of the untruncated normal.

    Returns:
        The log density, broadcast over the inputs.

    Examples:
        >>> round(float(truncnorm01_log_prob(0.5, 0.5, 1e6)), 6)  # ~ uniform
        0.0
    """
    x, loc, scale = _broadcast(x, loc, scale)
    inside = (x >= 0.0) & (x <= 1.0)
    return jnp.where(inside, log_density_formula(jnp.clip(x, 0.0, 1.0), loc, scale), -jnp.inf)


@jax.jit
def _log_cdf_sf(x, loc, scale):
    x, loc, scale = _broadcast(x, loc, scale)
    log_cdf, log_sf = log_cdf_sf_inside(jnp.clip(x, 0.0, 1.0), loc, scale)
    log_cdf = jnp.where(x < 0.0, -jnp.inf, jnp.where(x >= 1.0, 0.0, log_cdf))
    log_sf = jnp.where(x < 0.0, 0.0, jnp.where(x >= 1.0, -jnp.inf, log_sf))
    return log_cdf, log_sf


@jax.jit
def truncnorm01_log_cdf(x: ArrayLike, loc: ArrayLike, scale: ArrayLike) -> jax.Array:
    """``log F(x)`` of the normal truncated to [0, 1], accurate when F is near 0 or 1.

    Args:
        x: points (values outside [0, 1] give ``-inf`` / ``0``).
        loc: location μ.
        scale: scale σ > 0.

    Returns:
        ``log P(S <= x)``.

    Examples:
        >>> import numpy as np
        >>> float(np.exp(truncnorm01_log_cdf(0.5, 0.5, 0.1)))
        0.5
    """
    return _log_cdf_sf(x, loc, scale)[0]


@jax.jit
def truncnorm01_log_sf(x: ArrayLike, loc: ArrayLike, scale: ArrayLike) -> jax.Array:
    """``log(1 - F(x))`` of the normal truncated to [0, 1].

    Args:
        x: points.
        loc: location μ.
        scale: scale σ > 0.

    Returns:
        ``log P(S > x)``.
    """
    return _log_cdf_sf(x, loc, scale)[1]


@jax.jit
def truncnorm01_icdf(q: ArrayLike, loc: ArrayLike, scale: ArrayLike) -> jax.Array:
    """Quantile function: the x in [0, 1] with F(x) = q.

    Bisection on the accurate log CDF (or log survival function above the
    median), then one Newton step written so that gradients with respect to
    ``loc`` and ``scale`` are the implicit-function ones.

    Args:
        q: probabilities in [0, 1].
        loc: location μ.
        scale: scale σ > 0.

    Returns:
        Quantiles, always inside [0, 1].

    Examples:
        >>> round(float(truncnorm01_icdf(0.5, 0.5, 0.2)), 6)
        0.5
    """
    q, loc, scale = _broadcast(q, loc, scale)
    log_q = jnp.log(q)
    log_1mq = jnp.log1p(-q)
    lower_half = log_q <= -LN2
    loc_s = jax.lax.stop_gradient(loc)
    scale_s = jax.lax.stop_gradient(scale)

    def too_low(x):
        lcdf, lsf = log_cdf_sf_inside(x, loc_s, scale_s)
        return jnp.where(lower_half, lcdf < log_q, lsf > log_1mq)

    def body(_, bounds):
        lo, hi = bounds
        mid = 0.5 * (lo + hi)
        low = too_low(mid)
        return jnp.where(low, mid, lo), jnp.where(low, hi, mid)

    n_iter = 64 if q.dtype == jnp.float64 else 32
    lo, hi = jax.lax.fori_loop(0, n_iter, body, (jnp.zeros_like(q), jnp.ones_like(q)))
    x0 = jax.lax.stop_gradient(0.5 * (lo + hi))
    # Implicit-function Newton step x = x0 - (F(x0) - q) / p(x0), in log form; it
    # carries the gradient, while the value stays the bisection's.
    lcdf, lsf = log_cdf_sf_inside(x0, loc, scale)
    logp = log_density_formula(x0, loc, scale)
    step_lo = (lcdf - log_q) * jnp.exp(jnp.clip(lcdf - logp, -50.0, 50.0))
    step_hi = -(lsf - log_1mq) * jnp.exp(jnp.clip(lsf - logp, -50.0, 50.0))
    step = jnp.where(lower_half, step_lo, step_hi)
    step = jnp.where(jnp.isfinite(step), step, 0.0)
    step = step - jax.lax.stop_gradient(step)
    x = jnp.clip(x0 - step, 0.0, 1.0)
    return jnp.where(q <= 0.0, 0.0, jnp.where(q >= 1.0, 1.0, x))


@jax.jit
def moments(loc: ArrayLike, scale: ArrayLike) -> tuple[jax.Array, jax.Array]:
    """Mean and standard deviation of the normal truncated to [0, 1].

    Args:
        loc: location μ (any shape).
        scale: scale σ > 0 (broadcast with ``loc``).

    Returns:
        ``(mean, std)`` of S.

    Examples:
        >>> m, s = moments(0.5, 1e4)  # nearly uniform
        >>> round(float(m), 6), round(float(s), 6)
        (0.5, 0.288675)
    """
    loc, scale = _broadcast(loc, scale)
    mean, var, _, _ = central_moments(loc, scale)
    return mean, jnp.sqrt(var)


def params_from_moments(
    mean: ArrayLike, std: ArrayLike, *, strict: bool = False
) -> tuple[jax.Array, jax.Array]:
    """(μ, σ) of the normal truncated to [0, 1] that has the given mean and std.

    This is moment matching in an exponential family, i.e. the maximum of the
    expected log density of S under (μ, σ); it is solved with the same box-
    constrained Newton solver as the fits (:mod:`optscale_jax.fit`).

    Not every pair is reachable: for a given mean the standard deviation must
    lie below that of the truncated *exponential* with that mean (the σ → ∞
    limit; 1/√12 for mean 1/2). Unreachable or out-of-range pairs give NaN,
    or, with ``strict=True``, a ``ValueError`` naming the first bad index.

    Args:
        mean: means in (0, 1).
        std: standard deviations > 0.
        strict: raise instead of returning NaN.

    Returns:
        ``(loc, scale)`` broadcast over the inputs.

    Examples:
        >>> loc, scale = params_from_moments(0.5, 0.1)
        >>> m, s = moments(loc, scale)
        >>> round(float(m), 6), round(float(s), 6)
        (0.5, 0.1)
    """
    mean, std = _broadcast(mean, std)
    loc, scale, ok = moment_match(mean, std)
    loc = jnp.where(ok, loc, jnp.nan)
    scale = jnp.where(ok, scale, jnp.nan)
    if strict:
        bad = np.flatnonzero(~np.asarray(ok).ravel())
        if bad.size:
            i = int(bad[0])
            idx = np.unravel_index(i, np.shape(ok)) if np.ndim(ok) else ()
            raise ValueError(
                f"params_from_moments: (mean={float(np.ravel(mean)[i]):.6g}, "
                f"std={float(np.ravel(std)[i]):.6g}) at index {idx} is not reachable by a normal "
                f"truncated to [0, 1] ({bad.size} such pairs in all)"
            )
    return loc, scale


class TruncatedNormal01(Distribution):
    r"""Normal(loc, scale) truncated to [0, 1], stable in both tails.

    A numpyro distribution: use it in models, ``log_prob`` it, sample from it.
    Accurate (and with finite gradients) in float32 and float64 for locations
    far outside the interval and scales from 1e-3 to 10 and beyond.

    Args:
        loc: location μ of the untruncated normal.
        scale: scale σ > 0 of the untruncated normal.
        validate_args: numpyro's argument validation switch.

    Examples:
        >>> import jax
        >>> d = TruncatedNormal01(0.9, 0.1)
        >>> x = d.sample(jax.random.key(0), (1000,))
        >>> bool((x >= 0).all() and (x <= 1).all())
        True
    """

    arg_constraints = {"loc": constraints.real, "scale": constraints.positive}
    support = constraints.unit_interval
    reparametrized_params = ["loc", "scale"]
    pytree_data_fields = ("loc", "scale")

    def __init__(self, loc: ArrayLike = 0.0, scale: ArrayLike = 1.0, *, validate_args=None):
        self.loc, self.scale = promote_shapes(loc, scale)
        batch_shape = jax.lax.broadcast_shapes(jnp.shape(loc), jnp.shape(scale))
        super().__init__(batch_shape=batch_shape, validate_args=validate_args)

    def sample(self, key: jax.Array, sample_shape: tuple[int, ...] = ()) -> jax.Array:
        shape = sample_shape + self.batch_shape
        dtype = jnp.result_type(self.loc, self.scale, float)
        tiny = jnp.finfo(dtype).tiny
        u = jax.random.uniform(key, shape, dtype=dtype, minval=tiny, maxval=1.0)
        return self.icdf(u)

    def log_prob(self, value: ArrayLike) -> jax.Array:
        return truncnorm01_log_prob(value, self.loc, self.scale)

    def cdf(self, value: ArrayLike) -> jax.Array:
        return jnp.exp(truncnorm01_log_cdf(value, self.loc, self.scale))

    def log_cdf(self, value: ArrayLike) -> jax.Array:
        """``log F(value)``."""
        return truncnorm01_log_cdf(value, self.loc, self.scale)

    def log_sf(self, value: ArrayLike) -> jax.Array:
        """``log(1 - F(value))``."""
        return truncnorm01_log_sf(value, self.loc, self.scale)

    def icdf(self, q: ArrayLike) -> jax.Array:
        return truncnorm01_icdf(q, self.loc, self.scale)

    @property
    def mean(self) -> jax.Array:
        return moments(self.loc, self.scale)[0]

    @property
    def variance(self) -> jax.Array:
        return moments(self.loc, self.scale)[1] ** 2


# ---------------------------------------------------------------- feasible moments (NumPy, float64)
# Helpers for data given as moments (the predictor's labels): the largest
# reachable std, moment matching with infeasible pairs projected, and
# quantile pseudo-scores. They take and return NumPy arrays and compute in x64.


def max_truncated_std(mean: ArrayLike) -> np.ndarray:
    r"""Largest std a normal truncated to [0, 1] can have at a given mean.

    The supremum is reached in the limit σ → ∞ with μ/σ² → λ, where the
    truncated normal becomes the truncated exponential ``∝ exp(λx)`` on [0, 1],
    whose mean is ``1/(1 − e^{−λ}) − 1/λ`` and variance
    ``1/λ² − e^{−λ}/(1 − e^{−λ})²``. λ is found by bisection (in log space)
    and the std returned; 0 for means outside (0, 1).

    Args:
        mean: means, any shape.

    Returns:
        The bound, same shape, float64.

    Examples:
        >>> round(float(max_truncated_std(np.array([0.5]))[0] ** 2 * 12), 9)  # uniform
        1.0
        >>> max_truncated_std(np.array([0.0, 1.0])).tolist()
        [0.0, 0.0]
    """
    m = np.asarray(mean, float)
    u = np.where(m < 0.5, 1.0 - m, m)  # symmetric in m ↔ 1 − m
    inside = (u > 0.5) & (u < 1.0)
    target = np.where(inside, u, 0.75)

    def mean_of(lam):
        return 1.0 / -np.expm1(-lam) - 1.0 / lam

    lo, hi = np.full_like(target, -14.0), np.full_like(target, 14.0)  # log λ
    for _ in range(200):
        mid = 0.5 * (lo + hi)
        too_small = mean_of(np.exp(mid)) < target
        lo, hi = np.where(too_small, mid, lo), np.where(too_small, hi, mid)
    lam = np.exp(0.5 * (lo + hi))
    var = 1.0 / lam**2 - np.exp(-lam) / np.expm1(-lam) ** 2
    std = np.sqrt(np.clip(var, 0.0, None))
    std = np.where(inside, std, 0.0)
    return np.where(u == 0.5, np.sqrt(1.0 / 12.0), std)


def params_from_projected_moments(
    mean: ArrayLike, std: ArrayLike, *, shrink: float = 0.95
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """:func:`params_from_moments` after projecting infeasible pairs onto reachable ones.

    Many real score statistics have a std too large for their mean (bimodal
    scores: some near 0, most near 1), which no normal truncated to [0, 1]
    reaches, and :func:`params_from_moments` returns NaN for them. Here every
    std is first capped at ``shrink ×`` :func:`max_truncated_std` of its mean
    (feasible pairs below the cap are unchanged); pairs that still cannot be
    mapped (means at 0 or 1, or a solver limit) are marked invalid. Inputs are
    padded to a power-of-two length (at least 1024) so that repeated calls reuse
    one compiled solver; the solve runs in float64.

    Args:
        mean: moments' means, shape ``(Q,)`` (flattened).
        std: moments' standard deviations, same shape.
        shrink: cap as a fraction of the largest feasible std, in (0, 1).

    Returns:
        ``(loc, scale, valid)``: float64 arrays and a bool mask; loc/scale are
        NaN where ``valid`` is False.

    Raises:
        ValueError: if ``mean`` and ``std`` differ in shape.

    Examples:
        >>> loc, scale, valid = params_from_projected_moments([0.9, 0.9, 1.0], [0.05, 0.4, 0.1])
        >>> valid.tolist()  # std 0.4 is capped and mapped; mean 1 cannot be
        [True, True, False]
        >>> m, s = moments(loc[:1], scale[:1])
        >>> round(float(m[0]), 4), round(float(s[0]), 4)
        (0.9, 0.05)
    """
    mean, std = np.asarray(mean, float).ravel(), np.asarray(std, float).ravel()
    if mean.shape != std.shape:
        raise ValueError(f"mean and std differ in shape: {mean.shape} vs {std.shape}")
    capped = np.minimum(std, shrink * max_truncated_std(mean))
    # pad to a power-of-two length so repeated calls reuse one compiled solver
    q = len(mean)
    size = max(1024, 1 << max(q - 1, 1).bit_length())
    m_pad = np.concatenate([mean, np.full(size - q, 0.5)])
    s_pad = np.concatenate([capped, np.full(size - q, 0.1)])
    with jax.enable_x64(True):
        loc, scale = params_from_moments(jnp.asarray(m_pad), jnp.asarray(s_pad))
    loc, scale = np.asarray(loc, float)[:q], np.asarray(scale, float)[:q]
    valid = np.isfinite(loc) & np.isfinite(scale) & (scale > 0) & (capped > 0)
    return np.where(valid, loc, np.nan), np.where(valid, scale, np.nan), valid


def mid_quantiles(loc: ArrayLike, scale: ArrayLike, k: int) -> np.ndarray:
    """The ``k`` mid-quantiles ``F⁻¹((j + ½)/k)``, j < k, of ``TruncatedNormal01(loc, scale)``.

    They stand in for a sample of k scores from the distribution (computed in
    float64), e.g. to score a distribution given only by its parameters
    through a likelihood.

    Args:
        loc: locations ``(Q,)``, finite.
        scale: scales ``(Q,)``, finite and > 0.
        k: number of quantiles.

    Returns:
        ``(Q, k)`` float64 pseudo-scores in [0, 1], increasing along each row.

    Examples:
        >>> mid_quantiles([0.5], [1e6], 4).round(6).tolist()  # uniform
        [[0.125, 0.375, 0.625, 0.875]]
    """
    q = (np.arange(k) + 0.5) / k
    with jax.enable_x64(True):
        dist = TruncatedNormal01(
            jnp.asarray(loc, jnp.float64)[:, None], jnp.asarray(scale, jnp.float64)[:, None]
        )
        x = dist.icdf(jnp.asarray(q)[None, :])
    return np.clip(np.asarray(x, float), 0.0, 1.0)


__all__ += ["max_truncated_std", "params_from_projected_moments", "mid_quantiles"]
