"""Training the prior head with optax: two objectives, seeded and deterministic.

Objectives (``TrainConfig.objective``):

``"regression"`` (the paper's)
    The head predicts the label moments directly; the loss is the squared
    error of ``(μ̄, σ̄)`` against ``(mean, std)``, each term divided by the
    variance of that label on the training rows (so 1.0 is "as good as the
    training mean"). Its outputs are moments; :func:`predict_params` maps them
    to truncated-normal parameters for a MAP prior.

``"score_model"`` (built on the shared numpyro score model)
    The head predicts the truncated-normal parameters ``(μ, σ)`` of the score
    distribution. Each label ``(mean, std)`` is mapped to ``(μ, σ)`` with
    :func:`optscale_jax.distributions.params_from_projected_moments`
    (infeasible pairs projected first); the label distribution is represented
    by its ``K`` mid-quantiles ``F⁻¹((k + ½)/K)``
    (:func:`optscale_jax.distributions.mid_quantiles`), and the loss is
    :func:`optscale_jax.model.score_cross_entropy`, ``−log_joint(μ̄, σ̄,
    quantiles) / K``: the cross-entropy of the label's score distribution under
    the predicted one (no prior). It is minimised by the label's own parameters
    and stays bounded where those parameters are huge (scores piled near 1),
    unlike a squared error in ``(μ, σ)``.

Defaults are chosen for CPU and frozen features: the paper's head
(512-256-128, dropout 0.2/0.2/0.1, AdamW, weight decay 0.01, 30 epochs) with
batches of 64 at peak lr 3e-5 (warm-up then cosine decay), clipping at norm
1.0, keeping the epoch with the best holdout loss. Larger rates (1e-3) overfit
the 4,000 training questions within a few epochs. :meth:`TrainConfig.paper`
is the paper's schedule (lr 1e-5, 30 epochs, clipping 0.1, batch 16).

The loop is written in named steps, flax-nnx style: :func:`make_loss_fn`
builds ``loss_fn(params, batch, key)`` over the split head, :func:`train_step`
is one pure optimiser step (jitted under plain ``jax.jit`` over the split
state, a :class:`TrainState`), :func:`evaluate` averages the holdout loss, and
:func:`train` runs the epochs with small helpers for keeping the best epoch,
progress, holdout metrics and the prior widths.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Literal, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx
from numpy.typing import ArrayLike

from optscale_jax.distributions import (
    max_truncated_std,
    mid_quantiles,
    moments,
    params_from_projected_moments,
)
from optscale_jax.model import score_cross_entropy
from predictor.baselines import metrics
from predictor.features import TokenStates
from predictor.head import PriorHead

__all__ = [
    "Batch",
    "Features",
    "TrainConfig",
    "TrainResult",
    "TrainState",
    "build_head",
    "evaluate",
    "fit_prior_widths",
    "label_params",
    "make_loss_fn",
    "max_truncated_std",
    "predict",
    "predict_moments",
    "predict_params",
    "train",
    "train_step",
]

Features = TokenStates | np.ndarray
"""Token states (attention pooling) or pre-pooled embeddings ``(Q, d)``."""

Objective = Literal["regression", "score_model"]


@dataclass(frozen=True)
class TrainConfig:
    """Hyper-parameters of :func:`train` (defaults: CPU, frozen features).

    Attributes:
        objective: ``"regression"`` or ``"score_model"`` (module docstring).
        learning_rate: peak AdamW learning rate.
        epochs: passes over the training rows.
        batch_size: rows per step.
        weight_decay: AdamW decoupled weight decay (applied to kernels only).
        clip_norm: global gradient-norm clipping.
        warmup_fraction: linear warm-up share of all steps, then cosine decay to 0.
        hidden: MLP widths of each head.
        dropout: MLP dropout rates.
        holdout_fraction: share of the training rows held out (seeded) to fit
            the prior widths; 0 fits them on the training rows.
        n_quantiles: ``K`` label quantiles for the ``"score_model"`` objective.
        feasible_shrink: infeasible label stds are shrunk to this fraction of
            the largest std reachable at their mean
            (:func:`~optscale_jax.distributions.params_from_projected_moments`).
        pad_multiple: token batches are padded to a multiple of this length, so
            only a few shapes are compiled.
        keep_best: return the parameters of the epoch with the lowest holdout
            loss (early stopping without stopping); needs a holdout.
        seed: seeds the initialisation, the holdout split, shuffling and dropout.
    """

    objective: Objective = "regression"
    learning_rate: float = 3e-5
    epochs: int = 30
    batch_size: int = 64
    weight_decay: float = 0.01
    clip_norm: float = 1.0
    warmup_fraction: float = 0.05
    hidden: tuple[int, ...] = (512, 256, 128)
    dropout: tuple[float, ...] = (0.2, 0.2, 0.1)
    holdout_fraction: float = 0.1
    n_quantiles: int = 32
    feasible_shrink: float = 0.95
    pad_multiple: int = 64
    keep_best: bool = True
    seed: int = 0

    def __post_init__(self):
        if self.objective not in ("regression", "score_model"):
            raise ValueError(
                f"objective must be 'regression' or 'score_model', got {self.objective!r}"
            )
        if not (self.learning_rate > 0 and self.epochs >= 1 and self.batch_size >= 1):
            raise ValueError("learning_rate must be > 0, epochs and batch_size >= 1")
        if not 0 <= self.holdout_fraction < 1:
            raise ValueError(f"holdout_fraction must be in [0, 1), got {self.holdout_fraction}")
        if not 0 < self.feasible_shrink < 1:
            raise ValueError(f"feasible_shrink must be in (0, 1), got {self.feasible_shrink}")

    @classmethod
    def paper(cls, **overrides) -> TrainConfig:
        """The paper's schedule: lr 1e-5, 30 epochs, weight decay 0.01, clipping 0.1."""
        base = dict(
            learning_rate=1e-5, epochs=30, batch_size=16, clip_norm=0.1, warmup_fraction=0.0
        )
        return cls(**{**base, **overrides})

    def to_dict(self) -> dict:
        """JSON-ready dictionary (tuples become lists)."""
        return {
            k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(self).items()
        }

    @classmethod
    def from_dict(cls, d: dict) -> TrainConfig:
        """Inverse of :meth:`to_dict`; unknown keys are an error."""
        names = {f.name for f in dataclasses.fields(cls)}
        extra = set(d) - names
        if extra:
            raise ValueError(f"unknown TrainConfig keys: {sorted(extra)}")
        return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in d.items()})


@dataclass
class TrainResult:
    """What :func:`train` returns.

    Attributes:
        head: the trained head (evaluation: call without ``key``).
        config: the configuration used.
        history: per-epoch ``{"epoch", "loss", "holdout_loss", **holdout metrics}``.
        widths: fitted prior widths ``{"scale_mu", "scale_sigma"}`` (parameter space).
        holdout_index: training rows held out (empty when ``holdout_fraction`` is 0).
        label_stats: ``{"mean_var", "std_var", "loc_init", "scale_init"}`` of the training labels.
    """

    head: PriorHead
    config: TrainConfig
    history: list[dict] = field(default_factory=list)
    widths: dict = field(default_factory=dict)
    holdout_index: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    label_stats: dict = field(default_factory=dict)


# ---------------------------------------------------------------- labels

# The label mapping lives with the distribution; these names stay for callers of
# predictor.training (same functions, not copies).
label_params = params_from_projected_moments
"""Alias of :func:`optscale_jax.distributions.params_from_projected_moments`."""


def _targets(config: TrainConfig, mean: np.ndarray, std: np.ndarray):
    """Per-row training targets and validity for the objective."""
    if config.objective == "regression":
        return np.stack([mean, std], 1), np.ones(len(mean), bool)
    loc, scale, valid = params_from_projected_moments(mean, std, shrink=config.feasible_shrink)
    target = np.full((len(mean), config.n_quantiles), 0.5)
    if valid.any():
        target[valid] = mid_quantiles(loc[valid], scale[valid], config.n_quantiles)
    return target, valid


def _label_stats(config: TrainConfig, mean: np.ndarray, std: np.ndarray, rows: np.ndarray):
    """Label variances (the regression loss's scales) and the head's initial outputs."""
    if config.objective == "regression":
        loc_init, scale_init = float(mean[rows].mean()), float(std[rows].mean())
    else:
        loc, scale, _ = params_from_projected_moments(
            mean[rows], std[rows], shrink=config.feasible_shrink
        )
        loc_init, scale_init = float(np.median(loc)), float(np.median(scale))
    var = np.array([mean[rows].var(), std[rows].var()])
    var = np.where(var > 0, var, 1.0)
    return {
        "mean_var": float(var[0]),
        "std_var": float(var[1]),
        "loc_init": loc_init,
        "scale_init": scale_init,
    }


# ---------------------------------------------------------------- batching


class Batch(NamedTuple):
    """One padded batch: inputs, targets and row weights (0 marks a padding row)."""

    x: np.ndarray
    mask: np.ndarray | None
    target: jax.Array
    weight: np.ndarray


def _n_rows(features: Features) -> int:
    return len(features)


def _dim(features: Features) -> int:
    return features.dim if isinstance(features, TokenStates) else int(np.asarray(features).shape[1])


def _rows(features: Features, index: np.ndarray) -> Features:
    """The features of rows ``index``."""
    if isinstance(features, TokenStates):
        return features.subset(index)
    return np.asarray(features)[index]


def _pad_batch(features: Features, index: np.ndarray, batch_size: int, pad_multiple: int):
    """Features of ``index`` padded to ``batch_size`` rows (and bucketed length)."""
    n = len(index)
    full = np.concatenate([index, np.full(batch_size - n, index[0])]) if n < batch_size else index
    if isinstance(features, TokenStates):
        t = int(features.lengths[full].max())
        t = int(math.ceil(t / pad_multiple) * pad_multiple)
        x, mask = features.padded(full, pad_to=t)
    else:
        x, mask = np.asarray(features[full], np.float32), None
    weight = np.zeros(batch_size, np.float32)
    weight[:n] = 1.0
    return x, mask, weight, full


def _batches(features: Features, target: np.ndarray, rows: np.ndarray, bs: int, pad: int):
    """``(Batch, n_real_rows)`` over ``rows`` in order, ``bs`` at a time."""
    for s in range(0, len(rows), bs):
        idx = rows[s : s + bs]
        x, mask, w, full = _pad_batch(features, idx, bs, pad)
        yield Batch(x, mask, jnp.asarray(target[full], jnp.float32), w), len(idx)


# ---------------------------------------------------------------- losses and steps


def _regression_loss(loc, scale, target, weight, stats):
    """Squared errors standardised by the training label variances."""
    err = (loc - target[:, 0]) ** 2 / stats[0] + (scale - target[:, 1]) ** 2 / stats[1]
    return (weight * err).sum() / weight.sum()


def _score_model_loss(loc, scale, target, weight, stats):
    """Cross-entropy of the label quantiles under TruncatedNormal01(loc, scale)."""
    return score_cross_entropy(loc, scale, target, weight)


_LOSSES: dict[str, Callable] = {"regression": _regression_loss, "score_model": _score_model_loss}

LossFn = Callable[[nnx.State, Batch, "jax.Array | None"], jax.Array]


class TrainState(NamedTuple):
    """What changes from step to step: the head's parameters and the optimiser state."""

    params: nnx.State
    opt_state: optax.OptState


def make_loss_fn(graphdef: nnx.GraphDef, objective: Objective, label_stats: dict) -> LossFn:
    """``loss_fn(params, batch, key)`` of the objective; ``key=None`` disables dropout.

    Args:
        graphdef: the head's structure (``nnx.split``).
        objective: ``"regression"`` or ``"score_model"``.
        label_stats: :attr:`TrainResult.label_stats` (the regression loss's scales).
    """
    objective_loss = _LOSSES[objective]
    stats = jnp.asarray([label_stats["mean_var"], label_stats["std_var"]], jnp.float32)

    def loss_fn(params: nnx.State, batch: Batch, key: jax.Array | None) -> jax.Array:
        loc, scale = nnx.merge(graphdef, params)(batch.x, batch.mask, key=key)
        return objective_loss(loc, scale, batch.target, batch.weight, stats)

    return loss_fn


def train_step(
    state: TrainState,
    batch: Batch,
    key: jax.Array,
    *,
    loss_fn: LossFn,
    tx: optax.GradientTransformation,
) -> tuple[TrainState, jax.Array]:
    """One optimiser step on ``batch`` with dropout keyed by ``key``; pure (jit it).

    Returns:
        The new state and the batch loss before the step.
    """
    loss, grads = jax.value_and_grad(loss_fn)(state.params, batch, key)
    updates, opt_state = tx.update(grads, state.opt_state, state.params)
    return TrainState(optax.apply_updates(state.params, updates), opt_state), loss


def evaluate(
    eval_step: Callable[[nnx.State, Batch], jax.Array],
    params: nnx.State,
    batches: Iterable[tuple[Batch, int]],
) -> float:
    """Mean loss over ``(Batch, n)`` pairs, weighted by each batch's real rows.

    Args:
        eval_step: ``eval_step(params, batch) -> loss`` without dropout.
        params: the head's parameters.
        batches: ``(Batch, n)`` pairs, e.g. the holdout rows.
    """
    total, count = 0.0, 0
    for batch, n in batches:
        total += float(eval_step(params, batch)) * n
        count += n
    return total / count


def _optimizer(config: TrainConfig, total_steps: int) -> optax.GradientTransformation:
    warmup = int(config.warmup_fraction * total_steps)
    schedule = optax.warmup_cosine_decay_schedule(
        init_value=0.0 if warmup else config.learning_rate,
        peak_value=config.learning_rate,
        warmup_steps=warmup,
        decay_steps=max(total_steps, warmup + 1),
        end_value=0.0,
    )

    def decay_mask(params):
        return jax.tree.map(lambda p: jnp.ndim(p) > 1, params)

    return optax.chain(
        optax.clip_by_global_norm(config.clip_norm),
        optax.adamw(schedule, weight_decay=config.weight_decay, mask=decay_mask),
    )


# ---------------------------------------------------------------- the loop's helpers


def build_head(
    in_features: int, config: TrainConfig, *, loc_init: float, scale_init: float
) -> PriorHead:
    """The head :func:`train` starts from (also used to restore checkpoints)."""
    return PriorHead(
        in_features,
        hidden=config.hidden,
        dropout=config.dropout,
        loc_init=float(loc_init),
        scale_init=float(scale_init),
        rngs=nnx.Rngs(params=config.seed),
    )


def _check_labels(features: Features, mean: ArrayLike, std: ArrayLike):
    mean, std = np.asarray(mean, float), np.asarray(std, float)
    q = _n_rows(features)
    if mean.shape != (q,) or std.shape != (q,):
        raise ValueError(f"labels must have shape ({q},), got {mean.shape} and {std.shape}")
    if not (np.isfinite(mean).all() and np.isfinite(std).all()):
        raise ValueError("labels must be finite")
    return mean, std


def _split_rows(rng: np.random.Generator, q: int, holdout_fraction: float):
    """Seeded ``(holdout, training)`` rows, each sorted."""
    perm = rng.permutation(q)
    n_hold = int(round(holdout_fraction * q))
    return np.sort(perm[:n_hold]), np.sort(perm[n_hold:])


@dataclass
class _KeepBest:
    """Early stopping without stopping: the parameters of the lowest holdout loss."""

    enabled: bool
    loss: float = np.inf
    params: nnx.State | None = None
    epoch: int = 0

    def update(self, row: dict, params: nnx.State) -> None:
        if self.enabled and "holdout_loss" in row and row["holdout_loss"] <= self.loss:
            self.loss, self.params, self.epoch = row["holdout_loss"], params, row["epoch"]

    def restore(self, params: nnx.State, history: list[dict]) -> nnx.State:
        """The best parameters (noted in the last history row), else ``params``."""
        if self.params is None:
            return params
        history[-1]["best_epoch"] = self.epoch
        return self.params


def _progress_bar(epochs: int, enabled: bool):
    from tqdm.auto import tqdm

    return tqdm(range(epochs), desc="training", unit="epoch", disable=not enabled)


def _report(bar, row: dict, callback: Callable[[dict], None] | None) -> None:
    bar.set_postfix({k: f"{v:.4g}" for k, v in row.items() if k != "epoch"})
    if callback is not None:
        callback(row)


def _holdout_metrics(head: PriorHead, features, mean, std, hold, config: TrainConfig) -> dict:
    """``holdout_*`` MAE/R² of the head's predicted moments on the holdout rows."""
    pm = predict_moments(
        head, _rows(features, hold), config.objective, pad_multiple=config.pad_multiple
    )
    labels = np.stack([mean[hold], std[hold]], 1)
    return {f"holdout_{k}": v for k, v in metrics(labels, pm).items()}


def _fit_widths(head: PriorHead, features, mean, std, rows, config: TrainConfig) -> dict:
    """:func:`fit_prior_widths` of the head's predicted parameters on ``rows``."""
    pred = predict_params(
        head,
        _rows(features, rows),
        config.objective,
        shrink=config.feasible_shrink,
        pad_multiple=config.pad_multiple,
    )
    return fit_prior_widths(*pred, mean[rows], std[rows], shrink=config.feasible_shrink)


# ---------------------------------------------------------------- training


def train(
    features: Features,
    mean: ArrayLike,
    std: ArrayLike,
    config: TrainConfig | None = None,
    *,
    progress: bool = False,
    callback: Callable[[dict], None] | None = None,
    fit_widths: bool = True,
) -> TrainResult:
    """Train a :class:`PriorHead` on features and ``(mean, std)`` labels.

    A seeded ``holdout_fraction`` of the rows is held out: it is not trained
    on, its loss and metrics are recorded every epoch, and the prior widths
    are fitted on it (:func:`fit_prior_widths`).

    Args:
        features: token states or pooled embeddings of the Q training questions.
        mean, std: label moments ``(Q,)``.
        config: hyper-parameters (default :class:`TrainConfig`).
        progress: show a tqdm bar over epochs with the running losses.
        callback: called with each epoch's history row.
        fit_widths: fit the prior widths (needs the core's moment matching;
            its first call compiles a solver). ``False`` leaves ``widths`` empty.

    Returns:
        The trained head, history, fitted widths and holdout rows.

    Raises:
        ValueError: on mismatched lengths or non-finite labels.
    """
    config = config or TrainConfig()
    mean, std = _check_labels(features, mean, std)
    rng = np.random.default_rng(config.seed)
    hold, fit_rows = _split_rows(rng, len(mean), config.holdout_fraction)
    target, valid = _targets(config, mean, std)
    fit_rows, hold_ok = fit_rows[valid[fit_rows]], hold[valid[hold]]
    if len(fit_rows) == 0:
        raise ValueError("no training rows with a usable label")
    label_stats = _label_stats(config, mean, std, fit_rows)

    init = {k: label_stats[k] for k in ("loc_init", "scale_init")}
    head = build_head(_dim(features), config, **init)
    graphdef, params = nnx.split(head)
    bs = min(config.batch_size, len(fit_rows))
    steps_per_epoch = math.ceil(len(fit_rows) / bs)
    tx = _optimizer(config, steps_per_epoch * config.epochs)
    loss_fn = make_loss_fn(graphdef, config.objective, label_stats)
    step = jax.jit(functools.partial(train_step, loss_fn=loss_fn, tx=tx))
    eval_step = jax.jit(lambda params, batch: loss_fn(params, batch, None))
    state = TrainState(params, tx.init(params))
    base_key = jax.random.key(config.seed)
    history: list[dict] = []
    best = _KeepBest(config.keep_best)
    bar = _progress_bar(config.epochs, progress)
    for epoch in bar:
        order = fit_rows[rng.permutation(len(fit_rows))]
        total = 0.0
        for s, (batch, n) in enumerate(_batches(features, target, order, bs, config.pad_multiple)):
            key = jax.random.fold_in(base_key, epoch * steps_per_epoch + s)
            state, loss = step(state, batch, key)
            total += float(loss) * n
        row = {"epoch": epoch + 1, "loss": total / len(order)}
        if len(hold_ok):
            holdout = _batches(features, target, hold_ok, bs, config.pad_multiple)
            row["holdout_loss"] = evaluate(eval_step, state.params, holdout)
        history.append(row)
        best.update(row, state.params)
        _report(bar, row, callback)
    bar.close()

    head = nnx.merge(graphdef, best.restore(state.params, history))
    result = TrainResult(head, config, history, {}, hold, label_stats)
    if len(hold):
        history[-1].update(_holdout_metrics(head, features, mean, std, hold, config))
    if fit_widths:
        width_rows = hold if len(hold) else fit_rows
        result.widths = _fit_widths(head, features, mean, std, width_rows, config)
    return result


# ---------------------------------------------------------------- prediction


@functools.partial(jax.jit, static_argnums=0)
def _apply(graphdef, params, x, mask):
    # graphdef is static and hashable: one compile per head structure and input shape
    return nnx.merge(graphdef, params)(x, mask)


def predict(
    head: PriorHead, features: Features, *, batch_size: int = 256, pad_multiple: int = 64
) -> tuple[np.ndarray, np.ndarray]:
    """Raw head outputs ``(μ̄, σ̄)`` for every row (deterministic, no dropout).

    Args:
        head: a trained head.
        features: token states or pooled embeddings.
        batch_size: rows per jitted call.
        pad_multiple: token padding bucket.

    Returns:
        Two float64 arrays ``(Q,)``.
    """
    graphdef, params = nnx.split(head)
    q = _n_rows(features)
    bs = max(1, min(batch_size, q))
    locs, scales = [], []
    for s in range(0, q, bs):
        idx = np.arange(s, min(s + bs, q))
        x, mask, _, _ = _pad_batch(features, idx, bs, pad_multiple)
        loc, scale = _apply(graphdef, params, x, mask)
        locs.append(np.asarray(loc, float)[: len(idx)])
        scales.append(np.asarray(scale, float)[: len(idx)])
    return np.concatenate(locs), np.concatenate(scales)


def predict_moments(
    head: PriorHead, features: Features, objective: Objective, **kwargs
) -> np.ndarray:
    """Predicted score ``[mean, std]`` per row, ``(Q, 2)``, whatever the objective.

    ``"regression"`` heads predict moments directly; ``"score_model"`` heads
    predict parameters, mapped with :func:`optscale_jax.distributions.moments`.
    """
    loc, scale = predict(head, features, **kwargs)
    if objective == "regression":
        return np.stack([loc, scale], 1)
    with jax.enable_x64(True):
        m, s = moments(jnp.asarray(loc), jnp.asarray(scale))
    return np.stack([np.asarray(m, float), np.asarray(s, float)], 1)


def predict_params(
    head: PriorHead, features: Features, objective: Objective, *, shrink: float = 0.95, **kwargs
) -> tuple[np.ndarray, np.ndarray]:
    """Predicted truncated-normal parameters ``(μ̄, σ̄)`` — the MAP prior centres.

    ``"score_model"`` heads output them directly. ``"regression"`` heads output
    moments, mapped with
    :func:`~optscale_jax.distributions.params_from_projected_moments` (the
    labels' projection); a prediction that still cannot be mapped falls back
    to ``(mean, std)`` themselves, which is what the official code uses as
    prior centres.
    """
    loc, scale = predict(head, features, **kwargs)
    if objective == "score_model":
        return loc, scale
    p_loc, p_scale, ok = params_from_projected_moments(
        np.clip(loc, 1e-6, 1 - 1e-6), np.maximum(scale, 1e-6), shrink=shrink
    )
    return np.where(ok, p_loc, loc), np.where(ok, p_scale, scale)


def fit_prior_widths(
    pred_loc: ArrayLike,
    pred_scale: ArrayLike,
    mean: ArrayLike,
    std: ArrayLike,
    *,
    shrink: float = 0.95,
    floor: float = 1e-3,
) -> dict:
    """Prior widths ``(σ_μ, σ_σ)`` from held-out residuals in parameter space.

    Labels are mapped to ``(μ, σ)`` by
    :func:`~optscale_jax.distributions.params_from_projected_moments`; the widths are the
    Gaussian maximum-likelihood scales of the residuals (root mean square),
    so the prior ``N(μ̄, σ_μ)`` is calibrated on questions the head did not see.
    The median absolute residual ×1.4826 (robust to the heavy tail of μ for
    scores piled near 1) is reported too.

    Args:
        pred_loc, pred_scale: predicted parameters ``(Q,)``.
        mean, std: label moments ``(Q,)``.
        shrink: projection of infeasible labels.
        floor: lower bound of each width.

    Returns:
        ``{"scale_mu", "scale_sigma", "robust_scale_mu", "robust_scale_sigma", "n"}``.
    """
    loc, scale, ok = params_from_projected_moments(mean, std, shrink=shrink)
    pred_loc, pred_scale = np.asarray(pred_loc, float), np.asarray(pred_scale, float)
    ok &= np.isfinite(pred_loc) & np.isfinite(pred_scale)
    if not ok.any():
        raise ValueError("no rows with a usable label to fit the prior widths")
    r_mu, r_sigma = pred_loc[ok] - loc[ok], pred_scale[ok] - scale[ok]
    return {
        "scale_mu": max(float(np.sqrt(np.mean(r_mu**2))), floor),
        "scale_sigma": max(float(np.sqrt(np.mean(r_sigma**2))), floor),
        "robust_scale_mu": max(float(1.4826 * np.median(np.abs(r_mu))), floor),
        "robust_scale_sigma": max(float(1.4826 * np.median(np.abs(r_sigma))), floor),
        "n": int(ok.sum()),
    }
