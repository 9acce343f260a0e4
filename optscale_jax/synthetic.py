"""The synthetic twin: completion pools calibrated to published figures (the built-in default).

No real 64-sample completion pool of the paper is distributed, so the package ships a
*synthetic twin* of each benchmark (MATH-500, GSM8K, AIME24, AIME25, AMC23): a pool of
scored, graded samples drawn from a small generative model whose few parameters are
calibrated to published numbers. Every pool it makes has ``synthetic=True`` and a
dataset name like ``"math500 (synthetic)"``; every output built from it must say so.

Generative model (per question ``i``, sample ``j``; numpy and ``scipy.special`` only):

* latent easiness ``d_i ~ N(0, 1)`` (stratified, so the expected accuracy is exact);
  per-question accuracy ``p_i = Phi(c + gamma d_i)`` with ``c`` solved in closed form so
  that ``E[p_i]`` equals the official Best-of-N accuracy at N = 1
  (``c = Phi^-1(acc) sqrt(1 + gamma^2)``); large ``gamma`` makes ``p_i`` bimodal.
* PRM score moments ``(m_i, s_i)``: drawn from the joint distribution of the real
  per-question mean/std of Qwen2.5-Math-PRM-7B scores of DeepSeek-R1-Distill-Qwen-7B
  completions on 5,001 MATH questions (``predictor/*_mu_sigma.json``), committed as
  quantiles in ``optscale_jax/data/synthetic_calibration.json``; the quantile level is
  ``Phi(lambda e_i + sqrt(1 - lambda^2) z_i)`` with ``e_i`` the question's easiness on
  the MATH scale, so harder questions (and harder datasets) get lower, wider scores.
* scores ``S_ij = F^-1_Beta(m_i, s_i)(Phi(x_ij))``, ``x_ij ~ N(0, 1)``: a Beta with the
  question's mean and std (piled near 1 with a tail of low scores, like real PRM
  scores; deliberately *not* the truncated normal OptScale assumes).
* correctness ``C_ij = [rho_i x_ij + sqrt(1 - rho_i^2) eps_ij > -(c + gamma d_i)]``:
  exactly ``P(C_ij) = p_i``, and correctness rises with score when ``rho_i > 0``;
  ``rho_i = tanh(atanh(rho) + tau w_i)`` varies by question (for a few it is negative:
  the PRM prefers a wrong answer, which makes Best-of-N saturate like on real models).
* answers: correct samples give the gold answer; a wrong sample gives no answer with
  probability ``no_answer``, a unique answer with probability ``unique_wrong``, else one
  of ``n_distractors`` distractors with question-specific Dirichlet(``distractor_alpha``)
  weights, so wrong answers cluster and majority voting behaves as on real models.
  ``answer_ids`` are classes by first appearance, as :func:`optscale_jax.grading.grade_pool`
  assigns them.
* tokens: log-normal around the official mean tokens per sample (question effect
  ``sigma_q``, sample effect ``sigma_s``; harder questions are longer).

``(gamma, rho, tau)`` are fitted by grid search to the official Best-of-N curve and
``(n_distractors, distractor_alpha, unique_wrong)`` to the official majority-vote curve
(``reference/official/*_{BoN,maj_vote}_results.json``) on large synthetic pools;
:func:`build_calibration` regenerates the JSON from the shared files
(``python -m optscale_jax.synthetic --calibrate [DATA_DIR]``). ``lam``, ``no_answer``,
``sigma_q`` and ``sigma_s`` are assumptions, not fitted: no published figure pins them.

How close the twin is (Best-of-N accuracy with argmax score, ties to the first drawn,
mean over seeds 0-9 at the benchmark's size; official numbers in brackets; regenerate
with ``python -m optscale_jax.synthetic --compare``):

.. code-block:: text

    dataset   N=1          N=2          N=4          N=8          N=16         N=32         N=64         tokens/sample
    math500   0.895(0.896) 0.928(0.934) 0.946(0.946) 0.946(0.948) 0.944(0.938) 0.941(0.944) 0.936(0.940) 2742(2737)
    gsm8k     0.871(0.870) 0.897(0.898) 0.912(0.913) 0.925(0.924) 0.933(0.935) 0.938(0.931) 0.941(0.940) 447(447)
    aime24    0.533(0.533) 0.613(0.667) 0.667(0.667) 0.693(0.700) 0.693(0.767) 0.710(0.700) 0.707(0.800) 9968(9951)
    aime25    0.367(0.367) 0.443(0.433) 0.457(0.400) 0.460(0.433) 0.470(0.467) 0.487(0.500) 0.503(0.533) 10630(10560)
    amc23     0.818(0.825) 0.863(0.875) 0.915(0.925) 0.945(0.950) 0.953(0.950) 0.953(0.950) 0.970(0.950) 4941(4952)

Mean absolute / maximum difference of the Best-of-N curve: MATH-500 0.003 / 0.006,
GSM8K 0.002 / 0.007, AMC23 0.009 / 0.020, AIME25 0.020 / 0.057, AIME24 0.034 / 0.093
(the official 30- and 40-question curves are themselves noisy: one AIME question is
3.3 points). The majority-vote curve is within 0.005 (MATH-500, GSM8K) and 0.05
(AIME, AMC) of the official one; mean tokens per sample within 1 %. The tests assert
N = 1 accuracy within 0.015 and mean tokens within 3 % on large pools, and the
MATH-500/GSM8K curves within 0.015 on average.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
from scipy.special import betaincinv, ndtr, ndtri

from optscale_jax.io.datadir import shared_data_dir
from optscale_jax.pool import Pool
from optscale_jax.selection import prefix_best_of_n_index, prefix_majority_index

__all__ = [
    "DATASETS",
    "TwinParams",
    "best_of_n_accuracy",
    "build_calibration",
    "compare_with_official",
    "load_calibration",
    "majority_accuracy",
    "synthetic_pool",
]

DATASETS: tuple[str, ...] = ("math500", "gsm8k", "aime24", "aime25", "amc23")
"""Benchmarks with a synthetic twin."""

_OFFICIAL = {"math500": "MATH500", "gsm8k": "GSM8K", "aime24": "AIME24", "aime25": "AIME25", "amc23": "AMC23"}
_SIZES = {"math500": 500, "gsm8k": 1319, "aime24": 30, "aime25": 30, "amc23": 40}
_CURVE_NS = (1, 2, 4, 8, 16, 32, 64)
_CALIBRATION_FILE = "synthetic_calibration.json"


@dataclass(frozen=True)
class TwinParams:
    """Parameters of one benchmark's synthetic twin (see the module docstring).

    Attributes:
        accuracy: expected accuracy of one sample (official BoN at N = 1).
        tokens_per_sample: expected completion tokens per sample.
        n_questions: default number of questions (the benchmark's size).
        gamma: spread of per-question accuracy on the probit scale.
        rho: typical score-correctness correlation (latent Gaussian).
        tau: spread of that correlation across questions (atanh scale).
        lam: correlation of easiness with the question's PRM score level.
        distractor_alpha: Dirichlet concentration of distractor weights (small = one
            dominant wrong answer).
        n_distractors: distractors per question.
        unique_wrong: probability that a wrong answer is unique (no one shares it).
        no_answer: probability that a wrong sample has no extractable answer.
        sigma_q: log-token spread between questions.
        sigma_s: log-token spread between samples of a question.
    """

    accuracy: float
    tokens_per_sample: float
    n_questions: int
    gamma: float = 1.5
    rho: float = 0.4
    tau: float = 0.5
    lam: float = 0.7
    distractor_alpha: float = 0.5
    n_distractors: int = 4
    unique_wrong: float = 0.3
    no_answer: float = 0.02
    sigma_q: float = 0.45
    sigma_s: float = 0.35


_CALIBRATION_CACHE: dict[str, Any] = {}


def load_calibration() -> dict[str, Any]:
    """The committed calibration numbers (``optscale_jax/data/synthetic_calibration.json``).

    Returns:
        ``{"prm_moments": {...}, "datasets": {name: {"params": {...}, "official": {...}}}, ...}``.
    """
    if "data" not in _CALIBRATION_CACHE:
        text = (Path(__file__).parent / "data" / _CALIBRATION_FILE).read_text("utf-8")
        _CALIBRATION_CACHE["data"] = json.loads(text)
    return _CALIBRATION_CACHE["data"]


def _params_for(dataset: str, calibration: dict[str, Any]) -> TwinParams:
    if dataset not in DATASETS:
        raise ValueError(f"unknown dataset {dataset!r}; choose one of {DATASETS}")
    return TwinParams(**calibration["datasets"][dataset]["params"])


def _interp_quantile(u: np.ndarray, probs: Sequence[float], values: Sequence[float]) -> np.ndarray:
    return np.interp(u, np.asarray(probs, dtype=float), np.asarray(values, dtype=float))


def _score_moments(u: np.ndarray, v: np.ndarray, moments: dict[str, Any]) -> tuple[np.ndarray, np.ndarray]:
    """(mean, std) at joint quantile levels: u for the mean, v for std within u's bin."""
    m = _interp_quantile(u, moments["mean_probs"], moments["mean_quantiles"])
    edges = np.asarray(moments["bin_edges"], dtype=float)  # quantile levels of the mean
    b = np.clip(np.searchsorted(edges, u, side="right") - 1, 0, len(edges) - 2)
    s = np.empty_like(m)
    for k, qs in enumerate(moments["std_quantiles_by_bin"]):
        sel = b == k
        s[sel] = _interp_quantile(v[sel], moments["std_probs"], qs)
    # A Beta needs std^2 < m (1 - m); real data stay below 0.7 of that bound.
    s = np.minimum(s, 0.9 * np.sqrt(m * (1.0 - m)))
    return m, np.maximum(s, 1e-4)


def _latent(
    p: TwinParams, ref: TwinParams, q: int, n: int, rng: np.random.Generator
) -> dict[str, np.ndarray]:
    """Draw every latent variable of the model (shared by generation and fitting)."""
    d = ndtri((rng.permutation(q) + rng.random(q)) / q)  # stratified N(0, 1)
    c = ndtri(p.accuracy) * math.sqrt(1.0 + p.gamma**2)
    lin = c + p.gamma * d  # p_i = Phi(lin)
    rho = np.tanh(np.arctanh(p.rho) + p.tau * rng.standard_normal(q))
    x = rng.standard_normal((q, n))
    eps = rng.standard_normal((q, n))
    correct = rho[:, None] * x + np.sqrt(1.0 - rho[:, None] ** 2) * eps > -lin[:, None]
    c_ref = ndtri(ref.accuracy) * math.sqrt(1.0 + ref.gamma**2)
    easiness = (lin - c_ref) / ref.gamma  # on the MATH-500 latent scale
    return {"d": d, "lin": lin, "x": x, "correct": correct, "easiness": easiness}


def _first_appearance_ids(codes: np.ndarray) -> np.ndarray:
    """Relabel per-row class codes (>= 0; -1 = none) as 0, 1, ... by first appearance."""
    q, n = codes.shape
    if n == 0:
        return codes.astype(np.int32)
    c_max = int(codes.max(initial=-1)) + 1
    first = np.full((q, max(c_max, 1)), n, dtype=np.int64)
    rows, cols = np.nonzero(codes >= 0)
    np.minimum.at(first, (rows, codes[rows, cols]), cols)
    rank = np.argsort(np.argsort(first, axis=1, kind="stable"), axis=1, kind="stable")
    ids = np.where(codes >= 0, np.take_along_axis(rank, np.maximum(codes, 0), axis=1), -1)
    return ids.astype(np.int32)


def synthetic_pool(
    dataset: str = "math500",
    n_samples: int = 64,
    seed: int = 0,
    n_questions: int | None = None,
    *,
    params: TwinParams | None = None,
    empty_rate: float = 0.0,
) -> Pool:
    """A synthetic twin pool of a benchmark, calibrated to the official results.

    Args:
        dataset: one of :data:`DATASETS`.
        n_samples: samples per question (the official pools have 64).
        seed: random seed; the pool is a deterministic function of all arguments.
        n_questions: number of questions (default: the benchmark's size, e.g. 500).
        params: override the calibrated :class:`TwinParams` (e.g. ``dataclasses.replace``).
        empty_rate: probability that a sample is an empty completion (no answer, never
            selectable, its drawn score kept as a PRM score; see :mod:`optscale_jax.pool`).
            Default 0.

    Returns:
        A graded pool with ``synthetic=True``, dataset ``"<name> (synthetic)"``, gold
        answers, answers, ``answer_ids``, ``correct`` and tokens; no prompts or step scores.

    Examples:
        >>> pool = synthetic_pool("aime24", n_samples=8, seed=1)
        >>> pool.dataset, pool.synthetic, pool.scores.shape
        ('aime24 (synthetic)', True, (30, 8))
    """
    cal = load_calibration()
    p = params if params is not None else _params_for(dataset, cal)
    ref = _params_for("math500", cal)
    q = int(n_questions if n_questions is not None else p.n_questions)
    n = int(n_samples)
    if q < 0 or n < 0:
        raise ValueError(f"n_questions and n_samples must be >= 0, got {q}, {n}")
    if not 0.0 <= empty_rate < 1.0:
        raise ValueError(f"empty_rate must be in [0, 1), got {empty_rate}")
    rng = np.random.default_rng([int(seed), DATASETS.index(dataset) if dataset in DATASETS else 99])
    lat = _latent(p, ref, q, n, rng)

    # PRM score level of each question, then Beta scores monotone in x.
    lam = p.lam
    u = ndtr(lam * lat["easiness"] + math.sqrt(1.0 - lam**2) * rng.standard_normal(q))
    m, s = _score_moments(u, rng.random(q), cal["prm_moments"])
    kappa = m * (1.0 - m) / s**2 - 1.0
    a, b = m * kappa, (1.0 - m) * kappa
    scores = betaincinv(a[:, None], b[:, None], ndtr(lat["x"]))
    scores = np.clip(scores, 0.0, 1.0)
    correct = lat["correct"]

    # Answers: 0 = gold, 1..K distractors, K+1+j unique, -1 none.
    k = p.n_distractors
    weights = rng.dirichlet(np.full(k, p.distractor_alpha), size=q) if k > 0 else np.zeros((q, 0))
    r = rng.random((q, n))
    cum = np.cumsum(weights, axis=1)
    pick = (rng.random((q, n))[:, :, None] > cum[:, None, :]).sum(axis=2)
    pick = np.minimum(pick, max(k - 1, 0))
    unique_code = k + 1 + np.arange(n)[None, :]
    if k > 0:
        wrong_code = np.where(r < p.no_answer + p.unique_wrong, unique_code, 1 + pick)
    else:
        wrong_code = np.broadcast_to(unique_code, (q, n))
    codes = np.where(r < p.no_answer, -1, wrong_code)
    codes = np.where(correct, 0, codes)
    empty = rng.random((q, n)) < empty_rate if empty_rate > 0 else np.zeros((q, n), dtype=bool)
    codes = np.where(empty, -1, codes)
    correct = correct & ~empty  # an empty completion keeps its drawn score (fits use it)
    answer_ids = _first_appearance_ids(codes)

    gold_vals = rng.integers(10, 1000, size=q)
    gold = [str(g) for g in gold_vals]
    answers = np.empty((q, n), dtype=object)
    for i in range(q):
        g = int(gold_vals[i])
        row = codes[i]
        answers[i] = [
            None if c < 0 else (gold[i] if c == 0 else str(g + 1000 * int(c)))
            for c in row.tolist()
        ]

    # Tokens: log-normal, harder questions longer, mean tokens_per_sample in expectation.
    w = ndtri((rng.permutation(q) + rng.random(q)) / q)  # stratified, for a stable mean
    zq = -0.5 * lat["d"] + math.sqrt(0.75) * w
    log_t = (
        math.log(p.tokens_per_sample)
        - 0.5 * (p.sigma_q**2 + p.sigma_s**2)
        + p.sigma_q * zq[:, None]
        + p.sigma_s * rng.standard_normal((q, n))
    )
    tokens = np.maximum(1, np.rint(np.exp(log_t))).astype(np.int64)

    name = dataset if dataset in DATASETS else str(dataset)
    return Pool(
        scores=scores,
        mask=np.ones((q, n), dtype=bool),
        tokens=tokens,
        answers=answers,
        answer_ids=answer_ids,
        correct=correct,
        question_ids=[f"{name}-synthetic-{i:04d}" for i in range(q)],
        dataset=f"{name} (synthetic)",
        prompts=None,
        gold=gold,
        step_scores=None,
        synthetic=True,
        empty=empty,
        metadata={
            "synthetic": {
                "seed": int(seed),
                "params": asdict(p),
                "empty_rate": float(empty_rate),
                "calibration": f"optscale_jax/data/{_CALIBRATION_FILE}",
            }
        },
    )


# ---------------------------------------------------------------------------
# Measurements used for calibration and its report
# ---------------------------------------------------------------------------


def best_of_n_accuracy(pool: Pool, ns: Sequence[int] = _CURVE_NS) -> np.ndarray:
    """Best-of-N accuracy over the first N samples: argmax score, ties to the first drawn.

    Empty completions are never selected; a question whose first N samples are all
    empty (or absent) counts as wrong.

    Args:
        pool: a graded pool.
        ns: values of N.

    Returns:
        ``(len(ns),)`` accuracies.
    """
    out = []
    sel = pool.selectable
    picks = prefix_best_of_n_index(pool.scores, pool.mask, sel)
    for n in ns:
        j = picks[:, [min(n, pool.n_max) - 1]]
        # an empty completion is picked only when all are empty: it counts as wrong
        ok = (np.take_along_axis(pool.correct, j, axis=1) & np.take_along_axis(sel, j, axis=1))[:, 0]
        out.append(ok.mean() if pool.n_questions else float("nan"))
    return np.asarray(out, dtype=float)


def majority_accuracy(pool: Pool, ns: Sequence[int] = _CURVE_NS, vote: str = "official") -> np.ndarray:
    """Majority-vote accuracy over the first N samples.

    The most frequent answer class wins; ties go to the class that appeared first (so
    N = 2 with two different answers keeps the first, as in the official results).
    Under ``vote="official"`` (the authors' rule, as replay's default) "no answer" is a
    class that votes and, winning, is wrong; under ``"math-verify"`` it does not vote.

    Args:
        pool: a graded pool with ``answer_ids``.
        ns: values of N.
        vote: ``"official"`` or ``"math-verify"`` (:func:`optscale_jax.grading.vote_classes`).

    Returns:
        ``(len(ns),)`` accuracies.
    """
    from optscale_jax.grading import vote_classes

    q = pool.n_questions
    ids = vote_classes(pool, vote)
    n_classes = int(ids.max(initial=-1)) + 1
    # correctness of each class = correctness of any of its samples
    cls_ok = np.zeros((q, max(n_classes, 1)), dtype=bool)
    rows, cols = np.nonzero(ids >= 0)
    cls_ok[rows, ids[rows, cols]] |= pool.correct[rows, cols]
    picks = prefix_majority_index(ids >= 0, ids)
    out = []
    for n in ns:
        j = picks[:, min(n, pool.n_max) - 1]
        win = ids[np.arange(q), j]  # -1: no answer among the first n
        out.append((cls_ok[np.arange(q), np.maximum(win, 0)] & (win >= 0)).mean() if q else float("nan"))
    return np.asarray(out, dtype=float)


def compare_with_official(
    dataset: str, seeds: Sequence[int] = range(10), n_questions: int | None = None
) -> dict[str, Any]:
    """Synthetic vs. official Best-of-N and majority-vote curves and mean tokens.

    Args:
        dataset: one of :data:`DATASETS`.
        seeds: seeds to average over.
        n_questions: pool size (default: the benchmark's).

    Returns:
        ``{"ns", "bon_synthetic", "bon_official", "maj_synthetic", "maj_official",
        "tokens_synthetic", "tokens_official", "bon_max_abs_diff", "bon_mean_abs_diff"}``.
    """
    cal = load_calibration()
    off = cal["datasets"][dataset]["official"]
    bon, maj, tok = [], [], []
    for seed in seeds:
        pool = synthetic_pool(dataset, 64, seed, n_questions)
        bon.append(best_of_n_accuracy(pool))
        maj.append(majority_accuracy(pool))
        tok.append(pool.tokens.mean())
    bon_s = np.mean(bon, axis=0)
    bon_o = np.asarray([off["bon"][str(n)] for n in _CURVE_NS])
    return {
        "dataset": dataset,
        "ns": list(_CURVE_NS),
        "bon_synthetic": bon_s.round(4).tolist(),
        "bon_official": bon_o.round(4).tolist(),
        "maj_synthetic": np.mean(maj, axis=0).round(4).tolist(),
        "maj_official": [round(off["maj"][str(n)], 4) for n in _CURVE_NS],
        "tokens_synthetic": float(np.mean(tok)),
        "tokens_official": float(off["tokens_per_sample"]),
        "bon_max_abs_diff": float(np.abs(bon_s - bon_o).max()),
        "bon_mean_abs_diff": float(np.abs(bon_s - bon_o).mean()),
    }


# ---------------------------------------------------------------------------
# Calibration from the shared files
# ---------------------------------------------------------------------------

_MEAN_PROBS = np.round(np.linspace(0.0, 1.0, 41), 6)
_STD_PROBS = np.round(np.linspace(0.0, 1.0, 11), 6)
_N_BINS = 8


def _summarise_prm_moments(files: Sequence[Path]) -> dict[str, Any]:
    rows = []
    for f in files:
        data = json.loads(Path(f).read_text("utf-8"))
        for k, pair in enumerate(data):
            if not (isinstance(pair, list) and len(pair) == 2 and all(isinstance(v, (int, float)) for v in pair)):
                raise ValueError(f"{f}: record {k}: expected [mean, std], got {pair!r}")
            rows.append(pair)
    arr = np.asarray(rows, dtype=float)
    m, s = arr[:, 0], arr[:, 1]
    rank = (np.argsort(np.argsort(m, kind="stable"), kind="stable") + 0.5) / len(m)
    edges = np.linspace(0.0, 1.0, _N_BINS + 1)
    std_q = []
    for lo, hi in zip(edges[:-1], edges[1:], strict=True):
        sel = (rank >= lo) & (rank < hi)
        std_q.append(np.quantile(s[sel], _STD_PROBS).round(6).tolist())
    return {
        "source": [f"predictor/{Path(f).name}" for f in files],
        "n_questions": int(len(m)),
        "what": "per-question mean and std of Qwen2.5-Math-PRM-7B scores (about 60 "
        "DeepSeek-R1-Distill-Qwen-7B completions per MATH question)",
        "mean_probs": _MEAN_PROBS.tolist(),
        "mean_quantiles": np.quantile(m, _MEAN_PROBS).round(6).tolist(),
        "bin_edges": edges.round(6).tolist(),
        "std_probs": _STD_PROBS.tolist(),
        "std_quantiles_by_bin": std_q,
        "corr_mean_std": round(float(np.corrcoef(m, s)[0, 1]), 4),
    }


def _official_targets(ref_dir: Path, dataset: str) -> dict[str, Any]:
    name = _OFFICIAL[dataset]
    bon = json.loads((ref_dir / f"{name}_BoN_results.json").read_text("utf-8"))
    maj = json.loads((ref_dir / f"{name}_maj_vote_results.json").read_text("utf-8"))
    bon_by_n = {int(r["N"]): r for r in bon}
    tokens = np.mean([bon_by_n[n]["token_count"] / n for n in bon_by_n])
    return {
        "source": [f"reference/official/{name}_BoN_results.json", f"reference/official/{name}_maj_vote_results.json"],
        "bon": {str(n): round(float(bon_by_n[n]["accuracy"]), 6) for n in _CURVE_NS},
        "maj": {str(n): round(float(maj[n - 1]["accuracy"]), 6) for n in _CURVE_NS},
        "tokens_per_sample": round(float(tokens), 2),
        "tokens_per_sample_n1": round(float(bon_by_n[1]["token_count"]), 2),
    }


def _fit_dataset(
    base: TwinParams, ref: TwinParams, target_bon: np.ndarray, target_maj: np.ndarray, moments: dict[str, Any]
) -> TwinParams:
    """Grid search of (gamma, rho, tau) on the BoN curve, then the distractors on maj."""
    q, n = 4000, 64
    best: tuple[float, TwinParams] | None = None
    for gamma in (0.5, 1.0, 1.5, 2.0, 3.0, 4.0):
        for rho in (0.1, 0.2, 0.3, 0.45, 0.6, 0.75, 0.9, 0.95):
            for tau in (0.0, 0.4, 0.8, 1.2, 1.6, 2.0):
                p = replace(base, gamma=gamma, rho=rho, tau=tau)
                lat = _latent(p, ref if base is not ref else p, q, n, np.random.default_rng(12345))
                picks = prefix_best_of_n_index(lat["x"], np.ones(lat["x"].shape, bool))
                curve = [lat["correct"][np.arange(q), picks[:, k - 1]].mean() for k in _CURVE_NS]
                loss = float(np.mean((np.asarray(curve) - target_bon) ** 2))
                if best is None or loss < best[0]:
                    best = (loss, p)
    assert best is not None
    fitted = best[1]
    best2: tuple[float, TwinParams] | None = None
    for k in (2, 4):
        for alpha in (0.05, 0.1, 0.2, 0.5, 1.0, 2.0):
            for unique in (0.0, 0.05, 0.15, 0.3, 0.5):
                p = replace(fitted, distractor_alpha=alpha, unique_wrong=unique, n_distractors=k)
                curve = majority_accuracy(_pool_with(p, q // 4, n), _CURVE_NS)
                loss = float(np.mean((curve - target_maj) ** 2))
                if best2 is None or loss < best2[0]:
                    best2 = (loss, p)
    assert best2 is not None
    return best2[1]


def _pool_with(p: TwinParams, q: int, n: int) -> Pool:
    return synthetic_pool("math500", n, seed=54321, n_questions=q, params=p)


def build_calibration(data_dir: str | Path | None = None, out: str | Path | None = None) -> dict[str, Any]:
    """Regenerate the committed calibration JSON from the shared data files.

    Reads ``predictor/train_mu_sigma.json`` and ``predictor/val_mu_sigma.json`` (summarised
    into quantiles: the mean's quantile function and the std's quantiles within 8 bins of
    the mean) and ``reference/official/*_{BoN,maj_vote}_results.json`` (curves at
    N = 1, 2, 4, ..., 64 and mean tokens per sample), then fits each dataset's
    :class:`TwinParams` by grid search (about a minute on 2 cores).

    Args:
        data_dir: the shared data directory (default: :func:`optscale_jax.io.shared_data_dir`).
        out: where to write the JSON (default: the package's ``data/`` file).

    Returns:
        The calibration dict that was written.
    """
    data_dir = Path(data_dir) if data_dir is not None else shared_data_dir()
    if data_dir is None:
        raise FileNotFoundError("shared data not found: pass data_dir or set OPTSCALE_DATA")
    moments = _summarise_prm_moments(
        [data_dir / "predictor" / "train_mu_sigma.json", data_dir / "predictor" / "val_mu_sigma.json"]
    )
    ref_dir = data_dir / "reference" / "official"
    cal: dict[str, Any] = {
        "about": "Calibration of optscale_jax.synthetic; regenerate with "
        "`python -m optscale_jax.synthetic --calibrate [DATA_DIR]`. Quantile summaries "
        "and published curves only, not copies of the shared files.",
        "prm_moments": moments,
        "datasets": {},
    }
    _CALIBRATION_CACHE["data"] = cal
    targets = {ds: _official_targets(ref_dir, ds) for ds in DATASETS}
    # MATH-500 first: it is the reference scale for the others.
    order = ["math500"] + [d for d in DATASETS if d != "math500"]
    for ds in order:
        t = targets[ds]
        base = TwinParams(
            accuracy=t["bon"]["1"], tokens_per_sample=t["tokens_per_sample"], n_questions=_SIZES[ds]
        )
        ref = TwinParams(**cal["datasets"]["math500"]["params"]) if ds != "math500" else base
        bon_t = np.asarray([t["bon"][str(n)] for n in _CURVE_NS])
        maj_t = np.asarray([t["maj"][str(n)] for n in _CURVE_NS])
        if ds == "math500":
            # provisional entry so that _pool_with can run while fitting math500 itself
            cal["datasets"]["math500"] = {"params": asdict(base), "official": t}
        fitted = _fit_dataset(base, ref if ds != "math500" else base, bon_t, maj_t, moments)
        cal["datasets"][ds] = {"params": asdict(fitted), "official": t}
        _CALIBRATION_CACHE["data"] = cal
    out_path = Path(out) if out is not None else Path(__file__).parent / "data" / _CALIBRATION_FILE
    out_path.parent.mkdir(parents=True, exist_ok=True)
    out_path.write_text(json.dumps(cal, indent=1) + "\n", encoding="utf-8")
    return cal


def _comparison_table(seeds: Sequence[int] = range(10)) -> str:
    lines = ["dataset   " + " ".join(f"N={n:<10d}" for n in _CURVE_NS) + " tokens/sample"]
    for ds in DATASETS:
        r = compare_with_official(ds, seeds)
        cells = " ".join(
            f"{s:.3f}({o:.3f})" for s, o in zip(r["bon_synthetic"], r["bon_official"], strict=True)
        )
        lines.append(f"{ds:<9} {cells} {r['tokens_synthetic']:.0f}({r['tokens_official']:.0f})")
    lines.append("majority vote (authors' vote rule):")
    for ds in DATASETS:
        r = compare_with_official(ds, seeds)
        cells = " ".join(
            f"{s:.3f}({o:.3f})" for s, o in zip(r["maj_synthetic"], r["maj_official"], strict=True)
        )
        lines.append(f"{ds:<9} {cells}")
    return "\n".join(lines)


if __name__ == "__main__":  # pragma: no cover - maintenance entry point
    import sys

    args = sys.argv[1:]
    if args and args[0] == "--calibrate":
        build_calibration(args[1] if len(args) > 1 else None)
        print(f"wrote optscale_jax/data/{_CALIBRATION_FILE}")
    elif args and args[0] == "--compare":
        print(_comparison_table())
    else:
        print("usage: python -m optscale_jax.synthetic --calibrate [DATA_DIR] | --compare")
