"""The hierarchical model (optscale_jax.hierarchical) and OptScaleH.

One simulated pool shape (1200 x 6) serves the fits: fewer questions are taken by masking
rows out, so the solvers compile once.
"""

from __future__ import annotations

import numpy as np
import pytest
from scipy import integrate, stats

from optscale_jax.hierarchical import (
    PAPER_POPULATION,
    PopulationLaw,
    fit_population,
    log_marginal_likelihood,
)

TRUTH = PopulationLaw(0.78, 0.09, 0.10, 0.04)
Q, N = 1200, 6


def simulate(seed: int, loc_mu=None):
    rng = np.random.default_rng(seed)
    loc = TRUTH.loc_mu if loc_mu is None else loc_mu
    mu = rng.normal(loc, TRUTH.scale_mu, Q)
    a = (0.0 - TRUTH.loc_sigma) / TRUTH.scale_sigma
    sigma = stats.truncnorm.rvs(a, np.inf, loc=TRUTH.loc_sigma, scale=TRUTH.scale_sigma, size=Q,
                                random_state=rng)
    lo, hi = (0.0 - mu) / sigma, (1.0 - mu) / sigma
    return stats.truncnorm.rvs(lo[:, None], hi[:, None], loc=mu[:, None], scale=sigma[:, None],
                               size=(Q, N), random_state=rng)


def rows(q: int) -> np.ndarray:
    m = np.zeros((Q, N), bool)
    m[:q] = True
    return m


def test_population_recovered_within_a_tolerance_that_shrinks_with_q() -> None:
    scores = simulate(0)
    for q in (75, 300, 1200):
        fit = fit_population(scores, rows(q))
        assert fit.converged and fit.n_questions == q
        tol = 1.0 / np.sqrt(q)  # about 4 standard errors of each parameter
        law = fit.law
        for name in ("loc_mu", "scale_mu", "loc_sigma", "scale_sigma"):
            err = abs(getattr(law, name) - getattr(TRUTH, name))
            assert err < tol * (1.0 if name == "loc_mu" else 0.6), (q, name, err)


def test_marginal_likelihood_matches_brute_force_integration() -> None:
    scores = simulate(1)
    mask = rows(2)
    mask[1, 3:] = False  # a ragged row
    law = PopulationLaw(0.7, 0.12, 0.12, 0.05)
    got = log_marginal_likelihood(scores, law, mask, nodes=9)
    assert np.all(got[2:] == 0.0)
    for i in range(2):
        s = scores[i, mask[i]]

        def integrand(sigma, mu, s=s):
            like = stats.truncnorm.pdf(s, -mu / sigma, (1 - mu) / sigma, loc=mu, scale=sigma).prod()
            p_mu = stats.norm.pdf(mu, law.loc_mu, law.scale_mu)
            p_s = stats.truncnorm.pdf(sigma, -law.loc_sigma / law.scale_sigma, np.inf,
                                      loc=law.loc_sigma, scale=law.scale_sigma)
            return like * p_mu * p_s

        ref, _ = integrate.dblquad(integrand, -0.2, 1.6, 1e-4, 0.6, epsabs=1e-12, epsrel=1e-9)
        assert got[i] == pytest.approx(np.log(ref), abs=2e-3)
    # one node is the Laplace approximation: close, but not as close
    lap = log_marginal_likelihood(scores, law, mask, nodes=1)
    assert np.all(np.abs(lap[:2] - got[:2]) < 0.5)


def test_covariates_that_carry_signal_are_found_and_noise_is_not() -> None:
    rng = np.random.default_rng(3)
    x = rng.normal(size=(Q, 3))
    scores = simulate(2, loc_mu=TRUTH.loc_mu + 0.08 * x[:, 0])
    m = rows(600)
    plain = fit_population(scores, m)
    with_x = fit_population(scores, m, covariates=x)
    coef = np.asarray(with_x.law.coef_mu) * 1.0  # per feature SD; x is ~standard already
    assert coef[0] == pytest.approx(0.08, abs=0.02) and np.all(np.abs(coef[1:]) < 0.02)
    assert with_x.law.scale_mu < plain.law.scale_mu - 0.02  # the feature explains spread
    assert with_x.log_marginal > plain.log_marginal + 20
    noise = fit_population(simulate(4), m, covariates=x)
    assert np.all(np.abs(noise.law.coef_mu) < 0.02)
    # the law's prior uses the covariates: centres move with x[:, 0]
    centre, _ = with_x.law.centres(covariates=x)
    assert np.corrcoef(centre, x[:, 0])[0, 1] > 0.95


def test_bad_arguments_are_clear_errors() -> None:
    s = simulate(0)[:5]
    with pytest.raises(ValueError, match=r"covariates has 4 rows; expected one per question \(5\)"):
        fit_population(s, covariates=np.zeros((4, 2)))
    with pytest.raises(ValueError, match=r"covariates\[1, 0\] must be finite"):
        fit_population(s, covariates=np.array([[0.0], [np.nan], [1], [2], [3]]))
    with pytest.raises(ValueError, match="method must be 'eb' or 'nuts'"):
        fit_population(s, method="svi")
    with pytest.raises(ValueError, match="family must be one of truncnorm"):
        fit_population(s, family="beta")
    with pytest.raises(ValueError, match="no question has a score"):
        fit_population(s, np.zeros_like(s, bool))
    with pytest.raises(ValueError, match="scale_mu must be finite and > 0"):
        PopulationLaw(0.5, 0.0, 0.1, 0.1)
    with pytest.raises(ValueError, match="expects 2"):
        PopulationLaw(0.5, 0.1, 0.1, 0.1, (0, 0), (0, 0), (0, 0), (1, 1)).prior(covariates=np.zeros((3, 1)))


# ----------------------------------------------------------------------------- OptScaleH


def test_optscale_h_with_the_paper_population_is_optscale_t() -> None:
    from test_policies import score_pool

    from optscale_jax.model import population_prior
    from optscale_jax.policies import OptScale, OptScaleH
    from optscale_jax.replay import run_policy

    pool = score_pool(4, q=30, n=12, min_len=2)
    for mode in ("oneshot", "sequential"):
        h = OptScaleH(12, 0.9, 0.9, mode=mode, n_init=1, population=PAPER_POPULATION)
        t = OptScale(12, 0.9, 0.9, mode=mode, prior=population_prior(30))
        for a, b in zip(run_policy(pool, h), run_policy(pool, t), strict=True):
            np.testing.assert_array_equal(a, b)


def test_optscale_h_sweep_equals_replay_and_sees_only_early_scores() -> None:
    from test_policies import score_pool

    from optscale_jax.policies import OptScaleH, make
    from optscale_jax.replay import replay
    from optscale_jax.sweep import Grid, sweep

    pool = score_pool(4, q=30, n=12, min_len=2)
    grid = Grid(s_min=(0.9, 0.97), quantile=(0.02, 0.1), n_max=(8, 12))
    res = sweep(pool, grid=grid, methods=("OptScaleH",), modes=("oneshot", "sequential"), n_boot=0)
    assert len(res.records) == 16
    for rec in res.records:
        pol = make("OptScaleH", n_max=rec["n_max"], s_min=rec["s_min"], alpha=rec["alpha"], mode=rec["mode"])
        ref = replay(pool, pol, n_boot=0)
        assert rec["accuracy"] == pytest.approx(ref.accuracy, abs=1e-12)
        assert rec["mean_tokens"] == pytest.approx(ref.mean_tokens, abs=1e-9)
    # no peeking: scores after the first k (one-shot, n_max 12 -> k 4) do not move the law
    pol = OptScaleH(12, 0.9, 0.9)
    law = pol.population_law(pool.scores, pool.mask)
    later = pool.scores.copy()
    later[:, pol.k:] = np.where(pool.mask[:, pol.k:], 1.0 - later[:, pol.k:], 0.0)
    assert OptScaleH(12, 0.9, 0.9).population_law(later, pool.mask) == law
    assert law != PAPER_POPULATION


def test_optscale_h_runs_live_and_its_pool_replays_the_same(tmp_path) -> None:
    from test_online import QUESTIONS, ToyEngine, ToyPRM

    from optscale_jax.grading import Grader
    from optscale_jax.io import read_parquet
    from optscale_jax.online import run
    from optscale_jax.policies import make
    from optscale_jax.replay import run_policy

    policy = make("OptScaleH", n_max=8, s_min=0.9, alpha=0.9, mode="sequential")
    with Grader(workers=0) as grader:
        res = run(QUESTIONS, ToyEngine(), ToyPRM(), policy, out=tmp_path, seed=1, grader=grader, dataset="toy")
    pool = read_parquet(tmp_path / "pool.parquet")
    assert res.summary["samples"] == int(pool.n_samples.sum())
    drawn, chosen, _ = run_policy(pool, make("OptScaleH", n_max=8, s_min=0.9, alpha=0.9, mode="sequential"))
    np.testing.assert_array_equal(drawn, pool.n_samples)
    np.testing.assert_array_equal(chosen, res.chosen)
