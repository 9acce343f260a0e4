"""The budget policies (OptScaleBudget, UniformEliminate) in replay and in the live loop."""

from __future__ import annotations

import json

import numpy as np
import pytest
from test_online import QUESTIONS, ToyEngine, ToyPRM

from optscale_jax.engines.base import EngineError
from optscale_jax.grading import Grader
from optscale_jax.io import read_parquet
from optscale_jax.journal import read_allocations
from optscale_jax.online import run
from optscale_jax.policies import OptScaleBudget, UniformEliminate, make
from optscale_jax.replay import replay, run_policy
from optscale_jax.synthetic import synthetic_pool


@pytest.fixture(scope="module")
def pool():
    return synthetic_pool("math500", 8, 0).subset(np.arange(40))


def _uniform_eliminate_reference(pool, budget, n_max, s_min, explore, s_hop):
    """The rule written out one question at a time (fewest samples first, then index)."""
    q = pool.n_questions
    n = np.zeros(q, int)
    while True:
        spent = sum(pool.tokens[i, : n[i]].sum() for i in range(q))
        drawn_all = n.sum()
        mean_all = spent / drawn_all if drawn_all else 512.0
        act = []
        for i in range(q):
            best = pool.scores[i, : n[i]].max() if n[i] else -np.inf
            if best >= s_min or (n[i] >= explore and best < s_hop) or n[i] >= min(n_max, 8):
                continue
            act.append(i)
        act.sort(key=lambda i: (n[i], i))
        left, give = budget - spent, []
        for i in act:
            c = max((pool.tokens[i, : n[i]].sum() + max(mean_all, 1.0)) / (n[i] + 1), 1.0)
            if c > left:
                break
            left -= c
            give.append(i)
        if not give:
            return n
        n[give] += 1


def test_uniform_eliminate_matches_its_rule_written_out(pool) -> None:
    budget = 0.3 * pool.tokens.sum()
    pol = UniformEliminate(n_max=8, s_min=0.9, token_budget=budget, explore=3, s_hopeless=0.6)
    drawn, _, _ = run_policy(pool, pol)
    ref = _uniform_eliminate_reference(pool, budget, 8, 0.9, 3, 0.6)
    np.testing.assert_array_equal(drawn, ref)


def test_optscale_budget_in_replay_spends_at_most_one_wave_over(pool) -> None:
    budget = 0.25 * pool.tokens.sum()
    pol = make("OptScaleBudget", n_max=8, s_min=0.9, token_budget=budget, wave_size=10)
    res = replay(pool, pol, n_boot=0)
    spent = res.tokens.sum()
    assert spent <= budget + 10 * pool.tokens.max()  # one wave of at most 10 samples over
    assert spent >= 0.5 * budget  # it does spend the budget (the twin is not all solved)
    assert (res.n_drawn >= 1).all() and (res.n_drawn <= 8).all()
    # a question whose first sample reached s_min is solved: it never draws again
    solved_first = pool.scores[:, 0] >= 0.9
    assert (res.n_drawn[solved_first] == 1).all()
    # the unsolved ones got the rest
    assert res.n_drawn[~solved_first].mean() > 1.5
    with pytest.raises(ValueError, match="token_budget"):
        OptScaleBudget(n_max=8, token_budget=0)


def test_live_budget_run_logs_its_plan_and_resumes_it(tmp_path) -> None:
    """OptScaleBudget live: at most one wave over the budget, one allocation record per wave,
    the written pool replays to the same draws, and a run interrupted by an engine failure
    resumes with the same plan (its pool and allocations equal the uninterrupted run's)."""
    budget = 900
    make_pol = lambda: OptScaleBudget(n_max=6, s_min=0.9, token_budget=budget,  # noqa: E731
                                      wave_size=4, default_tokens=50.0)
    with Grader(workers=0) as g:
        full = run(QUESTIONS, ToyEngine(), ToyPRM(), make_pol(), out=tmp_path / "a", seed=1,
                   token_budget=budget, grader=g, dataset="toy")
        assert full.summary["tokens"] <= budget + 4 * 100  # ToyEngine: <= 100 tokens a sample
        plans = read_allocations(tmp_path / "a" / "samples.jsonl")
        assert sorted(plans) == list(range(full.summary["waves"]))
        assert all(sum(p) <= 4 for p in plans.values())
        pool_a = read_parquet(tmp_path / "a" / "pool.parquet")
        drawn, _, _ = run_policy(pool_a, make_pol())
        np.testing.assert_array_equal(drawn, pool_a.n_samples)

        with pytest.raises(EngineError):
            run(QUESTIONS, ToyEngine(fail_after=2), ToyPRM(), make_pol(), out=tmp_path / "b",
                seed=1, token_budget=budget, grader=g, dataset="toy")
        lines = (tmp_path / "b" / "samples.jsonl").read_text().splitlines()
        last = json.loads(lines[-1])
        assert last["kind"] == "allocation" and last["wave"] == 2  # logged before the draw
        res = run(QUESTIONS, ToyEngine(), ToyPRM(), make_pol(), out=tmp_path / "b", seed=1,
                  token_budget=budget, grader=g, dataset="toy")
    assert read_allocations(tmp_path / "b" / "samples.jsonl") == plans
    pool_b = read_parquet(tmp_path / "b" / "pool.parquet")
    np.testing.assert_array_equal(pool_b.n_samples, pool_a.n_samples)
    np.testing.assert_array_equal(pool_b.scores, pool_a.scores)
    assert res.summary["tokens"] == full.summary["tokens"]
