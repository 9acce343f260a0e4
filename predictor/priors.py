"""The priors file: question id → MAP prior (μ̄, σ_μ, σ̄, σ_σ) for OptScaleᵗ.

Format (plain JSON, columnar, readable without this package)::

    {
      "format": "optscale-priors",
      "version": 1,
      "space": "truncnorm_params",      # loc_* are the (μ, σ) of the untruncated normal
      "question_ids": ["test/algebra/1004.json", ...],
      "loc_mu":      [...],             # μ̄  (prior centre of μ)
      "scale_mu":    [...],             # σ_μ (prior width of μ), > 0
      "loc_sigma":   [...],             # σ̄  (prior centre of σ), > 0
      "scale_sigma": [...],             # σ_σ (prior width of σ), > 0
      "pred_mean":   [...],             # optional: predicted score mean (for inspection)
      "pred_std":    [...],             # optional: predicted score std
      "meta": {...}                     # optional: backbone, objective, metrics
    }

The four ``loc_*``/``scale_*`` columns are the fields of
``optscale_jax.model.GaussianPrior``, so
``GaussianPrior(**load_priors(path, ids)._asdict())`` is a ready MAP prior.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Sequence
from pathlib import Path
from typing import NamedTuple

import numpy as np
from numpy.typing import ArrayLike

__all__ = ["PriorArrays", "load_priors", "read_official_priors", "write_priors"]

FORMAT = "optscale-priors"
VERSION = 1
COLUMNS = ("loc_mu", "scale_mu", "loc_sigma", "scale_sigma")


class PriorArrays(NamedTuple):
    """Per-question Gaussian prior arrays, aligned to a list of question ids (float64)."""

    loc_mu: np.ndarray
    scale_mu: np.ndarray
    loc_sigma: np.ndarray
    scale_sigma: np.ndarray


def write_priors(
    path: str | os.PathLike,
    question_ids: Sequence[str],
    loc_mu: ArrayLike,
    loc_sigma: ArrayLike,
    scale_mu: ArrayLike,
    scale_sigma: ArrayLike,
    *,
    pred_mean: ArrayLike | None = None,
    pred_std: ArrayLike | None = None,
    meta: dict | None = None,
) -> Path:
    """Write a priors file.

    Args:
        path: output ``.json`` file.
        question_ids: distinct ids, ``(Q,)``.
        loc_mu, loc_sigma: prior centres ``(Q,)`` (``loc_sigma > 0``).
        scale_mu, scale_sigma: prior widths, scalars or ``(Q,)``, > 0.
        pred_mean, pred_std: optional predicted score moments.
        meta: optional JSON-serialisable metadata.

    Returns:
        The path written.

    Raises:
        ValueError: on duplicate ids, shape mismatches, non-finite values or
            non-positive scales.
    """
    ids = [str(i) for i in question_ids]
    q = len(ids)
    if len(set(ids)) != q:
        raise ValueError("question ids must be distinct")
    cols = {
        "loc_mu": loc_mu,
        "scale_mu": scale_mu,
        "loc_sigma": loc_sigma,
        "scale_sigma": scale_sigma,
    }
    out: dict = {
        "format": FORMAT,
        "version": VERSION,
        "space": "truncnorm_params",
        "question_ids": ids,
    }
    for name, v in cols.items():
        a = np.broadcast_to(np.asarray(v, float), (q,))
        if not np.isfinite(a).all():
            raise ValueError(
                f"{name} has a non-finite value at index {int(np.flatnonzero(~np.isfinite(a))[0])}"
            )
        if name != "loc_mu" and (a <= 0).any():
            raise ValueError(f"{name} must be > 0 (index {int(np.flatnonzero(a <= 0)[0])})")
        out[name] = a.tolist()
    for name, v in (("pred_mean", pred_mean), ("pred_std", pred_std)):
        if v is not None:
            out[name] = np.broadcast_to(np.asarray(v, float), (q,)).tolist()
    if meta:
        out["meta"] = meta
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(out))
    return path


def load_priors(path: str | os.PathLike, question_ids: Sequence[str] | None = None) -> PriorArrays:
    """Read a priors file, aligned to ``question_ids``.

    Args:
        path: a file written by :func:`write_priors`.
        question_ids: the ids to align to (e.g. a pool's); default: the file's order.

    Returns:
        The four prior arrays, shape ``(len(question_ids),)``.

    Raises:
        KeyError: naming the first id that the file does not cover.
        ValueError: if the file is not a priors file of a known version.
    """
    data = json.loads(Path(path).read_text())
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        raise ValueError(f"{path} is not an {FORMAT!r} file")
    if data.get("version") != VERSION:
        raise ValueError(f"{path}: priors version {data.get('version')} is not supported")
    ids = data["question_ids"]
    pos = {qid: i for i, qid in enumerate(ids)}
    if question_ids is None:
        index = np.arange(len(ids))
    else:
        missing = [q for q in question_ids if q not in pos]
        if missing:
            raise KeyError(
                f"{path} has no prior for question {missing[0]!r} ({len(missing)} missing)"
            )
        index = np.array([pos[q] for q in question_ids], dtype=np.int64)
    return PriorArrays(*(np.asarray(data[c], float)[index] for c in COLUMNS))


def read_official_priors(
    path: str | os.PathLike,
    question_ids: Sequence[str],
    *,
    width: float = 0.1,
    min_sigma: float = 1e-3,
) -> PriorArrays:
    """The official predictor's ``*_train_mu_sigma.json`` as prior arrays.

    The official files are a list of ``[μ̄, σ̄]`` in the order of the benchmark's
    questions; the official MAP uses them as centres with width 0.1 each.

    Args:
        path: e.g. ``reference/official/MATH500_train_mu_sigma.json``.
        question_ids: the benchmark's ids in file order (same length).
        width: prior width for both parameters (official: 0.1).
        min_sigma: σ̄ is clipped from below at this value: the official MATH-500
            file has three negative σ̄ (down to -0.022), which a prior centre of
            σ > 0 cannot be.

    Returns:
        The prior arrays.

    Raises:
        ValueError: if the lengths differ or a value is not finite.
    """
    rows = np.asarray(json.loads(Path(path).read_text()), float)
    if rows.ndim != 2 or rows.shape != (len(question_ids), 2):
        raise ValueError(f"{path}: shape {rows.shape}, expected ({len(question_ids)}, 2)")
    if not np.isfinite(rows).all():
        bad = int(np.flatnonzero(~np.isfinite(rows).all(1))[0])
        raise ValueError(f"{path}: non-finite prior centre in row {bad}")
    if not (math.isfinite(width) and width > 0 and min_sigma > 0):
        raise ValueError("width and min_sigma must be finite and > 0")
    w = np.full(len(question_ids), float(width))
    return PriorArrays(rows[:, 0].copy(), w, np.maximum(rows[:, 1], min_sigma), w.copy())
