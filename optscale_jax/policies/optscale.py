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

from optscale_jax.selection import best_of_n_index

from .base import Observed

if TYPE_CHECKING:  # re-exported lazily below (importing the policies must not start JAX)
    from optscale_jax.fit import fit_status_usable
    from optscale_jax.model import gaussian_prior
    from optscale_jax.nstar import n_star_for_fits as compute_n_star

__all__ = [
    "OptScale",
    "checkpoints",
    "default_n_init",
    "official_peek",
    "oneshot_draws",
    "sequential_draws",
    "stops_at_check",
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


# ----------------------------------------------------------------------------- the rule
# Pure functions of counts and N*: the policy (round by round) and the sweep (every
# prefix at once) both call them, so the stopping rule has one implementation.


def default_n_init(variant: str) -> int:
    """First fit of the sequential mode: 2 samples for MLE (one sample has no spread), 1 for MAP.

    Args:
        variant: ``"MLE"`` or ``"MAP"``.

    Returns:
        The default ``n_init``.
    """
    if variant not in ("MLE", "MAP"):
        raise ValueError(f"OptScale variant must be 'MLE' or 'MAP', got {variant!r}")
    return 2 if variant == "MLE" else 1


def checkpoints(
    n_max: int,
    *,
    mode: str,
    k: int | None = None,
    n_init: int | None = None,
    step: int = 1,
    variant: str = "MLE",
) -> np.ndarray:
    """The sample counts at which OptScale fits and decides.

    One-shot: the peek ``k`` alone (default :func:`official_peek`). Sequential:
    ``n_init, n_init + step, ...`` up to ``n_max``, with ``n_init`` clipped to
    ``[1, n_max]`` (default :func:`default_n_init`).

    Args:
        n_max: sample budget.
        mode: ``"oneshot"`` or ``"sequential"``.
        k: peek size (one-shot).
        n_init: first fit (sequential).
        step: samples between refits (sequential, ``b``).
        variant: ``"MLE"`` or ``"MAP"`` (the default ``n_init``).

    Returns:
        int64 increasing counts.

    Examples:
        >>> checkpoints(16, mode="oneshot").tolist()
        [5]
        >>> checkpoints(8, mode="sequential", step=3).tolist()
        [2, 5, 8]
    """
    n_max = int(n_max)
    if mode == "oneshot":
        return np.asarray([official_peek(n_max) if k is None else int(k)], dtype=np.int64)
    if mode != "sequential":
        raise ValueError(f"OptScale mode must be 'oneshot' or 'sequential', got {mode!r}")
    first = default_n_init(variant) if n_init is None else int(n_init)
    first = min(max(first, 1), n_max)
    return np.arange(first, n_max + 1, int(step), dtype=np.int64)


def oneshot_draws(n_star: np.ndarray, k: int, n_max: int) -> np.ndarray:
    """Samples the one-shot mode draws: ``max(N*, k)``, at most ``n_max``.

    Args:
        n_star: N* from the fit on the peek (any shape).
        k: peek size.
        n_max: sample budget.

    Returns:
        int64, the shape of ``n_star``.
    """
    return np.minimum(np.maximum(np.asarray(n_star), k), n_max).astype(np.int64)


def stops_at_check(n: np.ndarray, n_star: np.ndarray, usable: np.ndarray) -> np.ndarray:
    """The sequential stopping test at a checkpoint: a usable fit and ``n >= N*``.

    A fit that is not usable (NO_DATA, DEGENERATE: no spread to go on) never stops sampling.

    Args:
        n: samples drawn (the fit's sample count).
        n_star: N* of that fit.
        usable: :func:`optscale_jax.fit.fit_status_usable` of that fit.

    Returns:
        bool, the broadcast shape.
    """
    return np.asarray(usable, dtype=bool) & (np.asarray(n) >= np.asarray(n_star))


def sequential_draws(
    lengths: np.ndarray, n_star: np.ndarray, usable: np.ndarray, cap: np.ndarray
) -> np.ndarray:
    """Samples the sequential mode draws, given the fits at every checkpoint at once.

    The first checkpoint ``L <= cap`` where :func:`stops_at_check` holds, else ``cap``.

    Args:
        lengths: ``(L,)`` checkpoints (:func:`checkpoints`).
        n_star: ``(Q, L, ...)`` N* of the fit on the first ``lengths[l]`` samples; trailing
            axes are configurations (e.g. ``s_min`` x ``alpha``).
        usable: ``(Q, L)`` fit usability.
        cap: ``(Q,)`` most samples each question can draw (``min(row length, n_max)``).

    Returns:
        ``(Q, ...)`` int64 samples drawn.
    """
    ns = np.asarray(n_star)
    extra = (1,) * (ns.ndim - 2)
    length = np.asarray(lengths).reshape((1, -1) + extra)
    cap_b = np.asarray(cap).reshape((-1,) + (1,) * (ns.ndim - 1))
    ok = np.asarray(usable, dtype=bool).reshape(np.shape(usable) + extra)
    stop = stops_at_check(length, ns, ok) & (length <= cap_b)
    first = np.argmax(stop, axis=1)
    cap_r = cap_b[:, 0]
    drawn = np.where(stop.any(axis=1), np.asarray(lengths)[first], cap_r)
    return np.minimum(drawn, cap_r).astype(np.int64)


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
        family: the score family by name (:mod:`optscale_jax.families`): ``"truncnorm"``
            (the paper; default, unchanged), ``"beta"``, ``"logitnormal"``, ``"mixture"``.
            With another family the fit is that family's MLE (``prior=None``) or MAP
            (``prior`` mapped by the family, see its module) and N* goes through its CDF.
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
    family: str = "truncnorm"

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
        self.k = int(checkpoints(self.n_max, mode="oneshot", k=self.k)[0])
        if not 1 <= self.k <= self.n_max:
            raise ValueError(f"OptScale.k must be in [1, n_max={self.n_max}], got {self.k}")
        self.step = int(self.step)
        if self.step < 1:
            raise ValueError(f"OptScale.step must be >= 1, got {self.step}")
        checks = checkpoints(self.n_max, mode="sequential", n_init=self.n_init, step=self.step,
                             variant=self.variant)
        self.n_init = int(checks[0])
        if self.family != "truncnorm":
            from optscale_jax.families import get as get_family

            get_family(self.family)  # ValueError naming the known families
            if self.nstar_rule != "closed":
                raise ValueError(f"OptScale.nstar_rule {self.nstar_rule!r} (the authors' grid scan) "
                                 f"exists only for family 'truncnorm', got family {self.family!r}")
        if not self.name:
            base = "OptScale0" if self.prior is None else "OptScaleT"
            self.name = f"{base}-{self.mode}"
            if self.family != "truncnorm":
                self.name += f"-{self.family}"

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
        if self.family != "truncnorm":
            from optscale_jax.families import get as get_family
            from optscale_jax.families import n_star_family

            fit = get_family(self.family).fit(s, m, prior=self.prior)
            ns = n_star_family(self.family, fit.params, self.s_min, self.alpha, n_max=self.n_max)
            return np.asarray(ns, np.int64), fit_status_usable(fit.status)
        res = self._fit(s, m)
        ns = n_star_for_fits(
            res.mu, res.sigma, self.s_min, self.alpha, n_max=self.n_max, rule=self.nstar_rule
        )
        return ns, fit_status_usable(res.status)

    def want(self, obs: Observed) -> np.ndarray:
        """One-shot: k, then max(N*, k). Sequential: next checkpoint until n >= N*."""
        n = obs.n_drawn
        if self.mode == "oneshot":
            ready = n >= self.k
            if not ready.any():
                return np.full_like(n, min(self.k, self.n_max)).astype(np.int64)
            ns, _ = self.n_star(obs, upto=self.k)
            return np.where(ready, oneshot_draws(ns, self.k, self.n_max), self.k).astype(np.int64)
        checks = checkpoints(self.n_max, mode="sequential", n_init=self.n_init, step=self.step)
        # the next checkpoint strictly above n (n_max past the last one)
        after = np.searchsorted(checks, n, side="right")
        nxt = np.where(after < checks.size, checks[np.minimum(after, checks.size - 1)], self.n_max)
        at_check = np.isin(n, checks)
        stop = n >= self.n_max
        if at_check.any():
            ns, usable = self.n_star(obs)
            stop = stop | (at_check & stops_at_check(n, ns, usable))
        return np.where(stop, n, nxt).astype(np.int64)

    def select(self, obs: Observed) -> np.ndarray:
        """Best-of-N over what was drawn."""
        return best_of_n_index(obs.scores, obs.mask, obs.selectable)
