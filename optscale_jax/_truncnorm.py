r"""Numerics of the normal truncated to [0, 1] (private; the public API is
:mod:`optscale_jax.distributions`).

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

Also here: the central moments by quadrature, the sufficient-statistics form of
the log-likelihood in natural parameters η = (μ/σ², −1/(2σ²)) with its exact
gradient and Hessian (an exponential family), and moment matching, which the
fits (:mod:`optscale_jax.fit`) and :func:`optscale_jax.distributions.params_from_moments`
share. Names are public inside this private module.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
from jax.scipy.special import erf, erfcx
from jax.typing import ArrayLike

from optscale_jax._newton import newton_box, value_grad_hess

__all__ = [
    "HALF_LOG_2PI",
    "LN2",
    "log1mexp",
    "erfcx_stable",
    "g",
    "g_prime",
    "interval",
    "half_sq_diff",
    "log_z",
    "log_density_formula",
    "log_cdf_sf_inside",
    "central_moments",
    "to_natural",
    "from_natural",
    "loglik_stats",
    "natural_stats_vgh",
    "prior_in_natural",
    "solve_stats",
    "moment_match",
]

HALF_LOG_2PI = 0.5 * math.log(2.0 * math.pi)
SQRT_2_OVER_PI = math.sqrt(2.0 / math.pi)
LN2 = math.log(2.0)
SERIES_CUT = -20.0  # below this, G'(t) comes from its asymptotic series


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
    near = x > -LN2
    x_near = jnp.where(near, x, -1.0)
    x_far = jnp.where(near, -1.0, x)
    return jnp.where(near, jnp.log(-jnp.expm1(x_near)), jnp.log1p(-jnp.exp(x_far)))


def erfcx_stable(x):
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
def g(t):
    """G(t) = log Φ(t) + t²/2 for t <= 0 (callers clamp t)."""
    return jnp.log(0.5 * erfcx_stable(-t / math.sqrt(2.0)))


def g_prime(t):
    """G'(t) = φ(t)/Φ(t) + t, the inverse Mills ratio plus t; positive."""
    # Direct form: fine while t^2 * eps is small.
    t_direct = jnp.maximum(t, SERIES_CUT)
    direct = t_direct + SQRT_2_OVER_PI / erfcx_stable(-t_direct / math.sqrt(2.0))
    # Series: Φ(t) = φ(t)/|t| * S, S = 1 - 1/t² + 3/t⁴ - ...; G' = |t| (1 - S) / S.
    t_series = jnp.minimum(t, SERIES_CUT)
    inv_t2 = 1.0 / (t_series * t_series)
    term = inv_t2
    one_minus_s = term
    for k in range(2, 12):
        term = -term * (2 * k - 1) * inv_t2
        one_minus_s = one_minus_s + term
    s = 1.0 - one_minus_s
    series = -t_series * one_minus_s / s
    return jnp.where(t < SERIES_CUT, series, direct)


@g.defjvp
def _g_jvp(primals, tangents):
    (t,), (dt,) = primals, tangents
    return g(t), g_prime(t) * dt


def d_left(s, t, diff, summ):
    """log Φ(s) − log Φ(t) for s <= t <= 0, with s − t and s + t given exactly.

    For a narrow interval G(s) − G(t) would cancel; there the midpoint rule with
    its third-order correction, diff·h(m) + diff³/24·h''(m) with h = G' and
    h'' = λ(h² + λh − 1), λ = h − t the inverse Mills ratio (error O(diff⁵)),
    keeps full relative precision from a single evaluation of h.
    """
    narrow_below = 0.05 if jnp.asarray(s).dtype == jnp.float32 else 1e-3
    narrow = jnp.abs(diff) < narrow_below
    mid = jnp.where(narrow, 0.5 * (s + t), -1.0)
    h = g_prime(mid)
    lam = h - mid
    d = jnp.where(narrow, diff, 0.0)
    midpoint = d * h + d**3 / 24.0 * lam * (h * h + lam * h - 1.0)
    g_diff = jnp.where(narrow, midpoint, g(s) - g(t))
    return jnp.minimum(g_diff - 0.5 * diff * summ, 0.0)


def interval(x1, x2, loc, scale):
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
    j_tail = g(t_t) + log1mexp(d_left(s_t, t_t, diff_t, summ_t))
    # Straddling 0: m = 0, Φ(t) − Φ(s) = (erf(t/√2) + erf(−s/√2)) / 2, two positive
    # terms, so a narrow interval keeps its digits.
    s_m = jnp.where(tail, -1.0, s)
    t_m = jnp.where(tail, 1.0, t)
    j_mid = jnp.log(0.5 * (erf(t_m / math.sqrt(2.0)) + erf(-s_m / math.sqrt(2.0))))
    j = jnp.where(tail, j_tail, j_mid)
    xm = jnp.where(left, x2, jnp.where(right, x1, loc))
    return xm, j


def half_sq_diff(xa, xb, loc, scale):
    """(za² − zb²)/2 for za = (xa−loc)/σ, zb = (xb−loc)/σ, without cancellation."""
    return 0.5 * ((xa - xb) / scale) * (((xa - loc) + (xb - loc)) / scale)


def log_z(loc, scale):
    """log Z = log(Φ(b) − Φ(a)) as (xm, J): log Z = −((xm−loc)/σ)²/2 + J."""
    return interval(jnp.zeros_like(loc), jnp.ones_like(loc), loc, scale)


def log_density_formula(x, loc, scale):
    """−z²/2 − log σ − log √(2π) − log Z, for any x (no support check)."""
    xm, j = log_z(loc, scale)
    return -half_sq_diff(x, xm, loc, scale) - j - jnp.log(scale) - HALF_LOG_2PI


def log_cdf_sf_inside(x, loc, scale):
    """(log F(x), log(1 − F(x))) for x in [0, 1].

    With A = log P(0 ≤ S' ≤ x) and B = log P(x ≤ S' ≤ 1) for the untruncated S',
    log F = −softplus(B − A) and log(1 − F) = −softplus(A − B): two intervals,
    no normaliser, and B − A formed without cancellation.
    """
    zero, one = jnp.zeros_like(x), jnp.ones_like(x)
    xc, jc = interval(zero, x, loc, scale)
    xs, js = interval(x, one, loc, scale)
    b_minus_a = js - jc - half_sq_diff(xs, xc, loc, scale)
    return -jax.nn.softplus(b_minus_a), -jax.nn.softplus(-b_minus_a)


# ----------------------------------------------------------------------------
# Moments by quadrature
# ----------------------------------------------------------------------------

# Gauss-Legendre nodes for the moment integrals (see _moments_canonical).
_GL_X, _GL_W = np.polynomial.legendre.leggauss(96)


def _moments_canonical(loc, scale):
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


def central_moments(loc, scale):
    """Mean and central moments 2, 3, 4 of X (no autodiff through the special functions)."""
    reflected = loc < 0.5
    loc_c = jnp.where(reflected, 1.0 - loc, loc)
    m1_u, c2, c3, c4 = _moments_canonical(loc_c, scale)
    mean_c = 1.0 - scale * m1_u
    # X_c = 1 − σu flips the sign of odd central moments; reflecting flips it back.
    sign3 = jnp.where(reflected, 1.0, -1.0)
    return (
        jnp.where(reflected, 1.0 - mean_c, mean_c),
        scale**2 * c2,
        sign3 * scale**3 * c3,
        scale**4 * c4,
    )


# ----------------------------------------------------------------------------
# The log-likelihood in natural parameters, and its maximisation
# ----------------------------------------------------------------------------


def to_natural(mu, sigma):
    """(μ, σ) -> natural parameters (μ/σ², −1/(2σ²))."""
    prec = 1.0 / (sigma * sigma)
    return jnp.stack([mu * prec, -0.5 * prec], axis=-1)


def from_natural(eta):
    """Natural parameters -> (μ, σ)."""
    sigma2 = -0.5 / eta[..., 1]
    return eta[..., 0] * sigma2, jnp.sqrt(sigma2)


def loglik_stats(mu, sigma, n, mean, m2c):
    """Σ log p(x_i) from n, the mean and Σ(x − mean)²: the TruncatedNormal01 likelihood.

    Algebraically identical to summing the log density over the scores (the
    tests check it against the numpyro model's log density), but O(1) per
    question: log Z is computed once, not once per score.
    """
    xm, j = log_z(mu, sigma)
    quad = m2c + n * (mean - xm) * (mean + xm - 2.0 * mu)
    return -0.5 * quad / (sigma * sigma) - n * (j + jnp.log(sigma) + HALF_LOG_2PI)


def natural_stats_vgh(theta, n, mean, m2c):
    """Value, gradient and Hessian of the TruncatedNormal01 log-likelihood in η.

    An exponential family: ∇ℓ = Σ T(x) − n E[T], ∇²ℓ = −n Cov[T] with T = (x, x²),
    the moments of X from quadrature; no autodiff through the special functions.
    """
    mu, sigma = from_natural(theta)
    value = loglik_stats(mu, sigma, n, mean, m2c)
    m, c2, c3, c4 = central_moments(mu, sigma)
    # Centre T at the model mean m for accuracy: x² − m² = (x − m)² + 2m(x − m).
    d1 = mean - m
    g1 = n * d1
    g2 = m2c + n * d1 * d1 + 2.0 * m * g1 - n * c2
    cov12 = c3 + 2.0 * m * c2
    cov22 = c4 + 4.0 * m * c3 + 4.0 * m * m * c2 - c2 * c2
    grad = jnp.stack([g1, g2], axis=-1)
    hess = -n[:, None, None] * jnp.stack(
        [jnp.stack([c2, cov12], -1), jnp.stack([cov12, cov22], -1)], -2
    )
    return value, grad, hess


def prior_in_natural(prior):
    """``theta -> log prior`` of a prior with ``.mu`` / ``.sigma`` distributions, in η."""

    def log_prior(theta):
        mu, sigma = from_natural(theta)
        return prior.mu.log_prob(mu) + prior.sigma.log_prob(sigma)

    return log_prior


def solve_stats(n, mean, m2c, prior, theta0, sigma_bounds, max_iter, frozen=None):
    """Newton in η for the truncated-normal likelihood (+ an optional prior).

    Returns:
        ``(objective, newton_box(...))``: the objective in η and the solver's result.
    """
    dtype = mean.dtype

    def objective(theta):
        mu, sigma = from_natural(theta)
        value = loglik_stats(mu, sigma, n, mean, m2c)
        if prior is not None:
            value = value + prior_in_natural(prior)(theta)
        return value

    def vgh(theta):
        value, grad, hess = natural_stats_vgh(theta, n, mean, m2c)
        if prior is not None:
            pv, pg, ph = value_grad_hess(prior_in_natural(prior), theta)
            value, grad, hess = value + pv, grad + pg, hess + ph
        return value, grad, hess

    lower = jnp.array([-jnp.inf, -0.5 / sigma_bounds[0] ** 2], dtype)
    upper = jnp.array([jnp.inf, -0.5 / sigma_bounds[1] ** 2], dtype)
    return objective, newton_box(objective, vgh, theta0, lower, upper, max_iter, frozen)


@jax.jit
def moment_match(mean, std):
    """(loc, scale, ok) of the normal truncated to [0, 1] with the given mean and std.

    ``ok`` is False for unreachable or out-of-range pairs (their loc/scale are
    meaningless). Moment matching is the MLE of a sample with these moments:
    one "sample" with mean m and squared deviation s² (exponential-family identity).
    """
    shape = mean.shape
    m = mean.reshape(-1)
    s = std.reshape(-1)
    valid = jnp.isfinite(m) & jnp.isfinite(s) & (m > 0) & (m < 1) & (s > 0)
    m_safe = jnp.where(valid, m, 0.5)
    s_safe = jnp.where(valid, s, 0.1)
    theta0 = to_natural(m_safe, s_safe * 1.2)
    _, (theta, _, on_edge, done, _) = solve_stats(
        jnp.ones_like(m_safe), m_safe, s_safe * s_safe, None, theta0, (1e-6, 1e4), 200
    )
    loc, scale = from_natural(theta)
    ok = valid & ~on_edge & done
    return loc.reshape(shape), scale.reshape(shape), ok.reshape(shape)
