"""Nonsensical arguments to the library: ValueError naming the argument (docs/RELIABILITY.md)."""

from __future__ import annotations

import json

import jax
import jax.numpy as jnp
import numpy as np
import pyarrow.parquet as pq
import pytest
from scipy import stats

from optscale_jax.fit import FitStatus, fit_map, fit_mle, fit_prefixes
from optscale_jax.io import (
    PARQUET_METADATA_KEY,
    PoolFormatError,
    read_parquet,
    read_pool,
    write_parquet,
)
from optscale_jax.model import GaussianPrior
from optscale_jax.nstar import (
    exceedance_probability,
    n_star,
    n_star_from_log_cdf,
    n_star_official,
    posterior_n_star,
)
from optscale_jax.pool import Pool
from optscale_jax.report import table1_rows
from optscale_jax.sweep import Grid, GridClippedWarning, clip_grid, pool_width, sweep

# ------------------------------------------------------------------------------- N*

N_STAR_CASES = {
    "n_max=0": (dict(n_max=0), "n_max"),
    "n_max=-3": (dict(n_max=-3), "n_max"),
    "n_max=2.5": (dict(n_max=2.5), "n_max"),
    "n_max=True": (dict(n_max=True), "n_max"),
    "n_min=0": (dict(n_min=0, n_max=8), "n_min"),
    "n_min>n_max": (dict(n_min=9, n_max=8), "n_min"),
    "s_min=1.5": (dict(s_min=1.5), "s_min"),
    "s_min=-0.1": (dict(s_min=-0.1), "s_min"),
    "s_min=nan": (dict(s_min=float("nan")), "s_min"),
    "sigma=0": (dict(sigma=0.0), "sigma"),
    "sigma<0 in an array": (dict(sigma=np.array([0.1, -0.2])), "sigma"),
    "alpha=0": (dict(alpha=0.0), "alpha"),
    "alpha=1": (dict(alpha=1.0), "alpha"),
    "alpha=1.5": (dict(alpha=1.5), "alpha"),
}


@pytest.mark.parametrize("case", list(N_STAR_CASES))
@pytest.mark.parametrize("fn", ["n_star", "n_star_official"])
def test_n_star_rejects_nonsense(case, fn) -> None:
    kw, name = N_STAR_CASES[case]
    args = {"mu": 0.5, "sigma": 0.2, "s_min": 0.5, "alpha": 0.95, "n_max": 16}
    args.update(kw)
    f = n_star if fn == "n_star" else n_star_official
    with pytest.raises(ValueError, match=name) as err:
        f(args.pop("mu"), args.pop("sigma"), args.pop("s_min"), args.pop("alpha"), **args)
    assert "\n" not in str(err.value) and "np.float64" not in str(err.value)


@pytest.mark.parametrize("kw,name", [(dict(n_max=0), "n_max"), (dict(n_min=3, n_max=2), "n_min")])
def test_other_n_star_forms_check_counts(kw, name) -> None:
    with pytest.raises(ValueError, match=name):
        n_star_from_log_cdf(-0.5, 0.9, **kw)
    with pytest.raises(ValueError, match=name):
        posterior_n_star(np.full((4, 1), 0.5), np.full((4, 1), 0.2), 0.5, 0.9, **{"n_min": 1, **kw})


def test_exceedance_probability_checks() -> None:
    with pytest.raises(ValueError, match="^n must be >= 0"):
        exceedance_probability(0.5, 0.2, 0.5, -1)
    with pytest.raises(ValueError, match="sigma"):
        exceedance_probability(0.5, -0.2, 0.5, 3)
    with pytest.raises(ValueError, match="s_min"):
        exceedance_probability(0.5, 0.2, 2.0, 3)
    assert float(exceedance_probability(0.5, 0.2, 0.5, 0)) == 0.0


@pytest.mark.parametrize("size", [1, 5000])  # scalar path and the screened float64 path
def test_infinite_mu_needs_n_min(size) -> None:
    """mu = +inf: every score is 1, F(s_min) = 0 for s_min < 1: N* = n_min (the limit of large mu)."""
    mu = np.full(size, np.inf)
    assert np.all(np.asarray(n_star(mu, 0.2, 0.9, 0.95, n_max=64)) == 1)
    assert np.all(np.asarray(n_star(mu, 0.2, 0.9, 0.95, n_min=3, n_max=64)) == 3)
    # the limit, checked against scipy: a huge finite mu leaves F(0.9) ~ 0
    f = stats.truncnorm.cdf(0.9, (0 - 50.0) / 0.2, (1 - 50.0) / 0.2, loc=50.0, scale=0.2)
    assert f < 1e-12 and int(n_star(50.0, 0.2, 0.9, 0.95, n_max=64)) == 1
    # s_min = 1 is never exceeded: unreachable, n_max; -inf mu: every score 0, n_max
    assert int(n_star(np.inf, 0.2, 1.0, 0.95, n_max=64)) == 64
    assert int(n_star(-np.inf, 0.2, 0.9, 0.95, n_max=64)) == 64


def test_infinite_mu_in_the_official_grid_rule() -> None:
    """The grid rule agrees with the closed form's limit: mu = +inf is a point mass at 1,
    whose every quantile reaches s_min, so the scan stops at n_min; a huge finite mu
    (F(s_min) ~ 0, checked above against scipy) gives the same."""
    from optscale_jax.nstar import n_star_official, n_star_official_table

    assert int(n_star_official(np.inf, 0.2, 0.9, 0.95, n_max=16)) == 1
    assert int(n_star_official(np.inf, 0.2, 0.9, 0.95, n_max=16, n_min=3)) == 3
    assert int(n_star_official(50.0, 0.2, 0.9, 0.95, n_max=16)) == 1
    table = n_star_official_table([np.inf, 50.0], [0.2, 0.2], [0.9, 0.95], [0.9, 0.99], n_max=16)
    assert np.all(np.asarray(table) == 1)


def test_device_and_traced_arrays_are_not_inspected() -> None:
    """Documented: no device sync for checks; jax-array sigma <= 0 gives n_max, as a NaN fit does."""
    assert int(n_star(0.5, jnp.asarray(-1.0), 0.5, 0.95, n_max=16)) == 16
    jitted = jax.jit(lambda m, s: n_star(m, s, 0.5, 0.95, n_max=16))
    assert np.asarray(jitted(jnp.asarray([0.5, 0.5]), jnp.asarray([0.2, 0.0]))).tolist() == [5, 16]
    assert int(n_star(np.nan, np.nan, 0.5, 0.95, n_max=16)) == 16  # NaN (no fit) stays allowed


# ------------------------------------------------------------------------------ fits


def test_zero_width_rows_are_no_data() -> None:
    r = fit_mle(np.zeros((3, 0)))
    assert r.status.tolist() == [FitStatus.NO_DATA] * 3 and np.isnan(np.asarray(r.mu)).all()
    assert r.n.tolist() == [0, 0, 0]
    prior = GaussianPrior(0.8, 0.1, 0.1, 0.1)
    r = fit_map(np.zeros((3, 0)), prior)
    assert r.status.tolist() == [FitStatus.NO_DATA] * 3
    np.testing.assert_allclose(np.asarray(r.mu), 0.8, rtol=1e-6)  # the prior's centre
    assert fit_prefixes(np.zeros((2, 0))).status.shape == (2, 0)


FIT_CASES = {
    "max_iter=0": (lambda: fit_mle([[0.5, 0.6]], max_iter=0), "max_iter"),
    "sigma_bounds reversed": (lambda: fit_mle([[0.5, 0.6]], sigma_bounds=(1.0, 0.1)), "sigma_bounds"),
    "sigma_bounds not a pair": (lambda: fit_mle([[0.5, 0.6]], sigma_bounds=(1.0,)), "sigma_bounds"),
    "prior scale_mu=0": (lambda: fit_map([[0.5]], GaussianPrior(0.8, 0.0, 0.1, 0.1)), "scale_mu"),
    # loc_sigma <= 0 is a valid centre (the authors' priors files have some; tests/test_priors.py)
    "prior scale_sigma<0": (lambda: fit_map([[0.5]], GaussianPrior(0.8, 0.1, 0.1, -0.1)), "scale_sigma"),
    "prior loc_sigma=inf": (lambda: fit_map([[0.5]], GaussianPrior(0.8, 0.1, np.inf, 0.1)), "loc_sigma"),
    "prior loc_mu=nan": (lambda: fit_map([[0.5]], GaussianPrior(np.nan, 0.1, 0.1, 0.1)), "loc_mu"),
    "init sigma<=0": (lambda: fit_map([[0.5]], GaussianPrior(0.8, 0.1, 0.1, 0.1), init=(0.5, 0.0)), "init sigma"),
    "prefix length > N": (lambda: fit_prefixes([[0.5, 0.6]], lengths=[3]), "lengths"),
    "prefix length < 0": (lambda: fit_prefixes([[0.5, 0.6]], lengths=[-1]), "lengths"),
    "score out of [0, 1]": (lambda: fit_mle([[0.5, 1.5]]), r"scores\[0, 1\]"),
}


@pytest.mark.parametrize("case", list(FIT_CASES))
def test_fits_reject_nonsense(case) -> None:
    call, name = FIT_CASES[case]
    with pytest.raises(ValueError, match=name):
        call()


# ----------------------------------------------------------------------------- pools


def _pool() -> Pool:
    return Pool.from_arrays([[0.9, 0.8, 0.7], [0.6, 0.95]], answers=[["1", "2", "1"], ["3", "3"]])


def _edit_meta(path, edit):
    table = pq.read_table(path)
    meta = json.loads(table.schema.metadata[PARQUET_METADATA_KEY])
    pq.write_table(table.replace_schema_metadata({PARQUET_METADATA_KEY: json.dumps(edit(meta)).encode()}), path)


def test_absurd_n_max_is_bounded_by_the_data(tmp_path) -> None:
    path = write_parquet(_pool(), tmp_path / "p.parquet")
    _edit_meta(path, lambda m: {**m, "n_max": 10**9})
    pool = read_parquet(path)  # would allocate ~30 GB of padding
    assert pool.n_max == 3 and pool.n_samples.tolist() == [3, 2]
    assert pool.equals(_pool())


@pytest.mark.parametrize(
    "edit,field",
    [
        (lambda m: {**m, "n_max": -1}, "n_max"),
        (lambda m: {**m, "n_max": "64"}, "n_max"),
        (lambda m: {**m, "dataset": None}, "dataset"),
        (lambda m: {k: v for k, v in m.items() if k != "has_gold"}, "has_gold"),
        (lambda m: [1, 2], "optscale_jax.pool"),
    ],
)
def test_parquet_metadata_fields_are_named(tmp_path, edit, field) -> None:
    path = write_parquet(_pool(), tmp_path / "p.parquet")
    _edit_meta(path, edit)
    with pytest.raises(PoolFormatError, match=field) as err:
        read_parquet(path)
    assert err.value.path == str(path)


def test_parquet_duplicate_question_ids(tmp_path) -> None:
    pool = _pool()
    pool = pool.replace(question_ids=["a", "a"])
    path = write_parquet(pool, tmp_path / "p.parquet")
    with pytest.raises(PoolFormatError, match="row 1.*duplicate id 'a'"):
        read_parquet(path)


def test_prompts_refused_for_formats_that_do_not_read_them(tmp_path) -> None:
    path = write_parquet(_pool(), tmp_path / "p.parquet")
    (tmp_path / "prompts.json").write_text("[]")
    with pytest.raises(PoolFormatError, match="prompts.json.*only read with the authors' JSON"):
        read_pool(path, prompts=tmp_path / "prompts.json")
    with pytest.raises(ValueError, match="unknown pool format 'csv'"):
        read_pool(path, format="csv")


# ----------------------------------------------------------------------- replay clip


def test_clip_grid() -> None:
    g = Grid((0.9,), (0.1,), (8, 16, 64))
    assert clip_grid(g, 64) == (g, [])
    g2, clipped = clip_grid(g, 10)
    assert g2.n_max == (8, 10) and clipped == [16, 64]
    assert clip_grid(g, 4)[0].n_max == (4,)
    with pytest.raises(ValueError, match="no samples"):
        clip_grid(g, 0)


def test_sweep_clips_and_warns() -> None:
    pool = Pool.from_arrays([[0.9, 0.8], [0.6]], answer_ids=[[0, 1], [0]], correct=[[True, False], [True]])
    assert pool_width(pool) == 2
    with pytest.warns(GridClippedWarning, match=r"n_max \[8\] exceed the pool's 2 samples"):
        res = sweep(pool, grid=Grid((0.9,), (0.1,), (8,)), methods=("BoN", "SC"), n_boot=0)
    assert {r["N"] for r in res.records} == {1, 2} and res.meta["n_max_clipped"] == [8]
    assert all(r["mean_samples"] <= 2 for r in res.records)
    # a stale result whose grid says 8 on a 2-wide pool never gets an N=8 row
    res.meta["grid"]["n_max"] = [2, 8]
    assert {r["block"] for r in table1_rows(res)} == {2}


def test_sweep_refuses_a_pool_without_samples() -> None:
    pool = Pool.from_arrays([[], []])
    with pytest.raises(ValueError, match="all 2 questions have 0 samples"):
        sweep(pool, grid=Grid((0.9,), (0.1,), (8,)), methods=("BoN",), n_boot=0)
