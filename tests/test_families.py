"""Score families: densities and CDFs against scipy, N* against brute force, fits against
scipy (``scipy.stats.<dist>.fit`` or ``scipy.optimize.minimize`` on the same objective),
masked/ragged rows, statuses, priors and bad input."""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np
import pytest
import scipy.optimize
import scipy.special
import scipy.stats

import optscale_jax.families as fam
from optscale_jax.fit import FitStatus, fit_mle, fit_status_usable
from optscale_jax.model import GaussianPrior
from optscale_jax.nstar import n_star

EPS = fam.EPS
Q, N = 6, 12  # one pool shape for every fit below: one compile per family and mode


def _clamp(x):
    return np.clip(x, EPS, 1 - EPS)


def _np_params(params):
    return {k: np.asarray(v, float) for k, v in params.items()}


# Independent numpy/scipy CDFs and log densities ------------------------------------

def _scipy_cdf(name, p, s):
    if name == "truncnorm":
        a, b = (0 - p["mu"]) / p["sigma"], (1 - p["mu"]) / p["sigma"]
        return scipy.stats.truncnorm.cdf(s, a, b, loc=p["mu"], scale=p["sigma"])
    if name == "beta":
        return scipy.stats.beta.cdf(s, p["a"], p["b"])
    if name == "logitnormal":
        return scipy.stats.norm.cdf(scipy.special.logit(s), p["mu"], p["sigma"])
    return ((1 - p["w"]) * scipy.stats.beta.cdf(s, p["a_lo"], p["b_lo"])
            + p["w"] * scipy.stats.beta.cdf(s, p["a_hi"], p["b_hi"]))


def _scipy_logpdf(name, p, x):
    if name == "truncnorm":
        a, b = (0 - p["mu"]) / p["sigma"], (1 - p["mu"]) / p["sigma"]
        return scipy.stats.truncnorm.logpdf(x, a, b, loc=p["mu"], scale=p["sigma"])
    x = _clamp(x)
    if name == "beta":
        return scipy.stats.beta.logpdf(x, p["a"], p["b"])
    if name == "logitnormal":
        z = scipy.special.logit(x)
        return scipy.stats.norm.logpdf(z, p["mu"], p["sigma"]) - np.log(x) - np.log1p(-x)
    return np.logaddexp(np.log1p(-p["w"]) + scipy.stats.beta.logpdf(x, p["a_lo"], p["b_lo"]),
                        np.log(p["w"]) + scipy.stats.beta.logpdf(x, p["a_hi"], p["b_hi"]))


def _random_params(name, rng, k):
    if name == "truncnorm":
        return {"mu": rng.uniform(0.2, 1.2, k), "sigma": rng.uniform(0.05, 0.5, k)}
    if name == "beta":
        return {"a": rng.uniform(0.5, 20, k), "b": rng.uniform(0.3, 5, k)}
    if name == "logitnormal":
        return {"mu": rng.uniform(-1, 4, k), "sigma": rng.uniform(0.2, 2.5, k)}
    return {"w": rng.uniform(0.1, 0.9, k), "a_lo": rng.uniform(1, 5, k), "b_lo": rng.uniform(2, 8, k),
            "a_hi": rng.uniform(10, 40, k), "b_hi": rng.uniform(0.5, 3, k)}


NAMES = ["truncnorm", "beta", "logitnormal", "mixture"]


def test_registry_and_protocol():
    assert set(NAMES) <= set(fam.FAMILIES)
    for name in NAMES:
        f = fam.get(name)
        assert isinstance(f, fam.ScoreFamily) and f.name == name
    with pytest.raises(ValueError, match="unknown score family 'gamma'.*beta.*truncnorm"):
        fam.get("gamma")


@pytest.mark.parametrize("name", NAMES)
def test_log_prob_and_log_cdf_match_scipy(name):
    rng = np.random.default_rng(1)
    p = _random_params(name, rng, 20)
    x = rng.uniform(0.001, 0.999, 20)
    f = fam.get(name)
    jp = {k: jnp.asarray(v) for k, v in p.items()}
    np.testing.assert_allclose(f.log_prob(jp, x), _scipy_logpdf(name, p, x), rtol=1e-7, atol=1e-7)
    np.testing.assert_allclose(np.exp(f.log_cdf(jp, x)), _scipy_cdf(name, p, x), rtol=1e-6, atol=1e-9)
    # the CDF's ends: F(1) = 1 (no number of samples reaches s_min = 1), F(0) = 0
    assert np.all(np.asarray(f.log_cdf(jp, 1.0)) == 0.0)
    assert np.all(np.exp(np.asarray(f.log_cdf(jp, 0.0))) == 0.0)
    # the numpyro distribution agrees, and samples lie in [0, 1]
    d = f.distribution(jp)
    np.testing.assert_allclose(d.log_prob(x), f.log_prob(jp, x), rtol=1e-12)
    import jax

    draws = np.asarray(d.sample(jax.random.key(0), (50,)))
    assert draws.shape == (50, 20) and np.all((draws >= 0) & (draws <= 1))


@pytest.mark.parametrize("name", NAMES)
def test_n_star_matches_brute_force(name):
    rng = np.random.default_rng(2)
    k = 40
    p = _random_params(name, rng, k)
    s_min = rng.uniform(0.5, 0.99, k)
    alpha = rng.uniform(0.5, 0.99, k)
    n_max = 200
    got = np.asarray(fam.n_star_family(name, p, s_min, alpha, n_max=n_max))
    F = _scipy_cdf(name, p, s_min)
    for i in range(k):
        want = next((n for n in range(1, n_max + 1) if 1 - F[i] ** n >= alpha[i]), n_max)
        assert got[i] == want, (name, i, F[i], alpha[i])
    if name == "truncnorm":  # delegates: exactly the package's n_star
        np.testing.assert_array_equal(got, n_star(p["mu"], p["sigma"], s_min, alpha, n_max=n_max))


def _ragged_rows(rng, draw):
    scores = np.zeros((Q, N))
    counts = np.array([N, 9, 5, 3, N, 7])
    mask = np.arange(N)[None, :] < counts[:, None]
    for q in range(Q):
        scores[q] = draw(rng, N)
    return np.where(mask, scores, 0.0), mask


def _bimodal(rng, n):
    good = rng.uniform(size=n) < 0.6
    return np.where(good, rng.beta(30, 2, n), rng.beta(2, 5, n))


def test_beta_fit_matches_scipy_on_ragged_rows():
    rng = np.random.default_rng(3)
    scores, mask = _ragged_rows(rng, lambda r, n: r.beta(r.uniform(1, 9), r.uniform(0.5, 3), n))
    scores[0, 0] = 1.0  # exactly 1: clamped to 1 - EPS
    fit = fam.get("beta").fit(scores, mask)
    p = _np_params(fit.params)
    assert np.all(np.asarray(fit.status) == FitStatus.CONVERGED)
    for q in range(Q):
        x = _clamp(scores[q, mask[q]])
        a, b, _, _ = scipy.stats.beta.fit(x, floc=0, fscale=1)
        ll_ref = scipy.stats.beta.logpdf(x, a, b).sum()
        assert float(fit.log_lik[q]) >= ll_ref - 1e-6
        np.testing.assert_allclose([p["a"][q], p["b"][q]], [a, b], rtol=2e-3)
        np.testing.assert_allclose(float(fit.log_lik[q]), ll_ref, atol=1e-6)


def test_logitnormal_fit_matches_scipy_norm_fit():
    rng = np.random.default_rng(4)
    scores, mask = _ragged_rows(rng, lambda r, n: scipy.special.expit(r.normal(2, 1.5, n)))
    scores[1, 2] = 1.0
    fit = fam.get("logitnormal").fit(scores, mask)
    p = _np_params(fit.params)
    for q in range(Q):
        x = _clamp(scores[q, mask[q]])
        mu, sd = scipy.stats.norm.fit(scipy.special.logit(x))
        np.testing.assert_allclose([p["mu"][q], p["sigma"][q]], [mu, sd], rtol=1e-9)
        ref = _scipy_logpdf("logitnormal", {"mu": mu, "sigma": sd}, x).sum()
        np.testing.assert_allclose(float(fit.log_lik[q]), ref, rtol=1e-9)


def test_truncnorm_family_is_fit_mle_and_matches_scipy():
    rng = np.random.default_rng(5)
    scores, mask = _ragged_rows(rng, lambda r, n: np.clip(r.normal(0.7, 0.2, n), 0, 1))
    fit = fam.get("truncnorm").fit(scores, mask)
    ref = fit_mle(scores, mask)
    np.testing.assert_array_equal(fit.params["mu"], ref.mu)
    np.testing.assert_array_equal(fit.status, ref.status)
    for q in range(Q):
        x = scores[q, mask[q]]

        def nll(t, x=x):
            mu, sg = t[0], np.exp(t[1])
            return -scipy.stats.truncnorm.logpdf(x, -mu / sg, (1 - mu) / sg, mu, sg).sum()

        best = scipy.optimize.minimize(nll, [x.mean(), np.log(x.std() + 1e-2)], method="Nelder-Mead",
                                       options={"xatol": 1e-10, "fatol": 1e-12, "maxiter": 4000})
        assert float(fit.log_lik[q]) >= -best.fun - 1e-6


def _mixture_objective_np(theta, x, loc=None, scale=None):
    w = scipy.special.expit(theta[0])
    m_lo = scipy.special.expit(theta[1])
    m_hi = m_lo + (1 - m_lo) * scipy.special.expit(theta[2])
    k_lo, k_hi = np.exp(theta[3]), np.exp(theta[4])
    p = {"w": w, "a_lo": m_lo * k_lo, "b_lo": (1 - m_lo) * k_lo, "a_hi": m_hi * k_hi,
         "b_hi": (1 - m_hi) * k_hi}
    v = _scipy_logpdf("mixture", p, x).sum()
    if loc is not None:
        v += scipy.stats.norm.logpdf(theta, loc, scale).sum()
    return v


def test_mixture_fit_matches_scipy_minimize_and_keeps_labels():
    rng = np.random.default_rng(6)
    scores, mask = _ragged_rows(rng, _bimodal)
    f = fam.get("mixture")
    fit = f.fit(scores, mask)
    p = _np_params(fit.params)
    # label-switching guard: the low component's mean is below the high one's
    assert np.all(p["a_lo"] / (p["a_lo"] + p["b_lo"]) < p["a_hi"] / (p["a_hi"] + p["b_hi"]))
    starts = np.asarray(f.starts(jnp.asarray(scores), jnp.asarray(mask)))
    bounds = list(zip(f.lower, f.upper, strict=True))
    for q in range(Q):
        x = scores[q, mask[q]]
        ref = -np.inf
        for t0 in list(starts[q]) + [rng.uniform(f.lower, f.upper) for _ in range(2)]:
            r = scipy.optimize.minimize(lambda t, x=x: -_mixture_objective_np(t, x), t0,
                                        method="L-BFGS-B", bounds=bounds)
            ref = max(ref, -r.fun)
        assert float(fit.log_lik[q]) >= ref - 1e-3, (q, float(fit.log_lik[q]), ref)
        # the reported log likelihood is the objective at the reported parameters
        theta = np.asarray(f.to_theta({k: v[q] for k, v in fit.params.items()}))
        np.testing.assert_allclose(_mixture_objective_np(theta, x), float(fit.log_lik[q]), rtol=1e-6)


def test_beta_map_with_moment_matched_prior_matches_scipy():
    rng = np.random.default_rng(7)
    scores, mask = _ragged_rows(rng, lambda r, n: r.beta(8, 1, n))
    prior = GaussianPrior(np.full(Q, 0.9295), 0.1, np.full(Q, 0.068), 0.1)
    f = fam.get("beta")
    fit = f.fit(scores, mask, prior=prior)
    tp = f.theta_prior(prior, Q)
    # the moment match: a beta with the prior centre's mean and std
    a0, b0 = np.exp(tp.loc[0])
    np.testing.assert_allclose(scipy.stats.beta.mean(a0, b0), 0.9295, rtol=1e-9)
    np.testing.assert_allclose(scipy.stats.beta.std(a0, b0), 0.068, rtol=1e-9)
    for q in range(Q):
        x = _clamp(scores[q, mask[q]])

        def neg(t, x=x):
            return -(scipy.stats.beta.logpdf(x, *np.exp(t)).sum()
                     + scipy.stats.norm.logpdf(t, tp.loc[q], tp.scale[q]).sum())

        r = scipy.optimize.minimize(neg, tp.loc[q], method="Nelder-Mead",
                                    options={"xatol": 1e-10, "fatol": 1e-12})
        np.testing.assert_allclose(float(fit.log_lik[q]), -r.fun, atol=1e-6)
        np.testing.assert_allclose(np.log([fit.params["a"][q], fit.params["b"][q]]), r.x, atol=1e-3)


@pytest.mark.parametrize("name", ["beta", "logitnormal", "mixture"])
def test_statuses_no_data_and_degenerate(name):
    scores = np.full((Q, N), 0.8)
    scores[0] = np.linspace(0.3, 0.95, N)
    mask = np.zeros((Q, N), bool)
    mask[0] = True  # usable
    mask[2, :1] = True  # one score: DEGENERATE
    mask[3, :4] = True  # equal scores: DEGENERATE
    # rows 1, 4, 5: NO_DATA
    fit = fam.get(name).fit(scores, mask)
    st = np.asarray(fit.status)
    assert st[1] == st[4] == FitStatus.NO_DATA and st[2] == st[3] == FitStatus.DEGENERATE
    assert list(fit_status_usable(st)) == [True, False, False, False, False, False]
    assert all(np.isnan(np.asarray(v)[1]) for v in fit.params.values())
    # no fit: N* is the budget
    assert int(fam.n_star_family(name, fit.params, 0.9, 0.95, n_max=64)[1]) == 64


def test_bad_input_raises_clear_errors():
    f = fam.get("beta")
    with pytest.raises(ValueError, match=r"scores\[0, 1\] = nan"):
        f.fit([[0.5, float("nan")]])
    with pytest.raises(ValueError, match=r"scores\[0, 0\] = 1.5"):
        f.fit([[1.5, 0.5]])
    with pytest.raises(ValueError, match="s_min must lie in"):
        fam.n_star_family("beta", {"a": 1.0, "b": 1.0}, 1.2, 0.95)
    with pytest.raises(ValueError, match="alpha must lie in"):
        fam.n_star_family("logitnormal", {"mu": 0.0, "sigma": 1.0}, 0.5, 1.0)
    with pytest.raises(ValueError, match="unknown score family"):
        fam.n_star_family("nope", {}, 0.5, 0.9)
    with pytest.raises(ValueError, match="does not take a GaussianPrior"):
        fam.get("mixture").fit([[0.2, 0.9]], prior=GaussianPrior(0.9, 0.1, 0.1, 0.1))
    with pytest.raises(ValueError, match="prior.scale must be finite and > 0"):
        f.fit([[0.2, 0.9]], prior=fam.UnconstrainedPrior([0.0, 0.0], [1.0, -1.0]))
    with pytest.raises(ValueError, match="prior must be None, 'weak'"):
        f.fit([[0.2, 0.9]], prior="strong")


def test_family_model_log_density_is_objective_plus_prior():
    from numpyro.infer.util import log_density

    rng = np.random.default_rng(8)
    f = fam.get("beta")
    scores, mask = _ragged_rows(rng, lambda r, n: r.beta(4, 1, n))
    theta = rng.normal(size=(Q, 2))
    tp = f.theta_prior("weak", Q)
    ld, _ = log_density(fam.family_model, (f, scores, mask), {}, {"theta": theta})
    want = 0.0
    for q in range(Q):
        x = scores[q, mask[q]]
        want += scipy.stats.beta.logpdf(_clamp(x), *np.exp(theta[q])).sum()
        want += scipy.stats.norm.logpdf(theta[q], tp.loc[q], tp.scale[q]).sum()
    np.testing.assert_allclose(float(ld), want, rtol=1e-9)


def test_optscale_policy_with_a_family_stops_at_its_n_star():
    from optscale_jax.policies import Observed
    from optscale_jax.policies.registry import make

    rng = np.random.default_rng(9)
    scores, _ = _ragged_rows(rng, lambda r, n: r.beta(6, 1, n))
    mask = np.zeros((Q, N), bool)
    mask[:, :5] = True  # the one-shot peek for n_max = 16
    obs = Observed(scores=scores, mask=mask, answer_ids=np.zeros((Q, N), np.int32),
                   tokens=np.ones((Q, N), int))
    pol = make("OptScale0", n_max=16, s_min=0.97, alpha=0.9, family="beta")
    assert pol.name == "OptScale0-oneshot-beta" and pol.k == 5
    fit = fam.get("beta").fit(scores, mask)
    p = _np_params(fit.params)
    F = scipy.stats.beta.cdf(0.97, p["a"], p["b"])
    brute = [next((n for n in range(1, 17) if 1 - F[q] ** n >= 0.9), 16) for q in range(Q)]
    np.testing.assert_array_equal(pol.want(obs), np.clip(brute, 5, 16))
    with pytest.raises(ValueError, match="unknown score family"):
        make("OptScale0", n_max=16, family="gamma")
