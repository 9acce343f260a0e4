"""Baselines and metrics for predicting the (mean, std) labels.

Three baselines the head must be compared with on the same split: the training
mean, the per-level mean, and ridge regression on the same (pooled) features,
with the ridge penalty picked by exact leave-one-out error.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import ArrayLike

__all__ = [
    "GroupMean",
    "KernelRidge",
    "Ridge",
    "mae",
    "metrics",
    "r2",
    "train_mean",
]


def _check_pair(y_true: ArrayLike, y_pred: ArrayLike) -> tuple[np.ndarray, np.ndarray]:
    y_true, y_pred = np.asarray(y_true, float), np.asarray(y_pred, float)
    if y_true.shape != y_pred.shape:
        raise ValueError(f"shapes differ: labels {y_true.shape} vs predictions {y_pred.shape}")
    if y_true.shape[0] == 0:
        raise ValueError("no rows to score")
    return y_true, y_pred


def mae(y_true: ArrayLike, y_pred: ArrayLike) -> np.ndarray:
    """Mean absolute error over rows (per column for 2-D input)."""
    y_true, y_pred = _check_pair(y_true, y_pred)
    return np.abs(y_true - y_pred).mean(0)


def r2(y_true: ArrayLike, y_pred: ArrayLike) -> np.ndarray:
    """Coefficient of determination ``1 − SS_res / SS_tot`` over rows (per column).

    Negative when the prediction is worse than the labels' own mean; ``-inf`` or
    NaN when the labels are constant.
    """
    y_true, y_pred = _check_pair(y_true, y_pred)
    ss_res = ((y_true - y_pred) ** 2).sum(0)
    ss_tot = ((y_true - y_true.mean(0)) ** 2).sum(0)
    with np.errstate(divide="ignore", invalid="ignore"):
        return 1.0 - ss_res / ss_tot


def metrics(labels: ArrayLike, pred: ArrayLike) -> dict[str, float]:
    """MAE and R² of predicted ``[mean, std]`` columns against the labels.

    Args:
        labels: ``(Q, 2)`` label ``[mean, std]``.
        pred: ``(Q, 2)`` predicted ``[mean, std]``.

    Returns:
        ``{"mae_mean", "mae_std", "r2_mean", "r2_std"}``.
    """
    m, r = mae(labels, pred), r2(labels, pred)
    return {
        "mae_mean": float(m[0]),
        "mae_std": float(m[1]),
        "r2_mean": float(r[0]),
        "r2_std": float(r[1]),
    }


def train_mean(train_labels: ArrayLike, n: int) -> np.ndarray:
    """The training labels' column means repeated for ``n`` rows, ``(n, k)``."""
    y = np.asarray(train_labels, float)
    return np.broadcast_to(y.mean(0), (n, *y.shape[1:])).copy()


@dataclass
class GroupMean:
    """Per-group label mean (e.g. per MATH level); unseen groups get the overall mean.

    Attributes:
        groups: the distinct training groups.
        means: ``(G, k)`` mean label per group.
        overall: ``(k,)`` overall training mean (fallback).
    """

    groups: np.ndarray
    means: np.ndarray
    overall: np.ndarray

    @classmethod
    def fit(cls, groups: ArrayLike, labels: ArrayLike) -> GroupMean:
        """Fit on training ``groups (Q,)`` and ``labels (Q, k)``."""
        groups, labels = np.asarray(groups), np.asarray(labels, float)
        if groups.shape[0] != labels.shape[0]:
            raise ValueError(f"{groups.shape[0]} groups for {labels.shape[0]} label rows")
        uniq, inv = np.unique(groups, return_inverse=True)
        sums = np.zeros((len(uniq), *labels.shape[1:]))
        np.add.at(sums, inv, labels)
        counts = np.bincount(inv, minlength=len(uniq)).reshape(-1, *([1] * (labels.ndim - 1)))
        return cls(uniq, sums / counts, labels.mean(0))

    def predict(self, groups: ArrayLike) -> np.ndarray:
        """Mean label of each row's group, ``(n, k)``."""
        groups = np.asarray(groups)
        pos = np.searchsorted(self.groups, groups).clip(0, len(self.groups) - 1)
        known = self.groups[pos] == groups
        out = self.means[pos].copy()
        out[~known] = self.overall
        return out


@dataclass
class Ridge:
    """Ridge regression on standardised features with an unpenalised intercept.

    ``alpha`` is chosen from a grid by the exact leave-one-out squared error,
    computed in closed form from one SVD (``e_i / (1 − h_ii)``).

    Attributes:
        x_mean, x_scale: feature standardisation.
        y_mean: label means (the intercept).
        coef: ``(d, k)`` coefficients on standardised features.
        alpha: the chosen penalty.
        loo_mse: leave-one-out mean squared error per alpha of ``alphas``.
        alphas: the grid searched.
    """

    x_mean: np.ndarray
    x_scale: np.ndarray
    y_mean: np.ndarray
    coef: np.ndarray
    alpha: float
    loo_mse: np.ndarray
    alphas: np.ndarray

    @classmethod
    def fit(
        cls,
        x: ArrayLike,
        y: ArrayLike,
        *,
        alphas: ArrayLike = tuple(10.0 ** np.arange(-2, 5.5, 0.5)),
    ) -> Ridge:
        """Fit ``y ≈ x β + c`` minimising ``‖y − xβ − c‖² + α‖β‖²`` (α by LOO).

        Args:
            x: ``(n, d)`` features.
            y: ``(n,)`` or ``(n, k)`` labels; α is chosen on the summed LOO error
                over columns.
            alphas: candidate penalties (> 0).

        Returns:
            The fitted model.
        """
        x, y = np.asarray(x, float), np.asarray(y, float)
        if x.ndim != 2 or y.shape[0] != x.shape[0]:
            raise ValueError(f"x must be (n, d) with n == len(y); got {x.shape} and {y.shape}")
        alphas = np.asarray(alphas, float)
        if (alphas <= 0).any():
            raise ValueError("ridge penalties must be > 0")
        y2 = y.reshape(len(y), -1)
        x_mean, x_scale = x.mean(0), x.std(0)
        x_scale = np.where(x_scale > 0, x_scale, 1.0)
        xs = (x - x_mean) / x_scale
        y_mean = y2.mean(0)
        yc = y2 - y_mean
        u, s, vt = np.linalg.svd(xs, full_matrices=False)
        uty = u.T @ yc
        n = x.shape[0]
        loo = []
        for a in alphas:
            f = s**2 / (s**2 + a)
            fit = u @ (f[:, None] * uty)
            # hat matrix of the centred problem plus the intercept's 1/n
            h = (u**2 @ f) + 1.0 / n
            loo.append((((yc - fit) / (1.0 - h)[:, None]) ** 2).mean(0).sum())
        loo = np.asarray(loo)
        best = float(alphas[int(np.argmin(loo))])
        coef = vt.T @ ((s / (s**2 + best))[:, None] * uty)
        return cls(x_mean, x_scale, y_mean, coef, best, loo, alphas)

    def predict(self, x: ArrayLike) -> np.ndarray:
        """Predictions ``(n, k)`` for features ``(n, d)``."""
        x = np.asarray(x, float)
        return ((x - self.x_mean) / self.x_scale) @ self.coef + self.y_mean


@dataclass
class KernelRidge:
    """RBF kernel ridge regression on standardised features, labels centred.

    ``k(a, b) = exp(−‖a − b‖² / (g · m))`` with ``m`` the median squared distance
    between training rows; ``(g, λ)`` are chosen from grids, for each output column
    separately, by the squared error on held-out rows (:meth:`fit`'s ``x_val, y_val``),
    or fixed when single values.

    Attributes:
        x_train: standardised training features ``(n, d)``.
        x_mean, x_scale: feature standardisation.
        y_mean: label means.
        dual: ``(n, k)`` dual coefficients.
        gamma: ``(k,)`` the kernel's inverse squared length ``1 / (g · m)`` per column.
        lam: ``(k,)`` the ridge penalty per column.
        search: ``{"g=..,lam=..": [held-out squared error / variance per column]}``.
    """

    x_train: np.ndarray
    x_mean: np.ndarray
    x_scale: np.ndarray
    y_mean: np.ndarray
    dual: np.ndarray
    gamma: np.ndarray
    lam: np.ndarray
    search: dict

    @staticmethod
    def _sqdist(a: np.ndarray, b: np.ndarray) -> np.ndarray:
        d = (a**2).sum(1)[:, None] + (b**2).sum(1)[None, :] - 2.0 * a @ b.T
        return np.maximum(d, 0.0)

    @classmethod
    def fit(
        cls,
        x: ArrayLike,
        y: ArrayLike,
        *,
        x_val: ArrayLike | None = None,
        y_val: ArrayLike | None = None,
        widths: ArrayLike = (0.5, 1.0, 2.0),
        lams: ArrayLike = (0.1, 0.3, 1.0, 3.0),
    ) -> KernelRidge:
        """Fit on ``x (n, d)``, ``y (n, k)``; pick ``(g, λ)`` on ``(x_val, y_val)``.

        Raises:
            ValueError: on mismatched shapes, or several candidates without held-out rows.
        """
        x, y = np.asarray(x, float), np.asarray(y, float)
        if x.ndim != 2 or y.shape[0] != x.shape[0]:
            raise ValueError(f"x must be (n, d) with n == len(y); got {x.shape} and {y.shape}")
        widths, lams = np.atleast_1d(widths).astype(float), np.atleast_1d(lams).astype(float)
        if (widths <= 0).any() or (lams <= 0).any():
            raise ValueError("kernel widths and penalties must be > 0")
        if (len(widths) > 1 or len(lams) > 1) and (x_val is None or y_val is None):
            raise ValueError("several (width, lam) candidates need x_val and y_val to choose")
        y2 = y.reshape(len(y), -1)
        x_mean, x_scale = x.mean(0), x.std(0)
        x_scale = np.where(x_scale > 0, x_scale, 1.0)
        xs = (x - x_mean) / x_scale
        y_mean = y2.mean(0)
        d = cls._sqdist(xs, xs)
        med = float(np.median(d[np.triu_indices(len(xs), 1)])) if len(xs) > 1 else 1.0
        med = med if med > 0 else 1.0
        if x_val is not None:
            xv = (np.asarray(x_val, float) - x_mean) / x_scale
            yv = np.asarray(y_val, float).reshape(len(xv), -1)
            dv = cls._sqdist(xv, xs)
        k = y2.shape[1]
        # per output column: (held-out error, gamma, lam, dual column)
        best: list = [None] * k
        search = {}
        for g in widths:
            gamma = 1.0 / (g * med)
            evals, evecs = np.linalg.eigh(np.exp(-gamma * d))
            uty = evecs.T @ (y2 - y_mean)
            for lam in lams:
                dual = evecs @ (uty / (evals + lam)[:, None])
                if x_val is None:
                    best = [(0.0, gamma, lam, dual[:, j]) for j in range(k)]
                    continue
                res = (np.exp(-gamma * dv) @ dual + y_mean) - yv
                # each column's squared error relative to its held-out variance
                err = (res**2).mean(0) / np.maximum(yv.var(0), 1e-300)
                search[f"g={g:g},lam={lam:g}"] = err.tolist()
                for j in range(k):
                    if best[j] is None or err[j] < best[j][0]:
                        best[j] = (float(err[j]), gamma, lam, dual[:, j])
        gammas = np.array([b[1] for b in best])
        lams_ = np.array([b[2] for b in best])
        dual = np.stack([b[3] for b in best], 1)
        return cls(xs, x_mean, x_scale, y_mean, dual, gammas, lams_, search)

    def predict(self, x: ArrayLike) -> np.ndarray:
        """Predictions ``(n, k)`` for features ``(n, d)``."""
        xs = (np.asarray(x, float) - self.x_mean) / self.x_scale
        d = self._sqdist(xs, self.x_train)
        cols = [
            np.exp(-g * d) @ self.dual[:, j] for j, g in enumerate(np.atleast_1d(self.gamma))
        ]
        return np.stack(cols, 1) + self.y_mean
