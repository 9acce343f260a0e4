"""Selection rules: which drawn sample a policy keeps. The one home of Best-of-N and voting.

Every rule works on all questions at once; Best-of-N and majority vote also have a *prefix*
variant that gives the choice for every prefix length in one pass (used by the sweep and
the synthetic twin's calibration curves). None of them assumes anything about how answer classes are numbered: ties go to
the class whose first sample was drawn first, found from sample positions, so a pool whose
rows were re-ordered (:meth:`optscale_jax.pool.Pool.reorder`) votes the same way as one
whose classes are numbered by first appearance.
"""

from __future__ import annotations

import numpy as np

__all__ = [
    "answer_counts",
    "best_of_n_index",
    "majority_index",
    "prefix_best_of_n_index",
    "prefix_majority_index",
    "weighted_vote_index",
]


def _best_of_n_key(scores: np.ndarray, mask: np.ndarray, selectable: np.ndarray | None) -> np.ndarray:
    s = np.asarray(scores, dtype=np.float64)
    m = np.asarray(mask, dtype=bool)
    ok = m if selectable is None else m & np.asarray(selectable, dtype=bool)
    # Scores live in [0, 1]: shifting empty completions down by 2 ranks them below
    # every other drawn sample while keeping their own order.
    return np.where(ok, s, np.where(m, s - 2.0, -np.inf))


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
    return np.argmax(_best_of_n_key(scores, mask, selectable), axis=1).astype(np.int64)


def prefix_best_of_n_index(
    scores: np.ndarray, mask: np.ndarray, selectable: np.ndarray | None = None
) -> np.ndarray:
    """:func:`best_of_n_index` for every prefix length at once.

    Args:
        scores: ``(Q, N)`` scores.
        mask: ``(Q, N)`` samples present (prefix-contiguous).
        selectable: ``(Q, N)`` non-empty completions; default all.

    Returns:
        ``(Q, N)`` int64: column ``L - 1`` is the Best-of-N index among the first ``L``
        samples.

    Examples:
        >>> prefix_best_of_n_index(np.array([[0.2, 0.9, 0.9]]), np.ones((1, 3), bool)).tolist()
        [[0, 1, 1]]
    """
    key = _best_of_n_key(scores, mask, selectable)
    q, n = key.shape
    out = np.zeros((q, n), dtype=np.int64)
    best = np.full(q, -np.inf)
    idx = np.zeros(q, dtype=np.int64)
    for j in range(n):
        better = key[:, j] > best  # strict: ties keep the first drawn
        best = np.where(better, key[:, j], best)
        idx = np.where(better, j, idx)
        out[:, j] = idx
    return out


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
    # Each sample's class, named by its first position; one bincount over (row, class)
    # sums the weights in drawing order: O(Q N log N) time, O(Q N) memory (no (Q, N, N)).
    q, n = m.shape
    first = _first_of_class(valid, ids)
    idx = (np.arange(q)[:, None] * (n + 1) + first).reshape(-1)
    totals = np.bincount(idx, weights=w.reshape(-1), minlength=q * (n + 1))
    return np.where(valid, totals[idx].reshape(q, n), 0.0)


def _first_of_class(valid: np.ndarray, ids: np.ndarray) -> np.ndarray:
    """``(Q, N)`` position of the first sample of each sample's class in its row; N where
    the sample does not vote.

    A class is named by where it first appears, which both removes any assumption on the
    numbering and gives the tie rule (the earlier first appearance wins). A stable sort of
    each row puts a class's earliest sample first in its run: O(Q N log N) time, O(Q N)
    memory.
    """
    q, n = ids.shape
    if ids.dtype.kind not in "iub":  # float or other labels: equal labels, equal class
        ids = np.unique(ids, return_inverse=True)[1].reshape(q, n)
    rows = np.arange(q)[:, None]
    cols = np.arange(n)[None, :]
    key = np.where(valid, ids.astype(np.int64), np.iinfo(np.int64).min)  # no answer: one run, ignored
    order = np.argsort(key, axis=1, kind="stable")
    srt = key[rows, order]
    start = np.ones((q, n), dtype=bool)
    start[:, 1:] = srt[:, 1:] != srt[:, :-1]
    run = np.maximum.accumulate(np.where(start, cols, 0), axis=1)  # sorted index of the run start
    first = np.empty((q, n), dtype=np.int64)
    first[rows, order] = order[rows, run]
    return np.where(valid, first, n)


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
    # Every sample of the winning class carries the same count; argmax returns the
    # first of them, which is the first drawn sample of the earliest tied class.
    return np.argmax(counts, axis=1).astype(np.int64)


def prefix_majority_index(mask: np.ndarray, answer_ids: np.ndarray) -> np.ndarray:
    """:func:`majority_index` for every prefix length at once.

    Args:
        mask: ``(Q, N)`` samples present (prefix-contiguous).
        answer_ids: ``(Q, N)`` answer classes, -1 = no answer (does not vote); any
            numbering (the tie rule looks at positions, not at class numbers).

    Returns:
        ``(Q, N)`` int64: column ``L - 1`` is the majority choice among the first ``L``
        samples (0 where none of them has an answer).

    Examples:
        >>> prefix_majority_index(np.ones((1, 4), bool), np.array([[7, 2, 2, 7]])).tolist()
        [[0, 0, 1, 0]]
    """
    m = np.asarray(mask, dtype=bool)
    ids = np.asarray(answer_ids)
    q, n = ids.shape
    valid = m & (ids >= 0)
    first = _first_of_class(valid, ids)  # (Q, N); n = no class
    # Votes column by column: only the class of sample j gains a vote, so it either takes
    # the lead (more votes, or as many and an earlier first appearance) or the leader stays.
    counts = np.zeros((q, n + 1), dtype=np.int64)
    win = np.zeros(q, dtype=np.int64)
    best = np.zeros(q, dtype=np.int64)
    out = np.zeros((q, n), dtype=np.int64)
    r = np.arange(q)
    for j in range(n):
        c = first[:, j]
        ok = c < n
        counts[r[ok], c[ok]] += 1
        got = counts[r, c]
        lead = ok & ((got > best) | ((got == best) & (c < win)))
        win = np.where(lead, c, win)
        best = np.where(lead, got, best)
        out[:, j] = win
    return out


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
