"""Save and load trained heads: flax msgpack of the NNX state plus a JSON manifest.

A checkpoint is a directory::

    manifest.json    {"format": "optscale-predictor-head", "version": 1,
                      "in_features", "config" (TrainConfig), "label_stats",
                      "widths", "backbone": {...}, "metrics": {...}}
    params.msgpack   flax.serialization of nnx.to_pure_dict(nnx.state(head))

Loading rebuilds the head from the manifest and writes the stored arrays into
it; a shape mismatch is an error, not a silent partial restore.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path

import jax
import numpy as np
from flax import nnx, serialization

from predictor.head import PriorHead
from predictor.training import TrainConfig, TrainResult, build_head

__all__ = ["Checkpoint", "load_checkpoint", "save_checkpoint"]

CHECKPOINT_FORMAT = "optscale-predictor-head"
CHECKPOINT_VERSION = 1


@dataclass
class Checkpoint:
    """A restored head with what is needed to use it.

    Attributes:
        head: the head, ready for :func:`predictor.training.predict`.
        config: its training configuration (``config.objective`` says what
            the outputs mean).
        widths: fitted prior widths (``scale_mu``, ``scale_sigma``, ...).
        backbone: feature settings the head was trained on (path, key,
            max_length, pooling).
        label_stats: training label statistics.
        metrics: any metrics stored at save time.
    """

    head: PriorHead
    config: TrainConfig
    widths: dict = field(default_factory=dict)
    backbone: dict = field(default_factory=dict)
    label_stats: dict = field(default_factory=dict)
    metrics: dict = field(default_factory=dict)


def _jsonable(x):
    if isinstance(x, dict):
        return {str(k): _jsonable(v) for k, v in x.items()}
    if isinstance(x, list | tuple):
        return [_jsonable(v) for v in x]
    if isinstance(x, np.generic):
        return x.item()
    return x


def save_checkpoint(
    path: str | os.PathLike,
    result: TrainResult,
    *,
    backbone: dict | None = None,
    metrics: dict | None = None,
) -> Path:
    """Write ``result``'s head, config and widths to the directory ``path``.

    Args:
        path: checkpoint directory (created; existing files are overwritten).
        result: what :func:`predictor.training.train` returned.
        backbone: feature settings to record (e.g. ``{"path", "key",
            "max_length", "pooling"}``), so ``predict`` can rebuild features.
        metrics: validation metrics to record.

    Returns:
        The directory.
    """
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    state = nnx.to_pure_dict(nnx.state(result.head))
    state = jax.tree.map(np.asarray, state)
    (path / "params.msgpack").write_bytes(serialization.msgpack_serialize(state))
    manifest = {
        "format": CHECKPOINT_FORMAT,
        "version": CHECKPOINT_VERSION,
        "in_features": result.head.in_features,
        "config": result.config.to_dict(),
        "label_stats": result.label_stats,
        "widths": result.widths,
        "backbone": backbone or {},
        "metrics": metrics or {},
    }
    (path / "manifest.json").write_text(json.dumps(_jsonable(manifest), indent=2))
    return path


def load_checkpoint(path: str | os.PathLike) -> Checkpoint:
    """Restore a checkpoint written by :func:`save_checkpoint`.

    Args:
        path: the checkpoint directory.

    Returns:
        The restored head and its metadata.

    Raises:
        FileNotFoundError: if the directory lacks ``manifest.json`` or ``params.msgpack``.
        ValueError: on a foreign format or an array whose shape does not match.
    """
    path = Path(path)
    for name in ("manifest.json", "params.msgpack"):
        if not (path / name).is_file():
            raise FileNotFoundError(f"{path} is not a predictor checkpoint (missing {name})")
    manifest = json.loads((path / "manifest.json").read_text())
    if manifest.get("format") != CHECKPOINT_FORMAT:
        raise ValueError(
            f"{path}: format {manifest.get('format')!r}, expected {CHECKPOINT_FORMAT!r}"
        )
    if manifest.get("version") != CHECKPOINT_VERSION:
        raise ValueError(f"{path}: checkpoint version {manifest.get('version')} is not supported")
    config = TrainConfig.from_dict(manifest["config"])
    stats = manifest.get("label_stats", {})
    head = build_head(
        int(manifest["in_features"]),
        config,
        loc_init=stats.get("loc_init", 0.0),
        scale_init=stats.get("scale_init", 0.1),
    )
    stored = serialization.msgpack_restore((path / "params.msgpack").read_bytes())
    state = nnx.state(head)
    expected = nnx.to_pure_dict(state)
    exp_leaves = jax.tree_util.tree_leaves_with_path(expected)
    got_leaves = jax.tree_util.tree_leaves_with_path(stored)
    if len(exp_leaves) != len(got_leaves):
        raise ValueError(f"{path}: {len(got_leaves)} stored arrays, the head has {len(exp_leaves)}")
    for (kp, e), (_, g) in zip(exp_leaves, got_leaves, strict=True):
        if np.shape(e) != np.shape(g):
            raise ValueError(
                f"{path}: {jax.tree_util.keystr(kp)} has shape {np.shape(g)}, expected {np.shape(e)}"
            )
    nnx.replace_by_pure_dict(state, stored)
    nnx.update(head, state)
    return Checkpoint(
        head=head,
        config=config,
        widths=manifest.get("widths", {}),
        backbone=manifest.get("backbone", {}),
        label_stats=stats,
        metrics=manifest.get("metrics", {}),
    )
