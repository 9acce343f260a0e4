"""The priors file: question id → MAP prior (μ̄, σ_μ, σ̄, σ_σ) for OptScaleᵗ.

Thin wrappers over the package's one reader and writer, :mod:`optscale_jax.io.priors`
(format, validation and messages are documented there), so that the predictor and
``optscale replay --prior`` read the same files into the same arrays.

``GaussianPrior(*load_priors(path, ids))`` is a ready MAP prior.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

from numpy.typing import ArrayLike

from optscale_jax.io.priors import COLUMNS, FORMAT, VERSION, PriorArrays, read_priors
from optscale_jax.io.priors import write_priors as _write_priors

__all__ = ["COLUMNS", "FORMAT", "VERSION", "PriorArrays", "load_priors", "read_official_priors", "write_priors"]


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
    """Write an ``optscale-priors`` file (see :func:`optscale_jax.io.priors.write_priors`).

    Args:
        path: output ``.json`` file.
        question_ids: distinct ids, ``(Q,)``.
        loc_mu, loc_sigma: prior centres ``(Q,)``, finite.
        scale_mu, scale_sigma: prior widths, scalars or ``(Q,)``, > 0.
        pred_mean, pred_std: optional predicted score moments.
        meta: optional JSON-serialisable metadata.

    Returns:
        The path written.
    """
    return _write_priors(
        path, question_ids, loc_mu, loc_sigma, scale_mu, scale_sigma,
        pred_mean=pred_mean, pred_std=pred_std, meta=meta,
    )


def load_priors(path: str | os.PathLike, question_ids: Sequence[str] | None = None) -> PriorArrays:
    """Read a priors file, aligned to ``question_ids`` (see :func:`optscale_jax.io.priors.read_priors`).

    Args:
        path: an ``optscale-priors`` file (or the authors' list, matched by position).
        question_ids: the ids to align to (e.g. a pool's); default: the file's order.

    Returns:
        The four prior arrays, shape ``(len(question_ids),)``.

    Raises:
        optscale_jax.io.priors.PriorsFileError: (a ``ValueError``) naming file, record and
            field, including an id the file does not cover.
    """
    return read_priors(path, question_ids)


def read_official_priors(
    path: str | os.PathLike, question_ids: Sequence[str], *, width: float = 0.1
) -> PriorArrays:
    """The authors' ``*_train_mu_sigma.json`` as prior arrays, exactly as stored.

    A list of ``[μ̄, σ̄]`` in the order of the benchmark's questions; the authors use
    them as centres with width 0.1 each. Centres σ̄ ≤ 0 (three in MATH-500) are kept
    (one warning line says how many), as the authors keep them.

    Args:
        path: e.g. ``reference/official/MATH500_train_mu_sigma.json``.
        question_ids: the benchmark's ids in file order (same length).
        width: prior width for both parameters (the authors': 0.1).

    Returns:
        The prior arrays.

    Raises:
        optscale_jax.io.priors.PriorsFileError: if the lengths differ or a value is not finite.
    """
    return read_priors(path, question_ids, width=width)
