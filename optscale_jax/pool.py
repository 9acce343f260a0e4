"""Completion pools: rectangular arrays of scored samples, plus readers and writers.

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
"""

from __future__ import annotations

import json
import math
import os
import stat
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

__all__ = [
    "AGGREGATIONS",
    "Pool",
    "PoolFormatError",
    "aggregate_step_scores",
    "detect_format",
    "read_official",
    "read_parquet",
    "read_pool",
    "read_prompts",
    "read_search_and_learn",
    "shared_data_dir",
    "write_parquet",
]


def _fmt_qid(question_ids: Sequence[str] | None, row: int) -> str:
    if question_ids is not None and 0 <= row < len(question_ids):
        return f"question {question_ids[row]!r} (row {row})"
    return f"row {row}"


@dataclass(eq=False)
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

    Construction validates shapes, the prefix-contiguous mask, and that every real
    score is finite and in [0, 1]; errors name the question id and sample index.
    Entries outside ``mask`` are normalised (score 0, tokens 0, answer ``None``,
    class -1, not correct).

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
        mask = np.asarray(self.mask)
        if mask.ndim != 2:
            raise ValueError(f"Pool.mask must be 2-D (questions x samples), got shape {mask.shape}")
        if mask.dtype != bool:
            if not np.isin(mask, (0, 1)).all():
                raise ValueError("Pool.mask must be boolean (or 0/1)")
            mask = mask.astype(bool)
        q, n = mask.shape
        self.question_ids = [str(x) for x in self.question_ids]
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
                setattr(self, name, value)

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
            self.step_scores = steps

        self.mask = mask
        self.scores = scores
        self.tokens = tokens
        self.answers = answers
        self.answer_ids = answer_ids
        self.correct = correct
        self.empty = empty
        self.dataset = str(self.dataset)
        self.synthetic = bool(self.synthetic)
        self.metadata = dict(self.metadata)

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
    def _replace(self, **changes: Any) -> Pool:
        fields = {
            "scores": self.scores,
            "mask": self.mask,
            "tokens": self.tokens,
            "answers": self.answers,
            "answer_ids": self.answer_ids,
            "correct": self.correct,
            "question_ids": list(self.question_ids),
            "dataset": self.dataset,
            "prompts": None if self.prompts is None else list(self.prompts),
            "gold": None if self.gold is None else list(self.gold),
            "step_scores": self.step_scores,
            "synthetic": self.synthetic,
            "empty": self.empty,
            "metadata": dict(self.metadata),
        }
        fields.update(changes)
        return Pool(**fields)

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
        pick = lambda xs: None if xs is None else [xs[i] for i in idx]  # noqa: E731
        return self._replace(
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
        return self._replace(
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
        return self._replace(
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
        return (
            np.array_equal(self.mask, other.mask)
            and np.array_equal(self.scores, other.scores)
            and np.array_equal(self.tokens, other.tokens)
            and np.array_equal(self.answer_ids, other.answer_ids)
            and np.array_equal(self.correct, other.correct)
            and np.array_equal(self.empty, other.empty)
            and self.answers.tolist() == other.answers.tolist()
            and self.question_ids == other.question_ids
            and self.dataset == other.dataset
            and self.prompts == other.prompts
            and self.gold == other.gold
            and self.step_scores == other.step_scores
            and self.synthetic == other.synthetic
            and self.metadata == other.metadata
        )


# =====================================================================
# Readers and writers
# =====================================================================

AGGREGATIONS: tuple[str, ...] = ("mean", "last", "min", "product")
"""Ways to turn per-step PRM scores into one score per completion."""

PARQUET_METADATA_KEY = b"optscale_jax.pool"
PARQUET_FORMAT_VERSION = 1


class PoolFormatError(ValueError):
    """A pool or prompts file is malformed; the message names file, record and field.

    Attributes:
        path: the file.
        record: human-readable record locator (``"line 3"``, ``"record 2"``), or ``None``.
        field: the offending field, or ``None``.
    """

    def __init__(self, path: str | Path, record: str | None, field: str | None, message: str):
        self.path = str(path)
        self.record = record
        self.field = field
        where = [self.path]
        if record is not None:
            where.append(record)
        if field is not None:
            where.append(f"field {field!r}")
        super().__init__(f"{': '.join(where)}: {message}")


def aggregate_step_scores(steps: Sequence[float], how: str = "mean") -> float:
    """Aggregate the per-step PRM scores of one completion.

    Args:
        steps: step scores in [0, 1], in order.
        how: ``"mean"`` (the paper and its official code), ``"last"``, ``"min"`` or
            ``"product"``.

    Returns:
        The aggregated score; 0.0 when ``steps`` is empty (as the official scorer does).

    Examples:
        >>> aggregate_step_scores([0.5, 1.0], "mean"), aggregate_step_scores([0.5, 1.0], "product")
        (0.75, 0.5)
    """
    if how not in AGGREGATIONS:
        raise ValueError(f"aggregate must be one of {AGGREGATIONS}, got {how!r}")
    if len(steps) == 0:
        return 0.0
    a = np.asarray(steps, dtype=np.float64)
    if how == "mean":
        return float(a.mean())
    if how == "last":
        return float(a[-1])
    if how == "min":
        return float(a.min())
    return float(np.prod(a))


def shared_data_dir() -> Path | None:
    """Location of the shared real data, if present.

    ``$OPTSCALE_DATA`` when set, else ``../shared/data`` next to the repository or the
    current directory.

    Returns:
        The directory, or ``None`` when it cannot be found.
    """
    env = os.environ.get("OPTSCALE_DATA")
    if env:
        return Path(env) if Path(env).is_dir() else None
    for base in (Path(__file__).resolve().parents[1], Path.cwd()):
        cand = base.parent / "shared" / "data"
        if cand.is_dir():
            return cand
    return None


def _is_number(x: Any) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool)


def _check_unit(path: Path, rec: str, field_name: str, x: Any) -> float:
    try:
        ok = _is_number(x) and math.isfinite(x) and 0.0 <= x <= 1.0
    except OverflowError:  # an integer literal too large for a float (10**400)
        ok = False
    if not ok:
        shown = repr(x) if not isinstance(x, int) or abs(x) < 10**20 else f"an integer of {len(str(abs(x)))} digits"
        raise PoolFormatError(path, rec, field_name, f"{shown} is not a finite number in [0, 1]")
    return float(x)


#: Largest token count a pool holds (int64); beyond it the count cannot be stored.
_MAX_TOKENS = 2**63 - 1


def _check_tokens(path: Path, rec: str, field_name: str, x: Any) -> int:
    if isinstance(x, float) and x.is_integer():
        x = int(x)
    if not isinstance(x, int) or isinstance(x, bool) or x < 0:
        raise PoolFormatError(path, rec, field_name, f"{x!r} is not a non-negative integer")
    if x > _MAX_TOKENS:
        raise PoolFormatError(path, rec, field_name, f"{x:.3g} is not a token count (above 2**63 - 1)")
    return x


def _check_id(path: Path, rec: str, field_name: str, x: Any) -> str:
    """A question id: a non-empty string or an integer (never null, a bool, a list or an object)."""
    if isinstance(x, bool) or not isinstance(x, (str, int)) or (isinstance(x, str) and not x.strip()):
        raise PoolFormatError(path, rec, field_name, f"expected a non-empty string or integer id, got {x!r}")
    return str(x)


def _list_of(path: Path, rec: str, field_name: str, value: Any, what: str) -> list[Any]:
    if not isinstance(value, list):
        raise PoolFormatError(
            path, rec, field_name, f"expected a list of {what}, got {type(value).__name__}"
        )
    return value


def _samples_from_fields(
    path: Path,
    rec: str,
    completions: list[Any],
    scores: list[Any],
    tokens: list[Any],
    last_scores: list[Any] | None,
    aggregate: str,
    names: dict[str, str],
) -> tuple[list[float], list[int], list[str | None], list[bool], list[list[float]] | None]:
    """Validate one question's per-sample fields and aggregate its scores."""
    from optscale_jax.grading import extract_answer

    n = len(completions)
    for key, value in (("scores", scores), ("tokens", tokens), ("last_scores", last_scores)):
        if value is not None and len(value) != n:
            raise PoolFormatError(
                path,
                rec,
                names[key],
                f"has {len(value)} entries but {names['completions']!r} has {n}",
            )
    per_step = [isinstance(s, list) for s in scores]
    if any(per_step) and not all(per_step):
        j = per_step.index(not per_step[0])
        raise PoolFormatError(
            path, rec, f"{names['scores']}[{j}]", "mixes per-step lists and single scores"
        )
    step_scores: list[list[float]] | None = [] if (n and all(per_step)) else None
    out_scores: list[float] = []
    out_tokens: list[int] = []
    answers: list[str | None] = []
    empty: list[bool] = []
    for j in range(n):
        text = completions[j]
        if text is None:
            text = ""
        if not isinstance(text, str):
            raise PoolFormatError(
                path, rec, f"{names['completions']}[{j}]", f"expected a string, got {type(text).__name__}"
            )
        is_empty = not text.strip()
        out_tokens.append(_check_tokens(path, rec, f"{names['tokens']}[{j}]", tokens[j]))
        if step_scores is not None:
            steps = [
                _check_unit(path, rec, f"{names['scores']}[{j}][{k}]", x)
                for k, x in enumerate(scores[j])
            ]
            step_scores.append(steps)
            value = aggregate_step_scores(steps, aggregate)
        else:
            value = _check_unit(path, rec, f"{names['scores']}[{j}]", scores[j])
            if aggregate == "last":
                if last_scores is None:
                    raise PoolFormatError(
                        path,
                        rec,
                        names["last_scores"],
                        "aggregate='last' needs per-step scores or a last_scores field",
                    )
                value = _check_unit(path, rec, f"{names['last_scores']}[{j}]", last_scores[j])
            elif aggregate != "mean":
                raise PoolFormatError(
                    path,
                    rec,
                    names["scores"],
                    f"aggregate={aggregate!r} needs per-step scores; this file has one "
                    "(already averaged) score per completion",
                )
        out_scores.append(value)  # stored score kept for empty completions too
        answers.append(None if is_empty else extract_answer(text))
        empty.append(is_empty)
    return out_scores, out_tokens, answers, empty, step_scores


def _load_json(path: Path) -> Any:
    # utf-8-sig: a byte-order mark at the start (Windows editors write one) is skipped.
    try:
        with open(path, encoding="utf-8-sig") as fh:
            return json.load(fh)
    except json.JSONDecodeError as exc:
        raise PoolFormatError(
            path, f"line {exc.lineno}, column {exc.colno}", None, f"invalid JSON: {exc.msg}"
        ) from None
    except UnicodeDecodeError as exc:  # named here: the pool and the prompts file both come here
        raise PoolFormatError(path, None, None, f"is not UTF-8 text ({exc.reason} at byte {exc.start})") from None
    except RecursionError:
        raise PoolFormatError(path, None, None, "invalid JSON: nested too deeply") from None


def read_prompts(
    path: str | Path, *, prompt_key: str | None = None
) -> tuple[list[str], list[str], list[str]]:
    """Read a benchmark prompts file with gold answers (e.g. ``benchmarks/math500.json``).

    The file is a JSON list of objects with a question (``problem`` or ``question``) and
    an ``answer``. GSM8K-style answers (a worked solution ending in ``#### n``) are reduced
    to ``n``.

    Args:
        path: the JSON file.
        prompt_key: key holding the question text (default: ``problem``, else ``question``).

    Returns:
        ``(ids, prompts, gold)``: ids from ``unique_id``/``id`` when present, else the
        1-based position (the official scorer's convention).

    Raises:
        PoolFormatError: naming the record and field that is missing or malformed.
    """
    from optscale_jax.grading import extract_gold

    path = Path(path)
    data = _load_json(path)
    if not isinstance(data, list):
        raise PoolFormatError(path, None, None, f"expected a JSON list of records, got {type(data).__name__}")
    ids: list[str] = []
    prompts: list[str] = []
    gold: list[str] = []
    for k, item in enumerate(data):
        rec = f"record {k}"
        if not isinstance(item, dict):
            raise PoolFormatError(path, rec, None, f"expected an object, got {type(item).__name__}")
        key = prompt_key or ("problem" if "problem" in item else "question")
        if key not in item or not isinstance(item[key], str):
            raise PoolFormatError(path, rec, key, "missing or not a string")
        if "answer" not in item or item["answer"] is None:
            raise PoolFormatError(path, rec, "answer", "missing gold answer")
        ans = item["answer"]
        if not isinstance(ans, (str, int, float)) or isinstance(ans, bool):
            raise PoolFormatError(path, rec, "answer", f"expected a string or number, got {type(ans).__name__}")
        if isinstance(ans, float) and not math.isfinite(ans):
            raise PoolFormatError(path, rec, "answer", f"{ans!r} is not a gold answer (expected a string or finite number)")
        qid = item.get("unique_id", item.get("id", k + 1))
        ids.append(str(qid))
        prompts.append(item[key])
        gold.append(extract_gold(str(ans)))
    return ids, prompts, gold


def _unwrap(path: Path, rec: str, field_name: str, value: Any, wrapped: bool) -> Any:
    """The official format wraps each per-sample list in a one-element batch list."""
    if value is None or not wrapped:
        return value
    if not isinstance(value, list) or len(value) != 1 or not isinstance(value[0], list):
        raise PoolFormatError(
            path,
            rec,
            field_name,
            "expected a one-element batch list [[...]] like 'completions'",
        )
    return value[0]


def read_official(
    path: str | Path,
    prompts: str | Path | None = None,
    *,
    dataset: str | None = None,
    aggregate: str = "mean",
    prompt_key: str | None = None,
) -> Pool:
    """Read a pool in the official OptScale format.

    The file is a JSON list with one record per question::

        {"id": 1, "score": {"completions": [[c_1, ..., c_n]],
                            "scores": [[s_1, ..., s_n]],          # mean step score each
                            "last_scores": [[l_1, ..., l_n]],     # optional
                            "completion_tokens": [[t_1, ..., t_n]],
                            "problem": [text]}}                   # optional

    Every per-sample field is wrapped in a one-element batch list (as the official
    scorer writes it); unwrapped lists are accepted too. ``scores`` may hold one
    aggregated score per completion (the official files: the mean of the step scores)
    or a list of step scores per completion; with single scores only ``aggregate="mean"``
    (use them as they are) and ``"last"`` (use ``last_scores``) are possible.

    Args:
        path: the pool file.
        prompts: optional prompts file with gold answers (see :func:`read_prompts`).
            Record k is matched with entry k, by position, as the authors' evaluation
            does (``bon.py``); the pool may cover a prefix of the prompts. Ids are
            informational; integer ids must count from 0 or from 1 in record order, and
            a record's ``problem`` text, when present, must equal its entry's.
        dataset: dataset name (default: the prompts file's stem, else the pool's).
        aggregate: step-score aggregation, one of :data:`AGGREGATIONS`.
        prompt_key: key of the question text in the prompts file.

    Returns:
        The pool (answers extracted, not graded: call :func:`optscale_jax.grading.grade_pool`).

    Raises:
        PoolFormatError: naming the file, record and field that is malformed, including a
            record whose id or ``problem`` contradicts its position (never a silent shift).
    """
    if aggregate not in AGGREGATIONS:
        raise ValueError(f"aggregate must be one of {AGGREGATIONS}, got {aggregate!r}")
    path = Path(path)
    data = _load_json(path)
    if not isinstance(data, list):
        raise PoolFormatError(path, None, None, f"expected a JSON list of records, got {type(data).__name__}")
    p_ids = p_texts = p_gold = None
    if prompts is not None:
        p_ids, p_texts, p_gold = read_prompts(prompts, prompt_key=prompt_key)
        if len(data) > len(p_texts):
            raise PoolFormatError(
                path, None, None, f"has {len(data)} records but prompts file {prompts} has {len(p_texts)}"
            )
    qids: list[str] = []
    texts: list[str | None] = []
    gold: list[str | None] = []
    cols: dict[str, list[Any]] = {"scores": [], "tokens": [], "answers": [], "empty": [], "steps": []}
    # Records are matched to prompts by position, as the authors' evaluation does; ids are
    # informational (their scorer writes position + 1), but integer ids must agree with it.
    id_offset: tuple[int, int] | None = None  # (offset, first record with an integer id)
    seen_ids: dict[str, int] = {}
    for k, item in enumerate(data):
        rec = f"record {k}"
        if not isinstance(item, dict):
            raise PoolFormatError(path, rec, None, f"expected an object, got {type(item).__name__}")
        if "id" not in item:
            raise PoolFormatError(path, rec, "id", "missing")
        qid = item["id"]
        _check_id(path, rec, "id", qid)
        rec = f"record {k} (id {qid!r})"
        sc = item.get("score")
        if not isinstance(sc, dict):
            raise PoolFormatError(path, rec, "score", "missing or not an object")
        for key in ("completions", "scores", "completion_tokens"):
            if key not in sc:
                raise PoolFormatError(path, rec, f"score.{key}", "missing")
        comp = _list_of(path, rec, "score.completions", sc["completions"], "completions")
        wrapped = len(comp) == 1 and isinstance(comp[0], list)
        comp = _unwrap(path, rec, "score.completions", comp, wrapped)
        scores = _list_of(path, rec, "score.scores", _unwrap(path, rec, "score.scores", sc["scores"], wrapped), "scores")
        toks = _list_of(
            path,
            rec,
            "score.completion_tokens",
            _unwrap(path, rec, "score.completion_tokens", sc["completion_tokens"], wrapped),
            "token counts",
        )
        last = sc.get("last_scores")
        if last is not None:
            last = _list_of(path, rec, "score.last_scores", _unwrap(path, rec, "score.last_scores", last, wrapped), "scores")
        s, t, a, e, steps = _samples_from_fields(
            path,
            rec,
            comp,
            scores,
            toks,
            last,
            aggregate,
            {
                "completions": "score.completions",
                "scores": "score.scores",
                "tokens": "score.completion_tokens",
                "last_scores": "score.last_scores",
            },
        )
        if isinstance(qid, int) and not isinstance(qid, bool):
            if id_offset is None:
                if qid - k not in (0, 1):
                    raise PoolFormatError(
                        path, rec, "id",
                        f"id {qid} contradicts the record's position {k}: records are matched to "
                        "prompts by position, so ids must count from 0 (id = position) or from 1 "
                        "(id = position + 1)",
                    )
                id_offset = (qid - k, k)
            elif qid != k + id_offset[0]:
                off, first = id_offset
                raise PoolFormatError(
                    path, rec, "id",
                    f"id {qid} contradicts the record's position {k}: expected {k + off} (record "
                    f"{first} has id {first + off}, so ids count from {off}); records are matched "
                    "to prompts by position",
                )
        if str(qid) in seen_ids:
            raise PoolFormatError(path, rec, "id", f"duplicate id (also record {seen_ids[str(qid)]})")
        seen_ids[str(qid)] = k
        problem = sc.get("problem")
        if isinstance(problem, list):
            problem = problem[0] if problem else None
        if p_texts is not None:
            if isinstance(problem, str) and problem.strip() != p_texts[k].strip():
                raise PoolFormatError(
                    path, rec, "score.problem",
                    f"does not match entry {k} of prompts file {prompts} (records are matched to "
                    "prompts by position)",
                )
            texts.append(p_texts[k])
            gold.append(p_gold[k])
        else:
            texts.append(problem if isinstance(problem, str) else None)
        qids.append(str(qid))
        cols["scores"].append(s)
        cols["tokens"].append(t)
        cols["answers"].append(a)
        cols["empty"].append(e)
        cols["steps"].append(steps)
    has_steps = bool(data) and all(st is not None for st in cols["steps"])
    name = dataset or (Path(prompts).stem if prompts is not None else path.stem)
    return Pool.from_arrays(
        cols["scores"],
        tokens=cols["tokens"],
        answers=cols["answers"],
        empty=cols["empty"],
        question_ids=qids,
        dataset=name,
        prompts=texts if any(x is not None for x in texts) else None,
        gold=gold if p_gold is not None else None,
        step_scores=cols["steps"] if has_steps else None,
        metadata={"source": str(path), "format": "official", "aggregate": aggregate},
    )


def read_search_and_learn(
    path: str | Path, *, dataset: str | None = None, aggregate: str = "mean"
) -> Pool:
    """Read a search-and-learn (HuggingFace ``search-and-learn``) JSONL pool.

    One JSON object per line with ``completions`` (list of strings), ``scores`` (per
    completion, the list of per-step PRM scores), ``completion_tokens`` (per completion),
    the gold ``answer``, the question ``problem`` and an id (``unique_id``, else ``id``,
    else the line number). Other fields (``pred_*``, ``agg_scores``, timings) are ignored.

    Args:
        path: the JSONL file.
        dataset: dataset name (default: the file's stem).
        aggregate: step-score aggregation, one of :data:`AGGREGATIONS`.

    Returns:
        The pool with step scores, answers extracted (not graded) and gold answers.

    Raises:
        PoolFormatError: naming the file, line and field that is malformed.
    """
    from optscale_jax.grading import extract_gold

    if aggregate not in AGGREGATIONS:
        raise ValueError(f"aggregate must be one of {AGGREGATIONS}, got {aggregate!r}")
    path = Path(path)
    qids: list[str] = []
    texts: list[str | None] = []
    gold: list[str | None] = []
    cols: dict[str, list[Any]] = {"scores": [], "tokens": [], "answers": [], "empty": [], "steps": []}
    with open(path, encoding="utf-8-sig") as fh:  # -sig: a leading byte-order mark is skipped
        for lineno, line in enumerate(fh, start=1):
            if not line.strip():
                continue
            rec = f"line {lineno}"
            try:
                item = json.loads(line)
            except json.JSONDecodeError as exc:
                raise PoolFormatError(path, rec, None, f"invalid JSON: {exc.msg} (column {exc.colno})") from None
            except RecursionError:
                raise PoolFormatError(path, rec, None, "invalid JSON: nested too deeply") from None
            if not isinstance(item, dict):
                raise PoolFormatError(path, rec, None, f"expected an object, got {type(item).__name__}")
            for key in ("completions", "scores", "completion_tokens"):
                if key not in item:
                    raise PoolFormatError(path, rec, key, "missing")
            comp = _list_of(path, rec, "completions", item["completions"], "strings")
            scores = _list_of(path, rec, "scores", item["scores"], "per-step score lists")
            toks = _list_of(path, rec, "completion_tokens", item["completion_tokens"], "token counts")
            s, t, a, e, steps = _samples_from_fields(
                path,
                rec,
                comp,
                scores,
                toks,
                None,
                aggregate,
                {
                    "completions": "completions",
                    "scores": "scores",
                    "tokens": "completion_tokens",
                    "last_scores": "last_scores",
                },
            )
            key = "unique_id" if "unique_id" in item else "id"
            qids.append(_check_id(path, rec, key, item[key]) if key in item else str(lineno))
            prob = item.get("problem", item.get("question"))
            texts.append(prob if isinstance(prob, str) else None)
            ans = item.get("answer")
            if ans is not None and (not isinstance(ans, (str, int, float)) or isinstance(ans, bool)):
                raise PoolFormatError(path, rec, "answer", f"expected a string or number, got {type(ans).__name__}")
            if isinstance(ans, float) and not math.isfinite(ans):
                raise PoolFormatError(path, rec, "answer", f"{ans!r} is not a gold answer (expected a string or finite number)")
            gold.append(None if ans is None else extract_gold(str(ans)))
            cols["scores"].append(s)
            cols["tokens"].append(t)
            cols["answers"].append(a)
            cols["empty"].append(e)
            cols["steps"].append(steps if steps is not None else [[] for _ in s])
    if len(set(qids)) != len(qids):
        dup = next(q for q in qids if qids.count(q) > 1)
        raise PoolFormatError(path, None, "unique_id", f"duplicate question id {dup!r}")
    return Pool.from_arrays(
        cols["scores"],
        tokens=cols["tokens"],
        answers=cols["answers"],
        empty=cols["empty"],
        question_ids=qids,
        dataset=dataset or path.stem,
        prompts=texts if any(x is not None for x in texts) else None,
        gold=gold if any(x is not None for x in gold) else None,
        step_scores=cols["steps"],
        metadata={"source": str(path), "format": "search_and_learn", "aggregate": aggregate},
    )


def _parquet_schema() -> Any:
    import pyarrow as pa

    return pa.schema(
        [
            ("question_id", pa.string()),
            ("prompt", pa.string()),
            ("gold", pa.string()),
            ("scores", pa.list_(pa.float64())),
            ("tokens", pa.list_(pa.int64())),
            ("answers", pa.list_(pa.string())),
            ("answer_ids", pa.list_(pa.int32())),
            ("correct", pa.list_(pa.bool_())),
            ("empty", pa.list_(pa.bool_())),
            ("step_scores", pa.list_(pa.list_(pa.float64()))),
        ]
    )


def write_parquet(pool: Pool, path: str | Path) -> Path:
    """Write a pool to Parquet (one row per question), losslessly.

    Per-question lists hold only the real samples; the padded width, dataset name,
    ``synthetic`` flag, metadata and which optional fields are present go in the
    schema metadata under ``optscale_jax.pool``. Scores are stored as float64.

    Args:
        pool: the pool.
        path: output file (parent directories are created).

    Returns:
        The path written.

    Examples:
        >>> import tempfile, os
        >>> pool = Pool.from_arrays([[0.25, 0.5], [1.0]], answers=[["1", None], ["x"]])
        >>> f = os.path.join(tempfile.mkdtemp(), "p.parquet")
        >>> read_parquet(write_parquet(pool, f)).equals(pool)
        True
    """
    import pyarrow as pa
    import pyarrow.parquet as pq

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        meta_json = json.dumps(
            {
                "format_version": PARQUET_FORMAT_VERSION,
                "dataset": pool.dataset,
                "synthetic": pool.synthetic,
                "n_max": pool.n_max,
                "has_prompts": pool.prompts is not None,
                "has_gold": pool.gold is not None,
                "has_step_scores": pool.step_scores is not None,
                "metadata": pool.metadata,
            }
        )
    except TypeError as exc:
        raise ValueError(f"write_parquet: Pool.metadata is not JSON-serialisable: {exc}") from None
    counts = pool.n_samples
    cut = lambda a: [a[i, : counts[i]].tolist() for i in range(pool.n_questions)]  # noqa: E731
    q = pool.n_questions
    columns = {
        "question_id": pool.question_ids,
        "prompt": pool.prompts if pool.prompts is not None else [None] * q,
        "gold": pool.gold if pool.gold is not None else [None] * q,
        "scores": cut(pool.scores),
        "tokens": cut(pool.tokens),
        "answers": cut(pool.answers),
        "answer_ids": cut(pool.answer_ids),
        "correct": cut(pool.correct),
        "empty": cut(pool.empty),
        "step_scores": pool.step_scores if pool.step_scores is not None else [None] * q,
    }
    schema = _parquet_schema().with_metadata({PARQUET_METADATA_KEY: meta_json.encode()})
    table = pa.Table.from_pydict(columns, schema=schema)
    pq.write_table(table, path)
    return path


def read_parquet(path: str | Path) -> Pool:
    """Read a pool written by :func:`write_parquet`.

    Args:
        path: the Parquet file.

    Returns:
        The pool, equal (:meth:`Pool.equals`) to the one written.

    Raises:
        PoolFormatError: when the file is not a pool written by this package, or a
            row's fields disagree (naming the row and field).
    """
    import pyarrow.parquet as pq

    path = Path(path)
    try:
        table = pq.read_table(path)
    except Exception as exc:  # pyarrow raises several types for corrupt files
        raise PoolFormatError(path, None, None, f"not a readable Parquet file: {exc}") from None
    raw = (table.schema.metadata or {}).get(PARQUET_METADATA_KEY)
    if raw is None:
        raise PoolFormatError(path, None, None, "no optscale_jax.pool schema metadata (not written by write_parquet)")
    where = "schema metadata"
    try:
        meta = json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise PoolFormatError(path, where, PARQUET_METADATA_KEY.decode(), f"invalid JSON ({exc})") from None
    if not isinstance(meta, dict):
        raise PoolFormatError(path, where, PARQUET_METADATA_KEY.decode(), f"expected a JSON object, got {type(meta).__name__}")
    if meta.get("format_version") != PARQUET_FORMAT_VERSION:
        raise PoolFormatError(path, where, "format_version", f"unsupported version {meta.get('format_version')!r}")
    kinds = {"dataset": (str,), "n_max": (int,), "synthetic": (bool,), "has_prompts": (bool,),
             "has_gold": (bool,), "has_step_scores": (bool,)}
    for key, types in kinds.items():
        if key not in meta:
            raise PoolFormatError(path, where, key, "missing")
        if not isinstance(meta[key], types) or (key == "n_max" and (isinstance(meta[key], bool) or meta[key] < 0)):
            want = {"dataset": "a string", "n_max": "a whole number >= 0"}.get(key, "true or false")
            raise PoolFormatError(path, where, key, f"expected {want}, got {meta[key]!r}")
    if not isinstance(meta.get("metadata", {}), dict):
        raise PoolFormatError(path, where, "metadata", f"expected a JSON object, got {meta['metadata']!r}")
    expected = _parquet_schema()
    for name in expected.names:
        if name not in table.column_names:
            raise PoolFormatError(path, None, name, "missing column")
    _check_parquet_types(path, table, expected, meta)
    cols = {name: table.column(name).to_pylist() for name in expected.names}
    q = table.num_rows
    lengths = [len(r) if r is not None else 0 for r in cols["scores"]]
    # Padding beyond the longest row carries no data. It is kept (round trips are exact)
    # unless it would dwarf the data: then the width is bounded by the longest row, so a
    # corrupt or hostile n_max (say 10^9) cannot allocate gigabytes of padding.
    n = int(meta["n_max"])
    longest = max(lengths, default=0)
    if n > longest and q * n > max(16 * sum(lengths), 1 << 20):
        n = longest
    seen: dict[str, int] = {}
    for i, qid in enumerate(cols["question_id"]):
        if qid is None or not qid.strip():
            what = "is null" if qid is None else f"is {qid!r}"
            raise PoolFormatError(path, f"row {i}", "question_id", f"{what}; expected a non-empty string id")
        if qid in seen:
            raise PoolFormatError(path, f"row {i}", "question_id", f"duplicate id {qid!r} (also row {seen[qid]})")
        seen[qid] = i
    for i in range(q):
        for name in ("scores", "tokens", "answers", "answer_ids", "correct", "empty"):
            row = cols[name][i]
            if row is None or len(row) != lengths[i]:
                raise PoolFormatError(
                    path, f"row {i} (question {cols['question_id'][i]!r})", name,
                    f"has {0 if row is None else len(row)} entries, 'scores' has {lengths[i]}",
                )
        if lengths[i] > n:
            raise PoolFormatError(path, f"row {i}", "scores", f"{lengths[i]} samples exceed n_max {meta['n_max']}")

    def pad(name: str, fill: Any, dtype: Any) -> np.ndarray:
        out = np.full((q, n), fill, dtype=dtype)
        for i, row in enumerate(cols[name]):
            out[i, : len(row)] = row if dtype is not object else np.array(row + [None], dtype=object)[:-1]
        return out

    mask = np.zeros((q, n), dtype=bool)
    for i, length in enumerate(lengths):
        mask[i, :length] = True
    if meta["has_step_scores"]:
        for i, row in enumerate(cols["step_scores"]):
            if row is None or len(row) != lengths[i]:
                raise PoolFormatError(
                    path, f"row {i} (question {cols['question_id'][i]!r})", "step_scores",
                    f"has {'null' if row is None else len(row)} entries, 'scores' has {lengths[i]} "
                    "(the schema metadata says the pool has step scores)",
                )
    try:
        return _pool_from_parquet_columns(cols, meta, mask, pad)
    except ValueError as exc:  # Pool's own checks (a score outside [0, 1] ...): name the file
        raise PoolFormatError(path, None, None, str(exc)) from None


def _check_parquet_types(path: Path, table: Any, expected: Any, meta: dict) -> None:
    """Every column of the kind write_parquet writes, without nulls inside the lists."""
    import pyarrow as pa
    import pyarrow.compute as pc

    kinds = {"float": (pa.types.is_floating, pa.types.is_integer), "int": (pa.types.is_integer,),
             "string": (pa.types.is_string, pa.types.is_large_string), "bool": (pa.types.is_boolean,)}

    def kind(t: Any) -> str:
        return "float" if pa.types.is_floating(t) else "int" if pa.types.is_integer(t) else \
            "string" if pa.types.is_string(t) else "bool" if pa.types.is_boolean(t) else str(t)

    for name in expected.names:
        want, got = expected.field(name).type, table.schema.field(name).type
        depth_w, depth_g = 0, got
        w = want
        ok = True
        while pa.types.is_list(w):
            if not (pa.types.is_list(depth_g) or pa.types.is_large_list(depth_g)):
                ok = False
                break
            w, depth_g, depth_w = w.value_type, depth_g.value_type, depth_w + 1
        if ok:
            ok = any(f(depth_g) for f in kinds[kind(w)])
        if not ok:
            raise PoolFormatError(path, None, name, f"column has type {got}; expected {want}")
        if depth_w == 0 or pa.types.is_string(w):  # answers: null = no extracted answer
            continue
        col = table.column(name)
        flat = col
        for _ in range(depth_w):
            flat = pc.list_flatten(flat)
        if flat.null_count:
            for i, row in enumerate(col.to_pylist()):
                vals = row or []
                for _ in range(depth_w - 1):
                    vals = [v for sub in vals if sub is not None for v in sub]
                if any(v is None for v in vals):
                    raise PoolFormatError(path, f"row {i}", name, "holds a null inside its list; expected a value for every sample")
        if pa.types.is_floating(w) and pa.types.is_integer(depth_g):
            continue
        if pa.types.is_integer(w) and pa.types.is_integer(depth_g) and (
            depth_g.bit_width > w.bit_width or pa.types.is_unsigned_integer(depth_g)
        ):
            lo, hi = np.iinfo(np.dtype(w.to_pandas_dtype())).min, np.iinfo(np.dtype(w.to_pandas_dtype())).max
            mm = pc.min_max(flat)
            if mm["min"].as_py() is not None and (mm["min"].as_py() < lo or mm["max"].as_py() > hi):
                raise PoolFormatError(path, None, name, f"values outside the range of {w}")


def _pool_from_parquet_columns(cols: dict, meta: dict, mask: np.ndarray, pad: Any) -> Pool:
    return Pool(
        scores=pad("scores", 0.0, np.float64),
        mask=mask,
        tokens=pad("tokens", 0, np.int64),
        answers=pad("answers", None, object),
        answer_ids=pad("answer_ids", -1, np.int32),
        correct=pad("correct", False, bool),
        question_ids=cols["question_id"],
        dataset=meta["dataset"],
        prompts=cols["prompt"] if meta["has_prompts"] else None,
        gold=cols["gold"] if meta["has_gold"] else None,
        step_scores=cols["step_scores"] if meta["has_step_scores"] else None,
        synthetic=bool(meta["synthetic"]),
        empty=pad("empty", False, bool),
        metadata=meta.get("metadata", {}),
    )


def _check_pool_file(path: Path) -> None:
    """A readable, non-empty regular file (not a directory, FIFO, device or symlink loop)."""
    try:
        st = path.stat()
    except FileNotFoundError:
        raise PoolFormatError(path, None, None, "no such file") from None
    except OSError as exc:  # symlink loop, permission denied, name too long ...
        raise PoolFormatError(path, None, None, f"cannot read it ({exc.strerror or exc})") from None
    if stat.S_ISDIR(st.st_mode):
        raise PoolFormatError(path, None, None, "is a directory; expected a pool file (Parquet, JSON Lines or JSON)")
    if not stat.S_ISREG(st.st_mode):
        raise PoolFormatError(path, None, None, "is not a regular file (a FIFO, socket or device); expected a pool file")
    if st.st_size == 0:
        raise PoolFormatError(path, None, None, "is empty; expected a pool file (Parquet, JSON Lines or JSON)")


def detect_format(path: str | Path) -> str:
    """Guess a pool file's format: ``"parquet"``, ``"search_and_learn"`` or ``"official"``.

    Parquet by its magic bytes; otherwise JSON Lines when the first non-blank character
    is ``{`` and JSON (the official list format) when it is ``[``.

    Args:
        path: the file.

    Returns:
        The format name.
    """
    path = Path(path)
    _check_pool_file(path)
    try:
        with open(path, "rb") as fh:
            head = fh.read(4096)
    except OSError as exc:
        raise PoolFormatError(path, None, None, f"cannot read it ({exc.strerror or exc})") from None
    if head[:4] == b"PAR1":
        return "parquet"
    if head[:2] == b"\x1f\x8b":
        raise PoolFormatError(path, None, None, "is gzip-compressed; decompress it first (gunzip)")
    if head[:4] == b"PK\x03\x04":
        raise PoolFormatError(path, None, None, "is a zip archive; extract the pool file first")
    stripped = head.removeprefix(b"\xef\xbb\xbf").lstrip()  # a UTF-8 byte-order mark is skipped
    if stripped.startswith(b"{"):
        return "search_and_learn"
    if stripped.startswith(b"["):
        return "official"
    raise PoolFormatError(path, None, None, "unknown pool format (not Parquet, JSON Lines or a JSON list)")


def read_pool(
    path: str | Path,
    *,
    format: str = "auto",
    prompts: str | Path | None = None,
    dataset: str | None = None,
    aggregate: str = "mean",
) -> Pool:
    """Read a pool in any known format, detected from the file's content.

    Args:
        path: the pool file.
        format: ``"auto"``, ``"parquet"``, ``"search_and_learn"`` or ``"official"``.
        prompts: prompts file with gold answers (official format only).
        dataset: dataset name override (JSON formats).
        aggregate: step-score aggregation for the JSON formats, one of :data:`AGGREGATIONS`.

    Returns:
        The pool, with at least one question.

    Raises:
        PoolFormatError: naming the file (and record, field) for a missing, empty,
            compressed or malformed file, a pool without questions, non-UTF-8 text, or
            ``prompts`` given with a format that does not read them.
    """
    path = Path(path)
    if format == "auto":
        fmt = detect_format(path)
    else:
        _check_pool_file(path)
        fmt = format
    if fmt not in ("parquet", "search_and_learn", "official"):
        raise ValueError(f"unknown pool format {fmt!r}: use auto, parquet, search_and_learn or official")
    if prompts is not None and fmt != "official":
        raise PoolFormatError(
            prompts, None, None,
            f"a prompts file is only read with the authors' JSON pool format; {path} is {fmt} "
            "(its gold answers come from the pool itself)",
        )
    try:
        if fmt == "parquet":
            pool = read_parquet(path)
            if dataset is not None:
                pool.dataset = dataset
        elif fmt == "search_and_learn":
            pool = read_search_and_learn(path, dataset=dataset, aggregate=aggregate)
        else:
            pool = read_official(path, prompts, dataset=dataset, aggregate=aggregate)
    except UnicodeDecodeError as exc:
        raise PoolFormatError(path, None, None, f"is not UTF-8 text ({exc.reason} at byte {exc.start})") from None
    except IsADirectoryError as exc:
        raise PoolFormatError(exc.filename or path, None, None, "is a directory; expected a file") from None
    except FileNotFoundError as exc:
        raise PoolFormatError(exc.filename or path, None, None, "no such file") from None
    if pool.n_questions == 0:
        raise PoolFormatError(path, None, None, "has no questions")
    return pool
