"""math-verify grading with bounded time, answer equivalence classes, vote classes.

Answer extraction lives in :mod:`optscale_jax.answers` (re-exported here:
:func:`extract_answer`, :func:`extract_boxed`, :func:`extract_boxed_official`,
:func:`extract_gold`, :data:`EXTRACTION_RULES`).

* :func:`vote_classes` builds the classes majority voting counts: ``"official"``
  (exact extracted strings, "no answer" a class of its own that can win) or
  ``"math-verify"`` (the pool's equivalence classes, "no answer" never votes).
* :class:`Grader` compares answers with `math-verify <https://github.com/huggingface/Math-Verify>`_,
  gold first (``verify(gold, answer)``), with math-verify's own ``signal.alarm``
  timeouts switched off (``parse(..., parsing_timeout=None)``,
  ``verify(..., timeout_seconds=None)``) because they only work on the main thread.
  Instead each check runs in a worker process that is killed when it exceeds its time
  budget: a timed-out check counts as "not equal" and is recorded in
  :attr:`Grader.timeouts`. Results are cached per (gold, answer) pair.
* :func:`grade_pool` fills a pool's ``correct`` flags and ``answer_ids``: answers that
  math-verify finds equal share a class id within their question (-1 = no answer), so
  that majority voting counts ``1/2``, ``\\frac{1}{2}`` and ``0.5`` together.
"""

from __future__ import annotations

import json
import logging
import multiprocessing
import multiprocessing.connection
import os
import time
from collections import deque
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from optscale_jax.answers import (
    EXTRACTION_RULES,
    extract_answer,
    extract_boxed,
    extract_boxed_official,
    extract_gold,
)
from optscale_jax.io.search_and_learn import read_search_and_learn
from optscale_jax.pool import Pool
from optscale_jax.selection import best_of_n_index, majority_index, weighted_vote_index

__all__ = [
    "CheckResult",
    "Grader",
    "equivalence_classes",
    "extract_answer",
    "extract_boxed",
    "extract_boxed_official",
    "extract_gold",
    "grade_pool",
    "math_verify_equal",
    "search_and_learn_agreement",
    "EXTRACTION_RULES",
    "VOTE_RULES",
    "vote_classes",
]

# ---------------------------------------------------------------------------
# math-verify checks
# ---------------------------------------------------------------------------

_PARSED: dict[str, Any] = {}


def _parse(expr: str) -> Any:
    from math_verify import parse

    got = _PARSED.get(expr)
    if got is None:
        text = expr if "\\boxed" in expr else "\\boxed{" + expr + "}"
        got = parse(text, parsing_timeout=None)
        if len(_PARSED) > 100_000:
            _PARSED.clear()
        _PARSED[expr] = got
    return got


def math_verify_equal(gold: str, answer: str) -> bool:
    """Whether ``answer`` equals ``gold`` by math-verify (no time bound: see :class:`Grader`).

    Both strings are wrapped in ``\\boxed{}`` (unless already boxed) and parsed; the
    comparison is ``verify(gold, answer)`` with the gold answer first, as math-verify
    requires (it is not symmetric). math-verify's signal timeouts are disabled, so this
    is safe in any thread but unbounded: call it through :class:`Grader` to bound it.

    Args:
        gold: the reference answer.
        answer: the candidate answer.

    Returns:
        True when math-verify finds them equal; False otherwise (also on parse failure).

    Examples:
        >>> math_verify_equal("\\\\frac{1}{2}", "0.5")
        True
    """
    from math_verify import verify

    if gold.strip() == answer.strip():
        return True
    g = _parse(gold)
    a = _parse(answer)
    if not g or not a:
        return False
    return bool(verify(g, a, timeout_seconds=None))


def _quiet_math_verify() -> None:
    # math-verify logs a warning once per process that its timeouts are off: we bound
    # time ourselves, so silence its loggers (in worker processes, or in the caller
    # when it asked for in-process checks with workers=0).
    for name in ("math_verify.parser", "math_verify.grader", "math_verify"):
        logging.getLogger(name).setLevel(logging.ERROR)


def _worker_main(conn: multiprocessing.connection.Connection, check: Callable[[str, str], bool]) -> None:
    _quiet_math_verify()
    try:  # import before saying ready, so import time is not charged to the first check
        import math_verify  # noqa: F401

        if check is math_verify_equal:
            math_verify_equal("1", "1.0")
    except Exception:  # pragma: no cover - reported per check below
        pass
    conn.send(("ready", None, None))
    while True:
        try:
            msg = conn.recv()
        except EOFError:
            return
        if msg is None:
            return
        key, a, b = msg
        try:
            conn.send((key, bool(check(a, b)), None))
        except Exception as exc:  # a failing check is "not equal", with the reason kept
            conn.send((key, False, f"{type(exc).__name__}: {exc}"))


@dataclass
class CheckResult:
    """Outcome of one answer comparison.

    Attributes:
        equal: True when the answers are equal (False on timeout or error).
        timed_out: True when the check exceeded its time budget and was killed.
        error: exception text when the check raised, else ``None``.
        seconds: wall time of the check.
    """

    equal: bool
    timed_out: bool = False
    error: str | None = None
    seconds: float = 0.0


class _Worker:
    def __init__(self, ctx: Any, check: Callable[[str, str], bool], startup_timeout: float):
        self.conn, child = ctx.Pipe()
        self.proc = ctx.Process(target=_worker_main, args=(child, check), daemon=True)
        self.proc.start()
        child.close()
        self.task: tuple[str, str] | None = None
        self.started = 0.0
        if not self.conn.poll(startup_timeout):
            self.kill()
            raise RuntimeError(f"grading worker did not start within {startup_timeout} s")
        self.conn.recv()

    def send(self, pair: tuple[str, str]) -> None:
        self.task = pair
        self.started = time.perf_counter()
        self.conn.send((0, pair[0], pair[1]))

    def kill(self) -> None:
        try:
            self.proc.kill()
            self.proc.join(5)
        finally:
            self.conn.close()

    def stop(self) -> None:
        try:
            self.conn.send(None)
            self.proc.join(2)
        except (OSError, BrokenPipeError):
            pass
        if self.proc.is_alive():
            self.proc.kill()
            self.proc.join(5)
        self.conn.close()


class Grader:
    """Bounded-time, cached answer comparison with math-verify in worker processes.

    Each comparison runs in one of ``workers`` long-lived processes (started with the
    ``spawn`` method, so it is safe from threads and from processes that already run
    JAX). When a check exceeds ``timeout`` seconds its worker is killed and replaced,
    the pair counts as not equal, and it is recorded in :attr:`timeouts`. Use as a
    context manager (or call :meth:`close`) to stop the workers.

    ``workers=0`` runs checks in the calling process with **no** time bound (for
    debugging or environments without multiprocessing). As with any ``spawn``-based
    multiprocessing, a script that grades with workers must guard its entry point with
    ``if __name__ == "__main__":``.

    Args:
        timeout: seconds allowed per check.
        workers: number of worker processes (default: ``min(2, cpu count)``).
        check: the comparison ``check(gold, answer) -> bool``; default
            :func:`math_verify_equal`. Must be a picklable top-level function.
        startup_timeout: seconds allowed for a worker to start.

    Attributes:
        cache: ``{(gold, answer): CheckResult}``.
        timeouts: the ``(gold, answer)`` pairs that timed out, in order.

    Examples:
        >>> with Grader(timeout=10.0, workers=1) as g:
        ...     g.equal("\\\\frac{1}{2}", "0.5"), g.equal("2", "3")
        (True, False)
    """

    def __init__(
        self,
        timeout: float = 5.0,
        workers: int | None = None,
        *,
        check: Callable[[str, str], bool] = math_verify_equal,
        startup_timeout: float = 120.0,
    ) -> None:
        if timeout <= 0:
            raise ValueError(f"timeout must be > 0, got {timeout}")
        self.timeout = float(timeout)
        self.n_workers = min(2, os.cpu_count() or 1) if workers is None else int(workers)
        if self.n_workers < 0:
            raise ValueError(f"workers must be >= 0, got {workers}")
        self.check = check
        self.startup_timeout = startup_timeout
        self.cache: dict[tuple[str, str], CheckResult] = {}
        self.timeouts: list[tuple[str, str]] = []
        self._workers: list[_Worker] = []
        self._ctx = multiprocessing.get_context("spawn")

    # -- lifecycle
    def __enter__(self) -> Grader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Stop the worker processes."""
        for w in self._workers:
            w.stop()
        self._workers = []

    def __del__(self) -> None:  # pragma: no cover - best effort
        try:
            self.close()
        except Exception:
            pass

    def _spawn(self) -> _Worker:
        return _Worker(self._ctx, self.check, self.startup_timeout)

    # -- checks
    def check_many(self, pairs: Iterable[tuple[str, str]]) -> list[CheckResult]:
        """Compare many ``(gold, answer)`` pairs, in parallel, each within the time budget.

        Args:
            pairs: ``(gold, answer)`` string pairs (gold first).

        Returns:
            One :class:`CheckResult` per pair, in order (cached pairs are not re-run).
        """
        pairs = [(str(g), str(a)) for g, a in pairs]
        todo = list(dict.fromkeys(p for p in pairs if p not in self.cache))
        if todo:
            if self.n_workers == 0:
                _quiet_math_verify()
                for p in todo:
                    t0 = time.perf_counter()
                    try:
                        self.cache[p] = CheckResult(bool(self.check(*p)), seconds=time.perf_counter() - t0)
                    except Exception as exc:
                        self.cache[p] = CheckResult(False, error=f"{type(exc).__name__}: {exc}")
            else:
                self._run_parallel(todo)
        return [self.cache[p] for p in pairs]

    def _run_parallel(self, todo: list[tuple[str, str]]) -> None:
        queue = deque(todo)
        while len(self._workers) < min(self.n_workers, len(todo)):
            self._workers.append(self._spawn())
        busy: dict[Any, _Worker] = {}

        def dispatch(w: _Worker) -> None:
            if queue:
                w.send(queue.popleft())
                busy[w.conn] = w

        for w in list(self._workers):
            dispatch(w)
        while busy:
            deadline = min(w.started for w in busy.values()) + self.timeout
            ready = multiprocessing.connection.wait(
                list(busy), timeout=max(0.0, deadline - time.perf_counter())
            )
            now = time.perf_counter()
            for conn in ready:
                w = busy.pop(conn)
                pair = w.task
                assert pair is not None
                try:
                    _, equal, error = conn.recv()
                except (EOFError, OSError):  # the worker died (e.g. out of memory)
                    self.cache[pair] = CheckResult(False, error="worker process died")
                    dispatch(self._replace(w))
                    continue
                self.cache[pair] = CheckResult(bool(equal), error=error, seconds=now - w.started)
                w.task = None
                dispatch(w)
            for conn, w in list(busy.items()):
                if now - w.started >= self.timeout:
                    busy.pop(conn)
                    pair = w.task
                    assert pair is not None
                    self.cache[pair] = CheckResult(False, timed_out=True, seconds=now - w.started)
                    self.timeouts.append(pair)
                    dispatch(self._replace(w))

    def _replace(self, w: _Worker) -> _Worker:
        w.kill()
        new = self._spawn()
        self._workers[self._workers.index(w)] = new
        return new

    def equal(self, gold: str, answer: str) -> bool:
        """Whether ``answer`` equals ``gold`` (one bounded, cached check).

        Args:
            gold: reference answer (first, as math-verify requires).
            answer: candidate answer.

        Returns:
            True when equal; False when not, on error, or on timeout.
        """
        return self.check_many([(gold, answer)])[0].equal


def _norm(ans: str) -> str:
    return "".join(ans.split())


def equivalence_classes(
    answers: Sequence[str | None],
    grader: Grader,
    *,
    gold: str | None = None,
    correct: Sequence[bool] | None = None,
) -> np.ndarray:
    """Class ids for one question's answers: equal answers share an id, ``None`` gets -1.

    Ids are assigned in order of first appearance (0, 1, ...). Identical strings (up to
    whitespace) are equal without a check. When the answers' correctness is known, all
    correct answers form one class (they all equal the gold answer) and a correct and an
    incorrect answer are never merged, so only incorrect answers are compared pairwise
    (earlier representative first). math-verify's equality is not guaranteed to be
    transitive; an answer joins the first class whose representative it equals.

    Args:
        answers: the answers in drawing order.
        grader: the comparison engine.
        gold: unused except for documentation symmetry; pass ``correct`` instead.
        correct: per-answer correctness (same length), if known.

    Returns:
        ``(len(answers),)`` int32 class ids.

    Examples:
        >>> with Grader(workers=0) as g:
        ...     equivalence_classes(["1/2", "\\\\frac{1}{2}", None, "0.5", "3"], g).tolist()
        [0, 0, -1, 0, 1]
    """
    del gold
    ids = np.full(len(answers), -1, dtype=np.int32)
    reps: list[tuple[str, bool | None]] = []  # class representative and its correctness
    by_norm: dict[str, int] = {}
    for j, a in enumerate(answers):
        if a is None:
            continue
        key = _norm(a)
        if key not in by_norm:
            c = None if correct is None else bool(correct[j])
            match = -1
            if c is True:
                match = next((k for k, (_, rc) in enumerate(reps) if rc is True), -1)
            else:
                cand = [k for k, (_, rc) in enumerate(reps) if c is None or rc is None or rc == c]
                results = grader.check_many([(reps[k][0], a) for k in cand])
                match = next((k for k, r in zip(cand, results, strict=True) if r.equal), -1)
            if match < 0:
                reps.append((a, c))
                match = len(reps) - 1
            by_norm[key] = match
        ids[j] = by_norm[key]
    return ids


#: Vote rules of :func:`vote_classes`.
VOTE_RULES: tuple[str, ...] = ("official", "math-verify")


def vote_classes(pool: Pool, rule: str = "official") -> np.ndarray:
    """The answer classes majority voting counts (SC, ESC, ASC, DSC), per question.

    * ``"official"`` (the OptScale authors' rule, default): two samples vote together
      when their extracted strings are identical (``pool.answers``, extracted by
      :func:`extract_answer`'s official rule); "no answer" (``None``, including empty
      completions) is a class like any other, so it can win a vote, and a win by it is a
      wrong answer. Ties then go to the class seen first, as in the authors' code. A
      sample with no string but a class id (pools built from arrays) votes by its id.
    * ``"math-verify"`` (ours): ``pool.answer_ids``, math-verify equivalence classes from
      :func:`grade_pool` (``1/2``, ``\\frac{1}{2}`` and ``0.5`` together); samples with no
      answer do not vote.

    Args:
        pool: the pool.
        rule: ``"official"`` or ``"math-verify"``.

    Returns:
        ``(Q, N)`` int32 class ids, first appearance first; -1 only for samples that do not
        vote (not in the pool; no answer under ``"math-verify"``).

    Examples:
        >>> p = Pool.from_arrays([[0.5] * 4], answers=[["1/2", "0.5", None, None]], answer_ids=[[0, 0, -1, -1]])
        >>> vote_classes(p).tolist(), vote_classes(p, "math-verify").tolist()
        ([[0, 1, 2, 2]], [[0, 0, -1, -1]])
    """
    if rule == "math-verify":
        return np.where(pool.mask, pool.answer_ids, -1).astype(np.int32)
    if rule != "official":
        raise ValueError(f"vote_classes: rule must be one of {VOTE_RULES}, got {rule!r}")
    q, n = pool.mask.shape
    out = np.full((q, n), -1, dtype=np.int32)
    for i in range(q):
        seen: dict[Any, int] = {}
        for j in np.flatnonzero(pool.mask[i]):
            a = pool.answers[i, j]
            c = int(pool.answer_ids[i, j])
            key: Any = ("s", a) if a is not None else (("id", c) if c >= 0 else ("none",))
            out[i, j] = seen.setdefault(key, len(seen))
    return out


def grade_pool(
    pool: Pool,
    gold: Sequence[str] | None = None,
    *,
    grader: Grader | None = None,
    timeout: float = 5.0,
    workers: int | None = None,
    classes: bool = True,
    progress: bool = False,
) -> Pool:
    """Grade every answer of a pool against its gold answer and assign answer classes.

    Args:
        pool: a pool with extracted ``answers``.
        gold: gold answers per question (default ``pool.gold``).
        grader: a :class:`Grader` to reuse (its cache and workers); default a new one.
        timeout: seconds per check when a new grader is made.
        workers: worker processes when a new grader is made.
        classes: also compute answer equivalence classes (``answer_ids``).
        progress: show a tqdm progress bar over questions.

    Returns:
        A new pool with ``correct``, ``answer_ids`` and ``gold`` filled in, and
        ``metadata["grading"]`` holding the number of checks, timed-out checks
        (``[question_id, gold, answer]``) and errors.

    Examples:
        >>> p = Pool.from_arrays([[0.9, 0.1, 0.5]], answers=[["0.5", "2", "1/2"]], gold=["\\\\frac12"])
        >>> g = grade_pool(p, workers=0)
        >>> g.correct.tolist(), g.answer_ids.tolist()
        ([[True, False, True]], [[0, 1, 0]])
    """
    gold = list(pool.gold) if gold is None and pool.gold is not None else gold
    if gold is None:
        raise ValueError("grade_pool: no gold answers (pass gold= or read the pool with a prompts file)")
    if len(gold) != pool.n_questions:
        raise ValueError(f"grade_pool: {len(gold)} gold answers for {pool.n_questions} questions")
    own = grader is None
    g = grader if grader is not None else Grader(timeout=timeout, workers=workers)
    n_timeouts0 = len(g.timeouts)
    try:
        pairs: list[tuple[str, str]] = []
        for i in range(pool.n_questions):
            if gold[i] is None:
                raise ValueError(f"grade_pool: question {pool.question_ids[i]!r} has no gold answer")
            for j in np.flatnonzero(pool.mask[i]):
                a = pool.answers[i, j]
                if a is not None:
                    pairs.append((str(gold[i]), a))
        g.check_many(pairs)
        correct = np.zeros_like(pool.correct)
        answer_ids = np.full_like(pool.answer_ids, -1)
        rows: Iterable[int] = range(pool.n_questions)
        if progress:
            from tqdm.auto import tqdm

            rows = tqdm(rows, desc="answer classes", unit="question")
        for i in rows:
            n_i = int(pool.n_samples[i])
            row = pool.answers[i, :n_i]
            for j, a in enumerate(row):
                if a is not None:
                    correct[i, j] = g.cache[(str(gold[i]), a)].equal
            if classes:
                answer_ids[i, :n_i] = equivalence_classes(list(row), g, correct=correct[i, :n_i])
        qid_by_gold: dict[str, list[str]] = {}
        for i, gd in enumerate(gold):
            qid_by_gold.setdefault(str(gd), []).append(pool.question_ids[i])
        timeouts = [
            [qid_by_gold.get(gp, ["?"])[0], gp, ap] for gp, ap in g.timeouts[n_timeouts0:]
        ]
        errors = sorted({r.error for r in g.cache.values() if r.error})
        meta = dict(pool.metadata)
        meta["grading"] = {
            "checks": len(g.cache),
            "timeout_seconds": g.timeout,
            "timeouts": timeouts,
            "errors": errors[:20],
        }
        return pool.replace(
            correct=correct, answer_ids=answer_ids, gold=[str(x) for x in gold], metadata=meta
        )
    finally:
        if own:
            g.close()


def search_and_learn_agreement(
    path: str | Path, *, grader: Grader | None = None, workers: int | None = None
) -> dict[str, Any]:
    """Compare our grading of a search-and-learn pool with the ``pred_*`` fields it carries.

    search-and-learn stores, per question, its own selected answers ``pred_naive@n``
    (highest last-step score among the first n), ``pred_maj@n`` and ``pred_weighted@n``
    (majority / score-weighted vote), as ``\\boxed{...}`` strings, and the gold
    ``answer``. This function reads the pool with ``aggregate="last"``, grades it, and
    reports:

    * ``extraction_agreement``: for each ``pred_naive@n``, whether the answer of the
      sample we would pick (argmax last-step score among the first n, ties first) is
      math-verify-equal to the stored prediction;
    * ``accuracy_fields``: accuracy of each ``pred_*`` field graded against the gold;
    * ``accuracy_ours``: accuracy of the same rule recomputed from our graded pool
      (naive = best-of-n by last step score; maj = most frequent answer class,
      ties to the first class reached; weighted = highest total last-step score per class);
    * ``field_vs_ours``: fraction of (question, field) pairs where the field's
      correctness equals ours.

    Args:
        path: the search-and-learn JSONL file.
        grader: a :class:`Grader` to reuse.
        workers: worker processes for a new grader.

    Returns:
        A JSON-serialisable dict with the figures above and per-field counts.
    """
    path = Path(path)
    pool = read_search_and_learn(path, aggregate="last")
    records = [json.loads(line) for line in path.read_text("utf-8").splitlines() if line.strip()]
    own = grader is None
    g = grader if grader is not None else Grader(workers=workers)
    try:
        graded = grade_pool(pool, grader=g)
        fields = sorted({k for r in records for k in r if k.startswith("pred_") and "@" in k})
        preds = {
            (i, f): extract_answer(r[f]) if isinstance(r.get(f), str) else None
            for i, r in enumerate(records)
            for f in fields
        }
        g.check_many([(graded.gold[i], p) for (i, _), p in preds.items() if p is not None])
        acc_fields: dict[str, float] = {}
        acc_ours: dict[str, float] = {}
        agree: dict[str, float] = {}
        extraction: dict[str, float] = {}
        q = graded.n_questions
        for f in fields:
            rule, n = f[len("pred_") :].split("@")
            n = int(n)
            field_ok = []
            ours_ok = []
            same_pick = []
            for i in range(q):
                p = preds[(i, f)]
                fo = p is not None and g.cache[(graded.gold[i], p)].equal
                k = min(n, int(graded.n_samples[i]))
                sc = graded.scores[i, :k]
                ids = graded.answer_ids[i, :k]
                corr = graded.correct[i, :k]
                sel = graded.selectable[i, :k]
                if rule == "naive":
                    j = int(best_of_n_index(sc[None], np.ones((1, k), bool), sel[None])[0])
                    oo = bool(corr[j])
                    a = graded.answers[i, j]
                    same_pick.append(
                        (a is None and p is None)
                        or (a is not None and p is not None and (_norm(a) == _norm(p) or g.equal(a, p)))
                    )
                elif not (ids >= 0).any():
                    oo = False
                else:
                    drawn = np.ones((1, k), bool)
                    if rule == "maj":
                        first = int(majority_index(drawn, ids[None])[0])
                    else:
                        first = int(weighted_vote_index(sc[None], drawn, ids[None])[0])
                    oo = bool(corr[first])
                field_ok.append(fo)
                ours_ok.append(oo)
            acc_fields[f] = float(np.mean(field_ok))
            acc_ours[f] = float(np.mean(ours_ok))
            agree[f] = float(np.mean(np.array(field_ok) == np.array(ours_ok)))
            if same_pick:
                extraction[f] = float(np.mean(same_pick))
        return {
            "file": str(path),
            "questions": q,
            "samples": int(graded.mask.sum()),
            "accuracy_first_sample": float(graded.correct[:, 0].mean()),
            "fraction_correct_samples": float(graded.correct[graded.mask].mean()),
            "extraction_agreement": extraction,
            "accuracy_fields": acc_fields,
            "accuracy_ours": acc_ours,
            "field_vs_ours": agree,
            "overall_field_vs_ours": float(np.mean(list(agree.values()))) if agree else float("nan"),
            "timeouts": graded.metadata["grading"]["timeouts"],
        }
    finally:
        if own:
            g.close()
