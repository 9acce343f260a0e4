"""The ``optscale replay`` command end to end (through a local Typer app)."""

from __future__ import annotations

import csv
import json

import pytest
import typer
from test_policies import score_pool
from typer.testing import CliRunner

from optscale_jax.commands.replay import register
from optscale_jax.io import write_parquet

runner = CliRunner()


def flat(text: str) -> str:
    """Output with rich's box drawing and line wrapping removed."""
    return " ".join(text.replace("│", " ").split())


def make_app() -> typer.Typer:
    app = typer.Typer()

    @app.callback()
    def main() -> None:
        """optscale (test harness)."""

    register(app)
    return app


SMALL_GRID = "s_min=0.9,0.95;quantile=0.05,0.1;n_max=8,12"


@pytest.fixture()
def pool_file(tmp_path):
    pool = score_pool(4, q=30, n=12, min_len=2)
    pool = pool.replace(dataset="toy")
    return write_parquet(pool, tmp_path / "pool.parquet"), pool


def test_replay_on_a_pool_file(tmp_path, pool_file) -> None:
    path, pool = pool_file
    out = tmp_path / "out"
    r = runner.invoke(make_app(), ["replay", str(path), "--grid", SMALL_GRID, "--out", str(out),
                                   "--n-boot", "50", "--no-progress", "--mode", "both", "--step", "2"])
    assert r.exit_code == 0, r.output
    for name in ("table1.md", "table1.csv", "table1.tex", "frontier.png", "results.json"):
        assert (out / name).stat().st_size > 0
    data = json.loads((out / "results.json").read_text())
    assert data["pool"] == "toy" and data["synthetic"] is False
    assert len([x for x in data["records"] if x["method"] == "OptScale0"]) == 16  # 2 x 2 x 2 n_max x 2 modes
    assert data["meta"]["step"] == 2
    rows = [row for row in csv.reader((out / "table1.csv").open()) if row and row[0]]
    assert any(row[0] == "Early-stopping SC (ESC) ($N=8$)" for row in rows)
    assert "BoN" in r.output and "ESC" in r.output and "toy" in r.output


def test_replay_with_prior_list_and_policy_subset(tmp_path, pool_file) -> None:
    path, pool = pool_file
    prior = tmp_path / "prior.json"
    prior.write_text(json.dumps([[0.8, 0.1]] * pool.n_questions))
    out = tmp_path / "o"
    r = runner.invoke(make_app(), ["replay", str(path), "-p", "BoN,OptScaleT", "--prior", str(prior),
                                   "--grid", "s_min=0.9;quantile=0.1;n_max=8", "--out", str(out),
                                   "--n-boot", "0", "--no-progress"])
    assert r.exit_code == 0, r.output
    data = json.loads((out / "results.json").read_text())
    assert {x["method"] for x in data["records"]} == {"BoN", "OptScaleT"}
    assert data["meta"]["prior"].startswith("per-question")


@pytest.mark.parametrize(
    "args,message",
    [
        (["-p", "Magic"], "unknown policy 'Magic'"),
        (["--grid", "s_min=abc"], "are not all numbers"),
        (["--grid", "speed=1"], "unknown grid key 'speed'"),
        (["--mode", "greedy"], "unknown mode"),
        (["--nstar", "exact"], "unknown N* rule"),
    ],
)
def test_bad_options_are_named(tmp_path, pool_file, args, message) -> None:
    path, _ = pool_file
    r = runner.invoke(make_app(), ["replay", str(path), "--out", str(tmp_path / "x"), "--no-progress", *args])
    assert r.exit_code == 2
    assert message in flat(r.output)


def test_bad_files_are_named(tmp_path, pool_file) -> None:
    path, _ = pool_file
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"problem": "x", "scores": "oops"}\n')
    r = runner.invoke(make_app(), ["replay", str(bad), "--out", str(tmp_path / "x"), "--no-progress"])
    assert r.exit_code == 2 and "bad.jsonl" in flat(r.output)
    r = runner.invoke(make_app(), ["replay", str(tmp_path / "missing.parquet"), "--no-progress"])
    assert r.exit_code == 2 and "no such file" in flat(r.output)
    prior = tmp_path / "p.json"
    prior.write_text(json.dumps([[0.8, 0.1]] * 3))
    r = runner.invoke(make_app(), ["replay", str(path), "-p", "OptScaleT", "--prior", str(prior),
                                   "--out", str(tmp_path / "x"), "--no-progress"])
    assert r.exit_code == 2 and "3 [mu, sigma] records, the pool has 30" in flat(r.output)


@pytest.mark.slow
def test_default_synthetic_pool_official_grid(tmp_path) -> None:
    out = tmp_path / "default"
    r = runner.invoke(make_app(), ["replay", "--out", str(out), "--n-boot", "100", "--no-progress"])
    assert r.exit_code == 0, r.output
    assert "SYNTHETIC" in r.output
    for name in ("table1.md", "table1.csv", "table1.tex", "results.json"):
        assert "synthetic" in (out / name).read_text().lower(), name
    data = json.loads((out / "results.json").read_text())
    assert data["synthetic"] is True and data["n_questions"] == 500
    assert len([x for x in data["records"] if x["method"] == "OptScale0"]) == 192
    acc = {(x["method"], x["N"]): x["accuracy"] for x in data["records"] if x["method"] == "BoN"}
    assert 0.8 < acc[("BoN", 1)] < acc[("BoN", 8)] <= 1.0


def test_real_search_and_learn_pool_is_graded_and_replayed(tmp_path, shared_data) -> None:
    src = shared_data / "pools" / "search_and_learn_llama32_3b_math500_10x4.jsonl"
    out = tmp_path / "real"
    r = runner.invoke(make_app(), ["replay", str(src), "--grid", "s_min=0.9;quantile=0.1;n_max=4",
                                   "--out", str(out), "--n-boot", "100", "--no-progress"])
    assert r.exit_code == 0, r.output
    assert "grading" in r.output
    data = json.loads((out / "results.json").read_text())
    assert data["synthetic"] is False and data["n_questions"] == 10
    bon = {x["N"]: x for x in data["records"] if x["method"] == "BoN"}
    # 4 tokens counts summed over the drawn prefix: Best-of-4 pays every sample of the pool
    from optscale_jax.io import read_pool

    pool = read_pool(src)
    assert bon[4]["mean_tokens"] == pytest.approx(pool.tokens.sum() / 10)
    assert bon[4]["mean_samples"] == 4.0
    assert 0.0 < bon[4]["accuracy"] <= 1.0


def test_the_optscale_command_computes_in_float64(tmp_path) -> None:
    """The console command turns on float64 (the authors' numpy precision): its
    OptScale records equal an in-process float64 sweep of the same pool exactly. (In
    float32, N* moves by one sample on some questions of this grid: the test fails
    with JAX_ENABLE_X64=0.)"""
    import os
    import subprocess
    import sys

    from optscale_jax.sweep import Grid, sweep
    from optscale_jax.synthetic import synthetic_pool

    spec = "s_min=0.95,0.96;quantile=0.01,0.035;n_max=8,32"
    env = {k: v for k, v in os.environ.items() if k != "JAX_ENABLE_X64"}
    out = tmp_path / "cli"
    proc = subprocess.run(
        [sys.executable, "-m", "optscale_jax.cli", "replay", "--policy", "OptScale0", "--grid", spec,
         "--n-boot", "0", "--no-progress", "--out", str(out)],
        env=env, capture_output=True, text=True, timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    cli = [r for r in json.loads((out / "results.json").read_text())["records"]
           if r["method"] == "OptScale0"]
    grid = Grid(s_min=(0.95, 0.96), quantile=(0.01, 0.035), n_max=(8, 32))
    pool = synthetic_pool(dataset="math500", n_samples=64, seed=0)
    api = sweep(pool, grid=grid, methods=("OptScale0",), n_boot=0).records
    assert len(cli) == len(api) > 0
    for a, b in zip(cli, api, strict=True):
        assert (a["s_min"], a["quantile"], a["n_max"]) == (b["s_min"], b["quantile"], b["n_max"])
        assert a["mean_samples"] == b["mean_samples"] and a["accuracy"] == b["accuracy"]
