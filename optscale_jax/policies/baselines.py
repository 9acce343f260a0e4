"""Baseline scaling policies: Best-of-N, self-consistency, weighted voting, ESC, ASC, DSC.

Every policy follows :class:`optscale_jax.policies.base.Policy`: ``want`` and
``select`` work on all questions at once with array operations.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from .base import (
    Observed,
    answer_counts,
    best_of_n_index,
    majority_index,
    weighted_vote_index,
)

__all__ = [
    "BestOfN",
    "SelfConsistency",
    "WeightedVote",
    "ESC",
    "ASC",
    "DSC",
    "beta_majority_probability",
    "top_two_counts",
]


def _check_n(name: str, value: int, low: int = 1) -> int:
    if isinstance(value, bool) or int(value) != value or int(value) < low:
        raise ValueError(f"{name} must be an integer >= {low}, got {value!r}")
    return int(value)


@dataclass
class _FixedBudget:
    """Shared part of the fixed-budget rules: always ask for ``n`` samples."""

    n: int

    def __post_init__(self) -> None:
        self.n = _check_n(f"{type(self).__name__}.n", self.n)

    @property
    def n_max(self) -> int:
        """Samples per question (fixed)."""
        return self.n

    def want(self, obs: Observed) -> np.ndarray:
        """Ask for ``n`` samples everywhere."""
        return np.full(obs.mask.shape[0], self.n, dtype=np.int64)


@dataclass
class BestOfN(_FixedBudget):
    """Best-of-N: draw ``n`` samples, keep the highest-scoring one.

    Selection follows :func:`~optscale_jax.policies.base.best_of_n_index`: the highest
    score, empty completions never (unless nothing else), ties to the first drawn. This is the reference rule of the OptScale
    paper (Wang et al. 2025, arXiv 2506.22376, Table 1 "Best-of-N").

    Args:
        n: samples per question.
    """

    name: str = "BoN"

    def select(self, obs: Observed) -> np.ndarray:
        """Highest score among drawn non-empty samples; ties to the first drawn."""
        return best_of_n_index(obs.scores, obs.mask, obs.selectable)


@dataclass
class SelfConsistency(_FixedBudget):
    """Self-consistency (Wang et al. 2023, ICLR, "Self-Consistency Improves Chain of
    Thought Reasoning"): draw ``n`` samples, keep the most frequent answer.

    Tie rule: between answers with equal counts the one drawn first wins; the chosen
    sample is that answer's first occurrence. Samples with no answer do not vote.

    Args:
        n: samples per question.
    """

    name: str = "SC"

    def select(self, obs: Observed) -> np.ndarray:
        """First occurrence of the majority answer (earliest answer wins ties)."""
        return majority_index(obs.mask, obs.answer_ids)


@dataclass
class WeightedVote(_FixedBudget):
    """Score-weighted voting (weighted self-consistency, e.g. Li et al. 2023 "Making
    Large Language Models Better Reasoners with Step-Aware Verifier"): each answer
    gets the sum of its samples' verifier scores; the largest sum wins.

    Ties go to the answer drawn first; the chosen sample is its first occurrence.

    Args:
        n: samples per question.
    """

    name: str = "WeightedSC"

    def select(self, obs: Observed) -> np.ndarray:
        """First occurrence of the answer with the largest score sum."""
        return weighted_vote_index(obs.scores, obs.mask, obs.answer_ids)


@dataclass
class ESC:
    """Early-stopping self-consistency (Li et al. 2024, ICLR, "Escape Sky-high Cost:
    Early-stopping Self-Consistency for Multi-step Reasoning").

    Samples are drawn in windows: the first check happens after ``window`` samples and
    then every ``stride`` samples (``stride = window`` gives the paper's consecutive,
    non-overlapping windows, which is also what the OptScale authors' replay does;
    ``stride = 1`` gives a sliding window). At a check, sampling stops when the last
    ``window`` drawn samples all carry the same (non-missing) answer. Otherwise it goes
    on to the next check point, never beyond ``n_max``. Selection: majority vote
    (:class:`SelfConsistency` tie rule).

    Args:
        n_max: sample budget per question.
        window: window size ``w`` (paper and official replay: 5).
        stride: samples between checks; default ``window``.
    """

    n_max: int
    window: int = 5
    stride: int | None = None
    name: str = "ESC"

    def __post_init__(self) -> None:
        self.n_max = _check_n("ESC.n_max", self.n_max)
        self.window = _check_n("ESC.window", self.window)
        self.stride = self.window if self.stride is None else _check_n("ESC.stride", self.stride)

    def _window_agrees(self, obs: Observed) -> np.ndarray:
        n = obs.n_drawn
        ids = np.asarray(obs.answer_ids)
        cols = n[:, None] - self.window + np.arange(self.window)[None, :]
        ok = cols >= 0
        win = np.take_along_axis(ids, np.clip(cols, 0, ids.shape[1] - 1), axis=1)
        first = win[:, :1]
        return ok.all(axis=1) & (win >= 0).all(axis=1) & (win == first).all(axis=1)

    def want(self, obs: Observed) -> np.ndarray:
        """Next check point, or the current count when the last window agrees."""
        n = obs.n_drawn
        w, st = self.window, self.stride
        at_check = (n >= w) & ((n - w) % st == 0)
        stop = (at_check & self._window_agrees(obs)) | (n >= self.n_max)
        # Next check point strictly above n: w, w + st, w + 2 st, ...
        nxt = np.where(n < w, w, w + ((n - w) // st + 1) * st)
        return np.where(stop, n, np.minimum(nxt, self.n_max)).astype(np.int64)

    def select(self, obs: Observed) -> np.ndarray:
        """Majority vote over what was drawn."""
        return majority_index(obs.mask, obs.answer_ids)


def top_two_counts(mask: np.ndarray, answer_ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Counts of the most and second most frequent answers among drawn samples.

    Args:
        mask: ``(Q, N)`` drawn mask.
        answer_ids: ``(Q, N)`` answer classes, -1 = no answer (not counted).

    Returns:
        ``(a, b)``: ``(Q,)`` int64 counts of the leading answer and of the runner-up (0 if none).
    """
    counts = answer_counts(mask, answer_ids)
    ids = np.asarray(answer_ids)
    lead = np.argmax(counts, axis=1)
    a = counts[np.arange(len(lead)), lead]
    lead_id = ids[np.arange(len(lead)), lead]
    other = np.where((ids != lead_id[:, None]) & (counts > 0), counts, 0.0)
    b = other.max(axis=1) if other.shape[1] else np.zeros_like(a)
    return a.astype(np.int64), b.astype(np.int64)


def beta_majority_probability(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """``P(p1 > p2)`` under ASC's Beta model: ``P(X > 1/2)`` for ``X ~ Beta(a+1, b+1)``.

    For integer counts this is exactly ``P(Binomial(a + b + 1, 1/2) <= a)``, computed
    here from exact binomial coefficients (no quadrature).

    Args:
        a: counts of the leading answer (non-negative integers).
        b: counts of the runner-up.

    Returns:
        Probabilities, same shape as the broadcast of ``a`` and ``b``.

    Examples:
        >>> float(beta_majority_probability(np.array(4), np.array(0)))
        0.96875
    """
    a = np.asarray(a, dtype=np.int64)
    b = np.asarray(b, dtype=np.int64)
    a, b = np.broadcast_arrays(a, b)
    if (a < 0).any() or (b < 0).any():
        raise ValueError("beta_majority_probability: counts must be >= 0")
    n_top = int((a + b).max(initial=0)) + 1
    table = _binom_half_cdf(n_top)
    return table[a + b + 1, a]


_BINOM_CACHE: dict[int, np.ndarray] = {}


def _binom_half_cdf(n_top: int) -> np.ndarray:
    """``T[n, k] = P(Binomial(n, 1/2) <= k)`` for ``n <= n_top``, exact then rounded."""
    size = max(n_top, 8)
    size = 1 << (size - 1).bit_length()  # cache by power of two
    if size not in _BINOM_CACHE:
        t = np.ones((size + 1, size + 1))
        for n in range(size + 1):
            acc = 0
            for k in range(n + 1):
                acc += math.comb(n, k)
                t[n, k] = acc / 2**n
        _BINOM_CACHE[size] = t
    return _BINOM_CACHE[size]


@dataclass
class ASC:
    """Adaptive-consistency (Aggarwal et al. 2023, EMNLP, "Let's Sample Step by Step:
    Adaptive-Consistency for Efficient Reasoning and Coding with LLMs").

    After every new sample, with ``a`` and ``b`` the vote counts of the leading and
    runner-up answers (samples with no answer do not vote), the Beta stopping criterion
    stops when ``P(Beta(a+1, b+1) > 1/2) > threshold`` (paper default 0.95). Sampling
    never goes beyond ``n_max`` and never stops before ``min_samples``. Selection:
    majority vote.

    Args:
        n_max: sample budget per question.
        threshold: confidence threshold of the criterion.
        min_samples: samples always drawn first.
    """

    n_max: int
    threshold: float = 0.95
    min_samples: int = 1
    name: str = "ASC"

    def __post_init__(self) -> None:
        self.n_max = _check_n("ASC.n_max", self.n_max)
        self.min_samples = _check_n("ASC.min_samples", self.min_samples)
        if not 0.0 < float(self.threshold) < 1.0:
            raise ValueError(f"ASC.threshold must be in (0, 1), got {self.threshold!r}")

    def confident(self, obs: Observed) -> np.ndarray:
        """``(Q,)`` bool: the Beta criterion holds on what was drawn."""
        a, b = top_two_counts(obs.mask, obs.answer_ids)
        return beta_majority_probability(a, b) > self.threshold

    def want(self, obs: Observed) -> np.ndarray:
        """One more sample until the criterion holds or ``n_max`` is reached."""
        n = obs.n_drawn
        stop = ((n >= self.min_samples) & self.confident(obs)) | (n >= self.n_max)
        nxt = np.maximum(n + 1, min(self.min_samples, self.n_max))
        return np.where(stop, n, np.minimum(nxt, self.n_max)).astype(np.int64)

    def select(self, obs: Observed) -> np.ndarray:
        """Majority vote over what was drawn."""
        return majority_index(obs.mask, obs.answer_ids)


@dataclass
class DSC:
    """Difficulty-adaptive self-consistency (Wang et al. 2024, "Make Every Penny Count:
    Difficulty-Adaptive Self-Consistency for Cost-Efficient Reasoning", NAACL Findings
    2025), restated for replay over a pool.

    1. *Difficulty ranking.* The paper asks the LLM to rank questions in batches. Here
       the ranking comes from ``difficulty`` (a ``(Q,)`` array, higher = harder, e.g.
       a predictor's output) or, by default, from one pre-sample per question: the lower
       its verifier score, the harder (ties keep question order). The pre-sample is
       charged like any sample.
    2. *Problem partition.* A binary search along the ranking finds the easy/hard
       boundary: the probed question gets ``window`` samples; if they all carry the same
       answer, it and every easier question are *easy*, else it and every harder
       question are *hard*. Probe samples are charged (the paper's search overhead).
    3. *Allocation.* Easy questions stop with what they have (one sample, or the probe's
       window). Hard questions are pre-allocated ``window`` samples and then extended one
       sample at a time under ASC's Beta criterion (``threshold``) up to ``n_max``.

    Departure from the paper, on purpose: the paper pre-allocates a hard question the
    sample size its already-finished easier neighbours needed; that makes questions wait
    on each other and only changes how many rounds a live run takes, so here every hard
    question starts from ``window``. Selection: majority vote. On ragged pools a probe
    row that holds a single sample stalls the partition (the replay then ends).

    Args:
        n_max: sample budget per question.
        window: probe / pre-allocation size.
        threshold: ASC confidence threshold for hard questions.
        difficulty: optional ``(Q,)`` difficulty per question (higher = harder).
    """

    n_max: int
    window: int = 4
    threshold: float = 0.95
    difficulty: np.ndarray | None = field(default=None, repr=False)
    name: str = "DSC"

    def __post_init__(self) -> None:
        self.n_max = _check_n("DSC.n_max", self.n_max)
        self.window = min(_check_n("DSC.window", self.window), self.n_max)
        if not 0.0 < float(self.threshold) < 1.0:
            raise ValueError(f"DSC.threshold must be in (0, 1), got {self.threshold!r}")
        if self.difficulty is not None:
            d = np.asarray(self.difficulty, dtype=np.float64).reshape(-1)
            if not np.isfinite(d).all():
                i = int(np.flatnonzero(~np.isfinite(d))[0])
                raise ValueError(f"DSC.difficulty: question {i} is not a finite number")
            self.difficulty = d

    def partition(self, obs: Observed) -> tuple[np.ndarray, int | None]:
        """Where the binary search stands.

        Returns:
            ``(easy, probe)``: ``easy`` is a ``(Q,)`` bool of questions known easy (valid
            once ``probe`` is None); ``probe`` is the question index whose window is still
            to be drawn, or None when the partition is complete.
        """
        n = obs.n_drawn
        q = n.shape[0]
        live = n > 0
        if self.difficulty is not None:
            if self.difficulty.shape[0] != q:
                raise ValueError(
                    f"DSC.difficulty has {self.difficulty.shape[0]} entries, the pool has {q} questions"
                )
            diff = self.difficulty
        else:
            diff = -np.asarray(obs.scores, dtype=np.float64)[:, 0]
        order = np.flatnonzero(live)
        order = order[np.argsort(diff[order], kind="stable")]
        ids = np.asarray(obs.answer_ids)
        lo, hi = 0, order.shape[0]
        while lo < hi:
            mid = (lo + hi) // 2
            i = order[mid]
            if n[i] < self.window and (n[i] <= 1 and self.window > 1):
                return np.zeros(q, dtype=bool), int(i)
            row = ids[i, : n[i]]
            consistent = n[i] >= self.window and (row >= 0).all() and (row == row[0]).all()
            if consistent:
                lo = mid + 1
            else:
                hi = mid
        easy = np.zeros(q, dtype=bool)
        easy[order[:lo]] = True
        return easy, None

    def want(self, obs: Observed) -> np.ndarray:
        """Pre-sample, then probe for the partition, then ASC on the hard questions."""
        n = obs.n_drawn
        if not (n > 0).any():
            return np.ones_like(n)
        easy, probe = self.partition(obs)
        if probe is not None:
            out = n.copy()
            out[probe] = self.window
            return out
        a, b = top_two_counts(obs.mask, obs.answer_ids)
        confident = beta_majority_probability(a, b) > self.threshold
        hard_stop = ((n >= self.window) & confident) | (n >= self.n_max)
        hard_want = np.where(hard_stop, n, np.minimum(np.maximum(n + 1, self.window), self.n_max))
        out = np.where(easy | (n == 0), n, hard_want)
        return out.astype(np.int64)

    def select(self, obs: Observed) -> np.ndarray:
        """Majority vote over what was drawn."""
        return majority_index(obs.mask, obs.answer_ids)
