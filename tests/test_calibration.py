"""Calibration of OptScale's score model (optscale_jax.calibration, optscale calibrate)."""

from __future__ import annotations

import json

import jax.numpy as jnp
import numpy as np
import pytest
from typer.testing import CliRunner

from optscale_jax.calibration import (
    alpha_coverage,
    calibrate,
    calibration_events,
    ece_bootstrap,
    expected_calibration_error,
    pit_values,
    predictive_checks,
    reliability_bins,
)
from optscale_jax.cli import _build, app
from optscale_jax.distributions import TruncatedNormal01, truncnorm01_log_cdf
from optscale_jax.inference import resolve_family
from optscale_jax.synthetic import synthetic_pool

runner = CliRunner()


def _tiny(seed=0, q=5, n=9):
    rng = np.random.default_rng(seed)
    scores = rng.uniform(0.5, 1.0, size=(q, n)).round(2)
    drawn = rng.integers(3, n + 1, size=q)
    mask = np.arange(n)[None, :] < drawn[:, None]
    return np.where(mask, scores, 0.0), mask


def test_events_match_a_brute_force_loop():
    scores, mask = _tiny()
    q, n = scores.shape
    s_grid = [0.9, 0.95]
    rng = np.random.default_rng(1)
    log_f = np.log(rng.uniform(0.3, 0.99, size=(2, q)))
    k, n_grid, alphas = 2, (1, 2, 4), (0.8, 0.95)
    ev = calibration_events(scores, mask, k, log_f, s_grid, n_grid=n_grid, alphas=alphas)
    expected, by_alpha = [], {}
    for i, s in enumerate(s_grid):
        for qq in range(q):
            drawn = int(mask[qq].sum())
            if drawn <= k:
                continue
            f = np.exp(log_f[i, qq])
            for nn in n_grid:
                if k + nn <= drawn:
                    expected.append((qq, s, nn, 0, 1 - f ** nn, float(max(scores[qq, k:k + nn]) >= s)))
            for a in alphas:
                nstar = 1
                while 1 - f ** nstar < a:  # brute-force N*
                    nstar += 1
                rest = scores[qq, k:drawn]
                if k + nstar <= drawn:
                    y = float(max(scores[qq, k:k + nstar]) >= s)
                elif max(rest) >= s:
                    y = 1.0
                else:
                    y = np.nan
                expected.append((qq, s, nstar, 1, 1 - f ** nstar, y))
                by_alpha.setdefault(a, []).append(y)
    got = sorted(zip(ev.question.tolist(), ev.s_min.tolist(), ev.n.tolist(), ev.kind.tolist(),
                     ev.p.tolist(), ev.y.tolist(), strict=True))
    expected.sort()
    assert len(got) == len(expected)
    for g, e in zip(got, expected, strict=True):
        assert g[:4] == e[:4]
        assert g[4] == pytest.approx(e[4], rel=1e-9)
        assert (np.isnan(g[5]) and np.isnan(e[5])) or g[5] == e[5]
    # coverage bounds against the loop
    rows = {r["alpha"]: r for r in alpha_coverage(ev, n_boot=0)}
    for a in alphas:
        ys = np.array(by_alpha[a])
        assert rows[a]["events"] == ys.size
        assert rows[a]["coverage_lower"] == pytest.approx(np.nansum(ys) / ys.size)
        assert rows[a]["coverage_upper"] == pytest.approx((np.nansum(ys) + np.isnan(ys).sum()) / ys.size)
        assert rows[a]["censored"] == np.isnan(ys).sum()


def test_ece_matches_a_brute_force_loop():
    rng = np.random.default_rng(3)
    p = rng.uniform(size=300)
    y = (rng.uniform(size=300) < p ** 1.5).astype(float)
    total = 0.0
    for b in range(10):
        lo, hi = b / 10, (b + 1) / 10
        inside = [i for i in range(300) if lo <= p[i] < hi or (b == 9 and p[i] == 1.0)]
        if inside:
            total += len(inside) * abs(np.mean(p[inside]) - np.mean(y[inside]))
    assert expected_calibration_error(p, y, 10) == pytest.approx(total / 300, rel=1e-12)
    r = reliability_bins(p, y, 10)
    assert r["count"].sum() == 300
    ece, (lo, hi) = ece_bootstrap(rng.integers(0, 30, 300), p, y, n_boot=200)
    assert lo <= ece <= hi or abs(ece - lo) < 0.02  # the point estimate sits in (or next to) its CI


def _truncnorm_rows(q, n, mu, sigma, seed):
    import jax

    x = TruncatedNormal01(jnp.full((n, q), mu), jnp.full((n, q), sigma)).sample(jax.random.key(seed))
    return np.asarray(x, float).T


def test_the_true_law_is_calibrated_within_monte_carlo_error():
    """Scores drawn from the model itself, judged with the true law: realised = predicted."""
    q, n, mu, sigma, s = 800, 30, 0.8, 0.12, 0.9
    scores = _truncnorm_rows(q, n, mu, sigma, 0)
    mask = np.ones_like(scores, bool)
    log_f = np.full((1, q), float(truncnorm01_log_cdf(s, mu, sigma)))
    ev = calibration_events(scores, mask, 0, log_f, [s], n_grid=(1, 4), alphas=(0.9, 0.95))
    assert not ev.censored.any()
    for kind, nn in ((0, 1), (0, 4)):
        e = ev.select((ev.kind == kind) & (ev.n == nn))
        p = e.p[0]
        assert abs(e.y.mean() - p) < 4 * np.sqrt(p * (1 - p) / q)
    for row in alpha_coverage(ev, n_boot=0):
        p = row["mean_p"]
        assert p >= row["alpha"]  # the ceiling keeps the promise
        assert abs(row["coverage_observed"] - p) < 4 * np.sqrt(p * (1 - p) / q)
    fam = resolve_family("truncnorm")
    params = {"mu": np.full(q, mu), "sigma": np.full(q, sigma)}
    u = pit_values(fam, params, scores, mask, 10, np.ones(q, bool))
    assert u.size == q * 20
    hist = np.histogram(u, bins=10, range=(0, 1))[0] / u.size
    assert np.all(np.abs(hist - 0.1) < 0.02)  # uniform (the 20 PITs of a row are independent)
    pc = predictive_checks(fam, params, scores[:300], mask[:300], 10, np.ones(300, bool), draws=200)
    for stat in ("max", "spread"):
        v = pc[stat]
        assert abs(v.mean() - 0.5) < 4 * np.sqrt(1 / 12 / v.size) + 0.01
        assert abs(np.mean(v < 0.1) - 0.1) < 4 * np.sqrt(0.09 / v.size) + 0.01


def test_a_misspecified_law_is_caught():
    """Bimodal scores (wrong/right samples) under a single truncated normal: PIT is not uniform."""
    rng = np.random.default_rng(0)
    q, n = 80, 20
    good = rng.uniform(size=(q, n)) < 0.5
    scores = np.where(good, rng.beta(40, 2, (q, n)), rng.beta(2, 6, (q, n))).clip(0, 1)
    from optscale_jax.pool import Pool

    pool = Pool.from_arrays(scores)
    res = calibrate(pool, families=["truncnorm"], s_min=(0.9,), alphas=(0.9,), n_grid=(1, 4),
                    n_max=(16,), step=8, n_boot=0, ppc_draws=50)
    ks = [d["ks"] for d in res.per_family["truncnorm"]["pit"].values()]
    assert min(ks) > 0.05
    assert res.ranking[0]["family"] == "truncnorm"


def test_calibrate_rejects_bad_arguments():
    pool = synthetic_pool("aime24", n_samples=6, seed=0)
    with pytest.raises(ValueError, match="s_min"):
        calibrate(pool, s_min=(1.5,))
    with pytest.raises(ValueError, match="unknown score family"):
        calibrate(pool, families=["gamma"])
    with pytest.raises(ValueError, match="families is empty"):
        calibrate(pool, families=[])
    with pytest.raises(ValueError, match="pool"):
        calibrate(np.zeros((2, 3)))


def test_cli_happy_path_on_a_twin(tmp_path):
    _build()
    out = tmp_path / "cal"
    r = runner.invoke(app, ["calibrate", "--synthetic", "aime24", "--n-samples", "10", "--family",
                            "truncnorm", "--n-boot", "20", "--s-min", "0.9,0.95", "--alpha", "0.9,0.95",
                            "--step", "3", "--out", str(out)])
    assert r.exit_code == 0, r.output
    for name in ("calibration.md", "calibration.json", "reliability.png", "pit.png", "ppc.png"):
        assert (out / name).stat().st_size > 0
    md = (out / "calibration.md").read_text()
    assert "SYNTHETIC" in md and "ECE" in md
    data = json.loads((out / "calibration.json").read_text())
    assert data["synthetic"] is True
    cov = data["per_family"]["truncnorm"]["modes"]["oneshot"]["coverage"]
    assert [c["alpha"] for c in cov] == [0.9, 0.95]
    for c in cov:
        assert c["coverage_lower"] <= c["coverage_upper"]


@pytest.mark.parametrize(
    "args, needle",
    [
        (["--family", "gamma"], "unknown score family 'gamma'"),
        (["--s-min", "0.9,x"], "--s-min"),
        (["--alpha", "1.5"], "--alpha"),
    ],
)
def test_cli_bad_options_are_one_line(tmp_path, args, needle):
    _build()
    r = runner.invoke(app, ["calibrate", "--synthetic", "aime24", "--n-samples", "4", "--out",
                            str(tmp_path / "o"), *args])
    assert r.exit_code == 2, r.output
    assert "Traceback" not in r.output
    lines = [x for x in r.stderr.splitlines() if x.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: ") and needle in lines[0], r.stderr


def test_cli_bad_pool_file_is_one_line(tmp_path):
    _build()
    bad = tmp_path / "pool.jsonl"
    bad.write_text('{"not": "a pool"}\n')
    r = runner.invoke(app, ["calibrate", str(bad), "--out", str(tmp_path / "o")])
    assert r.exit_code == 2, r.output
    lines = [x for x in r.stderr.splitlines() if x.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: ") and "pool.jsonl" in lines[0], r.stderr


@pytest.mark.data
def test_real_pool_report(shared_data, tmp_path):
    _build()
    pool = shared_data / "pools" / "search_and_learn_llama32_3b_math500_10x4.jsonl"
    r = runner.invoke(app, ["calibrate", str(pool), "--family", "truncnorm", "--n-boot", "20",
                            "--out", str(tmp_path / "real")])
    assert r.exit_code == 0, r.output
    data = json.loads((tmp_path / "real" / "calibration.json").read_text())
    assert data["synthetic"] is False and data["settings"]["n_questions"] == 10
    assert data["checkpoints"]["sequential"] == [2, 3]
