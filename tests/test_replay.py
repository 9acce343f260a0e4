"""The replay engine, bootstrap intervals, re-orderings, the Pareto frontier and sweeps."""

from __future__ import annotations

import numpy as np
import pytest
from test_policies import random_pool, ref_bon

from optscale_jax.policies import ASC, ESC, BestOfN, OptScale, SelfConsistency
from optscale_jax.pool import Pool
from optscale_jax.replay import (
    bootstrap_ci,
    pareto_frontier,
    prefix_best_of_n,
    replay,
    run_policy,
)
from optscale_jax.sweep import OFFICIAL_GRID, Grid


def test_replay_totals_by_hand() -> None:
    pool = Pool.from_arrays(
        [[0.2, 0.9, 0.5], [0.8, 0.1], [0.3]],
        tokens=[[10, 20, 30], [5, 7], [100]],
        correct=[[False, True, False], [False, True], [True]],
        answer_ids=[[0, 1, 0], [0, 1], [0]],
    )
    res = replay(pool, BestOfN(2), n_boot=0)
    assert res.n_drawn.tolist() == [2, 2, 1]
    assert res.tokens.tolist() == [30, 12, 100]
    assert res.chosen.tolist() == [1, 0, 0]
    assert res.correct.tolist() == [True, False, True]
    assert res.accuracy == pytest.approx(2 / 3)
    assert res.mean_tokens == pytest.approx(142 / 3)
    assert res.mean_samples == pytest.approx(5 / 3)
    assert res.summary()["pool"] == "custom"


def test_replay_labels_synthetic() -> None:
    pool = Pool.from_arrays([[0.5, 0.6]], dataset="math500", synthetic=True)
    res = replay(pool, BestOfN(1), n_boot=0)
    assert "synthetic" in res.label and res.synthetic
    assert res.summary()["synthetic"] is True


@pytest.mark.parametrize("seed", range(3))
def test_replay_matches_loop(seed: int) -> None:
    pool = random_pool(seed)
    res = replay(pool, BestOfN(5), n_boot=0)
    for i in range(pool.n_questions):
        d = min(5, int(pool.n_samples[i]))
        j = ref_bon(pool.scores[i, :d].tolist(), pool.answer_ids[i, :d].tolist())
        assert res.tokens[i] == pool.tokens[i, :d].sum()
        assert res.correct[i] == pool.correct[i, j]


def test_bootstrap_ci_matches_loop_and_properties() -> None:
    rng = np.random.default_rng(3)
    x = rng.random((40, 2))
    lo, hi = bootstrap_ci(x, n_boot=300, seed=7)
    # the same replicates, written as an explicit loop over resamples
    counts = np.random.default_rng(7).multinomial(40, np.full(40, 1 / 40), size=300)
    means = np.array([np.repeat(x, c, axis=0).mean(axis=0) for c in counts])
    np.testing.assert_allclose(lo, np.quantile(means, 0.025, axis=0), rtol=1e-12)
    np.testing.assert_allclose(hi, np.quantile(means, 0.975, axis=0), rtol=1e-12)
    assert (lo < x.mean(0)).all() and (x.mean(0) < hi).all()
    c_lo, c_hi = bootstrap_ci(np.full(10, 0.3), n_boot=50)
    assert c_lo == pytest.approx(0.3) and c_hi == pytest.approx(0.3)
    assert np.isnan(bootstrap_ci(x[:, 0], n_boot=0)[0])


def test_pareto_frontier_vs_brute_force() -> None:
    rng = np.random.default_rng(0)
    for _ in range(20):
        t = rng.integers(0, 10, 30).astype(float)
        a = rng.integers(0, 10, 30) / 10
        got = set(pareto_frontier(t, a).tolist())
        ref = set()
        for i in range(30):
            dominated = any(
                (t[j] <= t[i] and a[j] > a[i]) or (t[j] < t[i] and a[j] >= a[i]) for j in range(30)
            )
            first_dup = all(not (t[j] == t[i] and a[j] == a[i]) for j in range(i))
            if not dominated and first_dup:
                ref.add(i)
        assert got == ref


def test_permutations_average_over_orders() -> None:
    pool = random_pool(5, n_classes=2)
    res = replay(pool, ESC(12, window=3), n_perms=4, seed=11, n_boot=0)
    manual = [replay(p, ESC(12, window=3), n_boot=0) for p in pool.permuted(11, 4)]
    np.testing.assert_allclose(res.tokens, np.mean([m.tokens for m in manual], axis=0))
    assert res.accuracy == pytest.approx(np.mean([m.accuracy for m in manual]))
    # Best-of-all with distinct scores does not depend on the order
    rng = np.random.default_rng(0)
    s = rng.random((30, 6))
    p2 = Pool.from_arrays(s, answer_ids=np.zeros((30, 6), int), correct=s > 0.5, tokens=np.ones((30, 6), int))
    a = replay(p2, BestOfN(6), n_boot=0)
    b = replay(p2, BestOfN(6), n_perms=3, n_boot=0)
    assert a.accuracy == b.accuracy and a.mean_tokens == b.mean_tokens


def test_prefix_best_of_n_matches_policy() -> None:
    pool = random_pool(2)
    best = prefix_best_of_n(pool)
    for n in range(1, pool.n_max + 1):
        _, chosen, _ = run_policy(pool, BestOfN(n))
        np.testing.assert_array_equal(best[:, n - 1][pool.n_samples >= 1], chosen[pool.n_samples >= 1])


class _BadPolicy:
    name = "bad"
    n_max = 3

    def __init__(self, shape_ok=True):
        self.shape_ok = shape_ok

    def want(self, obs):
        return np.full(obs.mask.shape[0] + (0 if self.shape_ok else 1), 2)

    def select(self, obs):
        return np.full(obs.mask.shape[0], 2)


def test_engine_errors_name_policy_and_question() -> None:
    pool = Pool.from_arrays([[0.1, 0.2, 0.3]], question_ids=["q7"])
    with pytest.raises(ValueError, match="policy 'bad' selected sample 2 of question 'q7'"):
        run_policy(pool, _BadPolicy())
    with pytest.raises(ValueError, match=r"want\(\) returned shape"):
        run_policy(pool, _BadPolicy(shape_ok=False))
    with pytest.raises(ValueError, match="n_perms"):
        replay(pool, BestOfN(1), n_perms=-1)


def test_empty_rows_and_completions() -> None:
    pool = Pool.from_arrays(
        [[0.9, 0.4], []], answer_ids=[[0, 1], []], correct=[[False, True], []],
        empty=[[True, False], []], tokens=[[3, 4], []],
    )
    res = replay(pool, BestOfN(2), n_boot=0)
    assert res.chosen.tolist() == [1, -1]  # the empty completion is never chosen
    assert res.correct.tolist() == [True, False]
    assert res.tokens.tolist() == [7, 0]


def test_grid() -> None:
    assert OFFICIAL_GRID.size == 192
    assert OFFICIAL_GRID.alpha[-1] == pytest.approx(0.9)
    with pytest.raises(ValueError, match="s_min"):
        Grid((1.5,), (0.1,), (8,))
    with pytest.raises(ValueError, match="n_max"):
        Grid((0.9,), (0.1,), (0,))


def test_sweep_equals_replay_of_each_policy() -> None:
    from test_policies import score_pool

    from optscale_jax.policies import DSC, WeightedVote, gaussian_prior
    from optscale_jax.sweep import sweep

    pool = score_pool(4, q=30, n=12, min_len=2)  # the OptScale tests' shape: no new compile
    rng = np.random.default_rng(0)
    prior = gaussian_prior(rng.uniform(0.6, 0.95, 30), rng.uniform(0.05, 0.2, 30))
    grid = Grid(s_min=(0.9, 0.97), quantile=(0.02, 0.1), n_max=(8, 12))
    res = sweep(pool, grid=grid, modes=("oneshot", "sequential"), prior=prior, n_boot=50)
    assert res.meta["prior"].startswith("per-question")
    for rec in res.records:
        m = rec["method"]
        if m in ("OptScale0", "OptScaleT"):
            pol = OptScale(rec["n_max"], rec["s_min"], rec["alpha"], prior=prior if m == "OptScaleT" else None,
                           mode=rec["mode"])
        elif m in ("BoN", "SC", "WeightedSC"):
            pol = {"BoN": BestOfN, "SC": SelfConsistency, "WeightedSC": WeightedVote}[m](rec["N"])
        else:
            pol = {"ESC": ESC, "ASC": ASC, "DSC": DSC}[m](rec["n_max"])
        ref = replay(pool, pol, n_boot=0)
        key = (m, rec["mode"], rec["n_max"], rec["N"], rec["s_min"], rec["quantile"])
        assert rec["accuracy"] == pytest.approx(ref.accuracy, abs=1e-12), key
        assert rec["mean_tokens"] == pytest.approx(ref.mean_tokens, abs=1e-9), key
        assert rec["mean_samples"] == pytest.approx(ref.mean_samples, abs=1e-12), key
        lo, hi = rec["accuracy_ci"]
        assert lo <= rec["accuracy"] <= hi
    # the counts: fixed baselines at 1, 2, 4, 8, 12; 2 x 2 x 2 per OptScale variant and mode
    assert len(res.where(method="BoN")) == 5
    assert len(res.where(method="OptScale0", mode="sequential")) == 8
    front = res.frontier()
    toks = [r["mean_tokens"] for r in front]
    assert toks == sorted(toks)


def test_sweep_permutations_and_errors() -> None:
    from test_policies import score_pool

    from optscale_jax.sweep import sweep

    pool = score_pool(5, q=30, n=12)
    grid = Grid(s_min=(0.9,), quantile=(0.1,), n_max=(8,))
    res = sweep(pool, grid=grid, methods=("BoN", "ESC", "OptScale0"), n_perms=3, seed=2, n_boot=0)
    manual = [sweep(p, grid=grid, methods=("BoN", "ESC", "OptScale0"), n_boot=0) for p in pool.permuted(2, 3)]
    for i, rec in enumerate(res.records):
        assert rec["mean_tokens"] == pytest.approx(np.mean([m.records[i]["mean_tokens"] for m in manual]))
    with pytest.raises(ValueError, match="unknown method"):
        sweep(pool, methods=("Magic",))
    with pytest.raises(ValueError, match="unknown grid"):
        sweep(pool, grid="huge")
    with pytest.raises(ValueError, match="mode"):
        sweep(pool, modes=("greedy",))


def test_sweep_rejects_misaligned_prior() -> None:
    from test_policies import score_pool

    from optscale_jax.policies import gaussian_prior
    from optscale_jax.sweep import Grid, sweep

    pool = score_pool(5, q=30, n=12)
    grid = Grid(s_min=(0.9,), quantile=(0.05,), n_max=(8,))
    with pytest.raises(ValueError, match="prior field 'loc_mu' has shape \\(3,\\), the pool has 30"):
        sweep(pool, grid=grid, methods=("OptScaleT",), prior=gaussian_prior(np.full(3, 0.8), np.full(3, 0.1)))


def test_best_of_n_follows_the_authors_rule_on_empty_and_unanswered_samples() -> None:
    """An empty completion is never chosen (its score counts as 0); a non-empty sample
    without an extractable answer can win on score and then counts as wrong."""
    from optscale_jax.policies import BestOfN
    from optscale_jax.replay import prefix_best_of_n, replay

    pool = Pool.from_arrays(
        [[0.2, 0.9, 0.95], [0.3, 0.8, 0.1]],
        answer_ids=[[0, 0, -1], [0, -1, 0]],
        correct=[[True, True, False], [True, False, True]],
        empty=[[False, False, False], [False, True, False]],
    )
    res = replay(pool, BestOfN(3))
    assert res.chosen.tolist() == [2, 0]  # row 0: unanswered 0.95 wins; row 1: the empty one is skipped
    assert res.correct.tolist() == [False, True]
    assert prefix_best_of_n(pool)[:, -1].tolist() == [2, 0]
