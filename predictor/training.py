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
    :func:`optscale_jax.distributions.params_from_moments` after projecting
    infeasible pairs (see :func:`label_params`); the label distribution is
    represented by its ``K`` mid-quantiles ``F⁻¹((k + ½)/K)``, and the loss is
    ``−log_joint(μ̄, σ̄, quantiles) / K``: the cross-entropy of the label's score
    distribution under the predicted one, through
    :func:`optscale_jax.model.log_joint` (no prior). It is minimised by the
    label's own parameters and stays bounded where those parameters are huge
    (scores piled near 1), unlike a squared error in ``(μ, σ)``.

Defaults are chosen for CPU and frozen features: the paper's head
(512-256-128, dropout 0.2/0.2/0.1, AdamW, weight decay 0.01, 30 epochs) with
batches of 64 at peak lr 3e-5 (warm-up then cosine decay), clipping at norm
1.0, keeping the epoch with the best holdout loss. Larger rates (1e-3) overfit
the 4,000 training questions within a few epochs. :meth:`TrainConfig.paper`
is the paper's schedule (lr 1e-5, 30 epochs, clipping 0.1, batch 16).
"""

from __future__ import annotations

import dataclasses
import functools
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Literal

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx
from numpy.typing import ArrayLike

from predictor.baselines import metrics
from predictor.features import TokenStates
from predictor.head import PriorHead

__all__ = [
    "Features",
    "TrainConfig",
    "TrainResult",
    "build_head",
    "fit_prior_widths",
    "label_params",
    "max_truncated_std",
    "predict",
    "predict_moments",
    "predict_params",
    "score_quantiles",
    "train",
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
            the largest std reachable at their mean (:func:`label_params`).
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


# ---------------------------------------------------------------- label mapping


def max_truncated_std(mean: ArrayLike) -> np.ndarray:
    """Largest std a normal truncated to [0, 1] can have at a given mean.

    The supremum is reached in the limit σ → ∞ with μ/σ² → λ, where the
    truncated normal becomes the truncated exponential ``∝ exp(λx)`` on [0, 1],
    whose mean is ``1/(1 − e^{−λ}) − 1/λ`` and variance
    ``1/λ² − e^{−λ}/(1 − e^{−λ})²``. λ is found by bisection (in log space)
    and the std returned; 0 for means outside (0, 1).

    Args:
        mean: means, any shape.

    Returns:
        The bound, same shape, float64.
    """
    m = np.asarray(mean, float)
    u = np.where(m < 0.5, 1.0 - m, m)  # symmetric in m ↔ 1 − m
    inside = (u > 0.5) & (u < 1.0)
    target = np.where(inside, u, 0.75)

    def mean_of(lam):
        return 1.0 / -np.expm1(-lam) - 1.0 / lam

    lo, hi = np.full_like(target, -14.0), np.full_like(target, 14.0)  # log λ
    for _ in range(200):
        mid = 0.5 * (lo + hi)
        too_small = mean_of(np.exp(mid)) < target
        lo, hi = np.where(too_small, mid, lo), np.where(too_small, hi, mid)
    lam = np.exp(0.5 * (lo + hi))
    var = 1.0 / lam**2 - np.exp(-lam) / np.expm1(-lam) ** 2
    std = np.sqrt(np.clip(var, 0.0, None))
    std = np.where(inside, std, 0.0)
    return np.where(u == 0.5, np.sqrt(1.0 / 12.0), std)


def label_params(
    mean: ArrayLike, std: ArrayLike, *, shrink: float = 0.95
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Truncated-normal parameters ``(μ, σ)`` of label moments, projecting infeasible pairs.

    Many real labels have a std too large for their mean (bimodal scores: some
    near 0, most near 1), which no normal truncated to [0, 1] reaches, and
    :func:`~optscale_jax.distributions.params_from_moments` returns NaN for
    them. Here every std is first capped at ``shrink ×``
    :func:`max_truncated_std` of its mean (feasible pairs below the cap are
    unchanged); pairs the core still cannot map (means at 0 or 1, or a solver
    limit) are marked invalid.

    Args:
        mean, std: label moments, shape ``(Q,)``.
        shrink: cap as a fraction of the largest feasible std, in (0, 1).

    Returns:
        ``(loc, scale, valid)``: float64 arrays and a bool mask; loc/scale are
        NaN where ``valid`` is False.
    """
    from optscale_jax.distributions import params_from_moments

    mean, std = np.asarray(mean, float).ravel(), np.asarray(std, float).ravel()
    if mean.shape != std.shape:
        raise ValueError(f"mean and std differ in shape: {mean.shape} vs {std.shape}")
    capped = np.minimum(std, shrink * max_truncated_std(mean))
    # pad to a power-of-two length so repeated calls reuse one compiled solver
    q = len(mean)
    size = max(1024, 1 << max(q - 1, 1).bit_length())
    m_pad = np.concatenate([mean, np.full(size - q, 0.5)])
    s_pad = np.concatenate([capped, np.full(size - q, 0.1)])
    with jax.enable_x64(True):
        loc, scale = params_from_moments(jnp.asarray(m_pad), jnp.asarray(s_pad))
    loc, scale = np.asarray(loc, float)[:q], np.asarray(scale, float)[:q]
    valid = np.isfinite(loc) & np.isfinite(scale) & (scale > 0) & (capped > 0)
    return np.where(valid, loc, np.nan), np.where(valid, scale, np.nan), valid


def score_quantiles(loc: ArrayLike, scale: ArrayLike, k: int) -> np.ndarray:
    """The ``k`` mid-quantiles ``F⁻¹((j + ½)/k)`` of ``TruncatedNormal01(loc, scale)``.

    Args:
        loc, scale: ``(Q,)`` parameters (finite).
        k: number of quantiles.

    Returns:
        ``(Q, k)`` float64 pseudo-scores in [0, 1].
    """
    from optscale_jax.distributions import TruncatedNormal01

    q = (np.arange(k) + 0.5) / k
    with jax.enable_x64(True):
        dist = TruncatedNormal01(
            jnp.asarray(loc, jnp.float64)[:, None], jnp.asarray(scale, jnp.float64)[:, None]
        )
        x = dist.icdf(jnp.asarray(q)[None, :])
    return np.clip(np.asarray(x, float), 0.0, 1.0)


# ---------------------------------------------------------------- batching


def _n_rows(features: Features) -> int:
    return len(features)


def _dim(features: Features) -> int:
    return features.dim if isinstance(features, TokenStates) else int(np.asarray(features).shape[1])


def _batch(features: Features, index: np.ndarray, batch_size: int, pad_multiple: int):
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


# ---------------------------------------------------------------- losses


def _regression_loss(loc, scale, target, weight, stats):
    """Squared errors standardised by the training label variances."""
    err = (loc - target[:, 0]) ** 2 / stats[0] + (scale - target[:, 1]) ** 2 / stats[1]
    return (weight * err).sum() / weight.sum()


def _score_model_loss(loc, scale, target, weight, stats):
    """Cross-entropy of the label quantiles under TruncatedNormal01(loc, scale)."""
    from optscale_jax.model import log_joint

    ll = log_joint(loc, scale, target)  # (B,), sum over the K quantiles
    return -(weight * ll).sum() / (weight.sum() * target.shape[1])


_LOSSES: dict[str, Callable] = {"regression": _regression_loss, "score_model": _score_model_loss}


# ---------------------------------------------------------------- training


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


def _targets(config: TrainConfig, mean: np.ndarray, std: np.ndarray):
    """Per-row training targets and validity for the objective."""
    if config.objective == "regression":
        return np.stack([mean, std], 1), np.ones(len(mean), bool)
    loc, scale, valid = label_params(mean, std, shrink=config.feasible_shrink)
    target = np.full((len(mean), config.n_quantiles), 0.5)
    if valid.any():
        target[valid] = score_quantiles(loc[valid], scale[valid], config.n_quantiles)
    return target, valid


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
    from tqdm.auto import tqdm

    config = config or TrainConfig()
    mean, std = np.asarray(mean, float), np.asarray(std, float)
    q = _n_rows(features)
    if mean.shape != (q,) or std.shape != (q,):
        raise ValueError(f"labels must have shape ({q},), got {mean.shape} and {std.shape}")
    if not (np.isfinite(mean).all() and np.isfinite(std).all()):
        raise ValueError("labels must be finite")

    rng = np.random.default_rng(config.seed)
    perm = rng.permutation(q)
    n_hold = int(round(config.holdout_fraction * q))
    hold, fit_rows = np.sort(perm[:n_hold]), np.sort(perm[n_hold:])
    target, valid = _targets(config, mean, std)
    fit_rows = fit_rows[valid[fit_rows]]
    if len(fit_rows) == 0:
        raise ValueError("no training rows with a usable label")

    if config.objective == "regression":
        loc_init, scale_init = float(mean[fit_rows].mean()), float(std[fit_rows].mean())
    else:
        loc, scale, _ = label_params(mean[fit_rows], std[fit_rows], shrink=config.feasible_shrink)
        loc_init, scale_init = float(np.median(loc)), float(np.median(scale))
    stats = np.array([mean[fit_rows].var(), std[fit_rows].var()])
    stats = np.where(stats > 0, stats, 1.0)
    label_stats = {
        "mean_var": float(stats[0]),
        "std_var": float(stats[1]),
        "loc_init": loc_init,
        "scale_init": scale_init,
    }

    head = build_head(_dim(features), config, loc_init=loc_init, scale_init=scale_init)
    graphdef, params = nnx.split(head)
    bs = min(config.batch_size, len(fit_rows))
    steps_per_epoch = math.ceil(len(fit_rows) / bs)
    tx = _optimizer(config, steps_per_epoch * config.epochs)
    opt_state = tx.init(params)
    loss_fn = _LOSSES[config.objective]
    stats_j = jnp.asarray(stats, jnp.float32)

    def batch_loss(params, x, mask, y, w, key):
        model = nnx.merge(graphdef, params)
        loc, scale = model(x, mask, key=key)
        return loss_fn(loc, scale, y, w, stats_j)

    @jax.jit
    def step(params, opt_state, x, mask, y, w, key):
        loss, grads = jax.value_and_grad(batch_loss)(params, x, mask, y, w, key)
        updates, opt_state = tx.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state, loss

    eval_loss = jax.jit(lambda params, x, mask, y, w: batch_loss(params, x, mask, y, w, None))
    base_key = jax.random.key(config.seed)
    history: list[dict] = []
    best: tuple = (np.inf, None, 0)
    bar = tqdm(range(config.epochs), desc="training", unit="epoch", disable=not progress)
    for epoch in bar:
        order = fit_rows[rng.permutation(len(fit_rows))]
        total, count = 0.0, 0
        for s in range(steps_per_epoch):
            idx = order[s * bs : (s + 1) * bs]
            x, mask, w, full = _batch(features, idx, bs, config.pad_multiple)
            key = jax.random.fold_in(base_key, epoch * steps_per_epoch + s)
            params, opt_state, loss = step(
                params, opt_state, x, mask, jnp.asarray(target[full], jnp.float32), w, key
            )
            total, count = total + float(loss) * len(idx), count + len(idx)
        row = {"epoch": epoch + 1, "loss": total / count}
        hold_ok = hold[valid[hold]]
        if len(hold_ok):
            hl, hn = 0.0, 0
            for s in range(0, len(hold_ok), bs):
                idx = hold_ok[s : s + bs]
                x, mask, w, full = _batch(features, idx, bs, config.pad_multiple)
                hl += float(
                    eval_loss(params, x, mask, jnp.asarray(target[full], jnp.float32), w)
                ) * len(idx)
                hn += len(idx)
            row["holdout_loss"] = hl / hn
        history.append(row)
        if config.keep_best and "holdout_loss" in row and row["holdout_loss"] <= best[0]:
            best = (row["holdout_loss"], params, epoch + 1)
        bar.set_postfix({k: f"{v:.4g}" for k, v in row.items() if k != "epoch"})
        if callback is not None:
            callback(row)
    bar.close()
    if best[1] is not None:
        params = best[1]
        history[-1]["best_epoch"] = best[2]
    head = nnx.merge(graphdef, params)
    result = TrainResult(head, config, history, {}, hold, label_stats)
    if len(hold):
        pm = predict_moments(
            head,
            features.subset(hold)
            if isinstance(features, TokenStates)
            else np.asarray(features)[hold],
            config.objective,
            pad_multiple=config.pad_multiple,
        )
        history[-1].update(
            {
                f"holdout_{k}": v
                for k, v in metrics(np.stack([mean[hold], std[hold]], 1), pm).items()
            }
        )
    if not fit_widths:
        return result
    width_rows = hold if len(hold) else fit_rows
    sub = (
        features.subset(width_rows)
        if isinstance(features, TokenStates)
        else np.asarray(features)[width_rows]
    )
    result.widths = fit_prior_widths(
        *predict_params(
            head,
            sub,
            config.objective,
            shrink=config.feasible_shrink,
            pad_multiple=config.pad_multiple,
        ),
        mean[width_rows],
        std[width_rows],
        shrink=config.feasible_shrink,
    )
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
        x, mask, _, _ = _batch(features, idx, bs, pad_multiple)
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
    from optscale_jax.distributions import moments

    with jax.enable_x64(True):
        m, s = moments(jnp.asarray(loc), jnp.asarray(scale))
    return np.stack([np.asarray(m, float), np.asarray(s, float)], 1)


def predict_params(
    head: PriorHead, features: Features, objective: Objective, *, shrink: float = 0.95, **kwargs
) -> tuple[np.ndarray, np.ndarray]:
    """Predicted truncated-normal parameters ``(μ̄, σ̄)`` — the MAP prior centres.

    ``"score_model"`` heads output them directly. ``"regression"`` heads output
    moments, mapped with :func:`label_params` (same projection); a prediction
    that still cannot be mapped falls back to ``(mean, std)`` themselves, which
    is what the official code uses as prior centres.
    """
    loc, scale = predict(head, features, **kwargs)
    if objective == "score_model":
        return loc, scale
    p_loc, p_scale, ok = label_params(
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

    Labels are mapped to ``(μ, σ)`` by :func:`label_params`; the widths are the
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
    loc, scale, ok = label_params(mean, std, shrink=shrink)
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
