"""Baseline scaling policies: Best-of-N, self-consistency, weighted voting, ESC, ASC, DSC.

Every policy follows :class:`optscale_jax.policies.base.Policy`: ``want`` and
``select`` work on all questions at once with array operations.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import ClassVar

import numpy as np

from optscale_jax.selection import (
    answer_counts,
    best_of_n_index,
    majority_index,
    weighted_vote_index,
)

from .base import Observed

__all__ = [
    "BestOfN",
    "SelfConsistency",
    "WeightedVote",
    "ESC",
    "ASC",
    "DSC",
    "DSCSearch",
    "DSC_VARIANTS",
    "asc_stop_lengths",
    "beta_majority_probability",
    "dsc_official_difficulty",
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

    Selection follows :func:`~optscale_jax.selection.best_of_n_index`: the highest
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
    runner-up answer classes, the Beta stopping criterion stops when
    ``P(Beta(a+1, b+1) > 1/2) >= threshold`` (paper default 0.95) with at least 2 samples,
    as the authors' ``should_stop`` does. Under the authors' vote rule "no answer" is a
    class and votes; under the math-verify rule it does not. Sampling
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
        return (beta_majority_probability(a, b) >= self.threshold) & (obs.n_drawn >= 2)

    def want(self, obs: Observed) -> np.ndarray:
        """One more sample until the criterion holds or ``n_max`` is reached."""
        n = obs.n_drawn
        stop = ((n >= self.min_samples) & self.confident(obs)) | (n >= self.n_max)
        nxt = np.maximum(n + 1, min(self.min_samples, self.n_max))
        return np.where(stop, n, np.minimum(nxt, self.n_max)).astype(np.int64)

    def select(self, obs: Observed) -> np.ndarray:
        """Majority vote over what was drawn."""
        return majority_index(obs.mask, obs.answer_ids)


def dsc_official_difficulty(scores: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """The OptScale authors' DSC difficulty: ``1 -`` the mean score of every sample of a row.

    Their replay ranks questions by the mean PRM score of the whole pool row (an oracle a
    live run does not have); rows with no sample get difficulty 1.

    Args:
        scores: ``(Q, N)`` scores.
        mask: ``(Q, N)`` real samples.

    Returns:
        ``(Q,)`` float64 difficulty (higher = harder).
    """
    m = np.asarray(mask, dtype=bool)
    s = np.asarray(scores, dtype=np.float64)
    # row by row with np.mean, as they compute it, so that near-ties order the same way
    return np.array([1.0 - np.mean(s[i, m[i]]) if m[i].any() else 1.0 for i in range(m.shape[0])])


def asc_stop_lengths(mask: np.ndarray, answer_ids: np.ndarray, threshold: float, limit: int | None = None) -> np.ndarray:
    """First prefix length at which ASC's Beta criterion holds, per question.

    The criterion of the authors' ``should_stop``: with at least 2 samples, ``a`` and
    ``b`` the counts of the two most frequent answer classes of the prefix, stop when
    ``P(Beta(a+1, b+1) > 1/2) >= threshold``.

    Args:
        mask: ``(Q, N)`` drawn mask (prefix-contiguous).
        answer_ids: ``(Q, N)`` classes (-1 does not vote).
        threshold: confidence threshold.
        limit: look only at prefixes up to this length.

    Returns:
        ``(Q,)`` int64 first such length, 0 where no drawn prefix qualifies.
    """
    m = np.asarray(mask, dtype=bool)
    ids = np.asarray(answer_ids)
    q, n = m.shape
    if limit is not None:
        n = min(n, int(limit))
        m, ids = m[:, :n], ids[:, :n]
    if n == 0:
        return np.zeros(q, dtype=np.int64)
    valid = m & (ids >= 0)
    k = int(ids.max(initial=-1)) + 1
    onehot = (ids[:, :, None] == np.arange(max(k, 1))[None, None, :]) & valid[:, :, None]
    counts = np.cumsum(onehot, axis=1, dtype=np.int64)  # (Q, n, K) counts per prefix
    top = -np.sort(-counts, axis=2)
    a = top[:, :, 0]
    b = top[:, :, 1] if top.shape[2] > 1 else np.zeros_like(a)
    p = beta_majority_probability(a, b)
    length = np.arange(1, n + 1)[None, :]
    ok = (p >= threshold) & (length >= 2) & m
    first = np.argmax(ok, axis=1) + 1
    return np.where(ok.any(axis=1), first, 0).astype(np.int64)


@dataclass
class DSCSearch:
    """Where DSC's easy/hard binary search stands (see :meth:`DSC.search`).

    Attributes:
        easy: ``(Q,)`` bool, questions found easy (final once ``probes`` is empty).
        probes: question indices whose probe window must be drawn before the search can go on.
        midpoints: question indices of the midpoints visited so far, in order.
        midpoint_easy: for each visited midpoint, whether its own probe was consistent.
        probed: ``(Q,)`` bool, questions whose probe was looked at.
    """

    easy: np.ndarray
    probes: list[int]
    midpoints: list[int]
    midpoint_easy: list[bool]
    probed: np.ndarray


#: DSC variants: the authors' replay (default) and ours.
DSC_VARIANTS: tuple[str, ...] = ("official", "window")


@dataclass
class DSC:
    """Difficulty-adaptive self-consistency (Wang et al. 2024, "Make Every Penny Count:
    Difficulty-Adaptive Self-Consistency for Cost-Efficient Reasoning", NAACL Findings
    2025), restated for replay over a pool.

    ``variant="official"`` (default) follows the OptScale authors' replay (``SC/dsc.py``):

    1. *Ranking.* Questions are sorted by ``difficulty`` (higher = harder; ties keep row
       order). The authors use 1 - the mean score of the whole row
       (:func:`dsc_official_difficulty`; :func:`~optscale_jax.sweep.sweep` passes it);
       without ``difficulty`` the policy draws one sample per question and ranks by its
       score.
    2. *Easy/hard binary search with a neighbour window.* The midpoint of the current
       range is judged together with its easier neighbour: each is *probed* by drawing
       ``window`` samples (5), consistent when all ``window`` answer classes are
       identical ("no answer" counts as a class under the authors' vote rule). Only when
       the midpoint *and* its easier neighbour are consistent does the midpoint, with
       every easier question of the range, become easy; otherwise the range shrinks to
       the easier half. A row with fewer than ``window`` samples, or ``n_max < window``,
       is never consistent.
    3. *Allocation.* Easy questions answer with their first sample. Every other question
       runs ASC's Beta criterion from its first sample (stop at the first prefix of at
       least 2 samples with ``P >= threshold``) up to ``n_max``, and answers with the
       majority of that prefix.

    Charged tokens are the samples actually drawn: a probed question pays its probe
    window even when it ends up answering with fewer (the authors instead add an
    estimate, 12 x the mean of the first 5 tokens per easy midpoint, to the total).
    The authors' second search, meant to give hard questions ``n_max`` at once, can never
    fire (it needs 3 hard flags in a 2-question window), so it is left out; the DSC
    paper's sample-size pre-allocation from easier neighbours is not in their code either.

    ``variant="window"`` (ours): rank by ``difficulty`` or one pre-sample; binary search on
    the midpoint alone, its probe of ``window`` samples consistent when all carry the same
    (non-missing) class; easy questions keep what they drew and vote; hard questions
    start ASC from ``window`` samples. ``window`` defaults to 5 (official) or 4 (window).

    Args:
        n_max: sample budget per question.
        window: probe size (default 5 for official, 4 for window).
        threshold: ASC confidence threshold.
        difficulty: optional ``(Q,)`` difficulty per question (higher = harder).
        variant: ``"official"`` or ``"window"``.
    """

    #: ranks every question of the pool: never cut into question chunks
    couples_questions: ClassVar[bool] = True

    n_max: int
    window: int | None = None
    threshold: float = 0.95
    difficulty: np.ndarray | None = field(default=None, repr=False)
    variant: str = "official"
    name: str = "DSC"

    def __post_init__(self) -> None:
        if self.variant not in DSC_VARIANTS:
            raise ValueError(f"DSC.variant must be one of {DSC_VARIANTS}, got {self.variant!r}")
        self.n_max = _check_n("DSC.n_max", self.n_max)
        if self.window is None:
            self.window = 5 if self.variant == "official" else 4
        self.window = _check_n("DSC.window", self.window)
        if self.variant == "window":
            self.window = min(self.window, self.n_max)
        if not 0.0 < float(self.threshold) < 1.0:
            raise ValueError(f"DSC.threshold must be in (0, 1), got {self.threshold!r}")
        if self.difficulty is not None:
            d = np.asarray(self.difficulty, dtype=np.float64).reshape(-1)
            if not np.isfinite(d).all():
                i = int(np.flatnonzero(~np.isfinite(d))[0])
                raise ValueError(f"DSC.difficulty: question {i} is not a finite number")
            self.difficulty = d

    # ------------------------------------------------------------------ shared
    def _ranking(self, obs: Observed, live: np.ndarray) -> np.ndarray:
        q = live.shape[0]
        if self.difficulty is not None:
            if self.difficulty.shape[0] != q:
                raise ValueError(
                    f"DSC.difficulty has {self.difficulty.shape[0]} entries, the pool has {q} questions"
                )
            diff = self.difficulty
        else:
            diff = -np.asarray(obs.scores, dtype=np.float64)[:, 0]
        order = np.flatnonzero(live)
        return order[np.argsort(diff[order], kind="stable")]

    def _available(self, obs: Observed) -> np.ndarray:
        q = obs.mask.shape[0]
        if obs.available is None:
            return np.full(q, self.n_max, dtype=np.int64)
        return np.minimum(np.asarray(obs.available, dtype=np.int64), self.n_max)

    # ---------------------------------------------------------------- official
    def search(self, obs: Observed) -> DSCSearch:
        """Replay the official binary search on what was drawn.

        Returns:
            A :class:`DSCSearch`; while ``probes`` is not empty the search waits on them.
        """
        n = obs.n_drawn
        q = n.shape[0]
        avail = self._available(obs)
        live = avail > 0 if self.difficulty is not None else (avail > 0) & (n > 0)
        order = self._ranking(obs, live)
        ids = np.asarray(obs.answer_ids)
        w = int(self.window)
        easy = np.zeros(q, dtype=bool)
        probed = np.zeros(q, dtype=bool)
        mids: list[int] = []
        mid_easy: list[bool] = []
        lo, hi = 0, order.shape[0]
        while lo < hi:
            mid = (lo + hi) // 2
            members = order[max(0, mid - 1): mid + 1]
            probes = [int(j) for j in members if self.n_max >= w and avail[j] >= w and n[j] < w]
            if probes:
                return DSCSearch(easy, probes, mids, mid_easy, probed)
            flags = []
            for j in members:
                probed[j] |= self.n_max >= w and avail[j] >= w
                row = ids[j, :w]
                flags.append(bool(probed[j] and (row == row[0]).all()))
            mids.append(int(order[mid]))
            mid_easy.append(flags[-1])
            if all(flags):
                easy[order[lo: mid + 1]] = True
                lo = mid + 1
            else:
                hi = mid
        return DSCSearch(easy, [], mids, mid_easy, probed)

    def _official_state(self, obs: Observed) -> tuple[DSCSearch, np.ndarray]:
        """The search, and for each question the prefix length it answers with (0 = not yet)."""
        srch = self.search(obs)
        n = obs.n_drawn
        stop = asc_stop_lengths(obs.mask, obs.answer_ids, self.threshold, self.n_max)
        avail = self._available(obs)
        used = np.where(stop > 0, stop, np.where(n >= avail, n, 0))
        used = np.where(srch.easy, np.minimum(n, 1), used)
        return srch, used.astype(np.int64)

    # ----------------------------------------------------------------- window
    def partition(self, obs: Observed) -> tuple[np.ndarray, int | None]:
        """Where the ``"window"`` variant's binary search stands.

        Returns:
            ``(easy, probe)``: ``easy`` is a ``(Q,)`` bool of questions known easy (valid
            once ``probe`` is None); ``probe`` is the question index whose window is still
            to be drawn, or None when the partition is complete.
        """
        n = obs.n_drawn
        q = n.shape[0]
        order = self._ranking(obs, n > 0)
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

    # ------------------------------------------------------------------ policy
    def want(self, obs: Observed) -> np.ndarray:
        """Pre-sample (without ``difficulty``), probe for the partition, then ASC."""
        n = obs.n_drawn
        if self.variant == "official":
            avail = self._available(obs)
            if self.difficulty is None and ((n == 0) & (avail > 0)).any():
                return np.where(avail > 0, np.maximum(n, 1), n).astype(np.int64)
            srch, used = self._official_state(obs)
            if srch.probes:
                out = n.copy()
                out[srch.probes] = self.window
                return out.astype(np.int64)
            nxt = np.minimum(n + 1, avail)
            return np.where(used > 0, n, np.where(srch.easy, np.maximum(n, 1), nxt)).astype(np.int64)
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
        """Official: first sample if easy, else the majority of the ASC prefix; window:
        majority vote over what was drawn."""
        if self.variant == "official":
            _, used = self._official_state(obs)
            n = obs.n_drawn
            used = np.where(used > 0, used, n)
            m = np.asarray(obs.mask, bool) & (np.arange(obs.mask.shape[1])[None, :] < used[:, None])
            return majority_index(m, obs.answer_ids)
        return majority_index(obs.mask, obs.answer_ids)
