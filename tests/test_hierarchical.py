"""The hierarchical model (optscale_jax.hierarchical) and OptScaleH.

One simulated pool shape (400 x 6) serves every EB fit (the twins' early scores are
placed in it too): fewer questions or samples are taken by masking, so the solvers
compile once.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import integrate, special, stats

from optscale_jax.hierarchical import (
    PAPER_POPULATION,
    PopulationLaw,
    fit_population,
    log_marginal_likelihood,
)

TRUTH = PopulationLaw(0.72, 0.09, math.log(0.08), 0.3, sigma_law="lognormal")
Q, N = 400, 6


def simulate(seed: int, loc_mu=None, q: int = Q):
    rng = np.random.default_rng(seed)
    loc = TRUTH.loc_mu if loc_mu is None else loc_mu
    mu = rng.normal(loc, TRUTH.scale_mu, q)
    sigma = np.exp(rng.normal(TRUTH.loc_sigma, TRUTH.scale_sigma, q))
    lo, hi = (0.0 - mu) / sigma, (1.0 - mu) / sigma
    return stats.truncnorm.rvs(lo[:, None], hi[:, None], loc=mu[:, None], scale=sigma[:, None],
                               size=(q, N), random_state=rng)


def rows(q: int) -> np.ndarray:
    m = np.zeros((Q, N), bool)
    m[:q] = True
    return m


@pytest.fixture(scope="module")
def pool_scores() -> np.ndarray:
    return simulate(0)


def test_population_recovered_within_a_tolerance_that_shrinks_with_q(pool_scores) -> None:
    # about 4 standard errors per parameter (per-question log-sigma estimates from 6 scores
    # carry ~0.3 of noise on top of the population's spread)
    tols = {"loc_mu": 0.45, "scale_mu": 0.4, "loc_sigma": 2.0, "scale_sigma": 1.6}
    for q in (100, 400):
        fit = fit_population(pool_scores, rows(q))
        assert fit.converged and fit.n_questions == q and fit.law.sigma_law == "lognormal"
        for name, tol in tols.items():
            err = abs(getattr(fit.law, name) - getattr(TRUTH, name))
            assert err < tol / np.sqrt(q), (q, name, err)


def test_twins_early_scores_give_a_proper_law_with_a_positive_sigma_centre() -> None:
    """Regression: two or four scores per question of the math500 (100 q) and aime24 twins
    gave a law with a width 0 or infinite (an error) or σ's centre far below 0."""
    from optscale_jax.synthetic import synthetic_pool

    for ds, q in (("math500", 100), ("aime24", 30)):
        pool = synthetic_pool(ds, n_samples=N, seed=0)
        s = np.zeros((Q, N))
        s[:q] = pool.scores[:q, :N]
        for n_early in (2, 4):
            m = rows(q) & (np.arange(N) < n_early)[None, :]
            fit = fit_population(s, m)
            law, prior = fit.law, fit.law.prior(Q)
            assert fit.converged, (ds, n_early)
            assert 0.02 < law.scale_mu < 1.0 and 0.05 < law.scale_sigma < 3.0, (ds, n_early, law)
            assert 0.0 < law.loc_mu < 2.0, (ds, n_early, law)
            # σ's centre: positive and inside the spread of the questions' own early stds
            sd = s[:q, :n_early].std(1, ddof=1)
            assert np.quantile(sd, 0.05) < math.exp(law.loc_sigma) < np.quantile(sd, 0.95), (ds, n_early)
            assert np.all(prior.loc_sigma > 0) and np.all(prior.scale_sigma > 0)


def test_lognormal_law_prior_is_moment_matched() -> None:
    law = PopulationLaw(0.8, 0.1, math.log(0.07), 0.6, sigma_law="lognormal")
    ref = stats.lognorm(0.6, scale=0.07)
    prior = law.prior(3)
    np.testing.assert_allclose(prior.loc_sigma, ref.mean(), rtol=1e-12)
    np.testing.assert_allclose(prior.scale_sigma, ref.std(), rtol=1e-12)
    np.testing.assert_array_equal(PAPER_POPULATION.prior(2).loc_sigma, PAPER_POPULATION.loc_sigma)


def _brute_log_marginal(s: np.ndarray, law: PopulationLaw) -> float:
    """log ∫∫ Π TN(s_i; μ, σ) p(μ) p(σ) dμ dσ on a fine (μ, log σ) grid (Simpson's rule)."""
    mu = np.linspace(-0.2, 1.6, 1201)[:, None]
    tau = np.linspace(math.log(1e-4), math.log(0.8), 1201)[None, :]
    sig = np.exp(tau)
    with np.errstate(all="ignore"):  # Φ(b) - Φ(a) underflows to 0 where σ is tiny and μ far out
        log_z = np.log(special.ndtr((1 - mu) / sig) - special.ndtr(-mu / sig))
        ll = (-0.5 * sum(((x - mu) / sig) ** 2 for x in s)
              - len(s) * (tau + 0.5 * math.log(2 * math.pi) + log_z))
        lp = stats.norm.logpdf(mu, law.loc_mu, law.scale_mu)
        if law.sigma_law == "lognormal":
            lp = lp + stats.norm.logpdf(tau, law.loc_sigma, law.scale_sigma)  # density of log σ
        else:
            lp = lp + stats.truncnorm.logpdf(sig, -law.loc_sigma / law.scale_sigma, np.inf,
                                             loc=law.loc_sigma, scale=law.scale_sigma) + tau  # times dσ/dτ
        f = np.where(np.isfinite(ll + lp), ll + lp, -np.inf)
    top = f.max()
    inner = integrate.simpson(np.exp(f - top), x=tau[0], axis=1)
    return float(top + np.log(integrate.simpson(inner, x=mu[:, 0])))


def test_marginal_likelihood_matches_brute_force_integration(pool_scores) -> None:
    mask = rows(2)
    mask[1, 3:] = False  # a ragged row
    laws = (PopulationLaw(0.7, 0.12, 0.12, 0.05),  # sigma ~ N(0.12, 0.05) on sigma > 0
            PopulationLaw(0.7, 0.12, math.log(0.1), 0.4, sigma_law="lognormal"))
    for law in laws:
        got = log_marginal_likelihood(pool_scores, law, mask, nodes=15)
        assert np.all(got[2:] == 0.0)
        for i in range(2):
            ref = _brute_log_marginal(pool_scores[i, mask[i]], law)
            assert got[i] == pytest.approx(ref, abs=2e-3), (law.sigma_law, i)
        # one node is the Laplace approximation: close, but not as close
        lap = log_marginal_likelihood(pool_scores, law, mask, nodes=1)
        assert np.all(np.abs(lap[:2] - got[:2]) < 0.5)


def test_covariates_that_carry_signal_are_found_and_noise_is_not() -> None:
    rng = np.random.default_rng(3)
    x = rng.normal(size=(Q, 3))
    scores = simulate(2, loc_mu=TRUTH.loc_mu + 0.08 * x[:, 0])
    m = rows(Q)
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
    with pytest.raises(ValueError, match="sigma_law must be one of lognormal, truncnorm"):
        PopulationLaw(0.5, 0.1, 0.1, 0.1, sigma_law="gamma")
    with pytest.raises(ValueError, match="expects 2"):
        PopulationLaw(0.5, 0.1, 0.1, 0.1, (0, 0), (0, 0), (0, 0), (1, 1)).prior(covariates=np.zeros((3, 1)))


def test_nuts_posterior_covers_the_truth_and_the_eb_fit() -> None:
    pytest.importorskip("numpyro")
    import jax

    scores = simulate(5)
    eb = fit_population(scores, rows(16)).law
    fit = fit_population(scores[:16], method="nuts", key=jax.random.key(1), num_warmup=100, num_samples=100)
    assert fit.method == "nuts" and fit.law.sigma_law == "lognormal" and fit.iterations == 100
    for name in ("loc_mu", "loc_sigma"):
        d = fit.draws[name]
        assert d.shape == (100,) and np.all(np.isfinite(d))
        lo, hi = np.quantile(d, [0.005, 0.995])
        assert lo < getattr(TRUTH, name) < hi, (name, lo, hi)
        assert lo < getattr(eb, name) < hi, (name, lo, hi)  # EB's point inside NUTS's posterior


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
