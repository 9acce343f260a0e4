"""NUTS posteriors of any score family and their ArviZ ``InferenceData`` export.

:func:`family_posterior` samples per-question parameters of a score family (the
protocol of :mod:`optscale_jax.families`) with NUTS; :func:`to_inference_data` turns
the draws into an ``arviz.InferenceData`` with a ``posterior`` group (one variable per
parameter, dims ``(chain, draw, question)``), a pointwise ``log_likelihood`` group
(variable ``"scores"``, dims ``(chain, draw, obs)``: one entry per drawn score, padding
dropped) and ``observed_data``, so that ``az.summary``, ``az.loo``, ``az.waic`` and
``az.compare`` work. ``az.loo`` then leaves out one *score* at a time; pass
``pointwise="question"`` to leave out one question (the sum of its scores) instead.

ArviZ is optional (``pip install "optscale-jax[bayes]"``); it is imported only by
:func:`to_inference_data`.

:func:`resolve_family` is the one place the calibration report and this module turn a
family name into a family object.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax.typing import ArrayLike

from optscale_jax.fit import fit_map, fit_mle, validate_scores
from optscale_jax.model import GaussianPrior, score_model, weak_prior

__all__ = [
    "FamilyPosterior",
    "resolve_family",
    "family_names",
    "family_posterior",
    "pointwise_log_likelihood",
    "to_inference_data",
]


class _Fit(NamedTuple):
    params: dict[str, jax.Array]
    log_lik: jax.Array
    status: jax.Array


class _TruncNormFallback:
    """The paper's truncated normal through ``fit_mle``/``fit_map``, used while
    :mod:`optscale_jax.families` has no registry (same numbers as the ``truncnorm`` family)."""

    name = "truncnorm"
    param_names = ("mu", "sigma")

    def log_prob(self, params: dict, x: ArrayLike) -> jax.Array:
        from optscale_jax.distributions import truncnorm01_log_prob

        return truncnorm01_log_prob(x, params["mu"], params["sigma"])

    def log_cdf(self, params: dict, s: ArrayLike) -> jax.Array:
        from optscale_jax.distributions import truncnorm01_log_cdf

        return truncnorm01_log_cdf(s, params["mu"], params["sigma"])

    def sufficient_stats(self, scores, mask) -> None:
        return None

    def fit(self, scores, mask=None, *, prior=None) -> _Fit:
        r = fit_mle(scores, mask) if prior is None else fit_map(scores, prior, mask)
        return _Fit({"mu": r.mu, "sigma": r.sigma}, r.log_prob, r.status)

    def distribution(self, params: dict):
        from optscale_jax.distributions import TruncatedNormal01

        return TruncatedNormal01(params["mu"], params["sigma"])

    def sample(self, key, params, shape):
        from optscale_jax.distributions import TruncatedNormal01

        mu, sigma = (jnp.broadcast_to(jnp.asarray(params[k], float), shape) for k in ("mu", "sigma"))
        return TruncatedNormal01(mu, sigma).sample(key)


def _registry() -> Any | None:
    try:
        import optscale_jax.families as fam
    except ImportError:  # pragma: no cover - the package always has it
        return None
    return fam if hasattr(fam, "get") and hasattr(fam, "FAMILIES") else None


def family_names() -> list[str]:
    """Names of the score families available (the registry's, or ``["truncnorm"]``)."""
    fam = _registry()
    names = sorted(fam.FAMILIES) if fam is not None else []
    return names or ["truncnorm"]


def resolve_family(family: Any) -> Any:
    """A score family object from a name (or the object itself).

    Raises:
        ValueError: unknown name, listing the known ones.
    """
    fam = _registry()
    if fam is not None and (not isinstance(family, str) or family in fam.FAMILIES):
        return fam.get(family)
    if not isinstance(family, str):
        if all(hasattr(family, a) for a in ("name", "log_prob", "log_cdf", "fit", "distribution")):
            return family
        raise ValueError(f"family must be a name or a score family object, got {family!r:.60}")
    if family == "truncnorm":
        return _TruncNormFallback()
    raise ValueError(f"unknown score family {family!r}; known: {', '.join(family_names())}")


class FamilyPosterior(NamedTuple):
    """NUTS draws of one family's parameters.

    Attributes:
        family: the family's name.
        draws: parameter name -> draws of shape ``(chains, draws, Q)``.
        divergences: divergent transitions over all chains.
        scores: the ``(Q, N)`` scores sampled on (float64 numpy).
        mask: their ``(Q, N)`` mask.
    """

    family: str
    draws: dict[str, np.ndarray]
    divergences: int
    scores: np.ndarray
    mask: np.ndarray


def family_posterior(
    key: jax.Array,
    scores: ArrayLike,
    mask: ArrayLike | None = None,
    family: Any = "truncnorm",
    *,
    prior: Any = None,
    num_warmup: int = 500,
    num_samples: int = 500,
    num_chains: int = 1,
    progress_bar: bool = False,
) -> FamilyPosterior:
    """NUTS over every question's parameters under a score family.

    ``truncnorm`` samples :func:`optscale_jax.model.score_model` (prior: a
    :class:`~optscale_jax.model.GaussianPrior` or ``Prior``; default the weakly informative
    :func:`~optscale_jax.model.weak_prior`). A family with unconstrained parameters
    (``families.BoxFamily``) samples ``families.family_model`` (prior: an
    ``UnconstrainedPrior``; default the family's weak prior).

    Args:
        key: PRNG key.
        scores: ``(Q, N)`` scores in [0, 1].
        mask: True for drawn samples; default all.
        family: a name or a family object.
        prior: as above.
        num_warmup, num_samples, num_chains: NUTS settings (chains run one after another).
        progress_bar: numpyro's progress bar.

    Returns:
        A :class:`FamilyPosterior`.
    """
    from numpyro.infer import MCMC, NUTS

    fam = resolve_family(family)
    for name, v in (("num_warmup", num_warmup), ("num_samples", num_samples), ("num_chains", num_chains)):
        if int(v) != v or v < (0 if name == "num_warmup" else 1):
            raise ValueError(f"{name} must be an integer >= {0 if name == 'num_warmup' else 1}, got {v!r}")
    s, m = validate_scores(scores, mask)
    if s.ndim != 2:
        raise ValueError(f"scores must have shape (Q, N), got {s.shape}")
    args: tuple
    if fam.name == "truncnorm" and not hasattr(fam, "theta_names"):
        model = score_model
        if prior is None:
            prior = weak_prior()
        elif isinstance(prior, GaussianPrior):
            prior = GaussianPrior(*(jnp.broadcast_to(jnp.asarray(f, float), (s.shape[0],)) for f in prior))
        args = (jnp.asarray(s), jnp.asarray(m), prior)
    elif hasattr(fam, "theta_names"):
        from optscale_jax.families import family_model

        def model(scores, mask, prior):
            family_model(fam, scores, mask, prior)

        args = (jnp.asarray(s), jnp.asarray(m), prior)
    else:
        raise ValueError(f"family {fam.name!r} has no numpyro model for NUTS "
                         "(it is neither truncnorm nor a families.BoxFamily)")
    mcmc = MCMC(NUTS(model), num_warmup=int(num_warmup), num_samples=int(num_samples),
                num_chains=int(num_chains), chain_method="sequential", progress_bar=progress_bar)
    mcmc.run(key, *args, extra_fields=("diverging",))
    samples = mcmc.get_samples(group_by_chain=True)
    draws = {p: np.asarray(samples[p], dtype=float) for p in fam.param_names}
    div = int(np.sum(np.asarray(mcmc.get_extra_fields()["diverging"])))
    return FamilyPosterior(fam.name, draws, div, s.astype(float), m)


def pointwise_log_likelihood(
    family: Any, draws: dict[str, ArrayLike], scores: ArrayLike, mask: ArrayLike | None = None
) -> np.ndarray:
    """Log density of every drawn score under every posterior draw.

    Args:
        family: a name or a family object.
        draws: parameter -> ``(chains, draws, Q)``.
        scores: ``(Q, N)``.
        mask: ``(Q, N)``; default all.

    Returns:
        ``(chains, draws, Q, N)`` float64; 0 where ``mask`` is False.
    """
    fam = resolve_family(family)
    s, m = validate_scores(scores, mask)
    params = {k: jnp.asarray(v, float)[..., None] for k, v in draws.items()}
    ll = np.asarray(fam.log_prob(params, jnp.asarray(s, float)), dtype=float)
    return np.where(m, ll, 0.0)


def to_inference_data(
    posterior: FamilyPosterior | dict[str, ArrayLike],
    scores: ArrayLike | None = None,
    mask: ArrayLike | None = None,
    family: Any = None,
    *,
    question_ids: list[str] | None = None,
    pointwise: str = "score",
) -> Any:
    """An ``arviz.InferenceData`` of a family's posterior, ready for ``az.loo`` / ``az.compare``.

    Args:
        posterior: a :class:`FamilyPosterior`, or a dict of draws ``(chains, draws, Q)``
            (then ``scores`` and ``family`` are required).
        scores: ``(Q, N)`` scores (default the posterior's).
        mask: ``(Q, N)`` mask (default the posterior's, or all).
        family: the family (default the posterior's).
        question_ids: coordinate labels of the ``question`` dim (default ``0..Q-1``).
        pointwise: ``"score"`` (one log-likelihood entry per drawn score: LOO leaves out
            a score) or ``"question"`` (one per question: LOO leaves out a question).

    Returns:
        ``InferenceData`` with groups ``posterior``, ``log_likelihood`` (variable
        ``"scores"``), ``observed_data`` and ``constant_data`` (each score's question and
        sample index).

    Raises:
        ValueError: missing scores or family, draws of the wrong shape, a bad ``pointwise``.
    """
    import arviz as az

    if isinstance(posterior, FamilyPosterior):
        draws = posterior.draws
        family = posterior.family if family is None else family
        if scores is None:
            scores, mask = posterior.scores, posterior.mask if mask is None else mask
    else:
        draws = posterior
    if scores is None or family is None:
        raise ValueError("to_inference_data needs scores and family with a dict of draws")
    if pointwise not in ("score", "question"):
        raise ValueError(f"pointwise must be 'score' or 'question', got {pointwise!r}")
    s, m = validate_scores(scores, mask)
    q = s.shape[0]
    draws = {k: np.asarray(v, dtype=float) for k, v in draws.items()}
    for k, v in draws.items():
        if v.ndim != 3 or v.shape[2] != q:
            raise ValueError(f"draws[{k!r}] must have shape (chains, draws, {q}), got {v.shape}")
    ll = pointwise_log_likelihood(family, draws, s, m)
    qi, ji = np.nonzero(m)
    ids = list(question_ids) if question_ids is not None else [str(i) for i in range(q)]
    if len(ids) != q:
        raise ValueError(f"question_ids has {len(ids)} entries for {q} questions")
    coords: dict[str, Any] = {"question": ids}
    if pointwise == "score":
        log_lik = ll[:, :, qi, ji]
        coords["obs"] = np.arange(qi.size)
        dims = {k: ["question"] for k in draws} | {"scores": ["obs"], "question_index": ["obs"],
                                                   "sample_index": ["obs"]}
        observed = {"scores": s[qi, ji]}
        constant = {"question_index": qi, "sample_index": ji}
    else:
        log_lik = ll.sum(axis=-1)
        coords["sample"] = np.arange(s.shape[1])
        dims = {k: ["question"] for k in draws} | {"scores": ["question"], "observed_scores": ["question", "sample"],
                                                   "mask": ["question", "sample"]}
        observed = {"observed_scores": s}
        constant = {"mask": m}
    return az.from_dict(posterior=draws, log_likelihood={"scores": log_lik}, observed_data=observed,
                        constant_data=constant, coords=coords, dims=dims)

