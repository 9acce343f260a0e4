"""Per-question uncertainty: the calibrated ensemble, its coverage, prior widths, and
the path from per-question widths in a priors file to MAP fits."""

import numpy as np
import pytest
from scipy import stats

from optscale_jax.distributions import params_from_projected_moments
from optscale_jax.fit import fit_map
from optscale_jax.io.priors import read_priors, write_priors
from optscale_jax.model import GaussianPrior
from predictor.pipeline import bootstrap_r2
from predictor.uncertainty import (
    CalibratedPredictor,
    EnsembleConfig,
    Prediction,
    coverage,
    from_z,
    metadata_features,
    pit,
    prior_widths,
    to_z,
)


def test_z_transform_round_trip_and_metadata_one_hots():
    y = np.array([[0.9, 0.05], [0.5, 0.3], [0.99, 0.01]])
    np.testing.assert_allclose(from_z(to_z(y)), y, rtol=1e-12)
    m = metadata_features([1, 5, 0], ["Algebra", "Geometry", "Unknown"], ["Algebra", "Geometry"])
    np.testing.assert_array_equal(
        m, [[1, 0, 0, 0, 0, 1, 0], [0, 0, 0, 0, 1, 0, 1], [0, 0, 0, 0, 0, 0, 0]]
    )
    # nothing known: the caller falls back to the features-only model
    assert metadata_features([0, 0], ["", ""], ["Algebra"]) is None
    assert metadata_features(None, None, ["Algebra"]) is None


def _hetero_data(n, seed):
    """z = (x0, -2 + 0.5 x1) + noise whose sd grows with |x2| (known truth)."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, 4))
    sd = 0.1 + 0.6 * np.abs(x[:, 2:3])
    z = np.stack([x[:, 0], -2 + 0.5 * x[:, 1]], 1) + sd * rng.standard_normal((n, 2))
    return x, from_z(z), np.broadcast_to(sd, (n, 2))


def test_ensemble_is_calibrated_and_heteroscedastic_on_fresh_data():
    x, y, _ = _hetero_data(800, 0)
    cfg = EnsembleConfig(members=2, hidden=32, epochs=300, learning_rate=1e-2, input_dropout=0.0)
    model = CalibratedPredictor.fit(x, y, cfg)
    assert model.holdout["n"] == 160 and ((0.0 <= model.blend) & (model.blend <= 1.0)).all()
    xt, yt, sd_true = _hetero_data(1000, 1)
    pred = model.predict(xt)
    cov = coverage(pred, yt)
    for level, c in (("50%", 0.5), ("80%", 0.8), ("95%", 0.95)):
        assert abs(cov[level]["mean"] - c) < 0.07 and abs(cov[level]["std"] - c) < 0.07, cov
    # per-question widths track the true noise sd (not one global width)
    rho = stats.spearmanr(pred.z_sd[:, 0], sd_true[:, 0]).statistic
    assert rho > 0.6
    u = pit(pred, yt)
    assert u.shape == (1000, 2) and ((u >= 0) & (u <= 1)).all()
    with pytest.raises(ValueError, match="x must be"):
        model.predict(xt[:, :3])
    with pytest.raises(ValueError, match="finite"):
        CalibratedPredictor.fit(np.full((20, 2), np.nan), y[:20], cfg)


def test_coverage_matches_a_closed_form():
    # labels exactly at the predictive mean + k sd: PIT = Φ(k)
    z_mean = np.zeros((4, 2)) + [1.0, -2.0]
    z_sd = np.full((4, 2), 0.5)
    k = np.array([-2.0, -0.5, 0.1, 1.5])[:, None]
    labels = from_z(z_mean + k * z_sd)
    pred = Prediction(z_mean, z_sd)
    np.testing.assert_allclose(pit(pred, labels), np.broadcast_to(stats.norm.cdf(k), (4, 2)))
    cov = coverage(pred, labels)
    assert cov["50%"]["mean"] == 0.5 and cov["80%"]["mean"] == 0.5 and cov["95%"]["mean"] == 0.75
    lo, hi = pred.interval(0.5)
    assert (lo < pred.moments).all() and (pred.moments < hi).all()


def test_prior_widths_grow_with_predictive_sd_and_centres_map_the_point_prediction():
    z_mean = np.tile(to_z(np.array([[0.8, 0.1]])), (3, 1))
    z_sd = np.array([[0.05, 0.05], [0.2, 0.2], [0.6, 0.6]])
    w = prior_widths(Prediction(z_mean, z_sd), n_draws=256)
    assert (np.diff(w["scale_mu"]) > 0).all() and (np.diff(w["scale_sigma"]) > 0).all()
    loc, scale, _ = params_from_projected_moments(np.full(3, 0.8), np.full(3, 0.1))
    np.testing.assert_allclose(w["loc_mu"], loc, rtol=1e-6)
    np.testing.assert_allclose(w["loc_sigma"], scale, rtol=1e-6)
    # delta method at small sd: width_mu ≈ |dμ/dz_mean| · sd, by finite differences
    h = 1e-4
    lp, _, _ = params_from_projected_moments(from_z(z_mean[:1] + [h, 0])[:, 0], [0.1])
    lm, _, _ = params_from_projected_moments(from_z(z_mean[:1] - [h, 0])[:, 0], [0.1])
    ls, _, _ = params_from_projected_moments([0.8], from_z(z_mean[:1] + [0, h])[:, 1])
    ls2, _, _ = params_from_projected_moments([0.8], from_z(z_mean[:1] - [0, h])[:, 1])
    grad = np.hypot((lp - lm)[0] / (2 * h), (ls - ls2)[0] / (2 * h))
    assert w["scale_mu"][0] == pytest.approx(grad * 0.05, rel=0.25)


def test_bootstrap_r2_intervals():
    rng = np.random.default_rng(0)
    y = rng.random((300, 2))
    good = y + 0.1 * rng.standard_normal((300, 2))
    bad = y + 0.3 * rng.standard_normal((300, 2))
    ci = bootstrap_r2(y, {"good": good, "bad": bad}, "bad", n_boot=400)
    full = 1 - ((y - good) ** 2).sum(0) / ((y - y.mean(0)) ** 2).sum(0)
    assert ci["good"]["r2_mean"][0] < full[0] < ci["good"]["r2_mean"][1]
    assert ci["bad"]["diff_mean"] == [0.0, 0.0] and ci["good"]["diff_mean"][0] > 0
    with pytest.raises(ValueError, match="reference"):
        bootstrap_r2(y, {"good": good}, "ridge")


def test_per_question_widths_in_a_priors_file_reach_fit_map(tmp_path):
    """Widths written per question are read back per question and each MAP fit uses its own."""
    rng = np.random.default_rng(3)
    scores = np.clip(rng.normal(0.8, 0.1, size=(3, 6)), 0.01, 0.99)
    ids = ["a", "b", "c"]
    loc_mu, loc_sigma = np.array([0.3, 0.3, 0.3]), np.array([0.2, 0.2, 0.2])
    scale_mu, scale_sigma = np.array([0.01, 0.1, 1.0]), np.array([0.02, 0.05, 0.5])
    path = write_priors(tmp_path / "p.json", ids, loc_mu, loc_sigma, scale_mu, scale_sigma)
    prior = read_priors(path, ["c", "a", "b"]).to_gaussian()
    np.testing.assert_allclose(prior.scale_mu, [1.0, 0.01, 0.1])
    batched = fit_map(scores[[2, 0, 1]], prior)
    for row, q in enumerate([2, 0, 1]):
        # reference: the same rows fitted with question q's widths as scalars for every row
        one = fit_map(
            scores[[2, 0, 1]],
            GaussianPrior(loc_mu[q], scale_mu[q], loc_sigma[q], scale_sigma[q]),
        )
        assert float(batched.mu[row]) == pytest.approx(float(one.mu[row]), abs=1e-6)
        assert float(batched.sigma[row]) == pytest.approx(float(one.sigma[row]), abs=1e-6)
    # a narrow prior holds μ near its centre 0.3, a wide one lets the data (≈ 0.8) win
    mu = np.asarray(batched.mu)
    assert abs(mu[1] - 0.3) < 0.05 and abs(mu[0] - 0.8) < 0.1


def test_kernel_ridge_matches_a_direct_solve_and_picks_per_column():
    from predictor.baselines import KernelRidge

    rng = np.random.default_rng(5)
    x = rng.standard_normal((60, 3))
    y = np.stack([np.sin(x[:, 0]), 0.1 * rng.standard_normal(60)], 1)
    kr = KernelRidge.fit(x, y, widths=1.0, lams=0.5)
    xs = (x - x.mean(0)) / x.std(0)
    d = ((xs[:, None] - xs[None]) ** 2).sum(-1)
    gamma = 1.0 / np.median(d[np.triu_indices(60, 1)])
    alpha = np.linalg.solve(np.exp(-gamma * d) + 0.5 * np.eye(60), y - y.mean(0))
    xn = rng.standard_normal((5, 3))
    xns = (xn - x.mean(0)) / x.std(0)
    want = np.exp(-gamma * ((xns[:, None] - xs[None]) ** 2).sum(-1)) @ alpha + y.mean(0)
    np.testing.assert_allclose(kr.predict(xn), want, rtol=1e-8, atol=1e-10)
    # held-out choice per column: the pure-noise column takes the largest penalty
    xv = rng.standard_normal((40, 3))
    yv = np.stack([np.sin(xv[:, 0]), 0.1 * rng.standard_normal(40)], 1)
    kr2 = KernelRidge.fit(x, y, x_val=xv, y_val=yv, widths=(1.0,), lams=(0.01, 100.0))
    assert kr2.lam.tolist() == [0.01, 100.0]
    with pytest.raises(ValueError, match="x_val"):
        KernelRidge.fit(x, y, lams=(0.1, 1.0))


# ------------------------------------------------------------------ stacking (engineer M)


def test_text_statistics_count_what_they_name():
    from predictor.stacking import text_statistics

    s = text_statistics(["How many $x$ satisfy $\\frac{1}{2} < x$? Express 12 and 3.", "a b"])
    assert s.shape == (2, 23)
    t = "How many $x$ satisfy $\\frac{1}{2} < x$? Express 12 and 3."
    assert s[0, 0] == len(t) and s[0, 2] == len(t.split())
    assert s[0, 3] == sum(c.isdigit() for c in t) == 5  # 1, 2, 1, 2, 3
    assert s[0, 4] == 4 and s[0, 5] == 1 and s[0, 6] == 4  # integers, \frac, $ signs
    assert s[1, 3:].sum() == 0


def test_kernel_ridge_columns_match_the_baseline_class_per_penalty():
    from predictor.baselines import KernelRidge
    from predictor.stacking import kernel_ridge_columns

    rng = np.random.default_rng(1)
    x, xn = rng.normal(size=(60, 4)), rng.normal(size=(15, 4))
    y = np.stack([np.sin(x[:, 0]), x[:, 1] ** 2], 1)
    got = kernel_ridge_columns(x, y, xn, 0.5, (0.3, 1.0))
    for j, lam in enumerate((0.3, 1.0)):
        ref = KernelRidge.fit(x, y, widths=(0.5,), lams=(lam,)).predict(xn)[:, j]
        np.testing.assert_allclose(got[:, j], ref, rtol=1e-6, atol=1e-8)


def test_text_ridge_matches_sklearn_on_the_same_design():
    from scipy import sparse
    from sklearn.linear_model import Ridge as SkRidge

    from predictor.baselines import r2
    from predictor.stacking import TextRidge

    rng = np.random.default_rng(2)
    words = ["prime", "triangle", "\\frac", "express", "integer", "circle", "area"]
    texts = [" ".join(rng.choice(words, 6)) for _ in range(80)]
    y = np.stack([[t.count("prime") / 6, t.count("circle") / 10] for t in texts])
    m = TextRidge.fit(texts, y)
    xd = sparse.hstack([m.word.transform(texts), m.char.transform(texts)]).tocsr()
    ref = SkRidge(alpha=m.ridge.alpha_, solver="cholesky").fit(xd.toarray(), y).predict(
        xd[:5].toarray()
    )
    np.testing.assert_allclose(m.predict(texts[:5]), ref, rtol=1e-6, atol=1e-9)
    assert r2(y, m.predict(texts))[0] > 0.8  # the word "prime" carries the first label


def test_stacked_predictor_uses_text_and_shares_the_calibrated_holdout():
    from predictor.stacking import STAGE2, StackConfig, StackedPredictor, holdout_rows

    rng = np.random.default_rng(3)
    n = 150
    x = rng.normal(size=(n, 5))
    hard = rng.random(n) < 0.5  # only the text says which questions are hard
    texts = [("prove the hard identity " if h else "compute the sum ") + f"{i}" for i, h in
             enumerate(hard)]
    mean = np.clip(0.9 - 0.2 * hard + 0.02 * x[:, 0], 0.01, 0.99)
    std = 0.03 + 0.5 * (1 - mean) * (0.9 - mean + 0.25)  # std tied to the mean
    labels = np.stack([mean, std], 1)
    cfg = StackConfig(folds=3, pca_components=3, seed=4)
    m = StackedPredictor.fit(x, texts, labels, None, cfg)
    rows, hold = holdout_rows(n, 0.2, 4)
    np.testing.assert_array_equal(m.holdout_index, hold)
    assert len(np.intersect1d(rows, hold)) == 0 and len(rows) + len(hold) == n
    assert set(m.choice) <= set(STAGE2) and m.n_meta == 0
    assert m.holdout["r2_mean"] > 0.9 and m.holdout["r2_std"] > 0.9
    assert m.holdout["base"]["kernel"]["r2_mean"] < 0.5  # the embedding alone misses it
    with pytest.raises(ValueError, match="meta must have 0 columns"):
        m.predict(x[:3], texts[:3], np.ones((3, 2)))
    with pytest.raises(ValueError, match="texts has 2 rows"):
        m.predict(x[:3], texts[:2])


def test_recentred_prediction_is_calibrated_around_another_point():
    rng = np.random.default_rng(5)
    n = 240
    x = rng.normal(size=(n, 3))
    labels = from_z(np.stack([1.5 + 0.5 * x[:, 0], -3 + 0.3 * x[:, 1]], 1)
                    + 0.2 * rng.normal(size=(n, 2)))
    model = CalibratedPredictor.fit(x, labels, EnsembleConfig(members=2, epochs=60))
    hold = model.holdout_index
    point = from_z(to_z(labels[hold]) + 0.3 * rng.normal(size=(len(hold), 2)))
    pred, scale = model.recentred(x[hold], point, labels[hold])
    z = (to_z(labels[hold]) - pred.z_mean) / pred.z_sd
    np.testing.assert_allclose((z**2).mean(0), 1.0, rtol=1e-9)  # the ML scale, by construction
    np.testing.assert_allclose(pred.moments, point, rtol=1e-9)
    same, s2 = model.recentred(x[hold], point)
    np.testing.assert_array_equal(s2, model.calibration)
