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
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from optscale_jax.engines.base import Completion, Engine, EngineError, SampleRequest, Scorer
from optscale_jax.engines.prm import AGGREGATIONS, aggregate_step_scores
from optscale_jax.policies.base import Observed, Policy

__all__ = [
    "DEFAULT_PROMPT_TEMPLATE",
    "POOL_FILE",
    "SAMPLES_FILE",
    "SUMMARY_FILE",
    "MRThinking",
    "Question",
    "RunResult",
    "final_answer_text",
    "load_benchmark",
    "read_samples",
    "request_seed",
    "run",
]

#: User prompt of every question (``{question}`` is replaced); the instruction of
#: the DeepSeek-R1 model cards for maths.
DEFAULT_PROMPT_TEMPLATE = "{question}\nPlease reason step by step, and put your final answer within \\boxed{}."

#: Append-only log of scored samples in a run directory.
SAMPLES_FILE = "samples.jsonl"
#: The graded pool written at the end of a run (read by ``optscale replay``).
POOL_FILE = "pool.parquet"
#: Run summary (accuracy, tokens, samples per question, savings).
SUMMARY_FILE = "summary.json"
_FORMAT = "optscale-live-samples"
_VERSION = 1


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
    from optscale_jax.pool import read_prompts, shared_data_dir

    path = Path(name_or_path)
    if path.suffix != ".json":
        base = Path(data_dir) if data_dir is not None else shared_data_dir()
        if base is None:
            raise FileNotFoundError(
                f"benchmark {name_or_path!r}: no shared data directory; set OPTSCALE_DATA, pass "
                "data_dir, or give a path to the JSON file"
            )
        path = base / "benchmarks" / f"{str(name_or_path).lower()}.json"
    if not path.is_file():
        raise FileNotFoundError(f"benchmark file {path} does not exist")
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


def final_answer_text(completion: str) -> str:
    """The part of a completion after its reasoning: text after the last ``</think>``, else all."""
    return completion.rsplit("</think>", 1)[1].strip() if "</think>" in completion else completion.strip()


@dataclass
class MRThinking:
    """Multi-round thinking (Tian et al. 2025, "Think Twice", arXiv 2503.19855).

    Round 1 asks the question; every later round asks it again followed by
    "The assistant's previous answer is: <answer> {last round answer} </answer>,
    and please re-answer." where the last round answer is the previous
    completion without its reasoning (the text after ``</think>``). One sample
    per round; the answer kept is the last round's. ``n_max`` = rounds; tokens
    of every round are charged.

    Args:
        rounds: Number of rounds (>= 1).
    """

    rounds: int
    name: str = "MR-Thinking"

    def __post_init__(self) -> None:
        if int(self.rounds) != self.rounds or self.rounds < 1:
            raise ValueError(f"MRThinking.rounds must be an integer >= 1, got {self.rounds!r}")
        self.rounds = int(self.rounds)

    @property
    def n_max(self) -> int:
        """Number of rounds."""
        return self.rounds

    def want(self, obs: Observed) -> np.ndarray:
        """One more sample per round, until ``rounds``."""
        return np.minimum(obs.n_drawn + 1, self.rounds)

    def select(self, obs: Observed) -> np.ndarray:
        """The last drawn sample (the final round's answer)."""
        return np.maximum(obs.n_drawn - 1, 0)

    def prompt(self, question_prompt: str, previous: Sequence[str]) -> str:
        """The user prompt of the next round given the completions of earlier rounds."""
        if not previous:
            return question_prompt
        return (
            f"{question_prompt}\nThe assistant's previous answer is: <answer> "
            f"{final_answer_text(previous[-1])} </answer>, and please re-answer."
        )


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


@dataclass
class _Sample:
    q: int
    j: int
    wave: int
    seed: int | None
    prompt: str
    text: str
    tokens: int
    finish_reason: str | None
    step_scores: list[float]
    score: float
    answer: str | None


@dataclass
class _State:
    samples: list[list[_Sample]] = field(default_factory=list)
    waves: int = 0


def _header(questions: Sequence[Question], policy: Policy, config: dict[str, Any]) -> dict[str, Any]:
    digest = hashlib.sha256(
        json.dumps([[q.id, q.text] for q in questions], ensure_ascii=False).encode()
    ).hexdigest()
    return {
        "kind": "header",
        "format": _FORMAT,
        "version": _VERSION,
        "questions_sha256": digest,
        "question_ids": [q.id for q in questions],
        "policy": policy.name,
        "n_max": int(policy.n_max),
        **config,
    }


def read_samples(path: str | Path, *, repair: bool = False) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """Read a live run's ``samples.jsonl``.

    A crash can leave a partly written last line; it is dropped (and cut from the
    file when ``repair`` is True). Any other malformed line is an error.

    Args:
        path: The file.
        repair: Truncate the file after its last complete record.

    Returns:
        (header, sample records in file order).

    Raises:
        ValueError: Naming the file and line of a malformed record, a missing
            header, or a sample written twice.
    """
    path = Path(path)
    raw = path.read_bytes()
    # Records are whole lines written in one call; only text after the last newline
    # can be a torn write. A complete line that is not JSON is corruption.
    good_end = raw.rfind(b"\n") + 1
    records: list[dict[str, Any]] = []
    for k, line in enumerate(raw[:good_end].split(b"\n")[:-1]):
        if not line.strip():
            continue
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:
            raise ValueError(f"{path}: line {k + 1} is not valid JSON") from None
    if repair and good_end < len(raw):
        with open(path, "r+b") as fh:
            fh.truncate(good_end)
            fh.flush()
            os.fsync(fh.fileno())
    if not records or records[0].get("kind") != "header" or records[0].get("format") != _FORMAT:
        raise ValueError(f"{path}: not a live-run samples file (no {_FORMAT!r} header on line 1)")
    header, samples = records[0], records[1:]
    seen: set[tuple[int, int]] = set()
    for k, rec in enumerate(samples):
        if rec.get("kind") != "sample":
            raise ValueError(f"{path}: line {k + 2}: expected a sample record, got kind {rec.get('kind')!r}")
        key = (rec["q"], rec["j"])
        if key in seen:
            raise ValueError(f"{path}: line {k + 2}: sample {rec['j']} of question {rec['q']} written twice")
        seen.add(key)
    return header, samples


def _load_state(path: Path, header: dict[str, Any], n_questions: int) -> _State:
    old, records = read_samples(path, repair=True)
    for key in ("format", "version", "questions_sha256", "policy", "n_max", "aggregate", "seed",
                "prompt_template", "batch"):
        if old.get(key) != header.get(key):
            raise ValueError(
                f"{path} holds a run with a different {key} ({old.get(key)!r}, this run: "
                f"{header.get(key)!r}); use another output directory or resume=False"
            )
    state = _State(samples=[[] for _ in range(n_questions)])
    for rec in sorted(records, key=lambda r: (r["q"], r["j"])):
        q, j = int(rec["q"]), int(rec["j"])
        if not 0 <= q < n_questions or j != len(state.samples[q]):
            raise ValueError(f"{path}: sample {j} of question {q} does not continue its row")
        state.samples[q].append(
            _Sample(q, j, int(rec["wave"]), rec.get("seed"), rec["prompt"], rec["text"], int(rec["tokens"]),
                    rec.get("finish_reason"), list(rec["step_scores"]), float(rec["score"]), rec.get("answer"))
        )
        state.waves = max(state.waves, int(rec["wave"]) + 1)
    return state


def _append(fh: Any, samples: Sequence[_Sample]) -> None:
    lines = []
    for s in samples:
        rec = {"kind": "sample", **s.__dict__}
        lines.append(json.dumps(rec, ensure_ascii=False))
    fh.write("\n".join(lines) + "\n")
    fh.flush()
    os.fsync(fh.fileno())


def _observed(state: _State, n_max: int, classes: list[list[int]]) -> Observed:
    q = len(state.samples)
    scores = np.zeros((q, n_max))
    mask = np.zeros((q, n_max), dtype=bool)
    answer_ids = np.full((q, n_max), -1, dtype=np.int32)
    tokens = np.zeros((q, n_max), dtype=np.int64)
    selectable = np.zeros((q, n_max), dtype=bool)
    for i, row in enumerate(state.samples):
        n = len(row)
        mask[i, :n] = True
        scores[i, :n] = [s.score for s in row]
        tokens[i, :n] = [s.tokens for s in row]
        answer_ids[i, :n] = classes[i][:n]
        selectable[i, :n] = [bool(s.text.strip()) for s in row]
    return Observed(scores=scores, mask=mask, answer_ids=answer_ids, tokens=tokens, selectable=selectable)


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
        resume: Continue the run in ``out`` if there is one (False: error if there is).
        grader: A :class:`optscale_jax.grading.Grader` to reuse (default: a new one).
        grade: Grade answers against gold with math-verify at the end.
        progress: True for a tqdm bar, or a callback receiving a dict after each wave.

    Returns:
        A :class:`RunResult`.

    Raises:
        EngineError: When the engine or PRM fails; everything scored before the
            failure is on disk and a new call with the same arguments resumes.
        ValueError: On bad arguments or a run directory holding a different run.
    """
    from optscale_jax.grading import Grader, equivalence_classes, extract_answer

    questions = list(questions)
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

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    path = out / SAMPLES_FILE
    header = _header(
        questions,
        policy,
        {"aggregate": aggregate, "seed": int(seed), "prompt_template": prompt_template,
         "batch": batch, "dataset": dataset, "engine": getattr(engine, "name", type(engine).__name__),
         "scorer": getattr(scorer, "name", type(scorer).__name__)},
    )
    q_n = len(questions)
    if path.exists() and path.stat().st_size > 0:
        if not resume:
            raise ValueError(f"{path} exists; pass resume=True to continue that run or use a new directory")
        state = _load_state(path, header, q_n)
    else:
        with open(path, "w", encoding="utf-8") as fh:
            fh.write(json.dumps(header, ensure_ascii=False) + "\n")
            fh.flush()
            os.fsync(fh.fileno())
        state = _State(samples=[[] for _ in range(q_n)])
    resumed = sum(len(r) for r in state.samples)

    own_grader = grader is None
    g = Grader() if own_grader else grader
    base_prompts = [prompt_template.replace("{question}", q.text) for q in questions]
    make_prompt = getattr(policy, "prompt", None)
    bar = None
    if progress is True:
        from tqdm.auto import tqdm

        bar = tqdm(total=q_n * n_max, initial=resumed, unit="sample", desc=f"live {policy.name}")
    callback = progress if callable(progress) else None
    t0 = time.perf_counter()
    engine_calls = 0
    budget_hit = False

    def classes_of(i: int) -> list[int]:
        return equivalence_classes([s.answer for s in state.samples[i]], g).tolist()

    try:
        classes = [classes_of(i) for i in range(q_n)]
        with open(path, "a", encoding="utf-8") as fh:
            while True:
                obs = _observed(state, n_max, classes)
                want = np.asarray(policy.want(obs)).astype(np.int64)
                if want.shape != (q_n,):
                    raise ValueError(f"policy {policy.name!r}: want() returned shape {want.shape}, expected ({q_n},)")
                drawn = obs.n_drawn
                target = np.clip(want, 0, n_max)
                more = np.maximum(target - drawn, 0)
                if batch is not None:
                    more = np.minimum(more, batch)
                open_q = np.flatnonzero(more > 0)
                if open_q.size == 0:
                    break
                spent = int(sum(s.tokens for row in state.samples for s in row))
                if token_budget is not None and spent >= token_budget:
                    budget_hit = True
                    break
                requests, prompts = [], []
                for i in open_q:
                    j0 = int(drawn[i])
                    prev = [s.text for s in state.samples[i]]
                    prompt = make_prompt(base_prompts[i], prev) if make_prompt else base_prompts[i]
                    prompts.append(prompt)
                    requests.append(SampleRequest(prompt, int(more[i]), request_seed(seed, int(i), j0)))
                completions = engine.sample(requests)
                engine_calls += 1
                if len(completions) != len(requests) or any(
                    len(c) != r.n for c, r in zip(completions, requests, strict=False)
                ):
                    raise EngineError(f"engine {header['engine']!r} returned the wrong number of completions")
                flat: list[tuple[int, int, SampleRequest, str, Completion]] = []
                for i, r, prompt, comps in zip(open_q, requests, prompts, completions, strict=True):
                    for k, c in enumerate(comps):
                        flat.append((int(i), int(drawn[i]) + k, r, prompt, c))
                steps = scorer.score([questions[i].text for i, *_ in flat], [c.text for *_, c in flat])
                if len(steps) != len(flat):
                    raise EngineError(f"scorer returned {len(steps)} results for {len(flat)} completions")
                new = []
                for (i, j, r, prompt, c), st in zip(flat, steps, strict=True):
                    empty = not c.text.strip()
                    try:
                        score = 0.0 if empty else aggregate_step_scores(st, aggregate)
                    except (TypeError, ValueError) as e:
                        raise EngineError(
                            f"scorer {header['scorer']!r} gave invalid step scores for sample {j} of "
                            f"question {questions[i].id!r}: {e}"
                        ) from e
                    new.append(_Sample(i, j, state.waves, r.seed, prompt, c.text, int(c.tokens),
                                       c.finish_reason, [float(x) for x in st], score,
                                       None if empty else extract_answer(c.text)))
                _append(fh, new)  # durable before anything else happens
                for s in new:
                    state.samples[s.q].append(s)
                for i in open_q:
                    classes[i] = classes_of(int(i))
                state.waves += 1
                if bar is not None:
                    bar.update(len(new))
                    bar.set_postfix(open=int(open_q.size), tokens=spent + sum(s.tokens for s in new))
                if callback is not None:
                    callback({"wave": state.waves, "open": int(open_q.size), "new": len(new),
                              "samples": int(sum(len(r) for r in state.samples))})
        obs = _observed(state, n_max, classes)
        chosen = np.asarray(policy.select(obs)).astype(np.int64)
        chosen = np.where(obs.n_drawn > 0, chosen, -1)
        pool = _build_pool(questions, state, classes, dataset, aggregate, header)
        if grade and all(q.gold is not None for q in questions):
            from optscale_jax.grading import grade_pool

            pool = grade_pool(pool, grader=g)
        elapsed = time.perf_counter() - t0
    finally:
        if bar is not None:
            bar.total = bar.n  # adaptive runs stop short of Q * n_max
            bar.refresh()
            bar.close()
        if own_grader:
            g.close()

    summary = _summary(pool, state, chosen, policy, n_max, graded=grade and pool.gold is not None)
    summary.update(
        {"engine_calls": engine_calls, "waves": state.waves, "resumed_samples": resumed,
         "budget_exhausted": budget_hit, "token_budget": token_budget, "seconds": elapsed}
    )
    pool.metadata["live_run"] = summary
    from optscale_jax.pool import write_parquet

    write_parquet(pool, out / POOL_FILE)
    (out / SUMMARY_FILE).write_text(json.dumps(summary, indent=2), encoding="utf-8")
    return RunResult(pool=pool, summary=summary, chosen=chosen, out=out)


def _build_pool(questions, state, classes, dataset, aggregate, header):
    from optscale_jax.pool import Pool

    rows = state.samples
    return Pool.from_arrays(
        [[s.score for s in r] for r in rows],
        tokens=[[s.tokens for s in r] for r in rows],
        answers=[[s.answer for s in r] for r in rows],
        answer_ids=[classes[i][: len(r)] for i, r in enumerate(rows)],
        empty=[[not s.text.strip() for s in r] for r in rows],
        question_ids=[q.id for q in questions],
        dataset=dataset,
        prompts=[q.text for q in questions],
        gold=None if any(q.gold is None for q in questions) else [q.gold for q in questions],
        step_scores=[[s.step_scores for s in r] for r in rows],
        metadata={"source": "live run", "aggregate": aggregate, "policy": header["policy"],
                  "engine": header["engine"], "scorer": header["scorer"], "seed": header["seed"]},
    )


def _summary(pool, state, chosen, policy, n_max, *, graded: bool) -> dict[str, Any]:
    n = np.array([len(r) for r in state.samples], dtype=np.int64)
    tok = np.array([sum(s.tokens for s in r) for r in state.samples], dtype=np.float64)
    # Best-of-n_max on the same run: n_max samples per question at the mean length this
    # question's samples had here (exact where the run drew n_max).
    per_sample = np.divide(tok, n, out=np.zeros_like(tok), where=n > 0)
    bon_tokens = per_sample * n_max
    out: dict[str, Any] = {
        "policy": policy.name,
        "n_max": n_max,
        "questions": int(len(n)),
        "samples": int(n.sum()),
        "mean_samples": float(n.mean()),
        "tokens": int(tok.sum()),
        "mean_tokens": float(tok.mean()),
        "bon_n_max_tokens_estimate": float(bon_tokens.sum()),
        "tokens_saved_vs_bon_n_max": float(1.0 - tok.sum() / bon_tokens.sum()) if bon_tokens.sum() > 0 else 0.0,
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
