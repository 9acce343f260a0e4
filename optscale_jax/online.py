"""The live adaptive loop: ask an engine for samples only where the policy wants them.

:func:`run` works in *waves* over all questions (the round semantics of
:mod:`optscale_jax.policies.base`, the same the replay evaluator uses):

1. ask the policy, on everything drawn so far, how many samples each question
   wants (:meth:`Policy.want`); questions wanting more than they have are open;
2. send one batched request to the engine for all open questions (``batch``
   more each at most, never beyond the policy's ``n_max``), so the engine stays
   busy across questions;
3. score the new completions with the PRM, aggregate the step scores, extract
   the answers and their equivalence classes;
4. append every scored sample to ``samples.jsonl`` (flushed and fsynced) before
   the next wave.

:func:`run` is these steps in order: open the journal (lock, header check, resume
state: :func:`optscale_jax.journal.open_journal`), then per wave ``_plan_wave``
(steps 1-2), ``_draw_and_score`` (step 3) and ``_record`` (step 4), then
``_finish`` (grade, pool, summary). The journal's format, the run directory's
lock and the resume checks live in :mod:`optscale_jax.journal`; their names are
re-exported here.

The run ends when no question wants more, or when an optional global token
budget is spent. A run that crashed or was interrupted resumes from
``samples.jsonl``: finished samples are read back, never redrawn, and because
request seeds are a function of (run seed, question, sample index) and policies
are functions of what was drawn, the resumed run asks for exactly what the
interrupted one would have. At the end the answers are graded with math-verify
(:mod:`optscale_jax.grading`), the pool is written as ``pool.parquet`` (which
``optscale replay`` reads) and ``summary.json`` holds accuracy, tokens, samples
per question and the tokens saved against Best-of-``n_max`` on the same run.

MR-Thinking (:class:`MRThinking`, Tian et al. 2025) is a live-only policy: each
round re-prompts with the previous round's answer. The loop asks any policy
with a ``prompt(question_prompt, previous_completions)`` method for its
prompts.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import numpy as np

from optscale_jax.engines.base import (
    Completion,
    Engine,
    EngineError,
    SampleRequest,
    Scorer,
    describe,
)
from optscale_jax.journal import (
    DEFAULT_PROMPT_TEMPLATE,
    HEADER_FLAGS,
    LOCK_FILE,
    POOL_FILE,
    SAMPLES_FILE,
    SUMMARY_FILE,
    JournalState,
    RunLockedError,
    RunMismatchError,
    SampleRecord,
    SamplesFormatError,
    append_allocation,
    append_samples,
    check_run_dir,
    lock_run_dir,
    open_journal,
    read_allocations,
    read_samples,
    run_header,
)
from optscale_jax.policies.base import Observed, Policy
from optscale_jax.policies.mr_thinking import MR_THINKING_TEMPLATE, MRThinking, final_answer_text
from optscale_jax.scores import AGGREGATIONS, aggregate_step_scores

# The journal's names (format constants, errors, lock, header, reader) are re-exported: their
# home is optscale_jax.journal, and `from optscale_jax.online import ...` keeps working.
__all__ = [
    "DEFAULT_PROMPT_TEMPLATE",
    "HEADER_FLAGS",
    "LOCK_FILE",
    "MR_THINKING_TEMPLATE",
    "POOL_FILE",
    "SAMPLES_FILE",
    "SUMMARY_FILE",
    "MRThinking",
    "Question",
    "RunLockedError",
    "RunMismatchError",
    "RunResult",
    "SamplesFormatError",
    "check_run_dir",
    "final_answer_text",
    "load_benchmark",
    "lock_run_dir",
    "read_samples",
    "request_seed",
    "run",
    "run_header",
]


@dataclass(frozen=True)
class Question:
    """One question of a live run.

    Attributes:
        id: Question id (unique within the run).
        text: The question itself (what the PRM sees as the user turn).
        gold: Gold answer for grading, or None.
    """

    id: str
    text: str
    gold: str | None = None


def load_benchmark(
    name_or_path: str | Path, *, data_dir: str | Path | None = None, limit: int | None = None
) -> tuple[str, list[Question]]:
    """Read a benchmark's questions and gold answers.

    Args:
        name_or_path: ``math500``, ``gsm8k``, ``aime24``, ``aime25``, ``amc23`` (read
            from ``<data_dir>/benchmarks/<name>.json``) or a path to such a JSON file.
        data_dir: The shared data directory (default: ``$OPTSCALE_DATA`` or
            ``../shared/data``).
        limit: Keep the first ``limit`` questions.

    Returns:
        (dataset name, questions).

    Raises:
        FileNotFoundError: When the file cannot be found (the message says where it looked).
    """
    from optscale_jax.io import benchmark_path, read_prompts

    path = benchmark_path(name_or_path, data_dir=data_dir)
    ids, prompts, gold = read_prompts(path)
    if limit is not None:
        if limit < 1:
            raise ValueError(f"limit must be >= 1, got {limit}")
        ids, prompts, gold = ids[:limit], prompts[:limit], gold[:limit]
    return path.stem, [Question(i, p, g) for i, p, g in zip(ids, prompts, gold, strict=True)]


def request_seed(seed: int, question: int, sample: int) -> int:
    """Seed of the request that draws sample ``sample`` onwards of question ``question``.

    A pure function of its arguments (a hash), in [0, 2**31), so a resumed run
    sends the same requests as the interrupted one.
    """
    h = hashlib.sha256(f"{int(seed)}:{int(question)}:{int(sample)}".encode()).digest()
    return int.from_bytes(h[:4], "big") & 0x7FFFFFFF


@dataclass
class RunResult:
    """Outcome of a live run.

    Attributes:
        pool: The graded pool (also written to ``out/pool.parquet``).
        summary: Accuracy, tokens, samples per question, savings (also ``out/summary.json``).
        chosen: ``(Q,)`` index of the sample the policy kept (-1 when none drawn).
        out: The run directory.
    """

    pool: Any
    summary: dict[str, Any]
    chosen: np.ndarray
    out: Path


@dataclass(frozen=True)
class _Settings:
    """What stays fixed for the whole run."""

    questions: list[Question]
    policy: Policy
    n_max: int
    batch: int | None
    token_budget: int | None
    aggregate: str
    seed: int
    dataset: str
    out: Path
    base_prompts: list[str]  # the prompt template filled in, per question
    engine_name: str  # for error messages
    scorer_name: str


@dataclass
class _LiveState:
    """Per-run state of the wave loop: what was drawn, and the counters of the summary."""

    rows: list[list[SampleRecord]]  # drawn samples per question
    classes: list[list[int]] = field(default_factory=list)  # answer class of each drawn sample
    waves: int = 0
    engine_calls: int = 0
    budget_hit: bool = False
    plans: dict[int, list[int]] = field(default_factory=dict)  # logged allocations by wave

    @property
    def tokens(self) -> int:
        """Completion tokens spent so far."""
        return int(sum(s.tokens for row in self.rows for s in row))

    @property
    def samples(self) -> int:
        """Samples drawn so far."""
        return int(sum(len(row) for row in self.rows))


@dataclass(frozen=True)
class _Wave:
    """The requests of one wave: one per open question."""

    questions: np.ndarray  # indices of the open questions
    first: np.ndarray  # index of each one's first new sample
    prompts: list[str]
    requests: list[SampleRequest]
    extra: np.ndarray | None = None  # a planning policy's allocation (all questions)
    logged: bool = False  # ``extra`` was read back from the journal


def run(
    questions: Sequence[Question],
    engine: Engine,
    scorer: Scorer,
    policy: Policy,
    *,
    out: str | Path,
    batch: int | None = None,
    token_budget: int | None = None,
    aggregate: str = "mean",
    seed: int = 0,
    prompt_template: str = DEFAULT_PROMPT_TEMPLATE,
    dataset: str = "custom",
    resume: bool = True,
    grader: Any = None,
    grade: bool = True,
    progress: bool | Callable[[dict[str, Any]], None] = False,
    provenance: dict[str, Any] | None = None,
) -> RunResult:
    """Run a policy live over an engine and a PRM, writing a resumable pool.

    Args:
        questions: The questions (ids unique).
        engine: Sampling backend (:class:`~optscale_jax.engines.Engine`).
        scorer: PRM backend (:class:`~optscale_jax.engines.Scorer`).
        policy: Any replay policy (:mod:`optscale_jax.policies`) or :class:`MRThinking`.
        out: Run directory: ``samples.jsonl`` (append-only log), then ``pool.parquet``
            and ``summary.json``.
        batch: At most this many new samples per question per wave (None: as many as
            the policy wants).
        token_budget: Stop starting waves once this many completion tokens are spent
            (the last wave may overshoot by at most one wave).
        aggregate: Step-score aggregation: ``mean`` (paper), ``last``, ``min``, ``product``.
        seed: Run seed; request seeds derive from it (see :func:`request_seed`).
        prompt_template: User prompt with ``{question}`` replaced by the question.
        dataset: Dataset name stored in the pool.
        resume: Continue the run in ``out`` if there is one; it must have been made with
            the same settings (every header field, see :func:`run_header`). False: move
            an existing run aside to ``out/previous-<k>/`` (nothing is deleted) and
            start afresh.
        grader: A :class:`optscale_jax.grading.Grader` to reuse (default: a new one).
        grade: Grade answers against gold with math-verify at the end.
        progress: True for a tqdm bar, or a callback receiving a dict after each wave.
        provenance: More header fields that decide the run (e.g. the prior file's
            sha256); compared on resume like the others.

    The run directory is locked (:func:`lock_run_dir`) for the whole call: a
    second run on the same directory fails at once naming this one's PID.

    Returns:
        A :class:`RunResult`.

    Raises:
        EngineError: When the engine or PRM fails; everything scored before the
            failure is on disk and a new call with the same arguments resumes.
        RunLockedError: When another process holds ``out``.
        RunMismatchError: When ``out`` holds a run with other settings (names each field).
        SamplesFormatError: When ``out/samples.jsonl`` is malformed (file, line, field).
        ValueError: On bad arguments.
    """
    from optscale_jax.grading import Grader

    questions = list(questions)
    _check_arguments(questions, policy, aggregate=aggregate, batch=batch, token_budget=token_budget,
                     prompt_template=prompt_template)
    out = Path(out)
    header = run_header(
        questions, policy, engine=describe(engine), prm=describe(scorer), aggregate=aggregate,
        seed=seed, batch=batch, prompt_template=prompt_template, dataset=dataset,
        provenance=provenance,
    )
    cfg = _Settings(
        questions=questions, policy=policy, n_max=int(policy.n_max), batch=batch,
        token_budget=token_budget, aggregate=aggregate, seed=seed, dataset=dataset, out=out,
        base_prompts=[prompt_template.replace("{question}", q.text) for q in questions],
        engine_name=header["engine"].get("backend", "engine"),
        scorer_name=header["prm"].get("backend", "prm"),
    )
    with lock_run_dir(out):
        journal = open_journal(out, header, len(questions), resume=resume)
        state = _LiveState(rows=journal.rows, waves=journal.waves,
                           plans=read_allocations(journal.path))
        own_grader = grader is None
        g = Grader() if own_grader else grader
        report = _Progress(progress, total=len(questions) * cfg.n_max, initial=journal.resumed,
                           desc=f"live {policy.name}")
        t0 = time.perf_counter()
        try:
            state.classes = [_answer_classes(row, g) for row in state.rows]
            with open(journal.path, "a", encoding="utf-8") as fh:
                while (wave := _plan_wave(cfg, state)) is not None:
                    if wave.extra is not None and not wave.logged:
                        append_allocation(fh, state.waves, wave.extra.tolist(),
                                          tokens_spent=state.tokens)
                    new = _draw_and_score(cfg, wave, engine, scorer, wave_index=state.waves)
                    _record(fh, state, wave, new, g)
                    report.wave_done(state, open_questions=wave.questions.size, new=len(new))
            return _finish(cfg, state, journal, g, grade=grade, started=t0)
        finally:
            report.close()
            if own_grader:
                g.close()


def _check_arguments(questions: list[Question], policy: Policy, *, aggregate: str,
                     batch: int | None, token_budget: int | None, prompt_template: str) -> None:
    """Refuse bad arguments before anything touches the run directory."""
    if not questions:
        raise ValueError("run: no questions")
    ids = [q.id for q in questions]
    if len(set(ids)) != len(ids):
        dup = next(i for i in ids if ids.count(i) > 1)
        raise ValueError(f"run: question id {dup!r} appears more than once")
    if aggregate not in AGGREGATIONS:
        raise ValueError(f"run: aggregate must be one of {AGGREGATIONS}, got {aggregate!r}")
    if batch is not None and batch < 1:
        raise ValueError(f"run: batch must be >= 1, got {batch}")
    if token_budget is not None and token_budget < 1:
        raise ValueError(f"run: token_budget must be >= 1, got {token_budget}")
    if "{question}" not in prompt_template:
        raise ValueError("run: prompt_template must contain '{question}'")
    n_max = int(policy.n_max)
    if n_max < 1:
        raise ValueError(f"run: policy {policy.name!r} has n_max {n_max}")


def _answer_classes(row: list[SampleRecord], grader: Any) -> list[int]:
    """Equivalence class of each drawn answer of one question."""
    from optscale_jax.grading import equivalence_classes

    return equivalence_classes([s.answer for s in row], grader).tolist()


def _observed(state: _LiveState, n_max: int) -> Observed:
    """What the policy sees: everything drawn so far, padded to ``n_max`` per question."""
    q = len(state.rows)
    scores = np.zeros((q, n_max))
    mask = np.zeros((q, n_max), dtype=bool)
    answer_ids = np.full((q, n_max), -1, dtype=np.int32)
    tokens = np.zeros((q, n_max), dtype=np.int64)
    selectable = np.zeros((q, n_max), dtype=bool)
    for i, row in enumerate(state.rows):
        n = len(row)
        mask[i, :n] = True
        scores[i, :n] = [s.score for s in row]
        tokens[i, :n] = [s.tokens for s in row]
        answer_ids[i, :n] = state.classes[i][:n]
        selectable[i, :n] = [bool(s.text.strip()) for s in row]
    return Observed(scores=scores, mask=mask, answer_ids=answer_ids, tokens=tokens,
                    selectable=selectable)


def _plan_wave(cfg: _Settings, state: _LiveState) -> _Wave | None:
    """Plan the next wave: ask the policy what each question wants.

    None when no question wants more, or when the token budget is spent.

    Each open question gets one request for what it wants beyond what it has (at
    most ``batch``, never beyond ``n_max``), seeded by (run seed, question, first
    new sample index), and prompted by the policy's ``prompt`` method if it has one.
    """
    obs = _observed(state, cfg.n_max)
    plan = getattr(cfg.policy, "plan", None)  # a budget policy: its allocation is journaled
    logged = plan is not None and state.waves in state.plans
    if logged:  # a resumed run draws the plan logged for this wave, whatever a refit says
        want = obs.n_drawn + np.asarray(state.plans[state.waves], dtype=np.int64)
    elif plan is not None:
        want = obs.n_drawn + np.asarray(plan(obs)).astype(np.int64)
    else:
        want = np.asarray(cfg.policy.want(obs)).astype(np.int64)
    if want.shape != (len(cfg.questions),):
        raise ValueError(f"policy {cfg.policy.name!r}: want() returned shape {want.shape}, "
                         f"expected ({len(cfg.questions)},)")
    drawn = obs.n_drawn
    more = np.maximum(np.clip(want, 0, cfg.n_max) - drawn, 0)
    if cfg.batch is not None:
        more = np.minimum(more, cfg.batch)
    open_q = np.flatnonzero(more > 0)
    if open_q.size == 0:
        return None
    if cfg.token_budget is not None and state.tokens >= cfg.token_budget:
        state.budget_hit = True
        return None
    make_prompt = getattr(cfg.policy, "prompt", None)
    prompts = [make_prompt(cfg.base_prompts[i], [s.text for s in state.rows[i]]) if make_prompt
               else cfg.base_prompts[i] for i in open_q]
    requests = [SampleRequest(p, int(more[i]), request_seed(cfg.seed, int(i), int(drawn[i])))
                for i, p in zip(open_q, prompts, strict=True)]
    return _Wave(questions=open_q, first=drawn[open_q], prompts=prompts, requests=requests,
                 extra=more if plan is not None else None, logged=logged)


def _draw_and_score(cfg: _Settings, wave: _Wave, engine: Engine, scorer: Scorer, *,
                    wave_index: int) -> list[SampleRecord]:
    """Draw the wave (one engine call) and score it (one PRM call), with aggregate and answers."""
    from optscale_jax.answers import extract_answer

    completions = engine.sample(wave.requests)
    if len(completions) != len(wave.requests) or any(
        len(c) != r.n for c, r in zip(completions, wave.requests, strict=False)
    ):
        raise EngineError(f"engine {cfg.engine_name!r} returned the wrong number of completions")
    flat: list[tuple[int, int, SampleRequest, str, Completion]] = [
        (int(i), int(j0) + k, r, prompt, c)
        for i, j0, r, prompt, comps in zip(wave.questions, wave.first, wave.requests, wave.prompts,
                                            completions, strict=True)
        for k, c in enumerate(comps)
    ]
    steps = scorer.score([cfg.questions[i].text for i, *_ in flat], [c.text for *_, c in flat])
    if len(steps) != len(flat):
        raise EngineError(f"scorer returned {len(steps)} results for {len(flat)} completions")
    new = []
    for (i, j, r, prompt, c), st in zip(flat, steps, strict=True):
        try:
            score = aggregate_step_scores(st, cfg.aggregate)  # kept for empties too
        except (TypeError, ValueError) as e:
            raise EngineError(
                f"scorer {cfg.scorer_name!r} gave invalid step scores for sample {j} of "
                f"question {cfg.questions[i].id!r}: {e}"
            ) from e
        answer = None if not c.text.strip() else extract_answer(c.text)
        new.append(SampleRecord(i, j, wave_index, r.seed, prompt, c.text, int(c.tokens),
                                c.finish_reason, [float(x) for x in st], score, answer))
    return new


def _record(fh: IO[str], state: _LiveState, wave: _Wave, new: list[SampleRecord],
            grader: Any) -> None:
    """Append the wave to the journal (durable before anything else happens), then to the state."""
    append_samples(fh, new)
    for s in new:
        state.rows[s.q].append(s)
    for i in wave.questions:
        state.classes[i] = _answer_classes(state.rows[i], grader)
    state.engine_calls += 1
    state.waves += 1


class _Progress:
    """A tqdm bar (``progress=True``) or a callback receiving a dict after each wave."""

    def __init__(self, progress: bool | Callable[[dict[str, Any]], None], *, total: int,
                 initial: int, desc: str):
        self.bar = None
        if progress is True:
            from tqdm.auto import tqdm

            self.bar = tqdm(total=total, initial=initial, unit="sample", desc=desc)
        self.callback = progress if callable(progress) else None

    def wave_done(self, state: _LiveState, *, open_questions: int, new: int) -> None:
        if self.bar is not None:
            self.bar.update(new)
            self.bar.set_postfix(open=int(open_questions), tokens=state.tokens)
        if self.callback is not None:
            self.callback({"wave": state.waves, "open": int(open_questions), "new": new,
                           "samples": state.samples})

    def close(self) -> None:
        if self.bar is not None:
            self.bar.total = self.bar.n  # adaptive runs stop short of Q * n_max
            self.bar.refresh()
            self.bar.close()


def _finish(cfg: _Settings, state: _LiveState, journal: JournalState, grader: Any, *, grade: bool,
            started: float) -> RunResult:
    """Finish: the policy's choice per question, the graded pool and the summary, written out."""
    obs = _observed(state, cfg.n_max)
    chosen = np.asarray(cfg.policy.select(obs)).astype(np.int64)
    chosen = np.where(obs.n_drawn > 0, chosen, -1)
    pool = _build_pool(cfg, state, journal.header)
    if grade and all(q.gold is not None for q in cfg.questions):
        from optscale_jax.grading import grade_pool

        pool = grade_pool(pool, grader=grader)
    elapsed = time.perf_counter() - started
    summary = _summary(pool, state, chosen, cfg, graded=grade and pool.gold is not None)
    summary.update(
        {"engine_calls": state.engine_calls, "waves": state.waves,
         "resumed_samples": journal.resumed, "budget_exhausted": state.budget_hit,
         "token_budget": cfg.token_budget, "seconds": elapsed,
         "moved_aside": None if journal.moved_aside is None else str(journal.moved_aside)}
    )
    pool.metadata["live_run"] = summary
    from optscale_jax.io import write_parquet

    write_parquet(pool, cfg.out / POOL_FILE)
    (cfg.out / SUMMARY_FILE).write_text(json.dumps(summary, indent=2), encoding="utf-8")
    return RunResult(pool=pool, summary=summary, chosen=chosen, out=cfg.out)


def _build_pool(cfg: _Settings, state: _LiveState, header: dict[str, Any]) -> Any:
    """The pool of everything drawn; ``header`` is the journal's (the run's settings on disk)."""
    from optscale_jax.pool import Pool

    rows, questions = state.rows, cfg.questions
    return Pool.from_arrays(
        [[s.score for s in r] for r in rows],
        tokens=[[s.tokens for s in r] for r in rows],
        answers=[[s.answer for s in r] for r in rows],
        answer_ids=[state.classes[i][: len(r)] for i, r in enumerate(rows)],
        empty=[[not s.text.strip() for s in r] for r in rows],
        question_ids=[q.id for q in questions],
        dataset=cfg.dataset,
        prompts=[q.text for q in questions],
        gold=None if any(q.gold is None for q in questions) else [q.gold for q in questions],
        step_scores=[[s.step_scores for s in r] for r in rows],
        metadata={"source": "live run", "aggregate": cfg.aggregate,
                  "policy": header["policy"]["name"], "engine": header["engine"],
                  "prm": header["prm"], "seed": header["seed"], "live_header": header},
    )


def _summary(pool: Any, state: _LiveState, chosen: np.ndarray, cfg: _Settings, *,
             graded: bool) -> dict[str, Any]:
    """Accuracy, tokens, samples per question and the tokens saved against Best-of-``n_max``."""
    n_max = cfg.n_max
    n = np.array([len(r) for r in state.rows], dtype=np.int64)
    tok = np.array([sum(s.tokens for s in r) for r in state.rows], dtype=np.float64)
    # Best-of-n_max on the same run: n_max samples per question at the mean length this
    # question's samples had here (exact where the run drew n_max).
    per_sample = np.divide(tok, n, out=np.zeros_like(tok), where=n > 0)
    bon_tokens = per_sample * n_max
    saved = float(1.0 - tok.sum() / bon_tokens.sum()) if bon_tokens.sum() > 0 else 0.0
    out: dict[str, Any] = {
        "policy": cfg.policy.name,
        "n_max": n_max,
        "questions": int(len(n)),
        "samples": int(n.sum()),
        "mean_samples": float(n.mean()),
        "tokens": int(tok.sum()),
        "mean_tokens": float(tok.mean()),
        "bon_n_max_tokens_estimate": float(bon_tokens.sum()),
        "tokens_saved_vs_bon_n_max": saved,
        "accuracy": None,
    }
    if graded:
        rows = np.arange(len(n))
        ok = chosen >= 0
        corr = np.zeros(len(n), dtype=bool)
        corr[ok] = pool.correct[rows[ok], chosen[ok]]
        out["accuracy"] = float(corr.mean())
        out["correct"] = corr.tolist()
    out["chosen"] = chosen.tolist()
    return out
