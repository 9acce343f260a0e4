"""Scale: chunked sweeps and replays equal unchunked ones, Parquet read by row group, and
fits / N* / the sweep sharded over two (forced host) devices equal one device."""

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
GRID = Grid(s_min=(0.9, 0.97), quantile=(0.05, 0.1), n_max=(4, 8))


@pytest.fixture(scope="module")
def pool():
    return synthetic_pool("math500", n_samples=8, seed=3, n_questions=24)


def _sweep(pool, chunk_size, **kw):
    return sweep(pool, grid=GRID, modes=("oneshot", "sequential"), n_boot=40, seed=1,
                 chunk_size=chunk_size, **kw)


def test_chunked_sweep_equals_unchunked(pool):
    whole = _sweep(pool, None)
    chunked = _sweep(pool, 12)  # two chunks (the shapes every test here shares: few compiles)
    assert chunked.meta["chunk_size"] == 12 and whole.meta["chunk_size"] >= pool.n_questions
    assert len(whole.records) == len(chunked.records) > 0
    assert {r["method"] for r in whole.records} >= {"BoN", "SC", "DSC", "OptScale0", "OptScaleT"}
    for a, b in zip(whole.records, chunked.records, strict=True):
        assert a == b  # configuration, totals and bootstrap intervals, exactly


def test_chunked_sweep_with_orderings(pool):
    kw = {"methods": ("BoN", "SC", "ESC", "ASC"), "n_perms": 2}
    assert _sweep(pool, None, **kw).records == _sweep(pool, 5, **kw).records  # last chunk: 4


def test_chunked_replay_equals_unchunked(pool):
    q = pool.n_questions
    rng = np.random.default_rng(0)
    prior = gaussian_prior(rng.uniform(0.5, 0.9, q), rng.uniform(0.05, 0.2, q))
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
    from optscale_jax.nstar import n_star_for_fits
    from optscale_jax.sharding import fit_prefixes_sharded, n_star_sharded, question_mesh
    from optscale_jax.sweep import Grid, sweep
    from optscale_jax.synthetic import synthetic_pool

    assert len(jax.devices()) == 2, jax.devices()
    pool = synthetic_pool("math500", n_samples=8, seed=3, n_questions=23)  # odd: padded to 24
    out = {"devices": len(question_mesh().devices.flat)}
    for name, prior in (("mle", None),):  # MAP: through the sweep's OptScaleT below
        a = fit_prefixes(pool.scores, pool.mask, prior, lengths=[1, 3, 8])
        b = fit_prefixes_sharded(pool.scores, pool.mask, prior, lengths=[1, 3, 8])
        out[name + "_spec"] = str(b.mu.sharding.spec) if hasattr(b.mu.sharding, "spec") else ""
        for f in ("mu", "sigma", "log_prob"):
            x, y = np.asarray(getattr(a, f)), np.asarray(getattr(b, f))
            out[f"{name}_{f}"] = bool(np.allclose(x, y, rtol=1e-6, atol=0, equal_nan=True))
        for f in ("status", "n"):
            out[f"{name}_{f}"] = bool(np.array_equal(getattr(a, f), getattr(b, f)))
        mu, sg = np.asarray(a.mu)[:, :, None, None], np.asarray(a.sigma)[:, :, None, None]
        s = np.array([0.85, 0.9, 0.99])[:, None]
        al = np.array([0.9, 0.95, 0.99])
        one = question_mesh(jax.devices()[:1])
        plain = n_star_for_fits(mu, sg, s, al, n_max=64)
        out[name + "_nstar"] = bool(np.array_equal(plain, n_star_sharded(mu, sg, s, al, n_max=64)))
        out[name + "_nstar_one"] = bool(np.array_equal(plain, n_star_sharded(mu, sg, s, al, n_max=64, mesh=one)))
    grid = Grid(s_min=(0.9, 0.97), quantile=(0.05, 0.1), n_max=(4, 8))
    pool = synthetic_pool("math500", n_samples=8, seed=3, n_questions=24)  # the test's pool
    res = sweep(pool, grid=grid, methods=("BoN", "OptScale0", "OptScaleT"), modes=("sequential",),
                n_boot=40, seed=1)
    out["records"] = res.records
    json.dump(out, sys.stdout)
    """
)


def test_sharded_equals_one_device(pool):
    env = dict(os.environ)
    env["XLA_FLAGS"] = (env.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=2").strip()
    env["JAX_PLATFORMS"] = "cpu"
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")])
    proc = subprocess.run([sys.executable, "-c", _SHARDED], env=env, capture_output=True, text=True,
                          timeout=600, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert out.pop("devices") == 2
    records = out.pop("records")
    out.pop("mle_spec")
    assert all(out.values()), {k: v for k, v in out.items() if not v}
    one = sweep(pool, grid=GRID, methods=("BoN", "OptScale0", "OptScaleT"), modes=("sequential",),
                n_boot=40, seed=1)
    assert json.loads(json.dumps(one.records)) == records
