"""Budget policies: one token budget spent across all questions.

* :class:`OptScaleBudget` (ours, beyond the paper): waves of at most ``wave_size``
  samples; before each wave every question's posterior over (μ, σ) is recomputed on a
  lattice (the Gaussian prior, the population prior by default, so a question with no
  sample has one too) and the wave goes where the posterior-predictive expected gain per
  token is highest (the greedy of :mod:`optscale_jax.allocate`: expected questions whose
  best sample reaches ``s_min``; with a ``calibration``, expected accuracy). Questions already at ``s_min`` stop, and so do those whose next sample
  gains less than ``min_gain_per_token``.
* :class:`UniformEliminate` (a baseline implemented from the description of the
  elimination algorithm of Zuo & Zhu 2025, "Strategic Scaling of Test-Time Compute: A
  Bandit Learning Approach", arXiv 2506.12721, which publishes no code): uniform
  exploration (one more sample for every active question per wave) with elimination of
  questions already solved (best score >= ``s_min``, the PRM standing in for the paper's
  reward oracle) or hopeless (best score below ``s_hopeless`` after ``explore`` samples).

Both spend at most ``token_budget`` tokens *in expectation* per wave plan: the remaining
budget is ``token_budget`` minus the tokens of every drawn sample, and a sample of
question ``i`` is expected to cost the mean of its drawn samples, shrunk towards the mean
over all questions with one pseudo-sample (``default_tokens`` before any is drawn). A
wave can therefore overshoot by what its samples cost beyond their expectation, never
more than one wave. Selection is Best-of-N. ``token_budget=None`` means no global
budget (then ``n_max`` and ``min_gain_per_token`` alone stop).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np

from optscale_jax.selection import best_of_n_index

from .base import Observed

__all__ = ["OptScaleBudget", "UniformEliminate", "best_scores", "remaining_budget",
           "tokens_per_sample"]


def remaining_budget(obs: Observed, token_budget: float | None) -> float:
    """``token_budget`` minus the tokens of every drawn sample (``inf`` without a budget)."""
    if token_budget is None:
        return float("inf")
    spent = float(np.asarray(obs.tokens)[np.asarray(obs.mask, bool)].sum())
    return float(token_budget) - spent


def tokens_per_sample(obs: Observed, default_tokens: float) -> np.ndarray:
    """``(Q,)`` expected tokens of each question's next sample.

    The row mean shrunk towards the mean over all drawn samples with one pseudo-sample:
    ``(Σ_i t + m̄) / (n_i + 1)``; ``m̄ = default_tokens`` while nothing is drawn.
    """
    m = np.asarray(obs.mask, bool)
    t = np.where(m, np.asarray(obs.tokens, dtype=np.float64), 0.0)
    n = m.sum(axis=1)
    overall = float(t.sum() / n.sum()) if n.sum() > 0 else float(default_tokens)
    overall = max(overall, 1.0)
    return np.maximum((t.sum(axis=1) + overall) / (n + 1.0), 1.0)


def best_scores(obs: Observed) -> np.ndarray:
    """``(Q,)`` best score among the selectable drawn samples (``-inf`` when none)."""
    sel = np.asarray(obs.mask, bool) if obs.selectable is None else np.asarray(obs.selectable,
                                                                               bool)
    return np.where(sel, np.asarray(obs.scores, dtype=np.float64), -np.inf).max(axis=1)


def _caps(obs: Observed, n_max: int) -> np.ndarray:
    cap = np.full(obs.mask.shape[0], int(n_max), dtype=np.int64)
    if obs.available is not None:
        cap = np.minimum(cap, np.asarray(obs.available, dtype=np.int64))
    return cap


def _check(name: str, n_max: int, s_min: float, token_budget: float | None,
           wave_size: int | None) -> None:
    if int(n_max) < 1:
        raise ValueError(f"{name}.n_max must be >= 1, got {n_max}")
    if not 0.0 < float(s_min) < 1.0:
        raise ValueError(f"{name}.s_min must be in (0, 1), got {float(s_min)}")
    if token_budget is not None and not float(token_budget) > 0.0:
        raise ValueError(f"{name}.token_budget must be > 0 (or None), got {float(token_budget)}")
    if wave_size is not None and int(wave_size) < 1:
        raise ValueError(f"{name}.wave_size must be >= 1 (or None), got {wave_size}")


@dataclass
class OptScaleBudget:
    """Greedy expected-gain-per-token allocation of one token budget, wave by wave.

    Args:
        n_max: most samples per question.
        s_min: target score (a question is solved once its best sample reaches it).
        token_budget: total completion tokens for all questions (None: no budget).
        wave_size: most new samples per wave, all questions together (None: one per
            question on average, i.e. ``Q``).
        k_max: most new samples per question per wave.
        n_init: samples every question gets first (in waves of ``wave_size``) when the
            budget covers them all (uniform exploration before the first refit; 0 to skip).
        min_gain_per_token: stop a question whose next sample gains less per token.
        prior: MAP prior (``GaussianPrior``/``Prior``; default the population prior).
        calibration: an :class:`optscale_jax.allocate.Calibration`: maximise expected
            accuracy instead of expected questions reaching ``s_min``.
        default_tokens: expected tokens per sample before any sample is drawn.
        grid: lattice points per axis of the posterior over (μ, σ) (:meth:`posterior_grid`).
    """

    #: one token budget across all questions: never cut into question chunks
    couples_questions: ClassVar[bool] = True

    n_max: int
    s_min: float = 0.95
    token_budget: float | None = None
    wave_size: int | None = None
    k_max: int = 4
    n_init: int = 1
    min_gain_per_token: float = 0.0
    prior: Any = field(default=None, repr=False)
    calibration: Any = field(default=None, repr=False)
    default_tokens: float = 512.0
    grid: int = 15
    name: str = "OptScaleBudget"

    def __post_init__(self) -> None:
        _check("OptScaleBudget", self.n_max, self.s_min, self.token_budget, self.wave_size)
        self.n_max = int(self.n_max)
        self.k_max = int(self.k_max)
        if self.k_max < 1:
            raise ValueError(f"OptScaleBudget.k_max must be >= 1, got {self.k_max}")
        self.n_init = int(self.n_init)
        if self.n_init < 0:
            raise ValueError(f"OptScaleBudget.n_init must be >= 0, got {self.n_init}")
        if not float(self.min_gain_per_token) >= 0.0:
            raise ValueError("OptScaleBudget.min_gain_per_token must be >= 0, got "
                             f"{float(self.min_gain_per_token)}")
        if not float(self.default_tokens) > 0.0:
            raise ValueError(f"OptScaleBudget.default_tokens must be > 0, got "
                             f"{float(self.default_tokens)}")

    def posterior_grid(self, obs: Observed) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Each question's posterior over a ``grid x grid`` lattice of (μ, σ).

        Prior (the Gaussian prior, default the population prior) times the truncated-normal
        likelihood of the drawn scores, normalised over a lattice spanning the prior's
        centre ± 3.5 widths (σ > 0.005). A grid rather than the MAP point: with one or two
        samples the MAP σ collapses to its lower bound and F(s_min) to exactly 0 or 1,
        which would end those questions after one sample.

        Returns:
            ``(mu, sigma, weights)``, each ``(Q, G)``: lattice points and posterior weights.
        """
        import jax.numpy as jnp

        from optscale_jax.distributions import truncnorm01_log_prob
        from optscale_jax.model import population_prior

        q = obs.mask.shape[0]
        prior = population_prior(q) if self.prior is None else self.prior
        lm, sm, ls, ss = (np.broadcast_to(np.asarray(getattr(prior, f), dtype=np.float64), (q,))
                          for f in ("loc_mu", "scale_mu", "loc_sigma", "scale_sigma"))
        z = np.linspace(-3.5, 3.5, self.grid)
        mu_1 = lm[:, None] + sm[:, None] * z[None, :]
        lo = np.maximum(ls - 3.5 * ss, 0.005)
        sig_1 = lo[:, None] + (ls + 3.5 * ss - lo)[:, None] * np.linspace(0, 1, self.grid)[None, :]
        mu = np.repeat(mu_1, self.grid, axis=1)
        sigma = np.tile(sig_1, (1, self.grid))
        x = np.asarray(obs.scores, dtype=np.float64)
        m = np.asarray(obs.mask, bool)
        lp = np.asarray(truncnorm01_log_prob(jnp.asarray(x)[:, :, None], mu[:, None, :],
                                             sigma[:, None, :]))
        ll = np.where(m[:, :, None], lp, 0.0).sum(axis=1)
        lprior = -0.5 * ((mu - lm[:, None]) / sm[:, None]) ** 2 \
            - 0.5 * ((sigma - ls[:, None]) / ss[:, None]) ** 2
        logw = ll + lprior
        logw = np.where(np.isfinite(logw), logw, -np.inf)
        logw -= logw.max(axis=1, keepdims=True)
        w = np.exp(logw)
        return mu, sigma, w / w.sum(axis=1, keepdims=True)

    def plan(self, obs: Observed) -> np.ndarray:
        """``(Q,)`` new samples each question gets in the next wave (0 everywhere: stop)."""
        from optscale_jax.allocate import greedy_allocate, marginal_gains
        from optscale_jax.distributions import truncnorm01_log_cdf

        n = obs.n_drawn
        q = n.shape[0]
        cap = _caps(obs, self.n_max)
        left = remaining_budget(obs, self.token_budget)
        cost = tokens_per_sample(obs, self.default_tokens)
        wave = q if self.wave_size is None else int(self.wave_size)
        if left <= 0 or q == 0:
            return np.zeros(q, dtype=np.int64)
        need = np.clip(np.minimum(self.n_init, cap) - n, 0, None)
        if need.any() and float((need * cost).sum()) <= left:  # explore, ``wave`` at a time
            first = np.arange(q) == np.argmax(need > 0)  # progress even if n_init > wave
            return np.where((np.cumsum(need) <= wave) | first, need, 0).astype(np.int64)
        mu, sigma, w = self.posterior_grid(obs)
        best = best_scores(obs)
        if self.calibration is None:
            t = np.asarray([float(self.s_min)])
            jumps = np.asarray([1.0])
        else:
            t = np.asarray(self.calibration.thresholds, dtype=np.float64)
            jumps = np.clip(np.diff(np.asarray(self.calibration.values, dtype=np.float64)), 0, None)
        lf = np.asarray(truncnorm01_log_cdf(t[None, None, :], mu[:, :, None], sigma[:, :, None]))
        weights = w[:, :, None] * np.where(best[:, None] < t[None, :], jumps[None, :], 0.0)[:, None]
        gains = marginal_gains(lf.reshape(q, -1), weights.reshape(q, -1), self.k_max)
        alloc = greedy_allocate(gains, cost, left, cap=np.clip(cap - n, 0, self.k_max),
                                min_gain_per_token=float(self.min_gain_per_token),
                                max_samples=wave)
        return np.asarray(alloc.extra, dtype=np.int64)

    def want(self, obs: Observed) -> np.ndarray:
        """Drawn plus this wave's allocation."""
        return obs.n_drawn + self.plan(obs)

    def select(self, obs: Observed) -> np.ndarray:
        """Best-of-N over what was drawn."""
        return best_of_n_index(obs.scores, obs.mask, obs.selectable)


@dataclass
class UniformEliminate:
    """Uniform exploration with elimination of solved and hopeless questions, under a budget.

    Every wave gives one more sample to each active question (the ones with the fewest
    samples first, then by index, when the budget or ``wave_size`` does not cover them
    all). A question leaves the active set once its best score reaches ``s_min``
    (solved), once it has ``explore`` samples and its best score is below
    ``s_hopeless`` (hopeless), or at ``n_max``.

    Args:
        n_max: most samples per question.
        s_min: score that counts as solved.
        token_budget: total completion tokens (None: no budget).
        explore: samples before a question can be called hopeless.
        s_hopeless: best score below which an explored question is dropped.
        wave_size: most new samples per wave (None: every active question).
        default_tokens: expected tokens per sample before any sample is drawn.
    """

    #: one token budget across all questions: never cut into question chunks
    couples_questions: ClassVar[bool] = True

    n_max: int
    s_min: float = 0.95
    token_budget: float | None = None
    explore: int = 4
    s_hopeless: float = 0.5
    wave_size: int | None = None
    default_tokens: float = 512.0
    name: str = "UniformEliminate"

    def __post_init__(self) -> None:
        _check("UniformEliminate", self.n_max, self.s_min, self.token_budget, self.wave_size)
        self.n_max = int(self.n_max)
        self.explore = int(self.explore)
        if self.explore < 1:
            raise ValueError(f"UniformEliminate.explore must be >= 1, got {self.explore}")
        if not 0.0 <= float(self.s_hopeless) <= float(self.s_min):
            raise ValueError(f"UniformEliminate.s_hopeless must be in [0, s_min], got "
                             f"{float(self.s_hopeless)}")

    def active(self, obs: Observed) -> np.ndarray:
        """``(Q,)`` bool: not solved, not hopeless, below its cap."""
        n = obs.n_drawn
        best = best_scores(obs)
        solved = best >= self.s_min
        hopeless = (n >= self.explore) & (best < self.s_hopeless)
        return ~solved & ~hopeless & (n < _caps(obs, self.n_max))

    def plan(self, obs: Observed) -> np.ndarray:
        """``(Q,)`` new samples (0 or 1) each question gets in the next wave."""
        n = obs.n_drawn
        act = self.active(obs)
        left = remaining_budget(obs, self.token_budget)
        cost = tokens_per_sample(obs, self.default_tokens)
        order = np.lexsort((np.arange(n.size), n))  # fewest samples first, then index
        order = order[act[order]]
        if self.wave_size is not None:
            order = order[: int(self.wave_size)]
        fits = np.cumsum(cost[order]) <= left
        out = np.zeros(n.size, dtype=np.int64)
        out[order[fits]] = 1
        return out

    def want(self, obs: Observed) -> np.ndarray:
        """Drawn plus this wave's allocation."""
        return obs.n_drawn + self.plan(obs)

    def select(self, obs: Observed) -> np.ndarray:
        """Best-of-N over what was drawn."""
        return best_of_n_index(obs.scores, obs.mask, obs.selectable)
