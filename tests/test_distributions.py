"""TruncatedNormal01 against scipy (moderate tails) and mpmath (any tail)."""

import itertools

import jax
import jax.numpy as jnp
import mpmath as mp
import numpy as np
import numpyro.distributions as dist
import pytest
import scipy.stats as st
from hypothesis import given, settings
from hypothesis import strategies as hs

from optscale_jax.distributions import (
    TruncatedNormal01,
    moments,
    params_from_moments,
    truncnorm01_icdf,
    truncnorm01_log_cdf,
    truncnorm01_log_prob,
    truncnorm01_log_sf,
)

mp.mp.dps = 60

LOCS = [-50.0, -5.0, 0.0, 0.3, 0.5, 0.9, 1.0, 2.0, 10.0, 50.0]
SCALES = [1e-3, 0.01, 0.1, 1.0, 10.0]
XS = [0.0, 0.01, 0.3, 0.5, 0.97, 0.999, 1.0]


def _mass(lo, hi):
    """Φ(hi) − Φ(lo) in high precision, mirrored into the accurate tail."""
    if lo > 0:
        return mp.ncdf(-lo) - mp.ncdf(-hi)
    return mp.ncdf(hi) - mp.ncdf(lo)


def _ref(x, loc, scale):
    x, loc, scale = mp.mpf(float(x)), mp.mpf(float(loc)), mp.mpf(float(scale))
    a, b, z = -loc / scale, (1 - loc) / scale, (x - loc) / scale
    log_z = mp.log(_mass(a, b))
    logpdf = -z * z / 2 - mp.log(scale) - mp.log(mp.sqrt(2 * mp.pi)) - log_z
    cdf_mass, sf_mass = _mass(a, z), _mass(z, b)
    logcdf = mp.log(cdf_mass) - log_z if cdf_mass > 0 else -mp.inf
    logsf = mp.log(sf_mass) - log_z if sf_mass > 0 else -mp.inf
    return float(logpdf), float(logcdf), float(logsf)


def _close(got, want, rtol):
    if np.isinf(want):
        return got == want
    return abs(got - want) <= rtol * max(1.0, abs(want))


@pytest.mark.parametrize("dtype,rtol", [(jnp.float64, 1e-11), (jnp.float32, 2e-5)])
def test_reference_table_every_tail(dtype, rtol):
    """log pdf, log cdf, log sf within tolerance of 60-digit mpmath, up to 5e4 σ out."""
    pts = np.array(list(itertools.product(XS, LOCS, SCALES)))
    xd, ld, sd = (jnp.asarray(pts[:, i], dtype) for i in range(3))
    got = np.stack(
        [
            np.asarray(f(xd, ld, sd), np.float64)
            for f in (truncnorm01_log_prob, truncnorm01_log_cdf, truncnorm01_log_sf)
        ],
        axis=1,
    )
    failures = []
    for i, (x, loc, scale) in enumerate(np.stack([np.asarray(v, np.float64) for v in (xd, ld, sd)], 1)):
        want = _ref(x, loc, scale)  # reference at the rounded inputs
        for name, g, w in zip(("logpdf", "logcdf", "logsf"), got[i], want):
            if not _close(g, w, rtol):
                failures.append((name, loc, scale, x, g, w))
    assert not failures, failures[:5]


def test_matches_scipy_in_moderate_tails():
    rng = np.random.default_rng(0)
    loc = rng.uniform(-1, 2, 200)
    scale = rng.uniform(0.05, 2, 200)
    x = rng.uniform(0, 1, 200)
    ref = st.truncnorm(-loc / scale, (1 - loc) / scale, loc=loc, scale=scale)
    np.testing.assert_allclose(truncnorm01_log_prob(x, loc, scale), ref.logpdf(x), rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(jnp.exp(truncnorm01_log_cdf(x, loc, scale)), ref.cdf(x), rtol=1e-10, atol=1e-14)
    q = rng.uniform(0.01, 0.99, 200)
    np.testing.assert_allclose(truncnorm01_icdf(q, loc, scale), ref.ppf(q), rtol=1e-9, atol=1e-12)
    m, s = moments(loc, scale)
    np.testing.assert_allclose(m, ref.mean(), rtol=1e-10)
    np.testing.assert_allclose(s, ref.std(), rtol=1e-9)


def test_numpyro_truncated_normal_fails_where_we_do_not():
    """A known trap: numpyro loses the normaliser when [0, 1] lies far above loc."""
    loc, scale, x = -10.0, 1.0, 0.9
    want = _ref(x, loc, scale)[0]
    theirs = float(dist.TruncatedNormal(loc, scale, low=0.0, high=1.0).log_prob(x))
    ours = float(truncnorm01_log_prob(x, loc, scale))
    assert not np.isfinite(theirs)
    assert abs(ours - want) < 1e-12 * abs(want)
    # float32 at 5σ: numpyro is off in the second decimal, we are not.
    f32 = [jnp.float32(v) for v in (x, -5.0, scale)]
    want32 = _ref(*(float(v) for v in f32))[0]
    theirs32 = float(dist.TruncatedNormal(f32[1], f32[2], low=0.0, high=1.0).log_prob(f32[0]))
    assert abs(theirs32 - want32) > 1e-2
    assert abs(float(truncnorm01_log_prob(*f32)) - want32) < 1e-5


def test_cdf_derivative_is_pdf():
    grad_cdf = jax.vmap(jax.grad(lambda x, m, s: jnp.exp(truncnorm01_log_cdf(x, m, s))))
    x = jnp.array([0.1, 0.5, 0.9, 0.99, 0.5, 0.3])
    m = jnp.array([0.9, 0.5, 3.0, 20.0, -2.0, 0.3])
    s = jnp.array([0.1, 1.0, 0.5, 1.0, 0.5, 0.001])
    np.testing.assert_allclose(grad_cdf(x, m, s), jnp.exp(truncnorm01_log_prob(x, m, s)), rtol=1e-8)


def test_icdf_inverts_cdf_in_the_tails():
    q = jnp.array([1e-12, 1e-6, 0.01, 0.5, 0.99, 1 - 1e-9])
    for loc, scale in [(0.9, 0.1), (50.0, 1.0), (-50.0, 10.0), (0.5, 1e-3), (5.0, 0.01)]:
        x = truncnorm01_icdf(q, loc, scale)
        assert bool(jnp.all((x >= 0) & (x <= 1)))
        back = jnp.exp(truncnorm01_log_cdf(x, loc, scale))
        np.testing.assert_allclose(back, q, rtol=1e-6, err_msg=f"loc={loc}, scale={scale}")


def test_gradients_match_finite_differences():
    def f(theta, x):
        return jnp.sum(truncnorm01_log_prob(x, theta[0], theta[1]))

    x = jnp.array([0.2, 0.7, 0.95])
    for theta in [jnp.array([0.8, 0.2]), jnp.array([3.0, 0.7]), jnp.array([-1.0, 0.5]), jnp.array([30.0, 3.0])]:
        g = jax.grad(f)(theta, x)
        h = 1e-6
        fd = jnp.array([(f(theta + h * e, x) - f(theta - h * e, x)) / (2 * h) for e in jnp.eye(2)])
        np.testing.assert_allclose(g, fd, rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize(
    "dtype,fn", [(jnp.float32, truncnorm01_log_cdf), (jnp.float64, truncnorm01_log_prob)]
)
def test_gradients_finite_everywhere(dtype, fn):
    grad = jax.vmap(jax.grad(lambda m, s, x: fn(x, m, s), argnums=(0, 1)))
    pts = np.array(list(itertools.product(LOCS, SCALES, [0.01, 0.5, 0.97])), dtype=np.float64)
    m, s, x = (jnp.asarray(pts[:, i], dtype) for i in range(3))
    gm, gs = grad(m, s, x)
    assert bool(jnp.all(jnp.isfinite(gm)) and jnp.all(jnp.isfinite(gs)))


def test_gradient_through_icdf_is_implicit_function():
    """d icdf/d loc = −(∂F/∂loc)/p, checked by finite differences."""
    q = 0.3
    g = jax.grad(lambda m: truncnorm01_icdf(q, m, 0.2))(0.8)
    h = 1e-6
    fd = (truncnorm01_icdf(q, 0.8 + h, 0.2) - truncnorm01_icdf(q, 0.8 - h, 0.2)) / (2 * h)
    np.testing.assert_allclose(g, fd, rtol=1e-5)


@pytest.mark.parametrize("dtype", [jnp.float32, jnp.float64])
def test_samples_inside_support_and_distributed_right(dtype):
    key = jax.random.key(0)
    loc = jnp.asarray([50.0, -50.0, 0.5, 20.0, 0.8], dtype)
    scale = jnp.asarray([1e-3, 1e-3, 1e-3, 1.0, 0.3], dtype)
    x = TruncatedNormal01(loc, scale).sample(key, (4000,))
    assert x.dtype == dtype and x.shape == (4000, 5)
    assert bool(jnp.all((x >= 0) & (x <= 1)))
    ref = st.truncnorm(-0.8 / 0.3, 0.2 / 0.3, loc=0.8, scale=0.3)
    assert st.kstest(np.asarray(x[:, 4], float), ref.cdf).pvalue > 1e-3


def test_moments_far_tail_against_mpmath():
    for loc, scale in [(50.0, 1e-3), (3.0, 0.5), (-40.0, 10.0), (0.5, 1e-3), (1.0, 0.01)]:
        a, b = -mp.mpf(loc) / scale, (1 - mp.mpf(loc)) / scale
        z = _mass(a, b)
        dens = lambda x: mp.npdf((x - loc) / mp.mpf(scale)) / scale / z  # noqa: E731
        lo, hi = mp.mpf(0), mp.mpf(1)
        pts = [lo, hi] if scale > 0.05 else sorted({lo, hi, mp.mpf(max(0, min(1, loc)))})
        mean = mp.quad(lambda x: x * dens(x), pts)
        var = mp.quad(lambda x: (x - mean) ** 2 * dens(x), pts)
        m, s = moments(loc, scale)
        np.testing.assert_allclose(float(m), float(mean), rtol=1e-10)
        np.testing.assert_allclose(float(s), float(mp.sqrt(var)), rtol=1e-7)


def test_distribution_mean_variance_and_jit():
    d = TruncatedNormal01(jnp.array([0.9, 0.2]), jnp.array([0.1, 0.3]))
    m, s = moments(d.loc, d.scale)
    np.testing.assert_allclose(d.mean, m)
    np.testing.assert_allclose(d.variance, s**2)
    x = jnp.array([0.5, 0.5])
    np.testing.assert_allclose(jax.jit(lambda v: d.log_prob(v))(x), d.log_prob(x), rtol=1e-14)
    assert d.batch_shape == (2,)
    assert float(TruncatedNormal01(0.5, 1.0).log_prob(1.5)) == -np.inf


def test_params_from_moments_round_trip_and_errors():
    loc = jnp.array([0.5, 0.9, 2.0, -0.5, 0.95])
    scale = jnp.array([0.1, 0.1, 0.5, 0.3, 0.03])
    mean, std = moments(loc, scale)
    loc2, scale2 = params_from_moments(mean, std)
    np.testing.assert_allclose(loc2, loc, rtol=1e-6)
    np.testing.assert_allclose(scale2, scale, rtol=1e-6)
    # std too large for the mean (beyond the truncated-exponential limit), and out of range.
    bad_mean = jnp.array([0.93, 0.5, 1.2, 0.5])
    bad_std = jnp.array([0.2, 0.3, 0.1, -0.1])
    l, s = params_from_moments(bad_mean, bad_std)
    assert bool(jnp.all(jnp.isnan(l)) and jnp.all(jnp.isnan(s)))
    with pytest.raises(ValueError, match=r"mean=0.93, std=0.2"):
        params_from_moments(bad_mean, bad_std, strict=True)


@settings(max_examples=40, deadline=None)
@given(
    loc=hs.floats(-20, 20),
    log_scale=hs.floats(np.log(0.01), np.log(10)),
    x=hs.floats(0.0, 1.0),
)
def test_property_cdf_plus_sf_is_one(loc, log_scale, x):
    scale = float(np.exp(log_scale))
    lc = float(truncnorm01_log_cdf(x, loc, scale))
    ls = float(truncnorm01_log_sf(x, loc, scale))
    assert np.isclose(np.exp(lc) + np.exp(ls), 1.0, atol=1e-12)


@pytest.mark.parametrize("dtype,rtol", [(jnp.float64, 1e-13), (jnp.float32, 2e-6)])
def test_scaled_log_ndtr_on_a_fine_grid(dtype, rtol):
    """G(t) = log Φ(t) + t²/2 on a fine grid: guards the erfcx hole of jax 0.10
    (zero for arguments near 26.6 in float64 and 9.3 in float32)."""
    import scipy.special as ss

    from optscale_jax._truncnorm import g as _g

    t = np.concatenate([np.linspace(-60.0, 0.0, 6001), -np.sqrt(2) * np.array([26.6, 9.3])])
    t = np.asarray(jnp.asarray(t, dtype), np.float64)
    want = np.log(0.5 * ss.erfcx(-t / np.sqrt(2)))
    got = np.asarray(_g(jnp.asarray(t, dtype)), np.float64)
    np.testing.assert_allclose(got, want, rtol=rtol, atol=rtol)
    # The failing point found by the property test: a finite log density.
    assert np.isfinite(float(truncnorm01_log_prob(0.7737, -0.53619, 0.0142332)))
