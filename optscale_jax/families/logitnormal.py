r"""``logitnormal``: logit(score) ~ Normal(mu, sigma), parameters ``mu``, ``sigma`` (logit scale).

Scores are clamped to [ε, 1 − ε], ε = 1e-6 (:data:`optscale_jax.families.beta.EPS`), before
the logit: a score of exactly 1 counts as logit(1 − ε) ≈ 13.8. The CDF at s_min is
Φ((logit s_min − mu)/sigma) (exact; 1 at s ≥ 1, 0 at s ≤ 0).

The MLE is closed form: the mean and (1/n) standard deviation of the clamped logits,
sigma clipped to [1e-3, 100] (``BOUNDARY`` when clipped; ``DEGENERATE`` for one score or
equal scores, sigma = 1e-3). MAP runs the batched Newton in θ = (mu, log sigma).

Priors: ``"weak"`` is mu ~ N(0, 5²), log sigma ~ N(0, 2²); a
:class:`~optscale_jax.model.GaussianPrior` (mean, std of the score) maps by the delta
method, mu = logit(mean), sigma = std / (mean (1 − mean)) (mean clipped to [1e-3, 1 − 1e-3]),
with prior std 0.5 on mu and on log sigma.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax.scipy.special import logit
from jax.scipy.stats import norm

from optscale_jax.families.base import BoxFamily, FamilyFit, UnconstrainedPrior, register
from optscale_jax.families.beta import EPS, clamp
from optscale_jax.fit import FitStatus, validate_scores
from optscale_jax.model import GaussianPrior

__all__ = ["LogitNormal", "LOGITNORMAL"]

_SIGMA_BOUNDS = (1e-3, 100.0)


@dataclasses.dataclass(frozen=True)
class LogitNormal(BoxFamily):
    """logit(X) ~ Normal(mu, sigma)."""

    name = "logitnormal"
    param_names = ("mu", "sigma")
    theta_names = ("mu", "log_sigma")
    lower = (-30.0, float(np.log(_SIGMA_BOUNDS[0])))
    upper = (30.0, float(np.log(_SIGMA_BOUNDS[1])))
    weak_loc = (0.0, 0.0)
    weak_scale = (5.0, 2.0)

    def to_params(self, theta):
        return {"mu": theta[..., 0], "sigma": jnp.exp(theta[..., 1])}

    def to_theta(self, params):
        return jnp.stack([jnp.asarray(params["mu"]), jnp.log(params["sigma"])], axis=-1)

    def log_prob(self, params, x):
        x = clamp(x)
        return norm.logpdf(logit(x), params["mu"], params["sigma"]) - jnp.log(x) - jnp.log1p(-x)

    def log_cdf(self, params, s):
        s = jnp.asarray(s)
        z = logit(jnp.clip(s, EPS, 1.0 - EPS))
        v = norm.logcdf((z - params["mu"]) / params["sigma"])
        return jnp.where(s >= 1.0, 0.0, jnp.where(s <= 0.0, -jnp.inf, v))

    def sample(self, key, params, shape):
        z = params["mu"] + params["sigma"] * jax.random.normal(key, tuple(shape))
        return jax.nn.sigmoid(z)

    def starts(self, scores, mask):
        st = _logit_moments(scores, mask)
        sd = jnp.clip(st[2], 1e-2, 10.0)
        return jnp.stack([st[1], jnp.log(sd)], -1)[:, None, :]

    def sufficient_stats(self, scores, mask=None):
        """``n``, ``sum_z``, ``sum_z2`` (z = logit of the clamped score) and ``sum_log_jac``
        (Σ log x(1 − x)) per row."""
        s, m = validate_scores(scores, mask)
        x, m = clamp(s), jnp.asarray(m)
        z = logit(x)
        return {"n": jnp.sum(m, -1), "sum_z": jnp.sum(jnp.where(m, z, 0.0), -1),
                "sum_z2": jnp.sum(jnp.where(m, z * z, 0.0), -1),
                "sum_log_jac": jnp.sum(jnp.where(m, jnp.log(x) + jnp.log1p(-x), 0.0), -1)}

    def prior_from_gaussian(self, prior: GaussianPrior, q: int) -> UnconstrainedPrior:
        m = np.clip(np.broadcast_to(np.asarray(prior.loc_mu, float), (q,)), 1e-3, 1 - 1e-3)
        sd = np.abs(np.broadcast_to(np.asarray(prior.loc_sigma, float), (q,)))
        sigma = np.clip(sd / (m * (1 - m)), *_SIGMA_BOUNDS)
        loc = np.clip(np.stack([np.log(m / (1 - m)), np.log(sigma)], -1), self.lower, self.upper)
        return UnconstrainedPrior(loc, np.full_like(loc, 0.5))

    def fit(self, scores, mask=None, *, prior: Any = None) -> FamilyFit:
        """Closed-form MLE (prior None); MAP through :meth:`BoxFamily.fit`."""
        if prior is not None:
            return super().fit(scores, mask, prior=prior)
        single = np.ndim(scores) == 1
        s, m = validate_scores(scores, mask)
        if s.shape[1] == 0:
            s, m = np.full((s.shape[0], 1), 0.5), np.zeros((s.shape[0], 1), bool)
        result = _mle(self, jnp.asarray(s, jnp.result_type(float)), jnp.asarray(m))
        if single:
            result = FamilyFit({k: v[0] for k, v in result.params.items()},
                               result.log_lik[0], result.status[0])
        return result


def _logit_moments(scores, mask):
    z = logit(clamp(scores))
    n = jnp.sum(mask, -1)
    nn = jnp.maximum(n, 1)
    mean = jnp.sum(jnp.where(mask, z, 0.0), -1) / nn
    var = jnp.sum(jnp.where(mask, (z - mean[:, None]) ** 2, 0.0), -1) / nn
    return n, mean, jnp.sqrt(var)


@jax.jit
def _mle_arrays(scores, mask):
    n, mu, sd = _logit_moments(scores, mask)
    sigma = jnp.clip(sd, *_SIGMA_BOUNDS)
    lo = jnp.min(jnp.where(mask, scores, jnp.inf), -1)
    hi = jnp.max(jnp.where(mask, scores, -jnp.inf), -1)
    degenerate = (n == 1) | ((n > 1) & (hi <= lo))
    status = jnp.where(sd > _SIGMA_BOUNDS[1], FitStatus.BOUNDARY, FitStatus.CONVERGED)
    status = jnp.where(degenerate, FitStatus.DEGENERATE, status)
    status = jnp.where(n == 0, FitStatus.NO_DATA, status).astype(jnp.int32)
    mu = jnp.where(n == 0, jnp.nan, mu)
    sigma = jnp.where(n == 0, jnp.nan, sigma)
    return mu, sigma, status, n


def _mle(family: LogitNormal, scores, mask) -> FamilyFit:
    mu, sigma, status, n = _mle_arrays(scores, mask)
    theta = jnp.stack([mu, jnp.log(sigma)], -1)
    value = family.objective(jnp.where(jnp.isfinite(theta), theta, 0.0), scores, mask)
    value = jnp.where(n == 0, 0.0, value)
    return FamilyFit({"mu": mu, "sigma": sigma}, value, status)


LOGITNORMAL = register(LogitNormal())
