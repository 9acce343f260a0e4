"""What every pool reader shares: the error type and the checks of one sample's fields.

Private to :mod:`optscale_jax.io` (the names are public so the readers can share them);
users import :class:`PoolFormatError` from :mod:`optscale_jax.io`.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from optscale_jax.answers import extract_answer
from optscale_jax.scores import aggregate_step_scores

__all__ = [
    "FileFieldError",
    "MAX_TOKENS",
    "PoolFormatError",
    "check_id",
    "check_tokens",
    "check_unit",
    "is_number",
    "list_of",
    "load_json",
    "samples_from_fields",
]


class FileFieldError(ValueError):
    """A malformed input file; the message names the file, the record and the field.

    The base of :class:`PoolFormatError` and :class:`~optscale_jax.io.priors.PriorsFileError`.

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


class PoolFormatError(FileFieldError):
    """A pool or prompts file is malformed; the message names file, record and field.

    Attributes:
        path: the file.
        record: human-readable record locator (``"line 3"``, ``"record 2"``), or ``None``.
        field: the offending field, or ``None``.
    """


def is_number(x: Any) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool)


def check_unit(path: Path, rec: str, field_name: str, x: Any) -> float:
    try:
        ok = is_number(x) and math.isfinite(x) and 0.0 <= x <= 1.0
    except OverflowError:  # an integer literal too large for a float (10**400)
        ok = False
    if not ok:
        shown = repr(x) if not isinstance(x, int) or abs(x) < 10**20 else f"an integer of {len(str(abs(x)))} digits"
        raise PoolFormatError(path, rec, field_name, f"{shown} is not a finite number in [0, 1]")
    return float(x)


#: Largest token count a pool holds (int64); beyond it the count cannot be stored.
MAX_TOKENS = 2**63 - 1


def check_tokens(path: Path, rec: str, field_name: str, x: Any) -> int:
    if isinstance(x, float) and x.is_integer():
        x = int(x)
    if not isinstance(x, int) or isinstance(x, bool) or x < 0:
        raise PoolFormatError(path, rec, field_name, f"{x!r} is not a non-negative integer")
    if x > MAX_TOKENS:
        raise PoolFormatError(path, rec, field_name, f"{x:.3g} is not a token count (above 2**63 - 1)")
    return x


def check_id(path: Path, rec: str, field_name: str, x: Any) -> str:
    """A question id: a non-empty string or an integer (never null, a bool, a list or an object)."""
    if isinstance(x, bool) or not isinstance(x, (str, int)) or (isinstance(x, str) and not x.strip()):
        raise PoolFormatError(path, rec, field_name, f"expected a non-empty string or integer id, got {x!r}")
    return str(x)


def list_of(path: Path, rec: str, field_name: str, value: Any, what: str) -> list[Any]:
    if not isinstance(value, list):
        raise PoolFormatError(
            path, rec, field_name, f"expected a list of {what}, got {type(value).__name__}"
        )
    return value


def samples_from_fields(
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
        out_tokens.append(check_tokens(path, rec, f"{names['tokens']}[{j}]", tokens[j]))
        if step_scores is not None:
            steps = [
                check_unit(path, rec, f"{names['scores']}[{j}][{k}]", x)
                for k, x in enumerate(scores[j])
            ]
            step_scores.append(steps)
            value = aggregate_step_scores(steps, aggregate)
        else:
            value = check_unit(path, rec, f"{names['scores']}[{j}]", scores[j])
            if aggregate == "last":
                if last_scores is None:
                    raise PoolFormatError(
                        path,
                        rec,
                        names["last_scores"],
                        "aggregate='last' needs per-step scores or a last_scores field",
                    )
                value = check_unit(path, rec, f"{names['last_scores']}[{j}]", last_scores[j])
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


def load_json(path: Path) -> Any:
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
