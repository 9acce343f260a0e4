"""Prompts and benchmark files: questions with gold answers.

A benchmark file (``<data dir>/benchmarks/math500.json`` ...) is a JSON list of objects
with a question and an ``answer``; :func:`read_prompts` reads it (the pool readers use it
for the authors' JSON pools, the live loop for its questions) and :func:`benchmark_path`
finds a benchmark by name in the shared data directory.
"""

from __future__ import annotations

import math
from pathlib import Path

from optscale_jax.answers import extract_gold
from optscale_jax.io._common import PoolFormatError, load_json
from optscale_jax.io.datadir import shared_data_dir

__all__ = ["benchmark_path", "read_prompts"]


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
    path = Path(path)
    data = load_json(path)
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


def benchmark_path(name_or_path: str | Path, *, data_dir: str | Path | None = None) -> Path:
    """The JSON file of a benchmark, by name or path.

    Args:
        name_or_path: ``math500``, ``gsm8k``, ``aime24``, ``aime25``, ``amc23`` (the file
            ``<data_dir>/benchmarks/<name>.json``) or a path to such a JSON file.
        data_dir: the shared data directory (default: :func:`shared_data_dir`).

    Returns:
        The path of an existing file.

    Raises:
        FileNotFoundError: when the file cannot be found (the message says where it looked).
    """
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
    return path
