r"""How many samples are enough: N*, exceedance probabilities, posterior-predictive N*.

With i.i.d. scores of CDF F, the best of N is below s with probability F(s)^N.
Asking for P(max ≥ s_min) ≥ α gives the smallest

.. math:: N^* = \left\lceil \frac{\log(1-\alpha)}{\log F(s_{\min})} \right\rceil,

clipped to [n_min, n_max]. Here log F comes straight from the log-space CDF of
:mod:`optscale_jax.distributions` (never ``log(1 - (1 - F))``), so N* is exact
even when F(s_min) is within 1e-12 of 0 or 1.
"""

from __future__ import annotations

import math
from functools import partial
from typing import Literal

import jax
import jax.numpy as jnp
import numpy as np
from jax.scipy.special import logsumexp
from jax.typing import ArrayLike

from optscale_jax.distributions import truncnorm01_log_cdf, truncnorm01_log_prob

__all__ = [
    "n_star",
    "n_star_from_log_cdf",
    "exceedance_probability",
    "n_star_official",
    "n_star_official_table",
    "n_star_for_fits",
    "posterior_exceedance_probability",
    "posterior_n_star",
]

_INT_MAX = np.iinfo(np.int32).max


def _check_alpha(alpha) -> None:
    if isinstance(alpha, jax.core.Tracer):
        return
    a = np.asarray(alpha, float)
    if np.any(~((a > 0) & (a < 1))):
        bad = float(a.reshape(-1)[np.flatnonzero(~((a > 0) & (a < 1)))[0]])
        raise ValueError(f"alpha must lie in (0, 1) (a target probability such as 0.95), got {bad}")


def _check_real(**args) -> None:
    """Host arguments are real numbers (not strings, None, complex) and broadcast together."""
    shapes = []
    for name, x in args.items():
        if isinstance(x, jax.Array):
            shapes.append(x.shape)
            continue
        try:
            a = np.asarray(x)
        except ValueError:
            raise ValueError(f"{name} must be a number or a rectangular array of numbers (ragged lists)") from None
        if a.dtype.kind not in "biuf":
            raise TypeError(f"{name} must be a real number or an array of them, got {x!r:.60}")
        shapes.append(a.shape)
    try:
        np.broadcast_shapes(*shapes)
    except ValueError:
        shown = ", ".join(f"{n} {sh}" for n, sh in zip(args, shapes, strict=True))
        raise ValueError(f"shapes do not broadcast together: {shown}") from None


def _host(x) -> np.ndarray | None:
    """``x`` as a NumPy array when it lives on the host (Python scalars, lists, NumPy).

    jax arrays, traced or concrete, are not inspected: checking them would cost a
    device sync (and under ``jit`` their values are unknown).
    """
    if isinstance(x, jax.Array):
        return None
    try:
        return np.asarray(x, dtype=float)
    except (TypeError, ValueError):
        return None


def _first_bad(values: np.ndarray, bad: np.ndarray) -> float:
    return float(np.broadcast_to(values, bad.shape)[bad].reshape(-1)[0])


def _check_counts(n_min, n_max, *, n_max_required: bool = False) -> None:
    """``1 <= n_min <= n_max`` (whole numbers); ``n_max=None`` means no upper bound."""
    for name, v in (("n_min", n_min), ("n_max", n_max)):
        if v is None:
            if name == "n_max" and not n_max_required:
                continue
            raise ValueError(f"{name} must be a whole number >= 1, got None")
        if isinstance(v, jax.core.Tracer):
            raise ValueError(f"{name} must be a concrete whole number (static under jit), got a traced value")
        whole = (
            isinstance(v, (int, float, np.integer, np.floating))
            and not isinstance(v, bool)
            and math.isfinite(v)
            and float(v) == int(v)
        )
        if not whole:
            raise ValueError(f"{name} must be a whole number >= 1, got {v!r}")
        if int(v) < 1:
            raise ValueError(f"{name} must be >= 1 (a number of samples), got {int(v)}")
    if n_max is not None and int(n_min) > int(n_max):
        raise ValueError(f"n_min ({int(n_min)}) must not exceed n_max ({int(n_max)})")


def _check_law(sigma, s_min) -> None:
    """sigma > 0 (NaN allowed: no fit) and s_min in [0, 1], for host inputs only."""
    s = _host(sigma)
    if s is not None:
        bad = s <= 0
        if bad.any():
            raise ValueError(f"sigma must be > 0 (NaN for 'no fit'), got {_first_bad(s, bad)}")
    t = _host(s_min)
    if t is not None:
        bad = ~((t >= 0) & (t <= 1))
        if bad.any():
            raise ValueError(f"s_min must lie in [0, 1] (a PRM score), got {_first_bad(t, bad)}")


def n_star_from_log_cdf(
    log_f: ArrayLike, alpha: ArrayLike, *, n_min: int = 1, n_max: int | None = None
) -> jax.Array:
    """N* from ``log F(s_min)`` (any score model), clipped to [n_min, n_max].

    ``log F = 0`` (s_min unreachable) and NaN (no fit) give ``n_max``;
    ``log F = -inf`` (every sample reaches s_min) gives ``n_min``.

    Args:
        log_f: ``log F(s_min)``, any shape.
        alpha: target probability that the best sample reaches s_min, in (0, 1).
        n_min: smallest answer.
        n_max: largest answer (default: int32 max).

    Returns:
        int32 array, broadcast over ``log_f`` and ``alpha``.

    Examples:
        >>> int(n_star_from_log_cdf(jnp.log(0.5), 0.95))  # 0.5**5 > 0.05 >= 0.5**5
        5
    """
    _check_alpha(alpha)
    _check_counts(n_min, n_max)
    log_f = jnp.asarray(log_f)
    target = jnp.log1p(-jnp.asarray(alpha, log_f.dtype))  # log(1 - alpha) < 0
    hi = _INT_MAX if n_max is None else int(n_max)
    unreachable = log_f >= 0.0  # F(s_min) = 1: no number of samples reaches s_min
    ratio = jnp.where(unreachable, jnp.inf, target / jnp.where(unreachable, -1.0, log_f))
    n = jnp.ceil(ratio)
    # Guard against a ratio that rounded up past an exact integer.
    n = jnp.where((n > 1) & ((n - 1) * log_f <= target), n - 1, n)
    n = jnp.where(jnp.isnan(n), hi, n)
    return jnp.clip(n, n_min, hi).astype(jnp.int32)


def n_star(
    mu: ArrayLike,
    sigma: ArrayLike,
    s_min: ArrayLike,
    alpha: ArrayLike,
    *,
    n_min: int = 1,
    n_max: int | None = None,
) -> jax.Array:
    r"""N* = ceil(log(1 − α) / log F(s_min)) for a normal truncated to [0, 1].

    Broadcasts over all array arguments and is jit-able; millions of pairs per
    call are cheap (see ``benchmarks/bench_core.py``). A NaN fit (no data)
    gives ``n_max``; μ = +∞ (every score at 1) gives ``n_min`` for s_min < 1.

    Arguments are checked when they live on the host (Python numbers, lists, NumPy
    arrays): ``sigma <= 0`` or ``s_min`` outside [0, 1] raise. jax arrays are not
    inspected (no device sync; under ``jit`` values are unknown): there σ ≤ 0 gives
    ``n_max`` (the CDF is NaN) and ``s_min`` > 1 gives ``n_max``, < 0 gives ``n_min``.

    Args:
        mu: location μ of the score law.
        sigma: scale σ > 0.
        s_min: score the best sample should reach.
        alpha: target probability of reaching it, in (0, 1) (e.g. 0.95).
        n_min: smallest answer, >= 1.
        n_max: largest answer, >= n_min (default: int32 max).

    Returns:
        int32 array of the broadcast shape.

    Raises:
        ValueError: naming the argument: ``alpha`` outside (0, 1), ``n_min < 1``,
            ``n_max < n_min``, or (host inputs) ``sigma <= 0``, ``s_min`` outside [0, 1].

    Examples:
        >>> int(n_star(0.5, 0.2, 0.5, 0.95))  # F(0.5) = 1/2
        5
    """
    _check_real(mu=mu, sigma=sigma, s_min=s_min, alpha=alpha)
    _check_alpha(alpha)
    _check_counts(n_min, n_max)
    _check_law(sigma, s_min)
    dtype = jnp.result_type(mu, sigma, s_min, float)  # alpha's precision does not set it
    mu, sigma, s_min, alpha = jnp.broadcast_arrays(
        *(jnp.asarray(v, dtype) for v in (mu, sigma, s_min, alpha))
    )
    # mu = +inf: the law is a point mass at 1, F(s_min) = 0 below 1, so n_min samples do.
    at_one = (mu == jnp.inf) & (s_min < 1)
    if mu.dtype == jnp.float64 and mu.size >= _SCREEN_MIN_SIZE:
        # Arrays already spread over several devices: one pass (blocks would serialise
        # the rows in a loop that GSPMD cannot split).
        spread = any(
            isinstance(v, jax.Array)
            and not isinstance(v, jax.core.Tracer)
            and len(v.sharding.device_set) > 1
            for v in (mu, sigma)
        )
        out = _n_star_screened(
            mu, sigma, s_min, alpha, n_min=n_min, n_max=n_max, chunk=None if spread else _SCREEN_CHUNK
        )
        return jnp.where(at_one, jnp.int32(n_min), out)
    log_f = jnp.where(at_one, -jnp.inf, truncnorm01_log_cdf(s_min, mu, sigma))
    return n_star_from_log_cdf(log_f, alpha, n_min=n_min, n_max=n_max)


_SCREEN_MIN_SIZE = 4096
# Rows per block of the fast pass: its ~15 intermediate arrays stay in cache (a pass over
# 10^6 rows at once spills every intermediate to memory and runs about 2-3x slower).
_SCREEN_CHUNK = 16384
_EPS64 = float(np.finfo(np.float64).eps)
_SQRT_HALF = math.sqrt(0.5)


def _log_cdf_screen(s_min, mu, sigma):
    """log F(s_min) from three ``erfc`` calls, and a bound on its relative error.

    With Q(x) = erfc(|x|/√2)/2 at the standardised points a = −μ/σ, t = (s_min−μ)/σ and
    b = (1−μ)/σ, each interval mass is a difference of two Q's in a tail (or 1 − Q − Q
    across 0), ``num`` = P(a ≤ Z ≤ t), ``up`` = P(t ≤ Z ≤ b), and
    log F = −log1p(up/num). The absolute error of a mass is bounded by
    4ε (Q₁(1 + |x₁| + x₁²) + Q₂(1 + |x₂| + x₂²) + scale): ``erfc``'s own error
    (measured ≤ ε(1 + x²/2)/2 against mpmath for |x|/√2 ≤ 26.2), the rounding of x
    (≤ 1.5ε|x|, moving Q by φ(x)|x| ≤ Q(x)(x² + |x|) by the Mills-ratio bound) and the
    subtraction (``scale`` = Q₁ + Q₂ in a tail, 1 + Q₁ + Q₂ across 0); 1e-290 covers a
    Q that underflowed. The relative error of log F is at most the sum for both masses
    plus 4ε (division, log1p). Nothing here is trusted where the bound is large, NaN or
    infinite: those rows take the exact path.
    """
    a = -mu / sigma
    t = (s_min - mu) / sigma
    b = (1.0 - mu) / sigma
    (xa, qa), (xt, qt), (xb, qb) = (
        (jnp.abs(x), 0.5 * jax.lax.erfc(jnp.abs(x) * _SQRT_HALF)) for x in (a, t, b)
    )

    def mass(x1, ax1, q1, x2, ax2, q2):
        right = x1 >= 0.0
        left = x2 <= 0.0
        tail = right | left
        m = jnp.where(right, q1 - q2, jnp.where(left, q2 - q1, (1.0 - q1) - q2))
        scale = jnp.where(tail, q1 + q2, 1.0 + q1 + q2)
        bound = q1 * (1.0 + ax1 + ax1 * ax1) + q2 * (1.0 + ax2 + ax2 * ax2) + scale + 1e-290
        return m, jnp.where(m > 0.0, bound / m, jnp.inf)  # m <= 0: rounding won, distrust

    num, rel_num = mass(a, xa, qa, t, xt, qt)
    up, rel_up = mass(t, xt, qt, b, xb, qb)
    return -jnp.log1p(up / num), 4.0 * _EPS64 * (rel_num + rel_up + 1.0)


def _screen_block(mu, sigma, s_min, alpha, n_min, n_max):
    """(N* from the cheap log F, True where it might differ from the exact float64 N*)."""
    log_f, rel = _log_cdf_screen(s_min, mu, sigma)
    r = jnp.log1p(-alpha) / log_f
    # Twice the bound (the exact path errs too), plus 1e-11 for the exact path's own error
    # (its log CDF is tested to 1e-11 of max(1, |log F|) in any tail against mpmath, and
    # measured within 5e-13 relative of mpmath where this screen trusts its own answer).
    width = 2.0 * rel + 1e-11
    lo, hi = r * (1.0 - width), r * (1.0 + width)
    clip_hi = _INT_MAX if n_max is None else n_max
    no_fit = jnp.isnan(mu) | jnp.isnan(sigma) | jnp.isnan(s_min)  # both paths: n_max
    trusted = (
        (sigma > 0)
        & (s_min > 0)
        & (s_min < 1)
        & (jnp.abs(mu) < jnp.inf)
        & (width < 1e-6)
        & (jnp.abs(r) < jnp.inf)
    )
    ambiguous = (jnp.ceil(lo) != jnp.ceil(hi)) & (lo < clip_hi) & (hi > n_min)
    suspect = ~no_fit & (~trusted | ambiguous)
    return n_star_from_log_cdf(log_f, alpha, n_min=n_min, n_max=n_max), suspect


@partial(jax.jit, static_argnames=("n_min", "n_max", "chunk"))
def _n_star_screened(mu, sigma, s_min, alpha, *, n_min, n_max, chunk=_SCREEN_CHUNK):
    """float64 N* that runs the tail-stable log CDF only where a cheap one could be wrong.

    N* = ceil(r) changes only where r is near an integer. A closed form from three
    ``erfc`` calls (:func:`_log_cdf_screen`) gives log F with a bound on its relative
    error (``erfc``'s share measured against mpmath, the rest derived), about 1e-13 on
    realistic inputs; every pair whose ratio stays inside
    one integer step under twice that bound (plus 1e-11) takes that answer. The rest
    (ratios within ~1e-11 of an integer, s_min at 0 or 1, non-finite μ, σ ≤ 0, points
    beyond ~37 σ, σ so large that the interval cancels) are gathered into a fixed-size
    buffer and recomputed with the exact log CDF, or, if there are more than the largest
    buffer holds, everything is. The cheap pass runs in blocks of ``chunk`` rows
    (``None``: one pass) so that its intermediates stay in cache.
    """
    shape = mu.shape
    flat = [v.reshape(-1) for v in (mu, sigma, s_min, alpha)]
    size = flat[0].size
    if chunk is None or size <= chunk:
        fast, suspect = _screen_block(*flat, n_min, n_max)
    else:
        blocks = -(-size // chunk)
        pad = blocks * chunk - size
        # Padding rows are a harmless fit (never suspect); they are cut off again.
        tiled = [
            jnp.pad(v, (0, pad), constant_values=fill).reshape(blocks, chunk)
            for v, fill in zip(flat, (0.5, 0.1, 0.7, 0.5), strict=True)
        ]
        fast, suspect = jax.lax.map(lambda v: _screen_block(*v, n_min, n_max), tiled)
        fast, suspect = fast.reshape(-1)[:size], suspect.reshape(-1)[:size]
    count = jnp.sum(suspect)

    def exact_all():
        return n_star_from_log_cdf(
            truncnorm01_log_cdf(flat[2], flat[0], flat[1]), flat[3], n_min=n_min, n_max=n_max
        )

    def exact_some(cap):
        def branch():
            (idx,) = jnp.nonzero(suspect, size=cap, fill_value=0)
            sub = n_star_from_log_cdf(
                truncnorm01_log_cdf(flat[2][idx], flat[0][idx], flat[1][idx]),
                flat[3][idx],
                n_min=n_min,
                n_max=n_max,
            )
            valid = jnp.arange(cap) < count
            return fast.at[jnp.where(valid, idx, size)].set(sub, mode="drop")

        return branch

    caps = [max(256, size // 256), max(256, size // 16), max(256, size // 4)]
    which = jnp.searchsorted(jnp.asarray(caps), count)  # len(caps) = too many
    out = jax.lax.switch(which, [*(exact_some(c) for c in caps), exact_all])
    return out.reshape(shape)


def exceedance_probability(
    mu: ArrayLike, sigma: ArrayLike, s_min: ArrayLike, n: ArrayLike
) -> jax.Array:
    """P(best of n ≥ s_min) = 1 − F(s_min)^n, computed as −expm1(n log F).

    Args:
        mu: location μ.
        sigma: scale σ.
        s_min: threshold.
        n: number of samples.

    Returns:
        Probabilities, broadcast over the inputs.

    Examples:
        >>> round(float(exceedance_probability(0.5, 0.2, 0.5, 3)), 6)
        0.875
    """
    _check_law(sigma, s_min)
    n_host = _host(n)
    if n_host is not None and (n_host < 0).any():
        raise ValueError(f"n must be >= 0 (a number of samples), got {_first_bad(n_host, n_host < 0)}")
    log_f = truncnorm01_log_cdf(s_min, mu, sigma)
    return -jnp.expm1(jnp.asarray(n, log_f.dtype) * log_f)


def n_star_official(
    mu: ArrayLike,
    sigma: ArrayLike,
    s_min: ArrayLike,
    alpha: ArrayLike,
    *,
    n_max: int,
    n_min: int = 1,
    grid: int = 1000,
) -> jax.Array:
    """The official code's rule, for reproducing published numbers.

    For N = n_min, n_min + 1, …, n_max: tabulate the density of the best of N,
    N F^(N−1) f, on ``grid`` points of [0, 1], integrate it cumulatively, read
    off its quantile q = 1 − α, and stop at the first N whose quantile reaches
    s_min (``n_max`` if none does). The grid makes it differ from
    :func:`n_star` when the quantile falls within a grid step of s_min.

    Args:
        mu: location μ.
        sigma: scale σ.
        s_min: threshold.
        alpha: target probability (the quantile read is 1 − α).
        n_max: largest N scanned.
        n_min: smallest N scanned.
        grid: number of grid points.

    Returns:
        int32 array of the broadcast shape of (mu, sigma, s_min, alpha).
    """
    _check_alpha(alpha)
    _check_counts(n_min, n_max, n_max_required=True)
    _check_law(sigma, s_min)
    if isinstance(grid, bool) or not isinstance(grid, (int, np.integer)) or grid < 2:
        raise ValueError(f"grid must be a whole number of points >= 2, got {grid!r}")
    mu, sigma, s_min, alpha = jnp.broadcast_arrays(*(jnp.asarray(v, float) for v in (mu, sigma, s_min, alpha)))
    out = _n_star_official_flat(
        *(v.reshape(-1) for v in (mu, sigma, s_min, alpha)), n_max=int(n_max), n_min=int(n_min), grid=int(grid)
    )
    return out.reshape(mu.shape)


@partial(jax.jit, static_argnames=("n_max", "n_min", "grid"))
def _n_star_official_flat(mu, sigma, s_min, alpha, *, n_max, n_min, grid):
    """The grid scan on flat ``(P,)`` inputs, compiled once per (P, n_max, n_min, grid)."""
    mu, sigma, s_min, alpha = (v[:, None] for v in (mu, sigma, s_min, alpha))
    x = jnp.linspace(0.0, 1.0, grid, dtype=mu.dtype)
    log_cdf = truncnorm01_log_cdf(x, mu, sigma)
    log_pdf = truncnorm01_log_prob(x, mu, sigma)
    q = 1.0 - alpha

    def quantile_ok(n):
        # Best-of-n density n F^(n-1) f on the grid, in log space (no underflow in the
        # tails), summed cumulatively and normalised; the first grid point where it reaches
        # q is the quantile (numpy's searchsorted, side="left", on a non-decreasing array).
        dens = jnp.exp(jnp.log(n) + jnp.where(n > 1, (n - 1) * log_cdf, 0.0) + log_pdf)
        cum = jnp.cumsum(dens, axis=-1)
        cum = cum / cum[:, -1:]
        idx = jnp.argmax(cum >= q, axis=-1)
        return x[idx] >= s_min[:, 0]

    ns = jnp.arange(n_min, n_max + 1, dtype=mu.dtype)
    ok = jax.vmap(quantile_ok, out_axes=1)(ns)  # (P, n_N)
    first = jnp.where(jnp.any(ok, axis=1), ns[jnp.argmax(ok, axis=1)], n_max)
    # μ = +∞: all mass at 1, so every quantile reaches s_min (as in n_star).
    first = jnp.where(jnp.isposinf(mu[:, 0]), n_min, first)
    return first.astype(jnp.int32)


def n_star_official_table(
    mu: ArrayLike,
    sigma: ArrayLike,
    s_min: ArrayLike,
    alpha: ArrayLike,
    *,
    n_max: int,
    n_min: int = 1,
    grid: int = 1000,
) -> jax.Array:
    """:func:`n_star_official` for every (fit, s_min, alpha) of a sweep at once.

    The best-of-N CDF on the grid depends on (μ, σ, N) only, so it is computed once per
    fit and N and read at every quantile, instead of once per cell (S·A times less work).

    Args:
        mu, sigma: ``(P,)`` fits.
        s_min: ``(S,)`` thresholds.
        alpha: ``(A,)`` target probabilities.
        n_max, n_min, grid: as for :func:`n_star_official`.

    Returns:
        int32 array ``(P, S, A)``, equal to ``n_star_official`` cell by cell.
    """
    _check_alpha(alpha)
    n_max, n_min, grid = int(n_max), int(n_min), int(grid)
    if not 1 <= n_min <= n_max or grid < 2:
        raise ValueError(f"need 1 <= n_min <= n_max and grid >= 2, got {n_min}, {n_max}, {grid}")
    mu, sigma = (jnp.asarray(v, float).reshape(-1) for v in (mu, sigma))
    s_min, alpha = (jnp.asarray(v, float).reshape(-1) for v in (s_min, alpha))
    return _n_star_official_table(mu, sigma, s_min, alpha, n_max=n_max, n_min=n_min, grid=grid)


@partial(jax.jit, static_argnames=("n_max", "n_min", "grid"))
def _n_star_official_table(mu, sigma, s_min, alpha, *, n_max, n_min, grid):
    x = jnp.linspace(0.0, 1.0, grid, dtype=mu.dtype)
    log_cdf = truncnorm01_log_cdf(x, mu[:, None], sigma[:, None])  # (P, G)
    log_pdf = truncnorm01_log_prob(x, mu[:, None], sigma[:, None])
    q = 1.0 - alpha  # (A,)

    def step(first, n):
        dens = jnp.exp(jnp.log(n) + jnp.where(n > 1, (n - 1) * log_cdf, 0.0) + log_pdf)
        cum = jnp.cumsum(dens, axis=-1)
        cum = cum / cum[:, -1:]
        idx = jnp.argmax(cum[:, None, :] >= q[None, :, None], axis=-1)  # (P, A)
        ok = x[idx][:, None, :] >= s_min[None, :, None]  # (P, S, A)
        return jnp.where((first == 0) & ok, n, first), None

    ns = jnp.arange(n_min, n_max + 1, dtype=mu.dtype)
    first0 = jnp.zeros((mu.shape[0], s_min.shape[0], alpha.shape[0]), mu.dtype)
    first, _ = jax.lax.scan(step, first0, ns)
    first = jnp.where(first == 0, n_max, first)
    first = jnp.where(jnp.isposinf(mu)[:, None, None], n_min, first)  # all mass at 1
    return first.astype(jnp.int32)


def n_star_for_fits(
    mu: ArrayLike,
    sigma: ArrayLike,
    s_min: ArrayLike,
    alpha: ArrayLike,
    *,
    n_max: int,
    rule: Literal["closed", "official"] = "closed",
) -> np.ndarray:
    """N* of fitted (μ, σ) as the policies use it: int64 numpy, failed fits sent to ``n_max``.

    A fit with NaN, infinite or non-positive parameters (e.g. a NO_DATA MLE) gets
    ``n_max``: with nothing to go on, the budget is spent.

    Args:
        mu, sigma: fitted parameters (broadcast with ``s_min`` and ``alpha``).
        s_min: target score.
        alpha: target probability that the best of N reaches ``s_min``.
        n_max: sample budget (upper clip).
        rule: ``"closed"`` (closed form, :func:`n_star`) or ``"official"`` (the
            authors' grid scan, :func:`n_star_official_table`).

    Returns:
        int64 array of N* in ``[1, n_max]``, broadcast over the inputs.

    Examples:
        >>> n_star_for_fits([0.5, float("nan")], [0.1, float("nan")], 0.9, 0.9, n_max=64)
        array([64, 64])
        >>> n_star_for_fits(0.9, 0.1, 0.9, 0.9, n_max=64).item()
        5
    """
    mu = np.asarray(mu, dtype=np.float64)
    sigma = np.asarray(sigma, dtype=np.float64)
    ok = np.isfinite(mu) & np.isfinite(sigma) & (sigma > 0)
    mu_s = np.where(ok, mu, 0.5)
    sg_s = np.where(ok, sigma, 0.1)
    if rule == "closed":
        n = n_star(mu_s, sg_s, s_min, alpha, n_min=1, n_max=int(n_max))
    elif rule == "official":
        # The grid scan once per distinct fit, read at every distinct (s_min, alpha).
        b = np.broadcast_arrays(mu_s, sg_s, np.asarray(s_min, float), np.asarray(alpha, float))
        pairs, p_inv = np.unique(
            np.stack([b[0].ravel(), b[1].ravel()], 1), axis=0, return_inverse=True
        )
        s_u, s_inv = np.unique(b[2].ravel(), return_inverse=True)
        a_u, a_inv = np.unique(b[3].ravel(), return_inverse=True)
        table = np.asarray(
            n_star_official_table(pairs[:, 0], pairs[:, 1], s_u, a_u, n_max=int(n_max))
        )
        n = table[p_inv.ravel(), s_inv.ravel(), a_inv.ravel()].reshape(b[0].shape)
    else:
        raise ValueError(f"N* rule must be 'closed' or 'official', got {rule!r}")
    n = np.asarray(n).astype(np.int64)
    ok_b = np.broadcast_to(ok, np.broadcast_shapes(ok.shape, n.shape))
    return np.where(ok_b, np.clip(n, 1, int(n_max)), int(n_max))


def posterior_exceedance_probability(
    mu_draws: ArrayLike, sigma_draws: ArrayLike, s_min: ArrayLike, n: ArrayLike
) -> jax.Array:
    r"""Posterior-predictive P(best of n ≥ s_min) = 1 − E_post[F(s_min)^n].

    Integrates over posterior draws of (μ, σ) instead of plugging in a point
    estimate; the average of F^n is taken in log space.

    Args:
        mu_draws: draws of μ, shape ``(S, ...)``.
        sigma_draws: draws of σ, shape ``(S, ...)``.
        s_min: threshold (broadcast with the trailing shape).
        n: sample counts; a trailing axis of its own is added when ``n`` is 1-D.

    Returns:
        Probabilities of shape ``(...)`` (or ``(..., len(n))`` for 1-D ``n``).
    """
    log_f = truncnorm01_log_cdf(s_min, jnp.asarray(mu_draws), jnp.asarray(sigma_draws))
    n = jnp.asarray(n, log_f.dtype)
    if n.ndim == 1:
        log_f = log_f[..., None]
    s = log_f.shape[0]
    log_mean = logsumexp(n * log_f, axis=0) - jnp.log(s)
    return -jnp.expm1(log_mean)


def posterior_n_star(
    mu_draws: ArrayLike,
    sigma_draws: ArrayLike,
    s_min: ArrayLike,
    alpha: ArrayLike,
    *,
    n_max: int,
    n_min: int = 1,
) -> jax.Array:
    """Smallest n in [n_min, n_max] whose posterior-predictive exceedance is ≥ α.

    Because 1 − E[F^n] increases with n, this is a scan over n; ``n_max`` if
    no n reaches α (e.g. a posterior with mass on laws that never reach s_min).

    Args:
        mu_draws: draws of μ, shape ``(S, Q)`` or ``(S,)``.
        sigma_draws: draws of σ, same shape.
        s_min: threshold.
        alpha: target probability.
        n_max: largest n.
        n_min: smallest n.

    Returns:
        int32 array of shape ``(Q,)`` (or scalar).
    """
    _check_alpha(alpha)
    _check_counts(n_min, n_max, n_max_required=True)
    ns = jnp.arange(n_min, n_max + 1)
    prob = posterior_exceedance_probability(mu_draws, sigma_draws, s_min, ns)
    ok = prob >= jnp.asarray(alpha)[..., None]
    return jnp.where(jnp.any(ok, -1), ns[jnp.argmax(ok, -1)], n_max).astype(jnp.int32)
