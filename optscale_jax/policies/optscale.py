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

from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np

from .base import Observed, best_of_n_index

__all__ = [
    "OptScale",
    "official_peek",
    "gaussian_prior",
    "fit_status_usable",
    "compute_n_star",
]

_OFFICIAL_PEEK = {8: 3, 16: 5, 32: 10, 64: 20}


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


def gaussian_prior(
    loc_mu: Any, loc_sigma: Any, scale_mu: float = 0.1, scale_sigma: float = 0.1
) -> Any:
    """Per-question Gaussian priors for OptScaleᵗ (the authors use prior std 0.1 for both).

    Args:
        loc_mu: ``(Q,)`` prior centres of mu (e.g. a predictor's output).
        loc_sigma: ``(Q,)`` prior centres of sigma, finite; a centre <= 0 is allowed (the
            authors' predictor files have some): the prior on sigma > 0 then favours small sigma.
        scale_mu: prior std of mu.
        scale_sigma: prior std of sigma.

    Returns:
        :class:`optscale_jax.model.GaussianPrior` with float64 numpy arrays.
    """
    from optscale_jax.model import GaussianPrior

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


def fit_status_usable(status: np.ndarray) -> np.ndarray:
    """True where a fit may be trusted to stop sampling (not NO_DATA, not DEGENERATE)."""
    from optscale_jax.fit import FitStatus

    s = np.asarray(status)
    return (s != int(FitStatus.NO_DATA)) & (s != int(FitStatus.DEGENERATE))


def compute_n_star(
    mu: Any,
    sigma: Any,
    s_min: Any,
    alpha: Any,
    *,
    n_max: int,
    rule: Literal["closed", "official"] = "closed",
) -> np.ndarray:
    """N* as a numpy int64 array, with NaN fits (NO_DATA) sent to ``n_max``.

    Args:
        mu, sigma: fitted parameters (broadcast with ``s_min`` and ``alpha``).
        s_min: target score.
        alpha: target probability that the best of N reaches ``s_min``.
        n_max: sample budget (upper clip).
        rule: ``"closed"`` (closed form) or ``"official"`` (the authors' grid scan).

    Returns:
        int64 array of N* in ``[1, n_max]``.
    """
    from optscale_jax import nstar as _ns

    mu = np.asarray(mu, dtype=np.float64)
    sigma = np.asarray(sigma, dtype=np.float64)
    ok = np.isfinite(mu) & np.isfinite(sigma) & (sigma > 0)
    mu_s = np.where(ok, mu, 0.5)
    sg_s = np.where(ok, sigma, 0.1)
    if rule == "closed":
        n = _ns.n_star(mu_s, sg_s, s_min, alpha, n_min=1, n_max=int(n_max))
    elif rule == "official":
        # The grid scan once per distinct fit, read at every distinct (s_min, alpha).
        b = np.broadcast_arrays(mu_s, sg_s, np.asarray(s_min, float), np.asarray(alpha, float))
        pairs, p_inv = np.unique(np.stack([b[0].ravel(), b[1].ravel()], 1), axis=0, return_inverse=True)
        s_u, s_inv = np.unique(b[2].ravel(), return_inverse=True)
        a_u, a_inv = np.unique(b[3].ravel(), return_inverse=True)
        table = np.asarray(_ns.n_star_official_table(pairs[:, 0], pairs[:, 1], s_u, a_u, n_max=int(n_max)))
        n = table[p_inv.ravel(), s_inv.ravel(), a_inv.ravel()].reshape(b[0].shape)
    else:
        raise ValueError(f"N* rule must be 'closed' or 'official', got {rule!r}")
    n = np.asarray(n).astype(np.int64)
    ok_b = np.broadcast_to(ok, np.broadcast_shapes(ok.shape, n.shape))
    return np.where(ok_b, np.clip(n, 1, int(n_max)), int(n_max))


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
        from optscale_jax import fit as _fit

        if self.prior is None:
            return _fit.fit_mle(scores, mask, **self.fit_options)
        return _fit.fit_map(scores, self.prior, mask, **self.fit_options)

    def n_star(self, obs: Observed, upto: int | None = None) -> tuple[np.ndarray, np.ndarray]:
        """N* from a fit on the first ``upto`` drawn samples (default: all drawn).

        Returns:
            ``(n_star, usable)``: ``(Q,)`` int64 N* and the ``(Q,)`` bool fit usability.
        """
        s = np.asarray(obs.scores, dtype=np.float64)
        m = np.asarray(obs.mask, dtype=bool)
        if upto is not None:
            # Cut the mask, not the arrays: one compiled fit per pool shape.
            m = m & (np.arange(m.shape[1])[None, :] < upto)
        res = self._fit(s, m)
        ns = compute_n_star(
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
