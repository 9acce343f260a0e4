"""End-to-end steps shared by the CLI, the notebook and the benchmark.

Featurise a split, train, compare with the three baselines on the same
validation split, and write the priors file.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Literal

import numpy as np

from predictor.baselines import GroupMean, Ridge, metrics, train_mean
from predictor.data import Split
from predictor.features import Backbone, TokenStates, encode
from predictor.priors import write_priors
from predictor.training import Features, Objective, predict_moments, predict_params

__all__ = ["compare_baselines", "featurize", "pooled", "write_head_priors"]

Pooling = Literal["attention", "mean"]


def featurize(
    backbone: Backbone,
    texts: Sequence[str],
    *,
    pooling: Pooling = "attention",
    cache_dir: str | os.PathLike | None = None,
    progress: bool = False,
) -> Features:
    """Features for the head: token states (``"attention"``) or mean-pooled ``(Q, d)``.

    Args:
        backbone: the frozen backbone.
        texts: questions.
        pooling: ``"attention"`` (token states, pooled by the head) or ``"mean"``.
        cache_dir: feature cache root (see :func:`predictor.features.encode`).
        progress: show the encoding progress bar.

    Returns:
        :class:`~predictor.features.TokenStates` or a float32 array.
    """
    if pooling not in ("attention", "mean"):
        raise ValueError(f"pooling must be 'attention' or 'mean', got {pooling!r}")
    states = encode(backbone, texts, cache_dir=cache_dir, progress=progress)
    return states if pooling == "attention" else states.mean_pooled()


def pooled(features: Features) -> np.ndarray:
    """Mean-pooled ``(Q, d)`` version of any features (for the ridge baseline)."""
    return (
        features.mean_pooled()
        if isinstance(features, TokenStates)
        else np.asarray(features, np.float32)
    )


def compare_baselines(
    train: Split,
    val: Split,
    train_features: Features,
    val_features: Features,
    head_moments: np.ndarray | None = None,
) -> dict[str, dict[str, float]]:
    """Validation MAE/R² of the head next to the three baselines on the same split.

    Baselines: the training mean, the per-level training mean, and ridge
    regression (α by leave-one-out) on the mean-pooled features.

    Args:
        train, val: the splits (labels used).
        train_features, val_features: the features the head used.
        head_moments: the head's predicted ``[mean, std]`` on ``val`` ``(Q, 2)``.

    Returns:
        ``{name: {"mae_mean", "mae_std", "r2_mean", "r2_std"}}``; ridge also
        records its chosen ``alpha``.
    """
    out = {
        "training mean": metrics(val.labels, train_mean(train.labels, len(val))),
        "per-level mean": metrics(
            val.labels, GroupMean.fit(train.levels, train.labels).predict(val.levels)
        ),
    }
    ridge = Ridge.fit(pooled(train_features), train.labels)
    out["ridge (pooled features)"] = {
        **metrics(val.labels, ridge.predict(pooled(val_features))),
        "alpha": ridge.alpha,
    }
    if head_moments is not None:
        out["head"] = metrics(val.labels, head_moments)
    return out


def write_head_priors(
    path: str | os.PathLike,
    head,
    objective: Objective,
    widths: dict,
    features: Features,
    question_ids: Sequence[str],
    *,
    robust: bool = False,
    meta: dict | None = None,
) -> Path:
    """Predict and write the priors file for ``question_ids``.

    Args:
        path: output JSON.
        head: a trained :class:`~predictor.head.PriorHead`.
        objective: its training objective (what its outputs mean).
        widths: fitted widths (:func:`~predictor.training.fit_prior_widths`).
        features: features of the questions, in the order of ``question_ids``.
        question_ids: the ids.
        robust: use the robust (MAD) widths instead of the RMS ones.
        meta: extra metadata to store.

    Returns:
        The path written.
    """
    loc_mu, loc_sigma = predict_params(head, features, objective)
    mom = predict_moments(head, features, objective)
    prefix = "robust_" if robust else ""
    return write_priors(
        path,
        question_ids,
        loc_mu=loc_mu,
        loc_sigma=np.maximum(loc_sigma, 1e-6),
        scale_mu=widths[prefix + "scale_mu"],
        scale_sigma=widths[prefix + "scale_sigma"],
        pred_mean=mom[:, 0],
        pred_std=mom[:, 1],
        meta={"objective": objective, "widths": widths, **(meta or {})},
    )
