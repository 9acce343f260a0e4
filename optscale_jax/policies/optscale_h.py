"""OptScaleH: OptScaleᵗ with the population prior learned from the run's own early scores.

The hard-coded OptScaleᵗ population prior is replaced by a population law fitted by
empirical Bayes (:func:`optscale_jax.hierarchical.fit_population`) to the first ``k``
(one-shot) or ``n_init`` (sequential) scores of every question, exactly what each
question has drawn when the first decision is made (in a live run: after the first
wave). Each question is then fitted by MAP under the law (``fit_map`` unchanged) and the
stopping rule is OptScale's own (:mod:`optscale_jax.policies.optscale`).

A subclass of :class:`~optscale_jax.policies.OptScale` rather than an option on it: the
rule, N* and selection are inherited unchanged; only where the prior comes from differs,
and the class keeps the fitted law out of the dataclass fields (a live run's journal
header records the options, not what the first wave taught).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np

from .base import Observed
from .optscale import OptScale, default_n_init

__all__ = ["OptScaleH", "early_mask", "hierarchical_prior"]


def early_mask(mask: np.ndarray, n_early: int) -> np.ndarray:
    """The scores the population is fitted on: each row's first ``n_early`` drawn samples."""
    m = np.asarray(mask, dtype=bool)
    return m & (np.arange(m.shape[1])[None, :] < int(n_early))


def hierarchical_prior(
    scores: np.ndarray,
    mask: np.ndarray,
    n_early: int,
    *,
    population: Any = None,
    covariates: Any = None,
    method: str = "eb",
    ridge: float = 1.0,
) -> tuple[Any, Any]:
    """The population law fitted on each row's first ``n_early`` scores, and its per-question prior.

    What :class:`OptScaleH` uses, and the sweep's OptScaleH rows.

    Args:
        scores: ``(Q, N)`` scores in drawing order.
        mask: ``(Q, N)`` drawn.
        n_early: samples per row the law is fitted on.
        population: a fixed law (no fit).
        covariates: ``(Q, d)`` question features, or None.
        method: ``"eb"`` or ``"nuts"``.
        ridge: penalty on the covariate coefficients.

    Returns:
        ``(law, prior)``: a :class:`~optscale_jax.hierarchical.PopulationLaw` and the
        ``GaussianPrior`` with ``(Q,)`` fields.
    """
    em = early_mask(mask, n_early)
    s = np.where(em, np.asarray(scores, np.float64), 0.0)
    law = population
    if law is None:
        from optscale_jax.hierarchical import fit_population

        law = fit_population(s, em, covariates=covariates, method=method, ridge=ridge).law
    return law, law.prior(s.shape[0], covariates)


@dataclass
class OptScaleH(OptScale):
    """OptScale with a hierarchical, empirical-Bayes population prior (one-shot or sequential).

    Args (beyond :class:`OptScale`'s; ``prior`` must stay None):
        population: a fixed :class:`~optscale_jax.hierarchical.PopulationLaw` (skips the
            fit; ``PAPER_POPULATION`` makes this OptScaleᵗ with the population prior).
        covariates: optional ``(Q, d)`` question features for the population means.
        method: ``"eb"`` (default) or ``"nuts"``, see :func:`~optscale_jax.hierarchical.fit_population`.
        ridge: penalty on the covariate coefficients.
        n_init: first sequential fit; default 2 (the population needs each question's spread).
    """

    #: one population law fitted on all questions: never cut into question chunks
    couples_questions: ClassVar[bool] = True

    population: Any = field(default=None, repr=False)
    covariates: Any = field(default=None, repr=False)
    method: str = "eb"
    ridge: float = 1.0

    def __post_init__(self) -> None:
        if self.prior is not None:
            raise ValueError("OptScaleH.prior must be None: the prior is fitted from the pool "
                             "(pass population= to fix the population law)")
        if self.method not in ("eb", "nuts"):
            raise ValueError(f"OptScaleH.method must be 'eb' or 'nuts', got {self.method!r}")
        if self.n_init is None:
            self.n_init = default_n_init("MLE")
        if not self.name:
            self.name = f"OptScaleH-{self.mode}"
        super().__post_init__()
        self._cache: tuple[str, Any, Any] | None = None  # (key of the early scores, law, prior)

    @property
    def variant(self) -> str:
        """Always ``"MAP"``."""
        return "MAP"

    @property
    def n_early(self) -> int:
        """Samples per question the population is fitted on: ``k`` or ``n_init``."""
        return int(self.k if self.mode == "oneshot" else self.n_init)

    def population_law(self, scores: np.ndarray, mask: np.ndarray) -> Any:
        """The population law of these questions (fitted on their early scores, cached)."""
        return self._population(np.asarray(scores, np.float64), np.asarray(mask, bool))[0]

    def _population(self, scores: np.ndarray, mask: np.ndarray) -> tuple[Any, Any]:
        em = early_mask(mask, self.n_early)
        s = np.where(em, scores, 0.0)
        key = hashlib.sha256(s.tobytes() + em.tobytes() + str(s.shape).encode()).hexdigest()
        if self._cache is None or self._cache[0] != key:
            law, prior = hierarchical_prior(s, em, self.n_early, population=self.population,
                                            covariates=self.covariates, method=self.method, ridge=self.ridge)
            self._cache = (key, law, prior)
        return self._cache[1], self._cache[2]

    def n_star(self, obs: Observed, upto: int | None = None) -> tuple[np.ndarray, np.ndarray]:
        """N* from a MAP fit under the population law fitted on the early scores."""
        _, self._active_prior = self._population(np.asarray(obs.scores, np.float64),
                                                 np.asarray(obs.mask, bool))
        return super().n_star(obs, upto)

    def _fit(self, scores: np.ndarray, mask: np.ndarray) -> Any:
        from optscale_jax.fit import fit_map

        return fit_map(scores, self._active_prior, mask, **self.fit_options)
