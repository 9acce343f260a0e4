"""Completion pools: the frozen container of scored samples and its transforms.

A *pool* holds, for Q questions, up to N pre-generated completions each, in the
order a run would have drawn them. Ragged pools are padded; ``mask`` says which
entries are real samples and every row is prefix-contiguous (the real samples of
a row come first), so "the first n drawn samples" is always ``[:, :n]``.

Empty completions. A real sample whose completion text is empty (the generator
produced nothing) stays in the pool (``mask`` True: it was drawn and its tokens
were paid for) but is marked in :attr:`Pool.empty`; it keeps its stored PRM score
(the authors' scorer gives an empty completion a real score and their fits use it),
its answer is ``None``, its answer class -1 and it is never correct. Selection rules
must never pick it: use :attr:`Pool.selectable` (``mask & ~empty``).

Files (the authors' JSON, search-and-learn JSONL, Parquet, prompts) are read and
written by :mod:`optscale_jax.io`; answers are graded by :mod:`optscale_jax.grading`.
This module imports neither.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

__all__ = ["Pool"]


def _fmt_qid(question_ids: Sequence[str] | None, row: int) -> str:
    if question_ids is not None and 0 <= row < len(question_ids):
        return f"question {question_ids[row]!r} (row {row})"
    return f"row {row}"


@dataclass(frozen=True, eq=False)
class Pool:
    """Scored completions over ``Q`` questions x ``N`` samples.

    Attributes:
        scores: ``(Q, N)`` float64 aggregated PRM score in [0, 1]; 0 where ``mask`` is False.
        mask: ``(Q, N)`` bool, True for a real sample; rows are prefix-contiguous.
        tokens: ``(Q, N)`` int64 completion tokens (0 where masked).
        answers: ``(Q, N)`` object array of extracted final-answer strings, or ``None``.
        answer_ids: ``(Q, N)`` int32 answer equivalence class within each question;
            -1 = no answer, masked, or not graded yet.
        correct: ``(Q, N)`` bool, True when the answer matches the gold answer.
        question_ids: ``Q`` question identifiers (unique).
        dataset: dataset name, e.g. ``"math500"`` or ``"math500 (synthetic)"``.
        prompts: ``Q`` question texts, or ``None``.
        gold: ``Q`` gold answers, or ``None``.
        step_scores: ragged per-step PRM scores ``[question][sample][step]`` for the real
            samples of each row, or ``None``.
        synthetic: True for the built-in synthetic twin; every output must label it.
        empty: ``(Q, N)`` bool, True for a real sample whose completion was empty
            (never selectable; its stored score is kept and enters the fits). ``None`` on
            construction means no empty completions.
        metadata: free-form JSON-serialisable information (source file, aggregation...).

    A pool is frozen: fields cannot be reassigned; :meth:`replace` (no validation, for
    values already in normal form) and ``dataclasses.replace`` (validates) make
    changed copies. The arrays may be shared between a pool and the pools made from it
    by :meth:`replace`, :meth:`truncate` etc.: treat them as read-only.

    Construction (``Pool(...)``, :meth:`from_arrays`, ``dataclasses.replace``) validates
    shapes, the prefix-contiguous mask, and that every real score is finite and in
    [0, 1]; errors name the question id and sample index. Entries outside ``mask`` are
    normalised (score 0, tokens 0, answer ``None``, class -1, not correct). The
    transforms (:meth:`subset`, :meth:`truncate`, :meth:`reorder`, :meth:`permuted`)
    keep a valid pool valid and do not validate again.

    Examples:
        >>> pool = Pool.from_arrays([[0.9, 0.2], [0.5]], correct=[[True, False], [True]])
        >>> pool.n_questions, pool.n_max, pool.n_samples.tolist()
        (2, 2, [2, 1])
    """

    scores: np.ndarray
    mask: np.ndarray
    tokens: np.ndarray
    answers: np.ndarray
    answer_ids: np.ndarray
    correct: np.ndarray
    question_ids: list[str]
    dataset: str
    prompts: list[str] | None
    gold: list[str] | None
    step_scores: list[list[list[float]]] | None
    synthetic: bool = False
    empty: np.ndarray | None = None
    metadata: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        def put(name: str, value: Any) -> None:  # the one place a frozen pool is written
            object.__setattr__(self, name, value)

        mask = np.asarray(self.mask)
        if mask.ndim != 2:
            raise ValueError(f"Pool.mask must be 2-D (questions x samples), got shape {mask.shape}")
        if mask.dtype != bool:
            if not np.isin(mask, (0, 1)).all():
                raise ValueError("Pool.mask must be boolean (or 0/1)")
            mask = mask.astype(bool)
        q, n = mask.shape
        put("question_ids", [str(x) for x in self.question_ids])
        if len(self.question_ids) != q:
            raise ValueError(
                f"Pool.question_ids has {len(self.question_ids)} entries, arrays have {q} rows"
            )
        seen: dict[str, int] = {}
        for i, qid in enumerate(self.question_ids):
            if qid in seen:
                raise ValueError(
                    f"Pool.question_ids: duplicate id {qid!r} at rows {seen[qid]} and {i}"
                )
            seen[qid] = i

        def arr(name: str, value: Any, dtype: Any) -> np.ndarray:
            a = np.asarray(value)
            if a.shape != (q, n):
                raise ValueError(f"Pool.{name} has shape {a.shape}, Pool.mask has shape {(q, n)}")
            return a

        # Prefix-contiguous rows: once a row turns False it stays False.
        if n > 1:
            bad = mask[:, 1:] & ~mask[:, :-1]
            if bad.any():
                i, j = np.argwhere(bad)[0]
                raise ValueError(
                    f"Pool.mask is not prefix-contiguous at {_fmt_qid(self.question_ids, i)}: "
                    f"sample {j + 1} is present but sample {j} is missing"
                )

        scores = arr("scores", self.scores, float)
        if not np.issubdtype(scores.dtype, np.number) or np.issubdtype(scores.dtype, np.complexfloating):
            raise ValueError(f"Pool.scores must be real numbers, got dtype {scores.dtype}")
        scores = scores.astype(np.float64, copy=True)
        real = scores[mask]
        badv = ~np.isfinite(real) | (real < 0.0) | (real > 1.0)
        if badv.any():
            i, j = np.argwhere(mask)[np.flatnonzero(badv)[0]]
            raise ValueError(
                f"Pool.scores: {_fmt_qid(self.question_ids, i)}, sample {j}: score "
                f"{float(scores[i, j])!r} is not a finite number in [0, 1]"
            )
        scores[~mask] = 0.0

        tokens = arr("tokens", self.tokens, np.int64)
        if tokens.size and not np.issubdtype(tokens.dtype, np.integer):
            tf = tokens.astype(np.float64)
            if not (np.isfinite(tf[mask]).all() and (tf[mask] == np.round(tf[mask])).all()):
                i, j = np.argwhere(mask & ~(np.isfinite(tf) & (tf == np.round(tf))))[0]
                raise ValueError(
                    f"Pool.tokens: {_fmt_qid(self.question_ids, i)}, sample {j}: "
                    f"token count {tokens[i, j]!r} is not an integer"
                )
            tokens = np.where(mask, tf, 0)
        tokens = tokens.astype(np.int64, copy=True)
        if (tokens[mask] < 0).any():
            i, j = np.argwhere(mask & (tokens < 0))[0]
            raise ValueError(
                f"Pool.tokens: {_fmt_qid(self.question_ids, i)}, sample {j}: negative token count"
            )
        tokens[~mask] = 0

        answers = np.empty((q, n), dtype=object)
        a_in = arr("answers", self.answers, object)
        answers[...] = a_in
        answers[~mask] = None
        for i, j in zip(*np.nonzero(mask), strict=True):
            if answers[i, j] is not None and not isinstance(answers[i, j], str):
                answers[i, j] = str(answers[i, j])

        answer_ids = arr("answer_ids", self.answer_ids, np.int32).astype(np.int32, copy=True)
        if (answer_ids < -1).any():
            i, j = np.argwhere(answer_ids < -1)[0]
            raise ValueError(
                f"Pool.answer_ids: {_fmt_qid(self.question_ids, i)}, sample {j}: "
                f"class id {answer_ids[i, j]} < -1"
            )
        answer_ids[~mask] = -1

        correct = arr("correct", self.correct, bool)
        if correct.dtype != bool:
            if not np.isin(correct, (0, 1)).all():
                raise ValueError("Pool.correct must be boolean (or 0/1)")
        correct = correct.astype(bool, copy=True)
        correct[~mask] = False

        if self.empty is None:
            empty = np.zeros((q, n), dtype=bool)
        else:
            empty = arr("empty", self.empty, bool).astype(bool, copy=True)
        empty &= mask
        # An empty completion keeps its stored score (fits use it, as the authors' do);
        # it has no answer and is never selected (see ``selectable``).
        answers[empty] = None
        answer_ids[empty] = -1
        correct[empty] = False

        for name in ("prompts", "gold"):
            value = getattr(self, name)
            if value is not None:
                value = [None if v is None else str(v) for v in value]
                if len(value) != q:
                    raise ValueError(f"Pool.{name} has {len(value)} entries, arrays have {q} rows")
                put(name, value)

        if self.step_scores is not None:
            if len(self.step_scores) != q:
                raise ValueError(
                    f"Pool.step_scores has {len(self.step_scores)} rows, arrays have {q} rows"
                )
            counts = mask.sum(axis=1)
            steps: list[list[list[float]]] = []
            for i, row in enumerate(self.step_scores):
                if len(row) != counts[i]:
                    raise ValueError(
                        f"Pool.step_scores: {_fmt_qid(self.question_ids, i)} has {len(row)} "
                        f"samples of step scores, mask has {counts[i]}"
                    )
                steps.append([[float(s) for s in sample] for sample in row])
            put("step_scores", steps)

        put("mask", mask)
        put("scores", scores)
        put("tokens", tokens)
        put("answers", answers)
        put("answer_ids", answer_ids)
        put("correct", correct)
        put("empty", empty)
        put("dataset", str(self.dataset))
        put("synthetic", bool(self.synthetic))
        put("metadata", dict(self.metadata))

    # ------------------------------------------------------------------ shape
    @property
    def n_questions(self) -> int:
        """Number of questions ``Q``."""
        return int(self.mask.shape[0])

    @property
    def n_max(self) -> int:
        """Padded number of samples per question ``N``."""
        return int(self.mask.shape[1])

    @property
    def n_samples(self) -> np.ndarray:
        """``(Q,)`` int number of real samples per question."""
        return self.mask.sum(axis=1).astype(np.int64)

    @property
    def selectable(self) -> np.ndarray:
        """``(Q, N)`` bool: real samples with a non-empty completion (may be selected)."""
        return self.mask & ~self.empty

    @property
    def label(self) -> str:
        """Dataset name for outputs; always says "synthetic" for the synthetic twin."""
        if self.synthetic and "synthetic" not in self.dataset.lower():
            return f"{self.dataset} (synthetic)"
        return self.dataset

    # ------------------------------------------------------------ transforms
    def replace(self, **changes: Any) -> Pool:
        """A copy with some fields changed, **without** validation.

        For values already in the pool's normal form (arrays of the right shape and
        dtype, lists of strings, a consistent ``mask``), e.g. a graded ``correct`` array
        or a new ``dataset`` name; the transforms use it. To validate and normalise new
        values, use ``dataclasses.replace(pool, **changes)`` (which runs the checks of
        construction). Unchanged fields are shared with this pool, except ``metadata``,
        which is copied (so the copy's metadata can be edited on its own).

        Args:
            **changes: field names and their new values.

        Returns:
            The new pool.

        Examples:
            >>> pool = Pool.from_arrays([[0.5]], dataset="toy")
            >>> pool.replace(dataset="toy-2").dataset, pool.dataset
            ('toy-2', 'toy')
        """
        unknown = changes.keys() - _FIELD_NAMES
        if unknown:
            raise TypeError(f"Pool.replace: unknown field(s) {sorted(unknown)}; fields are {_FIELD_NAMES_SORTED}")
        new = object.__new__(type(self))
        values = {name: getattr(self, name) for name in _FIELD_NAMES}
        values["metadata"] = dict(self.metadata)
        values.update(changes)
        for name, value in values.items():
            object.__setattr__(new, name, value)
        return new

    def subset(self, rows: Sequence[int] | np.ndarray) -> Pool:
        """Pool restricted to some questions.

        Args:
            rows: integer row indices (any order, no repeats) or a ``(Q,)`` boolean mask.

        Returns:
            A new pool with those rows, in the given order.

        Examples:
            >>> pool = Pool.from_arrays([[0.1], [0.2], [0.3]])
            >>> pool.subset([2, 0]).question_ids
            ['2', '0']
        """
        idx = np.asarray(rows)
        if idx.dtype == bool:
            if idx.shape != (self.n_questions,):
                raise ValueError(
                    f"subset: boolean rows must have shape ({self.n_questions},), got {idx.shape}"
                )
            idx = np.flatnonzero(idx)
        idx = idx.astype(np.int64).reshape(-1)
        if idx.size and (idx.min() < -self.n_questions or idx.max() >= self.n_questions):
            raise IndexError(f"subset: row index out of range for {self.n_questions} questions")
        idx = np.where(idx < 0, idx + self.n_questions, idx)
        first = np.full(self.n_questions, -1, dtype=np.int64)
        for k, i in enumerate(idx.tolist()):  # rows must be distinct (ids stay unique)
            if first[i] >= 0:
                raise ValueError(
                    f"Pool.question_ids: duplicate id {self.question_ids[i]!r} at rows "
                    f"{first[i]} and {k}"
                )
            first[i] = k
        pick = lambda xs: None if xs is None else [xs[i] for i in idx]  # noqa: E731
        return self.replace(
            scores=self.scores[idx],
            mask=self.mask[idx],
            tokens=self.tokens[idx],
            answers=self.answers[idx],
            answer_ids=self.answer_ids[idx],
            correct=self.correct[idx],
            empty=self.empty[idx],
            question_ids=pick(self.question_ids),
            prompts=pick(self.prompts),
            gold=pick(self.gold),
            step_scores=pick(self.step_scores),
        )

    def truncate(self, n: int) -> Pool:
        """Keep only the first ``n`` samples of every row (the first ``n`` drawn).

        Args:
            n: number of samples to keep, ``0 <= n``; values above ``n_max`` keep all.

        Returns:
            A pool with ``n_max == min(n, self.n_max)``.
        """
        n = int(n)
        if n < 0:
            raise ValueError(f"truncate: n must be >= 0, got {n}")
        n = min(n, self.n_max)
        steps = None
        if self.step_scores is not None:
            steps = [row[:n] for row in self.step_scores]
        return self.replace(
            scores=self.scores[:, :n],
            mask=self.mask[:, :n],
            tokens=self.tokens[:, :n],
            answers=self.answers[:, :n],
            answer_ids=self.answer_ids[:, :n],
            correct=self.correct[:, :n],
            empty=self.empty[:, :n],
            step_scores=steps,
        )

    def reorder(self, order: np.ndarray) -> Pool:
        """Apply a per-row permutation of the real samples.

        Args:
            order: ``(Q, N)`` int; row ``i`` must be a permutation of ``0..N-1`` that maps
                real samples onto the first ``n_samples[i]`` positions (new sample ``j`` of
                row ``i`` is old sample ``order[i, j]``).

        Returns:
            The re-ordered pool (mask unchanged, so still prefix-contiguous).
        """
        order = np.asarray(order, dtype=np.int64)
        if order.shape != self.mask.shape:
            raise ValueError(f"reorder: order has shape {order.shape}, pool {self.mask.shape}")
        if not (np.sort(order, axis=1) == np.arange(self.n_max)).all():
            raise ValueError("reorder: every row of order must be a permutation of 0..N-1")
        if not np.take_along_axis(self.mask, order, axis=1)[self.mask].all():
            raise ValueError("reorder: order moves padding into the real samples of a row")
        take = lambda a: np.take_along_axis(a, order, axis=1)  # noqa: E731
        steps = None
        if self.step_scores is not None:
            counts = self.n_samples
            steps = [
                [self.step_scores[i][k] for k in order[i, : counts[i]]]
                for i in range(self.n_questions)
            ]
        return self.replace(
            scores=take(self.scores),
            tokens=take(self.tokens),
            answers=take(self.answers),
            answer_ids=take(self.answer_ids),
            correct=take(self.correct),
            empty=take(self.empty),
            step_scores=steps,
        )

    def permutation_orders(
        self, seed_or_rng: int | np.random.Generator, n_perms: int
    ) -> np.ndarray:
        """Random per-row orders of the real samples (padding stays at the end).

        Args:
            seed_or_rng: seed or numpy ``Generator``.
            n_perms: number of independent re-orderings.

        Returns:
            ``(n_perms, Q, N)`` int64 orders usable with :meth:`reorder`.
        """
        rng = np.random.default_rng(seed_or_rng)
        q, n = self.mask.shape
        keys = rng.random((int(n_perms), q, n))
        # Padding gets key 2 so it sorts after every real sample.
        keys = np.where(self.mask[None], keys, 2.0)
        return np.argsort(keys, axis=2, kind="stable").astype(np.int64)

    def permuted(self, seed_or_rng: int | np.random.Generator, n_perms: int = 1) -> list[Pool]:
        """Random re-orderings of each row, to average out drawing order.

        Args:
            seed_or_rng: seed or numpy ``Generator`` (deterministic for a given seed).
            n_perms: number of re-ordered pools to return.

        Returns:
            ``n_perms`` pools; each row holds the same samples in a new random order and
            the mask stays prefix-contiguous.

        Examples:
            >>> pool = Pool.from_arrays([[0.1, 0.2, 0.3]])
            >>> sorted(pool.permuted(0, 2)[1].scores[0].tolist())
            [0.1, 0.2, 0.3]
        """
        return [self.reorder(o) for o in self.permutation_orders(seed_or_rng, n_perms)]

    # ---------------------------------------------------------- construction
    @classmethod
    def from_arrays(
        cls,
        scores: Sequence[Sequence[float]] | np.ndarray,
        *,
        tokens: Sequence[Sequence[int]] | np.ndarray | None = None,
        answers: Sequence[Sequence[str | None]] | np.ndarray | None = None,
        answer_ids: Sequence[Sequence[int]] | np.ndarray | None = None,
        correct: Sequence[Sequence[bool]] | np.ndarray | None = None,
        empty: Sequence[Sequence[bool]] | np.ndarray | None = None,
        question_ids: Sequence[str] | None = None,
        dataset: str = "custom",
        prompts: Sequence[str] | None = None,
        gold: Sequence[str] | None = None,
        step_scores: list[list[list[float]]] | None = None,
        synthetic: bool = False,
        metadata: dict[str, Any] | None = None,
    ) -> Pool:
        """Build a pool from (possibly ragged) per-question lists, padding with a mask.

        Args:
            scores: per question, the scores of its samples in drawing order (rows may
                differ in length). A 2-D array means every row is full.
            tokens: same layout as ``scores``; default 0.
            answers: same layout; default ``None``.
            answer_ids: same layout; default -1.
            correct: same layout; default False.
            empty: same layout; True for empty completions (their scores are kept);
                default False.
            question_ids: default ``"0", "1", ...``.
            dataset: dataset name.
            prompts: question texts.
            gold: gold answers.
            step_scores: ragged step scores (same row lengths as ``scores``).
            synthetic: label the pool as synthetic.
            metadata: free-form information.

        Returns:
            The validated pool.

        Examples:
            >>> Pool.from_arrays([[0.5, 0.7], []]).mask.tolist()
            [[True, True], [False, False]]
        """
        rows = [list(np.asarray(r, dtype=object).reshape(-1)) for r in scores]
        q = len(rows)
        lengths = [len(r) for r in rows]
        n = max(lengths, default=0)
        qids = [str(i) for i in range(q)] if question_ids is None else list(question_ids)
        if len(qids) != q:
            raise ValueError(f"from_arrays: {len(qids)} question_ids for {q} rows of scores")

        def pad(name: str, value: Any, fill: Any, dtype: Any) -> np.ndarray:
            out = np.full((q, n), fill, dtype=dtype)
            if value is None:
                return out
            if len(value) != q:
                raise ValueError(f"from_arrays: {name} has {len(value)} rows, scores has {q}")
            for i, r in enumerate(value):
                r = list(r)
                if len(r) != lengths[i]:
                    raise ValueError(
                        f"from_arrays: {name} row {i} (question {qids[i]!r}) has {len(r)} "
                        f"entries, scores has {lengths[i]}"
                    )
                for j, v in enumerate(r):
                    out[i, j] = v
            return out

        mask = np.zeros((q, n), dtype=bool)
        for i, length in enumerate(lengths):
            mask[i, :length] = True
        s = np.zeros((q, n), dtype=np.float64)
        for i, r in enumerate(rows):
            for j, v in enumerate(r):
                try:
                    s[i, j] = float(v)
                except (TypeError, ValueError):
                    raise ValueError(
                        f"from_arrays: scores of question {qids[i]!r} (row {i}), sample {j}: "
                        f"{v!r} is not a number"
                    ) from None
        return cls(
            scores=s,
            mask=mask,
            tokens=pad("tokens", tokens, 0, np.int64),
            answers=pad("answers", answers, None, object),
            answer_ids=pad("answer_ids", answer_ids, -1, np.int32),
            correct=pad("correct", correct, False, bool),
            question_ids=qids,
            dataset=dataset,
            prompts=None if prompts is None else list(prompts),
            gold=None if gold is None else list(gold),
            step_scores=step_scores,
            synthetic=synthetic,
            empty=pad("empty", empty, False, bool),
            metadata=dict(metadata or {}),
        )

    # ----------------------------------------------------------- comparison
    def equals(self, other: Pool) -> bool:
        """Exact equality of every field (arrays, metadata, step scores, labels).

        Args:
            other: another pool.

        Returns:
            True when both pools hold the same data.
        """
        if not isinstance(other, Pool) or self.mask.shape != other.mask.shape:
            return False
        return all(_field_equal(getattr(self, f), getattr(other, f)) for f in _FIELD_NAMES)


def _field_equal(a: Any, b: Any) -> bool:
    if isinstance(a, np.ndarray) or isinstance(b, np.ndarray):
        if a.dtype == object or b.dtype == object:  # answers: strings and None
            return a.tolist() == b.tolist()
        return np.array_equal(a, b)
    return a == b


#: Pool's fields, in declaration order: the one list :meth:`Pool.replace` and
#: :meth:`Pool.equals` iterate over.
_FIELD_NAMES: tuple[str, ...] = tuple(f.name for f in dataclasses.fields(Pool))
_FIELD_NAMES_SORTED = sorted(_FIELD_NAMES)
