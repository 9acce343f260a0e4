"""Stacked point predictions of the ``[mean, std]`` labels: embeddings, question text, metadata.

Stage 1 (base models, each predicting both outputs):

* ``kernel``: RBF kernel ridge on the pooled embeddings (⊕ metadata one-hots),
  the kernel width and per-output penalties of
  :class:`~predictor.uncertainty.CalibratedPredictor` (fixed, see
  :class:`StackConfig`);
* ``tfidf``: ridge on TF-IDF word 1–2-grams and character 2–5-grams of the
  question text (scikit-learn ``TfidfVectorizer``), α by exact leave-one-out
  (``RidgeCV``);
* ``stats``: ridge on cheap text statistics (:func:`text_statistics`: length,
  digits, LaTeX commands, ``$``, answer-type hints) ⊕ metadata.

Stage 2, per output column, on the stage-1 *out-of-fold* predictions of the
training rows (``folds``-fold): a ridge on all six base predictions ⊕ metadata,
and a ``HistGradientBoostingRegressor`` on the same plus the text statistics and
a few PCA components of the embeddings. Both outputs' base predictions enter
each column's model, so the std is predicted *conditional on the predicted mean*
(a score law on [0, 1] with its mean near 1 has little room to spread). The
stage-2 learner (ridge, boosting, or their average) is picked per column on the
seeded holdout of the training split — the same rows
:class:`~predictor.uncertainty.CalibratedPredictor` holds out — and nothing is
trained on those rows.

Without metadata (datasets other than MATH) the metadata columns are simply
absent: the documented fallback.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
from numpy.typing import ArrayLike

from predictor.baselines import metrics

__all__ = [
    "STAGE2",
    "StackConfig",
    "StackedPredictor",
    "TextRidge",
    "holdout_rows",
    "kernel_ridge_columns",
    "text_statistics",
]

STAGE2 = ("ridge", "boosting", "average")

_HINTS = (
    "express", "common fraction", "simplest radical", "how many", "find all",
    "enter all", "interval", "probability", "degrees", "ordered pair", "comma",
    "matrix", "[asy]", "\\sqrt", "\\frac", "?",
)


def text_statistics(texts: Sequence[str]) -> np.ndarray:
    """Cheap text features per question, ``(Q, 7 + 16)``.

    Columns: characters, log(1 + characters), words, digits, integers, LaTeX
    commands (``\\name``), ``$`` signs, then one count per answer-type hint
    (``"express"``, ``"common fraction"``, ``"how many"``, ``[asy]``, ``\\frac``, ...,
    case-insensitive).
    """
    rows = []
    for t in texts:
        low = t.lower()
        rows.append(
            [
                len(t),
                np.log1p(len(t)),
                len(t.split()),
                sum(c.isdigit() for c in t),
                len(re.findall(r"\d+", t)),
                len(re.findall(r"\\[a-zA-Z]+", t)),
                t.count("$"),
                *(low.count(h) for h in _HINTS),
            ]
        )
    return np.asarray(rows, float).reshape(len(rows), 7 + len(_HINTS))


def holdout_rows(q: int, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """``(train_rows, holdout_rows)``, sorted: the seeded split of
    :meth:`~predictor.uncertainty.CalibratedPredictor.fit` (same rows for the same seed)."""
    perm = np.random.default_rng(seed).permutation(q)
    n_hold = int(round(fraction * q))
    return np.sort(perm[n_hold:]), np.sort(perm[:n_hold])


def kernel_ridge_columns(
    x: np.ndarray, y: np.ndarray, x_new: np.ndarray, width: float, lams: Sequence[float]
) -> np.ndarray:
    """RBF kernel ridge, one penalty per output column, predictions on ``x_new``.

    Same model as :class:`~predictor.baselines.KernelRidge` with fixed ``(g, λ_j)``:
    standardised features, ``k(a, b) = exp(−‖a − b‖² / (g · median sq. distance))``,
    centred labels; one Cholesky solve per distinct penalty.
    """
    from scipy.linalg import cho_factor, cho_solve

    mu, sc = x.mean(0), x.std(0)
    sc = np.where(sc > 0, sc, 1.0)
    a, b = (x - mu) / sc, (x_new - mu) / sc

    def sq(u, v):
        return np.maximum((u**2).sum(1)[:, None] + (v**2).sum(1)[None] - 2.0 * u @ v.T, 0.0)

    d = sq(a, a)
    med = float(np.median(d[np.triu_indices(len(a), 1)])) if len(a) > 1 else 1.0
    gamma = 1.0 / (width * (med if med > 0 else 1.0))
    k = np.exp(-gamma * d)
    kb = np.exp(-gamma * sq(b, a))
    ym = y.mean(0)
    out = np.empty((len(b), y.shape[1]))
    for j, lam in enumerate(lams):
        c = cho_solve(cho_factor(k + lam * np.eye(len(a))), y[:, j] - ym[j])
        out[:, j] = kb @ c + ym[j]
    return out


_ALPHAS = tuple(float(a) for a in np.logspace(-1, 2.5, 12))


@dataclass
class TextRidge:
    """Ridge on TF-IDF word (1–2) and character (2–5, within words) n-grams.

    Attributes:
        word, char: the fitted ``TfidfVectorizer`` s.
        ridge: the fitted ``RidgeCV`` (α by exact leave-one-out).
    """

    word: object
    char: object
    ridge: object

    @classmethod
    def fit(cls, texts: Sequence[str], y: ArrayLike, alphas=_ALPHAS) -> TextRidge:
        """Fit on ``texts`` and labels ``y (Q, k)``."""
        from scipy import sparse
        from sklearn.feature_extraction.text import TfidfVectorizer
        from sklearn.linear_model import RidgeCV

        word = TfidfVectorizer(
            ngram_range=(1, 2), min_df=2, sublinear_tf=True, token_pattern=r"(?u)\\?\b\w+\b"
        )
        char = TfidfVectorizer(
            analyzer="char_wb", ngram_range=(2, 5), min_df=3, sublinear_tf=True,
            max_features=100_000,
        )
        texts = list(texts)
        x = sparse.hstack([word.fit_transform(texts), char.fit_transform(texts)]).tocsr()
        return cls(word, char, RidgeCV(alphas=alphas).fit(x, np.asarray(y, float)))

    def predict(self, texts: Sequence[str]) -> np.ndarray:
        """Predictions ``(Q, k)``."""
        from scipy import sparse

        texts = list(texts)
        x = sparse.hstack([self.word.transform(texts), self.char.transform(texts)]).tocsr()
        return np.asarray(self.ridge.predict(x), float)


@dataclass(frozen=True)
class StackConfig:
    """Hyper-parameters of :meth:`StackedPredictor.fit`.

    Attributes:
        folds: folds of the out-of-fold stage-1 predictions.
        holdout_fraction: share of training rows held out (seeded) to pick the
            stage-2 learner per column (same rows as the calibrated model's).
        kernel_width: kernel width ``g`` (multiple of the median squared distance).
        kernel_lams: kernel ridge penalty per output (``[mean, std]``); the values
            :class:`~predictor.uncertainty.CalibratedPredictor` picks on the same
            holdout for MiniLM features.
        pca_components: PCA components of the embeddings given to the boosting stage.
        boosting: ``HistGradientBoostingRegressor`` keyword arguments.
        seed: seeds the folds, the holdout, PCA and boosting.
    """

    folds: int = 5
    holdout_fraction: float = 0.2
    kernel_width: float = 0.5
    kernel_lams: tuple[float, float] = (0.3, 1.0)
    pca_components: int = 16
    boosting: dict = field(
        default_factory=lambda: {
            "learning_rate": 0.05, "max_iter": 300, "max_leaf_nodes": 15,
            "min_samples_leaf": 40, "l2_regularization": 1.0, "early_stopping": True,
            "validation_fraction": 0.15,
        }
    )
    seed: int = 0

    def __post_init__(self):
        if self.folds < 2:
            raise ValueError(f"folds must be >= 2, got {self.folds}")
        if not 0 < self.holdout_fraction < 1:
            raise ValueError(f"holdout_fraction must be in (0, 1), got {self.holdout_fraction}")
        if len(self.kernel_lams) != 2 or min(self.kernel_lams) <= 0:
            raise ValueError(f"kernel_lams must be two penalties > 0, got {self.kernel_lams}")
        if self.kernel_width <= 0 or self.pca_components < 1:
            raise ValueError("kernel_width must be > 0 and pca_components >= 1")

    def to_dict(self) -> dict:
        """JSON-ready dictionary."""
        return {
            k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(self).items()
        }


def _check_inputs(x, texts, meta) -> tuple[np.ndarray, list[str], np.ndarray]:
    x = np.asarray(x, float)
    if x.ndim != 2:
        raise ValueError(f"x must be (Q, d), got shape {x.shape}")
    texts = list(texts)
    if len(texts) != len(x):
        raise ValueError(f"texts has {len(texts)} rows, x {len(x)}")
    meta = np.zeros((len(x), 0)) if meta is None else np.asarray(meta, float)
    if meta.shape[0] != len(x) or meta.ndim != 2:
        raise ValueError(f"meta must be (Q, m) with Q = {len(x)}, got shape {meta.shape}")
    if not (np.isfinite(x).all() and np.isfinite(meta).all()):
        raise ValueError("x and meta must be finite")
    return x, texts, meta


@dataclass
class _Base:
    xm: np.ndarray
    y: np.ndarray
    texts: list
    tfidf: TextRidge
    stats: object
    s_mean: np.ndarray
    s_scale: np.ndarray


@dataclass
class StackedPredictor:
    """Stacked kernel ridge + TF-IDF ridge + text-statistics ridge; see the module docstring.

    Attributes:
        config: hyper-parameters.
        n_meta: metadata columns used (0: the features-only fallback).
        base: the stage-1 models refitted on all non-holdout rows.
        ridge, boosting: stage-2 models per output column.
        pca: the embeddings' PCA (boosting input).
        choice: stage-2 learner per column (one of :data:`STAGE2`).
        holdout_index: the training rows held out.
        holdout: holdout diagnostics (each base model, each stage-2 learner, the choice).
    """

    config: StackConfig
    n_meta: int
    base: _Base
    ridge: list
    boosting: list
    pca: object
    choice: list[str]
    holdout_index: np.ndarray
    holdout: dict

    @staticmethod
    def _fit_base(x, texts, meta, y, cfg: StackConfig) -> _Base:
        from sklearn.linear_model import RidgeCV

        s = text_statistics(texts)
        s_mean, s_scale = s.mean(0), s.std(0)
        s_scale = np.where(s_scale > 0, s_scale, 1.0)
        sm = np.hstack([(s - s_mean) / s_scale, meta])
        return _Base(
            np.hstack([x, meta]), y, texts, TextRidge.fit(texts, y),
            RidgeCV(alphas=_ALPHAS).fit(sm, y), s_mean, s_scale,
        )

    @staticmethod
    def _base_predict(b: _Base, x, texts, meta, cfg: StackConfig) -> np.ndarray:
        """``(Q, 6)``: kernel [mean, std], tfidf [mean, std], stats [mean, std]."""
        k = kernel_ridge_columns(b.xm, b.y, np.hstack([x, meta]), cfg.kernel_width,
                                 cfg.kernel_lams)
        s = (text_statistics(texts) - b.s_mean) / b.s_scale
        return np.hstack([k, b.tfidf.predict(texts), b.stats.predict(np.hstack([s, meta]))])

    def _stage2_inputs(self, z: np.ndarray, x, texts, meta) -> tuple[np.ndarray, np.ndarray]:
        lin = np.hstack([z, meta])
        return lin, np.hstack([lin, text_statistics(texts), self.pca.transform(x)])

    @classmethod
    def fit(
        cls,
        x: ArrayLike,
        texts: Sequence[str],
        labels: ArrayLike,
        meta: ArrayLike | None = None,
        config: StackConfig | None = None,
    ) -> StackedPredictor:
        """Train on the non-holdout rows; pick the stage-2 learner per column on the holdout.

        Args:
            x: pooled embeddings ``(Q, d)``.
            texts: the question texts.
            labels: ``(Q, 2)`` ``[mean, std]``.
            meta: metadata one-hots ``(Q, m)`` or ``None`` (features-only fallback).
            config: :class:`StackConfig`.

        Raises:
            ValueError: on mismatched shapes, non-finite inputs or too few rows.
        """
        from sklearn.decomposition import PCA
        from sklearn.ensemble import HistGradientBoostingRegressor
        from sklearn.linear_model import RidgeCV
        from sklearn.model_selection import KFold

        cfg = config or StackConfig()
        x, texts, meta = _check_inputs(x, texts, meta)
        y = np.asarray(labels, float)
        if y.shape != (len(x), 2) or not np.isfinite(y).all():
            raise ValueError(f"labels must be finite (Q, 2) = ({len(x)}, 2), got {y.shape}")
        rows, hold = holdout_rows(len(x), cfg.holdout_fraction, cfg.seed)
        if len(hold) < 2 or len(rows) < 4 * cfg.folds:
            raise ValueError(f"{len(x)} rows are too few for {cfg.folds} folds and a holdout")
        t = np.asarray(texts, dtype=object)
        oof = np.zeros((len(rows), 6))
        for a, b in KFold(cfg.folds, shuffle=True, random_state=cfg.seed).split(rows):
            ra, rb = rows[a], rows[b]
            base = cls._fit_base(x[ra], list(t[ra]), meta[ra], y[ra], cfg)
            oof[b] = cls._base_predict(base, x[rb], list(t[rb]), meta[rb], cfg)
        base = cls._fit_base(x[rows], list(t[rows]), meta[rows], y[rows], cfg)
        n_pca = min(cfg.pca_components, x.shape[1], len(rows) - 1)
        pca = PCA(n_pca, random_state=cfg.seed).fit(x[rows])
        model = cls(cfg, meta.shape[1], base, [], [], pca, [], hold, {})
        lin, full = model._stage2_inputs(oof, x[rows], list(t[rows]), meta[rows])
        for j in range(2):
            model.ridge.append(RidgeCV(alphas=_ALPHAS).fit(lin, y[rows, j]))
            hgb = HistGradientBoostingRegressor(random_state=cfg.seed, **cfg.boosting)
            model.boosting.append(hgb.fit(full, y[rows, j]))
        # the holdout: base models, each stage-2 learner, the pick per column
        zh = cls._base_predict(base, x[hold], list(t[hold]), meta[hold], cfg)
        cand = model._candidates(zh, x[hold], list(t[hold]), meta[hold])
        yh = y[hold]
        err = {k: (((p - yh) ** 2).mean(0) / yh.var(0)).tolist() for k, p in cand.items()}
        model.choice = [min(STAGE2, key=lambda k, j=j: err[k][j]) for j in range(2)]
        point = model.predict(x[hold], list(t[hold]), meta[hold])
        model.holdout = {
            "n": int(len(hold)),
            "oof_r2": {
                name: metrics(y[rows], oof[:, 2 * i : 2 * i + 2])
                for i, name in enumerate(("kernel", "tfidf", "stats"))
            },
            "base": {
                name: metrics(yh, zh[:, 2 * i : 2 * i + 2])
                for i, name in enumerate(("kernel", "tfidf", "stats"))
            },
            "stage2": {k: metrics(yh, p) for k, p in cand.items()},
            "choice": model.choice,
            **metrics(yh, point),
        }
        return model

    def _candidates(self, z, x, texts, meta) -> dict[str, np.ndarray]:
        lin, full = self._stage2_inputs(z, x, texts, meta)
        r = np.stack([m.predict(lin) for m in self.ridge], 1)
        b = np.stack([m.predict(full) for m in self.boosting], 1)
        return {"ridge": r, "boosting": b, "average": (r + b) / 2}

    def predict(
        self, x: ArrayLike, texts: Sequence[str], meta: ArrayLike | None = None
    ) -> np.ndarray:
        """Point predictions ``[mean, std]`` ``(Q, 2)``, clipped to ``[1e-4, 1 − 1e-4]``."""
        x, texts, meta = _check_inputs(x, texts, meta)
        if meta.shape[1] != self.n_meta:
            raise ValueError(f"meta must have {self.n_meta} columns, got {meta.shape[1]}")
        z = self._base_predict(self.base, x, texts, meta, self.config)
        cand = self._candidates(z, x, texts, meta)
        out = np.stack([cand[c][:, j] for j, c in enumerate(self.choice)], 1)
        return np.clip(out, 1e-4, 1 - 1e-4)
