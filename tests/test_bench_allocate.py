"""Accuracy at a token budget: the sweep's budget step, the report section, the benchmark's
matched-token selection (each against a brute-force loop or a direct replay)."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest
from test_cli_replay import make_app, runner
from test_policies import score_pool

from optscale_jax.io import write_parquet
from optscale_jax.model import GaussianPrior
from optscale_jax.policies import Observed, make
from optscale_jax.policies.registry import DEFAULT_METHODS, REGISTRY
from optscale_jax.replay import replay
from optscale_jax.report import budget_rows
from optscale_jax.sweep import BUDGET_FRACTIONS, Grid, SweepResult, sweep

REPO = Path(__file__).resolve().parents[1]


def _bench():
    spec = importlib.util.spec_from_file_location("bench_allocate", REPO / "benchmarks" / "bench_allocate.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@pytest.fixture(scope="module")
def pool():
    return score_pool(4, q=30, n=8, min_len=2).replace(dataset="toy")


def test_replay_cli_gives_budget_rows_equal_to_direct_replays(tmp_path, pool) -> None:
    path = write_parquet(pool, tmp_path / "pool.parquet")
    out = tmp_path / "out"
    r = runner.invoke(make_app(), ["replay", str(path), "--policy", "OptScaleBudget", "--policy", "BoN",
                                   "--policy", "UniformEliminate", "--grid",
                                   "s_min=0.9,0.96;quantile=0.1;n_max=4,8", "--out", str(out),
                                   "--n-boot", "20", "--no-progress"])
    assert r.exit_code == 0, r.output
    data = json.loads((out / "results.json").read_text())
    full = float(pool.tokens[pool.mask].sum())  # Best-of-N at n_max 8 = every sample here
    for name in ("OptScaleBudget", "UniformEliminate"):
        recs = [x for x in data["records"] if x["method"] == name]
        assert [x["token_budget"] for x in recs] == pytest.approx([f * full for f in BUDGET_FRACTIONS])
        for x in recs:  # s_min: the grid's value nearest 0.95; n_max: the largest
            assert x["s_min"] == 0.96 and x["n_max"] == 8
            ref = replay(pool, make(name, n_max=8, s_min=0.96, token_budget=x["token_budget"]), n_boot=0)
            assert x["accuracy"] == pytest.approx(ref.accuracy)
            assert x["mean_tokens"] == pytest.approx(ref.mean_tokens)
    assert all(x.get("token_budget") is None for x in data["records"] if x["method"] == "BoN")
    assert "Accuracy at a token budget" in (out / "table1.md").read_text()
    assert {row["method"] for row in data["accuracy_at_budget"]} == {"OptScaleBudget", "UniformEliminate", "BoN"}
    assert all(row["method"] == "BoN" for row in data["table1"])  # budget methods: their own section


def test_budget_methods_are_opt_in_and_never_chunked(pool) -> None:
    assert "OptScaleBudget" not in DEFAULT_METHODS and "UniformEliminate" not in DEFAULT_METHODS
    grid = Grid(s_min=(0.95,), quantile=(0.1,), n_max=(8,))
    kw = dict(grid=grid, methods=("BoN", "OptScaleBudget"), n_boot=20)
    assert sweep(pool, chunk_size=7, **kw).records == sweep(pool, **kw).records


def test_optscale_budget_reads_a_given_prior(pool) -> None:
    """--prior reaches OptScaleBudget (registry uses_prior): its lattice is centred on it."""
    assert REGISTRY["OptScaleBudget"].uses_prior and not REGISTRY["UniformEliminate"].uses_prior
    q = pool.n_questions
    prior = GaussianPrior(np.full(q, 0.3), np.full(q, 0.05), np.full(q, 0.2), np.full(q, 0.05))
    pol = make("OptScaleBudget", n_max=8, prior=prior, token_budget=1e5)
    assert pol.prior is prior
    nothing = Observed(scores=np.zeros((q, 8)), mask=np.zeros((q, 8), bool),
                       answer_ids=np.full((q, 8), -1, np.int32), tokens=np.zeros((q, 8), np.int64))
    mu, _, _ = pol.posterior_grid(nothing)
    np.testing.assert_allclose(mu.mean(axis=1), 0.3, atol=1e-9)  # symmetric lattice around loc_mu


def _result(records, q=10):
    return SweepResult(label="toy", synthetic=False, n_questions=q, records=records)


def test_budget_rows_read_each_method_at_the_budget_brute_force() -> None:
    rng = np.random.default_rng(3)
    recs = []
    for m in ("BoN", "ESC", "OptScale0"):
        for i in range(12):
            recs.append({"method": m, "n_max": 8, "N": i, "accuracy": float(rng.uniform()),
                         "mean_tokens": float(rng.uniform(100, 1000)), "mean_samples": 1.0,
                         "accuracy_ci": [0.0, 1.0]})
    for b in (3000.0, 6000.0):
        recs.append({"method": "OptScaleBudget", "n_max": 8, "s_min": 0.95, "token_budget": b,
                     "accuracy": 0.5, "mean_tokens": b / 10, "mean_samples": 1.0, "accuracy_ci": [0, 1]})
    rows = budget_rows(_result(recs))
    for per_q in (300.0, 600.0):
        got = {r["method"]: r for r in rows if r["budget"] == pytest.approx(per_q)}
        assert got["OptScaleBudget"]["tokens"] == per_q
        for m in ("BoN", "ESC", "OptScale0"):
            best = None
            for r in recs:  # brute force: every record of m within the budget
                if r["method"] == m and r["mean_tokens"] <= per_q and (
                        best is None or (r["accuracy"], -r["mean_tokens"]) > (best["accuracy"], -best["mean_tokens"])):
                    best = r
            if best is None:
                assert m not in got
            else:
                assert got[m]["accuracy"] == pytest.approx(100 * best["accuracy"])
                assert got[m]["tokens"] == best["mean_tokens"]
    assert budget_rows(_result([r for r in recs if "token_budget" not in r])) == []


def test_bench_matched_curves_choose_on_select_and_report_the_same_configuration() -> None:
    bench = _bench()
    rng = np.random.default_rng(0)

    def records(seed_shift):
        out = []
        for m, mode in (("BoN", None), ("OptScale0", "oneshot"), ("OptScale0", "sequential")):
            for n in (2, 4, 8):
                for j, s in enumerate((0.9, 0.95)):  # (k: BoN's two configurations differ too)
                    out.append({"method": m, "mode": mode, "n_max": n, "s_min": s, "k": j,
                                "accuracy": float(rng.uniform()),
                                "mean_tokens": float(n * 100 + rng.uniform(-30, 30) + seed_shift)})
        return out

    select, report = records(0), records(5)
    budgets = [150.0, 420.0, 900.0, 50.0]
    got = bench.matched_curves(select, report, budgets)
    assert set(got) == {"BoN", "OptScale0", "OptScale0 seq."}
    for curve, pairs in got.items():
        for b, (chosen, rep) in zip(budgets, pairs, strict=True):
            cands = [(r["accuracy"], -r["mean_tokens"], i) for i, r in enumerate(select)
                     if bench.curve_name(r) == curve and r["mean_tokens"] <= b]
            if not cands:
                assert chosen is None and rep is None
                continue
            i = max(cands)[2]
            assert chosen is select[i] and rep is report[i]  # same position = same configuration
