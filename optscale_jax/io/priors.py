r"""Priors files for OptScaleᵗ (MAP): the one reader and writer of the package.

Two formats are read:

* **The authors' list** (``*_train_mu_sigma.json``, their predictor's output): a JSON
  list with one ``[μ̄, σ̄]`` pair per question, in the order of the benchmark's questions
  (the rows of the pool). The authors use these as prior centres exactly as stored, with
  prior std 0.1 for both parameters; so do we. Their MATH-500 file has 3 rows with
  σ̄ ≤ 0 and their GSM8K file 8: a Gaussian prior N(σ̄, 0.1) restricted to σ > 0 is still
  well defined (it favours small σ), so such centres are accepted, with one warning line
  that says how many there are.
* **optscale-priors** (what ``predictor`` writes; plain JSON, columnar)::

      {
        "format": "optscale-priors",
        "version": 1,
        "space": "truncnorm_params",      # loc_* are (μ, σ) of the untruncated normal
        "question_ids": ["test/algebra/1004.json", ...],   # distinct
        "loc_mu":      [...],             # μ̄  (prior centre of μ), finite
        "scale_mu":    [...],             # σ_μ (prior width of μ), > 0
        "loc_sigma":   [...],             # σ̄  (prior centre of σ), finite (≤ 0: warned)
        "scale_sigma": [...],             # σ_σ (prior width of σ), > 0
        "pred_mean":   [...],             # optional: predicted score mean (inspection only)
        "pred_std":    [...],             # optional: predicted score std
        "meta": {...}                     # optional: backbone, objective, metrics
      }

  matched to the pool by question id (the file may hold more ids than the pool).

The four columns are the fields of :class:`optscale_jax.model.GaussianPrior`.
Every problem in a file raises :class:`PriorsFileError` (a ``ValueError``) naming the
file, the record and the field, with plain numbers.
"""

from __future__ import annotations

import json
import math
import os
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
from numpy.typing import ArrayLike

from optscale_jax.io._common import FileFieldError

__all__ = [
    "COLUMNS",
    "DEFAULT_WIDTH",
    "FORMAT",
    "SPACES",
    "VERSION",
    "NonPositiveSigmaCentreWarning",
    "PriorArrays",
    "PriorsFileError",
    "load_prior",
    "read_priors",
    "write_priors",
]

FORMAT = "optscale-priors"
VERSION = 1
SPACES: tuple[str, ...] = ("truncnorm_params",)
"""Known parameter spaces: ``loc_*`` are the (μ, σ) of the untruncated normal."""
COLUMNS: tuple[str, ...] = ("loc_mu", "scale_mu", "loc_sigma", "scale_sigma")
DEFAULT_WIDTH = 0.1
"""The authors' prior std for both μ and σ (used for their list files)."""


class PriorsFileError(FileFieldError):
    """A priors file is malformed; the message names file, record and field.

    Attributes:
        path: the file.
        record: record locator (``"record 3"``, ``"record 3 (question 'x')"``) or ``None``.
        field: the offending field, or ``None``.
    """


class NonPositiveSigmaCentreWarning(UserWarning):
    """Some prior centres σ̄ are ≤ 0 (accepted as they are, as the authors do)."""


class PriorArrays(NamedTuple):
    """Per-question Gaussian prior arrays (float64, shape ``(Q,)``), aligned to the pool."""

    loc_mu: np.ndarray
    scale_mu: np.ndarray
    loc_sigma: np.ndarray
    scale_sigma: np.ndarray

    def to_gaussian(self) -> Any:
        """The same prior as a :class:`optscale_jax.model.GaussianPrior`."""
        from optscale_jax.model import GaussianPrior

        return GaussianPrior(*self)


def _num(x: float) -> str:
    return repr(float(x))


def _is_number(x: Any) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool)


def _check_width(name: str, width: Any) -> float:
    if not _is_number(width) or not math.isfinite(width) or width <= 0:
        raise ValueError(f"{name} must be a finite number > 0, got {width!r}")
    return float(width)


def _warn_sigma_centres(path: Any, loc_sigma: np.ndarray, rec_names: Sequence[str]) -> None:
    bad = np.flatnonzero(loc_sigma <= 0)
    if bad.size == 0:
        return
    shown = ", ".join(rec_names[int(i)] for i in bad[:5]) + (", ..." if bad.size > 5 else "")
    warnings.warn(
        f"{path}: {bad.size} of {loc_sigma.size} prior centres of sigma are <= 0 ({shown}); "
        "used as they are (the prior N(centre, width) on sigma > 0 favours small sigma)",
        NonPositiveSigmaCentreWarning,
        stacklevel=3,
    )


def _load_json(path: Path) -> Any:
    try:
        text = path.read_text(encoding="utf-8-sig")  # -sig: a leading byte-order mark is skipped
    except OSError as exc:
        raise PriorsFileError(path, None, None, f"cannot read the file ({exc.strerror or exc})") from None
    except UnicodeDecodeError as exc:
        raise PriorsFileError(path, None, None, f"is not UTF-8 text ({exc.reason} at byte {exc.start})") from None
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise PriorsFileError(
            path, f"line {exc.lineno}, column {exc.colno}", None, f"invalid JSON: {exc.msg}"
        ) from None
    except RecursionError:
        raise PriorsFileError(path, None, None, "invalid JSON: nested too deeply") from None


def _finite(x: float) -> bool:
    try:
        return math.isfinite(x)
    except OverflowError:  # an integer literal too large for a float (10**400)
        return False


def _positions(path: Path, n_rows: int, question_ids: Sequence[str] | None, positions: Any) -> np.ndarray:
    if positions is not None:
        idx = np.asarray(list(positions), dtype=np.int64).reshape(-1)
        if idx.size and (idx.min() < 0 or idx.max() >= n_rows):
            raise PriorsFileError(
                path, None, None,
                f"has {n_rows} [mu, sigma] records, position {int(idx.max())} was asked for",
            )
        if question_ids is not None and len(question_ids) != idx.size:
            raise ValueError(
                f"read_priors: {len(question_ids)} question_ids but {idx.size} positions"
            )
        return idx
    if question_ids is not None and len(question_ids) != n_rows:
        raise PriorsFileError(
            path, None, None,
            f"has {n_rows} [mu, sigma] records, the pool has {len(question_ids)} questions "
            "(the authors' list is matched to the questions by position)",
        )
    return np.arange(n_rows)


def _read_list(
    path: Path, data: list, question_ids: Sequence[str] | None, positions: Any, width: float
) -> tuple[PriorArrays, list[str]]:
    if not data:
        raise PriorsFileError(path, None, None, "the list of [mu, sigma] records is empty")
    rows = np.empty((len(data), 2), dtype=np.float64)
    for k, rec in enumerate(data):
        where = f"record {k}"
        if not isinstance(rec, (list, tuple)) or len(rec) != 2:
            got = f"{len(rec)} entries" if isinstance(rec, (list, tuple)) else type(rec).__name__
            raise PriorsFileError(path, where, None, f"expected a [mu, sigma] pair, got {got}")
        for j, name in enumerate(("mu", "sigma")):
            x = rec[j]
            if not _is_number(x):
                raise PriorsFileError(path, where, name, f"expected a number, got {x!r}")
            if not _finite(x):
                raise PriorsFileError(path, where, name, f"{_num(x) if isinstance(x, float) else 'an integer this large'} is not finite")
            rows[k, j] = float(x)
    idx = _positions(path, len(data), question_ids, positions)
    w = np.full(idx.size, width)
    arrays = PriorArrays(rows[idx, 0].copy(), w, rows[idx, 1].copy(), w.copy())
    return arrays, [f"record {int(i)}" for i in idx]


def _read_columns(
    path: Path, data: dict, question_ids: Sequence[str] | None
) -> tuple[PriorArrays, list[str]]:
    version = data.get("version")
    if version is None:
        raise PriorsFileError(path, None, "version", "missing")
    if not isinstance(version, int) or isinstance(version, bool) or version < 1:
        raise PriorsFileError(path, None, "version", f"expected a positive integer, got {version!r}")
    if version > VERSION:
        raise PriorsFileError(
            path, None, "version",
            f"version {version} is newer than this package reads ({VERSION}): upgrade optscale-jax",
        )
    space = data.get("space", SPACES[0])
    if space not in SPACES:
        raise PriorsFileError(
            path, None, "space", f"unknown parameter space {space!r} (known: {', '.join(SPACES)})"
        )
    ids_raw = data.get("question_ids")
    if not isinstance(ids_raw, list):
        raise PriorsFileError(path, None, "question_ids", "missing or not a list")
    ids: list[str] = []
    seen: dict[str, int] = {}
    for k, qid in enumerate(ids_raw):
        if not isinstance(qid, (str, int)) or isinstance(qid, bool):
            raise PriorsFileError(path, f"record {k}", "question_ids", f"expected a string, got {qid!r}")
        qid = str(qid)
        if qid in seen:
            raise PriorsFileError(
                path, f"record {k}", "question_ids",
                f"duplicate question id {qid!r} (also record {seen[qid]})",
            )
        seen[qid] = k
        ids.append(qid)
    cols: dict[str, np.ndarray] = {}
    for name in COLUMNS:
        col = data.get(name)
        if not isinstance(col, list):
            raise PriorsFileError(path, None, name, "missing or not a list")
        if len(col) != len(ids):
            raise PriorsFileError(
                path, None, name, f"has {len(col)} entries, 'question_ids' has {len(ids)}"
            )
        out = np.empty(len(ids), dtype=np.float64)
        for k, x in enumerate(col):
            where = f"record {k} (question {ids[k]!r})"
            if not _is_number(x):
                raise PriorsFileError(path, where, name, f"expected a number, got {x!r}")
            if not _finite(x):
                raise PriorsFileError(path, where, name, f"{_num(x) if isinstance(x, float) else 'an integer this large'} is not finite")
            if name.startswith("scale") and x <= 0:
                raise PriorsFileError(path, where, name, f"{_num(x)} is not > 0 (a prior width)")
            out[k] = float(x)
        cols[name] = out
    if question_ids is None:
        idx = np.arange(len(ids))
    else:
        missing = [str(q) for q in question_ids if str(q) not in seen]
        if missing:
            raise PriorsFileError(
                path, None, "question_ids",
                f"no prior for question {missing[0]!r} ({len(missing)} of {len(question_ids)} "
                "pool questions missing)",
            )
        idx = np.array([seen[str(q)] for q in question_ids], dtype=np.int64)
    arrays = PriorArrays(*(cols[c][idx] for c in COLUMNS))
    return arrays, [f"record {int(i)} (question {ids[int(i)]!r})" for i in idx]


def read_priors(
    path: str | os.PathLike,
    question_ids: Sequence[str] | None = None,
    *,
    positions: Sequence[int] | np.ndarray | None = None,
    width: float = DEFAULT_WIDTH,
    warn: bool = True,
) -> PriorArrays:
    """Read a priors file (the authors' list or ``optscale-priors``) as prior arrays.

    Args:
        path: the file.
        question_ids: the pool's question ids. An ``optscale-priors`` file is matched by
            id; the authors' list by position and must then have exactly this many rows.
            Default: every record of the file, in file order.
        positions: for the authors' list only: which rows to take (e.g. the first
            ``limit`` questions of a benchmark); overrides the length check. Ignored for
            ``optscale-priors`` files, which are matched by id.
        width: prior std of μ and σ for the authors' list (theirs: 0.1).
        warn: emit one :class:`NonPositiveSigmaCentreWarning` when centres σ̄ ≤ 0 are used.

    Returns:
        :class:`PriorArrays` aligned to ``question_ids`` (or to the file).

    Raises:
        PriorsFileError: naming the file, record and field: unreadable JSON, an unknown
            format, ``space`` or a newer ``version``, duplicate ids, wrong lengths,
            non-numbers or non-finite values, widths ≤ 0, ids the file lacks.

    Examples:
        >>> import json, os, tempfile
        >>> f = os.path.join(tempfile.mkdtemp(), "MATH500_train_mu_sigma.json")
        >>> _ = open(f, "w").write(json.dumps([[0.6, 0.12], [0.45, 0.08]]))
        >>> p = read_priors(f, ["q1", "q2"])
        >>> p.loc_mu.tolist(), p.loc_sigma.tolist(), p.scale_mu.tolist()
        ([0.6, 0.45], [0.12, 0.08], [0.1, 0.1])
    """
    width = _check_width("width", width)
    path = Path(path)
    data = _load_json(path)
    if isinstance(data, list):
        arrays, names = _read_list(path, data, question_ids, positions, width)
    elif isinstance(data, dict) and data.get("format") == FORMAT:
        arrays, names = _read_columns(path, data, question_ids)
    else:
        got = f"an object with format {data.get('format')!r}" if isinstance(data, dict) else type(data).__name__
        raise PriorsFileError(
            path, None, None,
            f"expected a list of [mu, sigma] pairs (the authors' format) or an {FORMAT!r} "
            f"object, got {got}",
        )
    if warn:
        _warn_sigma_centres(path, arrays.loc_sigma, names)
    return arrays


def load_prior(
    path: str | os.PathLike,
    question_ids: Sequence[str] | None = None,
    *,
    positions: Sequence[int] | np.ndarray | None = None,
    width: float = DEFAULT_WIDTH,
    warn: bool = True,
) -> Any:
    """:func:`read_priors` as a :class:`optscale_jax.model.GaussianPrior` for ``fit_map``/OptScaleᵗ.

    Args:
        path: the file.
        question_ids: the pool's question ids (see :func:`read_priors`).
        positions: rows of the authors' list to take.
        width: prior std for the authors' list.
        warn: warn once about centres σ̄ ≤ 0.

    Returns:
        The per-question prior.
    """
    return read_priors(path, question_ids, positions=positions, width=width, warn=warn).to_gaussian()


def write_priors(
    path: str | os.PathLike,
    question_ids: Sequence[str],
    loc_mu: ArrayLike,
    loc_sigma: ArrayLike,
    scale_mu: ArrayLike = DEFAULT_WIDTH,
    scale_sigma: ArrayLike = DEFAULT_WIDTH,
    *,
    pred_mean: ArrayLike | None = None,
    pred_std: ArrayLike | None = None,
    meta: dict | None = None,
) -> Path:
    """Write an ``optscale-priors`` file (read back by :func:`read_priors`).

    Args:
        path: output ``.json`` file (parent directories are created).
        question_ids: distinct ids, ``(Q,)``.
        loc_mu, loc_sigma: prior centres ``(Q,)``, finite (``loc_sigma`` ≤ 0 is allowed,
            as in the authors' files).
        scale_mu, scale_sigma: prior widths, scalars or ``(Q,)``, finite and > 0.
        pred_mean, pred_std: optional predicted score moments.
        meta: optional JSON-serialisable metadata.

    Returns:
        The path written.

    Raises:
        ValueError: on duplicate ids, shape mismatches, non-finite values or widths ≤ 0.
    """
    ids = [str(i) for i in question_ids]
    q = len(ids)
    seen: dict[str, int] = {}
    for k, qid in enumerate(ids):
        if qid in seen:
            raise ValueError(
                f"write_priors: question ids must be distinct: {qid!r} at {seen[qid]} and {k}"
            )
        seen[qid] = k
    out: dict[str, Any] = {"format": FORMAT, "version": VERSION, "space": SPACES[0], "question_ids": ids}
    cols = {"loc_mu": loc_mu, "scale_mu": scale_mu, "loc_sigma": loc_sigma, "scale_sigma": scale_sigma}
    for name, v in cols.items():
        try:
            a = np.broadcast_to(np.asarray(v, dtype=np.float64), (q,))
        except ValueError:
            raise ValueError(
                f"write_priors: {name} has shape {np.shape(v)}, expected ({q},) or a scalar"
            ) from None
        bad = ~np.isfinite(a)
        if bad.any():
            i = int(np.flatnonzero(bad)[0])
            raise ValueError(f"write_priors: {name} of question {ids[i]!r} is {_num(a[i])}, not finite")
        if name.startswith("scale") and (a <= 0).any():
            i = int(np.flatnonzero(a <= 0)[0])
            raise ValueError(f"write_priors: {name} must be > 0, question {ids[i]!r} has {_num(a[i])}")
        out[name] = a.tolist()
    for name, v in (("pred_mean", pred_mean), ("pred_std", pred_std)):
        if v is not None:
            out[name] = np.broadcast_to(np.asarray(v, dtype=np.float64), (q,)).tolist()
    if meta:
        out["meta"] = meta
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(out), encoding="utf-8")
    return path
