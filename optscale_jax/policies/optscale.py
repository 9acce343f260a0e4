"""OptScale policies: the probabilistically optimal number of samples per question.

OptScale (Wang et al. 2025, "Probabilistically Optimal Inference-Time Scaling",
arXiv 2506.22376, AAAI 2026) models the verifier scores of one question as i.i.d.
draws from a normal truncated to [0, 1] with parameters (mu, sigma), fitted to the
scores seen so far, and draws

    N* = ceil( log(1 - alpha) / log F(s_min) ),   clipped to [1, n_max],

samples so that the best of N* reaches ``s_min`` with probability ``alpha``. Selection
is Best-of-N over what was drawn. OptScale⁰ fits by maximum likelihood; OptScaleᵗ by
MAP with Gaussian priors whose centres come per question from a predictor.

Two modes:

* ``"oneshot"`` (what the authors' code runs): peek ``k`` samples (k = 3, 5, 10, 20 for
  n_max = 8, 16, 32, 64; ``round(n_max / 3)`` otherwise), fit once, draw ``max(N*, k)``.
* ``"sequential"`` (the paper's text): after ``n_init`` samples and then every ``step``
  new samples, refit on everything drawn and stop once ``n >= N*``. A fit with status
  NO_DATA or DEGENERATE (no sample, one sample, or all scores equal: the MLE has no
  spread to go on) never stops sampling: the policy keeps drawing until the scores
  show at least two distinct values or ``n_max`` is reached.

The official grid gives the *quantile* ``1 - alpha`` of the best score (``percentile``
in the authors' result files): ``alpha = 1 - percentile``.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

import numpy as np

from .base import Observed, best_of_n_index

if TYPE_CHECKING:  # re-exported lazily below (importing the policies must not start JAX)
    from optscale_jax.fit import fit_status_usable
    from optscale_jax.model import gaussian_prior
    from optscale_jax.nstar import n_star_for_fits as compute_n_star

__all__ = [
    "OptScale",
    "official_peek",
    "gaussian_prior",
    "fit_status_usable",
    "compute_n_star",
]

_OFFICIAL_PEEK = {8: 3, 16: 5, 32: 10, 64: 20}

#: Names that moved to the core modules, still importable from here. Resolved on
#: first use, so that importing the policies does not start JAX.
#: ``compute_n_star`` is :func:`optscale_jax.nstar.n_star_for_fits`.
_CORE_ALIASES = {
    "gaussian_prior": ("optscale_jax.model", "gaussian_prior"),
    "fit_status_usable": ("optscale_jax.fit", "fit_status_usable"),
    "compute_n_star": ("optscale_jax.nstar", "n_star_for_fits"),
}


def __getattr__(name: str) -> Any:
    if name in _CORE_ALIASES:
        module, attr = _CORE_ALIASES[name]
        return getattr(importlib.import_module(module), attr)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def official_peek(n_max: int) -> int:
    """Samples peeked by the one-shot mode: 3/5/10/20 for n_max 8/16/32/64, else round(n_max/3).

    Args:
        n_max: sample budget.

    Returns:
        ``k`` with ``1 <= k <= n_max``.

    Examples:
        >>> [official_peek(n) for n in (8, 16, 32, 64, 12)]
        [3, 5, 10, 20, 4]
    """
    n_max = int(n_max)
    if n_max < 1:
        raise ValueError(f"n_max must be >= 1, got {n_max}")
    return _OFFICIAL_PEEK.get(n_max, min(n_max, max(1, round(n_max / 3))))


@dataclass
class OptScale:
    """OptScale⁰ (MLE, ``prior=None``) or OptScaleᵗ (MAP, per-question ``prior``).

    See the module docstring for the rule. Wang et al. 2025, arXiv 2506.22376.

    Args:
        n_max: sample budget per question (official: 8, 16, 32, 64).
        s_min: target score (official grid 0.85 ... 0.99).
        alpha: target probability that the best of N reaches ``s_min``
            (official grid: ``1 - alpha`` in {0.01, 0.02, 0.035, 0.05, 0.075, 0.1}).
        prior: ``GaussianPrior``/``Prior`` for MAP (arrays per question), or None for MLE.
        mode: ``"oneshot"`` or ``"sequential"``.
        k: peek size of the one-shot mode; default :func:`official_peek`.
        n_init: first fit of the sequential mode (default 2 for MLE, 1 for MAP).
        step: new samples between refits in the sequential mode (``b``).
        nstar_rule: ``"closed"`` form or the authors' ``"official"`` grid scan.
        fit_options: keyword options passed to the solver.
    """

    n_max: int
    s_min: float
    alpha: float
    prior: Any = field(default=None, repr=False)
    mode: Literal["oneshot", "sequential"] = "oneshot"
    k: int | None = None
    n_init: int | None = None
    step: int = 1
    nstar_rule: Literal["closed", "official"] = "closed"
    fit_options: dict[str, Any] = field(default_factory=dict, repr=False)
    name: str = ""

    def __post_init__(self) -> None:
        self.n_max = int(self.n_max)
        if self.n_max < 1:
            raise ValueError(f"OptScale.n_max must be >= 1, got {self.n_max}")
        if not 0.0 < float(self.s_min) < 1.0:
            raise ValueError(f"OptScale.s_min must be in (0, 1), got {self.s_min!r}")
        if not 0.0 < float(self.alpha) < 1.0:
            raise ValueError(f"OptScale.alpha must be in (0, 1), got {self.alpha!r}")
        if self.mode not in ("oneshot", "sequential"):
            raise ValueError(f"OptScale.mode must be 'oneshot' or 'sequential', got {self.mode!r}")
        self.k = official_peek(self.n_max) if self.k is None else int(self.k)
        if not 1 <= self.k <= self.n_max:
            raise ValueError(f"OptScale.k must be in [1, n_max={self.n_max}], got {self.k}")
        if self.n_init is None:
            self.n_init = 2 if self.prior is None else 1
        self.n_init = int(min(max(int(self.n_init), 1), self.n_max))
        self.step = int(self.step)
        if self.step < 1:
            raise ValueError(f"OptScale.step must be >= 1, got {self.step}")
        if not self.name:
            base = "OptScale0" if self.prior is None else "OptScaleT"
            self.name = f"{base}-{self.mode}"

    @property
    def variant(self) -> str:
        """``"MLE"`` or ``"MAP"``."""
        return "MLE" if self.prior is None else "MAP"

    def _fit(self, scores: np.ndarray, mask: np.ndarray) -> Any:
        from optscale_jax.fit import fit_map, fit_mle

        if self.prior is None:
            return fit_mle(scores, mask, **self.fit_options)
        return fit_map(scores, self.prior, mask, **self.fit_options)

    def n_star(self, obs: Observed, upto: int | None = None) -> tuple[np.ndarray, np.ndarray]:
        """N* from a fit on the first ``upto`` drawn samples (default: all drawn).

        Returns:
            ``(n_star, usable)``: ``(Q,)`` int64 N* and the ``(Q,)`` bool fit usability.
        """
        from optscale_jax.fit import fit_status_usable
        from optscale_jax.nstar import n_star_for_fits

        s = np.asarray(obs.scores, dtype=np.float64)
        m = np.asarray(obs.mask, dtype=bool)
        if upto is not None:
            # Cut the mask, not the arrays: one compiled fit per pool shape.
            m = m & (np.arange(m.shape[1])[None, :] < upto)
        res = self._fit(s, m)
        ns = n_star_for_fits(
            res.mu, res.sigma, self.s_min, self.alpha, n_max=self.n_max, rule=self.nstar_rule
        )
        return ns, fit_status_usable(res.status)

    def want(self, obs: Observed) -> np.ndarray:
        """One-shot: k, then max(N*, k). Sequential: next checkpoint until n >= N*."""
        n = obs.n_drawn
        if self.mode == "oneshot":
            out = np.full_like(n, self.k)
            ready = n >= self.k
            if ready.any():
                ns, _ = self.n_star(obs, upto=self.k)
                out = np.where(ready, np.maximum(ns, self.k), self.k)
            return np.minimum(out, self.n_max).astype(np.int64)
        first = self.n_init
        nxt = np.where(n < first, first, first + ((n - first) // self.step + 1) * self.step)
        nxt = np.minimum(nxt, self.n_max)
        at_check = (n >= first) & ((n - first) % self.step == 0)
        stop = n >= self.n_max
        if at_check.any():
            ns, usable = self.n_star(obs)
            stop = stop | (at_check & usable & (n >= ns))
        return np.where(stop, n, nxt).astype(np.int64)

    def select(self, obs: Observed) -> np.ndarray:
        """Best-of-N over what was drawn."""
        return best_of_n_index(obs.scores, obs.mask, obs.selectable)
