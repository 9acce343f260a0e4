r"""Priors learned from the pool: a hierarchical model of the per-question score laws.

OptScaleᵗ's prior on a pool without question texts is a hard-coded population centre.
Here the population law is fitted to the pool in hand:

.. math::

    \mu_q \sim \mathcal N(m_\mu + x_q^\top \beta_\mu,\ s_\mu), \qquad
    \log\sigma_q \sim \mathcal N(m_\sigma + x_q^\top \beta_\sigma,\ s_\sigma),
    \qquad s_{qi} \mid \mu_q, \sigma_q \sim \mathrm{TN}_{[0,1]}(\mu_q, \sigma_q),

with optional question features ``x_q`` (e.g. a predictor's embeddings, standardised
column by column). σ's population law is log-normal (``sigma_law="lognormal"``), so its
centre is a positive σ (``exp(m_σ)``) whatever the pool: a normal law of σ truncated at 0
(the paper's prior form) let the fit run its centre far below zero (an exponential-like
law of σ) or collapse a width to 0 on pools with two scores per question. The per-question
MAP keeps the paper's prior form: :meth:`PopulationLaw.prior` moment-matches each
question's log-normal σ law to a :class:`~optscale_jax.model.GaussianPrior` (same mean
and standard deviation), so :func:`optscale_jax.fit.fit_map` runs unchanged. A law with
``sigma_law="truncnorm"`` (σ ~ N(m_σ, s_σ) on σ > 0, e.g. :data:`PAPER_POPULATION`) is
exactly a ``GaussianPrior``.

The population's parameters are fitted by **empirical Bayes** (penalised type-II maximum
likelihood, ``method="eb"``) under weakly-informative hyperpriors that are part of the
model (:data:`HYPERPRIOR`: m_μ ~ N(0.75, 1), log s_μ ~ N(log 0.1, 1),
m_σ ~ N(log 0.1, 1.5), log s_σ ~ N(log 0.5, 1)); they keep the widths off 0 when the pool
cannot tell them apart from 0 and are negligible beside a few hundred questions. The
marginal likelihood of each question's scores,
:math:`\int\!\!\int p(s_q \mid \mu, \sigma)\, p(\mu, \sigma \mid \theta)\, d\mu\, d\sigma`,
is integrated by adaptive Gauss-Hermite quadrature in :math:`(\mu, \log\sigma)`, centred
at the question's posterior mode under the law with the curvature there (one node is the
Laplace approximation),
and the sum over questions is maximised over θ by BFGS with the nodes held fixed; the
nodes are re-centred at the new MAPs and the two steps alternate until θ settles.
``method="nuts"`` samples the full hierarchical model (weak hyperpriors) with NUTS and
returns the posterior means of the population parameters (same hyperpriors), with the
draws.

Only the scores the caller passes are used: :class:`~optscale_jax.policies.OptScaleH`
passes each question's first ``k`` (one-shot) or ``n_init`` (sequential) scores, what
every question has drawn when the population is fitted.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import partial
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax.scipy.special import log_ndtr
from jax.scipy.stats import norm
from jax.typing import ArrayLike

from optscale_jax.fit import fit_map, validate_scores
from optscale_jax.model import POPULATION_PRIOR_CENTRES, GaussianPrior

__all__ = [
    "HYPERPRIOR",
    "PAPER_POPULATION",
    "PopulationFit",
    "PopulationLaw",
    "fit_population",
    "log_marginal_likelihood",
]

FAMILIES = ("truncnorm",)
SIGMA_LAWS = ("lognormal", "truncnorm")

#: Weakly-informative hyperpriors of the fitted law, part of the model: (centre, width) of
#: a normal on each of m_μ, log s_μ, m_σ (log σ's centre) and log s_σ.
HYPERPRIOR = ((0.75, 1.0), (math.log(0.1), 1.0), (math.log(0.1), 1.5), (math.log(0.5), 1.0))
#: The box the fitted (m_μ, log s_μ, m_σ, log s_σ) are kept in (guard rails where scores
#: near 1 leave μ and σ weakly identified): m_μ in [-1, 3], s_μ in [0.005, 1], exp(m_σ) in
#: [0.001, 2], s_σ in [0.05, 1.5] (σ varies by at most a factor ~4.5 per population SD).
BOX = np.array([[-1.0, 3.0], [math.log(0.005), math.log(1.0)], [math.log(1e-3), math.log(2.0)],
                [math.log(0.05), math.log(1.5)]])


@dataclass(frozen=True)
class PopulationLaw:
    """A population law of per-question (μ, σ): the hierarchical model's upper level.

    Attributes:
        loc_mu: ``m_μ``, the population mean of μ (at the mean features).
        scale_mu: ``s_μ > 0``.
        loc_sigma: ``m_σ``: the mean of log σ (``sigma_law="lognormal"``) or the centre of
            σ's normal truncated to σ > 0 (``"truncnorm"``).
        scale_sigma: ``s_σ > 0``, the matching width (of log σ, or of σ).
        coef_mu: ``β_μ``, one coefficient per standardised feature (empty: no covariates).
        coef_sigma: ``β_σ``.
        feature_mean: column means used to standardise the features.
        feature_scale: column scales used to standardise the features.
        family: the score family (``"truncnorm"``: the paper's μ, σ).
        sigma_law: ``"truncnorm"`` (default; the paper's prior form, exact as a
            ``GaussianPrior``) or ``"lognormal"`` (what :func:`fit_population` fits).
    """

    loc_mu: float
    scale_mu: float
    loc_sigma: float
    scale_sigma: float
    coef_mu: tuple[float, ...] = ()
    coef_sigma: tuple[float, ...] = ()
    feature_mean: tuple[float, ...] = ()
    feature_scale: tuple[float, ...] = ()
    family: str = "truncnorm"
    sigma_law: str = "truncnorm"

    def __post_init__(self) -> None:
        if self.sigma_law not in SIGMA_LAWS:
            raise ValueError(f"PopulationLaw.sigma_law must be one of {', '.join(SIGMA_LAWS)}, "
                             f"got {self.sigma_law!r}")
        for name in ("loc_mu", "scale_mu", "loc_sigma", "scale_sigma"):
            v = float(getattr(self, name))
            if not math.isfinite(v) or (name.startswith("scale") and v <= 0):
                need = "finite and > 0" if name.startswith("scale") else "finite"
                raise ValueError(f"PopulationLaw.{name} must be {need}, got {v}")
        d = len(self.coef_mu)
        if not len(self.coef_sigma) == len(self.feature_mean) == len(self.feature_scale) == d:
            raise ValueError("PopulationLaw: coef_mu, coef_sigma, feature_mean and feature_scale "
                             f"must have one entry per feature; got lengths {len(self.coef_mu)}, "
                             f"{len(self.coef_sigma)}, {len(self.feature_mean)}, {len(self.feature_scale)}")

    @property
    def n_features(self) -> int:
        """Number of covariates the law expects (0: none)."""
        return len(self.coef_mu)

    def centres(self, n_questions: int | None = None, covariates: ArrayLike | None = None
                ) -> tuple[np.ndarray, np.ndarray]:
        """Per-question centres ``(loc_mu, loc_sigma)`` of the law, each ``(Q,)`` float64.

        ``loc_sigma`` is on the law's own scale (log σ for ``sigma_law="lognormal"``).
        """
        xs = _standardised(covariates, self, n_questions)
        q = xs.shape[0]
        loc_mu = self.loc_mu + xs @ np.asarray(self.coef_mu, float).reshape(-1)
        loc_sigma = self.loc_sigma + xs @ np.asarray(self.coef_sigma, float).reshape(-1)
        return loc_mu.reshape(q), loc_sigma.reshape(q)

    def prior(self, n_questions: int | None = None, covariates: ArrayLike | None = None) -> GaussianPrior:
        """The per-question :class:`~optscale_jax.model.GaussianPrior` this law implies.

        Args:
            n_questions: ``Q`` (needed when the law has no covariates).
            covariates: ``(Q, d)`` features (required when the law has ``d > 0`` of them).

        Returns:
            A ``GaussianPrior`` with ``(Q,)`` float64 fields, for
            :func:`optscale_jax.fit.fit_map` and :class:`~optscale_jax.policies.OptScale`.

        Examples:
            >>> PAPER_POPULATION.prior(2).loc_mu
            array([0.9295, 0.9295])
        """
        loc_mu, loc_sigma = self.centres(n_questions, covariates)
        q = loc_mu.shape[0]
        scale_sigma = np.full(q, float(self.scale_sigma))
        if self.sigma_law == "lognormal":  # moment-matched: the log-normal's mean and std
            v = float(self.scale_sigma) ** 2
            loc_sigma = np.exp(loc_sigma + 0.5 * v)
            scale_sigma = loc_sigma * math.sqrt(math.expm1(v))
        return GaussianPrior(loc_mu, np.full(q, float(self.scale_mu)), loc_sigma, scale_sigma)


#: The hard-coded OptScaleᵗ population prior as a law: centres
#: :data:`optscale_jax.model.POPULATION_PRIOR_CENTRES`, widths 0.1 (what
#: :func:`optscale_jax.model.population_prior` gives every question).
PAPER_POPULATION = PopulationLaw(POPULATION_PRIOR_CENTRES[0], 0.1, POPULATION_PRIOR_CENTRES[1], 0.1)


class PopulationFit(NamedTuple):
    """The result of :func:`fit_population`.

    Attributes:
        law: the fitted :class:`PopulationLaw`.
        log_marginal: the (approximate) log marginal likelihood of the scores at ``law``
            (sum over questions; EB: the quadrature at the final nodes; NUTS: NaN).
        n_questions: questions with at least one score (the ones that inform the fit).
        iterations: re-centring rounds (EB) or kept draws (NUTS).
        converged: the EB rounds settled within ``tol`` (NUTS: no divergent transition).
        method: ``"eb"`` or ``"nuts"``.
        draws: NUTS draws of the population parameters (``None`` for EB).
    """

    law: PopulationLaw
    log_marginal: float
    n_questions: int
    iterations: int
    converged: bool
    method: str
    draws: dict[str, np.ndarray] | None = None


# ----------------------------------------------------------------------------- checks


def _covariates(covariates: ArrayLike | None, q: int | None) -> np.ndarray | None:
    if covariates is None:
        return None
    x = np.asarray(covariates, dtype=float)
    if x.ndim == 1:
        x = x[:, None]
    if x.ndim != 2:
        raise ValueError(f"covariates must have shape (Q, d), got {x.shape}")
    if q is not None and x.shape[0] != q:
        raise ValueError(f"covariates has {x.shape[0]} rows; expected one per question ({q})")
    bad = ~np.isfinite(x)
    if bad.any():
        i, j = (int(v) for v in np.argwhere(bad)[0])
        raise ValueError(f"covariates[{i}, {j}] must be finite, got {float(x[i, j])}")
    return x


def _standardised(covariates: ArrayLike | None, law: PopulationLaw, q: int | None) -> np.ndarray:
    d = law.n_features
    if d == 0:
        if covariates is not None:
            x = _covariates(covariates, q)
            q = x.shape[0]
        if q is None:
            raise ValueError("n_questions is needed for a population law without covariates")
        return np.zeros((int(q), 0))
    if covariates is None:
        raise ValueError(f"covariates: the population law was fitted with {d} features; pass (Q, {d})")
    x = _covariates(covariates, q)
    if x.shape[1] != d:
        raise ValueError(f"covariates has {x.shape[1]} columns; the population law expects {d}")
    return (x - np.asarray(law.feature_mean)) / np.asarray(law.feature_scale)


# ----------------------------------------------------------------------------- densities


def _log_prior_z(mu, tau, loc_mu, s_mu, loc_s, s_s, lognormal):
    """log density of (μ, τ = log σ) under the law (log-normal σ, or σ's normal truncated to σ > 0)."""
    if lognormal:
        return norm.logpdf(mu, loc_mu, s_mu) + norm.logpdf(tau, loc_s, s_s)
    sigma = jnp.exp(tau)
    return (norm.logpdf(mu, loc_mu, s_mu) + norm.logpdf(sigma, loc_s, s_s)
            - log_ndtr(loc_s / s_s) + tau)


def _log_z(mu, sigma):
    """log(Φ(b) - Φ(a)), a = -μ/σ, b = (1 - μ)/σ: the normaliser on [0, 1], in the stable tail."""
    a, b = -mu / sigma, (1.0 - mu) / sigma
    flip = a > 0  # both in the upper tail: use Φ(-a) - Φ(-b)
    lo, hi = jnp.where(flip, -b, a), jnp.where(flip, -a, b)
    l_hi, l_lo = log_ndtr(hi), log_ndtr(lo)
    return l_hi + jnp.log(-jnp.expm1(l_lo - l_hi))


def _stats(s, m):
    """Per-row sufficient statistics (n, Σs, Σs²) of the masked scores."""
    w = np.where(m, s, 0.0)
    return m.sum(1).astype(float), w.sum(1), (w * w).sum(1)


def _log_lik(mu, tau, st):
    """Truncated-normal log likelihood of one row from its statistics ``st = (n, Σs, Σs²)``."""
    n, s1, s2 = st
    sigma = jnp.exp(tau)
    quad = (s2 - 2.0 * mu * s1 + n * mu * mu) / (2.0 * sigma * sigma)
    return jnp.where(n > 0, -n * (0.5 * math.log(2 * math.pi) + tau + _log_z(mu, sigma)) - quad, 0.0)


def _gh_nodes(n: int) -> tuple[np.ndarray, np.ndarray]:
    """Tensor Gauss-Hermite nodes ``(K, 2)`` for N(0, I) and their log weights (sum 1)."""
    x, w = np.polynomial.hermite_e.hermegauss(int(n))
    w = w / w.sum()
    u = np.stack(np.meshgrid(x, x, indexing="ij"), -1).reshape(-1, 2)
    lw = (np.log(w)[:, None] + np.log(w)[None, :]).reshape(-1)
    return u, lw


def _unpack(theta, xs):
    d = xs.shape[1]
    loc_mu = theta[0] + xs @ theta[4:4 + d]
    loc_s = theta[2] + xs @ theta[4 + d:4 + 2 * d]
    return loc_mu, jnp.exp(theta[1]), loc_s, jnp.exp(theta[3])


@partial(jax.jit, static_argnames="lognormal")
def _nodes_at(z0, st, loc_mu, s_mu, loc_s, s_s, u, lognormal):
    """Quadrature nodes around the mode of each row's posterior (Q, 2), started at ``z0``:
    their log likelihoods and log |L| per row."""

    def h(z, st_row, lm, ls):
        return _log_lik(z[0], z[1], st_row) + _log_prior_z(z[0], z[1], lm, s_mu, ls, s_s, lognormal)

    def newton(z, _):  # damped Newton steps to the exact mode (z0 is a MAP under a nearby prior)
        val = jax.vmap(h)(z, st, loc_mu, loc_s)
        g = jax.vmap(jax.grad(h))(z, st, loc_mu, loc_s)
        hs = jax.vmap(jax.hessian(h))(z, st, loc_mu, loc_s)
        p = -0.5 * (hs + jnp.swapaxes(hs, 1, 2))
        lam, vec = jnp.linalg.eigh(p)
        lam = jnp.clip(jnp.where(jnp.isfinite(lam), jnp.abs(lam), 1.0), 1e-2, 1e12)
        step = jnp.einsum("qij,qj->qi", vec / lam[:, None, :], jnp.einsum("qji,qj->qi", vec, g))
        step = jnp.clip(jnp.where(jnp.isfinite(step), step, 0.0), -1.0, 1.0)
        new = z + step
        ok = jax.vmap(h)(new, st, loc_mu, loc_s) > val
        return jnp.where(ok[:, None], new, z), None

    z0, _ = jax.lax.scan(newton, z0, None, length=6)
    hess = jax.vmap(jax.hessian(h))(z0, st, loc_mu, loc_s)  # (Q, 2, 2)
    prec = -0.5 * (hess + jnp.swapaxes(hess, 1, 2))
    lam, vec = jnp.linalg.eigh(prec)
    lam = jnp.clip(jnp.where(jnp.isfinite(lam), lam, 1.0), 1e-2, 1e12)
    chol = vec * (lam[:, None, :] ** -0.5)  # L with L L^T = P^-1
    nodes = z0[:, None, :] + jnp.einsum("qij,kj->qki", chol, u)  # (Q, K, 2)
    ll = _log_lik(nodes[..., 0], nodes[..., 1], tuple(v[:, None] for v in st))
    log_det = -0.5 * jnp.sum(jnp.log(lam), axis=1)
    return nodes, jnp.where(jnp.isfinite(ll), ll, -jnp.inf), log_det


def _quadrature(theta, xs, nodes, base, active, lognormal):
    """Σ_q log ∫ p(s_q | z) p(z | θ) dz with the nodes held fixed, per question."""
    loc_mu, s_mu, loc_s, s_s = _unpack(theta, xs)
    lp = _log_prior_z(nodes[..., 0], nodes[..., 1], loc_mu[:, None], s_mu, loc_s[:, None], s_s, lognormal)
    per_q = jax.scipy.special.logsumexp(base + lp, axis=1)
    return jnp.where(active, per_q, 0.0)


def _law_from_theta(theta: np.ndarray, d: int, fmean: np.ndarray, fscale: np.ndarray,
                    sigma_law: str = "lognormal") -> PopulationLaw:
    t = np.asarray(theta, float)
    return PopulationLaw(float(t[0]), float(np.exp(t[1])), float(t[2]), float(np.exp(t[3])),
                         tuple(float(v) for v in t[4:4 + d]), tuple(float(v) for v in t[4 + d:4 + 2 * d]),
                         tuple(float(v) for v in fmean), tuple(float(v) for v in fscale),
                         sigma_law=sigma_law)


def _theta_from_law(law: PopulationLaw) -> np.ndarray:
    return np.concatenate([[law.loc_mu, math.log(law.scale_mu), law.loc_sigma, math.log(law.scale_sigma)],
                           law.coef_mu, law.coef_sigma]).astype(float)


def _prepare(scores, mask, covariates, family):
    if family not in FAMILIES:
        raise ValueError(f"family must be one of {', '.join(FAMILIES)} for the hierarchical model, "
                         f"got {family!r}")
    s, m = validate_scores(scores, mask)
    if s.ndim != 2:
        raise ValueError(f"scores must have shape (Q, N), got {s.shape}")
    x = _covariates(covariates, s.shape[0])
    # Rows whose scores are all equal (n >= 2, no spread) have an unbounded likelihood as
    # σ -> 0 (and an improper marginal): they inform the population through their first
    # score only.
    n = m.sum(1)
    hi = np.where(m, s, -np.inf).max(1, initial=-np.inf)
    lo = np.where(m, s, np.inf).min(1, initial=np.inf)
    tied = (n >= 2) & (hi <= lo)
    if tied.any():
        m = m.copy()
        m[tied] = m[tied] & (np.cumsum(m[tied], axis=1) <= 1)
    return s, m, x


def _start(s, m, d) -> np.ndarray:
    n = m.sum(1)
    mean = np.where(n > 0, np.where(m, s, 0).sum(1) / np.maximum(n, 1), np.nan)
    var = np.where(m, (s - np.nan_to_num(mean)[:, None]) ** 2, 0).sum(1) / np.maximum(n - 1, 1)
    means = mean[n > 0]
    stds = np.sqrt(var[n > 1])
    m_mu = float(np.mean(means)) if means.size else 0.5
    s_mu = max(float(np.std(means)) if means.size > 1 else 0.1, 0.02)
    log_sd = np.log(np.clip(stds, 1e-3, 1.0))
    m_s = float(np.mean(log_sd)) if log_sd.size else math.log(0.1)
    s_s = min(max(float(np.std(log_sd)) if log_sd.size > 1 else 0.5, 0.2), 2.0)
    return np.concatenate([[min(max(m_mu, 0.0), 1.0), math.log(s_mu), m_s, math.log(s_s)], np.zeros(2 * d)])


def log_marginal_likelihood(
    scores: ArrayLike,
    law: PopulationLaw,
    mask: ArrayLike | None = None,
    *,
    covariates: ArrayLike | None = None,
    nodes: int = 7,
) -> np.ndarray:
    r"""Each question's log marginal likelihood under a population law.

    :math:`\log \int\!\!\int \prod_i \mathrm{TN}_{[0,1]}(s_{qi}; \mu, \sigma)\,
    p(\mu, \sigma \mid \text{law})\, d\mu\, d\sigma` by adaptive Gauss-Hermite quadrature
    (``nodes`` per axis in (μ, log σ), centred at the question's MAP). The empirical-Bayes
    objective of :func:`fit_population` is the sum of these.

    Args:
        scores: ``(Q, N)`` scores in [0, 1].
        law: the population law.
        mask: ``(Q, N)`` True for real samples; default all.
        covariates: ``(Q, d)`` features when the law has covariates.
        nodes: quadrature nodes per axis (1: the Laplace approximation).

    Returns:
        ``(Q,)`` float64; 0 for a row without scores.
    """
    if int(nodes) < 1:
        raise ValueError(f"nodes must be >= 1, got {nodes!r}")
    s, m, _ = _prepare(scores, mask, None, law.family)
    xs = _standardised(covariates, law, s.shape[0])
    with jax.enable_x64(True):
        out = _eb_round(s, m, xs, _theta_from_law(law), int(nodes), law.sigma_law == "lognormal")[0]
        return np.asarray(out, float)


def _eb_round(s, m, xs, theta, nodes, lognormal=True):
    """One re-centring: the nodes at the posterior modes under θ, and the per-question objective there."""
    d = xs.shape[1]
    law = _law_from_theta(theta, d, np.zeros(d), np.ones(d), "lognormal" if lognormal else "truncnorm")
    fit = fit_map(s, law.prior(s.shape[0], xs if d else None), m)  # a start for the exact modes
    z0 = jnp.stack([jnp.asarray(fit.mu, jnp.float64), jnp.log(jnp.asarray(fit.sigma, jnp.float64))], -1)
    u, lw = _gh_nodes(nodes)
    loc_mu, loc_s = (jnp.asarray(v, jnp.float64) for v in law.centres(s.shape[0], xs if d else None))
    st = tuple(jnp.asarray(v, jnp.float64) for v in _stats(s, m))
    nd, ll, log_det = _nodes_at(z0, st, loc_mu, jnp.float64(law.scale_mu), loc_s, jnp.float64(law.scale_sigma),
                                jnp.asarray(u), lognormal)
    base = ll + jnp.asarray(lw + 0.5 * (u ** 2).sum(1) + math.log(2 * math.pi))[None, :] + log_det[:, None]
    active = jnp.asarray(m.any(1))
    xs_j = jnp.asarray(xs, jnp.float64)
    per_q = _quadrature(jnp.asarray(theta, jnp.float64), xs_j, nd, base, active, lognormal)
    return per_q, (xs_j, nd, base, active)


def fit_population(
    scores: ArrayLike,
    mask: ArrayLike | None = None,
    *,
    covariates: ArrayLike | None = None,
    method: str = "eb",
    family: str = "truncnorm",
    ridge: float = 1.0,
    nodes: int = 5,
    max_rounds: int = 30,
    tol: float = 1e-4,
    init: PopulationLaw | None = None,
    key: jax.Array | None = None,
    num_warmup: int = 500,
    num_samples: int = 500,
) -> PopulationFit:
    """Fit the population law to every question's scores (empirical Bayes or NUTS).

    Args:
        scores: ``(Q, N)`` scores in [0, 1]; pass only what the policy has seen (OptScaleH
            passes the first ``k`` / ``n_init`` of each row through ``mask``).
        mask: ``(Q, N)`` True for the scores to use; default all.
        covariates: optional ``(Q, d)`` question features entering the population means
            linearly (standardised column by column; a constant column is ignored).
        method: ``"eb"`` (type-II maximum likelihood by adaptive quadrature) or ``"nuts"``.
        family: the score family; ``"truncnorm"`` (the paper's) is the one implemented.
        ridge: Gaussian penalty ``ridge/2 · |β|²`` on the standardised coefficients (EB; for
            NUTS, β ~ N(0, 1/ridge)). Keeps many features (embeddings) from overfitting.
        nodes: quadrature nodes per axis (EB; 1 = Laplace).
        max_rounds: re-centring rounds at most (EB).
        tol: stop when no parameter moves more than this between rounds, or the log
            marginal likelihood per question changes less than ``10 * tol`` (EB).
        init: starting law (EB); default from the rows' score moments.
        key: PRNG key (NUTS; default ``jax.random.key(0)``).
        num_warmup: NUTS warm-up steps.
        num_samples: NUTS draws kept.

    Returns:
        A :class:`PopulationFit` whose law has ``sigma_law="lognormal"``.

    Raises:
        ValueError: bad scores (naming the row), bad covariates, an unknown method or
            family, or no question with a score.

    Examples:
        >>> import numpy as np
        >>> rng = np.random.default_rng(0)
        >>> s = np.clip(rng.normal(rng.normal(0.7, 0.1, (200, 1)), 0.08, (200, 6)), 0, 1)
        >>> law = fit_population(s).law
        >>> bool(abs(law.loc_mu - 0.7) < 0.03 and abs(law.scale_mu - 0.1) < 0.03)
        True
    """
    if method not in ("eb", "nuts"):
        raise ValueError(f"method must be 'eb' or 'nuts', got {method!r}")
    if not (math.isfinite(float(ridge)) and float(ridge) >= 0):
        raise ValueError(f"ridge must be finite and >= 0, got {float(ridge)}")
    if int(nodes) < 1 or int(max_rounds) < 1:
        raise ValueError(f"nodes and max_rounds must be >= 1, got {nodes!r}, {max_rounds!r}")
    s, m, x = _prepare(scores, mask, covariates, family)
    if not m.any():
        raise ValueError("scores: no question has a score; the population law needs at least one")
    q = s.shape[0]
    if x is None:
        fmean, fscale, xs = np.zeros(0), np.ones(0), np.zeros((q, 0))
    else:
        fmean, fscale = x.mean(0), x.std(0)
        fscale = np.where(fscale > 0, fscale, 1.0)
        xs = (x - fmean) / fscale
    d = xs.shape[1]
    if method == "nuts":
        return _fit_nuts(s, m, xs, fmean, fscale, ridge, key, num_warmup, num_samples)
    if init is not None:
        if init.n_features != d:
            raise ValueError(f"init has {init.n_features} features; covariates have {d}")
        if init.sigma_law != "lognormal":
            raise ValueError(f"init must have sigma_law='lognormal' (what is fitted), got {init.sigma_law!r}")
        theta = _theta_from_law(init)
    else:
        theta = _start(s, m, d)
    converged, rounds, prev = False, 0, None
    sigma_free = bool(np.any(m.sum(1) >= 2))
    if not sigma_free:  # one score per question: σ's law is the hyperprior's centre
        theta[2:4] = [c for c, _ in HYPERPRIOR[2:]]
    n_active = max(int(m.any(1).sum()), 1)
    with jax.enable_x64(True):
        for _ in range(int(max_rounds)):
            rounds += 1
            per_q, (xs_j, nd, base, active) = _eb_round(s, m, xs, theta, int(nodes))
            total = float(jnp.sum(per_q)) / n_active
            # settled: θ stops moving, or the marginal likelihood per question stops rising
            # (a weakly identified ridge, e.g. μ's centre when many questions score ~1)
            if prev is not None and abs(total - prev) < 10 * tol:
                converged = True
                break
            prev = total
            new = np.asarray(_maximise(jnp.asarray(theta), xs_j, nd, base, active, float(ridge), sigma_free))
            if not np.all(np.isfinite(new)):
                break
            step = float(np.max(np.abs(new - theta)))
            theta = new
            if step < tol:
                converged = True
                break
        per_q, _ = _eb_round(s, m, xs, theta, int(nodes))
        total = float(jnp.sum(per_q))
    law = _law_from_theta(theta, d, fmean, fscale)
    return PopulationFit(law, total, int(m.any(1).sum()), rounds, converged, "eb")


@jax.jit
def _maximise(theta0, xs, nodes, base, active, ridge, sigma_free):
    d = xs.shape[1]
    centre, width = (jnp.asarray(v) for v in zip(*HYPERPRIOR, strict=True))

    def loss(free):
        # σ's law stays at its hyperprior centre when no question has two scores (not identified)
        theta = jnp.where(sigma_free | (jnp.arange(free.shape[0]) < 2) | (jnp.arange(free.shape[0]) > 3),
                          free, jnp.pad(centre, (0, free.shape[0] - 4)))
        pen = 0.5 * ridge * jnp.sum(theta[4:4 + 2 * d] ** 2) + 0.5 * jnp.sum(((theta[:4] - centre) / width) ** 2)
        return -(jnp.sum(_quadrature(theta, xs, nodes, base, active, True)) - pen) / jnp.maximum(jnp.sum(active), 1)

    res = jax.scipy.optimize.minimize(loss, theta0, method="BFGS", options={"maxiter": 200})
    x = jnp.where(jnp.isfinite(res.fun) & jnp.all(jnp.isfinite(res.x)), res.x, theta0)
    x = jnp.where(sigma_free | (jnp.arange(x.shape[0]) < 2) | (jnp.arange(x.shape[0]) > 3), x,
                  jnp.pad(centre, (0, x.shape[0] - 4)))
    return x.at[:4].set(jnp.clip(x[:4], BOX[:, 0], BOX[:, 1]))


def _fit_nuts(s, m, xs, fmean, fscale, ridge, key, num_warmup, num_samples) -> PopulationFit:
    import numpyro
    import numpyro.distributions as dist
    from numpyro.infer import MCMC, NUTS

    from optscale_jax.distributions import TruncatedNormal01

    q, d = xs.shape

    (c0, w0), (c1, w1), (c2, w2), (c3, w3) = HYPERPRIOR

    def model(scores, mask, feats):  # the EB model's hyperpriors, as priors
        m_mu = numpyro.sample("loc_mu", dist.Normal(c0, w0))
        s_mu = numpyro.sample("scale_mu", dist.LogNormal(c1, w1))
        m_s = numpyro.sample("loc_sigma", dist.Normal(c2, w2))
        s_s = numpyro.sample("scale_sigma", dist.LogNormal(c3, w3))
        width = 1.0 / math.sqrt(ridge) if ridge > 0 else 10.0
        loc_mu, loc_s = m_mu, m_s
        if d:
            b_mu = numpyro.sample("coef_mu", dist.Normal(0.0, width).expand([d]).to_event(1))
            b_s = numpyro.sample("coef_sigma", dist.Normal(0.0, width).expand([d]).to_event(1))
            loc_mu, loc_s = m_mu + feats @ b_mu, m_s + feats @ b_s
        with numpyro.plate("questions", q):
            mu = numpyro.sample("mu", dist.Normal(loc_mu, s_mu))
            sigma = numpyro.sample("sigma", dist.LogNormal(loc_s, s_s))
            numpyro.sample("scores", TruncatedNormal01(mu[:, None], sigma[:, None]).mask(mask).to_event(1),
                           obs=jnp.where(mask, scores, 0.5))

    key = jax.random.key(0) if key is None else key
    with jax.enable_x64(True):
        mcmc = MCMC(NUTS(model), num_warmup=int(num_warmup), num_samples=int(num_samples), progress_bar=False)
        mcmc.run(key, jnp.asarray(s), jnp.asarray(m), jnp.asarray(xs), extra_fields=("diverging",))
        draws = {k: np.asarray(v) for k, v in mcmc.get_samples().items()
                 if k in ("loc_mu", "scale_mu", "loc_sigma", "scale_sigma", "coef_mu", "coef_sigma")}
        div = int(np.sum(np.asarray(mcmc.get_extra_fields()["diverging"])))
    mean = {k: v.mean(0) for k, v in draws.items()}
    law = PopulationLaw(
        float(mean["loc_mu"]), float(mean["scale_mu"]), float(mean["loc_sigma"]), float(mean["scale_sigma"]),
        tuple(float(v) for v in mean.get("coef_mu", ())), tuple(float(v) for v in mean.get("coef_sigma", ())),
        tuple(float(v) for v in fmean), tuple(float(v) for v in fscale), sigma_law="lognormal")
    return PopulationFit(law, float("nan"), int(m.any(1).sum()), int(num_samples), div == 0, "nuts", draws)
