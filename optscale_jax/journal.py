"""The live run's journal: ``samples.jsonl`` in a run directory held by one process.

A live run (:func:`optscale_jax.online.run`) writes every scored sample here
before it asks for more, so a crash loses at most the wave in flight and a
rerun resumes from disk. This module owns the file's format and everything
that touches it (the contract is in ``docs/CONTRACTS.md``, "Engines and the
live loop"):

* the run directory's lock (:func:`lock_run_dir`, ``run.lock``);
* the header record (:func:`run_header`): everything that decides what a sample
  is, compared field by field on resume (:func:`check_run_dir`,
  :class:`RunMismatchError` naming each field and its ``optscale run`` option,
  :data:`HEADER_FLAGS`);
* sample records (:class:`SampleRecord`), validated on read
  (:class:`SamplesFormatError`: file, line, field, expected form);
* reading with repair of a torn last line (:func:`read_samples`,
  :func:`open_journal`), appending with ``fsync`` (:func:`append_samples`), and
  moving an old run aside (:func:`move_aside`).
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
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import numpy as np

__all__ = [
    "DEFAULT_PROMPT_TEMPLATE",
    "FORMAT",
    "HEADER_DEFAULTS",
    "HEADER_FLAGS",
    "INFO_FIELDS",
    "LOCK_FILE",
    "POOL_FILE",
    "SAMPLES_FILE",
    "SUMMARY_FILE",
    "VERSION",
    "JournalState",
    "RunLockedError",
    "RunMismatchError",
    "SampleRecord",
    "SamplesFormatError",
    "append_allocation",
    "append_samples",
    "check_run_dir",
    "compare_headers",
    "lock_run_dir",
    "move_aside",
    "open_journal",
    "read_allocations",
    "read_samples",
    "run_header",
]

#: User prompt of every question (``{question}`` is replaced); the instruction of
#: the DeepSeek-R1 model cards for maths. Recorded in the header of every run.
DEFAULT_PROMPT_TEMPLATE = (
    "{question}\nPlease reason step by step, and put your final answer within \\boxed{}."
)

#: Append-only log of scored samples in a run directory.
SAMPLES_FILE = "samples.jsonl"
#: The graded pool written at the end of a run (read by ``optscale replay``).
POOL_FILE = "pool.parquet"
#: Run summary (accuracy, tokens, samples per question, savings).
SUMMARY_FILE = "summary.json"
#: Lock file of a run directory: held (``flock``) by the one process writing the run,
#: it records that process's PID and host.
LOCK_FILE = "run.lock"
#: The header's ``format`` field.
FORMAT = "optscale-live-samples"
#: The header's ``version`` field; a log of another version is never resumed.
VERSION = 2

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
    "policy.family": "--family",
    "policy.prior": "--prior / --prior-std",
    "prior_file.sha256": "--prior",
    "questions.dataset": "--dataset",
    "questions.count": "--dataset / --limit",
    "questions.sha256": "--dataset / --limit",
    "aggregate": "--aggregate",
    "seed": "--seed",
    "batch": "--batch",
}
#: Header fields (dotted paths) that describe but do not decide the samples: never
#: compared on resume.
INFO_FIELDS = frozenset({"kind", "created", "optscale_jax_version", "questions.ids"})
#: Fields added to the header after runs were written without them, and the value such a
#: header means (a run from before score families drew under the truncated normal): an
#: absent field compares as this value on resume.
HEADER_DEFAULTS: dict[str, Any] = {"policy.family": "truncnorm"}


class SamplesFormatError(ValueError):
    """A ``samples.jsonl`` that cannot be resumed.

    The message names the file, line, field and expected form.
    """


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


# ---------------------------------------------------------------------------------------------
# The lock

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
                    who = (f"PID {pid}{where}" if pid is not None
                           else "a process whose PID is not recorded")
                    raise RunLockedError(
                        f"{out} is in use by another optscale run ({who}; lock file {lock}); "
                        "wait for it to finish or use another output directory", pid) from None
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


# ---------------------------------------------------------------------------------------------
# The header

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
    attrs = ({k: v for k, v in sorted(vars(x).items()) if not k.startswith("_")}
             if hasattr(x, "__dict__") else {})
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
    questions: Sequence[Any],
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
        questions: The questions of the run (anything with ``id`` and ``text``, e.g.
            :class:`optscale_jax.online.Question`).
        policy: The policy (its name and parameters are recorded; arrays such as an
            OptScaleᵗ prior as a sha256 of their values).
        engine: The generator's settings (``describe(engine)``: backend, model,
            revision or absolute local path, temperature, top_p, max_tokens, ...).
        prm: The PRM's settings (``describe(scorer)``).
        aggregate, seed, batch, prompt_template, dataset: As for
            :func:`optscale_jax.online.run`.
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
        "format": FORMAT,
        "version": VERSION,
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


def compare_headers(path: Path, old: dict[str, Any], new: dict[str, Any], *, partial: bool) -> None:
    """Refuse to resume the log at ``path`` (header ``old``) with the settings ``new``.

    Args:
        path: The log (named in the message).
        old: Its header, as read.
        new: The header of the run about to resume.
        partial: Compare only the fields ``new`` has (a header known before the
            models load); False compares the union of both.

    Raises:
        RunMismatchError: When the format version or any field but :data:`INFO_FIELDS`
            differs; names each field, its old and new values and its option.
    """
    if old.get("version") != VERSION:
        raise RunMismatchError(
            f"{path} was written by samples format version {old.get('version')!r}, this is version "
            f"{VERSION}; resume it with the optscale-jax that wrote it, or pass --no-resume "
            "(resume=False) to move it aside and start afresh",
            [("version", old.get("version"), VERSION)])
    fo, fn = _flatten(old), _flatten(new)
    for k, default in HEADER_DEFAULTS.items():  # a header written before field k existed
        if (k in fo) != (k in fn):
            fo.setdefault(k, default)
            fn.setdefault(k, default)
    keys = list(fn) if partial else list(dict.fromkeys([*fo, *fn]))
    diffs = [(k, fo.get(k, _MISSING), fn.get(k, _MISSING)) for k in keys
             if k not in INFO_FIELDS and fo.get(k, _MISSING) != fn.get(k, _MISSING)]
    if not diffs:
        return
    parts = [f"{k} was {_show(a)}, now {_show(b)} "
             f"({HEADER_FLAGS.get(k, 'no CLI option; a run() argument')})"
             for k, a, b in diffs]
    raise RunMismatchError(
        f"{path} holds a run with other settings: {'; '.join(parts)}. Pass the same settings to "
        "resume it, --no-resume (resume=False) to move it aside and start afresh, or another --out",
        [(k, None if a is _MISSING else a, None if b is _MISSING else b) for k, a, b in diffs])


# ---------------------------------------------------------------------------------------------
# Sample records

@dataclass
class SampleRecord:
    """One scored sample as the journal stores it (a ``"kind": "sample"`` line).

    Attributes:
        q: Question index in the run.
        j: Sample index within the question (rows are contiguous from 0).
        wave: The wave that drew it.
        seed: Seed of the request that drew it (None when the engine ignores seeds).
        prompt: The user prompt sent.
        text: The completion.
        tokens: Completion tokens.
        finish_reason: The engine's finish reason, or None.
        step_scores: PRM probabilities per reasoning step.
        score: The aggregated score in [0, 1].
        answer: The extracted answer (None for an empty completion).
    """

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


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_prob(v: Any) -> bool:
    return (isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v)
            and 0.0 <= v <= 1.0)


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
        raise SamplesFormatError(
            f"{path}: line {line}: expected a sample record (kind 'sample'), got {kind!r}")
    for name, (ok, form) in _SAMPLE_FIELDS.items():
        if name not in rec:
            raise SamplesFormatError(
                f"{path}: line {line}: field {name!r} is missing; expected {form}")
        v = rec[name]
        if not ok(v):
            shown = repr(v) if isinstance(v, float) else _show(v)
            raise SamplesFormatError(
                f"{path}: line {line}: field {name!r} is {shown}; expected {form}")


def _check_allocation(path: Path, line: int, rec: dict[str, Any]) -> bool:
    """Check a ``"kind": "allocation"`` record (a budget policy's plan of one wave); True."""
    if not (_is_int(rec.get("wave")) and rec["wave"] >= 0):
        raise SamplesFormatError(
            f"{path}: line {line}: field 'wave' is {_show(rec.get('wave'))}; expected an "
            "integer >= 0")
    want = rec.get("extra")
    if not (isinstance(want, list) and all(_is_int(v) and v >= 0 for v in want)):
        raise SamplesFormatError(
            f"{path}: line {line}: field 'extra' is {_show(want)}; expected a list of integers "
            ">= 0 (new samples per question)")
    return True


def read_allocations(path: str | Path) -> dict[int, list[int]]:
    """The per-wave allocations a budget policy logged: ``{wave: extra samples per question}``.

    Args:
        path: a run's ``samples.jsonl``.

    Returns:
        The plans by wave (the last record of a wave wins).
    """
    raw = Path(path).read_bytes()
    out: dict[int, list[int]] = {}
    for line in raw[: raw.rfind(b"\n") + 1].split(b"\n"):
        if b'"allocation"' not in line:
            continue
        rec = json.loads(line)
        if isinstance(rec, dict) and rec.get("kind") == "allocation":
            out[int(rec["wave"])] = [int(v) for v in rec["extra"]]
    return out


def append_allocation(fh: IO[str], wave: int, extra: Sequence[int], **info: Any) -> None:
    """Append one wave's allocation (before its samples are drawn), then flush and ``fsync``.

    A resumed run reads it back (:func:`read_allocations`) and draws exactly this plan for
    a wave whose samples did not all reach the file.

    Args:
        fh: The journal opened for appending.
        wave: The wave index.
        extra: New samples per question in this wave.
        **info: More JSON fields (e.g. the remaining budget).
    """
    rec = {"kind": "allocation", "wave": int(wave), "extra": [int(v) for v in extra], **info}
    fh.write(json.dumps(rec) + "\n")
    fh.flush()
    os.fsync(fh.fileno())


# ---------------------------------------------------------------------------------------------
# Reading, repairing, appending

def _scan(path: Path, *,
          repair: bool) -> tuple[dict[str, Any], list[tuple[int, dict[str, Any]]], int]:
    """(header, [(line, record)], length of the complete part); ``repair`` cuts the torn tail."""
    raw = path.read_bytes()
    # Records are whole lines written in one call; only text after the last newline
    # can be a torn write. A complete line that is not JSON is corruption.
    good_end = raw.rfind(b"\n") + 1
    if not raw:
        raise SamplesFormatError(f"{path}: empty file, expected an {FORMAT!r} header on line 1")
    if good_end == 0:
        raise SamplesFormatError(
            f"{path}: the header line is incomplete (a run crashed while creating the file); "
            "nothing was changed; pass --no-resume (resume=False) to move it aside and start "
            "afresh")
    records: list[tuple[int, Any]] = []
    for k, line in enumerate(raw[:good_end].split(b"\n")[:-1]):
        if not line.strip():
            continue
        try:
            records.append((k + 1, json.loads(line)))
        except (json.JSONDecodeError, UnicodeDecodeError):
            raise SamplesFormatError(f"{path}: line {k + 1} is not valid JSON") from None
    if not records or not isinstance(records[0][1], dict) or records[0][1].get("kind") != "header" \
            or records[0][1].get("format") != FORMAT:
        raise SamplesFormatError(
            f"{path}: not a live-run samples file (no {FORMAT!r} header on line 1)")
    header, samples = records[0][1], records[1:]
    samples = [(line, rec) for line, rec in samples
               if not (isinstance(rec, dict) and rec.get("kind") == "allocation"
                       and _check_allocation(path, line, rec))]
    seen: set[tuple[int, int]] = set()
    for line, rec in samples:
        _check_sample(path, line, rec)
        key = (rec["q"], rec["j"])
        if key in seen:
            raise SamplesFormatError(
                f"{path}: line {line}: sample {rec['j']} of question {rec['q']} written twice")
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


def read_samples(
    path: str | Path, *, repair: bool = False
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
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
    compare_headers(path, old, header, partial=True)
    return len(records)


def move_aside(out: Path) -> Path:
    """Move a run's files (samples, pool, summary) to the first free ``out/previous-<k>/``.

    Args:
        out: The run directory.

    Returns:
        The new directory; nothing is deleted.
    """
    k = 1
    while (out / f"previous-{k}").exists():
        k += 1
    dest = out / f"previous-{k}"
    dest.mkdir()
    for name in (SAMPLES_FILE, POOL_FILE, SUMMARY_FILE):
        if (out / name).exists():
            os.replace(out / name, dest / name)
    return dest


@dataclass
class JournalState:
    """What an opened journal holds.

    Attributes:
        path: The ``samples.jsonl`` file.
        header: The header on disk (the one a resumed run continues; else the new one).
        rows: Samples per question, in sample order (empty rows for a new run).
        waves: Waves already done (one more than the last wave on disk).
        resumed: Samples read back from disk.
        moved_aside: Where an old run went (``resume=False``), else None.
    """

    path: Path
    header: dict[str, Any]
    rows: list[list[SampleRecord]]
    waves: int = 0
    resumed: int = 0
    moved_aside: Path | None = None


def _read_rows(path: Path, header: dict[str, Any], n_questions: int) -> JournalState:
    old, records, complete = _scan(path, repair=False)
    compare_headers(path, old, header, partial=False)
    state = JournalState(path=path, header=old, rows=[[] for _ in range(n_questions)])
    for line, rec in sorted(records, key=lambda r: (r[1]["q"], r[1]["j"])):
        q, j = rec["q"], rec["j"]
        if q >= n_questions or j != len(state.rows[q]):
            expected = len(state.rows[q]) if q < n_questions else 0
            raise SamplesFormatError(
                f"{path}: line {line}: sample {j} of question {q} does not continue its row "
                f"(expected question < {n_questions} and sample {expected})")
        state.rows[q].append(
            SampleRecord(q, j, rec["wave"], rec["seed"], rec["prompt"], rec["text"], rec["tokens"],
                         rec["finish_reason"], [float(x) for x in rec["step_scores"]],
                         float(rec["score"]), rec["answer"])
        )
        state.waves = max(state.waves, rec["wave"] + 1)
    state.resumed = len(records)
    _truncate(path, complete)  # everything checked out: now cut a torn tail, if any
    return state


def open_journal(
    out: Path, header: dict[str, Any], n_questions: int, *, resume: bool
) -> JournalState:
    """Resume the run in ``out`` or start a new journal there.

    Call it holding :func:`lock_run_dir`.

    With ``resume`` and a non-empty ``samples.jsonl``, its header must match
    ``header`` on every field (:func:`compare_headers`), every record is checked,
    rows must be contiguous, and only then is a torn last line cut. Without
    ``resume`` an old run is moved aside first (:func:`move_aside`). A new journal
    gets ``header`` as its first line, fsynced.

    Args:
        out: The run directory.
        header: The full :func:`run_header` of the run.
        n_questions: Number of questions of the run.
        resume: Continue the run on disk; False moves it aside.

    Returns:
        The :class:`JournalState`.

    Raises:
        RunMismatchError: When the run on disk has other settings.
        SamplesFormatError: When the log on disk is malformed.
    """
    path = out / SAMPLES_FILE
    moved = None
    if path.exists() and path.stat().st_size > 0 and not resume:
        moved = move_aside(out)
    if path.exists() and path.stat().st_size > 0:
        state = _read_rows(path, header, n_questions)
    else:
        with open(path, "w", encoding="utf-8") as fh:
            fh.write(json.dumps(header, ensure_ascii=False) + "\n")
            fh.flush()
            os.fsync(fh.fileno())
        state = JournalState(path=path, header=header, rows=[[] for _ in range(n_questions)])
    state.moved_aside = moved
    return state


def append_samples(fh: IO[str], samples: Sequence[SampleRecord]) -> None:
    """Append sample records to an open journal in one write, then flush and ``fsync``.

    Args:
        fh: The journal opened for appending (text mode, UTF-8).
        samples: The records of one wave.
    """
    lines = []
    for s in samples:
        rec = {"kind": "sample", **s.__dict__}
        lines.append(json.dumps(rec, ensure_ascii=False))
    fh.write("\n".join(lines) + "\n")
    fh.flush()
    os.fsync(fh.fileno())
