"""Replay scaling policies over a pool of pre-generated, scored completions.

:func:`replay` runs one policy and reports, per question, how many samples it drew,
the tokens it paid (sum of the completion tokens of every drawn sample), the sample it
chose and whether that sample is correct; and in total the accuracy, mean tokens and
mean samples per question with bootstrap confidence intervals. :func:`run_policy` is
the round loop underneath; :func:`pareto_frontier` extracts the accuracy-vs-tokens
frontier.

The grid sweep over every method is :mod:`optscale_jax.sweep`; its names
(``sweep``, ``SweepResult``, ``Grid``, ``OFFICIAL_GRID``, ``METHODS``, ...) are still
importable from here.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from optscale_jax.grading import VOTE_RULES, vote_classes
from optscale_jax.policies import Observed, Policy
from optscale_jax.pool import Pool
from optscale_jax.selection import prefix_best_of_n_index

__all__ = [
    "DEFAULT_CHUNK_SIZE",
    "ReplayResult",
    "bootstrap_ci",
    "pareto_frontier",
    "prefix_best_of_n",
    "replay",
    "run_policy",
    "run_policy_chunked",
    "tokens_and_correct",
]

#: Questions per chunk of :func:`replay` by default: pools up to this size run in one chunk.
DEFAULT_CHUNK_SIZE = 4096


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


def _has_distribution(value: Any) -> bool:
    if isinstance(value, tuple):
        return any(_has_distribution(v) for v in value)
    return hasattr(value, "batch_shape")


def _array_fields(policy: Policy) -> dict[str, Any] | None:
    """The policy's non-scalar fields, or None when it cannot be cut into question chunks."""
    if getattr(policy, "couples_questions", False) or not dataclasses.is_dataclass(policy):
        return None
    out = {}
    for f in dataclasses.fields(policy):
        value = getattr(policy, f.name)
        if not f.init or value is None or isinstance(value, (str, int, float)):
            continue
        if _has_distribution(value):
            return None
        out[f.name] = value
    return out


def _policy_rows(policy: Policy, rows: np.ndarray, q: int) -> Policy:
    """The policy for some questions (per-question fields sliced)."""
    from optscale_jax.sharding import slice_rows  # here: sharding imports JAX

    changes = {k: slice_rows(v, rows, q) for k, v in (_array_fields(policy) or {}).items()}
    return dataclasses.replace(policy, **changes) if changes else policy


def run_policy_chunked(
    pool: Pool, policy: Policy, *, chunk_size: int, vote: str = "official"
) -> tuple[np.ndarray, np.ndarray]:
    """:func:`run_policy` over questions in chunks of ``chunk_size``, concatenated.

    Per-question policy fields (an OptScale prior's arrays) are sliced per chunk. A
    policy that ranks all questions (DSC), or holds numpyro distributions that cannot be
    sliced, runs on the whole pool. Results equal the unchunked run's.

    Returns:
        ``(n_drawn, chosen)`` as :func:`run_policy`.
    """
    q = pool.n_questions
    if chunk_size >= q or _array_fields(policy) is None:
        drawn, chosen, _ = run_policy(pool, policy, vote=vote)
        return drawn, chosen
    drawn_parts, chosen_parts = [], []
    for start in range(0, q, chunk_size):
        rows = np.arange(start, min(q, start + chunk_size))
        d, c, _ = run_policy(pool.subset(rows), _policy_rows(policy, rows, q), vote=vote)
        drawn_parts.append(d)
        chosen_parts.append(c)
    return np.concatenate(drawn_parts), np.concatenate(chosen_parts)


def tokens_and_correct(pool: Pool, drawn: np.ndarray, chosen: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """What a run paid and whether its choice is right, per question.

    Args:
        pool: the completions the run replayed.
        drawn: ``(Q,)`` samples drawn.
        chosen: ``(Q,)`` chosen sample index, -1 for a question with nothing drawn.

    Returns:
        ``(tokens, correct)``: ``(Q,)`` int64 completion tokens of the drawn samples and
        ``(Q,)`` bool correctness of the chosen one (False when none).
    """
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
    chunk_size: int | None = None,
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
        chunk_size: questions per chunk (default :data:`DEFAULT_CHUNK_SIZE`); results
            equal the unchunked run's (:func:`run_policy_chunked`).

    Returns:
        A :class:`ReplayResult`.

    Examples:
        >>> pool = Pool.from_arrays([[0.2, 0.9], [0.8, 0.1]], correct=[[False, True], [True, False]],
        ...                         answer_ids=[[0, 1], [0, 1]])
        >>> from optscale_jax.policies import BestOfN
        >>> replay(pool, BestOfN(2), n_boot=0).accuracy
        1.0
    """
    if n_perms < 0:
        raise ValueError(f"n_perms must be >= 0, got {n_perms}")
    if vote not in VOTE_RULES:
        raise ValueError(f"vote must be one of {list(VOTE_RULES)}, got {vote!r}")
    if chunk_size is None:
        chunk_size = DEFAULT_CHUNK_SIZE
    if isinstance(chunk_size, bool) or not isinstance(chunk_size, (int, np.integer)) or chunk_size < 1:
        raise ValueError(f"chunk_size must be a whole number >= 1, got {chunk_size!r}")
    pools = [pool] if n_perms == 0 else pool.permuted(seed, n_perms)
    drawn_all, tok_all, corr_all = [], [], []
    chosen_first = None
    for p in pools:
        drawn, chosen = run_policy_chunked(p, policy, chunk_size=int(chunk_size), vote=vote)
        tokens, correct = tokens_and_correct(p, drawn, chosen)
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
                "vote": vote, "chunk_size": int(chunk_size)})
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


def prefix_best_of_n(pool: Pool) -> np.ndarray:
    """Best-of-N choice for every prefix length of every row of a pool.

    Args:
        pool: the completions.

    Returns:
        ``(Q, N)`` int64: column ``L - 1`` is the Best-of-N index among the first ``L``
        samples (:func:`~optscale_jax.selection.prefix_best_of_n_index`, the rule
        of :class:`~optscale_jax.policies.BestOfN`).
    """
    return prefix_best_of_n_index(pool.scores, pool.mask, pool.selectable)
