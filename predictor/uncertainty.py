"""Calibrated per-question predictions: a heteroscedastic deep ensemble on pooled features.

The model (:class:`CalibratedPredictor`) predicts, for each question, the label
``[mean, std]`` of its PRM scores *and* how uncertain that prediction is:

* Inputs: pooled backbone embeddings, optionally joined with metadata one-hots
  (:func:`metadata_features`: MATH level 1..5 and subject). Without metadata
  (other datasets) the same model is trained on the embeddings alone: the
  documented fallback, whose accuracy is reported next to the metadata model.
* Targets are transformed, ``z = (logit(mean), log(std))`` (labels clipped to
  ``[1e-4, 1 − 1e-4]``), then standardised on the training rows.
* ``members`` small MLPs (one hidden GELU layer) are trained with optax
  (AdamW, full-batch) on the Gaussian negative log-likelihood, each predicting a
  mean and a log-variance for both outputs (a heteroscedastic deep ensemble,
  Lakshminarayanan et al. 2017). The ensemble's predictive distribution in
  ``z``-space is the moment-matched Gaussian of the mixture.
* A ridge regression on the same inputs (α by exact leave-one-out) is blended
  into the predicted mean, ``w·ensemble + (1 − w)·ridge``, with ``w`` picked on
  held-out *training* questions.
* The predictive std is then multiplied by one scalar per output fitted on the
  same held-out training questions so that the standardised residuals have unit
  mean square (the Gaussian maximum-likelihood scale).

Point predictions in label space are the back-transformed ``z`` means (medians
of the predictive distribution); intervals are back-transformed ``z``
intervals, so coverage and the PIT are the same in both spaces.

:func:`prior_widths` turns the predictive distribution into per-question prior
widths for the truncated-normal parameters ``(μ, σ)``: draws of ``(mean, std)``
are mapped with :func:`~optscale_jax.distributions.params_from_projected_moments`
and each width is half the 16–84% range of the mapped draws (a robust standard
deviation; the map has a heavy tail where scores pile up near 1).
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Sequence
from dataclasses import dataclass, field

import jax
import jax.numpy as jnp
import numpy as np
import optax
from numpy.typing import ArrayLike
from scipy import stats

from optscale_jax.distributions import params_from_projected_moments
from predictor.baselines import KernelRidge

__all__ = [
    "CalibratedPredictor",
    "EnsembleConfig",
    "Prediction",
    "coverage",
    "from_z",
    "metadata_features",
    "pit",
    "prior_widths",
    "to_z",
]

LABEL_CLIP = 1e-4
LEVELS = (1, 2, 3, 4, 5)


def to_z(labels: ArrayLike) -> np.ndarray:
    """``[mean, std]`` labels ``(Q, 2)`` → ``(logit(mean), log(std))`` (clipped to [1e-4, 1−1e-4])."""
    y = np.clip(np.asarray(labels, float), LABEL_CLIP, 1 - LABEL_CLIP)
    return np.stack([np.log(y[:, 0] / (1 - y[:, 0])), np.log(y[:, 1])], 1)


def from_z(z: ArrayLike) -> np.ndarray:
    """Inverse of :func:`to_z`: ``(Q, 2)`` → ``[mean, std]``."""
    z = np.asarray(z, float)
    return np.stack([1 / (1 + np.exp(-z[..., 0])), np.exp(z[..., 1])], -1)


def metadata_features(
    levels: ArrayLike | None, subjects: Sequence[str] | None, vocabulary: Sequence[str]
) -> np.ndarray | None:
    """One-hot MATH level (1..5) and subject columns, ``(Q, 5 + len(vocabulary))``.

    A level outside 1..5 (0: unknown) or a subject outside ``vocabulary`` gives an
    all-zero block for that row.

    Args:
        levels: difficulty per question, or ``None``.
        subjects: subject per question, or ``None``.
        vocabulary: the training subjects (column order).

    Returns:
        The float array, or ``None`` when neither levels nor subjects are known
        (all levels outside 1..5 and all subjects outside the vocabulary): the
        caller falls back to the features-only model.
    """
    if levels is None and subjects is None:
        return None
    n = len(levels) if levels is not None else len(subjects)
    lv = np.zeros((n, len(LEVELS)))
    if levels is not None:
        levels = np.asarray(levels)
        for j, v in enumerate(LEVELS):
            lv[:, j] = levels == v
    sj = np.zeros((n, len(vocabulary)))
    if subjects is not None:
        if len(subjects) != n:
            raise ValueError(f"subjects has {len(subjects)} rows, levels {n}")
        pos = {s: j for j, s in enumerate(vocabulary)}
        for i, s in enumerate(subjects):
            if s in pos:
                sj[i, pos[s]] = 1.0
    out = np.hstack([lv, sj])
    return out if out.any() else None


@dataclass(frozen=True)
class EnsembleConfig:
    """Hyper-parameters of :meth:`CalibratedPredictor.fit`.

    Attributes:
        members: ensemble size.
        hidden: width of each member's hidden layer.
        epochs: full-batch AdamW steps per member.
        learning_rate: peak rate (cosine decay to 0).
        weight_decay: AdamW decoupled weight decay.
        input_dropout: dropout rate on the inputs during training.
        holdout_fraction: share of training rows held out (seeded) to pick the
            ridge blend weight and calibrate the variance scale.
        blend_grid: candidate kernel-ridge weights ``w`` of the point prediction
            (1: kernel ridge only, 0: the ensemble's mean only).
        kernel_widths: kernel widths ``g`` (multiples of the median squared distance).
        kernel_lams: kernel ridge penalties.
        seed: seeds the holdout split and the members.
    """

    members: int = 5
    hidden: int = 256
    epochs: int = 200
    learning_rate: float = 3e-3
    weight_decay: float = 1e-2
    input_dropout: float = 0.2
    holdout_fraction: float = 0.2
    blend_grid: tuple[float, ...] = (0.0, 0.25, 0.5, 0.75, 1.0)
    kernel_widths: tuple[float, ...] = (0.5, 1.0)
    kernel_lams: tuple[float, ...] = (0.1, 0.3, 1.0)
    seed: int = 0

    def __post_init__(self):
        if self.members < 1 or self.hidden < 1 or self.epochs < 1:
            raise ValueError("members, hidden and epochs must be >= 1")
        if not 0 < self.holdout_fraction < 1:
            raise ValueError(f"holdout_fraction must be in (0, 1), got {self.holdout_fraction}")
        if not self.learning_rate > 0:
            raise ValueError(f"learning_rate must be > 0, got {self.learning_rate}")

    def to_dict(self) -> dict:
        """JSON-ready dictionary."""
        return {
            k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(self).items()
        }


@dataclass
class Prediction:
    """Predictive distribution per question.

    Attributes:
        z_mean: ``(Q, 2)`` predictive mean in ``z = (logit mean, log std)`` space.
        z_sd: ``(Q, 2)`` calibrated predictive std in ``z`` space.
    """

    z_mean: np.ndarray
    z_sd: np.ndarray

    @property
    def moments(self) -> np.ndarray:
        """Point prediction ``[mean, std]`` ``(Q, 2)`` (back-transformed ``z`` means)."""
        return from_z(self.z_mean)

    def interval(self, level: float) -> tuple[np.ndarray, np.ndarray]:
        """Central ``level`` interval of ``[mean, std]``, ``(lo (Q, 2), hi (Q, 2))``."""
        q = stats.norm.ppf(0.5 + level / 2)
        return from_z(self.z_mean - q * self.z_sd), from_z(self.z_mean + q * self.z_sd)


def coverage(pred: Prediction, labels: ArrayLike, levels=(0.5, 0.8, 0.95)) -> dict:
    """Share of labels inside each central interval, per output.

    Returns:
        ``{"50%": {"mean": c, "std": c}, ...}``.
    """
    u = pit(pred, labels)
    out = {}
    for lev in levels:
        inside = np.abs(u - 0.5) <= lev / 2
        out[f"{round(100 * lev)}%"] = {"mean": float(inside[:, 0].mean()),
                                       "std": float(inside[:, 1].mean())}
    return out


def pit(pred: Prediction, labels: ArrayLike) -> np.ndarray:
    """Probability integral transform ``F(label)`` per question and output, ``(Q, 2)``.

    Uniform on [0, 1] for a calibrated predictive distribution.
    """
    z = to_z(labels)
    return stats.norm.cdf((z - pred.z_mean) / pred.z_sd)


# ------------------------------------------------------------------ the ensemble


def _init_member(key: jax.Array, d_in: int, hidden: int) -> dict:
    k1, k2 = jax.random.split(key)
    return {
        "w1": jax.random.normal(k1, (d_in, hidden)) * np.sqrt(2.0 / d_in),
        "b1": jnp.zeros(hidden),
        "w2": jax.random.normal(k2, (hidden, 4)) * 0.01,
        "b2": jnp.zeros(4),
    }


def _member_out(params: dict, x: jax.Array) -> tuple[jax.Array, jax.Array]:
    h = jax.nn.gelu(x @ params["w1"] + params["b1"])
    out = h @ params["w2"] + params["b2"]
    return out[:, :2], jnp.clip(out[:, 2:], -9.0, 5.0)  # mean, log-variance (standardised z)


def _nll(params, x, y, key, rate):
    keep = jax.random.bernoulli(key, 1.0 - rate, x.shape)
    x = jnp.where(keep, x / (1.0 - rate), 0.0)
    m, logv = _member_out(params, x)
    return 0.5 * jnp.mean(logv + (y - m) ** 2 * jnp.exp(-logv))


@functools.partial(jax.jit, static_argnames=("hidden", "epochs", "lr", "wd", "rate"))
def _train_member(key, x, y, *, hidden, epochs, lr, wd, rate):
    k_init, k_drop = jax.random.split(key)
    params = _init_member(k_init, x.shape[1], hidden)
    tx = optax.adamw(optax.cosine_decay_schedule(lr, epochs), weight_decay=wd)
    opt = tx.init(params)
    grad = jax.value_and_grad(_nll)

    def step(carry, k):
        p, o = carry
        _, g = grad(p, x, y, k, rate)
        u, o = tx.update(g, o, p)
        return (optax.apply_updates(p, u), o), None

    (params, _), _ = jax.lax.scan(step, (params, opt), jax.random.split(k_drop, epochs))
    return params


@dataclass
class CalibratedPredictor:
    """Kernel ridge point predictions + heteroscedastic deep-ensemble uncertainty, calibrated.

    Build with :meth:`fit`; see the module docstring for the model.

    Attributes:
        config: hyper-parameters.
        x_mean, x_scale: input standardisation (ensemble).
        z_mean, z_scale: target standardisation (ensemble).
        members: the members' parameters (numpy arrays).
        kernel: the RBF kernel ridge on the raw ``[mean, std]`` labels.
        blend: ``(2,)`` kernel-ridge weight ``w`` per output, picked on the holdout.
        calibration: ``(2,)`` multipliers of the ensemble's predictive std in ``z`` space.
        holdout_index: the training rows held out.
        holdout: holdout diagnostics (searches, metrics, coverage).
    """

    config: EnsembleConfig
    x_mean: np.ndarray
    x_scale: np.ndarray
    z_mean: np.ndarray
    z_scale: np.ndarray
    members: list[dict]
    kernel: KernelRidge
    blend: np.ndarray = field(default_factory=lambda: np.ones(2))
    calibration: np.ndarray = field(default_factory=lambda: np.ones(2))
    holdout_index: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    holdout: dict = field(default_factory=dict)

    @classmethod
    def fit(
        cls, x: ArrayLike, labels: ArrayLike, config: EnsembleConfig | None = None
    ) -> CalibratedPredictor:
        """Train on ``x (Q, d)`` and ``labels (Q, 2)``; tune and calibrate on a seeded holdout.

        The holdout (``config.holdout_fraction`` of the rows, seeded) picks the kernel
        ridge's ``(g, λ)``, the blend weight and the variance scale; nothing else is
        trained on it.

        Raises:
            ValueError: on mismatched shapes, non-finite inputs or too few rows.
        """
        from predictor.baselines import metrics

        config = config or EnsembleConfig()
        x, labels = np.asarray(x, float), np.asarray(labels, float)
        if x.ndim != 2 or labels.shape != (x.shape[0], 2):
            raise ValueError(f"x must be (Q, d) and labels (Q, 2); got {x.shape}, {labels.shape}")
        if not (np.isfinite(x).all() and np.isfinite(labels).all()):
            raise ValueError("x and labels must be finite")
        q = x.shape[0]
        rng = np.random.default_rng(config.seed)
        perm = rng.permutation(q)
        n_hold = int(round(config.holdout_fraction * q))
        if n_hold < 2 or q - n_hold < 4:
            raise ValueError(f"{q} rows are too few for a holdout of {config.holdout_fraction}")
        hold, rows = np.sort(perm[:n_hold]), np.sort(perm[n_hold:])
        z = to_z(labels)
        x_mean, x_scale = x[rows].mean(0), x[rows].std(0)
        x_scale = np.where(x_scale > 0, x_scale, 1.0)
        z_mean, z_scale = z[rows].mean(0), z[rows].std(0)
        z_scale = np.where(z_scale > 0, z_scale, 1.0)
        xs = jnp.asarray((x[rows] - x_mean) / x_scale, jnp.float32)
        zs = jnp.asarray((z[rows] - z_mean) / z_scale, jnp.float32)
        members = []
        for m in range(config.members):
            p = _train_member(
                jax.random.key(config.seed * 1000 + m),
                xs,
                zs,
                hidden=config.hidden,
                epochs=config.epochs,
                lr=config.learning_rate,
                wd=config.weight_decay,
                rate=config.input_dropout,
            )
            members.append({k: np.asarray(v) for k, v in p.items()})
        kernel = KernelRidge.fit(
            x[rows], labels[rows], x_val=x[hold], y_val=labels[hold],
            widths=config.kernel_widths, lams=config.kernel_lams,
        )
        model = cls(
            config, x_mean, x_scale, z_mean, z_scale, members, kernel, np.ones(2), np.ones(2), hold
        )
        # blend weight on the holdout: squared error of the raw labels, per-column scaled
        ens_point, ens_m, ens_v = model._ensemble(x[hold])
        k_point = kernel.predict(x[hold])
        var = labels[hold].var(0)
        search = {}
        for w in config.blend_grid:
            point = w * k_point + (1 - w) * ens_point
            search[f"{w:g}"] = (((point - labels[hold]) ** 2).mean(0) / var).tolist()
        # one weight per output column
        model.blend = np.array(
            [min(config.blend_grid, key=lambda w, j=j: search[f"{w:g}"][j]) for j in range(2)]
        )
        point = model.blend * k_point + (1 - model.blend) * ens_point
        model.calibration = np.sqrt((((to_z(point) - z[hold]) ** 2) / ens_v).mean(0))
        pred = model.predict(x[hold])
        model.holdout = {
            "n": int(n_hold),
            "kernel_search": kernel.search,
            "kernel": {"gamma": kernel.gamma.tolist(), "lam": kernel.lam.tolist()},
            "blend_search": search,
            "blend": model.blend.tolist(),
            "calibration": model.calibration.tolist(),
            "kernel_ridge": metrics(labels[hold], k_point),
            "ensemble": metrics(labels[hold], ens_point),
            **metrics(labels[hold], pred.moments),
            "coverage": coverage(pred, labels[hold]),
        }
        return model

    def _ensemble(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Label-space mean ``(Q, 2)`` and the mixture's ``z`` mean and variance."""
        xs = jnp.asarray((x - self.x_mean) / self.x_scale, jnp.float32)
        ms, vs = [], []
        for p in self.members:
            m, logv = _member_out({k: jnp.asarray(v) for k, v in p.items()}, xs)
            ms.append(np.asarray(m, float) * self.z_scale + self.z_mean)
            vs.append(np.exp(np.asarray(logv, float)) * self.z_scale**2)
        ms, vs = np.stack(ms), np.stack(vs)
        # E[label] under each member's Gaussian in z (fixed quadrature nodes), averaged
        nodes, weights = np.polynomial.hermite_e.hermegauss(16)
        weights = weights / weights.sum()
        zz = ms[..., None] + np.sqrt(vs)[..., None] * nodes
        lab = np.stack([1 / (1 + np.exp(-zz[..., 0, :])), np.exp(zz[..., 1, :])], -2)
        point = (lab * weights).sum(-1).mean(0)
        return point, ms.mean(0), vs.mean(0) + ms.var(0)

    def ensemble_variance(self, x: ArrayLike) -> np.ndarray:
        """The ensemble mixture's (uncalibrated) predictive variance in ``z`` space, ``(Q, 2)``."""
        x = np.asarray(x, float)
        if x.ndim != 2 or x.shape[1] != self.x_mean.shape[0]:
            raise ValueError(f"x must be (Q, {self.x_mean.shape[0]}), got {x.shape}")
        return self._ensemble(x)[2]

    def recentred(self, x: ArrayLike, point: ArrayLike, labels: ArrayLike | None = None,
                  ) -> tuple[Prediction, np.ndarray]:
        """The ensemble's uncertainty around another model's point prediction.

        Args:
            x: inputs ``(Q, d)``.
            point: the other model's ``[mean, std]`` on ``x`` ``(Q, 2)``.
            labels: held-out labels of ``x``: when given, the variance scale is
                refitted so the standardised ``z`` residuals of ``point`` have unit
                mean square (as in :meth:`fit`); otherwise ``self.calibration``.

        Returns:
            ``(prediction, scale)``.
        """
        var = self.ensemble_variance(x)
        zp = to_z(point)
        if labels is None:
            scale = self.calibration
        else:
            scale = np.sqrt((((zp - to_z(labels)) ** 2) / var).mean(0))
        return Prediction(zp, np.sqrt(var) * scale), scale

    def predict(self, x: ArrayLike) -> Prediction:
        """The calibrated predictive distribution for ``x (Q, d)``.

        Centred (in ``z`` space) on the blended point prediction, with the
        ensemble's calibrated std.
        """
        x = np.asarray(x, float)
        if x.ndim != 2 or x.shape[1] != self.x_mean.shape[0]:
            raise ValueError(f"x must be (Q, {self.x_mean.shape[0]}), got {x.shape}")
        ens_point, _, ens_v = self._ensemble(x)
        point = self.blend * self.kernel.predict(x) + (1 - self.blend) * ens_point
        return Prediction(to_z(point), np.sqrt(ens_v) * self.calibration)


def prior_widths(
    pred: Prediction,
    *,
    n_draws: int = 64,
    seed: int = 0,
    shrink: float = 0.95,
    floor: float = 1e-3,
) -> dict[str, np.ndarray]:
    """Prior centres and per-question widths in the truncated-normal ``(μ, σ)`` space.

    Centres: the point prediction mapped with
    :func:`~optscale_jax.distributions.params_from_projected_moments` (a pair
    that cannot be mapped keeps ``(mean, std)`` as centres, as the authors do).
    Widths: ``n_draws`` seeded draws of ``z`` from the predictive Gaussian (both
    outputs independent), back-transformed and mapped the same way; each width
    is half the 16–84% range of the mapped draws, at least ``floor``.

    Returns:
        ``{"loc_mu", "loc_sigma", "scale_mu", "scale_sigma"}``, each ``(Q,)``.
    """
    mom = pred.moments
    loc, scale, ok = params_from_projected_moments(mom[:, 0], mom[:, 1], shrink=shrink)
    loc = np.where(ok, loc, mom[:, 0])
    scale = np.where(ok, scale, mom[:, 1])
    rng = np.random.default_rng(seed)
    q = len(mom)
    eps = rng.standard_normal((n_draws, q, 2))
    draws = from_z(pred.z_mean[None] + eps * pred.z_sd[None]).reshape(-1, 2)
    d_loc, d_scale, d_ok = params_from_projected_moments(draws[:, 0], draws[:, 1], shrink=shrink)
    d_loc = np.where(d_ok, d_loc, np.nan).reshape(n_draws, q)
    d_scale = np.where(d_ok, d_scale, np.nan).reshape(n_draws, q)

    def half_range(a: np.ndarray) -> np.ndarray:
        lo, hi = np.nanpercentile(a, [15.865, 84.135], axis=0)
        w = np.where(np.isfinite(hi - lo), (hi - lo) / 2, np.nan)
        return np.maximum(np.nan_to_num(w, nan=np.nanmax(w) if np.isfinite(w).any() else 1.0),
                          floor)

    return {
        "loc_mu": loc,
        "loc_sigma": np.maximum(scale, 1e-6),
        "scale_mu": half_range(d_loc),
        "scale_sigma": half_range(d_scale),
    }
