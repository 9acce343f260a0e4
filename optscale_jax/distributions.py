r"""The normal distribution truncated to [0, 1], stable in both tails.

A PRM score S of one question is modelled as a normal with location ``loc`` (μ)
and scale ``scale`` (σ) truncated to [0, 1]; μ and σ are the parameters of the
*untruncated* normal, not the mean and standard deviation of S.

Everything is computed in log space on the standardised interval
:math:`a = -\mu/\sigma`, :math:`b = (1-\mu)/\sigma`:

* every probability of an interval, :math:`\log(\Phi(t) - \Phi(s))`, is mirrored
  into the left tail (:math:`\Phi(t)-\Phi(s) = \Phi(-s)-\Phi(-t)` when s ≥ 0) and
  split as :math:`-m^2/2 + J`, m the end nearest 0, with J from the scaled function
  :math:`G(t) = \log\Phi(t) + t^2/2 = \log(\tfrac12\,\mathrm{erfcx}(-t/\sqrt2))`;
* the large parts :math:`m^2/2` cancel between numerator and denominator through
  exact products :math:`(x_1-x_2)(x_1+x_2-2\mu)/\sigma^2` formed in x-space, so
  nothing is lost even 10⁵ standard deviations out, in float32 too;
* :math:`\log(1 - e^{d})` uses the log1mexp split at −ln 2;
* unused branches of every ``where`` get safe inputs, so gradients stay finite.

numpyro's ``TruncatedNormal`` and ``jax.scipy.stats.truncnorm`` lose the
normaliser in the far tail (see DESIGN.md); this module is what the score model
uses instead.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
from jax.scipy.special import erf, erfcx
from jax.typing import ArrayLike
from numpyro.distributions import constraints
from numpyro.distributions.distribution import Distribution
from numpyro.distributions.util import promote_shapes

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

_HALF_LOG_2PI = 0.5 * math.log(2.0 * math.pi)
_SQRT_2_OVER_PI = math.sqrt(2.0 / math.pi)
_LN2 = math.log(2.0)
_SERIES_CUT = -20.0  # below this, G'(t) comes from its asymptotic series


def log1mexp(x: ArrayLike) -> jax.Array:
    """``log(1 - exp(x))`` for ``x <= 0``, accurate on the whole range.

    Args:
        x: non-positive values.

    Returns:
        ``log(1 - exp(x))``; ``-inf`` at ``x == 0``.

    Examples:
        >>> float(log1mexp(-1e-20))  # doctest: +ELLIPSIS
        -46.05...
    """
    x = jnp.asarray(x)
    near = x > -_LN2
    x_near = jnp.where(near, x, -1.0)
    x_far = jnp.where(near, -1.0, x)
    return jnp.where(near, jnp.log(-jnp.expm1(x_near)), jnp.log1p(-jnp.exp(x_far)))


def _erfcx(x: jax.Array) -> jax.Array:
    """erfcx for x >= 0, with an asymptotic series above 8.

    ``jax.scipy.special.erfcx`` (jax 0.10) returns 0 or garbage for x in about
    [26.54, 26.64] in float64 and [9.19, 9.42] in float32; the series
    erfcx(x) = 1/(x√π) Σ (−1)^k (2k−1)!! / (2x²)^k is exact to rounding there.
    """
    small = x < 8.0
    x_small = jnp.where(small, x, 0.0)
    x_big = jnp.where(small, 8.0, x)
    inv = 1.0 / (2.0 * x_big * x_big)
    term = jnp.ones_like(x_big)
    total = term
    for k in range(1, 17):
        term = -term * (2 * k - 1) * inv
        total = total + term
    series = total / (x_big * math.sqrt(math.pi))
    return jnp.where(small, erfcx(x_small), series)


@jax.custom_jvp
def _g(t: jax.Array) -> jax.Array:
    """G(t) = log Φ(t) + t²/2 for t <= 0 (callers clamp t)."""
    return jnp.log(0.5 * _erfcx(-t / math.sqrt(2.0)))


def _g_prime(t: jax.Array) -> jax.Array:
    """G'(t) = φ(t)/Φ(t) + t, the inverse Mills ratio plus t; positive."""
    # Direct form: fine while t^2 * eps is small.
    t_direct = jnp.maximum(t, _SERIES_CUT)
    direct = t_direct + _SQRT_2_OVER_PI / _erfcx(-t_direct / math.sqrt(2.0))
    # Series: Φ(t) = φ(t)/|t| * S, S = 1 - 1/t² + 3/t⁴ - ...; G' = |t| (1 - S) / S.
    t_series = jnp.minimum(t, _SERIES_CUT)
    inv_t2 = 1.0 / (t_series * t_series)
    term = inv_t2
    one_minus_s = term
    for k in range(2, 12):
        term = -term * (2 * k - 1) * inv_t2
        one_minus_s = one_minus_s + term
    s = 1.0 - one_minus_s
    series = -t_series * one_minus_s / s
    return jnp.where(t < _SERIES_CUT, series, direct)


@_g.defjvp
def _g_jvp(primals, tangents):
    (t,), (dt,) = primals, tangents
    return _g(t), _g_prime(t) * dt


def _d_left(s, t, diff, summ):
    """log Φ(s) − log Φ(t) for s <= t <= 0, with s − t and s + t given exactly.

    For a narrow interval G(s) − G(t) would cancel; there the midpoint rule with
    its third-order correction, diff·h(m) + diff³/24·h''(m) with h = G' and
    h'' = λ(h² + λh − 1), λ = h − t the inverse Mills ratio (error O(diff⁵)),
    keeps full relative precision from a single evaluation of h.
    """
    narrow_below = 0.05 if jnp.asarray(s).dtype == jnp.float32 else 1e-3
    narrow = jnp.abs(diff) < narrow_below
    mid = jnp.where(narrow, 0.5 * (s + t), -1.0)
    h = _g_prime(mid)
    lam = h - mid
    d = jnp.where(narrow, diff, 0.0)
    midpoint = d * h + d**3 / 24.0 * lam * (h * h + lam * h - 1.0)
    g_diff = jnp.where(narrow, midpoint, _g(s) - _g(t))
    return jnp.minimum(g_diff - 0.5 * diff * summ, 0.0)


def _interval(x1, x2, loc, scale):
    """log(Φ(t) − Φ(s)) for s = (x1−loc)/σ <= t = (x2−loc)/σ, split as −m²/2 + J.

    ``m`` is the point of [s, t] nearest 0, returned as its x-space value ``xm``
    (x1, x2 or loc) so that callers can form differences of m² exactly; ``J`` is
    of moderate size however far the interval lies in a tail.
    """
    s = (x1 - loc) / scale
    t = (x2 - loc) / scale
    diff = (x1 - x2) / scale
    summ = ((x1 - loc) + (x2 - loc)) / scale
    left = t <= 0.0
    right = s >= 0.0
    # Both tails share one evaluation: the right tail is mirrored, Φ(t) − Φ(s) =
    # Φ(−s) − Φ(−t), so that in either case m = t' <= 0.
    tail = left | right
    s_t = jnp.where(left, s, jnp.where(right, -t, -2.0))
    t_t = jnp.where(left, t, jnp.where(right, -s, -1.0))
    diff_t = jnp.where(tail, diff, -1.0)
    summ_t = jnp.where(left, summ, jnp.where(right, -summ, -3.0))
    j_tail = _g(t_t) + log1mexp(_d_left(s_t, t_t, diff_t, summ_t))
    # Straddling 0: m = 0, Φ(t) − Φ(s) = (erf(t/√2) + erf(−s/√2)) / 2, two positive
    # terms, so a narrow interval keeps its digits.
    s_m = jnp.where(tail, -1.0, s)
    t_m = jnp.where(tail, 1.0, t)
    j_mid = jnp.log(0.5 * (erf(t_m / math.sqrt(2.0)) + erf(-s_m / math.sqrt(2.0))))
    j = jnp.where(tail, j_tail, j_mid)
    xm = jnp.where(left, x2, jnp.where(right, x1, loc))
    return xm, j


def _half_sq_diff(xa, xb, loc, scale):
    """(za² − zb²)/2 for za = (xa−loc)/σ, zb = (xb−loc)/σ, without cancellation."""
    return 0.5 * ((xa - xb) / scale) * (((xa - loc) + (xb - loc)) / scale)


def _log_z(loc, scale):
    """log Z = log(Φ(b) − Φ(a)) as (xm, J): log Z = −((xm−loc)/σ)²/2 + J."""
    return _interval(jnp.zeros_like(loc), jnp.ones_like(loc), loc, scale)


def _log_density_formula(x, loc, scale):
    """−z²/2 − log σ − log √(2π) − log Z, for any x (no support check)."""
    xm, j = _log_z(loc, scale)
    return -_half_sq_diff(x, xm, loc, scale) - j - jnp.log(scale) - _HALF_LOG_2PI


def _log_cdf_sf_inside(x, loc, scale):
    """(log F(x), log(1 − F(x))) for x in [0, 1].

    With A = log P(0 ≤ S' ≤ x) and B = log P(x ≤ S' ≤ 1) for the untruncated S',
    log F = −softplus(B − A) and log(1 − F) = −softplus(A − B): two intervals,
    no normaliser, and B − A formed without cancellation.
    """
    zero, one = jnp.zeros_like(x), jnp.ones_like(x)
    xc, jc = _interval(zero, x, loc, scale)
    xs, js = _interval(x, one, loc, scale)
    b_minus_a = js - jc - _half_sq_diff(xs, xc, loc, scale)
    return -jax.nn.softplus(b_minus_a), -jax.nn.softplus(-b_minus_a)


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
    return jnp.where(inside, _log_density_formula(jnp.clip(x, 0.0, 1.0), loc, scale), -jnp.inf)


@jax.jit
def _log_cdf_sf(x, loc, scale):
    x, loc, scale = _broadcast(x, loc, scale)
    log_cdf, log_sf = _log_cdf_sf_inside(jnp.clip(x, 0.0, 1.0), loc, scale)
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
    lower_half = log_q <= -_LN2
    loc_s = jax.lax.stop_gradient(loc)
    scale_s = jax.lax.stop_gradient(scale)

    def too_low(x):
        lcdf, lsf = _log_cdf_sf_inside(x, loc_s, scale_s)
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
    lcdf, lsf = _log_cdf_sf_inside(x0, loc, scale)
    logp = _log_density_formula(x0, loc, scale)
    step_lo = (lcdf - log_q) * jnp.exp(jnp.clip(lcdf - logp, -50.0, 50.0))
    step_hi = -(lsf - log_1mq) * jnp.exp(jnp.clip(lsf - logp, -50.0, 50.0))
    step = jnp.where(lower_half, step_lo, step_hi)
    step = jnp.where(jnp.isfinite(step), step, 0.0)
    step = step - jax.lax.stop_gradient(step)
    x = jnp.clip(x0 - step, 0.0, 1.0)
    return jnp.where(q <= 0.0, 0.0, jnp.where(q >= 1.0, 1.0, x))


# Gauss-Legendre nodes for the moment integrals (see _moments_c).
_GL_X, _GL_W = np.polynomial.legendre.leggauss(96)


def _moments_c(loc, scale):
    """Mean of u = (1 - X)/σ and its central moments 2..4 (canonical frame), by quadrature.

    With u = b - Z ∈ [0, 1/σ] the density is ∝ exp(b·u - u²/2) (b <= 0) or
    exp(-(u - b)²/2) (b > 0); the effective support (60 nats) is integrated
    with 96-point Gauss-Legendre, which resolves both regimes to machine
    precision without the cancellation of the closed-form moments.
    """
    b = (1.0 - loc) / scale
    length = 1.0 / scale
    c = jnp.maximum(-b, 0.0)
    u_star = 120.0 / (c + jnp.sqrt(c * c + 120.0))  # root of c u + u²/2 = 60
    lo = jnp.where(b > 0, jnp.maximum(b - 11.0, 0.0), 0.0)
    hi = jnp.where(b > 0, jnp.minimum(b + 11.0, length), jnp.minimum(u_star, length))
    half = 0.5 * (hi - lo)
    nodes = jnp.asarray(_GL_X, dtype=loc.dtype)
    weights = jnp.asarray(_GL_W, dtype=loc.dtype)
    u = lo[..., None] + half[..., None] * (nodes + 1.0)
    bb = b[..., None]
    expo = jnp.where(bb > 0, -0.5 * (u - bb) ** 2, bb * u - 0.5 * u * u)
    w = weights * jnp.exp(expo - jnp.max(expo, axis=-1, keepdims=True))
    total = jnp.sum(w, axis=-1)
    m1 = jnp.sum(w * u, axis=-1) / total
    dev = u - m1[..., None]
    central = [jnp.sum(w * dev**k, axis=-1) / total for k in (2, 3, 4)]
    return m1, *central


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
    mean, var, _, _ = _central_moments(loc, scale)
    return mean, jnp.sqrt(var)


def _central_moments(loc, scale):
    """Mean and central moments 2, 3, 4 of X (no autodiff through the special functions)."""
    reflected = loc < 0.5
    loc_c = jnp.where(reflected, 1.0 - loc, loc)
    m1_u, c2, c3, c4 = _moments_c(loc_c, scale)
    mean_c = 1.0 - scale * m1_u
    # X_c = 1 − σu flips the sign of odd central moments; reflecting flips it back.
    sign3 = jnp.where(reflected, 1.0, -1.0)
    return (
        jnp.where(reflected, 1.0 - mean_c, mean_c),
        scale**2 * c2,
        sign3 * scale**3 * c3,
        scale**4 * c4,
    )


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
    from optscale_jax.fit import _moment_match  # fit imports this module

    mean, std = _broadcast(mean, std)
    loc, scale, ok = _moment_match(mean, std)
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
