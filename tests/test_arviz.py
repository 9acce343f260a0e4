"""ArviZ export of NUTS posteriors (optscale_jax.inference): az.summary, az.loo, az.compare."""

from __future__ import annotations

import warnings

import jax
import numpy as np
import pytest
from scipy.special import logsumexp

from optscale_jax.inference import family_posterior, pointwise_log_likelihood, to_inference_data

az = pytest.importorskip("arviz", reason="needs the bayes extra (pip install 'optscale-jax[bayes]')")

SCORES = np.array([
    [0.91, 0.85, 0.97, 0.72, 0.88, 0.93],
    [0.55, 0.61, 0.40, 0.70, 0.52, 0.0],
    [0.99, 0.95, 0.97, 0.0, 0.0, 0.0],
])
MASK = np.array([[1] * 6, [1] * 5 + [0], [1] * 3 + [0] * 3], bool)


@pytest.fixture(scope="module")
def truncnorm_post():
    return family_posterior(jax.random.key(0), SCORES, MASK, "truncnorm", num_warmup=100,
                            num_samples=120, num_chains=2)


def test_export_has_the_groups_and_drops_padding(truncnorm_post):
    idata = to_inference_data(truncnorm_post, question_ids=["a", "b", "c"])
    assert set(idata.groups()) >= {"posterior", "log_likelihood", "observed_data", "constant_data"}
    assert idata.posterior["mu"].dims == ("chain", "draw", "question")
    assert idata.posterior["mu"].shape == (2, 120, 3)
    ll = idata.log_likelihood["scores"]
    assert ll.shape == (2, 120, int(MASK.sum()))  # one entry per drawn score
    np.testing.assert_allclose(idata.observed_data["scores"].values, SCORES[MASK])
    summary = az.summary(idata, var_names=["mu", "sigma"])
    assert len(summary) == 6 and np.isfinite(summary["mean"]).all()


def test_loo_lppd_matches_a_direct_computation(truncnorm_post):
    idata = to_inference_data(truncnorm_post)
    with warnings.catch_warnings():  # Pareto k is high on 14 scores; the lppd identity still holds
        warnings.simplefilter("ignore", UserWarning)
        loo = az.loo(idata, pointwise=True)
    ll = idata.log_likelihood["scores"].values.reshape(-1, int(MASK.sum()))  # (S, obs)
    lppd = float(np.sum(logsumexp(ll, axis=0) - np.log(ll.shape[0])))
    assert float(loo["elpd_loo"]) + float(loo["p_loo"]) == pytest.approx(lppd, rel=1e-6, abs=1e-6)
    # the log-likelihood draws are the truncated normal's density at each posterior draw
    from scipy.stats import truncnorm

    mu = truncnorm_post.draws["mu"][0, 7, 1]
    sd = truncnorm_post.draws["sigma"][0, 7, 1]
    a, b = (0 - mu) / sd, (1 - mu) / sd
    direct = truncnorm.logpdf(SCORES[1, :5], a, b, loc=mu, scale=sd)
    full = pointwise_log_likelihood("truncnorm", truncnorm_post.draws, SCORES, MASK)
    np.testing.assert_allclose(full[0, 7, 1, :5], direct, rtol=1e-8)
    assert np.all(full[0, 7, 1, 5:] == 0.0)


def test_question_level_loo_and_compare(truncnorm_post):
    by_q = to_inference_data(truncnorm_post, pointwise="question")
    assert by_q.log_likelihood["scores"].shape == (2, 120, 3)
    other = family_posterior(jax.random.key(1), SCORES, MASK, "beta", num_warmup=100, num_samples=120,
                             num_chains=2)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        cmp = az.compare({"truncnorm": to_inference_data(truncnorm_post), "beta": to_inference_data(other)})
    assert set(cmp.index) == {"truncnorm", "beta"}
    assert cmp["rank"].min() == 0


def test_bad_arguments_raise_value_error(truncnorm_post):
    with pytest.raises(ValueError, match="pointwise"):
        to_inference_data(truncnorm_post, pointwise="row")
    with pytest.raises(ValueError, match="needs scores and family"):
        to_inference_data(truncnorm_post.draws)
    with pytest.raises(ValueError, match="draws"):
        to_inference_data({"mu": np.zeros((1, 4)), "sigma": np.ones((1, 4))}, SCORES, MASK, "truncnorm")
    with pytest.raises(ValueError, match="num_samples"):
        family_posterior(jax.random.key(0), SCORES, MASK, num_samples=0)
    with pytest.raises(ValueError, match="unknown score family"):
        family_posterior(jax.random.key(0), SCORES, MASK, "gamma")
