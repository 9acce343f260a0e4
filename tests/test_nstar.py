"""N* against brute-force searches over N, high-precision references and the official rule."""

import jax
import jax.numpy as jnp
import mpmath as mp
import numpy as np
import pytest
import scipy.stats as st
from hypothesis import given, settings
from hypothesis import strategies as hs

from optscale_jax.nstar import (
    exceedance_probability,
    n_star,
    n_star_from_log_cdf,
    n_star_official,
    posterior_exceedance_probability,
    posterior_n_star,
)


def _brute_force(f, alpha, n_max):
    """Smallest N with 1 − F^N ≥ α, by walking N upwards."""
    for n in range(1, n_max + 1):
        if 1 - f**n >= alpha:
            return n
    return n_max


def test_closed_form_equals_brute_force():
    rng = np.random.default_rng(0)
    mu = rng.uniform(0.4, 1.3, 400)
    sigma = rng.uniform(0.02, 0.4, 400)
    s_min = rng.choice([0.85, 0.9, 0.95, 0.99], 400)
    alpha = rng.choice([0.9, 0.95, 0.99], 400)
    got = np.asarray(n_star(mu, sigma, s_min, alpha, n_max=500))
    f = st.truncnorm(-mu / sigma, (1 - mu) / sigma, loc=mu, scale=sigma).cdf(s_min)
    want = np.array([_brute_force(fi, a, 500) for fi, a in zip(f, alpha)])
    assert np.array_equal(got, want), np.flatnonzero(got != want)[:5]


def test_exact_when_f_is_within_1e12_of_one_or_zero():
    mp.mp.dps = 50

    def f_mp(mu, sigma, s):
        a, b, z = -mp.mpf(mu) / sigma, (1 - mp.mpf(mu)) / sigma, (mp.mpf(s) - mu) / sigma
        return (mp.ncdf(z) - mp.ncdf(a)) / (mp.ncdf(b) - mp.ncdf(a))

    # F(s_min) = 1 - ~1e-13: the best of N almost never reaches s_min.
    mu, sigma, s = 0.3, 0.09, 0.99
    f = f_mp(mu, sigma, s)
    assert 1 - f < 1e-12
    # (a small alpha keeps N* inside int32)
    want = int(mp.ceil(mp.log(1 - mp.mpf("1e-7")) / mp.log(f)))
    assert int(n_star(mu, sigma, s, 1e-7)) == want
    # F(s_min) ~ 1e-13: a single sample is enough.
    mu, sigma, s = 0.98, 0.004, 0.95
    assert f_mp(mu, sigma, s) < 1e-12
    assert int(n_star(mu, sigma, s, 0.99)) == 1


def test_edges_clip_and_nan():
    # s_min above everything the law can reach (F = 1): n_max; NaN fit: n_max.
    assert int(n_star(0.2, 0.01, 1.0, 0.9, n_max=64)) == 64
    assert int(n_star(jnp.nan, jnp.nan, 0.9, 0.9, n_max=64)) == 64
    assert int(n_star(0.2, 0.01, 0.99, 0.9)) == np.iinfo(np.int32).max
    assert int(n_star(0.9, 0.1, 0.5, 0.9, n_min=3)) == 3
    assert int(n_star_from_log_cdf(-jnp.inf, 0.9, n_min=2)) == 2
    with pytest.raises(ValueError, match="alpha"):
        n_star(0.9, 0.1, 0.9, 1.5)


def test_broadcasting_and_jit():
    mu = jnp.linspace(0.5, 1.0, 7)[:, None, None]
    sigma = jnp.array([0.05, 0.2])[None, :, None]
    s_min = jnp.array([0.9, 0.95, 0.99])[None, None, :]
    out = n_star(mu, sigma, s_min, 0.9, n_max=64)
    assert out.shape == (7, 2, 3) and out.dtype == jnp.int32
    jitted = jax.jit(lambda m, s, t: n_star(m, s, t, 0.9, n_max=64))
    assert np.array_equal(jitted(mu, sigma, s_min), out)
    # more confidence or a higher bar never asks for fewer samples
    assert np.all(np.diff(np.asarray(out), axis=2) >= 0)


def test_exceedance_probability_matches_scipy():
    d = st.truncnorm(-0.9 / 0.1, 0.1 / 0.1, loc=0.9, scale=0.1)
    for n in (1, 4, 32):
        np.testing.assert_allclose(exceedance_probability(0.9, 0.1, 0.95, n), 1 - d.cdf(0.95) ** n, rtol=1e-12)


def _official_loop(mu, sigma, s_min, alpha, n_max, grid=1000):
    """A plain per-pair restatement of the official grid scan, with scipy."""
    x = np.linspace(0, 1, grid)
    d = st.truncnorm(-mu / sigma, (1 - mu) / sigma, loc=mu, scale=sigma)
    cdf, pdf = d.cdf(x), d.pdf(x)
    for n in range(1, n_max + 1):
        dens = n * cdf ** (n - 1) * pdf
        cum = np.cumsum(dens)
        cum = cum / cum[-1]
        if x[np.argmax(cum >= 1 - alpha)] >= s_min:
            return n
    return n_max


def test_official_rule_matches_its_restatement_and_differs_rarely_from_closed_form():
    rng = np.random.default_rng(1)
    mu = rng.uniform(0.6, 1.2, 150)
    sigma = rng.uniform(0.03, 0.3, 150)
    s_min, alpha = 0.95, 0.9
    ours = np.asarray(n_star_official(mu, sigma, s_min, alpha, n_max=64))
    loop = np.array([_official_loop(m, s, s_min, alpha, 64) for m, s in zip(mu, sigma)])
    assert np.mean(ours == loop) >= 0.98  # float rounding at exact grid ties only
    closed = np.asarray(n_star(mu, sigma, s_min, alpha, n_max=64))
    differ = ours != closed
    # Report how often and by how much the grid rule departs from the closed form.
    print(f"official grid rule vs closed form: {differ.mean():.1%} of pairs differ, max |ΔN| = "
          f"{np.abs(ours - closed).max()}")
    assert differ.mean() < 0.15
    assert np.abs(ours - closed).max() <= 3


@settings(max_examples=30, deadline=None)
@given(
    mu=hs.floats(0.0, 2.0),
    log_sigma=hs.floats(np.log(0.01), np.log(1.0)),
    s_min=hs.floats(0.5, 0.99),
    alpha=hs.floats(0.5, 0.99),
)
def test_property_n_star_is_the_smallest_sufficient_n(mu, log_sigma, s_min, alpha):
    sigma = float(np.exp(log_sigma))
    n = int(n_star(mu, sigma, s_min, alpha, n_max=10_000))
    if n < 10_000:
        assert float(exceedance_probability(mu, sigma, s_min, n)) >= alpha - 1e-12
    if n > 1:
        assert float(exceedance_probability(mu, sigma, s_min, n - 1)) < alpha + 1e-12


def test_posterior_predictive_reduces_to_plug_in_for_a_point_mass():
    mu = jnp.full((50, 3), 0.9)
    sigma = jnp.full((50, 3), 0.1)
    pp = posterior_n_star(mu, sigma, 0.95, 0.9, n_max=64)
    np.testing.assert_array_equal(pp, n_star(0.9, 0.1, 0.95, 0.9, n_max=64) * np.ones(3))


def test_posterior_predictive_averages_f_to_the_n():
    """Two equally likely laws: P = 1 − (F1^n + F2^n)/2, checked by hand."""
    mu = jnp.array([0.8, 0.97])
    sigma = jnp.array([0.1, 0.05])
    d = [st.truncnorm(-m / s, (1 - m) / s, loc=m, scale=s) for m, s in zip([0.8, 0.97], [0.1, 0.05])]
    n = np.arange(1, 200)
    want = 1 - 0.5 * (d[0].cdf(0.95) ** n + d[1].cdf(0.95) ** n)
    np.testing.assert_allclose(posterior_exceedance_probability(mu, sigma, 0.95, n), want, rtol=1e-10)
    brute = next(k for k in n if want[k - 1] >= 0.9)
    assert int(posterior_n_star(mu, sigma, 0.95, 0.9, n_max=199)) == brute


def _exact_n_star(mu, sigma, s_min, alpha, **kw):
    """The all-float64 path: the tail-stable log CDF, then the closed form."""
    from optscale_jax.distributions import truncnorm01_log_cdf

    return np.asarray(n_star_from_log_cdf(truncnorm01_log_cdf(s_min, mu, sigma), alpha, **kw))


def _near_integer_alpha(rng, mu, sigma, s_min, alpha, frac, offsets):
    """Replace alpha on a fraction of rows so that log(1 − α)/log F = k (1 + offset)."""
    from optscale_jax.distributions import truncnorm01_log_cdf

    n = len(mu)
    log_f = np.asarray(truncnorm01_log_cdf(s_min, mu, sigma))
    k = rng.integers(1, 60, n) * (1 + rng.choice(offsets, n))
    near = (rng.random(n) < frac) & (log_f < -1e-3) & (k * log_f > -30)
    return np.where(near, -np.expm1(k * log_f), alpha)


def test_float64_screening_equals_the_exact_float64_path():
    """Large float64 batches take a cheap closed form and recompute only doubtful pairs
    with the tail-stable log CDF; the answer must equal the all-float64 one, including
    ratios a hair (1e-16 … 1e-9 relative) from an integer, and every branch of the
    recomputation (a few, more, most, all pairs doubtful) must be exercised."""
    from optscale_jax.nstar import _log_cdf_screen, _screen_block

    rng = np.random.default_rng(7)
    n = 20_000  # caps of the recomputation buffer: 256, 1250, 5000, then everything
    offsets = [0.0, 1e-16, -1e-16, 1e-14, -1e-14, 1e-12, -1e-12, 1e-9, -1e-9]
    branches = set()
    jitted = jax.jit(lambda *a: n_star(*a, n_max=64))
    screen = jax.jit(lambda *a: _screen_block(*a, 1, 64)[1])
    for frac, wide in [(0.01, False), (0.1, False), (0.35, False), (0.9, True)]:
        if wide:
            mu, sigma = rng.uniform(-3, 3, n), np.exp(rng.uniform(np.log(1e-3), np.log(10), n))
        else:
            mu, sigma = rng.uniform(0.6, 1.3, n), rng.uniform(0.05, 0.3, n)
        s_min = rng.uniform(0.5, 1, n)
        alpha = _near_integer_alpha(rng, mu, sigma, s_min, rng.uniform(0.3, 0.999, n), frac, offsets)
        want = _exact_n_star(mu, sigma, s_min, alpha, n_max=64)
        got = np.asarray(jitted(mu, sigma, s_min, alpha))
        assert np.array_equal(got, want), (frac, np.flatnonzero(got != want)[:5])
        suspect = screen(mu, sigma, s_min, alpha)
        branches.add(int(np.searchsorted([256, 1250, 5000], int(np.sum(suspect)))))
    assert branches == {0, 1, 2, 3}, branches
    # realistic inputs, where nearly every pair takes the cheap answer
    mu, sigma = rng.uniform(0.6, 1.3, n), rng.uniform(0.03, 0.3, n)
    want = _exact_n_star(mu, sigma, 0.95, 0.9, n_max=64)
    assert np.array_equal(np.asarray(n_star(mu, sigma, 0.95, 0.9, n_max=64)), want)
    _, rel = _log_cdf_screen(0.95, jnp.asarray(mu), jnp.asarray(sigma))
    assert float(np.max(rel)) < 1e-12  # the bound is tight enough to decide almost every pair


def test_float64_screening_on_adversarial_inputs():
    """σ tiny and huge, μ far outside [0, 1], s_min at (and a hair from) 0 and 1, α near
    0 and 1, NaN fits, n_min / n_max caps, a size that is not a multiple of the block,
    one pass or blocks: always the all-float64 answer."""
    from optscale_jax.nstar import _n_star_screened, _screen_block

    rng = np.random.default_rng(11)
    n = 20_011
    kind = rng.integers(0, 4, n)
    mu = np.select(
        [kind == 0, kind == 1, kind == 2],
        [rng.uniform(0.3, 1.5, n), rng.uniform(-20, 20, n), rng.normal(0.5, 3, n)],
        rng.uniform(-1e3, 1e3, n),
    )
    sigma = np.where(
        kind == 0,
        np.exp(rng.uniform(np.log(0.01), np.log(1), n)),
        np.exp(rng.uniform(np.log(1e-4), np.log(1e4), n)),
    )
    edges = [0.0, 1.0, 5e-324, 1e-300, 1 - 1e-16, 0.5]
    s_min = np.where(rng.random(n) < 0.05, rng.choice(edges, n), rng.uniform(0, 1, n))
    tiny_big = [1e-300, 1e-16, 1e-9, 0.5, 1 - 1e-9, 1 - 1e-16]
    alpha = np.where(rng.random(n) < 0.3, rng.choice(tiny_big, n), rng.uniform(0.01, 0.999, n))
    alpha = _near_integer_alpha(rng, mu, sigma, s_min, alpha, 0.2, [0.0, 1e-15, -1e-13, 1e-12])
    alpha = np.where((alpha > 0) & (alpha < 1), alpha, 0.5)
    mu[rng.random(n) < 0.02] = np.nan
    args = [jnp.asarray(v) for v in (mu, sigma, s_min, alpha)]
    for n_min, n_max in [(1, 64), (1, None), (3, 10)]:
        want = _exact_n_star(mu, sigma, s_min, alpha, n_min=n_min, n_max=n_max)
        got = np.asarray(n_star(mu, sigma, s_min, alpha, n_min=n_min, n_max=n_max))
        assert np.array_equal(got, want), (n_min, n_max, np.flatnonzero(got != want)[:5])
    # blocks with a padded last one (above) and one pass give the same
    got = _n_star_screened(*args, n_min=3, n_max=10, chunk=None)
    assert np.array_equal(np.asarray(got), want)
    # most pairs here are recomputed anyway, so check the cheap answer itself wherever
    # the screen trusts it
    fast, suspect = (np.asarray(v) for v in _screen_block(*args, 3, 10))
    assert np.mean(~suspect) > 0.4
    assert np.array_equal(fast[~suspect], want[~suspect])
    # s_min a hair below 1: the cheap upper mass rounds to <= 0 on some rows and must not
    # be trusted (with a tiny alpha the exact answer is 1, an untrusted one n_max)
    # (a few such rows among ordinary ones, so that they are not all recomputed anyway)
    m = 5000
    mu, sigma = rng.uniform(0.6, 1.3, m), rng.uniform(0.05, 0.3, m)
    s_min, alpha = np.full(m, 0.9), np.full(m, 0.9)
    mu[:40], sigma[:40] = rng.uniform(-2, 3, 40), np.exp(rng.uniform(-5, 1, 40))
    mu[0], sigma[0] = 0.6439834935952347, 0.30124793296941904  # such a row
    s_min[:40], alpha[:40] = np.nextafter(1.0, 0.0), 1e-300
    want = _exact_n_star(mu, sigma, s_min, alpha, n_max=64)
    assert want[0] == 1
    assert np.array_equal(np.asarray(n_star(mu, sigma, s_min, alpha, n_max=64)), want)
    # "no fit" rows are answered n_max by the cheap pass, not recomputed
    nan_mu = jnp.full(5000, jnp.nan)
    out, suspect = _screen_block(nan_mu, nan_mu, jnp.full(5000, 0.9), jnp.full(5000, 0.9), 1, 64)
    assert not bool(np.any(suspect)) and np.all(np.asarray(out) == 64)


def test_screen_error_bound_holds_against_mpmath():
    """The cheap log F is within its stated relative-error bound of 60-digit mpmath,
    wherever the screen trusts it (up to ~37 σ out, σ from 1e-3 to 1e3)."""
    from optscale_jax.nstar import _log_cdf_screen

    mp.mp.dps = 60
    rng = np.random.default_rng(3)
    n = 4000
    mu = np.where(rng.random(n) < 0.5, rng.uniform(0.3, 1.5, n), rng.uniform(-30, 30, n))
    sigma = np.exp(rng.uniform(np.log(1e-3), np.log(1e3), n))
    s_min = rng.uniform(0, 1, n)
    log_f, rel = (np.asarray(v) for v in _log_cdf_screen(*(jnp.asarray(v) for v in (s_min, mu, sigma))))
    trusted = np.flatnonzero(rel < 1e-7)
    assert len(trusted) > n // 4
    idx = np.concatenate([rng.choice(trusted, 150, replace=False), trusted[np.argsort(-rel[trusted])[:30]]])

    def mass(lo, hi):
        return mp.ncdf(-lo) - mp.ncdf(-hi) if lo > 0 else mp.ncdf(hi) - mp.ncdf(lo)

    worst = 0.0
    for i in idx:
        m, s, t = (mp.mpf(float(v[i])) for v in (mu, sigma, s_min))
        a, b, z = -m / s, (1 - m) / s, (t - m) / s
        ref = -mp.log1p(mass(z, b) / mass(a, z))
        worst = max(worst, float(abs((log_f[i] - ref) / ref)) / rel[i])
    assert worst <= 1.0, worst
