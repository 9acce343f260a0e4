r"""``beta``: Beta(a, b) scores, parameters ``a``, ``b`` (> 0).

Scores are clamped to [ε, 1 − ε], ε = :data:`EPS` = 1e-6, before the log density (a PRM
score of exactly 0 or 1 would have density 0 or ∞); the CDF is exact (regularised
incomplete beta). Fits run in θ = (log a, log b) within [log 1e-2, log 1e5]² (a maximum
on that edge is ``BOUNDARY``), starting at the method of moments and at (1, 1).

Priors: ``"weak"`` is θ ~ N(0, 3²) per coordinate (centred on the uniform law); a
:class:`~optscale_jax.model.GaussianPrior` (the OptScaleᵗ priors file) is read as the
(mean, std) of the score law, moment-matched to (a, b) (std clipped to 0.99 of the
largest a beta allows, mean to [1e-3, 1 − 1e-3]), with prior std :data:`PRIOR_SCALE`
on log a and log b; its widths ``scale_mu``/``scale_sigma`` are not used.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
from jax.scipy.special import betainc, gammaln
from jax.typing import ArrayLike

from optscale_jax.families.base import BoxFamily, UnconstrainedPrior, register
from optscale_jax.fit import validate_scores
from optscale_jax.model import GaussianPrior

__all__ = ["Beta", "BETA", "EPS", "PRIOR_SCALE", "clamp", "beta_log_prob", "beta_log_cdf",
           "beta_from_moments"]

#: Clamp of scores at exactly 0 or 1 (beta, logitnormal, mixture).
EPS = 1e-6
#: Prior std on log a and log b when a GaussianPrior (mean, std) is moment-matched.
PRIOR_SCALE = 0.5


def clamp(x: ArrayLike) -> jax.Array:
    """Scores into [EPS, 1 − EPS]."""
    return jnp.clip(jnp.asarray(x), EPS, 1.0 - EPS)


def betaln(a, b) -> jax.Array:
    """log B(a, b) through log-gamma (``jax.scipy.special.betaln`` is off by ~5e-7 at a ≈ 10)."""
    return gammaln(a) + gammaln(b) - gammaln(a + b)


def beta_log_prob(x, a, b) -> jax.Array:
    """Log density of Beta(a, b) at the clamped ``x``."""
    x = clamp(x)
    return (a - 1.0) * jnp.log(x) + (b - 1.0) * jnp.log1p(-x) - betaln(a, b)


def beta_log_cdf(s, a, b) -> jax.Array:
    """log P(X ≤ s) of Beta(a, b): 0 for s ≥ 1, −∞ for s ≤ 0."""
    s = jnp.asarray(s)
    inner = jnp.clip(s, EPS, 1.0 - EPS)
    v = jnp.log(betainc(a, b, inner))
    return jnp.where(s >= 1.0, 0.0, jnp.where(s <= 0.0, -jnp.inf, v))


def beta_from_moments(mean, std):
    """(a, b) of the beta with this mean and std (std clipped to what a beta allows)."""
    m = jnp.clip(mean, 1e-3, 1.0 - 1e-3)
    v = jnp.minimum(jnp.asarray(std) ** 2, 0.98 * m * (1.0 - m))
    v = jnp.maximum(v, 1e-10)
    k = m * (1.0 - m) / v - 1.0
    return m * k, (1.0 - m) * k


@dataclasses.dataclass(frozen=True)
class Beta(BoxFamily):
    """Beta(a, b) on [0, 1]."""

    name = "beta"
    param_names = ("a", "b")
    theta_names = ("log_a", "log_b")
    lower = (float(np.log(1e-2)),) * 2
    upper = (float(np.log(1e5)),) * 2
    weak_loc = (0.0, 0.0)
    weak_scale = (3.0, 3.0)

    def to_params(self, theta):
        return {"a": jnp.exp(theta[..., 0]), "b": jnp.exp(theta[..., 1])}

    def to_theta(self, params):
        return jnp.stack([jnp.log(params["a"]), jnp.log(params["b"])], axis=-1)

    def log_prob(self, params, x):
        return beta_log_prob(x, params["a"], params["b"])

    def log_cdf(self, params, s):
        return beta_log_cdf(s, params["a"], params["b"])

    def sample(self, key, params, shape):
        return jax.random.beta(key, params["a"], params["b"], tuple(shape))

    def starts(self, scores, mask):
        x = clamp(scores)
        n = jnp.maximum(jnp.sum(mask, -1), 1)
        mean = jnp.sum(jnp.where(mask, x, 0.0), -1) / n
        var = jnp.sum(jnp.where(mask, (x - mean[:, None]) ** 2, 0.0), -1) / n
        a, b = beta_from_moments(mean, jnp.sqrt(jnp.maximum(var, 1e-6)))
        mom = jnp.stack([jnp.log(a), jnp.log(b)], -1)
        flat = jnp.zeros_like(mom)
        return jnp.stack([mom, flat], axis=1)

    def sufficient_stats(self, scores, mask=None):
        """``n``, ``sum_log_x``, ``sum_log_1mx`` of the clamped scores per row."""
        s, m = validate_scores(scores, mask)
        x, m = clamp(s), jnp.asarray(m)
        return {"n": jnp.sum(m, -1), "sum_log_x": jnp.sum(jnp.where(m, jnp.log(x), 0.0), -1),
                "sum_log_1mx": jnp.sum(jnp.where(m, jnp.log1p(-x), 0.0), -1)}

    def prior_from_gaussian(self, prior: GaussianPrior, q: int) -> UnconstrainedPrior:
        mean = np.broadcast_to(np.asarray(prior.loc_mu, float), (q,))
        std = np.broadcast_to(np.asarray(prior.loc_sigma, float), (q,))
        a, b = beta_from_moments(jnp.asarray(mean), jnp.abs(jnp.asarray(std)))
        loc = np.stack([np.log(np.asarray(a)), np.log(np.asarray(b))], -1)
        loc = np.clip(loc, self.lower, self.upper)
        return UnconstrainedPrior(loc, np.full_like(loc, PRIOR_SCALE))


BETA = register(Beta())
