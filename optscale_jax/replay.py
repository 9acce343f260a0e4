"""Replay scaling policies over a pool of pre-generated, scored completions.

:func:`replay` runs one policy and reports, per question, how many samples it drew,
the tokens it paid (sum of the completion tokens of every drawn sample), the sample it
chose and whether that sample is correct; and in total the accuracy, mean tokens and
mean samples per question with bootstrap confidence intervals.

:func:`sweep` runs the paper's whole comparison at once: Best-of-N, self-consistency
and weighted voting at N = 1, 2, 4, ..., n_max; ESC, ASC and DSC at every n_max; and
OptScale⁰ / OptScaleᵗ over the official (s_min, alpha, n_max) grid. The OptScale fits
are computed once per (question, prefix length) and reused by every (s_min, alpha).
:func:`pareto_frontier` extracts the accuracy-vs-tokens frontier.
"""

from __future__ import annotations

import time
import warnings
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from optscale_jax.grading import VOTE_RULES, vote_classes
from optscale_jax.policies import (
    ASC,
    DSC,
    ESC,
    BestOfN,
    Observed,
    Policy,
    SelfConsistency,
    WeightedVote,
    official_peek,
)
from optscale_jax.policies.baselines import dsc_official_difficulty
from optscale_jax.pool import Pool

__all__ = [
    "Grid",
    "OFFICIAL_GRID",
    "ReplayResult",
    "SweepResult",
    "METHODS",
    "bootstrap_ci",
    "pareto_frontier",
    "replay",
    "run_policy",
    "sweep",
    "prefix_best_of_n",
    "clip_grid",
    "pool_width",
    "GridClippedWarning",
]

#: Methods :func:`sweep` knows.
METHODS: tuple[str, ...] = ("BoN", "SC", "WeightedSC", "ESC", "ASC", "DSC", "OptScale0", "OptScaleT")


@dataclass(frozen=True)
class Grid:
    """A sweep grid.

    Attributes:
        s_min: target scores.
        quantile: ``1 - alpha`` values (the ``percentile`` field of the authors' files).
        n_max: sample budgets.
    """

    s_min: tuple[float, ...]
    quantile: tuple[float, ...]
    n_max: tuple[int, ...]

    def __post_init__(self) -> None:
        for s in self.s_min:
            if not 0.0 < s < 1.0:
                raise ValueError(f"Grid.s_min values must be in (0, 1), got {s!r}")
        for q in self.quantile:
            if not 0.0 < q < 1.0:
                raise ValueError(f"Grid.quantile (1 - alpha) values must be in (0, 1), got {q!r}")
        for n in self.n_max:
            if int(n) != n or n < 1:
                raise ValueError(f"Grid.n_max values must be integers >= 1, got {n!r}")

    @property
    def alpha(self) -> tuple[float, ...]:
        """Target probabilities ``alpha = 1 - quantile``."""
        return tuple(1.0 - q for q in self.quantile)

    @property
    def size(self) -> int:
        """Number of (s_min, alpha, n_max) configurations per OptScale variant."""
        return len(self.s_min) * len(self.quantile) * len(self.n_max)


#: The authors' grid (DESIGN.md): 8 s_min x 6 (1 - alpha) x 4 n_max.
OFFICIAL_GRID = Grid(
    s_min=(0.85, 0.9, 0.925, 0.95, 0.96, 0.97, 0.98, 0.99),
    quantile=(0.01, 0.02, 0.035, 0.05, 0.075, 0.1),
    n_max=(8, 16, 32, 64),
)


class GridClippedWarning(UserWarning):
    """A sweep budget exceeded the samples the pool holds and was clipped to them."""


def pool_width(pool: Pool) -> int:
    """Samples in the pool's widest row: no budget above it can be replayed."""
    return int(pool.n_samples.max(initial=0))


def clip_grid(grid: Grid, width: int) -> tuple[Grid, list[int]]:
    """Clip a grid's ``n_max`` budgets to the pool width (``width`` samples per question).

    Replaying N = 64 on a pool of 4 samples per question would draw 4 and label it 64;
    budgets above ``width`` are replaced by ``width`` (duplicates merged).

    Args:
        grid: the sweep grid.
        width: :func:`pool_width` of the pool, >= 1.

    Returns:
        ``(grid, clipped)``: the clipped grid and the budgets that were above ``width``.

    Raises:
        ValueError: ``width < 1`` (a pool without samples).
    """
    if width < 1:
        raise ValueError(f"the pool has no samples (width {width}): nothing to replay")
    clipped = [int(n) for n in grid.n_max if n > width]
    if not clipped:
        return grid, []
    ns = tuple(sorted({min(int(n), width) for n in grid.n_max}))
    return Grid(s_min=grid.s_min, quantile=grid.quantile, n_max=ns), clipped


# --------------------------------------------------------------------------- engine
def _observe(
    pool: Pool, drawn: np.ndarray, votes: np.ndarray | None = None, cap: np.ndarray | None = None
) -> Observed:
    m = np.arange(pool.n_max)[None, :] < drawn[:, None]
    return Observed(
        available=cap,
        scores=np.where(m, pool.scores, 0.0),
        mask=m,
        answer_ids=np.where(m, pool.answer_ids if votes is None else votes, -1).astype(np.int32),
        tokens=np.where(m, pool.tokens, 0),
        selectable=m & pool.selectable,
    )


def run_policy(
    pool: Pool, policy: Policy, *, vote: str = "official", votes: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray, int]:
    """Run a policy's rounds over a pool (see the round semantics in ``policies.base``).

    Args:
        pool: the completions, in drawing order.
        policy: any :class:`~optscale_jax.policies.Policy`.
        vote: the answer classes voting policies see as ``Observed.answer_ids``
            (:func:`optscale_jax.grading.vote_classes`): ``"official"`` (the authors'
            exact strings, "no answer" a class) or ``"math-verify"`` (``pool.answer_ids``).
        votes: precomputed ``vote_classes(pool, vote)`` (skips recomputing it).

    Returns:
        ``(n_drawn, chosen, rounds)``: ``(Q,)`` int64 samples drawn, ``(Q,)`` int64 chosen
        sample index (-1 for a question with nothing drawn), number of rounds.

    Raises:
        ValueError: when the policy returns a wrong shape or selects an undrawn sample.
    """
    q = pool.n_questions
    cap = np.minimum(pool.n_samples, min(int(policy.n_max), pool.n_max))
    drawn = np.zeros(q, dtype=np.int64)
    rounds = 0
    limit = int(cap.sum()) + 2
    if votes is None:
        votes = vote_classes(pool, vote)
    obs = _observe(pool, drawn, votes, cap)
    while rounds < limit:
        want = np.asarray(policy.want(obs))
        if want.shape != (q,):
            raise ValueError(
                f"policy {policy.name!r}: want() returned shape {want.shape}, expected ({q},)"
            )
        target = np.clip(want.astype(np.int64), 0, cap)
        new = np.maximum(drawn, target)
        if (new == drawn).all():
            break
        drawn = new
        rounds += 1
        obs = _observe(pool, drawn, votes, cap)
    chosen = np.asarray(policy.select(obs)).astype(np.int64)
    if chosen.shape != (q,):
        raise ValueError(
            f"policy {policy.name!r}: select() returned shape {chosen.shape}, expected ({q},)"
        )
    has = drawn > 0
    bad = has & ((chosen < 0) | (chosen >= drawn))
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise ValueError(
            f"policy {policy.name!r} selected sample {chosen[i]} of question "
            f"{pool.question_ids[i]!r} (row {i}), which drew only {drawn[i]} samples"
        )
    return drawn, np.where(has, chosen, -1), rounds


def _outcome(pool: Pool, drawn: np.ndarray, chosen: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    m = np.arange(pool.n_max)[None, :] < drawn[:, None]
    tokens = np.where(m, pool.tokens, 0).sum(axis=1)
    ok = chosen >= 0
    correct = np.where(ok, pool.correct[np.arange(pool.n_questions), np.clip(chosen, 0, None)], False)
    return tokens.astype(np.int64), correct.astype(bool)


# ------------------------------------------------------------------------ statistics
def bootstrap_ci(
    values: np.ndarray, *, n_boot: int = 1000, level: float = 0.95, seed: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """Percentile bootstrap confidence intervals of column means, resampling rows.

    Args:
        values: ``(Q,)`` or ``(Q, C)`` per-question values (one column per statistic).
        n_boot: bootstrap replicates (0 gives NaN intervals).
        level: coverage, e.g. 0.95.
        seed: random seed (deterministic).

    Returns:
        ``(low, high)`` arrays of shape ``()`` or ``(C,)``.
    """
    x = np.asarray(values, dtype=np.float64)
    squeeze = x.ndim == 1
    x2 = x[:, None] if squeeze else x
    q = x2.shape[0]
    if n_boot <= 0 or q == 0:
        nan = np.full(x2.shape[1], np.nan)
        return (nan[0], nan[0]) if squeeze else (nan, nan)
    if not 0.0 < level < 1.0:
        raise ValueError(f"bootstrap level must be in (0, 1), got {level!r}")
    rng = np.random.default_rng(seed)
    counts = rng.multinomial(q, np.full(q, 1.0 / q), size=int(n_boot)).astype(np.float64)
    means = counts @ x2 / q
    lo = np.quantile(means, (1.0 - level) / 2.0, axis=0)
    hi = np.quantile(means, 1.0 - (1.0 - level) / 2.0, axis=0)
    return (lo[0], hi[0]) if squeeze else (lo, hi)


def pareto_frontier(tokens: Sequence[float] | np.ndarray, accuracy: Sequence[float] | np.ndarray) -> np.ndarray:
    """Indices of the accuracy-vs-tokens Pareto frontier, by increasing tokens.

    A point is on the frontier when no other point has at most its tokens and strictly
    higher accuracy, or strictly fewer tokens and at least its accuracy. Among exact
    duplicates the first is kept.

    Args:
        tokens: mean tokens per question of each point.
        accuracy: accuracy of each point.

    Returns:
        int64 indices into the inputs.

    Examples:
        >>> pareto_frontier([1, 2, 3, 4], [0.5, 0.4, 0.7, 0.7]).tolist()
        [0, 2]
    """
    t = np.asarray(tokens, dtype=np.float64)
    a = np.asarray(accuracy, dtype=np.float64)
    if t.shape != a.shape or t.ndim != 1:
        raise ValueError(f"pareto_frontier: tokens {t.shape} and accuracy {a.shape} must be equal 1-D")
    order = np.lexsort((np.arange(t.size), -a, t))  # tokens up, then accuracy down
    keep: list[int] = []
    best = -np.inf
    for i in order:
        if a[i] > best:
            keep.append(int(i))
            best = a[i]
    return np.asarray(keep, dtype=np.int64)


# ------------------------------------------------------------------------- results
@dataclass
class ReplayResult:
    """Outcome of one policy on one pool.

    Attributes:
        name: policy name.
        label: pool label (says "synthetic" for the synthetic twin).
        synthetic: True when the pool is synthetic.
        n_drawn: ``(Q,)`` samples drawn (mean over re-orderings when ``n_perms > 0``).
        tokens: ``(Q,)`` tokens paid (same averaging).
        chosen: ``(Q,)`` chosen sample index in pool order (-1 if nothing drawn);
            with re-orderings, the choice under the first re-ordering, in its order.
        correct: ``(Q,)`` fraction of runs in which the choice was correct.
        accuracy: mean of ``correct``.
        mean_tokens: mean of ``tokens``.
        mean_samples: mean of ``n_drawn``.
        ci: ``{"accuracy": (lo, hi), "mean_tokens": ..., "mean_samples": ...}``.
        config: the policy's parameters and the replay options.
    """

    name: str
    label: str
    synthetic: bool
    n_drawn: np.ndarray
    tokens: np.ndarray
    chosen: np.ndarray
    correct: np.ndarray
    accuracy: float
    mean_tokens: float
    mean_samples: float
    ci: dict[str, tuple[float, float]]
    config: dict[str, Any] = field(default_factory=dict)

    def summary(self) -> dict[str, Any]:
        """JSON-ready totals (no per-question arrays)."""
        return {
            "name": self.name,
            "pool": self.label,
            "synthetic": self.synthetic,
            "accuracy": self.accuracy,
            "mean_tokens": self.mean_tokens,
            "mean_samples": self.mean_samples,
            "ci": {k: [float(v[0]), float(v[1])] for k, v in self.ci.items()},
            "config": self.config,
        }

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready totals and per-question arrays."""
        out = self.summary()
        out["per_question"] = {
            "n_drawn": self.n_drawn.tolist(),
            "tokens": self.tokens.tolist(),
            "chosen": self.chosen.tolist(),
            "correct": self.correct.tolist(),
        }
        return out


def _policy_config(policy: Policy) -> dict[str, Any]:
    cfg: dict[str, Any] = {}
    for key in ("n", "n_max", "window", "stride", "threshold", "min_samples", "s_min", "alpha",
                "mode", "k", "n_init", "step", "nstar_rule"):
        if hasattr(policy, key):
            v = getattr(policy, key)
            if isinstance(v, (int, float, str)) or v is None:
                cfg[key] = v
    if hasattr(policy, "variant"):
        cfg["variant"] = policy.variant
    return cfg


def replay(
    pool: Pool,
    policy: Policy,
    *,
    n_perms: int = 0,
    seed: int = 0,
    n_boot: int = 1000,
    level: float = 0.95,
    vote: str = "official",
) -> ReplayResult:
    """Replay one policy over a pool.

    Args:
        pool: completions in drawing order.
        policy: the scaling policy.
        vote: answer classes for voting policies: ``"official"`` (the authors' rule:
            exact extracted strings, "no answer" is a class that can win) or
            ``"math-verify"`` (equivalence classes; "no answer" does not vote). Recorded
            in ``config["vote"]``.
        n_perms: 0 replays the pool's own order; ``P > 0`` averages over ``P`` random
            re-orderings of every row (``Pool.permuted``), to average out drawing order.
        seed: seed of the re-orderings and of the bootstrap.
        n_boot: bootstrap replicates for the confidence intervals (0 = none).
        level: confidence level.

    Returns:
        A :class:`ReplayResult`.

    Examples:
        >>> pool = Pool.from_arrays([[0.2, 0.9], [0.8, 0.1]], correct=[[False, True], [True, False]],
        ...                         answer_ids=[[0, 1], [0, 1]])
        >>> replay(pool, BestOfN(2), n_boot=0).accuracy
        1.0
    """
    if n_perms < 0:
        raise ValueError(f"n_perms must be >= 0, got {n_perms}")
    if vote not in VOTE_RULES:
        raise ValueError(f"vote must be one of {list(VOTE_RULES)}, got {vote!r}")
    pools = [pool] if n_perms == 0 else pool.permuted(seed, n_perms)
    drawn_all, tok_all, corr_all = [], [], []
    chosen_first = None
    for p in pools:
        drawn, chosen, _ = run_policy(p, policy, vote=vote)
        tokens, correct = _outcome(p, drawn, chosen)
        drawn_all.append(drawn)
        tok_all.append(tokens)
        corr_all.append(correct)
        if chosen_first is None:
            chosen_first = chosen
    n_drawn = np.mean(drawn_all, axis=0) if n_perms else drawn_all[0]
    tokens = np.mean(tok_all, axis=0) if n_perms else tok_all[0]
    correct = np.mean(corr_all, axis=0) if n_perms else corr_all[0]
    stats = np.stack([correct, tokens, n_drawn], axis=1).astype(np.float64)
    lo, hi = bootstrap_ci(stats, n_boot=n_boot, level=level, seed=seed)
    cfg = _policy_config(policy)
    cfg.update({"n_perms": int(n_perms), "seed": int(seed), "n_boot": int(n_boot), "level": level,
                "vote": vote})
    return ReplayResult(
        name=policy.name,
        label=pool.label,
        synthetic=pool.synthetic,
        n_drawn=n_drawn,
        tokens=tokens,
        chosen=chosen_first,
        correct=correct,
        accuracy=float(stats[:, 0].mean()) if len(stats) else float("nan"),
        mean_tokens=float(stats[:, 1].mean()) if len(stats) else float("nan"),
        mean_samples=float(stats[:, 2].mean()) if len(stats) else float("nan"),
        ci={
            "accuracy": (float(lo[0]), float(hi[0])),
            "mean_tokens": (float(lo[1]), float(hi[1])),
            "mean_samples": (float(lo[2]), float(hi[2])),
        },
        config=cfg,
    )


# -------------------------------------------------------------------------- sweeps
def prefix_best_of_n(pool: Pool) -> np.ndarray:
    """Best-of-N choice for every prefix length at once.

    Args:
        pool: the completions.

    Returns:
        ``(Q, N)`` int64: column ``L - 1`` is the Best-of-N index among the first ``L``
        samples (same rule as :func:`~optscale_jax.policies.best_of_n_index`).
    """
    s, m = pool.scores, pool.mask
    ok = m & pool.selectable
    # Non-empty completions beat empty ones; keys keep both groups in score order.
    key = np.where(ok, s + 2.0, np.where(m, s, -np.inf))
    q, n = s.shape
    out = np.zeros((q, n), dtype=np.int64)
    best = np.full(q, -np.inf)
    idx = np.zeros(q, dtype=np.int64)
    for j in range(n):
        better = key[:, j] > best  # strict: ties keep the first drawn
        best = np.where(better, key[:, j], best)
        idx = np.where(better, j, idx)
        out[:, j] = idx
    return out


@dataclass
class SweepResult:
    """Every configuration of a sweep, as flat records.

    Attributes:
        label: pool label (says "synthetic" for the synthetic twin).
        synthetic: True when the pool is synthetic.
        n_questions: questions in the pool.
        records: one dict per configuration with keys ``method`` (e.g. "BoN",
            "OptScale0"), ``variant`` ("MLE"/"MAP" or None), ``mode``, ``n_max``, ``N``
            (fixed-size baselines), ``s_min``, ``quantile`` (1 - alpha), ``alpha``,
            ``accuracy``, ``mean_tokens``, ``mean_samples`` and their ``*_ci`` pairs.
        timings: seconds spent per stage.
        meta: grid, options and prior description.
    """

    label: str
    synthetic: bool
    n_questions: int
    records: list[dict[str, Any]]
    timings: dict[str, float] = field(default_factory=dict)
    meta: dict[str, Any] = field(default_factory=dict)

    def select(self, **where: Any) -> list[dict[str, Any]]:
        """Records whose fields equal every given value (e.g. ``method="ESC"``)."""
        return [r for r in self.records if all(r.get(k) == v for k, v in where.items())]

    def frontier(self, records: list[dict[str, Any]] | None = None) -> list[dict[str, Any]]:
        """The accuracy-vs-tokens Pareto frontier of the given (default: all) records."""
        recs = self.records if records is None else records
        idx = pareto_frontier([r["mean_tokens"] for r in recs], [r["accuracy"] for r in recs])
        return [recs[i] for i in idx]

    def best(self, method: str, n_max: int, **where: Any) -> dict[str, Any] | None:
        """The paper's Table 1 pick: highest accuracy, ties broken by fewest tokens.

        (This rule reproduces all 40 OptScale entries of the authors' Table 1 from their
        grid result files.)
        """
        recs = self.select(method=method, n_max=n_max, **where)
        if not recs:
            return None
        return max(recs, key=lambda r: (r["accuracy"], -r["mean_tokens"]))

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready content (records, frontier, timings, meta)."""
        return {
            "pool": self.label,
            "synthetic": self.synthetic,
            "n_questions": self.n_questions,
            "records": self.records,
            "frontier": self.frontier(),
            "timings": self.timings,
            "meta": self.meta,
        }


class _Scorer:
    """Per-question outcomes for a given number of drawn samples, with Best-of-N choice."""

    def __init__(self, pool: Pool) -> None:
        self.pool = pool
        self.avail = pool.n_samples
        best = prefix_best_of_n(pool)
        q = np.arange(pool.n_questions)[:, None]
        self.correct_at = np.concatenate(
            [np.zeros((pool.n_questions, 1), bool), pool.correct[q, best]], axis=1
        )  # column d = correct with d drawn (d = 0: nothing)
        self.tokens_at = np.concatenate(
            [np.zeros((pool.n_questions, 1), np.int64), np.cumsum(pool.tokens, axis=1)], axis=1
        )

    def bon(self, drawn: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """``drawn`` of shape (Q, ...) -> (correct, tokens, drawn clipped to the row), same shape."""
        d = np.minimum(drawn, self.avail.reshape((-1,) + (1,) * (drawn.ndim - 1)))
        flat = d.reshape(d.shape[0], -1)
        c = np.take_along_axis(self.correct_at, flat, axis=1).reshape(d.shape)
        t = np.take_along_axis(self.tokens_at, flat, axis=1).reshape(d.shape)
        return c, t, d


def _record(base: dict[str, Any], correct: np.ndarray, tokens: np.ndarray, drawn: np.ndarray) -> dict[str, Any]:
    rec = dict(base)
    rec["accuracy"] = float(np.mean(correct)) if correct.size else float("nan")
    rec["mean_tokens"] = float(np.mean(tokens)) if tokens.size else float("nan")
    rec["mean_samples"] = float(np.mean(drawn)) if drawn.size else float("nan")
    rec["_values"] = np.stack([correct, tokens, drawn], axis=1).astype(np.float64)
    return rec


def _grid_records(
    base: dict[str, Any], grid: Grid, correct: np.ndarray, tokens: np.ndarray, drawn: np.ndarray
) -> list[dict[str, Any]]:
    """One record per (s_min, 1 − α) of the grid from (Q, S, A) outcome arrays."""
    return [
        _record(
            {**base, "s_min": s, "quantile": qv, "alpha": 1.0 - qv},
            correct[:, si, ai], tokens[:, si, ai], drawn[:, si, ai],
        )
        for si, s in enumerate(grid.s_min)
        for ai, qv in enumerate(grid.quantile)
    ]


def _baseline_ns(n_max_values: Iterable[int]) -> list[int]:
    top = max(n_max_values)
    ns, n = [], 1
    while n < top:
        ns.append(n)
        n *= 2
    ns.append(top)
    return sorted(set(ns) | set(n_max_values))


def _optscale_records(
    pool: Pool,
    scorer: _Scorer,
    grid: Grid,
    variant: str,
    prior: Any,
    modes: Sequence[str],
    nstar_rule: str,
    step: int,
    timings: dict[str, float],
    tick: Callable[[str], None],
) -> list[dict[str, Any]]:
    from optscale_jax.fit import fit_prefixes, fit_status_usable
    from optscale_jax.nstar import n_star_for_fits

    recs: list[dict[str, Any]] = []
    method = "OptScale0" if variant == "MLE" else "OptScaleT"
    s_min = np.asarray(grid.s_min, dtype=np.float64)
    alpha = np.asarray(grid.alpha, dtype=np.float64)
    avail = scorer.avail
    n_cols = pool.n_max
    if "oneshot" in modes:
        peeks = sorted({min(official_peek(n), n) for n in grid.n_max})
        t0 = time.perf_counter()
        fits = fit_prefixes(pool.scores, pool.mask, prior, lengths=[min(k, n_cols) for k in peeks])
        mu_all, sigma_all = np.asarray(fits.mu), np.asarray(fits.sigma)
        timings[f"fit_oneshot_{variant}"] = time.perf_counter() - t0
        t0 = time.perf_counter()
        for n_max in grid.n_max:
            k = official_peek(n_max)
            j = peeks.index(min(k, n_max))
            ns = n_star_for_fits(
                mu_all[:, j, None, None], sigma_all[:, j, None, None],
                s_min[None, :, None], alpha[None, None, :], n_max=n_max, rule=nstar_rule,
            )  # (Q, S, A)
            drawn = np.minimum(np.maximum(ns, k), n_max)
            correct, tokens, drawn = scorer.bon(drawn)
            recs.extend(_grid_records(
                {"method": method, "variant": variant, "mode": "oneshot", "n_max": n_max, "N": None, "k": k},
                grid, correct, tokens, drawn,
            ))
            tick(f"{method} one-shot n_max={n_max}")
        timings[f"nstar_oneshot_{variant}"] = time.perf_counter() - t0
    if "sequential" in modes:
        n_init = 2 if variant == "MLE" else 1
        top = min(max(grid.n_max), n_cols)
        checks = list(range(min(n_init, top), top + 1, step))
        t0 = time.perf_counter()
        fits = fit_prefixes(pool.scores, pool.mask, prior, lengths=checks)
        timings[f"fit_sequential_{variant}"] = time.perf_counter() - t0
        usable = fit_status_usable(np.asarray(fits.status))  # (Q, L)
        lengths = np.asarray(checks)
        t0 = time.perf_counter()
        for n_max in grid.n_max:
            cap = np.minimum(avail, n_max)  # (Q,)
            ns = n_star_for_fits(
                np.asarray(fits.mu)[:, :, None, None], np.asarray(fits.sigma)[:, :, None, None],
                s_min[None, None, :, None], alpha[None, None, None, :], n_max=n_max, rule=nstar_rule,
            )  # (Q, L, S, A)
            L = lengths[None, :, None, None]
            stop = usable[:, :, None, None] & (L >= ns) & (L <= cap[:, None, None, None])
            first = np.argmax(stop, axis=1)  # (Q, S, A)
            any_stop = stop.any(axis=1)
            drawn = np.where(any_stop, lengths[first], cap[:, None, None])
            drawn = np.minimum(drawn, cap[:, None, None])
            correct, tokens, drawn = scorer.bon(drawn)
            recs.extend(_grid_records(
                {"method": method, "variant": variant, "mode": "sequential", "n_max": n_max, "N": None,
                 "k": None},
                grid, correct, tokens, drawn,
            ))
            tick(f"{method} sequential n_max={n_max}")
        timings[f"nstar_sequential_{variant}"] = time.perf_counter() - t0
    return recs


def sweep(
    pool: Pool,
    *,
    grid: Grid | str = "official",
    methods: Sequence[str] = METHODS,
    modes: Sequence[str] = ("oneshot",),
    prior: Any = None,
    nstar_rule: str = "closed",
    step: int = 1,
    n_perms: int = 0,
    seed: int = 0,
    n_boot: int = 1000,
    level: float = 0.95,
    progress: bool = False,
    vote: str = "official",
) -> SweepResult:
    """Run every method over a grid on one pool.

    Fixed-size baselines (``BoN``, ``SC``, ``WeightedSC``) run at N = 1, 2, 4, ...,
    max(n_max) and at each n_max; ``ESC``, ``ASC``, ``DSC`` at each n_max with their
    default parameters; ``OptScale0`` (MLE) and ``OptScaleT`` (MAP) at every
    (s_min, alpha, n_max) of the grid, in each of ``modes``. OptScale fits are computed
    once per (question, prefix length) for the whole grid; results equal
    :func:`replay` of the corresponding :class:`~optscale_jax.policies.OptScale`.

    Args:
        pool: completions in drawing order.
        grid: a :class:`Grid` or ``"official"``.
        methods: subset of :data:`METHODS`.
        modes: OptScale modes, any of ``"oneshot"``, ``"sequential"``.
        prior: prior for OptScaleT (``GaussianPrior`` with per-question arrays); default
            a constant prior at :data:`optscale_jax.model.POPULATION_PRIOR_CENTRES` with std 0.1.
        nstar_rule: ``"closed"`` or ``"official"`` N*.
        step: refit interval ``b`` of the sequential mode.
        n_perms: average over this many random re-orderings of each row (0 = pool order).
        seed: seed for re-orderings and bootstrap.
        n_boot: bootstrap replicates for confidence intervals (0 = none).
        level: confidence level.
        progress: show a tqdm progress bar.
        vote: answer classes of SC, ESC, ASC and DSC: ``"official"`` (the authors' rule:
            exact extracted strings, "no answer" a class that can win) or
            ``"math-verify"`` (equivalence classes). Recorded in ``meta["vote"]``.

    Returns:
        A :class:`SweepResult`.
    """
    if isinstance(grid, str):
        if grid != "official":
            raise ValueError(f"unknown grid {grid!r}: use 'official' or a Grid")
        grid = OFFICIAL_GRID
    unknown = [m for m in methods if m not in METHODS]
    if unknown:
        raise ValueError(f"unknown method(s) {unknown}; known: {list(METHODS)}")
    bad_modes = [m for m in modes if m not in ("oneshot", "sequential")]
    if bad_modes:
        raise ValueError(f"unknown OptScale mode(s) {bad_modes}; known: oneshot, sequential")
    if n_perms < 0:
        raise ValueError(f"n_perms must be >= 0, got {n_perms}")
    if vote not in VOTE_RULES:
        raise ValueError(f"vote must be one of {list(VOTE_RULES)}, got {vote!r}")
    if pool.n_questions == 0:
        raise ValueError(f"pool {pool.label!r} has no questions: nothing to replay")
    width = pool_width(pool)
    if width == 0:
        raise ValueError(f"pool {pool.label!r}: all {pool.n_questions} questions have 0 samples: nothing to replay")
    grid, clipped = clip_grid(grid, width)
    if clipped:
        warnings.warn(
            f"n_max {clipped} exceed the pool's {width} samples per question; clipped to {width}",
            GridClippedWarning, stacklevel=2,
        )
    prior_desc = "none"
    if "OptScaleT" in methods:
        if prior is None:
            from optscale_jax.model import POPULATION_PRIOR_CENTRES, population_prior

            prior = population_prior(pool.n_questions)
            prior_desc = f"population prior centres {POPULATION_PRIOR_CENTRES}, std 0.1"
        else:
            prior_desc = "per-question prior (given)"
            for name, value in zip(getattr(prior, "_fields", ()), prior, strict=False):
                shape = np.shape(np.asarray(value)) if not hasattr(value, "batch_shape") else tuple(value.batch_shape)
                if shape not in ((), (pool.n_questions,)):
                    raise ValueError(
                        f"prior field {name!r} has shape {shape}, the pool has {pool.n_questions} questions"
                    )

    ns_base = _baseline_ns(grid.n_max)
    n_os = sum(1 for m in ("OptScale0", "OptScaleT") if m in methods) * len(modes) * len(grid.n_max)
    total_steps = (
        len(ns_base) * sum(1 for m in ("BoN", "SC", "WeightedSC") if m in methods)
        + len(grid.n_max) * sum(1 for m in ("ESC", "ASC", "DSC") if m in methods)
        + n_os
    ) * max(1, n_perms)
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=total_steps, desc=f"sweep {pool.label}", unit="step")

    def tick(desc: str) -> None:
        if bar is not None:
            bar.set_postfix_str(desc, refresh=False)
            bar.update(1)

    timings: dict[str, float] = {}
    pools = [pool] if n_perms == 0 else pool.permuted(seed, n_perms)
    per_run: list[list[dict[str, Any]]] = []
    t_start = time.perf_counter()
    try:
        for p in pools:
            recs: list[dict[str, Any]] = []
            scorer = _Scorer(p)
            votes = vote_classes(p, vote)
            t0 = time.perf_counter()
            fixed = {"BoN": BestOfN, "SC": SelfConsistency, "WeightedSC": WeightedVote}
            for mname, cls in fixed.items():
                if mname not in methods:
                    continue
                for n in ns_base:
                    if mname == "BoN":
                        correct, tokens, drawn = scorer.bon(np.full(p.n_questions, n))
                    else:
                        drawn, chosen, _ = run_policy(p, cls(n), votes=votes)
                        tokens, correct = _outcome(p, drawn, chosen)
                    recs.append(_record(
                        {"method": mname, "variant": None, "mode": None, "n_max": n, "N": n,
                         "k": None, "s_min": None, "quantile": None, "alpha": None},
                        correct, tokens, drawn,
                    ))
                    tick(f"{mname} N={n}")
            timings["fixed_baselines"] = timings.get("fixed_baselines", 0.0) + time.perf_counter() - t0
            t0 = time.perf_counter()
            adaptive = {"ESC": ESC, "ASC": ASC, "DSC": DSC}
            for mname, cls in adaptive.items():
                if mname not in methods:
                    continue
                for n_max in grid.n_max:
                    pol = cls(n_max)
                    if mname == "DSC":  # the authors rank by 1 - mean score of the row
                        pol = cls(n_max, difficulty=dsc_official_difficulty(p.scores, p.mask))
                    drawn, chosen, _ = run_policy(p, pol, votes=votes)
                    tokens, correct = _outcome(p, drawn, chosen)
                    recs.append(_record(
                        {"method": mname, "variant": None, "mode": None, "n_max": n_max, "N": None,
                         "k": None, "s_min": None, "quantile": None, "alpha": None},
                        correct, tokens, drawn,
                    ))
                    tick(f"{mname} n_max={n_max}")
            timings["adaptive_baselines"] = timings.get("adaptive_baselines", 0.0) + time.perf_counter() - t0
            t0 = time.perf_counter()
            for mname, variant, pr in (("OptScale0", "MLE", None), ("OptScaleT", "MAP", prior)):
                if mname in methods:
                    recs.extend(_optscale_records(
                        p, scorer, grid, variant, pr, modes, nstar_rule, step, timings, tick
                    ))
            timings["optscale"] = timings.get("optscale", 0.0) + time.perf_counter() - t0
            per_run.append(recs)
    finally:
        if bar is not None:
            bar.close()

    # Average over re-orderings, then bootstrap over questions.
    t0 = time.perf_counter()
    records = per_run[0]
    for i, rec in enumerate(records):
        vals = np.mean([run[i]["_values"] for run in per_run], axis=0)
        rec["accuracy"], rec["mean_tokens"], rec["mean_samples"] = (float(v) for v in vals.mean(axis=0))
        rec["_values"] = vals
    if records:
        stacked = np.concatenate([r["_values"] for r in records], axis=1)  # (Q, 3 * R)
        lo, hi = bootstrap_ci(stacked, n_boot=n_boot, level=level, seed=seed)
        for i, rec in enumerate(records):
            for j, key in enumerate(("accuracy", "mean_tokens", "mean_samples")):
                rec[f"{key}_ci"] = [float(lo[3 * i + j]), float(hi[3 * i + j])]
            del rec["_values"]
    timings["bootstrap"] = time.perf_counter() - t0
    timings["total"] = time.perf_counter() - t_start
    return SweepResult(
        label=pool.label,
        synthetic=pool.synthetic,
        n_questions=pool.n_questions,
        records=records,
        timings=timings,
        meta={
            "grid": {"s_min": list(grid.s_min), "quantile": list(grid.quantile), "n_max": list(grid.n_max)},
            "pool_width": width,
            "n_max_clipped": clipped,
            "methods": list(methods),
            "modes": list(modes),
            "prior": prior_desc,
            "nstar_rule": nstar_rule,
            "step": step,
            "n_perms": n_perms,
            "seed": seed,
            "n_boot": n_boot,
            "level": level,
            "vote": vote,
        },
    )
