"""``truncnorm``: the paper's normal truncated to [0, 1], parameters ``mu``, ``sigma``.

Every number comes from the existing code: fits from :func:`optscale_jax.fit.fit_mle` /
:func:`~optscale_jax.fit.fit_map` (the fast sufficient-statistics Newton in natural
parameters), N* from :func:`optscale_jax.nstar.n_star`, densities from
:mod:`optscale_jax.distributions`. So OptScale with ``family="truncnorm"`` is the
paper's (and the package's default) rule, unchanged. Priors: ``None`` (MLE, OptScale⁰),
a :class:`~optscale_jax.model.GaussianPrior` or :class:`~optscale_jax.model.Prior` (MAP,
OptScaleᵗ, passed straight to ``fit_map``), ``"weak"`` (:func:`~optscale_jax.model.weak_prior`)
or an :class:`~optscale_jax.families.base.UnconstrainedPrior` on θ = (mu, log sigma).
"""

from __future__ import annotations

import dataclasses
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import numpyro.distributions as dist
from jax.typing import ArrayLike

from optscale_jax.distributions import (
    TruncatedNormal01,
    truncnorm01_icdf,
    truncnorm01_log_cdf,
    truncnorm01_log_prob,
)
from optscale_jax.families.base import BoxFamily, FamilyFit, UnconstrainedPrior, register
from optscale_jax.fit import DEFAULT_SIGMA_BOUNDS, fit_map, fit_mle, validate_scores
from optscale_jax.model import GaussianPrior, Prior, weak_prior
from optscale_jax.nstar import n_star

__all__ = ["TruncNorm", "TRUNCNORM"]


@dataclasses.dataclass(frozen=True)
class TruncNorm(BoxFamily):
    """Normal(mu, sigma) truncated to [0, 1] (the paper's score law)."""

    name = "truncnorm"
    param_names = ("mu", "sigma")
    theta_names = ("mu", "log_sigma")
    lower = (-1e6, float(np.log(DEFAULT_SIGMA_BOUNDS[0])))
    upper = (1e6, float(np.log(DEFAULT_SIGMA_BOUNDS[1])))
    weak_loc = (0.5, 0.0)
    weak_scale = (10.0, 3.0)

    def to_params(self, theta):
        return {"mu": theta[..., 0], "sigma": jnp.exp(theta[..., 1])}

    def to_theta(self, params):
        return jnp.stack([jnp.asarray(params["mu"]), jnp.log(params["sigma"])], axis=-1)

    def log_prob(self, params: dict, x: ArrayLike) -> jax.Array:
        return truncnorm01_log_prob(x, params["mu"], params["sigma"])

    def log_cdf(self, params: dict, s: ArrayLike) -> jax.Array:
        return truncnorm01_log_cdf(s, params["mu"], params["sigma"])

    def sample(self, key, params, shape):
        """Draws of shape ``shape`` (which ends with the parameters' broadcast shape)."""
        dtype = jnp.result_type(params["mu"], params["sigma"], float)
        u = jax.random.uniform(key, tuple(shape), dtype=dtype, minval=jnp.finfo(dtype).tiny)
        return truncnorm01_icdf(u, params["mu"], params["sigma"])

    def distribution(self, params: dict) -> dist.Distribution:
        return TruncatedNormal01(params["mu"], params["sigma"])

    def starts(self, scores, mask):
        n = jnp.maximum(jnp.sum(mask, -1), 1)
        mean = jnp.sum(jnp.where(mask, scores, 0.0), -1) / n
        var = jnp.sum(jnp.where(mask, (scores - mean[:, None]) ** 2, 0.0), -1) / n
        sd = jnp.clip(jnp.sqrt(var), 1e-2, 10.0)
        return jnp.stack([mean, jnp.log(sd)], -1)[:, None, :]

    def sufficient_stats(self, scores: ArrayLike, mask: ArrayLike | None = None) -> dict:
        """``n``, ``sum_x``, ``sum_x2`` per row: the log likelihood depends on the scores only
        through them."""
        s, m = validate_scores(scores, mask)
        s, m = jnp.asarray(s), jnp.asarray(m)
        return {"n": jnp.sum(m, -1), "sum_x": jnp.sum(jnp.where(m, s, 0.0), -1),
                "sum_x2": jnp.sum(jnp.where(m, s * s, 0.0), -1)}

    def prior_from_gaussian(self, prior: GaussianPrior, q: int) -> UnconstrainedPrior:
        raise AssertionError("truncnorm passes a GaussianPrior to fit_map directly")

    def fit(self, scores: ArrayLike, mask: ArrayLike | None = None, *, prior: Any = None,
            **options) -> FamilyFit:
        """``fit_mle`` (prior None) or ``fit_map`` (a GaussianPrior, Prior or ``"weak"``).

        ``**options`` go to ``fit_mle``/``fit_map`` (``sigma_bounds``, ``max_iter``, ``init``).
        """
        if prior is None:
            r = fit_mle(scores, mask, **options)
        elif isinstance(prior, (GaussianPrior, Prior)):
            r = fit_map(scores, prior, mask, **options)
        elif isinstance(prior, str) and prior == "weak":
            r = fit_map(scores, weak_prior(), mask, **options)
        elif isinstance(prior, UnconstrainedPrior):
            return super().fit(scores, mask, prior=prior)
        else:
            raise ValueError(
                "prior for family 'truncnorm' must be None, 'weak', a GaussianPrior, a Prior or an "
                f"UnconstrainedPrior, got {prior!r:.60}"
            )
        return FamilyFit({"mu": r.mu, "sigma": r.sigma}, r.log_prob, r.status)

    def n_star(self, params: dict, s_min, alpha, *, n_min: int = 1, n_max: int | None = None):
        """Exactly :func:`optscale_jax.nstar.n_star` (NaN parameters give n_max)."""
        mu, sigma = params["mu"], params["sigma"]
        if not isinstance(sigma, jax.Array):
            sigma = np.asarray(sigma, float)
            if np.any(sigma <= 0):
                raise ValueError(f"sigma must be > 0, got {float(sigma[sigma <= 0].reshape(-1)[0])}")
        return n_star(mu, sigma, s_min, alpha, n_min=n_min, n_max=n_max)


TRUNCNORM = register(TruncNorm())
