"""The predictor's real data: MATH questions with the mean/std of their PRM scores.

Reads ``<data>/predictor/{train,val}_data.json`` and
``{train,val}_mu_sigma.json`` (see ``shared/data/README.md``). The data
directory is never copied into the repository: it is found from the
``OPTSCALE_DATA`` environment variable or ``../shared/data`` beside the repo.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from optscale_jax.io.datadir import shared_data_dir

__all__ = ["Split", "default_data_dir", "load_split"]


def default_data_dir() -> Path:
    """The shared data directory: :func:`optscale_jax.io.shared_data_dir`, required.

    ``$OPTSCALE_DATA`` when set, else ``../shared/data`` beside the repository checkout
    or beside the current directory (the one lookup rule of the package).

    Returns:
        The directory.

    Raises:
        FileNotFoundError: if none of the candidates exists.
    """
    found = shared_data_dir()
    if found is None:
        raise FileNotFoundError(
            "shared data not found; set OPTSCALE_DATA to the directory holding predictor/ "
            "(or place it at ../shared/data beside the repository or the current directory)"
        )
    return found


@dataclass
class Split:
    """Questions and their score-moment labels.

    Attributes:
        ids: question ids (MATH ``unique_id``), shape ``(Q,)``.
        texts: question texts.
        subjects: MATH subject per question.
        levels: difficulty 1..5, int ``(Q,)``.
        mean: label: sample mean of the PRM scores, ``(Q,)`` float64.
        std: label: sample std of the PRM scores, ``(Q,)`` float64.
    """

    ids: list[str]
    texts: list[str]
    subjects: list[str]
    levels: np.ndarray
    mean: np.ndarray
    std: np.ndarray

    def __len__(self) -> int:
        return len(self.ids)

    @property
    def labels(self) -> np.ndarray:
        """``(Q, 2)`` array of ``[mean, std]``."""
        return np.stack([self.mean, self.std], axis=1)

    def subset(self, index: Sequence[int] | np.ndarray) -> Split:
        """The questions at ``index`` (in that order)."""
        index = np.asarray(index, dtype=np.int64)
        return Split(
            ids=[self.ids[i] for i in index],
            texts=[self.texts[i] for i in index],
            subjects=[self.subjects[i] for i in index],
            levels=self.levels[index],
            mean=self.mean[index],
            std=self.std[index],
        )

    def sample(self, n: int, *, seed: int = 0) -> Split:
        """A seeded random subset of ``min(n, Q)`` questions (sorted by position)."""
        if n >= len(self):
            return self
        rng = np.random.default_rng(seed)
        return self.subset(np.sort(rng.choice(len(self), size=n, replace=False)))


def load_split(split: str, data_dir: str | os.PathLike | None = None) -> Split:
    """Load ``"train"`` (4,501 MATH questions) or ``"val"`` (MATH-500).

    Args:
        split: ``"train"`` or ``"val"``.
        data_dir: the shared data directory (default :func:`default_data_dir`).

    Returns:
        The split with its labels.

    Raises:
        ValueError: on an unknown split, mismatched lengths or malformed labels.
        FileNotFoundError: if the files are missing.
    """
    if split not in ("train", "val"):
        raise ValueError(f"split must be 'train' or 'val', got {split!r}")
    root = Path(data_dir) if data_dir is not None else default_data_dir()
    root = root / "predictor" if (root / "predictor").is_dir() else root
    questions = json.loads((root / f"{split}_data.json").read_text())
    labels = np.asarray(json.loads((root / f"{split}_mu_sigma.json").read_text()), dtype=float)
    if labels.ndim != 2 or labels.shape[1] != 2 or labels.shape[0] != len(questions):
        raise ValueError(
            f"{split}_mu_sigma.json has shape {labels.shape}, expected ({len(questions)}, 2)"
        )
    bad = np.flatnonzero(~np.isfinite(labels).all(1) | (labels[:, 1] < 0))
    if bad.size:
        raise ValueError(f"{split}: label row {bad[0]} is not a finite [mean, std>=0] pair")
    return Split(
        ids=[q["unique_id"] for q in questions],
        texts=[q["problem"] for q in questions],
        subjects=[q.get("subject", "") for q in questions],
        levels=np.array([int(q.get("level", 0)) for q in questions], dtype=np.int64),
        mean=labels[:, 0],
        std=labels[:, 1],
    )
