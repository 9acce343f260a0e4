"""Scale: chunked sweeps and replays equal unchunked ones, Parquet read by row group, and
fits / N* / the sweep sharded over two (forced host) devices equal one device.

Kept cheap (CI budget): one 24 x 8 pool, a 2-cell grid, one method per family (BoN, SC,
DSC, OptScaleT with a per-question prior); the tests share compiled shapes (24 and 12
rows), and the unchunked sweep is computed once for the module."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from optscale_jax.io import PoolFormatError, iter_parquet_chunks, read_parquet, write_parquet
from optscale_jax.model import gaussian_prior
from optscale_jax.policies import DSC, OptScale, SelfConsistency
from optscale_jax.replay import replay
from optscale_jax.sweep import Grid, sweep
from optscale_jax.synthetic import synthetic_pool

ROOT = Path(__file__).resolve().parents[1]
GRID = Grid(s_min=(0.9, 0.97), quantile=(0.1,), n_max=(8,))  # 2 cells
METHODS = ("BoN", "SC", "DSC", "OptScaleT")  # one per family; DSC runs on the whole pool


@pytest.fixture(scope="module")
def pool():
    return synthetic_pool("math500", n_samples=8, seed=3, n_questions=24)


@pytest.fixture(scope="module")
def prior(pool):
    rng = np.random.default_rng(0)
    q = pool.n_questions
    return gaussian_prior(rng.uniform(0.5, 0.9, q), rng.uniform(0.05, 0.2, q))


def _sweep(pool, chunk_size, prior, **kw):
    kw = {"methods": METHODS, "modes": ("oneshot", "sequential"), **kw}
    return sweep(pool, grid=GRID, n_boot=40, seed=1, chunk_size=chunk_size, prior=prior, **kw)


@pytest.fixture(scope="module")
def whole(pool, prior):
    """The unchunked sweep on one device (compared with the chunked and the sharded ones)."""
    return _sweep(pool, None, prior)


def test_chunked_sweep_equals_unchunked(pool, prior, whole):
    chunked = _sweep(pool, 12, prior)  # two chunks; the per-question prior is cut with them
    assert chunked.meta["chunk_size"] == 12 and whole.meta["chunk_size"] >= pool.n_questions
    assert len(whole.records) == len(chunked.records) > 0
    assert {r["method"] for r in whole.records} == set(METHODS)
    assert {r["mode"] for r in whole.records if r["method"] == "OptScaleT"} == {"oneshot", "sequential"}
    for a, b in zip(whole.records, chunked.records, strict=True):
        assert a == b  # configuration, totals and bootstrap intervals, exactly
    # the prior really is per question: a constant prior gives other OptScaleT records
    flat = _sweep(pool, None, None, methods=("OptScaleT",), modes=("oneshot",))
    assert [r for r in whole.records if r["method"] == "OptScaleT" and r["mode"] == "oneshot"] \
        != flat.records


def test_chunked_sweep_with_orderings(pool):
    kw = {"methods": ("BoN", "SC", "ESC", "ASC"), "n_perms": 2}
    assert _sweep(pool, None, None, **kw).records == _sweep(pool, 5, None, **kw).records  # last: 4


def test_cli_chunk_size(pool, tmp_path):
    """``optscale replay --chunk-size``: same results as one chunk, recorded; bad value: exit 2."""
    import typer
    from typer.testing import CliRunner

    from optscale_jax.commands.replay import register

    app = typer.Typer()
    app.callback()(lambda: None)  # a group, so "replay" is a subcommand
    register(app)
    path = write_parquet(pool, tmp_path / "pool.parquet")
    grid = "s_min=0.9;quantile=0.1;n_max=8"
    results = []
    for size in ("7", "4096"):
        out = tmp_path / f"out{size}"
        r = CliRunner().invoke(app, ["replay", str(path), "-p", "BoN,SC", "--grid", grid, "--n-boot", "20",
                                     "--no-progress", "--chunk-size", size, "--out", str(out)])
        assert r.exit_code == 0, r.output
        data = json.loads((out / "results.json").read_text())
        assert data["meta"]["chunk_size"] == int(size)
        results.append(data["records"])
    assert results[0] == results[1] and len(results[0]) > 0
    r = CliRunner().invoke(app, ["replay", str(path), "-p", "BoN", "--chunk-size", "0", "--out",
                                 str(tmp_path / "bad")])
    assert r.exit_code == 2 and "chunk-size" in r.output and "Traceback" not in r.output


def test_chunked_replay_equals_unchunked(pool, prior):
    policies = [
        SelfConsistency(8),
        OptScale(n_max=8, s_min=0.95, alpha=0.9, mode="sequential", prior=prior),  # per-question prior
        DSC(8),  # ranks every question: run on the whole pool
    ]
    for policy in policies:
        a = replay(pool, policy, n_boot=30, chunk_size=None)
        b = replay(pool, policy, n_boot=30, chunk_size=12)
        for name in ("n_drawn", "tokens", "chosen", "correct"):
            np.testing.assert_array_equal(getattr(a, name), getattr(b, name), err_msg=f"{policy.name} {name}")
        assert (a.accuracy, a.mean_tokens, a.ci) == (b.accuracy, b.mean_tokens, b.ci)
    with pytest.raises(ValueError, match="chunk_size"):
        replay(pool, policies[0], chunk_size=0)
    with pytest.raises(ValueError, match="chunk_size"):
        sweep(pool, chunk_size=-1)


def test_policies_that_couple_questions_are_never_chunked(pool):
    """OptScaleH fits one population law on all questions: a chunk must not get its own law."""
    from optscale_jax.policies.registry import REGISTRY, make

    assert {n for n, m in REGISTRY.items() if m.couples_questions} == {
        "DSC", "OptScaleH", "OptScaleBudget", "UniformEliminate"}
    policy = make("OptScaleH", n_max=8, s_min=0.95, alpha=0.9, mode="oneshot",
                  n_questions=pool.n_questions)
    a = replay(pool, policy, n_boot=0, chunk_size=None)
    b = replay(pool, policy, n_boot=0, chunk_size=7)
    for name in ("n_drawn", "chosen"):
        np.testing.assert_array_equal(getattr(a, name), getattr(b, name), err_msg=name)


def test_parquet_read_by_row_group(pool, tmp_path):
    import pyarrow.parquet as pq

    path = write_parquet(pool, tmp_path / "p.parquet", row_group_size=5)
    assert pq.ParquetFile(path).metadata.num_row_groups == 5  # 24 questions, 5 a group
    whole = read_parquet(path)
    assert whole.equals(pool)
    for size in (5, 7, 100):
        chunks = list(iter_parquet_chunks(path, size))
        assert [c.n_questions for c in chunks][:-1] == [size] * (len(chunks) - 1)
        start = 0
        for c in chunks:
            assert c.equals(pool.subset(np.arange(start, start + c.n_questions)))
            start += c.n_questions
        assert start == pool.n_questions
    with pytest.raises(ValueError, match="questions_per_chunk"):
        next(iter_parquet_chunks(path, 0))


def test_parquet_chunks_name_the_file_row(pool, tmp_path):
    """A duplicate id in a later row group is reported with its row number in the file."""
    dup = pool.replace(question_ids=[*pool.question_ids[:-1], pool.question_ids[0]])
    path = write_parquet(dup, tmp_path / "dup.parquet", row_group_size=5)
    with pytest.raises(PoolFormatError, match=r"row 23.*question_id.*also row 0"):
        list(iter_parquet_chunks(path, 5))


_SHARDED = textwrap.dedent(
    """
    import json, sys
    import jax
    jax.config.update("jax_enable_x64", True)
    import numpy as np
    from optscale_jax.fit import fit_prefixes
    from optscale_jax.model import gaussian_prior
    from optscale_jax.nstar import n_star_for_fits
    from optscale_jax.sharding import fit_prefixes_sharded, n_star_sharded, question_mesh
    from optscale_jax.sweep import Grid, sweep
    from optscale_jax.synthetic import synthetic_pool

    assert len(jax.devices()) == 2, jax.devices()
    pool = synthetic_pool("math500", n_samples=8, seed=3, n_questions=24)  # the test's pool
    rng = np.random.default_rng(0)
    prior = gaussian_prior(rng.uniform(0.5, 0.9, 24), rng.uniform(0.05, 0.2, 24))  # the test's prior
    odd = pool.subset(np.arange(23))  # 23 rows: padded to 24, 12 a device
    odd_prior = type(prior)(*(np.asarray(f)[:23] for f in prior))  # per-question: padded too
    out = {"devices": len(question_mesh().devices.flat)}
    a = fit_prefixes(odd.scores, odd.mask, odd_prior, lengths=[1, 3, 8])
    b = fit_prefixes_sharded(odd.scores, odd.mask, odd_prior, lengths=[1, 3, 8])
    out["n_shards"] = len(b.mu.sharding.device_set)
    for f in ("mu", "sigma", "log_prob"):
        x, y = np.asarray(getattr(a, f)), np.asarray(getattr(b, f))
        out[f] = bool(x.shape == y.shape and np.allclose(x, y, rtol=1e-6, atol=0, equal_nan=True))
    for f in ("status", "n"):
        out[f] = bool(np.array_equal(getattr(a, f), getattr(b, f)))
    mu, sg = np.asarray(a.mu)[:, :, None, None], np.asarray(a.sigma)[:, :, None, None]
    s = np.array([0.85, 0.9, 0.99])[:, None]
    al = np.array([0.9, 0.95, 0.99])
    plain = n_star_for_fits(mu, sg, s, al, n_max=64)
    out["nstar"] = bool(np.array_equal(plain, n_star_sharded(mu, sg, s, al, n_max=64)))
    one = question_mesh(jax.devices()[:1])
    out["nstar_one"] = bool(np.array_equal(plain, n_star_sharded(mu, sg, s, al, n_max=64, mesh=one)))
    grid = Grid(s_min=(0.9, 0.97), quantile=(0.1,), n_max=(8,))  # the test's GRID
    res = sweep(pool, grid=grid, methods=("OptScaleT",), modes=("sequential",), n_boot=40, seed=1,
                prior=prior)  # the sharded path (one method, one mode: the other records are not sharded)
    out["records"] = res.records
    json.dump(out, sys.stdout)
    """
)


def test_sharded_equals_one_device(whole):
    """Two forced host devices (a subprocess: the flag must precede JAX's start): the
    sharded fits (odd row count: padded) and N* equal the plain ones, and the sweep's
    records equal the one-device sweep's."""
    env = dict(os.environ)
    env["XLA_FLAGS"] = (env.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=2").strip()
    env["JAX_PLATFORMS"] = "cpu"
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")])
    proc = subprocess.run([sys.executable, "-c", _SHARDED], env=env, capture_output=True, text=True,
                          timeout=600, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert out.pop("devices") == 2 and out.pop("n_shards") == 2
    records = out.pop("records")
    assert all(out.values()), {k: v for k, v in out.items() if not v}
    # one bootstrap resamples the same questions for every record: a subset compares equal
    plain = [r for r in whole.records if r["method"] == "OptScaleT" and r["mode"] == "sequential"]
    assert len(plain) == len(records) == GRID.size
    assert json.loads(json.dumps(plain)) == records
