"""optscale_jax.allocate: the greedy gain-per-token allocation against brute force."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from scipy import stats

from optscale_jax.allocate import (
    Calibration,
    allocate,
    allocate_exact,
    allocate_expected_accuracy,
    fit_calibration,
    greedy_allocate,
    marginal_gains,
    reach_value,
)
from optscale_jax.distributions import truncnorm01_log_cdf


def _brute(values: np.ndarray, cost: np.ndarray, budget: float, cap: np.ndarray):
    """Every allocation x with x_i <= cap_i: (best objective, second best, argmax)."""
    q = len(cost)
    objs = []
    for x in itertools.product(*[range(int(c) + 1) for c in cap]):
        x = np.asarray(x)
        if (x * cost).sum() <= budget + 1e-9:
            objs.append((values[np.arange(q), x].sum(), tuple(x)))
    objs.sort(key=lambda t: -t[0])
    second = objs[1][0] if len(objs) > 1 else -np.inf
    return objs[0][0], second, np.asarray(objs[0][1])


def _reach_values(f: np.ndarray, solved: np.ndarray, n: int) -> np.ndarray:
    """(Q, n + 1) P(question solved with x more samples), by the closed form 1 - F^x."""
    x = np.arange(n + 1)[None, :]
    return np.where(solved[:, None], 1.0, 1.0 - f[:, None] ** x)


def _truncnorm_f(mu: np.ndarray, sigma: np.ndarray, s: float) -> np.ndarray:
    a, b = (0 - mu) / sigma, (1 - mu) / sigma
    return stats.truncnorm.cdf(s, a, b, loc=mu, scale=sigma)


@pytest.mark.parametrize("seed", range(12))
def test_greedy_equals_brute_force_with_equal_costs(seed: int) -> None:
    """Q <= 4, N <= 6, known truncated-normal laws, equal integer costs: the greedy's
    allocation is the brute-force optimum (and its value), as the theory says."""
    rng = np.random.default_rng(seed)
    q = int(rng.integers(2, 5))
    n = int(rng.integers(2, 7))
    mu, sigma = rng.uniform(0.3, 0.95, q), rng.uniform(0.05, 0.3, q)
    s_min = 0.9
    best = rng.uniform(0.0, 1.0, q) * (rng.random(q) < 0.8)
    cost = np.full(q, int(rng.integers(1, 4)))
    budget = int(cost[0] * rng.integers(1, q * n))
    f = _truncnorm_f(mu, sigma, s_min)
    drawn = rng.integers(0, 3, q)
    n_max = int(drawn.max()) + n
    cap = np.minimum(n_max - drawn, n)
    log_f = np.asarray(truncnorm01_log_cdf(s_min, mu, sigma))
    a = allocate(log_f, best, drawn, cost.astype(float), float(budget), s_min=s_min, k_max=n,
                 n_max=n_max)
    x = np.asarray(a.extra)
    values = _reach_values(f, best >= s_min, n)
    opt, second, arg = _brute(values, cost, budget, cap)
    got = values[np.arange(q), x].sum()
    assert (x * cost).sum() <= budget and (x <= cap).all()
    assert got == pytest.approx(opt, abs=1e-5)
    if opt - second > 1e-4:  # a unique optimum: the allocation itself matches
        assert x.tolist() == arg.tolist()
    assert float(reach_value(log_f, best, s_min, x)) == pytest.approx(got, abs=1e-6)


@pytest.mark.parametrize("seed", range(8))
def test_unequal_costs_within_the_documented_bound_and_exact_dp(seed: int) -> None:
    """Unequal costs: OPT - max single gain <= greedy <= OPT; allocate_exact is OPT."""
    rng = np.random.default_rng(100 + seed)
    q, n = int(rng.integers(2, 5)), int(rng.integers(2, 7))
    f = rng.uniform(0.2, 0.95, q)
    cost = rng.integers(1, 6, q)
    budget = int(rng.integers(1, int(cost.sum() * n / 2) + 2))
    gains = np.asarray(marginal_gains(np.log(f)[:, None], np.ones((q, 1)), n))
    values = np.concatenate([np.zeros((q, 1)), np.cumsum(gains, axis=1)], axis=1)
    assert np.allclose(values, _reach_values(f, np.zeros(q, bool), n), atol=1e-6)
    opt, _, _ = _brute(values, cost, budget, np.full(q, n))
    x = np.asarray(greedy_allocate(gains, cost.astype(float), float(budget)).extra)
    got = values[np.arange(q), x].sum()
    assert (x * cost).sum() <= budget
    assert opt - gains[:, 0].max() - 1e-6 <= got <= opt + 1e-6
    xe, ve = allocate_exact(gains, cost, budget)
    assert ve == pytest.approx(opt, abs=1e-9)
    assert values[np.arange(q), xe].sum() == pytest.approx(opt, abs=1e-9)
    assert (xe * cost).sum() <= budget


def test_posterior_draws_and_stopping_rules() -> None:
    """(S, Q) posterior draws use the mixture 1 - mean F^k; solved and hopeless rows stop;
    max_samples caps the wave; ties go to the lower question index."""
    f = np.array([[0.2, 0.6, 0.99], [0.8, 0.6, 0.99]])  # question 0: mixture of 0.2 and 0.8
    gains = np.asarray(marginal_gains(np.log(f).T, np.full((3, 2), 0.5), 3))
    k = np.arange(3)
    ref0 = 0.5 * (0.2 ** k * 0.8 + 0.8 ** k * 0.2)
    assert np.allclose(gains[0], ref0, atol=1e-6)
    a = allocate(np.log(f), [0.1, 0.1, 0.1], 0, 1.0, np.inf, s_min=0.9, k_max=3,
                 min_gain_per_token=0.05)
    assert np.asarray(a.extra).tolist() == [3, 3, 0]  # 0.01 per token < 0.05: hopeless
    a = allocate(np.log(f), [0.95, 0.1, 0.1], 0, 1.0, np.inf, s_min=0.9, k_max=3)
    assert np.asarray(a.extra)[0] == 0  # solved
    a = allocate(np.log([0.5, 0.5, 0.5]), 0.0, 0, 1.0, np.inf, s_min=0.9, k_max=2, max_samples=4)
    assert np.asarray(a.extra).tolist() == [2, 1, 1]  # equal gains 0.5: lower index first
    a = allocate(np.log([0.5, 0.5]), 0.0, [3, 0], 1.0, np.inf, s_min=0.9, k_max=4, n_max=4)
    assert np.asarray(a.extra).tolist() == [1, 4]
    with pytest.raises(ValueError, match="budget"):
        allocate(np.log([0.5]), 0.0, 0, 1.0, -1.0, s_min=0.9, k_max=2)
    with pytest.raises(ValueError, match="k_max"):
        allocate(np.log([0.5]), 0.0, 0, 1.0, 1.0, s_min=0.9, k_max=0)


def test_expected_accuracy_objective_against_monte_carlo() -> None:
    """The accuracy gains equal E[c(max(b, X_1..X_k))] increments (Monte Carlo), and with
    one jump of 1 at s_min they are the reach gains."""
    rng = np.random.default_rng(0)
    mu, sigma, b = np.array([0.6, 0.8]), np.array([0.2, 0.1]), np.array([0.3, 0.85])
    cal = Calibration(thresholds=np.array([0.5, 0.8, 0.9]), values=np.array([0.1, 0.3, 0.6, 0.9]))
    lf = np.stack([np.asarray(truncnorm01_log_cdf(t, mu, sigma)) for t in cal.thresholds], axis=1)
    a = allocate_expected_accuracy(lf, b, 0, 1.0, np.inf, calibration=cal, k_max=3)
    a_gain = np.asarray(a.gain)
    x = stats.truncnorm.rvs((0 - mu) / sigma, (1 - mu) / sigma, loc=mu, scale=sigma,
                            size=(100_000, 3, 2), random_state=rng)
    m = np.maximum(b, np.maximum.accumulate(x, axis=1))  # (draws, k, Q)
    ev = cal(m).mean(axis=0)  # E c(M_k), k = 1..3
    assert np.allclose(a_gain, ev[2] - cal(b), atol=6e-3)
    one = Calibration(thresholds=np.array([0.9]), values=np.array([0.0, 1.0]))
    lf9 = np.asarray(truncnorm01_log_cdf(0.9, mu, sigma))
    acc = allocate_expected_accuracy(lf9[:, None], [0.3, 0.3], 0, 1.0, 3.0, calibration=one,
                                     k_max=3)
    reach = allocate(lf9, [0.3, 0.3], 0, 1.0, 3.0, s_min=0.9, k_max=3)
    assert np.asarray(acc.extra).tolist() == np.asarray(reach.extra).tolist()


def test_fit_calibration_is_isotonic_like_sklearn() -> None:
    from sklearn.isotonic import IsotonicRegression

    rng = np.random.default_rng(1)
    s = rng.uniform(0, 1, 4000)
    y = rng.random(4000) < s ** 2
    cal = fit_calibration(s, y, bins=4000)  # one bin per distinct score: plain PAV
    ref = IsotonicRegression(out_of_bounds="clip").fit(s, y.astype(float))
    assert np.allclose(cal(s), ref.predict(s), atol=1e-9)
    small = fit_calibration(s, y, bins=10)
    assert len(small.values) <= 10 and (np.diff(small.values) >= 0).all()
    assert np.abs(small(np.array([0.05, 0.5, 0.95])) - [0.0, 0.25, 0.9]).max() < 0.12
    with pytest.raises(ValueError, match="best_scores"):
        fit_calibration([], [])
