r"""The numpyro model of a batch of PRM score vectors.

One model, three users: the MLE/MAP solvers (:mod:`optscale_jax.fit`) maximise
its log density, the predictor head is trained through it, and researchers
extend it (any numpyro prior; NUTS; posterior-predictive N*).

.. math::

    \mu_q \sim p_\mu,\quad \sigma_q \sim p_\sigma,\quad
    s_{qi} \mid \mu_q, \sigma_q \sim \mathrm{TN}_{[0,1]}(\mu_q, \sigma_q)
    \quad (i \le n_q)

``prior=None`` puts flat (improper) priors on μ ∈ ℝ and σ > 0, so the log
density is the likelihood and its maximum is the MLE (OptScale⁰).
:class:`GaussianPrior` is the paper's OptScaleᵗ prior; :class:`Prior` takes any
numpyro distributions.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import numpyro
import numpyro.distributions as dist
from jax.typing import ArrayLike
from numpyro.distributions import constraints

from optscale_jax.distributions import TruncatedNormal01

__all__ = [
    "GaussianPrior",
    "Prior",
    "POPULATION_PRIOR_CENTRES",
    "as_prior",
    "gaussian_prior",
    "population_prior",
    "score_model",
    "log_joint",
    "weak_prior",
]

#: Prior centres (mu_bar, sigma_bar) used for OptScaleᵗ when no per-question prior is
#: given: the mean of the 4,501 per-question (mean, std) PRM-score labels in the
#: authors' predictor training set (shared/data/predictor/train_mu_sigma.json;
#: Qwen2.5-Math-PRM-7B scores of DeepSeek-R1-Distill-Qwen-7B completions). Like the
#: authors' predictor outputs, these moments are used directly as the centres.
POPULATION_PRIOR_CENTRES: tuple[float, float] = (0.9295, 0.0680)


class Prior(NamedTuple):
    """Any numpyro distributions as priors on μ and σ.

    Attributes:
        mu: prior of the location μ (batch shape ``()`` or ``(Q,)``).
        sigma: prior of the scale σ; its support must be positive.
    """

    mu: dist.Distribution
    sigma: dist.Distribution


class GaussianPrior(NamedTuple):
    r"""The paper's prior: μ ~ N(loc_mu, scale_mu), σ ~ N(loc_sigma, scale_sigma) on σ > 0.

    Fields are scalars or arrays broadcast per question (shape ``(Q,)``). The
    paper uses the predictor's (μ̄, σ̄) as centres and 0.1 as both widths.

    Attributes:
        loc_mu: prior centre of μ.
        scale_mu: prior width of μ.
        loc_sigma: prior centre of σ.
        scale_sigma: prior width of σ.
    """

    loc_mu: ArrayLike
    scale_mu: ArrayLike
    loc_sigma: ArrayLike
    scale_sigma: ArrayLike

    def to_prior(self) -> Prior:
        """The same prior as numpyro distributions (σ's normal truncated at 0)."""
        return Prior(
            mu=dist.Normal(self.loc_mu, self.scale_mu),
            sigma=dist.TruncatedNormal(self.loc_sigma, self.scale_sigma, low=0.0),
        )


def gaussian_prior(
    loc_mu: ArrayLike, loc_sigma: ArrayLike, scale_mu: float = 0.1, scale_sigma: float = 0.1
) -> GaussianPrior:
    """Per-question Gaussian priors for OptScaleᵗ (the authors use prior std 0.1 for both).

    Args:
        loc_mu: ``(Q,)`` prior centres of mu (e.g. a predictor's output).
        loc_sigma: ``(Q,)`` prior centres of sigma, finite; a centre <= 0 is allowed (the
            authors' predictor files have some): the prior on sigma > 0 then favours small sigma.
        scale_mu: prior std of mu.
        scale_sigma: prior std of sigma.

    Returns:
        :class:`GaussianPrior` with float64 numpy arrays.

    Raises:
        ValueError: centres of different lengths or not finite, or scales not finite and > 0.

    Examples:
        >>> gaussian_prior([0.9, 0.8], [0.1, 0.2]).scale_mu
        array([0.1, 0.1])
    """
    lm = np.asarray(loc_mu, dtype=np.float64).reshape(-1)
    ls = np.asarray(loc_sigma, dtype=np.float64).reshape(-1)
    if lm.shape != ls.shape:
        raise ValueError(f"prior centres differ in length: loc_mu {lm.shape}, loc_sigma {ls.shape}")
    bad = ~np.isfinite(lm) | ~np.isfinite(ls)
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise ValueError(
            f"prior centres of question {i}: (mu, sigma) = ({float(lm[i])!r}, {float(ls[i])!r}) "
            "must be finite"
        )
    if not (np.isfinite(scale_mu) and np.isfinite(scale_sigma) and scale_mu > 0 and scale_sigma > 0):
        raise ValueError(
            f"prior scales must be finite and > 0, got scale_mu={float(scale_mu)!r}, "
            f"scale_sigma={float(scale_sigma)!r}"
        )
    return GaussianPrior(lm, np.full_like(lm, scale_mu), ls, np.full_like(ls, scale_sigma))


def population_prior(n_questions: int) -> GaussianPrior:
    """The same :func:`gaussian_prior` for every question, at :data:`POPULATION_PRIOR_CENTRES`.

    What OptScaleᵗ uses when no per-question (predicted) prior is given.

    Args:
        n_questions: number of questions ``Q``.

    Returns:
        :class:`GaussianPrior` with ``(Q,)`` float64 fields and std 0.1.

    Examples:
        >>> population_prior(2).loc_mu
        array([0.9295, 0.9295])
    """
    q = int(n_questions)
    return gaussian_prior(
        np.full(q, POPULATION_PRIOR_CENTRES[0]), np.full(q, POPULATION_PRIOR_CENTRES[1])
    )


def weak_prior() -> Prior:
    """A weakly informative proper prior (μ ~ N(0.5, 10), σ ~ HalfNormal(10)), for NUTS."""
    return Prior(mu=dist.Normal(0.5, 10.0), sigma=dist.HalfNormal(10.0))


def as_prior(prior: Prior | GaussianPrior | None) -> Prior | None:
    """Normalise a prior argument: ``GaussianPrior`` becomes a :class:`Prior`."""
    if prior is None or isinstance(prior, Prior):
        return prior
    if isinstance(prior, GaussianPrior):
        return prior.to_prior()
    raise TypeError(
        f"prior must be None, a GaussianPrior or a Prior of numpyro distributions, got {type(prior)!r}"
    )


def score_model(
    scores: ArrayLike,
    mask: ArrayLike | None = None,
    prior: Prior | GaussianPrior | None = None,
    likelihood: Callable[[jax.Array, jax.Array], dist.Distribution] | None = None,
) -> None:
    """numpyro model: per-question (μ, σ) and masked truncated-normal scores.

    Sites: ``"mu"`` and ``"sigma"`` (shape ``(Q,)``) and the observed ``"scores"``
    (shape ``(Q, N)``, entries where ``mask`` is False are ignored).

    Args:
        scores: PRM scores, shape ``(Q, N)``.
        mask: which entries are real samples, shape ``(Q, N)``; default all.
        prior: ``None`` (flat: the likelihood), a :class:`GaussianPrior` or a :class:`Prior`.
        likelihood: ``(loc, scale) -> distribution`` of one score; default
            :class:`~optscale_jax.distributions.TruncatedNormal01`. ``dist.Normal``
            gives the untruncated Gaussian; any numpyro distribution works.

    Examples:
        >>> import jax, jax.numpy as jnp
        >>> from numpyro.infer import MCMC, NUTS
        >>> scores = jnp.array([[0.9, 0.8, 0.95, 0.7]])
        >>> mcmc = MCMC(NUTS(score_model), num_warmup=50, num_samples=50, progress_bar=False)
        >>> mcmc.run(jax.random.key(0), scores, prior=GaussianPrior(0.9, 0.1, 0.1, 0.1))
        >>> mcmc.get_samples()["mu"].shape
        (50, 1)
    """
    scores = jnp.asarray(scores)
    if scores.ndim != 2:
        raise ValueError(f"scores must have shape (Q, N), got {scores.shape}")
    q, n = scores.shape
    mask = jnp.ones((q, n), bool) if mask is None else jnp.asarray(mask, bool)
    prior = as_prior(prior)
    with numpyro.plate("questions", q, dim=-1):
        if prior is None:
            mu = numpyro.sample("mu", dist.ImproperUniform(constraints.real, (), ()))
            sigma = numpyro.sample("sigma", dist.ImproperUniform(constraints.positive, (), ()))
        else:
            mu = numpyro.sample("mu", prior.mu)
            sigma = numpyro.sample("sigma", prior.sigma)
        make = TruncatedNormal01 if likelihood is None else likelihood
        per_score = make(mu[:, None], sigma[:, None]).mask(mask).to_event(1)
        numpyro.sample("scores", per_score, obs=jnp.where(mask, scores, 0.5))


def log_joint(
    mu: ArrayLike,
    sigma: ArrayLike,
    scores: ArrayLike,
    mask: ArrayLike | None = None,
    prior: Prior | GaussianPrior | None = None,
    *,
    likelihood: Callable[[jax.Array, jax.Array], dist.Distribution] | None = None,
) -> jax.Array:
    """Per-question log density of :func:`score_model` at (μ, σ).

    The sum over questions is numpyro's ``log_density`` of the model; keeping
    it per question lets batched solvers run one line search per question.

    Args:
        mu: locations, shape ``(Q,)``.
        sigma: scales, shape ``(Q,)``.
        scores: shape ``(Q, N)``.
        mask: shape ``(Q, N)``; default all True.
        prior: as in :func:`score_model`.
        likelihood: as in :func:`score_model`.

    Returns:
        Log likelihood plus log prior, shape ``(Q,)``.

    Examples:
        >>> import numpy as np
        >>> round(float(log_joint(np.array([0.5]), np.array([1e6]), np.array([[0.2, 0.7]]))[0]), 9)  # uniform
        0.0
    """
    mu = jnp.atleast_1d(jnp.asarray(mu))
    sigma = jnp.atleast_1d(jnp.asarray(sigma))
    substituted = numpyro.handlers.substitute(score_model, data={"mu": mu, "sigma": sigma})
    trace = numpyro.handlers.trace(substituted).get_trace(scores, mask, prior, likelihood)
    total = jnp.zeros(mu.shape, jnp.result_type(mu, sigma, float))
    for site in trace.values():
        if site["type"] == "sample":
            total = total + site["fn"].log_prob(site["value"])
    return total


def score_cross_entropy(
    mu: ArrayLike, sigma: ArrayLike, scores: ArrayLike, weight: ArrayLike
) -> jax.Array:
    r"""Weighted mean cross-entropy of score rows under :func:`score_model` at (μ, σ), no prior.

    .. math::

        H = -\frac{\sum_q w_q \sum_i \log p(s_{qi} \mid \mu_q, \sigma_q)}{N \sum_q w_q}

    With the ``N`` mid-quantiles of a target distribution as ``scores``
    (:func:`optscale_jax.distributions.mid_quantiles`) this is the
    cross-entropy of that distribution under the predicted one: it is minimised
    by the target's own parameters and stays bounded where they are huge
    (scores piled near 1). The predictor's ``"score_model"`` objective.

    Args:
        mu: locations, shape ``(Q,)``.
        sigma: scales, shape ``(Q,)``.
        scores: shape ``(Q, N)``, all used.
        weight: row weights ``(Q,)`` (0 drops a padding row).

    Returns:
        A scalar.

    Examples:
        >>> import numpy as np
        >>> h = score_cross_entropy(
        ...     np.array([0.5]), np.array([1e6]), np.array([[0.2, 0.7]]), np.ones(1)
        ... )
        >>> abs(float(h)) < 1e-6  # sigma -> inf: uniform scores, log density 0
        True
    """
    ll = log_joint(mu, sigma, scores)  # (Q,), sum over the N scores
    return -(weight * ll).sum() / (weight.sum() * jnp.shape(scores)[1])


__all__ += ["score_cross_entropy"]
