r"""Batched MLE / MAP fits of (μ, σ) to PRM score vectors, and the posterior.

The objective is the per-question log density of the numpyro
:func:`~optscale_jax.model.score_model` (flat priors: the likelihood, OptScale⁰;
a :class:`~optscale_jax.model.GaussianPrior` or any numpyro prior: MAP,
OptScaleᵗ). It is maximised over the natural parameters η = (μ/σ², −1/(2σ²)),
with σ in [σ_lo, σ_hi], by a projected, eigenvalue-modified Newton method with
an Armijo line search, run on all questions at once (the objective is
separable, so the per-question 2×2 Hessians come from two forward-over-reverse
products). The solver never raises inside a batch: each question gets a
:class:`FitStatus`.

Why natural parameters and a bound on σ: on real PRM scores, piled near 1, the
truncated-normal likelihood often keeps rising as μ → ∞ with σ² growing like μ
(the density tends to a truncated exponential, exp(λx) on [0, 1]). In η the
log-likelihood is concave and that limit is the finite point η = (λ, 0), so
Newton converges in a handful of steps, and with σ ≤ σ_hi the maximiser is
unique and finite: it lies on the edge η₂ = −1/(2σ_hi²), the status says
``BOUNDARY``, and F(s) of the fitted law differs from the limiting exponential
one by O(1/σ_hi²) (about 1e-4 for the default σ_hi = 100).
"""

from __future__ import annotations

import enum
import math
from collections.abc import Callable
from functools import partial
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax.typing import ArrayLike
from numpyro.distributions import Distribution

from optscale_jax._newton import newton_box, value_grad_hess
from optscale_jax._truncnorm import from_natural, solve_stats, to_natural
from optscale_jax.model import GaussianPrior, Prior, as_prior, log_joint, score_model, weak_prior

__all__ = [
    "FitStatus",
    "FitResult",
    "fit_status_usable",
    "fit_mle",
    "fit_map",
    "fit_prefixes",
    "validate_scores",
    "posterior",
    "PosteriorResult",
    "DEFAULT_SIGMA_BOUNDS",
]

DEFAULT_SIGMA_BOUNDS = (1e-3, 100.0)


class FitStatus(enum.IntEnum):
    """Outcome of one question's fit.

    Attributes:
        CONVERGED: interior optimum, Newton decrement below tolerance.
        BOUNDARY: optimum on the edge of the parameter box (e.g. the MLE is at
            μ → ∞ for scores piled near 1); μ, σ finite, F(s) still right.
        NO_DATA: no valid score. MLE: μ, σ are NaN. MAP: the prior's mode.
        DEGENERATE: one score, or all scores equal: the likelihood is unbounded
            as σ → 0; σ is at its lower bound and μ at the common score (MLE).
        MAX_ITER: the iteration budget ran out before convergence.
    """

    CONVERGED = 0
    BOUNDARY = 1
    NO_DATA = 2
    DEGENERATE = 3
    MAX_ITER = 4


def fit_status_usable(status: ArrayLike) -> np.ndarray:
    """True where a fit may be trusted to stop sampling (not NO_DATA, not DEGENERATE).

    Args:
        status: :class:`FitStatus` codes, any shape.

    Returns:
        A bool numpy array of the same shape.

    Examples:
        >>> fit_status_usable([FitStatus.CONVERGED, FitStatus.NO_DATA, FitStatus.BOUNDARY])
        array([ True, False,  True])
    """
    s = np.asarray(status)
    return (s != int(FitStatus.NO_DATA)) & (s != int(FitStatus.DEGENERATE))


class FitResult(NamedTuple):
    """Per-question fit (a pytree; every field has the batch shape).

    Attributes:
        mu: fitted location μ.
        sigma: fitted scale σ.
        log_prob: the maximised log density (log likelihood, plus log prior for MAP).
        status: :class:`FitStatus` codes, int32.
        n: number of valid scores used, int32.
        iterations: Newton iterations taken, int32.
    """

    mu: jax.Array
    sigma: jax.Array
    log_prob: jax.Array
    status: jax.Array
    n: jax.Array
    iterations: jax.Array


# ----------------------------------------------------------------------------
# Input checking (at the API boundary, in numpy: never inside a jitted batch)
# ----------------------------------------------------------------------------


def validate_scores(
    scores: ArrayLike, mask: ArrayLike | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Check and normalise a batch of score vectors.

    Args:
        scores: shape ``(Q, N)`` or ``(N,)`` (one question).
        mask: same shape, True for real samples; default: all entries.

    Returns:
        ``(scores, mask)`` as 2-D float / bool numpy arrays; masked-out entries
        of ``scores`` are set to 0.5.

    Raises:
        ValueError: NaN, infinite or out-of-[0, 1] scores among the valid
            entries (the message names the first row and column), or
            mismatched shapes.

    Examples:
        >>> validate_scores([[0.5, float("nan")]])
        Traceback (most recent call last):
        ...
        ValueError: scores[0, 1] = nan is not a number in [0, 1] (1 bad entries; pass a mask to exclude missing samples)
    """
    try:
        raw = np.asarray(scores)
    except ValueError:  # ragged nested lists
        raise ValueError(
            "scores rows have different lengths; pad them to shape (Q, N) and pass a mask"
        ) from None
    if raw.dtype.kind not in "biuf":  # strings, None, complex: never silently converted
        raise TypeError(f"scores must be real numbers in [0, 1], got dtype {raw.dtype}")
    s = np.asarray(raw, dtype=float)
    if s.ndim == 1:
        s = s[None, :]
    if s.ndim != 2:
        raise ValueError(f"scores must have shape (Q, N) or (N,), got shape {s.shape}")
    if mask is None:
        m = np.ones(s.shape, bool)
    else:
        m = np.asarray(mask, dtype=bool)
        if m.ndim == 1:
            m = m[None, :]
        if m.shape != s.shape:
            raise ValueError(f"mask shape {m.shape} does not match scores shape {s.shape}")
    bad = m & ~(np.isfinite(s) & (s >= 0.0) & (s <= 1.0))
    if bad.any():
        r, c = np.argwhere(bad)[0]
        raise ValueError(
            f"scores[{r}, {c}] = {float(s[r, c])!r} is not a number in [0, 1] "
            f"({int(bad.sum())} bad entries; pass a mask to exclude missing samples)"
        )
    return np.where(m, s, 0.5), m


# ----------------------------------------------------------------------------
# Fits
# ----------------------------------------------------------------------------


def _data_moments(scores, mask):
    n = jnp.sum(mask, axis=-1)
    nn = jnp.maximum(n, 1)
    mean = jnp.sum(jnp.where(mask, scores, 0.0), axis=-1) / nn
    var = jnp.sum(jnp.where(mask, (scores - mean[:, None]) ** 2, 0.0), axis=-1) / nn
    hi = jnp.max(jnp.where(mask, scores, -jnp.inf), axis=-1)
    lo = jnp.min(jnp.where(mask, scores, jnp.inf), axis=-1)
    return n, mean, jnp.sqrt(var), hi - lo


#: Second starting points of MAP searches: a coarse (μ, σ) grid (spacing 0.25 in μ and
#: a factor e^0.66 in σ), of which the best is used.
_START_GRID = tuple(
    np.stack(np.meshgrid(np.linspace(-0.5, 1.5, 9), np.geomspace(0.02, 2.0, 8)), -1)
    .reshape(-1, 2)
    .T
)
#: A row runs the second search only if some grid point beats its first maximum by more
#: than this (nats).
_SECOND_START_MARGIN = 2.0


def _fit_impl(scores, mask, prior, likelihood, init, sigma_bounds, max_iter):
    n, mean, std, spread = _data_moments(scores, mask)
    data_objective = None
    if likelihood is not None:

        def data_objective(theta):
            mu, sigma = from_natural(theta)
            return log_joint(mu, sigma, scores, mask, prior, likelihood=likelihood)

    return _fit_core(n, mean, std, spread, prior, init, sigma_bounds, max_iter, data_objective)


def _fit_core(n, mean, std, spread, prior, init, sigma_bounds, max_iter, data_objective=None):
    """The fit of every row from its data summary: count, mean, std and max - min.

    With the truncated normal (``data_objective`` None) the likelihood depends on the
    scores only through (n, mean, n·std²), so this is the whole fit; another likelihood
    passes its objective in η (which sees the scores).
    """
    dtype = mean.dtype
    m2c = n * std * std
    if init is None:
        init_mu = jnp.where(n > 0, mean, 0.5)
        init_sigma = jnp.where(n > 1, jnp.clip(std, 1e-2, sigma_bounds[1]), 0.1)
    else:
        init_mu, init_sigma = (jnp.broadcast_to(jnp.asarray(v, dtype), mean.shape) for v in init)
    # Search in natural parameters: the log-likelihood is concave there, so
    # Newton converges in a few steps even when the optimum runs off to μ → ∞.
    theta0 = to_natural(init_mu, jnp.clip(init_sigma, *sigma_bounds))

    degenerate = (n == 1) | ((n > 1) & (spread <= 0.0))
    # Without a prior these have no finite optimum: answered in closed form below.
    frozen = (degenerate | (n == 0)) if prior is None else None

    def solve(start, frozen=frozen):
        if data_objective is None:
            return solve_stats(n, mean, m2c, prior, start, sigma_bounds, max_iter, frozen)
        objective = data_objective
        lower = jnp.array([-jnp.inf, -0.5 / sigma_bounds[0] ** 2], dtype)
        upper = jnp.array([jnp.inf, -0.5 / sigma_bounds[1] ** 2], dtype)
        return objective, newton_box(
            objective, partial(value_grad_hess, objective), start, lower, upper, max_iter, frozen
        )

    objective, solved = solve(theta0)
    if prior is not None:
        # The log-likelihood is concave in η, but a prior in (μ, σ) is not: the
        # posterior can have two modes (a narrow one near the scores, a wide one
        # towards the prior centre). Start a second search at the best point of a
        # coarse (μ, σ) grid and keep the higher of the two maxima.
        grid = to_natural(*(jnp.asarray(v, dtype) for v in _START_GRID))
        grid = jnp.broadcast_to(grid, (theta0.shape[0],) + grid.shape)  # (Q, G, 2)
        values = jax.vmap(objective, in_axes=1, out_axes=1)(grid)  # (Q, G)
        values = jnp.where(jnp.isfinite(values), values, -jnp.inf)
        best = jnp.argmax(values, axis=1)
        start = grid[jnp.arange(grid.shape[0]), best]
        # Rows skip the second search (most do) where the first maximum is at least as
        # high as every grid point, or where the best grid point is its neighbour.
        mu1, sigma1 = from_natural(solved[0])
        mu_g, sigma_g = (jnp.asarray(v, dtype)[best] for v in _START_GRID)
        near = (jnp.abs(mu_g - mu1) <= 0.25) & (jnp.abs(jnp.log(sigma_g / sigma1)) <= 0.66)
        settled = near | (jnp.max(values, axis=1) < solved[1] - _SECOND_START_MARGIN)
        _, other = solve(start, frozen=settled)
        better = other[1] > solved[1]
        solved = tuple(
            jnp.where(better.reshape(better.shape + (1,) * (a.ndim - 1)), b, a)
            for a, b in zip(solved, other, strict=True)
        )
    theta, value, on_edge, done, iterations = solved
    mu, sigma = from_natural(theta)
    status = jnp.where(
        on_edge, FitStatus.BOUNDARY, jnp.where(done, FitStatus.CONVERGED, FitStatus.MAX_ITER)
    )
    status = jnp.where(degenerate, FitStatus.DEGENERATE, status)
    if prior is None:
        # Supremum of the likelihood: sigma -> 0 at the common value.
        mu = jnp.where(degenerate, mean, mu)
        sigma = jnp.where(degenerate, sigma_bounds[0], sigma)
        value = jnp.where(degenerate, objective(to_natural(mu, sigma)), value)
        mu = jnp.where(n == 0, jnp.nan, mu)
        sigma = jnp.where(n == 0, jnp.nan, sigma)
        value = jnp.where(n == 0, 0.0, value)
    status = jnp.where(n == 0, FitStatus.NO_DATA, status).astype(jnp.int32)
    return FitResult(mu, sigma, value, status, n.astype(jnp.int32), iterations)


_fit_jit = jax.jit(_fit_impl, static_argnames=("likelihood", "sigma_bounds", "max_iter"))


def _bounds(sigma_bounds) -> tuple[float, float]:
    try:
        lo, hi = (float(v) for v in sigma_bounds)
    except (TypeError, ValueError):
        raise ValueError(f"sigma_bounds must be a pair (low, high), got {sigma_bounds!r}") from None
    if not 0.0 < lo < hi < math.inf:
        raise ValueError(f"sigma_bounds must satisfy 0 < low < high < inf, got ({lo}, {hi})")
    return lo, hi


def _max_iter(max_iter) -> int:
    if isinstance(max_iter, bool) or not isinstance(max_iter, (int, np.integer)) or max_iter < 1:
        raise ValueError(f"max_iter must be a whole number >= 1, got {max_iter!r}")
    return int(max_iter)


def _check_gaussian_prior(prior: GaussianPrior) -> None:
    """Scales must be positive and every field finite (host arrays only: no device sync).

    Centres may be <= 0: a loc_sigma <= 0 (the authors' predictor files have some) still
    gives a proper prior on sigma > 0, as the authors use it.
    """
    for name, value in zip(prior._fields, prior, strict=True):
        if isinstance(value, jax.Array):
            continue
        if np.asarray(value).dtype.kind not in "biuf":
            raise TypeError(f"prior.{name} must be real numbers, got {value!r:.60}")
        v = np.asarray(value, dtype=float)
        centre = name.startswith("loc_")
        bad = ~np.isfinite(v) | ((v <= 0) if not centre else False)
        if np.any(bad):
            first = float(np.broadcast_to(v, np.shape(bad))[bad].reshape(-1)[0])
            need = "finite" if centre else "finite and > 0"
            raise ValueError(f"prior.{name} must be {need}, got {first}")


def _prepare(scores, mask):
    s, m = validate_scores(scores, mask)
    single = np.ndim(scores) == 1
    if s.shape[1] == 0:  # zero-width rows: no sample anywhere, every question is NO_DATA
        s, m = np.full((s.shape[0], 1), 0.5), np.zeros((s.shape[0], 1), bool)
    dtype = jnp.result_type(float)
    return jnp.asarray(s, dtype), jnp.asarray(m), single


def _squeeze(result: FitResult, single: bool) -> FitResult:
    return FitResult(*(x[0] for x in result)) if single else result


def fit_mle(
    scores: ArrayLike,
    mask: ArrayLike | None = None,
    *,
    likelihood: Callable[[jax.Array, jax.Array], Distribution] | None = None,
    sigma_bounds: tuple[float, float] = DEFAULT_SIGMA_BOUNDS,
    max_iter: int = 100,
) -> FitResult:
    """Maximum-likelihood (μ, σ) per question (OptScale⁰), batched and jitted.

    Starts at the sample mean / std (as the official code does). One compile
    per input shape; never raises inside the batch (see :class:`FitStatus`).

    Args:
        scores: PRM scores, shape ``(Q, N)`` (or ``(N,)`` for one question).
        mask: True for real samples (ragged rows); default all.
        likelihood: ``(loc, scale) -> numpyro distribution`` of one score; default
            (None) the normal truncated to [0, 1], through a fast exact
            sufficient-statistics form. Any other (e.g. ``numpyro.distributions.Normal``)
            goes through the numpyro model's log density.
        sigma_bounds: interval for σ; μ is unbounded (and finite whenever the
            mean score is inside (0, 1)).
        max_iter: Newton iteration budget.

    Returns:
        A :class:`FitResult` with fields of shape ``(Q,)`` (scalars for 1-D input).

    Raises:
        ValueError: NaN or out-of-[0, 1] valid scores (naming the row).

    Examples:
        >>> r = fit_mle([[0.2, 0.4, 0.5, 0.6, 0.9]])
        >>> [round(float(v), 3) for v in (r.mu[0], r.sigma[0])], FitStatus(int(r.status[0])).name
        ([0.529, 0.279], 'CONVERGED')
    """
    s, m, single = _prepare(scores, mask)
    result = _fit_jit(s, m, None, likelihood, None, _bounds(sigma_bounds), _max_iter(max_iter))
    return _squeeze(result, single)


def fit_map(
    scores: ArrayLike,
    prior: GaussianPrior | Prior,
    mask: ArrayLike | None = None,
    *,
    init: tuple[ArrayLike, ArrayLike] | None = None,
    likelihood: Callable[[jax.Array, jax.Array], Distribution] | None = None,
    sigma_bounds: tuple[float, float] = DEFAULT_SIGMA_BOUNDS,
    max_iter: int = 100,
) -> FitResult:
    """Maximum a-posteriori (μ, σ) per question (OptScaleᵗ), batched and jitted.

    With a :class:`~optscale_jax.model.GaussianPrior` the search starts at the
    prior centres (as the official code does); with another prior, at the data
    moments, unless ``init`` is given.

    Args:
        scores: PRM scores, shape ``(Q, N)`` (or ``(N,)``).
        prior: a :class:`GaussianPrior` (fields broadcast to ``(Q,)``) or a
            :class:`Prior` of numpyro distributions.
        mask: True for real samples; default all.
        init: optional ``(mu0, sigma0)`` starting point.
        likelihood: ``(loc, scale) -> numpyro distribution`` of one score; default
            (None) the normal truncated to [0, 1], through a fast exact
            sufficient-statistics form. Any other (e.g. ``numpyro.distributions.Normal``)
            goes through the numpyro model's log density.
        sigma_bounds: interval for σ; μ is unbounded (and finite whenever the
            mean score is inside (0, 1)).
        max_iter: Newton iteration budget.

    Returns:
        A :class:`FitResult`; with no data, the prior's mode and ``NO_DATA``.

    Examples:
        >>> from optscale_jax.model import GaussianPrior
        >>> r = fit_map([[0.9, 0.95, 0.85]], GaussianPrior(0.5, 0.1, 0.1, 0.1))
        >>> 0.5 < float(r.mu[0]) < 0.9
        True
    """
    s, m, single = _prepare(scores, mask)
    bounds, iters = _bounds(sigma_bounds), _max_iter(max_iter)
    prior, init = _map_setup(prior, init, s.shape[0], s.dtype, sigma_bounds)
    result = _fit_jit(s, m, prior, likelihood, init, bounds, iters)
    return _squeeze(result, single)


def _map_setup(prior, init, q, dtype, sigma_bounds):
    """Check ``init`` and the prior; a GaussianPrior's fields broadcast to (q,) and give the
    default start (its centres). Returns ``(numpyro Prior, init)``."""
    if init is not None:
        sig0 = None if isinstance(init[1], jax.Array) else np.asarray(init[1], dtype=float)
        if sig0 is not None and np.any(~(sig0 > 0)):
            raise ValueError(f"init sigma must be > 0, got {float(np.ravel(sig0)[~(np.ravel(sig0) > 0)][0])}")
    if isinstance(prior, GaussianPrior):
        _check_gaussian_prior(prior)
        for name, f in zip(prior._fields, prior, strict=True):
            if np.shape(f) not in ((), (1,), (q,)):
                raise ValueError(f"prior.{name} has shape {np.shape(f)}; expected a scalar or one value per "
                                 f"question ({q},)")
        fields = [jnp.broadcast_to(jnp.asarray(f, dtype), (q,)) for f in prior]
        if init is None:
            init = (fields[0], jnp.clip(fields[2], sigma_bounds[0], sigma_bounds[1]))
        prior = GaussianPrior(*fields)
    return as_prior(prior), init


def fit_prefixes(
    scores: ArrayLike,
    mask: ArrayLike | None = None,
    prior: GaussianPrior | Prior | None = None,
    *,
    lengths: ArrayLike | None = None,
    **options,
) -> FitResult:
    """Fits of every prefix of every row: what a sequential policy sees.

    A replay computes each (question, prefix length) fit once here and reuses it
    for every (s_min, α). With the truncated normal (the default likelihood) a fit
    depends on the scores only through (n, Σx, Σx²) and max − min: these are
    accumulated once over the columns (O(Q·N), centred on each row's first valid
    score so that no digits cancel), and each prefix length is then one batched fit
    of ``(Q,)`` summaries, whose cost does not depend on N. Results equal separate
    :func:`fit_mle` / :func:`fit_map` calls on the cut rows up to rounding in the
    last digits (the sums are accumulated in another order). Another ``likelihood``
    fits each length on the full-width arrays with the mask cut at that length.

    Args:
        scores: shape ``(Q, N)`` (or ``(N,)`` for one question), in drawing order.
        mask: validity, prefix-contiguous; default all. The prefix of length
            ``L`` is ``mask & (column < L)``.
        prior: ``None`` (MLE) or a prior as in :func:`fit_map` (per-question
            fields of shape ``(Q,)`` serve every prefix).
        lengths: prefix lengths to fit, each in ``[0, N]`` (default ``1..N``).
        **options: passed to :func:`fit_mle` / :func:`fit_map`.

    Returns:
        A :class:`FitResult` whose fields have shape ``(Q, L)``.

    Examples:
        >>> r = fit_prefixes([[0.2, 0.4, 0.5, 0.6, 0.9]], lengths=[1, 5])
        >>> r.mu.shape, [FitStatus(int(c)).name for c in r.status[0]]
        ((1, 2), ['DEGENERATE', 'CONVERGED'])
    """
    s, m = validate_scores(scores, mask)
    q, n = s.shape
    if lengths is None:
        lengths = np.arange(1, n + 1)
    else:
        raw = np.asarray(lengths)
        if raw.ndim != 1 or not np.issubdtype(raw.dtype, np.integer) or raw.size == 0:
            raise ValueError(f"lengths must be a non-empty 1-D list of whole numbers, got {lengths!r}")
        if ((raw < 0) | (raw > n)).any():
            bad = int(raw[(raw < 0) | (raw > n)][0])
            raise ValueError(f"lengths must lie in [0, {n}] (the row width), got {bad}")
        lengths = raw.astype(int)
    if lengths.size == 0:  # zero-width rows and default lengths: no prefix at all
        dtype = jnp.result_type(float)
        empty = [jnp.zeros((q, 0), dtype)] * 3 + [jnp.zeros((q, 0), jnp.int32)] * 3
        return FitResult(*empty)
    if options.get("likelihood") is not None:
        cols = np.arange(n)[None, :]
        parts = []
        for length in lengths:
            cut = m & (cols < int(length))
            if prior is None:
                parts.append(fit_mle(s, cut, **options))
            else:
                parts.append(fit_map(s, prior, cut, **options))
        return FitResult(*(jnp.stack(field, axis=1) for field in zip(*parts, strict=True)))
    unknown = set(options) - {"likelihood", "sigma_bounds", "max_iter"} - ({"init"} if prior is not None else set())
    if unknown:
        name = "fit_mle" if prior is None else "fit_map"
        raise TypeError(f"{name}() got an unexpected keyword argument {sorted(unknown)[0]!r}")
    bounds = _bounds(options.get("sigma_bounds", DEFAULT_SIGMA_BOUNDS))
    iters = _max_iter(options.get("max_iter", 100))
    dtype = jnp.result_type(float)
    init = options.get("init")
    if prior is not None:
        prior, init = _map_setup(prior, init, q, dtype, bounds)
    count, mean, std, spread = _prefix_moments(s, m, lengths)
    parts = []
    for j in range(lengths.size):
        stats = (jnp.asarray(count[j], jnp.result_type(int)), jnp.asarray(mean[j], dtype), jnp.asarray(std[j], dtype),
                 jnp.asarray(spread[j], dtype))
        parts.append(_fit_stats_jit(*stats, prior, init, bounds, iters))
    return FitResult(*(jnp.stack(field, axis=1) for field in zip(*parts, strict=True)))


_fit_stats_jit = jax.jit(_fit_core, static_argnames=("sigma_bounds", "max_iter", "data_objective"))


def _prefix_moments(s: np.ndarray, m: np.ndarray, lengths: np.ndarray):
    """(count, mean, std, max − min) of every row's first ``L`` valid scores, for each L.

    One pass over the columns (O(Q·N)): cumulative sums of the scores centred on each
    row's first valid score c, S1 = Σ(x − c) and S2 = Σ(x − c)², give the mean c + S1/n
    and the squared deviations S2 − S1²/n. As c is one of the scores, S2 is at most
    (n + 1) times the squared deviations, so the subtraction keeps all but a few digits
    (the old two-pass sums were exact to about the same rounding); a prefix of equal
    scores gives exactly 0. Returns arrays of shape ``(len(lengths), Q)``; empty
    prefixes have count 0, mean 0, std 0 and max − min = −inf, as the masked reductions.
    """
    q, n = s.shape
    rows = np.arange(q)
    centre = np.where(m.any(axis=1), s[rows, np.argmax(m, axis=1)], 0.0) if n else np.zeros(q)
    d = np.where(m, s - centre[:, None], 0.0)
    # Column 0 of each cumulative array is the empty prefix.
    pad = np.zeros((q, 1))
    count = np.concatenate([pad.astype(np.int64), np.cumsum(m, axis=1)], axis=1)[:, lengths]
    s1 = np.concatenate([pad, np.cumsum(d, axis=1)], axis=1)[:, lengths]
    s2 = np.concatenate([pad, np.cumsum(d * d, axis=1)], axis=1)[:, lengths]
    hi = np.concatenate([pad - np.inf, np.maximum.accumulate(np.where(m, s, -np.inf), axis=1)], 1)
    lo = np.concatenate([pad + np.inf, np.minimum.accumulate(np.where(m, s, np.inf), axis=1)], 1)
    spread = (hi - lo)[:, lengths]
    nn = np.maximum(count, 1)
    shift = s1 / nn
    mean = np.where(count > 0, centre[:, None] + shift, 0.0)
    var = np.maximum(s2 - s1 * shift, 0.0) / nn
    return count.T, mean.T, np.sqrt(var).T, spread.T


# ----------------------------------------------------------------------------
# Full posterior by NUTS
# ----------------------------------------------------------------------------


class PosteriorResult(NamedTuple):
    """Posterior draws of (μ, σ) per question.

    Attributes:
        mu: draws, shape ``(S, Q)``.
        sigma: draws, shape ``(S, Q)``.
        divergences: number of divergent transitions.
    """

    mu: jax.Array
    sigma: jax.Array
    divergences: int


def posterior(
    key: jax.Array,
    scores: ArrayLike,
    prior: GaussianPrior | Prior | None = None,
    mask: ArrayLike | None = None,
    *,
    num_warmup: int = 500,
    num_samples: int = 1000,
    progress_bar: bool = False,
) -> PosteriorResult:
    """NUTS over (μ, σ) of a handful of questions under any prior.

    The flat prior of the MLE is improper and its posterior is too when the MLE
    is at infinity, so ``prior=None`` uses :func:`~optscale_jax.model.weak_prior`.

    Args:
        key: PRNG key.
        scores: shape ``(Q, N)`` or ``(N,)``.
        prior: a proper prior; default a weakly informative one.
        mask: validity mask.
        num_warmup: NUTS warm-up steps.
        num_samples: draws kept.
        progress_bar: show numpyro's progress bar.

    Returns:
        A :class:`PosteriorResult`.
    """
    from numpyro.infer import MCMC, NUTS

    s, m = validate_scores(scores, mask)
    if prior is None:
        prior = weak_prior()
    elif isinstance(prior, GaussianPrior):
        prior = GaussianPrior(*(jnp.broadcast_to(jnp.asarray(f, float), (s.shape[0],)) for f in prior))
    mcmc = MCMC(
        NUTS(score_model),
        num_warmup=num_warmup,
        num_samples=num_samples,
        progress_bar=progress_bar,
    )
    mcmc.run(key, jnp.asarray(s), jnp.asarray(m), prior, extra_fields=("diverging",))
    draws = mcmc.get_samples()
    div = int(np.sum(np.asarray(mcmc.get_extra_fields()["diverging"])))
    return PosteriorResult(draws["mu"], draws["sigma"], div)
