"""HuggingFace search-and-learn JSON Lines pools (``read_search_and_learn``)."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from optscale_jax.answers import extract_gold
from optscale_jax.io._common import PoolFormatError, check_id, list_of, samples_from_fields
from optscale_jax.pool import Pool
from optscale_jax.scores import AGGREGATIONS

__all__ = ["read_search_and_learn"]


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
        aggregate: step-score aggregation, one of :data:`optscale_jax.scores.AGGREGATIONS`.

    Returns:
        The pool with step scores, answers extracted (not graded) and gold answers.

    Raises:
        PoolFormatError: naming the file, line and field that is malformed.
    """
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
            comp = list_of(path, rec, "completions", item["completions"], "strings")
            scores = list_of(path, rec, "scores", item["scores"], "per-step score lists")
            toks = list_of(path, rec, "completion_tokens", item["completion_tokens"], "token counts")
            s, t, a, e, steps = samples_from_fields(
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
            qids.append(check_id(path, rec, key, item[key]) if key in item else str(lineno))
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

