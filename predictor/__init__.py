"""The OptScaleᵗ prior predictor: question text → MAP prior centres (μ̄, σ̄).

Features come from a frozen transformers backbone loaded from a local
directory (:mod:`predictor.features`, cached on disk); a Flax NNX head
(:mod:`predictor.head`) with attention pooling and two MLPs is trained with
optax (:mod:`predictor.training`) on real PRM score statistics
(:mod:`predictor.data`). Trained heads are saved as checkpoints
(:mod:`predictor.checkpoint`) and their predictions as a priors file
(:mod:`predictor.priors`) that the OptScaleᵗ policy reads.

This package imports :mod:`optscale_jax`; the library never imports it.
"""

from predictor.baselines import GroupMean, Ridge, mae, metrics, r2, train_mean
from predictor.checkpoint import Checkpoint, load_checkpoint, save_checkpoint
from predictor.data import Split, default_data_dir, load_split
from predictor.features import (
    Backbone,
    TokenStates,
    default_backbone_path,
    default_cache_dir,
    encode,
)
from predictor.head import MLP, AttentionPool, PriorHead
from predictor.priors import PriorArrays, load_priors, read_official_priors, write_priors
from predictor.training import (
    TrainConfig,
    TrainResult,
    fit_prior_widths,
    label_params,
    max_truncated_std,
    predict,
    predict_moments,
    predict_params,
    train,
)

__all__ = [
    "MLP",
    "AttentionPool",
    "Backbone",
    "Checkpoint",
    "GroupMean",
    "PriorArrays",
    "PriorHead",
    "Ridge",
    "Split",
    "TokenStates",
    "TrainConfig",
    "TrainResult",
    "default_backbone_path",
    "default_cache_dir",
    "default_data_dir",
    "encode",
    "fit_prior_widths",
    "label_params",
    "load_checkpoint",
    "load_priors",
    "load_split",
    "mae",
    "max_truncated_std",
    "metrics",
    "predict",
    "predict_moments",
    "predict_params",
    "r2",
    "read_official_priors",
    "save_checkpoint",
    "train",
    "train_mean",
    "write_priors",
]
