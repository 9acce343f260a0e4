"""The policy interface and the vectorised selection rules every policy shares.

A *policy* decides, for every question at once, how many samples it wants so far
(:meth:`Policy.want`) and which drawn sample it keeps (:meth:`Policy.select`).
It sees only the drawn prefix of each row, as an :class:`Observed`.

Round semantics (used by :func:`optscale_jax.replay.replay` and meant for any live
loop): ``want`` is re-evaluated every round on everything drawn so far; a question
whose ``want`` is ``<=`` what it has drawn draws nothing this round. The run ends at
the first round in which no question wants more than it has. A question may therefore
*wait* (ask for what it has) while others progress and resume later; policies whose
rule only looks at their own row (all but DSC) never do. ``want`` is clipped to the
policy's ``n_max`` and to the samples a pool row holds.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol, runtime_checkable

import numpy as np

__all__ = [
    "Observed",
    "Policy",
    "best_of_n_index",
    "majority_index",
    "weighted_vote_index",
    "answer_counts",
]


@dataclass
class Observed:
    """What a policy may look at: the drawn prefix of every row.

    Attributes:
        scores: ``(Q, N)`` float aggregated PRM scores (0 where not drawn).
        mask: ``(Q, N)`` bool, True = drawn; rows are prefix-contiguous.
        answer_ids: ``(Q, N)`` int32 answer class per question, -1 = no answer.
        tokens: ``(Q, N)`` int completion tokens.
        selectable: ``(Q, N)`` bool, drawn samples that may be chosen (False for an
            empty completion, which DESIGN.md says is never selected); None = all drawn.
        available: ``(Q,)`` int, the most samples each question can ever draw (a pool
            row's length capped at ``n_max``); None = unknown (a live run: unlimited).
            Lets a rule that needs a fixed number of samples (DSC's probe) see that a
            row holds fewer.

    In the answer classes ``answer_ids`` a replay passes, "no answer" is a class of its
    own under the authors' vote rule (it votes and can win) and -1 (never votes) under
    the math-verify rule; see :func:`optscale_jax.grading.vote_classes`.
    """

    scores: np.ndarray
    mask: np.ndarray
    answer_ids: np.ndarray
    tokens: np.ndarray
    selectable: np.ndarray | None = None
    available: np.ndarray | None = None

    @property
    def n_drawn(self) -> np.ndarray:
        """``(Q,)`` int64 number of drawn samples per question."""
        return self.mask.sum(axis=1).astype(np.int64)


@runtime_checkable
class Policy(Protocol):
    """A stopping + selection rule, vectorised over questions.

    Attributes:
        name: short label used in reports (e.g. ``"BoN"``, ``"OptScale0-oneshot"``).
        n_max: most samples the policy ever wants per question.
    """

    name: str
    n_max: int

    def want(self, obs: Observed) -> np.ndarray:
        """``(Q,)`` int: total samples wanted so far; ``<=`` drawn means stop (or wait)."""
        ...

    def select(self, obs: Observed) -> np.ndarray:
        """``(Q,)`` int index of the chosen drawn sample."""
        ...


def best_of_n_index(scores: np.ndarray, mask: np.ndarray, selectable: np.ndarray | None = None) -> np.ndarray:
    """Best-of-N choice over the drawn samples of every row (the authors' ``bon.py`` rule).

    The highest score among drawn, selectable samples, whether or not an answer could
    be extracted (an unanswered pick simply counts as wrong); an empty completion
    (``selectable`` False) is chosen only when every drawn sample is empty. Ties go to
    the first drawn. A row with nothing drawn gets index 0.

    Args:
        scores: ``(Q, N)`` scores.
        mask: ``(Q, N)`` drawn mask.
        selectable: ``(Q, N)`` non-empty completions; default all.

    Returns:
        ``(Q,)`` int64 sample index.

    Examples:
        >>> best_of_n_index(np.array([[0.2, 0.9, 0.9]]), np.ones((1, 3), bool),
        ...                 np.array([[True, False, True]])).tolist()
        [2]
    """
    s = np.asarray(scores, dtype=np.float64)
    m = np.asarray(mask, dtype=bool)
    ok = m if selectable is None else m & np.asarray(selectable, dtype=bool)
    # Scores live in [0, 1]: shifting empty completions down by 2 ranks them below
    # every other drawn sample while keeping their own order.
    key = np.where(ok, s, np.where(m, s - 2.0, -np.inf))
    return np.argmax(key, axis=1).astype(np.int64)


def answer_counts(mask: np.ndarray, answer_ids: np.ndarray, weights: np.ndarray | None = None) -> np.ndarray:
    """Votes for each drawn sample's answer: ``(Q, N)`` total weight of its answer class.

    ``out[q, j] = sum_k weights[q, k] * [k drawn, ids[q, k] == ids[q, j] >= 0]``; 0 for
    samples that are not drawn or carry no answer.

    Args:
        mask: ``(Q, N)`` drawn mask.
        answer_ids: ``(Q, N)`` answer classes, -1 = no answer.
        weights: ``(Q, N)`` weight per sample (default 1).

    Returns:
        ``(Q, N)`` float64 votes.
    """
    m = np.asarray(mask, dtype=bool)
    ids = np.asarray(answer_ids)
    valid = m & (ids >= 0)
    w = np.ones(m.shape) if weights is None else np.asarray(weights, dtype=np.float64)
    w = np.where(valid, w, 0.0)
    same = (ids[:, :, None] == ids[:, None, :]) & valid[:, :, None] & valid[:, None, :]
    return np.einsum("qjk,qk->qj", same, w)


def majority_index(mask: np.ndarray, answer_ids: np.ndarray) -> np.ndarray:
    """Self-consistency choice: the first drawn sample of the most frequent answer.

    Tie rule: among answers with equal counts, the one drawn first wins (the sample
    returned is that answer's first occurrence). Samples without an answer never vote;
    a row where no drawn sample has an answer returns its first sample (index 0).

    Args:
        mask: ``(Q, N)`` drawn mask.
        answer_ids: ``(Q, N)`` answer classes, -1 = no answer.

    Returns:
        ``(Q,)`` int64 sample index.

    Examples:
        >>> majority_index(np.ones((1, 4), bool), np.array([[3, 5, 5, 3]])).tolist()
        [0]
    """
    counts = answer_counts(mask, answer_ids)
    return np.argmax(counts, axis=1).astype(np.int64)


def weighted_vote_index(scores: np.ndarray, mask: np.ndarray, answer_ids: np.ndarray) -> np.ndarray:
    """Score-weighted voting: the answer with the largest sum of scores wins.

    Returns the first drawn sample of the winning answer; ties (equal sums) go to the
    answer drawn first. Rows with no answered sample return index 0.

    Args:
        scores: ``(Q, N)`` scores (the vote weights).
        mask: ``(Q, N)`` drawn mask.
        answer_ids: ``(Q, N)`` answer classes, -1 = no answer.

    Returns:
        ``(Q,)`` int64 sample index.
    """
    votes = answer_counts(mask, answer_ids, weights=scores)
    has = np.asarray(mask, bool) & (np.asarray(answer_ids) >= 0)
    # Every sample of the winning class carries the same total; argmax returns the
    # first of them, which is the class's first occurrence. Exact float ties between
    # classes are rare; they also resolve to the earliest class.
    key = np.where(has, votes, -1.0)
    return np.argmax(key, axis=1).astype(np.int64)
