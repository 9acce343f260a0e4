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

import contextlib
import dataclasses
import hashlib
import json
import math
import os
import socket
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from optscale_jax.engines.base import (
    Completion,
    Engine,
    EngineError,
    SampleRequest,
    Scorer,
    describe,
)
from optscale_jax.engines.prm import AGGREGATIONS, aggregate_step_scores
from optscale_jax.policies.base import Observed, Policy

__all__ = [
    "DEFAULT_PROMPT_TEMPLATE",
    "HEADER_FLAGS",
    "LOCK_FILE",
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

#: User prompt of every question (``{question}`` is replaced); the instruction of
#: the DeepSeek-R1 model cards for maths.
DEFAULT_PROMPT_TEMPLATE = "{question}\nPlease reason step by step, and put your final answer within \\boxed{}."

#: Append-only log of scored samples in a run directory.
SAMPLES_FILE = "samples.jsonl"
#: The graded pool written at the end of a run (read by ``optscale replay``).
POOL_FILE = "pool.parquet"
#: Run summary (accuracy, tokens, samples per question, savings).
SUMMARY_FILE = "summary.json"
#: Lock file of a run directory: held (``flock``) by the one process writing the run,
#: it records that process's PID and host.
LOCK_FILE = "run.lock"
_FORMAT = "optscale-live-samples"
_VERSION = 2

#: The ``optscale run`` option that sets each header field (dotted path), named when a
#: resume refuses because the field differs.
HEADER_FLAGS: dict[str, str] = {
    "engine.backend": "--engine",
    "engine.model": "--model",
    "engine.revision": "--model",
    "engine.temperature": "--temperature",
    "engine.top_p": "--top-p",
    "engine.max_tokens": "--max-tokens",
    "engine.dtype": "--dtype",
    "prm.backend": "--engine",
    "prm.model": "--prm",
    "prm.revision": "--prm",
    "prm.dtype": "--dtype",
    "policy.name": "--policy",
    "policy.n_max": "--n-max",
    "policy.n": "--n-max",
    "policy.rounds": "--n-max",
    "policy.s_min": "--s-min",
    "policy.alpha": "--quantile (alpha = 1 - quantile)",
    "policy.mode": "--mode",
    "policy.prior": "--prior / --prior-std",
    "prior_file.sha256": "--prior",
    "questions.dataset": "--dataset",
    "questions.count": "--dataset / --limit",
    "questions.sha256": "--dataset / --limit",
    "aggregate": "--aggregate",
    "seed": "--seed",
    "batch": "--batch",
}
# Header fields that describe but do not decide the samples: never compared on resume.
_INFO_FIELDS = frozenset({"kind", "created", "optscale_jax_version", "questions.ids"})


class SamplesFormatError(ValueError):
    """A ``samples.jsonl`` that cannot be resumed: the message names file, line, field, expected form."""


class RunMismatchError(ValueError):
    """A run directory holds a run made with different settings.

    Attributes:
        differences: ``(field, old value, new value)`` for each differing header field.
    """

    def __init__(self, message: str, differences: list[tuple[str, Any, Any]]):
        super().__init__(message)
        self.differences = differences


class RunLockedError(ValueError):
    """Another process (or thread) holds the run directory.

    Attributes:
        holder: The holder's PID as recorded in the lock file (None when unknown).
    """

    def __init__(self, message: str, holder: int | None):
        super().__init__(message)
        self.holder = holder


_HELD: dict[str, list[Any]] = {}  # resolved dir -> [fd, depth, thread id]
_HELD_GUARD = threading.Lock()


def _lock_holder(fd: int) -> tuple[int | None, str]:
    os.lseek(fd, 0, os.SEEK_SET)
    text = os.read(fd, 256).decode("utf-8", "replace").split()
    pid = int(text[0]) if text and text[0].isdigit() else None
    return pid, (text[1] if len(text) > 1 else "")


@contextlib.contextmanager
def lock_run_dir(out: str | Path) -> Iterator[Path]:
    """Hold the run directory exclusively (an ``flock`` on ``out/run.lock``).

    The lock file records the holder's PID and host. The kernel releases an
    ``flock`` when its process dies, even by SIGKILL, so a crashed run never
    leaves a stale lock; the file stays and the next holder overwrites it.
    Re-entrant within one thread (``run`` inside a ``lock_run_dir`` block is fine);
    another thread of the same process is refused like another process.

    Args:
        out: The run directory (created if missing).

    Yields:
        The run directory.

    Raises:
        RunLockedError: At once when another process or thread holds it; the
            message names the holder's PID.
    """
    out = Path(out)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise ValueError(f"run directory {out} cannot be created: {e.strerror or e}") from None
    key = str(out.resolve())
    me = threading.get_ident()
    with _HELD_GUARD:
        held = _HELD.get(key)
        if held is not None:
            if held[2] != me:
                raise RunLockedError(
                    f"{out} is in use by another thread of this process (PID {os.getpid()}); "
                    "use another output directory", os.getpid())
            held[1] += 1
    if held is not None:
        try:
            yield out
        finally:
            with _HELD_GUARD:
                held[1] -= 1
        return
    try:
        import fcntl
    except ImportError:  # pragma: no cover - not POSIX: no locking
        yield out
        return
    lock = out / LOCK_FILE
    try:
        fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o644)
    except OSError as e:
        raise ValueError(f"cannot open the lock file {lock}: {e.strerror or e}") from None
    try:
        for attempt in range(20):
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except OSError:
                pid, host = _lock_holder(fd)
                if pid is not None or attempt == 19:
                    where = f" on host {host}" if host and host != socket.gethostname() else ""
                    who = f"PID {pid}{where}" if pid is not None else "a process whose PID is not recorded"
                    raise RunLockedError(
                        f"{out} is in use by another optscale run ({who}; lock file {lock}); wait for "
                        "it to finish or use another output directory", pid) from None
                time.sleep(0.05)  # the holder is between taking the lock and writing its PID
        os.ftruncate(fd, 0)
        os.lseek(fd, 0, os.SEEK_SET)
        os.write(fd, f"{os.getpid()} {socket.gethostname()}\n".encode())
        os.fsync(fd)
    except BaseException:
        os.close(fd)
        raise
    with _HELD_GUARD:
        _HELD[key] = [fd, 1, me]
    try:
        yield out
    finally:
        with _HELD_GUARD:
            _HELD.pop(key, None)
        with contextlib.suppress(OSError):
            os.ftruncate(fd, 0)
        os.close(fd)  # releases the flock


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


#: The user prompt of every round in the authors' sequential (MR-Thinking) generator, with
#: ``{question}`` for the problem (pass it as ``prompt_template`` for their exact prompt).
MR_THINKING_TEMPLATE = (
    "Answer the following questions. You should think step-by-step and put your final answer "
    "within $\\boxed{answer}$, where [answer] is just the final number or expression that solves "
    "the problem.\n Question: {question}"
)


@dataclass
class MRThinking:
    """Multi-round thinking: one sample per round, the last round's answer is kept.

    ``style="official"`` (default) is what the OptScale authors' generator does: every round
    sends the same prompt (the question, rendered with the run's ``prompt_template``; their
    template is :data:`MR_THINKING_TEMPLATE`), without the previous answer.
    ``style="think-twice"`` is the rule of Tian et al. 2025 ("Think Twice", arXiv
    2503.19855): every later round asks the question again followed by
    "The assistant's previous answer is: <answer> {last round answer} </answer>,
    and please re-answer." where the last round answer is the previous completion
    without its reasoning (the text after ``</think>``). ``n_max`` = rounds; tokens of
    every round are charged.

    Args:
        rounds: Number of rounds (>= 1).
        style: ``"official"`` or ``"think-twice"``.
    """

    rounds: int
    name: str = "MR-Thinking"
    style: str = "official"

    def __post_init__(self) -> None:
        if int(self.rounds) != self.rounds or self.rounds < 1:
            raise ValueError(f"MRThinking.rounds must be an integer >= 1, got {self.rounds!r}")
        self.rounds = int(self.rounds)
        if self.style not in ("official", "think-twice"):
            raise ValueError(f"MRThinking.style must be 'official' or 'think-twice', got {self.style!r}")

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
        if not previous or self.style == "official":
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


def _plain(x: Any) -> Any:
    """A JSON-able form of a policy parameter (arrays and priors by content)."""
    if x is None or isinstance(x, bool | int | str):
        return x
    if isinstance(x, float):
        return x if math.isfinite(x) else repr(x)
    if isinstance(x, np.generic):
        return _plain(x.item())
    if isinstance(x, dict):
        return {str(k): _plain(v) for k, v in sorted(x.items(), key=lambda kv: str(kv[0]))}
    if hasattr(x, "_asdict"):
        return {"type": type(x).__name__, **_plain(x._asdict())}
    if dataclasses.is_dataclass(x) and not isinstance(x, type):
        return {"type": type(x).__name__,
                **{f.name: _plain(getattr(x, f.name)) for f in dataclasses.fields(x)}}
    if isinstance(x, list | tuple):
        return [_plain(v) for v in x]
    try:
        a = np.asarray(x)
    except Exception:  # noqa: BLE001 - anything else is described by its repr
        return repr(x)
    if a.dtype.kind in "biuf":
        a = np.ascontiguousarray(a, dtype=np.float64)
        return {"shape": list(a.shape), "sha256": hashlib.sha256(a.tobytes()).hexdigest()}
    if a.dtype != object:
        return _plain(a.tolist())
    # e.g. a numpyro distribution: its array attributes
    attrs = {k: v for k, v in sorted(vars(x).items()) if not k.startswith("_")} if hasattr(x, "__dict__") else {}
    return {"type": type(x).__name__, **_plain(attrs)} if attrs else repr(x)


def _policy_info(policy: Any) -> dict[str, Any]:
    """The policy's name and parameters; non-scalar parameters (priors, arrays) as a hash."""
    if dataclasses.is_dataclass(policy):
        params = {f.name: getattr(policy, f.name) for f in dataclasses.fields(policy)}
    else:
        params = {k: v for k, v in vars(policy).items() if not k.startswith("_")}
    info: dict[str, Any] = {"name": str(policy.name), "n_max": int(policy.n_max)}
    for k, v in sorted(params.items()):
        if k in info:
            continue
        p = _plain(v)
        if not (p is None or isinstance(p, bool | int | float | str)):
            p = "sha256:" + hashlib.sha256(json.dumps(p, sort_keys=True).encode()).hexdigest()
        info[k] = p
    return info


def run_header(
    questions: Sequence[Question],
    policy: Any,
    *,
    engine: dict[str, Any],
    prm: dict[str, Any],
    aggregate: str = "mean",
    seed: int = 0,
    batch: int | None = None,
    prompt_template: str = DEFAULT_PROMPT_TEMPLATE,
    dataset: str = "custom",
    provenance: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """The header record of ``samples.jsonl``: everything that decides what a sample is.

    Args:
        questions: The questions of the run.
        policy: The policy (its name and parameters are recorded; arrays such as an
            OptScaleᵗ prior as a sha256 of their values).
        engine: The generator's settings (``describe(engine)``: backend, model,
            revision or absolute local path, temperature, top_p, max_tokens, ...).
        prm: The PRM's settings (``describe(scorer)``).
        aggregate, seed, batch, prompt_template, dataset: As for :func:`run`.
        provenance: More fields that decide the run (the CLI records
            ``{"prior_file": {"sha256": ...}}``); JSON values, never secrets.

    Returns:
        The header dict (JSON-able).
    """
    from optscale_jax import __version__

    digest = hashlib.sha256(
        json.dumps([[q.id, q.text] for q in questions], ensure_ascii=False).encode()
    ).hexdigest()
    header = {
        "kind": "header",
        "format": _FORMAT,
        "version": _VERSION,
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "optscale_jax_version": __version__,
        "engine": dict(engine),
        "prm": dict(prm),
        "policy": _policy_info(policy),
        "questions": {"dataset": dataset, "count": len(questions), "sha256": digest,
                      "ids": [q.id for q in questions]},
        "aggregate": aggregate,
        "seed": int(seed),
        "batch": batch,
        "prompt_template": prompt_template,
    }
    for k, v in (provenance or {}).items():
        if k in header:
            raise ValueError(f"run_header: provenance key {k!r} clashes with a header field")
        header[k] = v
    return json.loads(json.dumps(header))  # exactly what a reader gets back


def _flatten(d: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict) and v:
            out.update(_flatten(v, key + "."))
        else:
            out[key] = v
    return out


_MISSING = object()


def _show(v: Any) -> str:
    if v is _MISSING:
        return "(absent)"
    text = json.dumps(v, ensure_ascii=False)
    return text if len(text) <= 80 else text[:77] + "..."


def _compare(path: Path, old: dict[str, Any], new: dict[str, Any], *, partial: bool) -> None:
    if old.get("version") != _VERSION:
        raise RunMismatchError(
            f"{path} was written by samples format version {old.get('version')!r}, this is version "
            f"{_VERSION}; resume it with the optscale-jax that wrote it, or pass --no-resume "
            "(resume=False) to move it aside and start afresh",
            [("version", old.get("version"), _VERSION)])
    fo, fn = _flatten(old), _flatten(new)
    keys = list(fn) if partial else list(dict.fromkeys([*fo, *fn]))
    diffs = [(k, fo.get(k, _MISSING), fn.get(k, _MISSING)) for k in keys
             if k not in _INFO_FIELDS and fo.get(k, _MISSING) != fn.get(k, _MISSING)]
    if not diffs:
        return
    parts = [f"{k} was {_show(a)}, now {_show(b)} ({HEADER_FLAGS.get(k, 'no CLI option; a run() argument')})"
             for k, a, b in diffs]
    raise RunMismatchError(
        f"{path} holds a run with other settings: {'; '.join(parts)}. Pass the same settings to "
        "resume it, --no-resume (resume=False) to move it aside and start afresh, or another --out",
        [(k, None if a is _MISSING else a, None if b is _MISSING else b) for k, a, b in diffs])


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_prob(v: Any) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v) and 0.0 <= v <= 1.0


_SAMPLE_FIELDS: dict[str, tuple[Callable[[Any], bool], str]] = {
    "q": (lambda v: _is_int(v) and v >= 0, "an integer >= 0 (question index)"),
    "j": (lambda v: _is_int(v) and v >= 0, "an integer >= 0 (sample index)"),
    "wave": (lambda v: _is_int(v) and v >= 0, "an integer >= 0"),
    "seed": (lambda v: v is None or _is_int(v), "an integer or null"),
    "prompt": (lambda v: isinstance(v, str), "a string"),
    "text": (lambda v: isinstance(v, str), "a string"),
    "tokens": (lambda v: _is_int(v) and v >= 0, "an integer >= 0"),
    "finish_reason": (lambda v: v is None or isinstance(v, str), "a string or null"),
    "step_scores": (lambda v: isinstance(v, list) and all(_is_prob(x) for x in v),
                    "a list of finite numbers in [0, 1]"),
    "score": (_is_prob, "a finite number in [0, 1]"),
    "answer": (lambda v: v is None or isinstance(v, str), "a string or null"),
}


def _check_sample(path: Path, line: int, rec: Any) -> None:
    if not isinstance(rec, dict) or rec.get("kind") != "sample":
        kind = rec.get("kind") if isinstance(rec, dict) else type(rec).__name__
        raise SamplesFormatError(f"{path}: line {line}: expected a sample record (kind 'sample'), got {kind!r}")
    for name, (ok, form) in _SAMPLE_FIELDS.items():
        if name not in rec:
            raise SamplesFormatError(f"{path}: line {line}: field {name!r} is missing; expected {form}")
        v = rec[name]
        if not ok(v):
            shown = repr(v) if isinstance(v, float) else _show(v)
            raise SamplesFormatError(f"{path}: line {line}: field {name!r} is {shown}; expected {form}")


def _scan(path: Path, *, repair: bool) -> tuple[dict[str, Any], list[tuple[int, dict[str, Any]]], int]:
    """(header, [(line, record)], length of the complete part); ``repair`` cuts the torn tail."""
    raw = path.read_bytes()
    # Records are whole lines written in one call; only text after the last newline
    # can be a torn write. A complete line that is not JSON is corruption.
    good_end = raw.rfind(b"\n") + 1
    if not raw:
        raise SamplesFormatError(f"{path}: empty file, expected an {_FORMAT!r} header on line 1")
    if good_end == 0:
        raise SamplesFormatError(
            f"{path}: the header line is incomplete (a run crashed while creating the file); nothing "
            "was changed; pass --no-resume (resume=False) to move it aside and start afresh")
    records: list[tuple[int, Any]] = []
    for k, line in enumerate(raw[:good_end].split(b"\n")[:-1]):
        if not line.strip():
            continue
        try:
            records.append((k + 1, json.loads(line)))
        except (json.JSONDecodeError, UnicodeDecodeError):
            raise SamplesFormatError(f"{path}: line {k + 1} is not valid JSON") from None
    if not records or not isinstance(records[0][1], dict) or records[0][1].get("kind") != "header" \
            or records[0][1].get("format") != _FORMAT:
        raise SamplesFormatError(f"{path}: not a live-run samples file (no {_FORMAT!r} header on line 1)")
    header, samples = records[0][1], records[1:]
    seen: set[tuple[int, int]] = set()
    for line, rec in samples:
        _check_sample(path, line, rec)
        key = (rec["q"], rec["j"])
        if key in seen:
            raise SamplesFormatError(f"{path}: line {line}: sample {rec['j']} of question {rec['q']} written twice")
        seen.add(key)
    if repair and good_end < len(raw):  # only after every complete record checked out
        _truncate(path, good_end)
    return header, samples, good_end


def _truncate(path: Path, size: int) -> None:
    if path.stat().st_size > size:
        with open(path, "r+b") as fh:
            fh.truncate(size)
            fh.flush()
            os.fsync(fh.fileno())


def read_samples(path: str | Path, *, repair: bool = False) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """Read a live run's ``samples.jsonl``.

    A crash can leave a partly written last line; it is dropped (and cut from the
    file when ``repair`` is True, never more than that tail). Every complete
    record is checked (fields, types, finite scores in [0, 1]); a torn or missing
    header is an error and the file is left as it is.

    Args:
        path: The file.
        repair: Truncate the file after its last complete record.

    Returns:
        (header, sample records in file order).

    Raises:
        SamplesFormatError: (a ``ValueError``) naming the file, line, field and the
            expected form of the first bad record, a missing or torn header, or a
            sample written twice.
    """
    header, samples, _ = _scan(Path(path), repair=repair)
    return header, [rec for _, rec in samples]


def _load_state(path: Path, header: dict[str, Any], n_questions: int) -> tuple[_State, dict[str, Any]]:
    old, records, complete = _scan(path, repair=False)
    _compare(path, old, header, partial=False)
    state = _State(samples=[[] for _ in range(n_questions)])
    for line, rec in sorted(records, key=lambda r: (r[1]["q"], r[1]["j"])):
        q, j = rec["q"], rec["j"]
        if q >= n_questions or j != len(state.samples[q]):
            raise SamplesFormatError(
                f"{path}: line {line}: sample {j} of question {q} does not continue its row "
                f"(expected question < {n_questions} and sample {len(state.samples[q]) if q < n_questions else 0})")
        state.samples[q].append(
            _Sample(q, j, rec["wave"], rec["seed"], rec["prompt"], rec["text"], rec["tokens"],
                    rec["finish_reason"], [float(x) for x in rec["step_scores"]], float(rec["score"]),
                    rec["answer"])
        )
        state.waves = max(state.waves, rec["wave"] + 1)
    _truncate(path, complete)  # everything checked out: now cut a torn tail, if any
    return state, old


def check_run_dir(out: str | Path, header: dict[str, Any], *, resume: bool = True) -> int:
    """Check, before loading any model, that ``out`` can be resumed with these settings.

    Reads and validates ``out/samples.jsonl`` (if any) and compares its header with
    ``header`` on the fields ``header`` has (a partial header, e.g. the engine
    settings known from command-line options, is fine). Changes nothing on disk.

    Args:
        out: The run directory.
        header: A (partial) :func:`run_header`.
        resume: False: no comparison (the run will move the old log aside).

    Returns:
        The number of samples on disk (0 when there is no run).

    Raises:
        SamplesFormatError: For a bad log (file, line, field, expected form).
        RunMismatchError: Naming each differing field, old and new values and its option.
    """
    path = Path(out) / SAMPLES_FILE
    if not path.exists() or path.stat().st_size == 0 or not resume:
        return 0
    old, records, _ = _scan(path, repair=False)
    _compare(path, old, header, partial=True)
    return len(records)


def _move_aside(out: Path) -> Path:
    k = 1
    while (out / f"previous-{k}").exists():
        k += 1
    dest = out / f"previous-{k}"
    dest.mkdir()
    for name in (SAMPLES_FILE, POOL_FILE, SUMMARY_FILE):
        if (out / name).exists():
            os.replace(out / name, dest / name)
    return dest


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
    header = run_header(
        questions, policy, engine=describe(engine), prm=describe(scorer), aggregate=aggregate,
        seed=seed, batch=batch, prompt_template=prompt_template, dataset=dataset, provenance=provenance,
    )
    with lock_run_dir(out):
        return _run_locked(questions, engine, scorer, policy, out, header, batch=batch,
                           token_budget=token_budget, aggregate=aggregate, seed=seed, dataset=dataset,
                           resume=resume, grader=grader, grade=grade, progress=progress,
                           prompt_template=prompt_template)


def _run_locked(questions, engine, scorer, policy, out, header, *, batch, token_budget, aggregate, seed,
                dataset, resume, grader, grade, progress, prompt_template) -> RunResult:
    from optscale_jax.grading import Grader, equivalence_classes, extract_answer

    n_max = int(policy.n_max)
    path = out / SAMPLES_FILE
    engine_name = header["engine"].get("backend", "engine")
    scorer_name = header["prm"].get("backend", "prm")
    q_n = len(questions)
    moved = None
    if path.exists() and path.stat().st_size > 0 and not resume:
        moved = _move_aside(out)
    if path.exists() and path.stat().st_size > 0:
        state, header = _load_state(path, header, q_n)  # the pool carries the header on disk
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
                    raise EngineError(f"engine {engine_name!r} returned the wrong number of completions")
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
                        score = aggregate_step_scores(st, aggregate)  # kept for empties too
                    except (TypeError, ValueError) as e:
                        raise EngineError(
                            f"scorer {scorer_name!r} gave invalid step scores for sample {j} of "
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
         "budget_exhausted": budget_hit, "token_budget": token_budget, "seconds": elapsed,
         "moved_aside": None if moved is None else str(moved)}
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
        metadata={"source": "live run", "aggregate": aggregate, "policy": header["policy"]["name"],
                  "engine": header["engine"], "prm": header["prm"], "seed": header["seed"],
                  "live_header": header},
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
