r"""One token budget across all questions: how many samples each question gets next.

OptScale stops every question on its own. :func:`allocate` answers the question of a
user with a fixed budget: "I can afford ``B`` tokens for these ``Q`` questions; where
should the next samples go?" It is pure, jitted and batched over questions.

The model
---------
Question ``i`` has drawn ``n_i`` samples, the best of which scored ``b_i``; its future
scores are i.i.d. with CDF ``F_i`` (a fitted truncated normal, any score family through
its ``log F``, or a posterior sample set: a mixture over ``S`` parameter draws); a
sample of question ``i`` costs ``c_i`` tokens in expectation.

**Objective ("reach").** Maximise the expected number of questions whose best sample
reaches ``s_min``. A question with ``b_i >= s_min`` is solved (it stops: nothing to
gain). For an unsolved one, ``k`` more samples reach ``s_min`` with posterior-predictive
probability ``V_i(k) = 1 - E_θ[F_θ(s_min)^k]`` (``E_θ`` the mean over the ``S`` draws;
one draw for an MLE/MAP fit), so the **marginal gain of its k-th extra sample** is

.. math::  g_{ik} = V_i(k) - V_i(k-1) = E_θ\big[F_θ^{\,k-1}\,(1 - F_θ)\big],

the probability that the first ``k-1`` extra samples all miss and the ``k``-th hits.

**Variant ("expected accuracy").** With a score-to-correctness calibration ``c(s)``
(non-decreasing step function: value ``v_0`` below ``t_1``, jumps ``Δ_j >= 0`` at
thresholds ``t_1 < ... < t_G``; :func:`fit_calibration`, isotonic on a held-out part of
a pool), the expected accuracy of Best-of-N after ``k`` more samples is
``E[c(M_k)] = c(b_i) + Σ_{j: t_j > b_i} Δ_j (1 - E_θ[F_θ(t_j)^k])`` with
``M_k = max(b_i, X_1..X_k)``, hence

.. math::  g_{ik} = Σ_{j: t_j > b_i} Δ_j\, E_θ\big[F_θ(t_j)^{k-1}(1 - F_θ(t_j))\big].

The reach objective is the special case of one jump of height 1 at ``s_min``. Both are
``g_{ik} = Σ_j w_{ij} F_{ij}^{k-1}(1-F_{ij})`` with weights ``w_{ij} >= 0``
(:func:`marginal_gains`).

The rule and when it is optimal
-------------------------------
**Diminishing returns.** ``F^{k-1}(1-F)`` is non-increasing in ``k`` for ``0 <= F <= 1``
(``F^k`` is convex and decreasing in ``k``), and a non-negative combination of
non-increasing sequences is non-increasing: every ``V_i`` is concave in ``k``.

**Greedy.** Rank every (question, extra sample) item by gain per token
``g_{ik} / c_i`` and take items in that order while their cumulative cost fits the
budget (and at most ``max_samples`` items, one wave). Because the ratios are
non-increasing in ``k`` within a row, the items taken form a prefix ``1..x_i`` of every
row, so the result is an allocation ``x_i``; ties go to the lower question index, then
the lower ``k``.

* **Equal costs** (``c_i = c``): maximising a sum of concave functions of integers under
  ``Σ x_i <= B/c`` is solved exactly by taking the largest marginal gains
  (Gross 1956; any allocation can be improved by exchanging a taken item for a larger
  untaken one until it is the greedy's). *Optimal.*
* **Unequal costs**: the greedy prefix is an optimal solution of the fractional (LP)
  relaxation up to the first item that does not fit; hence
  ``greedy >= OPT - max_{i} g_{i1}`` (the gain of that item, at most the largest single
  gain). For exact answers on small integer instances use :func:`allocate_exact`
  (dynamic programme over the budget).

Both statements assume the model's law is the true one (a plug-in fit) and the
allocation is made once; refitting after each wave (the policy) is the usual
certainty-equivalent heuristic. A Weitzman (Pandora's box) index would be the exact
answer for *sequential* inspection of one box per step with a fixed known law; with
waves of many samples and a budget shared across questions, the wave-wise greedy is the
simpler rule with a guarantee, so we use it.

**Stopping.** Solved questions (``b_i >= s_min``; for the accuracy objective, no jump
above ``b_i``) gain nothing and get nothing; so does every item whose gain per token is
below ``min_gain_per_token`` (a hopeless question stops). ``n_max`` caps each row.

Implementation: the ``(Q, K)`` gains, then a bisection on the gain-per-token threshold
``λ`` (``K`` compares per question and iteration; no sort of the ``Q·K`` items), then the
items exactly at the threshold (ties within float resolution) in index order.
"""

from __future__ import annotations

from functools import partial
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

__all__ = [
    "Allocation",
    "Calibration",
    "allocate",
    "allocate_exact",
    "allocate_expected_accuracy",
    "fit_calibration",
    "greedy_allocate",
    "marginal_gains",
    "reach_value",
]


class Allocation(NamedTuple):
    """One wave's allocation.

    Attributes:
        extra: ``(Q,)`` int32 new samples each question gets.
        gain: ``(Q,)`` expected gain of those samples (sum of their marginal gains).
        cost: ``(Q,)`` expected tokens of those samples (``extra * c``).
        threshold: ``()`` gain per token of the last item taken (0 when none).
    """

    extra: jax.Array
    gain: jax.Array
    cost: jax.Array
    threshold: jax.Array


class Calibration(NamedTuple):
    """A non-decreasing step function from best score to P(correct).

    ``c(s) = values[j]`` where ``j`` is the number of ``thresholds <= s``.

    Attributes:
        thresholds: ``(G,)`` increasing scores where ``c`` jumps.
        values: ``(G + 1,)`` non-decreasing probabilities.
    """

    thresholds: np.ndarray
    values: np.ndarray

    def __call__(self, s: Any) -> np.ndarray:
        """P(correct) at best score(s) ``s``."""
        j = np.searchsorted(np.asarray(self.thresholds), np.asarray(s, dtype=np.float64),
                            side="right")
        return np.asarray(self.values)[j]


# ------------------------------------------------------------------------------- gains
@partial(jax.jit, static_argnames=("k_max",))
def marginal_gains(log_f: jax.Array, weights: jax.Array, k_max: int) -> jax.Array:
    """Marginal gains ``g[i, k-1] = Σ_j w_ij F_ij^(k-1) (1 - F_ij)`` for ``k = 1..k_max``.

    Args:
        log_f: ``(Q, J)`` log CDF values (``J``: posterior draws x thresholds).
        weights: ``(Q, J)`` non-negative weights (0 for a solved question or threshold).
        k_max: the most extra samples considered per question.

    Returns:
        ``(Q, k_max)`` gains, non-increasing along the last axis.
    """
    lf = jnp.minimum(jnp.asarray(log_f), 0.0)
    w = jnp.asarray(weights)
    k = jnp.arange(k_max, dtype=lf.dtype)[None, :, None]
    # k * log F with 0 * (-inf) = 0 (a sure hit on the first sample)
    pw = jnp.exp(jnp.where(k == 0, 0.0, k * lf[:, None, :]))
    hit = -jnp.expm1(lf)[:, None, :]
    return jnp.sum(w[:, None, :] * pw * hit, axis=-1)


def reach_value(log_cdf: Any, best: Any, s_min: float, extra: Any) -> np.ndarray:
    """Expected number of questions reaching ``s_min`` after ``extra`` more samples each.

    ``Σ_i [b_i >= s_min] + [b_i < s_min] (1 - E_θ F_θ^{x_i})`` (the reach objective).

    Args:
        log_cdf: ``(Q,)`` or ``(S, Q)`` log F(s_min).
        best: ``(Q,)`` best score so far (``-inf`` or 0 when none drawn).
        s_min: target score.
        extra: ``(Q,)`` extra samples.

    Returns:
        The objective (a float64 scalar array).
    """
    lf = np.atleast_2d(np.asarray(log_cdf, dtype=np.float64))
    x = np.asarray(extra, dtype=np.float64)
    solved = np.asarray(best) >= s_min
    p = 1.0 - np.mean(np.exp(x[None, :] * np.minimum(lf, 0.0)), axis=0)
    p = np.where(x > 0, p, 0.0)
    return np.asarray(np.sum(np.where(solved, 1.0, p)))


# ------------------------------------------------------------------------------ greedy
@partial(jax.jit, static_argnames=("iterations",))
def _greedy(gains: jax.Array, cost: jax.Array, budget: jax.Array, cap: jax.Array,
            min_ratio: jax.Array, max_items: jax.Array, iterations: int) -> Allocation:
    q, k_max = gains.shape
    k = jnp.arange(k_max)[None, :]
    c = cost[:, None]
    valid = (k < cap[:, None]) & (gains > 0) & (c > 0) & jnp.isfinite(gains)
    ratio = jnp.where(valid, gains / jnp.where(c > 0, c, 1.0), 0.0)
    valid = valid & (ratio >= min_ratio) & (ratio > 0)
    log_r = jnp.where(valid, jnp.log(jnp.where(valid, ratio, 1.0)), -jnp.inf)
    cmat = jnp.broadcast_to(c, gains.shape)

    def load(lam: jax.Array) -> tuple[jax.Array, jax.Array]:
        take = valid & (log_r >= lam)
        return jnp.sum(jnp.where(take, cmat, 0.0)), jnp.sum(take)

    def fits(lam: jax.Array) -> jax.Array:
        tot, n = load(lam)
        return (tot <= budget) & (n <= max_items)

    finite = jnp.where(valid, log_r, jnp.nan)
    top = jnp.nanmax(jnp.where(valid.any(), finite, 0.0))
    bottom = jnp.nanmin(jnp.where(valid.any(), finite, 0.0))
    all_fit = fits(jnp.asarray(-jnp.inf, log_r.dtype))

    def step(_: int, bounds: tuple[jax.Array, jax.Array]) -> tuple[jax.Array, jax.Array]:
        lo, hi = bounds  # hi: its set fits; lo: its set does not
        mid = 0.5 * (lo + hi)
        ok = fits(mid)
        return jnp.where(ok, lo, mid), jnp.where(ok, mid, hi)

    span = jnp.maximum(top - bottom, 1.0)
    lo, hi = jax.lax.fori_loop(0, iterations, step, (bottom - span, top + span))
    # Items strictly above the threshold interval are taken; those inside it (ties up to
    # float resolution) are taken in index order (question, then k) while they fit.
    sure = valid & (log_r >= hi)
    edge = valid & ~sure & (log_r >= lo)
    sure_cost, sure_n = load(hi)
    e_cost = jnp.cumsum(jnp.where(edge, cmat, 0.0).ravel()).reshape(gains.shape)
    e_n = jnp.cumsum(edge.ravel()).reshape(gains.shape)
    edge_take = edge & (sure_cost + e_cost <= budget) & (sure_n + e_n <= max_items)
    take = jnp.where(all_fit, valid, sure | edge_take)
    extra = jnp.sum(take, axis=1).astype(jnp.int32)
    gain = jnp.sum(jnp.where(take, gains, 0.0), axis=1)
    last = jnp.where(take.any(), jnp.min(jnp.where(take, ratio, jnp.inf)), 0.0)
    return Allocation(extra=extra, gain=gain, cost=extra * cost, threshold=last)


def _concrete(x: Any) -> bool:
    return not isinstance(x, jax.core.Tracer)


def greedy_allocate(
    gains: Any,
    cost: Any,
    budget: Any,
    *,
    cap: Any = None,
    min_gain_per_token: float = 0.0,
    max_samples: Any = None,
    iterations: int = 48,
) -> Allocation:
    """The greedy gain-per-token allocation of a ``(Q, K)`` table of marginal gains.

    Takes items (question ``i``, its ``k``-th extra sample) by decreasing
    ``gains[i, k-1] / cost[i]`` while their total cost fits ``budget`` and their number
    ``max_samples``; see the module docstring for when this is optimal. Rows must be
    non-increasing in ``k`` (:func:`marginal_gains` is).

    Args:
        gains: ``(Q, K)`` marginal gains.
        cost: ``(Q,)`` expected tokens per sample (> 0; a row with cost <= 0 gets nothing).
        budget: tokens available (``inf``: no budget).
        cap: ``(Q,)`` most extra samples per row (default ``K``).
        min_gain_per_token: items below this gain per token are never taken.
        max_samples: most items in all (one wave); None: no limit.
        iterations: bisection steps on the log threshold (48 resolves float32 ties).

    Returns:
        An :class:`Allocation`.

    Raises:
        ValueError: a shape mismatch, or (for concrete inputs) a negative budget.
    """
    g = jnp.asarray(gains)
    if g.ndim != 2:
        raise ValueError(f"greedy_allocate: gains must be (Q, K), got shape {g.shape}")
    q, k_max = g.shape
    c = jnp.broadcast_to(jnp.asarray(cost, dtype=g.dtype), (q,))
    cap_a = jnp.full((q,), k_max) if cap is None else jnp.broadcast_to(jnp.asarray(cap), (q,))
    if _concrete(budget) and not float(budget) >= 0.0:
        raise ValueError(f"greedy_allocate: budget must be >= 0, got {float(budget)}")
    if _concrete(min_gain_per_token) and not float(min_gain_per_token) >= 0.0:
        raise ValueError("greedy_allocate: min_gain_per_token must be >= 0, got "
                         f"{float(min_gain_per_token)}")
    items = jnp.iinfo(jnp.int32).max if max_samples is None else max_samples
    return _greedy(g, c, jnp.asarray(budget, g.dtype), cap_a.astype(jnp.int32),
                   jnp.asarray(min_gain_per_token, g.dtype), jnp.asarray(items, jnp.int32),
                   iterations)


#: Most entries of the ``(Q·S, k_max)`` gain table one call may build (about 4 GiB in float64).
MAX_GAIN_ENTRIES = 2**29


def _check_size(name: str, rows: int, k_max: int) -> None:
    """Refuse a gain table too large to build, naming ``k_max`` (it bounds one wave per question)."""
    if rows * k_max > MAX_GAIN_ENTRIES:
        raise ValueError(f"{name}: k_max={k_max} with {rows} question x draw rows needs a gain table "
                         f"of {rows * k_max} entries (at most {MAX_GAIN_ENTRIES}); lower k_max, the "
                         "most new samples one question can get in one wave")


def _cap(drawn: Any, n_max: Any, k_max: int, q: int) -> jax.Array:
    d = jnp.broadcast_to(jnp.asarray(drawn, dtype=jnp.int32), (q,))
    if n_max is None:
        return jnp.full((q,), k_max, dtype=jnp.int32)
    return jnp.clip(jnp.asarray(n_max, dtype=jnp.int32) - d, 0, k_max)


def _check_log_cdf(name: str, lf: jax.Array) -> None:
    """Refuse NaN log F (a failed fit): its gains would be NaN and the question silently get 0."""
    if _concrete(lf) and bool(jnp.isnan(lf).any()):
        q = int(np.argwhere(np.isnan(np.asarray(lf)))[0][-2 if name == "log_cdf_at" else -1])
        raise ValueError(f"allocate: {name} is NaN for question {q} (a failed fit?); expected log "
                         "F values <= 0 (refit, or drop the question)")


def _check_allocate_args(q: int, **args: Any) -> None:
    """Shapes and ranges of :func:`allocate`'s per-question arguments (concrete values only)."""
    if q == 0:
        raise ValueError("allocate: log_cdf has no questions (shape (0,)); expected at least one")
    for name, value in args.items():
        if value is None or not _concrete(value):
            continue
        shape = np.shape(value)
        if shape not in ((), (q,)):
            raise ValueError(f"allocate: {name} has shape {shape}; expected a scalar or one value per "
                             f"question ({q},)")
        v = np.asarray(value, dtype=float)
        if name == "cost" and not (np.isfinite(v) & (v > 0)).all():
            raise ValueError(f"allocate: cost must be finite and > 0 (expected tokens per sample), got "
                             f"{float(v.reshape(-1)[~(np.isfinite(v) & (v > 0)).reshape(-1)][0])}")
        if name in ("drawn", "n_max", "max_samples") and not (v >= 0).all():
            raise ValueError(f"allocate: {name} must be >= 0 (a number of samples), got "
                             f"{float(v.reshape(-1)[~(v >= 0).reshape(-1)][0])}")


def allocate(
    log_cdf: Any,
    best: Any,
    drawn: Any,
    cost: Any,
    budget: Any,
    *,
    s_min: float,
    k_max: int,
    n_max: Any = None,
    min_gain_per_token: float = 0.0,
    max_samples: Any = None,
) -> Allocation:
    """Samples per question for the next wave, maximising the expected questions solved.

    The "reach" objective of the module docstring: a question is solved when its best
    sample reaches ``s_min``.

    Args:
        log_cdf: ``(Q,)`` log F(s_min) of each question's fit (MLE or MAP; e.g.
            :func:`optscale_jax.distributions.truncnorm01_log_cdf` of ``(mu, sigma)``, or
            any score family's ``log_cdf``), or ``(S, Q)`` for ``S`` posterior draws.
        best: ``(Q,)`` best score drawn so far (``-inf`` or 0 when none).
        drawn: ``(Q,)`` samples drawn so far (for ``n_max``).
        cost: ``(Q,)`` or scalar expected tokens per sample.
        budget: tokens this allocation may spend.
        s_min: target score.
        k_max: most new samples per question in this wave (static).
        n_max: most samples per question in all, scalar or ``(Q,)`` (None: no cap).
        min_gain_per_token: stop questions whose next sample gains less per token.
        max_samples: most new samples in all this wave (None: no limit).

    Returns:
        An :class:`Allocation`.

    Raises:
        ValueError: bad shapes, ``k_max < 1``, ``s_min`` outside (0, 1), negative budget,
            NaN ``log_cdf`` (a failed fit; it would silently get no sample).

    Examples:
        >>> import numpy as np
        >>> a = allocate(np.log([0.5, 0.8, 0.5]), [0.2, 0.3, 0.97], [1, 1, 1], 100.0, 300.0,
        ...              s_min=0.95, k_max=4)
        >>> a.extra.tolist()  # the solved third question gets nothing
        [2, 1, 0]
    """
    lf = jnp.asarray(log_cdf)
    if lf.ndim == 1:
        lf = lf[None, :]
    if lf.ndim != 2:
        raise ValueError(f"allocate: log_cdf must be (Q,) or (S, Q), got shape {lf.shape}")
    if int(k_max) < 1:
        raise ValueError(f"allocate: k_max must be >= 1, got {k_max}")
    if not 0.0 < float(s_min) < 1.0:
        raise ValueError(f"allocate: s_min must be in (0, 1), got {float(s_min)}")
    s, q = lf.shape
    _check_size("allocate", s * q, int(k_max))
    _check_log_cdf("log_cdf", lf)
    _check_allocate_args(q, best=best, drawn=drawn, cost=cost, n_max=n_max, max_samples=max_samples)
    b = jnp.broadcast_to(jnp.asarray(best, dtype=lf.dtype), (q,))
    w = jnp.broadcast_to(jnp.where(b >= s_min, 0.0, 1.0 / s)[:, None], (q, s))
    gains = marginal_gains(lf.T, w, int(k_max))
    return greedy_allocate(gains, cost, budget, cap=_cap(drawn, n_max, int(k_max), q),
                           min_gain_per_token=min_gain_per_token, max_samples=max_samples)


def allocate_expected_accuracy(
    log_cdf_at: Any,
    best: Any,
    drawn: Any,
    cost: Any,
    budget: Any,
    *,
    calibration: Calibration,
    k_max: int,
    n_max: Any = None,
    min_gain_per_token: float = 0.0,
    max_samples: Any = None,
) -> Allocation:
    """Like :func:`allocate`, maximising the expected accuracy of Best-of-N instead.

    Args:
        log_cdf_at: ``(Q, G)`` log F at ``calibration.thresholds`` (or ``(S, Q, G)``).
        best, drawn, cost, budget, k_max, n_max, min_gain_per_token, max_samples: as for
            :func:`allocate`.
        calibration: P(correct | best score), e.g. :func:`fit_calibration`.

    Returns:
        An :class:`Allocation` (gains in expected correct answers).
    """
    lf = jnp.asarray(log_cdf_at)
    if lf.ndim == 2:
        lf = lf[None]
    t = jnp.asarray(calibration.thresholds, dtype=lf.dtype)
    v = jnp.asarray(calibration.values, dtype=lf.dtype)
    if lf.ndim != 3 or lf.shape[-1] != t.shape[0]:
        raise ValueError(f"allocate_expected_accuracy: log_cdf_at must be (Q, {t.shape[0]}) or "
                         f"(S, Q, {t.shape[0]}) (one column per threshold), got {lf.shape}")
    if int(k_max) < 1:
        raise ValueError(f"allocate_expected_accuracy: k_max must be >= 1, got {k_max}")
    s, q, g = lf.shape
    _check_size("allocate_expected_accuracy", s * q * g, int(k_max))
    _check_log_cdf("log_cdf_at", lf)
    _check_allocate_args(q, best=best, drawn=drawn, cost=cost, n_max=n_max, max_samples=max_samples)
    b = jnp.broadcast_to(jnp.asarray(best, dtype=lf.dtype), (q,))
    jumps = jnp.clip(jnp.diff(v), 0.0, None)  # (G,)
    w = jnp.where(b[:, None] < t[None, :], jumps[None, :], 0.0) / s  # (Q, G)
    lf_flat = jnp.moveaxis(lf, 0, 1).reshape(q, s * g)
    w_flat = jnp.broadcast_to(w[:, None, :], (q, s, g)).reshape(q, s * g)
    gains = marginal_gains(lf_flat, w_flat, int(k_max))
    return greedy_allocate(gains, cost, budget, cap=_cap(drawn, n_max, int(k_max), q),
                           min_gain_per_token=min_gain_per_token, max_samples=max_samples)


# ------------------------------------------------------------------------------- exact
def allocate_exact(gains: Any, cost: Any, budget: int, *, cap: Any = None) -> tuple[np.ndarray,
                                                                                    float]:
    """The optimal allocation of a small instance with integer costs (dynamic programme).

    ``max Σ_i Σ_{k<=x_i} gains[i, k-1]`` subject to ``Σ_i cost_i x_i <= budget``,
    ``0 <= x_i <= cap_i``. ``O(Q · budget · K)``; for tests and small instances where
    the greedy's last-item gap matters (unequal costs).

    Args:
        gains: ``(Q, K)`` marginal gains.
        cost: ``(Q,)`` integer tokens per sample (>= 1).
        budget: integer budget.
        cap: ``(Q,)`` most extra samples per row (default ``K``).

    Returns:
        ``(x, value)``: the ``(Q,)`` int64 allocation and its objective.
    """
    g = np.asarray(gains, dtype=np.float64)
    q, k_max = g.shape
    c = np.broadcast_to(np.asarray(cost), (q,)).astype(np.int64)
    if (c < 1).any():
        raise ValueError("allocate_exact: cost must be integers >= 1")
    budget = int(budget)
    if budget < 0:
        raise ValueError(f"allocate_exact: budget must be >= 0, got {budget}")
    caps = np.full(q, k_max) if cap is None else np.minimum(np.asarray(cap), k_max)
    value = np.concatenate([np.zeros((q, 1)), np.cumsum(g, axis=1)], axis=1)  # (Q, K + 1)
    best = np.zeros(budget + 1)
    choice = np.zeros((q, budget + 1), dtype=np.int64)
    for i in range(q):
        new = best.copy()
        for x in range(1, int(caps[i]) + 1):
            spend = x * c[i]
            if spend > budget:
                break
            cand = np.full(budget + 1, -np.inf)
            cand[spend:] = best[: budget + 1 - spend] + value[i, x]
            better = cand > new + 1e-15
            new = np.where(better, cand, new)
            choice[i] = np.where(better, x, choice[i])
        best = new
    x = np.zeros(q, dtype=np.int64)
    left = budget
    for i in range(q - 1, -1, -1):
        x[i] = choice[i, left]
        left -= x[i] * c[i]
    return x, float(best[budget])


# -------------------------------------------------------------------------- calibration
def fit_calibration(best_scores: Any, correct: Any, *, bins: int = 20) -> Calibration:
    """P(correct | best score) as a non-decreasing step function (isotonic regression).

    Learn it on a held-out part of a pool (e.g. the Best-of-N picks of other questions):
    scores are grouped into at most ``bins`` quantile bins, then pool-adjacent-violators
    makes the bin means non-decreasing.

    Args:
        best_scores: ``(M,)`` scores of chosen samples.
        correct: ``(M,)`` bool, whether each was correct.
        bins: most steps.

    Returns:
        A :class:`Calibration`.

    Raises:
        ValueError: empty or mismatched inputs, scores not finite, ``bins < 1``.
    """
    s = np.asarray(best_scores, dtype=np.float64).ravel()
    y = np.asarray(correct, dtype=np.float64).ravel()
    if s.size == 0 or s.shape != y.shape:
        raise ValueError(f"fit_calibration: best_scores and correct must be non-empty and of "
                         f"one length, got {s.size} and {y.size}")
    if not np.isfinite(s).all():
        raise ValueError("fit_calibration: best_scores must be finite")
    if bins < 1:
        raise ValueError(f"fit_calibration: bins must be >= 1, got {bins}")
    order = np.argsort(s, kind="stable")
    s, y = s[order], y[order]
    edges = np.unique(np.quantile(s, np.linspace(0, 1, bins + 1)[1:-1]))
    group = np.searchsorted(edges, s, side="right")
    starts = np.array([s[group == g].min() for g in np.unique(group)])
    means = [float(y[group == g].mean()) for g in np.unique(group)]
    weights = [float((group == g).sum()) for g in np.unique(group)]
    # pool adjacent violators over the bins
    blocks: list[list[float]] = []  # [mean, weight, start]
    for m, w, st in zip(means, weights, starts, strict=True):
        blocks.append([m, w, st])
        while len(blocks) > 1 and blocks[-2][0] > blocks[-1][0]:
            m2, w2, _ = blocks.pop()
            m1, w1, st1 = blocks.pop()
            blocks.append([(m1 * w1 + m2 * w2) / (w1 + w2), w1 + w2, st1])
    values = np.array([b[0] for b in blocks])
    thresholds = np.array([b[2] for b in blocks[1:]])
    return Calibration(thresholds=thresholds, values=values)
