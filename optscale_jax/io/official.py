"""The OptScale authors' JSON pool format (``read_official``)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from optscale_jax.io._common import (
    PoolFormatError,
    check_id,
    list_of,
    load_json,
    samples_from_fields,
)
from optscale_jax.io.prompts import read_prompts
from optscale_jax.pool import Pool
from optscale_jax.scores import AGGREGATIONS

__all__ = ["read_official"]


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
        aggregate: step-score aggregation, one of :data:`optscale_jax.scores.AGGREGATIONS`.
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
    data = load_json(path)
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
        check_id(path, rec, "id", qid)
        rec = f"record {k} (id {qid!r})"
        sc = item.get("score")
        if not isinstance(sc, dict):
            raise PoolFormatError(path, rec, "score", "missing or not an object")
        for key in ("completions", "scores", "completion_tokens"):
            if key not in sc:
                raise PoolFormatError(path, rec, f"score.{key}", "missing")
        comp = list_of(path, rec, "score.completions", sc["completions"], "completions")
        wrapped = len(comp) == 1 and isinstance(comp[0], list)
        comp = _unwrap(path, rec, "score.completions", comp, wrapped)
        scores = list_of(path, rec, "score.scores", _unwrap(path, rec, "score.scores", sc["scores"], wrapped), "scores")
        toks = list_of(
            path,
            rec,
            "score.completion_tokens",
            _unwrap(path, rec, "score.completion_tokens", sc["completion_tokens"], wrapped),
            "token counts",
        )
        last = sc.get("last_scores")
        if last is not None:
            last = list_of(path, rec, "score.last_scores", _unwrap(path, rec, "score.last_scores", last, wrapped), "scores")
        s, t, a, e, steps = samples_from_fields(
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

