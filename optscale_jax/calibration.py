r"""Is the score model right? Calibration of OptScale's promise on a pool.

At each checkpoint ``k`` of OptScale (one-shot: the peek :func:`~optscale_jax.policies.optscale.official_peek`
of each budget; sequential: :func:`~optscale_jax.policies.optscale.checkpoints` from
``default_n_init("MLE")``) every question's law is fitted (MLE, any score family) on
its first ``k`` scores, and for every ``s_min`` and every ``n`` of a small grid (and
``n = N*`` for every α) the model predicts

    p = P(best of the NEXT n samples >= s_min) = 1 - F(s_min)^n,

while the pool says whether ``max(scores[k:k+n]) >= s_min`` (an *event*). A pair is
used only where the row holds ``k + n`` samples and the fit is usable
(:func:`~optscale_jax.fit.fit_status_usable`).

Outputs (:func:`calibrate` -> :class:`CalibrationResult`, :func:`write_calibration_report`):

* the reliability diagram (mean realised frequency per bin of predicted p) and the
  expected calibration error ``ECE = sum_b (n_b / n) |mean p_b - mean y_b|`` with a
  bootstrap CI that resamples *questions* (a question's events share its scores);
* the realised coverage of the α promise ``P(best of N* >= s_min) >= α`` per α of the
  official grid. Where a row holds fewer than ``N*`` samples after the checkpoint the
  event is *censored*, unless a remaining sample already reaches ``s_min`` (then the
  best of N* does too). Three numbers: ``observed`` (rows holding N* samples only;
  biased towards easy questions), ``lower`` (censored counted as misses) and ``upper``
  (censored counted as hits). The truth lies between lower and upper;
* PIT values ``F(x)`` of every held-out score ``x`` (after the checkpoint) under the
  question's fitted law: uniform when the law is right (KS distance reported);
* predictive checks of the held-out max and the held-out spread (std): the fraction of
  simulated held-out sets (from the fitted law, plug-in) whose statistic exceeds the
  observed one, per question; about 5% of questions fall in each 5% tail when the law is right;
* held-out log predictive density per score, per family, on the questions every family
  fits (plug-in at the fitted parameters), and a ranking of the families.

Everything is a function of the pool: it runs on the twins, the real pool and user pools.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import jax.numpy as jnp
import numpy as np

from optscale_jax.fit import fit_status_usable, validate_scores
from optscale_jax.inference import resolve_family
from optscale_jax.nstar import n_star_from_log_cdf
from optscale_jax.policies.optscale import checkpoints, default_n_init, official_peek
from optscale_jax.pool import Pool
from optscale_jax.sweep import OFFICIAL_GRID

__all__ = [
    "DEFAULT_N_GRID",
    "Events",
    "CalibrationResult",
    "calibration_events",
    "reliability_bins",
    "expected_calibration_error",
    "ece_bootstrap",
    "alpha_coverage",
    "pit_values",
    "predictive_checks",
    "heldout_log_density",
    "calibration_checkpoints",
    "calibrate",
    "write_calibration_report",
    "plot_reliability",
]

#: Look-ahead sample counts ``n`` of the reliability diagram (N* is added per α).
DEFAULT_N_GRID: tuple[int, ...] = (1, 2, 4, 8, 16, 32)
_F = np.float64


@dataclass
class Events:
    """Predicted-vs-realised pairs, one entry per (question, checkpoint, s_min, n).

    Attributes (1-D arrays of one length):
        question: row index.
        k: checkpoint (scores fitted on).
        s_min: target score.
        n: look-ahead samples (``N*`` for ``kind == 1``).
        alpha: α of an N* event, NaN for a grid event.
        kind: 0 = grid ``n``, 1 = ``n = N*``.
        p: predicted probability that the best of the next ``n`` reaches ``s_min``.
        y: realised (1.0 / 0.0); for censored N* events the value is NaN.
        censored: N* events only: the row holds fewer than N* samples after ``k`` and
            none of them reaches ``s_min`` (the outcome is unknown).
        observed: N* events only: the row holds N* samples after ``k``.
    """

    question: np.ndarray
    k: np.ndarray
    s_min: np.ndarray
    n: np.ndarray
    alpha: np.ndarray
    kind: np.ndarray
    p: np.ndarray
    y: np.ndarray
    censored: np.ndarray
    observed: np.ndarray

    def select(self, keep: np.ndarray) -> Events:
        return Events(*(getattr(self, f)[keep] for f in self.__dataclass_fields__))

    @staticmethod
    def concat(parts: Sequence[Events]) -> Events:
        if not parts:
            e = np.zeros(0)
            return Events(e.astype(int), e.astype(int), e, e.astype(int), e, e.astype(int), e, e,
                          e.astype(bool), e.astype(bool))
        return Events(*(np.concatenate([getattr(p, f) for p in parts]) for f in Events.__dataclass_fields__))

    def __len__(self) -> int:
        return int(self.p.size)


# ----------------------------------------------------------------------------- events


def _check_grid(name: str, values: Sequence[float], lo: float, hi: float) -> np.ndarray:
    v = np.asarray(list(values), dtype=float).reshape(-1)
    if v.size == 0:
        raise ValueError(f"{name} is empty")
    bad = ~((v > lo) & (v < hi))
    if bad.any():
        raise ValueError(f"{name} values must lie in ({lo}, {hi}), got {float(v[bad][0])}")
    return v


def calibration_events(
    scores: np.ndarray,
    mask: np.ndarray,
    k: int,
    log_f: np.ndarray,
    s_min: Sequence[float],
    *,
    usable: np.ndarray | None = None,
    n_grid: Sequence[int] = DEFAULT_N_GRID,
    alphas: Sequence[float] = (),
) -> Events:
    """The events of one checkpoint, given ``log F(s_min)`` of each question's law.

    Args:
        scores: ``(Q, N)``.
        mask: ``(Q, N)`` prefix-contiguous.
        k: the checkpoint: the law was fitted on ``scores[:, :k]``.
        log_f: ``(len(s_min), Q)`` log CDF of each question's law at each ``s_min``.
        s_min: target scores.
        usable: ``(Q,)`` rows whose law may be used (default all).
        n_grid: look-ahead counts.
        alphas: α values whose N* events are added.

    Returns:
        :class:`Events`.
    """
    s, m = validate_scores(scores, mask)
    q, width = s.shape
    s_min = np.asarray(list(s_min), dtype=float)
    log_f = np.asarray(log_f, dtype=float).reshape(s_min.size, q)
    k = int(k)
    if not 0 <= k < width:
        raise ValueError(f"k must be in [0, {width - 1}] for a pool of {width} samples, got {k}")
    drawn = m.sum(axis=1)
    ok = (drawn > k) if usable is None else (np.asarray(usable, bool) & (drawn > k))
    held = np.where(m[:, k:], s[:, k:], -np.inf)
    best = np.maximum.accumulate(held, axis=1)  # best[:, j] = max of the next j + 1 scores
    remaining = drawn - k
    best_all = best[:, -1]
    parts: list[Events] = []
    rows = np.arange(q)
    for i, target in enumerate(s_min):
        lf = log_f[i]
        for n in n_grid:
            n = int(n)
            if n < 1 or n > width - k:
                continue
            keep = ok & (remaining >= n) & np.isfinite(lf)
            if not keep.any():
                continue
            p = -np.expm1(n * lf[keep])
            y = (best[keep, n - 1] >= target).astype(float)
            c = int(keep.sum())
            parts.append(Events(rows[keep], np.full(c, k), np.full(c, target), np.full(c, n),
                                np.full(c, np.nan), np.zeros(c, int), p, y, np.zeros(c, bool),
                                np.ones(c, bool)))
        for a in alphas:
            keep = ok & ~np.isnan(lf)
            if not keep.any():
                continue
            nstar = np.asarray(n_star_from_log_cdf(jnp.asarray(lf[keep]), float(a)), dtype=np.int64)
            rem = remaining[keep]
            full = nstar <= rem
            idx = np.clip(np.minimum(nstar, rem) - 1, 0, width - k - 1)
            hit_full = best[keep][np.arange(idx.size), idx] >= target
            hit_any = best_all[keep] >= target
            y = np.where(full, hit_full, np.where(hit_any, True, np.nan)).astype(float)
            cens = ~full & ~hit_any
            p = -np.expm1(nstar * lf[keep])
            c = int(keep.sum())
            parts.append(Events(rows[keep], np.full(c, k), np.full(c, target), nstar,
                                np.full(c, float(a)), np.ones(c, int), p, y, cens, full))
    return Events.concat(parts)


# ----------------------------------------------------------------------------- statistics


def reliability_bins(p: np.ndarray, y: np.ndarray, n_bins: int = 10) -> dict[str, np.ndarray]:
    """Equal-width bins of predicted p: count, mean p and realised frequency per bin.

    Returns:
        ``{"edges", "count", "p_mean", "y_mean"}`` (means NaN in empty bins).
    """
    p = np.asarray(p, float)
    y = np.asarray(y, float)
    edges = np.linspace(0.0, 1.0, int(n_bins) + 1)
    b = np.clip(np.digitize(p, edges[1:-1], right=False), 0, n_bins - 1)
    count = np.bincount(b, minlength=n_bins).astype(float)
    with np.errstate(invalid="ignore", divide="ignore"):
        p_mean = np.bincount(b, weights=p, minlength=n_bins) / count
        y_mean = np.bincount(b, weights=y, minlength=n_bins) / count
    return {"edges": edges, "count": count, "p_mean": p_mean, "y_mean": y_mean}


def expected_calibration_error(p: np.ndarray, y: np.ndarray, n_bins: int = 10) -> float:
    """``sum_b (n_b / n) |mean p_b - mean y_b|`` over equal-width bins of p (NaN when empty).

    Examples:
        >>> expected_calibration_error(np.array([0.25, 0.25, 0.75, 0.75]), np.array([0, 1, 1, 1]), 2)
        0.125
    """
    r = reliability_bins(p, y, n_bins)
    n = r["count"].sum()
    if n == 0:
        return float("nan")
    keep = r["count"] > 0
    return float(np.sum(r["count"][keep] * np.abs(r["p_mean"][keep] - r["y_mean"][keep])) / n)


def _per_question_bins(q_idx, p, y, n_questions, n_bins):
    edges = np.linspace(0.0, 1.0, int(n_bins) + 1)
    b = np.clip(np.digitize(p, edges[1:-1]), 0, n_bins - 1)
    flat = q_idx * n_bins + b
    size = n_questions * n_bins
    cnt = np.bincount(flat, minlength=size).reshape(n_questions, n_bins)
    sp = np.bincount(flat, weights=p, minlength=size).reshape(n_questions, n_bins)
    sy = np.bincount(flat, weights=y, minlength=size).reshape(n_questions, n_bins)
    return cnt.astype(float), sp, sy


def ece_bootstrap(
    question: np.ndarray,
    p: np.ndarray,
    y: np.ndarray,
    *,
    n_bins: int = 10,
    n_boot: int = 1000,
    level: float = 0.95,
    seed: int = 0,
) -> tuple[float, tuple[float, float]]:
    """ECE and its percentile bootstrap CI, resampling questions (with all their events).

    Args:
        question: ``(E,)`` row index of each event.
        p, y: predicted probabilities and outcomes ``(E,)``.

    Returns:
        ``(ece, (lo, hi))``; the CI is ``(nan, nan)`` when ``n_boot == 0`` or no events.
    """
    question = np.asarray(question, int)
    ece = expected_calibration_error(p, y, n_bins)
    if n_boot <= 0 or question.size == 0:
        return ece, (float("nan"), float("nan"))
    uq, qi = np.unique(question, return_inverse=True)
    cnt, sp, sy = _per_question_bins(qi, np.asarray(p, float), np.asarray(y, float), uq.size, n_bins)
    rng = np.random.default_rng(seed)
    w = rng.multinomial(uq.size, np.full(uq.size, 1.0 / uq.size), size=n_boot).astype(float)
    c, a, b = w @ cnt, w @ sp, w @ sy
    with np.errstate(invalid="ignore", divide="ignore"):
        gap = np.where(c > 0, np.abs(a - b) / np.where(c > 0, c, 1.0), 0.0)
    boot = (c * gap).sum(axis=1) / c.sum(axis=1)
    lo, hi = np.nanquantile(boot, [(1 - level) / 2, (1 + level) / 2])
    return ece, (float(lo), float(hi))


def alpha_coverage(events: Events, *, n_boot: int = 1000, seed: int = 0) -> list[dict[str, Any]]:
    """Realised coverage of the α promise from the N* events, one row per α.

    Returns:
        Dicts ``alpha, events, observed_events, censored, coverage_observed (+ _ci),
        coverage_lower, coverage_upper, mean_p, median_n_star, holds`` where ``holds`` is
        ``"yes"`` (lower bound >= α), ``"no"`` (upper bound < α) or ``"undecided"``.
    """
    rows = []
    nstar = events.select(events.kind == 1)
    rng_seed = seed
    for a in sorted(set(nstar.alpha.tolist())):
        e = nstar.select(nstar.alpha == a)
        n = len(e)
        hits = np.nansum(e.y)
        obs = e.observed
        cov_obs = float(np.mean(e.y[obs])) if obs.any() else float("nan")
        lower = float(hits / n) if n else float("nan")
        upper = float((hits + e.censored.sum()) / n) if n else float("nan")
        ci = (float("nan"), float("nan"))
        if n_boot > 0 and obs.any():
            uq, qi = np.unique(e.question[obs], return_inverse=True)
            num = np.bincount(qi, weights=e.y[obs], minlength=uq.size)
            den = np.bincount(qi, minlength=uq.size).astype(float)
            rng = np.random.default_rng(rng_seed)
            w = rng.multinomial(uq.size, np.full(uq.size, 1.0 / uq.size), size=n_boot).astype(float)
            with np.errstate(invalid="ignore", divide="ignore"):
                boot = (w @ num) / (w @ den)
            lo, hi = np.nanquantile(boot, [0.025, 0.975])
            ci = (float(lo), float(hi))
        holds = "yes" if lower >= a else ("no" if upper < a else "undecided")
        rows.append({
            "alpha": float(a), "events": n, "observed_events": int(obs.sum()),
            "censored": int(e.censored.sum()), "coverage_observed": cov_obs,
            "coverage_observed_ci": ci, "coverage_lower": lower, "coverage_upper": upper,
            "mean_p": float(np.mean(e.p)) if n else float("nan"),
            "median_n_star": float(np.median(e.n)) if n else float("nan"), "holds": holds,
        })
    return rows


def _ks_uniform(u: np.ndarray) -> float:
    u = np.sort(np.asarray(u, float))
    n = u.size
    if n == 0:
        return float("nan")
    i = np.arange(1, n + 1)
    return float(max(np.max(i / n - u), np.max(u - (i - 1) / n)))


def _expand(params: dict, ndim: int) -> dict:
    return {k: jnp.asarray(v)[(...,) + (None,) * ndim] for k, v in params.items()}


def pit_values(family: Any, params: dict, scores: np.ndarray, mask: np.ndarray, k: int,
               usable: np.ndarray) -> np.ndarray:
    """``F(x)`` of every held-out score ``x = scores[q, j]``, ``j >= k``, of usable rows.

    Returns:
        1-D array of PIT values (uniform on [0, 1] when the fitted laws are right).
    """
    fam = resolve_family(family)
    held = scores[:, k:]
    hm = mask[:, k:] & np.asarray(usable, bool)[:, None]
    if not hm.any():
        return np.zeros(0)
    u = np.exp(np.asarray(fam.log_cdf(_expand(params, 1), jnp.asarray(held, float)), dtype=float))
    u = u[hm]
    return np.clip(u[np.isfinite(u)], 0.0, 1.0)


def _grid_sample(family: Any, params: dict, rng: np.random.Generator, shape: tuple[int, ...],
                 grid: int = 4096) -> np.ndarray:
    """Draws ``(Q, *shape)`` by inverting each row's CDF tabulated on a grid of [0, 1].

    Any family with a ``log_cdf`` works; the resolution is ``1 / grid`` in score units
    (exact-enough for spreads; the held-out max is checked in closed form instead).
    """
    xs = np.linspace(0.0, 1.0, int(grid) + 1)
    cdf = np.exp(np.asarray(family.log_cdf(_expand(params, 1), jnp.asarray(xs)[None, :]), float))
    cdf = np.maximum.accumulate(np.nan_to_num(np.clip(cdf, 0.0, 1.0)), axis=1)
    cdf[:, 0], cdf[:, -1] = 0.0, 1.0
    q = cdf.shape[0]
    u = rng.uniform(size=(q,) + tuple(shape))
    off = 2.0 * np.arange(q)
    flat = (cdf + off[:, None]).ravel()
    target = (u + off.reshape((q,) + (1,) * len(shape))).ravel()
    j = np.clip(np.searchsorted(flat, target, side="left"), 1, flat.size - 1)
    lo, hi = flat[j - 1], flat[j]
    xg = np.tile(xs, q)
    with np.errstate(invalid="ignore", divide="ignore"):
        w = np.where(hi > lo, (target - lo) / (hi - lo), 0.5)
    x = xg[j - 1] + np.clip(w, 0.0, 1.0) * (xg[j] - xg[j - 1])
    return x.reshape((q,) + tuple(shape))


def predictive_checks(
    family: Any, params: dict, scores: np.ndarray, mask: np.ndarray, k: int, usable: np.ndarray,
    *, draws: int = 200, seed: int = 0,
) -> dict[str, np.ndarray]:
    """Plug-in predictive p-values of the held-out max and spread, per question.

    For each usable question with at least two held-out scores (the ``M`` scores after
    ``k``): the max's p-value is exact, ``P(max of M > obs) = 1 - F(obs)^M``; the
    spread's (std) is ``P(sim > obs) + P(sim == obs) / 2`` over ``draws`` held-out sets
    of size ``M`` simulated from the fitted law (inverse CDF on a fine grid).

    Returns:
        ``{"question", "max", "spread"}`` arrays (p-values uniform when the law is right).
    """
    fam = resolve_family(family)
    drawn = mask.sum(axis=1)
    m_held = drawn - k
    rows = np.nonzero(np.asarray(usable, bool) & (m_held >= 2))[0]
    if rows.size == 0:
        return {"question": rows, "max": np.zeros(0), "spread": np.zeros(0)}
    width = int(m_held[rows].max())
    sub = {kk: np.asarray(v, float)[rows] for kk, v in params.items()}
    valid = np.arange(width)[None, :] < m_held[rows][:, None]  # (R, width)
    held = scores[rows, k:k + width]
    obs_max = np.max(np.where(valid, held, -np.inf), axis=-1)
    log_f = np.asarray(fam.log_cdf({kk: jnp.asarray(v) for kk, v in sub.items()}, jnp.asarray(obs_max)), float)
    p_max = -np.expm1(m_held[rows] * log_f)
    sims = _grid_sample(fam, sub, np.random.default_rng(seed), (int(draws), width))  # (R, draws, width)
    vm = valid[:, None, :]
    cnt = valid.sum(axis=1)
    mean = np.sum(np.where(vm, sims, 0.0), axis=-1) / cnt[:, None]
    sim_sd = np.sqrt(np.sum(np.where(vm, (sims - mean[..., None]) ** 2, 0.0), axis=-1) / cnt[:, None])
    om = np.sum(np.where(valid, held, 0.0), axis=-1) / cnt
    obs_sd = np.sqrt(np.sum(np.where(valid, (held - om[:, None]) ** 2, 0.0), axis=-1) / cnt)[:, None]
    p_sd = np.mean(sim_sd > obs_sd, axis=1) + 0.5 * np.mean(sim_sd == obs_sd, axis=1)
    return {"question": rows, "max": p_max, "spread": p_sd}


def heldout_log_density(family: Any, params: dict, scores: np.ndarray, mask: np.ndarray, k: int,
                        usable: np.ndarray) -> np.ndarray:
    """Mean log density of each question's held-out scores (``j >= k``) under its fitted law.

    Returns:
        ``(Q,)``; NaN for rows that are not usable or hold no score after ``k``.
    """
    fam = resolve_family(family)
    held = scores[:, k:]
    hm = mask[:, k:]
    lp = np.asarray(fam.log_prob(_expand(params, 1), jnp.asarray(held, float)), dtype=float)
    cnt = hm.sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        out = np.where(hm, lp, 0.0).sum(axis=1) / cnt
    return np.where(np.asarray(usable, bool) & (cnt > 0), out, np.nan)


def _bootstrap_mean(values: np.ndarray, n_boot: int, seed: int) -> tuple[float, float]:
    v = values[np.isfinite(values)]
    if n_boot <= 0 or v.size == 0:
        return float("nan"), float("nan")
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, v.size, size=(n_boot, v.size))
    lo, hi = np.quantile(v[idx].mean(axis=1), [0.025, 0.975])
    return float(lo), float(hi)


# ----------------------------------------------------------------------------- the report


def calibration_checkpoints(width: int, *, n_max: Sequence[int] | None = None, step: int = 1) -> dict[str, list[int]]:
    """Checkpoints per mode for a pool of ``width`` samples per question.

    One-shot: the peek of each budget ``n_max`` (default the official grid's budgets that
    fit the pool, else the pool width). Sequential: ``checkpoints(width, mode="sequential",
    step=step)`` with the MLE ``n_init``. Only ``k < width`` (something is held out).
    """
    width = int(width)
    if width < 2:
        raise ValueError(f"a pool needs at least 2 samples per question to calibrate, got {width}")
    budgets = [int(b) for b in (n_max if n_max is not None else OFFICIAL_GRID.n_max) if b <= width]
    if not budgets:
        budgets = [width]
    oneshot = sorted({official_peek(b) for b in budgets} - {0})
    seq = checkpoints(width, mode="sequential", n_init=default_n_init("MLE"), step=int(step)).tolist()
    return {"oneshot": [k for k in oneshot if k < width], "sequential": [k for k in seq if k < width]}


@dataclass
class CalibrationResult:
    """Everything :func:`calibrate` measured (JSON-serialisable through :meth:`to_dict`)."""

    label: str
    synthetic: bool
    families: list[str]
    checkpoints: dict[str, list[int]]
    settings: dict[str, Any]
    per_family: dict[str, dict[str, Any]] = field(default_factory=dict)
    ranking: list[dict[str, Any]] = field(default_factory=list)
    events: dict[str, Events] = field(default_factory=dict, repr=False)
    pit: dict[str, dict[int, np.ndarray]] = field(default_factory=dict, repr=False)
    ppc: dict[str, dict[int, dict[str, np.ndarray]]] = field(default_factory=dict, repr=False)

    def to_dict(self) -> dict[str, Any]:
        return {"label": self.label, "synthetic": self.synthetic, "families": self.families,
                "checkpoints": self.checkpoints, "settings": self.settings,
                "per_family": self.per_family, "ranking": self.ranking}


def calibrate(
    pool: Pool,
    *,
    families: Sequence[Any] = ("truncnorm",),
    s_min: Sequence[float] = OFFICIAL_GRID.s_min,
    alphas: Sequence[float] = OFFICIAL_GRID.alpha,
    n_grid: Sequence[int] = DEFAULT_N_GRID,
    n_max: Sequence[int] | None = None,
    step: int = 1,
    n_bins: int = 10,
    n_boot: int = 1000,
    ppc_draws: int = 200,
    seed: int = 0,
) -> CalibrationResult:
    """Calibration of one-shot and sequential OptScale under each score family on a pool.

    Args:
        pool: any pool (at least 2 samples per question somewhere).
        families: family names or objects (:mod:`optscale_jax.families`).
        s_min: target scores (default the official grid's).
        alphas: α values of the promise (default the official grid's, 1 - quantile).
        n_grid: look-ahead counts of the reliability diagram (N* is added).
        n_max: budgets whose one-shot peeks are checkpoints (default the official grid's).
        step: samples between sequential checkpoints.
        n_bins: bins of the reliability diagram and ECE.
        n_boot: bootstrap replicates (over questions) for the CIs; 0 for none.
        ppc_draws: simulated held-out sets per question in the predictive checks.
        seed: seed of the bootstraps and simulations.

    Returns:
        A :class:`CalibrationResult`.

    Raises:
        ValueError: an empty family list, unknown family, bad grids, or a pool with
            fewer than 2 samples per question.
    """
    if not isinstance(pool, Pool):
        raise ValueError(f"pool must be an optscale_jax.pool.Pool, got {type(pool).__name__}")
    if isinstance(families, str):  # one name, not its letters
        families = [families]
    fams = [resolve_family(f) for f in families]
    if not fams:
        raise ValueError("families is empty; give at least one score family")
    names = [f.name for f in fams]
    if len(set(names)) != len(names):
        raise ValueError(f"families has duplicates: {names}")
    s_grid = _check_grid("s_min", s_min, 0.0, 1.0)
    a_grid = _check_grid("alphas", alphas, 0.0, 1.0)
    raw = np.asarray(list(n_grid), dtype=float).reshape(-1)
    if not (np.isfinite(raw) & (raw == np.round(raw))).all():
        raise ValueError(f"n_grid values must be integers >= 1, got {[float(x) for x in raw]}")
    for name, value, low in (("n_boot", n_boot, 0), ("n_bins", n_bins, 1), ("ppc_draws", ppc_draws, 1),
                             ("seed", seed, 0)):
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < low:
            raise ValueError(f"{name} must be a whole number >= {low}, got {value!r}")
    n_grid = [int(n) for n in raw]
    if any(n < 1 for n in n_grid):
        raise ValueError(f"n_grid values must be integers >= 1, got {n_grid}")
    if int(step) < 1:
        raise ValueError(f"step must be >= 1, got {step}")
    s, m = np.asarray(pool.scores, float), np.asarray(pool.mask, bool)
    width = int(m.sum(axis=1).max(initial=0))
    cps = calibration_checkpoints(width, n_max=n_max, step=step)
    all_k = sorted(set(cps["oneshot"]) | set(cps["sequential"]))
    pit_k = sorted(set(cps["oneshot"]) | set(cps["sequential"][:1]))
    result = CalibrationResult(
        label=pool.label, synthetic=bool(pool.synthetic), families=names, checkpoints=cps,
        settings={"s_min": s_grid.tolist(), "alphas": a_grid.tolist(), "n_grid": n_grid,
                  "step": int(step), "n_bins": int(n_bins), "n_boot": int(n_boot),
                  "ppc_draws": int(ppc_draws), "seed": int(seed), "fit": "MLE (plug-in)",
                  "n_questions": int(s.shape[0]), "width": width, "pit_checkpoints": pit_k},
    )
    heldout: dict[str, dict[int, np.ndarray]] = {}
    for fam in fams:
        parts: list[Events] = []
        result.pit[fam.name], result.ppc[fam.name], heldout[fam.name] = {}, {}, {}
        unusable = {}
        for k in all_k:
            cut = m & (np.arange(s.shape[1])[None, :] < k)
            fit = fam.fit(s, cut)
            params = {p: np.asarray(v, float) for p, v in fit.params.items()}
            usable = fit_status_usable(np.asarray(fit.status)) & (m.sum(axis=1) > k)
            unusable[k] = int(((m.sum(axis=1) > k) & ~usable).sum())
            jp = {p: jnp.asarray(v)[None, :] for p, v in params.items()}
            log_f = np.asarray(fam.log_cdf(jp, jnp.asarray(s_grid)[:, None]), float)
            parts.append(calibration_events(s, m, k, log_f, s_grid, usable=usable, n_grid=n_grid,
                                            alphas=a_grid))
            if k in pit_k:
                result.pit[fam.name][k] = pit_values(fam, params, s, m, k, usable)
                result.ppc[fam.name][k] = predictive_checks(fam, params, s, m, k, usable,
                                                            draws=ppc_draws, seed=seed + k)
                heldout[fam.name][k] = heldout_log_density(fam, params, s, m, k, usable)
        ev = Events.concat(parts)
        result.events[fam.name] = ev
        result.per_family[fam.name] = _summarise(ev, result, fam.name, cps, n_bins, n_boot, seed, unusable)
    _rank(result, heldout, n_boot, seed)
    return result


def _summarise(ev: Events, result: CalibrationResult, name: str, cps: dict[str, list[int]],
               n_bins: int, n_boot: int, seed: int, unusable: dict[int, int]) -> dict[str, Any]:
    out: dict[str, Any] = {"unusable_fits": {str(k): v for k, v in unusable.items()}, "modes": {}}
    for mode, ks in cps.items():
        e = ev.select(np.isin(ev.k, ks))
        rel = e.select(e.observed)  # grid events and fully observed N* events
        ece, ci = ece_bootstrap(rel.question, rel.p, rel.y, n_bins=n_bins, n_boot=n_boot, seed=seed)
        bins = reliability_bins(rel.p, rel.y, n_bins)
        out["modes"][mode] = {
            "checkpoints": list(ks), "events": len(rel), "ece": ece, "ece_ci": ci,
            "mean_p": float(np.mean(rel.p)) if len(rel) else float("nan"),
            "mean_y": float(np.mean(rel.y)) if len(rel) else float("nan"),
            "reliability": {kk: v.tolist() for kk, v in bins.items()},
            "coverage": alpha_coverage(e, n_boot=n_boot, seed=seed),
        }
    pits = result.pit[name]
    out["pit"] = {}
    for k, u in pits.items():
        hist = np.histogram(u, bins=10, range=(0.0, 1.0))[0] if u.size else np.zeros(10, int)
        out["pit"][str(k)] = {"n": int(u.size), "ks": _ks_uniform(u), "hist": hist.tolist(),
                              "below_0.05": float(np.mean(u < 0.05)) if u.size else float("nan"),
                              "above_0.95": float(np.mean(u > 0.95)) if u.size else float("nan")}
    out["ppc"] = {}
    for k, d in result.ppc[name].items():
        row = {"questions": int(d["question"].size)}
        for stat in ("max", "spread"):
            v = d[stat]
            row[stat] = {"mean_p": float(np.mean(v)) if v.size else float("nan"),
                         "below_0.05": float(np.mean(v < 0.05)) if v.size else float("nan"),
                         "above_0.95": float(np.mean(v > 0.95)) if v.size else float("nan")}
        out["ppc"][str(k)] = row
    return out


def _rank(result: CalibrationResult, heldout: dict[str, dict[int, np.ndarray]], n_boot: int, seed: int) -> None:
    """Held-out log density per score on the questions every family fits; ranked, best first.

    The rank uses the mean at the largest PIT checkpoint (the most data per fit: a fit
    on 2 or 3 scores can be so narrow that one held-out score dominates any mean); every
    checkpoint's mean and median are kept in ``heldout_by_checkpoint``.
    """
    names = result.families
    ks = sorted(set.intersection(*(set(h) for h in heldout.values()))) if heldout else []
    rank_k = ks[-1] if ks else None
    rows = []
    for name in names:
        per_k = {}
        for k in ks:
            common = np.all([np.isfinite(heldout[n][k]) for n in names], axis=0)
            v = heldout[name][k][common]
            per_k[str(k)] = {"questions": int(common.sum()),
                             "lpd": float(np.mean(v)) if v.size else float("nan"),
                             "lpd_median": float(np.median(v)) if v.size else float("nan"),
                             "lpd_ci": _bootstrap_mean(v, n_boot, seed)}
        at = per_k.get(str(rank_k), {})
        fam = result.per_family[name]
        one = fam["modes"].get("oneshot", {})
        cov = {r["alpha"]: r for r in one.get("coverage", [])}
        c95 = cov.get(0.95, {})
        rows.append({
            "family": name, "checkpoint": rank_k, "questions": at.get("questions", 0),
            "heldout_lpd": at.get("lpd", float("nan")),
            "heldout_lpd_ci": at.get("lpd_ci", (float("nan"), float("nan"))),
            "heldout_lpd_median": at.get("lpd_median", float("nan")),
            "heldout_by_checkpoint": per_k,
            "ece_oneshot": one.get("ece", float("nan")),
            "ece_sequential": fam["modes"].get("sequential", {}).get("ece", float("nan")),
            "pit_ks": float(np.nanmean([d["ks"] for d in fam["pit"].values()])) if fam["pit"] else float("nan"),
            "coverage_0.95_lower": c95.get("coverage_lower", float("nan")),
            "coverage_0.95_upper": c95.get("coverage_upper", float("nan")),
        })
    rows.sort(key=lambda r: -r["heldout_lpd"] if np.isfinite(r["heldout_lpd"]) else math.inf)
    for i, r in enumerate(rows, 1):
        r["rank"] = i
    result.ranking = rows


# ----------------------------------------------------------------------------- outputs


def _fmt(x: Any, nd: int = 3) -> str:
    if x is None or (isinstance(x, float) and not np.isfinite(x)):
        return "–"
    return f"{float(x):.{nd}f}"


def _ci(ci: Sequence[float], nd: int = 3) -> str:
    lo, hi = ci
    return "–" if not (np.isfinite(lo) and np.isfinite(hi)) else f"{lo:.{nd}f}–{hi:.{nd}f}"


def calibration_markdown(result: CalibrationResult) -> str:
    """The report as markdown."""
    st = result.settings
    tag = " (SYNTHETIC pool: not real model outputs)" if result.synthetic else ""
    lines = [f"# Calibration of OptScale's score model — {result.label}{tag}", "",
             f"{st['n_questions']} questions, up to {st['width']} samples each; fits: {st['fit']}; "
             f"checkpoints one-shot {result.checkpoints['oneshot']}, sequential "
             f"{_short(result.checkpoints['sequential'])}; s_min {st['s_min']}; look-ahead n "
             f"{st['n_grid']} and N*; CIs: {st['n_boot']} bootstrap replicates over questions.", ""]
    rk = result.ranking[0]["checkpoint"] if result.ranking else None
    lines += ["## Family ranking (held-out log density per score; higher is better)", "",
              f"Held-out: the scores after checkpoint k = {rk} (the largest PIT checkpoint), fitted on the "
              f"first {rk}, on the {result.ranking[0]['questions'] if result.ranking else 0} questions every "
              "family fits usably; mean over questions of the mean log density per score (95% CI over "
              "questions), median beside it. Other checkpoints: calibration.json.", "",
              "| rank | family | held-out lpd | 95% CI | median | ECE one-shot | ECE sequential | PIT KS | "
              "coverage α=0.95 one-shot (lower–upper) |",
              "|---:|---|---:|---|---:|---:|---:|---:|---|"]
    for r in result.ranking:
        lines.append(f"| {r['rank']} | {r['family']} | {_fmt(r['heldout_lpd'])} | {_ci(r['heldout_lpd_ci'])} | "
                     f"{_fmt(r['heldout_lpd_median'])} | {_fmt(r['ece_oneshot'])} | "
                     f"{_fmt(r['ece_sequential'])} | {_fmt(r['pit_ks'])} | "
                     f"{_fmt(r['coverage_0.95_lower'])}–{_fmt(r['coverage_0.95_upper'])} |")
    lines += ["", "## Reliability (predicted P(best of next n >= s_min) vs realised)", "",
              "| family | mode | events | mean predicted | mean realised | ECE | 95% CI |",
              "|---|---|---:|---:|---:|---:|---|"]
    for name in result.families:
        for mode, d in result.per_family[name]["modes"].items():
            lines.append(f"| {name} | {mode} | {d['events']} | {_fmt(d['mean_p'])} | {_fmt(d['mean_y'])} | "
                         f"{_fmt(d['ece'])} | {_ci(d['ece_ci'])} |")
    lines += ["", "## Coverage of the α promise P(best of N* >= s_min) >= α", "",
              "Pooled over s_min and the mode's checkpoints. *observed*: rows holding N* samples after "
              "the checkpoint (biased towards easy questions); *lower*/*upper*: censored rows counted "
              "as misses/hits. *holds*: yes if lower >= α, no if upper < α.", "",
              "| family | mode | α | events | censored | median N* | observed | 95% CI | lower | upper | holds |",
              "|---|---|---:|---:|---:|---:|---:|---|---:|---:|---|"]
    for name in result.families:
        for mode, d in result.per_family[name]["modes"].items():
            for r in d["coverage"]:
                lines.append(f"| {name} | {mode} | {r['alpha']:.3f} | {r['events']} | {r['censored']} | "
                             f"{_fmt(r['median_n_star'], 0)} | {_fmt(r['coverage_observed'])} | "
                             f"{_ci(r['coverage_observed_ci'])} | {_fmt(r['coverage_lower'])} | "
                             f"{_fmt(r['coverage_upper'])} | {r['holds']} |")
    lines += ["", "## PIT of held-out scores under each question's fitted law", "",
              "Uniform when the law is right: KS distance near 0, about 5% in each 5% tail.", "",
              "| family | checkpoint | held-out scores | KS | below 0.05 | above 0.95 |",
              "|---|---:|---:|---:|---:|---:|"]
    for name in result.families:
        for k, d in result.per_family[name]["pit"].items():
            lines.append(f"| {name} | {k} | {d['n']} | {_fmt(d['ks'])} | {_fmt(d['below_0.05'])} | "
                         f"{_fmt(d['above_0.95'])} |")
    lines += ["", "## Predictive checks of the held-out max and spread (plug-in)", "",
              "Per question, the share of simulated held-out sets whose statistic exceeds the observed "
              "one; about 0.05 of questions in each 5% tail when the law is right.", "",
              "| family | checkpoint | questions | max: mean p | max: <0.05 | max: >0.95 | "
              "spread: mean p | spread: <0.05 | spread: >0.95 |",
              "|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for name in result.families:
        for k, d in result.per_family[name]["ppc"].items():
            mx, sp = d["max"], d["spread"]
            lines.append(f"| {name} | {k} | {d['questions']} | {_fmt(mx['mean_p'])} | {_fmt(mx['below_0.05'])} | "
                         f"{_fmt(mx['above_0.95'])} | {_fmt(sp['mean_p'])} | {_fmt(sp['below_0.05'])} | "
                         f"{_fmt(sp['above_0.95'])} |")
    lines += ["", "Unusable fits (no data, one sample or all scores equal) are left out: "
              + "; ".join(f"{n}: {sum(result.per_family[n]['unusable_fits'].values())} (question, checkpoint) pairs"
                          for n in result.families), ""]
    return "\n".join(lines)


def _short(ks: list[int]) -> str:
    return str(ks) if len(ks) <= 6 else f"[{ks[0]}, {ks[1]}, …, {ks[-1]}] ({len(ks)})"


def _figure(nrows: int, ncols: int, size: tuple[float, float]):
    from matplotlib.figure import Figure

    fig = Figure(figsize=size)
    axes = np.atleast_2d(fig.subplots(nrows, ncols, squeeze=False))
    return fig, axes


def plot_reliability(result: CalibrationResult, path: str | Path | None = None) -> Any:
    """Reliability diagram: one panel per mode, one line per family (a pyplot-free figure)."""
    modes = list(result.checkpoints)
    fig, axes = _figure(1, len(modes), (5.0 * len(modes), 4.6))
    for ax, mode in zip(axes[0], modes, strict=True):
        ax.plot([0, 1], [0, 1], color="grey", lw=1, ls="--", label="perfect")
        for name in result.families:
            d = result.per_family[name]["modes"][mode]
            r = d["reliability"]
            pm, ym, cnt = (np.asarray(r[x], float) for x in ("p_mean", "y_mean", "count"))
            keep = cnt > 0
            ax.plot(pm[keep], ym[keep], marker="o", ms=4, label=f"{name} (ECE {_fmt(d['ece'])})")
        ax.set_xlim(0, 1)
        ax.set_ylim(0, 1)
        ax.set_xlabel("predicted P(best of next n ≥ s_min)")
        ax.set_ylabel("realised frequency")
        ax.set_title(f"{mode}")
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=7, loc="upper left")
    fig.suptitle(_title(result, "reliability"), fontsize=10)
    fig.tight_layout()
    if path is not None:
        fig.savefig(path, dpi=110)
    return fig


def _title(result: CalibrationResult, what: str) -> str:
    return f"{result.label}: {what}" + (" [synthetic]" if result.synthetic and "synthetic" not in result.label else "")


def _plot_pit(result: CalibrationResult, path: Path) -> None:
    fams = result.families
    fig, axes = _figure(1, len(fams), (4.2 * len(fams), 3.6))
    for ax, name in zip(axes[0], fams, strict=True):
        for k, u in result.pit[name].items():
            if u.size:
                ax.hist(u, bins=10, range=(0, 1), density=True, histtype="step", label=f"k={k}")
        ax.axhline(1.0, color="grey", ls="--", lw=1)
        ax.set_title(f"PIT — {name}")
        ax.set_xlabel("F(held-out score)")
        ax.legend(fontsize=7)
    fig.suptitle(_title(result, "PIT histograms"), fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def _plot_ppc(result: CalibrationResult, path: Path) -> None:
    fams = result.families
    fig, axes = _figure(2, len(fams), (4.2 * len(fams), 6.4))
    for j, name in enumerate(fams):
        for i, stat in enumerate(("max", "spread")):
            ax = axes[i, j]
            for k, d in result.ppc[name].items():
                if d[stat].size:
                    ax.hist(d[stat], bins=10, range=(0, 1), density=True, histtype="step", label=f"k={k}")
            ax.axhline(1.0, color="grey", ls="--", lw=1)
            ax.set_title(f"{name}: held-out {stat}")
            ax.set_xlabel("predictive p-value")
            ax.legend(fontsize=7)
    fig.suptitle(_title(result, "predictive checks"), fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def _json_default(o: Any) -> Any:
    if isinstance(o, np.integer):
        return int(o)
    if isinstance(o, np.floating):
        return float(o)
    if isinstance(o, np.ndarray):
        return o.tolist()
    raise TypeError(f"not JSON serialisable: {type(o)}")


def write_calibration_report(result: CalibrationResult, out_dir: str | Path, *,
                             extra: dict[str, Any] | None = None) -> dict[str, Path]:
    """Write ``calibration.md``, ``calibration.json``, ``reliability.png``, ``pit.png``, ``ppc.png``.

    Returns:
        Mapping of report kind to path.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = {"markdown": out / "calibration.md", "json": out / "calibration.json",
             "reliability": out / "reliability.png", "pit": out / "pit.png", "ppc": out / "ppc.png"}
    paths["markdown"].write_text(calibration_markdown(result), encoding="utf-8")
    payload = result.to_dict()
    if extra:
        payload["extra"] = extra
    paths["json"].write_text(json.dumps(payload, indent=1, default=_json_default, allow_nan=True),
                             encoding="utf-8")
    plot_reliability(result, paths["reliability"])
    _plot_pit(result, paths["pit"])
    _plot_ppc(result, paths["ppc"])
    return paths
