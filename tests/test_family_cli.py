"""Score families in the sweep, ``optscale replay --family`` and ``optscale run --family``."""

from __future__ import annotations

import json

import numpy as np
import pytest
import typer
from test_online import ToyEngine, ToyPRM
from test_policies import score_pool
from typer.testing import CliRunner

import optscale_jax.families as fam
from optscale_jax.fit import fit_status_usable
from optscale_jax.io import read_parquet, write_parquet
from optscale_jax.policies import OptScale
from optscale_jax.policies.optscale import checkpoints
from optscale_jax.replay import replay
from optscale_jax.sweep import Grid, Outcomes, sweep

runner = CliRunner()
GRID = "s_min=0.9,0.95;quantile=0.05,0.2;n_max=6,12"


def _app(register) -> typer.Typer:
    app = typer.Typer()

    @app.callback()
    def main() -> None:
        """optscale (test harness)."""

    register(app)
    return app


@pytest.fixture(scope="module")
def pool():
    return score_pool(7, q=24, n=12, min_len=2).replace(dataset="toy")


def test_replay_family_beta_rows_follow_n_star_family(tmp_path, pool) -> None:
    """`--family beta` rows: samples drawn = what N* of `n_star_family` on the prefix fits says."""
    from optscale_jax.commands.replay import register

    path = write_parquet(pool, tmp_path / "pool.parquet")
    out = tmp_path / "out"
    r = runner.invoke(_app(register), ["replay", str(path), "-p", "OptScale0", "--family", "beta",
                                       "--grid", GRID, "--mode", "both", "--n-boot", "0",
                                       "--out", str(out), "--no-progress"])
    assert r.exit_code == 0, r.output
    assert "[beta]" in r.output
    data = json.loads((out / "results.json").read_text())
    assert data["meta"]["families"] == ["beta"]
    recs = [x for x in data["records"] if x["method"] == "OptScale0"]
    assert recs and all(x["family"] == "beta" for x in recs)
    assert {x["mode"] for x in recs} == {"oneshot", "sequential"}
    assert all(row["family"] == "beta" for row in data["table1"] if row["method"] == "OptScale0")

    # the reference: the family's own fit on each prefix, N* through its CDF, the rule by hand
    beta = fam.get("beta")
    avail = pool.n_samples
    cols = np.arange(pool.n_max)[None, :]
    out_n = Outcomes(pool)
    seq_fits: dict[int, tuple[np.ndarray, np.ndarray]] = {}
    for rec in recs:
        n_max, s, a = rec["n_max"], rec["s_min"], rec["alpha"]
        if rec["mode"] == "oneshot":
            k = rec["k"]
            f = beta.fit(pool.scores, pool.mask & (cols < k))
            ns = np.asarray(fam.n_star_family(beta, f.params, s, a, n_max=n_max))
            drawn = np.minimum(np.minimum(np.maximum(ns, k), n_max), avail)
        else:
            drawn = np.minimum(avail, n_max).copy()
            done = np.zeros(pool.n_questions, bool)
            for n in range(2, min(n_max, pool.n_max) + 1):  # MLE: first fit at 2 samples
                if n not in seq_fits:
                    f = beta.fit(pool.scores, pool.mask & (cols < n))
                    seq_fits[n] = (f.params, np.asarray(f.status))
                params, status = seq_fits[n]
                ns = np.asarray(fam.n_star_family(beta, params, s, a, n_max=n_max))
                ok = fit_status_usable(status)
                stop = ~done & ok & (n >= ns) & (n <= avail)
                drawn[stop] = n
                done |= stop
        assert rec["mean_samples"] == pytest.approx(drawn.mean(), abs=1e-12), rec
        correct, tokens, _ = out_n.best_of_n(drawn)
        assert rec["accuracy"] == pytest.approx(correct.mean(), abs=1e-12)
        assert rec["mean_tokens"] == pytest.approx(tokens.mean(), rel=1e-12)


def test_sweep_families_keep_truncnorm_and_equal_the_policy(pool) -> None:
    """Adding families leaves the truncnorm records unchanged; a family's records equal
    replaying :class:`OptScale` with that family (the policy's own round-by-round loop)."""
    grid = Grid(s_min=(0.9,), quantile=(0.1,), n_max=(8,))
    base = sweep(pool, grid=grid, methods=["OptScale0"], n_boot=0)
    both = sweep(pool, grid=grid, methods=["OptScale0"], n_boot=0, families="truncnorm,logitnormal")
    assert "family" not in base.records[0] and base.meta["families"] == ["truncnorm"]
    tn = [dict(r) for r in both.records if r["family"] == "truncnorm"]
    for r in tn:
        r.pop("family")
    assert json.dumps(tn) == json.dumps(base.records)  # byte-identical numbers
    (ln,) = [r for r in both.records if r["family"] == "logitnormal"]
    pol = OptScale(n_max=8, s_min=0.9, alpha=0.9, family="logitnormal")
    rep = replay(pool, pol, n_boot=0)
    assert ln["mean_samples"] == pytest.approx(rep.mean_samples, abs=1e-12)
    assert ln["accuracy"] == pytest.approx(rep.accuracy, abs=1e-12)
    assert ln["k"] == int(checkpoints(8, mode="oneshot")[0])


@pytest.mark.parametrize(("args", "message"), [
    (["--family", "gamma"], "unknown score family 'gamma'; known:"),
    (["-p", "BoN", "--family", "beta"], "no chosen policy has a score family"),
    (["-p", "OptScale0", "--family", "beta", "--nstar", "official"], "exists only for the truncnorm"),
])
def test_replay_bad_family_options_are_named(tmp_path, pool, args, message) -> None:
    from optscale_jax.commands.replay import register

    path = write_parquet(pool, tmp_path / "pool.parquet")
    r = runner.invoke(_app(register), ["replay", str(path), "--out", str(tmp_path / "x"), "--no-progress",
                                       *args])
    assert r.exit_code == 2
    assert message in " ".join(r.output.replace("│", " ").split())
    assert "Traceback" not in r.output


def test_sweep_skips_optscale_t_under_a_family_without_a_gaussian_prior(pool) -> None:
    grid = Grid(s_min=(0.9,), quantile=(0.1,), n_max=(4,))
    with pytest.warns(UserWarning, match="skipping OptScaleT under mixture"):
        res = sweep(pool.subset(np.arange(6)), grid=grid, methods=["OptScaleT"], n_boot=0,
                    families=["beta", "mixture"])
    assert {r["family"] for r in res.records} == {"beta"}
    assert res.meta["skipped"] == ["OptScaleT under mixture: the family takes no (mean, std) prior"]


# --- optscale run --family ----------------------------------------------------------------

def _spec():
    from optscale_jax.commands.run import engine_spec

    return engine_spec("openai", "m", "p")


class _Engine(ToyEngine):
    def describe(self):
        return _spec()[0]


class _PRM(ToyPRM):
    def describe(self):
        return _spec()[1]


def test_run_family_reaches_policy_and_header_and_a_changed_family_is_refused(tmp_path, monkeypatch) -> None:
    from optscale_jax.commands import run as run_cmd

    monkeypatch.setattr(run_cmd, "make_engines", lambda *a, **k: (_Engine(), _PRM()))
    bench = tmp_path / "bench.json"
    bench.write_text(json.dumps([{"problem": f"What is {i} - {i} + 1?", "answer": "1", "unique_id": f"t{i}"}
                                 for i in range(5)]))
    out = tmp_path / "run"
    args = ["run", "--engine", "openai", "--model", "m", "--prm", "p", "--dataset", str(bench),
            "--policy", "OptScale0", "--n-max", "6", "--s-min", "0.9", "--quantile", "0.1",
            "--out", str(out), "--no-progress"]
    app = _app(run_cmd.register)
    r = runner.invoke(app, [*args, "--family", "beta"])
    assert r.exit_code == 0, r.output
    assert "OptScale0-oneshot-beta on bench" in " ".join(r.output.split())
    header = json.loads((out / "samples.jsonl").read_text().splitlines()[0])
    assert header["policy"]["family"] == "beta"
    # the live decisions are the beta policy's: replaying the written pool reproduces them
    pool = read_parquet(out / "pool.parquet")
    pol = OptScale(n_max=6, s_min=0.9, alpha=0.9, family="beta")
    assert replay(pool, pol, n_boot=0).mean_samples == pytest.approx(pool.n_samples.mean())
    again = runner.invoke(app, [*args, "--family", "beta"])  # the same settings resume
    assert again.exit_code == 0, again.output
    other = runner.invoke(app, [*args, "--family", "logitnormal"])
    text = " ".join(other.output.split())
    assert other.exit_code == 2, other.output
    assert "policy.family was \"beta\", now \"logitnormal\" (--family)" in text
    bad = runner.invoke(app, [*args, "--family", "gamma"])
    assert bad.exit_code == 2 and "unknown score family 'gamma'" in " ".join(bad.output.split())
    no_prior = runner.invoke(app, [*args[:-3], "--policy", "OptScaleT", "--family", "mixture",
                                   "--out", str(tmp_path / "r2"), "--no-progress"])
    assert no_prior.exit_code == 2 and "takes no (mean, std) prior" in " ".join(no_prior.output.split())
