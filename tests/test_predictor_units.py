"""Unit tests of the predictor: head, training, baselines, checkpoints, priors files."""

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

pytest.importorskip("flax", reason="the predictor extra is not installed")

from flax import nnx  # noqa: E402

from predictor.baselines import GroupMean, Ridge, mae, metrics, r2, train_mean
from predictor.checkpoint import load_checkpoint, save_checkpoint
from predictor.features import TokenStates
from predictor.head import AttentionPool, PriorHead, inverse_softplus
from predictor.priors import load_priors, read_official_priors, write_priors
from predictor.training import (
    TrainConfig,
    TrainResult,
    max_truncated_std,
    predict,
    predict_moments,
    train,
)

# ------------------------------------------------------------------ head


def test_head_shapes_and_positive_scale_for_tokens_and_pooled():
    head = PriorHead(16, hidden=(8, 4), dropout=(0.2, 0.1), rngs=nnx.Rngs(0))
    # push the sigma head far negative: softplus must stay > 0
    head.sigma.out.bias.value = jnp.array([-200.0])
    head.sigma.out.kernel.value = jnp.ones_like(head.sigma.out.kernel.value)
    x = jax.random.normal(jax.random.key(1), (5, 7, 16))
    mask = jnp.arange(7)[None, :] < jnp.array([1, 3, 7, 2, 5])[:, None]
    loc, scale = head(x, mask)
    assert loc.shape == scale.shape == (5,)
    assert bool((scale > 0).all()) and bool(jnp.isfinite(loc).all())
    loc2, scale2 = head(x[:, 0, :])
    assert loc2.shape == scale2.shape == (5,) and bool((scale2 > 0).all())


def test_untrained_head_predicts_its_initial_values():
    head = PriorHead(
        6, hidden=(4,), dropout=(0.0,), loc_init=0.93, scale_init=0.07, rngs=nnx.Rngs(3)
    )
    loc, scale = head(np.random.default_rng(0).normal(size=(4, 6)))
    np.testing.assert_allclose(loc, 0.93, rtol=1e-6)
    np.testing.assert_allclose(scale, 0.07, rtol=1e-5)


def test_attention_pool_ignores_padding_and_matches_softmax_reference():
    pool = AttentionPool(4, rngs=nnx.Rngs(0))
    rng = np.random.default_rng(0)
    h = rng.normal(size=(2, 5, 4)).astype(np.float32)
    mask = np.array([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1]], bool)
    out = np.asarray(pool(h, mask))
    # reference: numpy softmax over the valid tokens only
    w, b = np.asarray(pool.score.kernel.value)[:, 0], float(pool.score.bias.value[0])
    for i in range(2):
        hv = h[i, mask[i]]
        logits = hv @ w + b
        a = np.exp(logits - logits.max())
        a /= a.sum()
        np.testing.assert_allclose(out[i], a @ hv, rtol=1e-5, atol=1e-6)
    # garbage in padded positions changes nothing
    h2 = h.copy()
    h2[0, 3:] = 1e3
    np.testing.assert_allclose(np.asarray(pool(h2, mask)), out, rtol=1e-6)
    # an all-masked row pools to zeros, not NaN
    empty = np.asarray(pool(h, np.zeros((2, 5), bool)))
    assert np.all(empty == 0)


def test_dropout_only_with_a_key():
    head = PriorHead(8, hidden=(32,), dropout=(0.5,), rngs=nnx.Rngs(0))
    head.mu.out.kernel.value = jnp.ones_like(head.mu.out.kernel.value)  # zero-initialised
    x = np.random.default_rng(1).normal(size=(3, 8))
    a, b = head(x), head(x)
    np.testing.assert_array_equal(a[0], b[0])
    c = head(x, key=jax.random.key(0))
    d = head(x, key=jax.random.key(1))
    assert not np.allclose(c[0], d[0])


def test_head_rejects_wrong_shapes():
    head = PriorHead(8, hidden=(4,), dropout=(0.1,), rngs=nnx.Rngs(0))
    with pytest.raises(ValueError, match=r"\(B, T, 8\)"):
        head(np.zeros((2, 3, 5)))
    with pytest.raises(ValueError, match="differ in length"):
        PriorHead(8, hidden=(4, 2), dropout=(0.1,), rngs=nnx.Rngs(0))


@pytest.mark.parametrize("y", [1e-6, 0.07, 1.0, 30.0])
def test_inverse_softplus(y):
    assert float(jax.nn.softplus(inverse_softplus(y))) == pytest.approx(y, rel=1e-6)


# ------------------------------------------------------------------ training


def _toy(n=240, d=12, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, d)).astype(np.float32)
    w = rng.normal(size=(d, 2)) / np.sqrt(d)
    mean = 0.85 + 0.05 * np.tanh(x @ w[:, 0])
    std = 0.06 + 0.03 * np.tanh(x @ w[:, 1])
    return x, mean, std


def test_training_lowers_the_loss_and_beats_the_mean_on_a_toy_problem():
    x, mean, std = _toy()
    cfg = TrainConfig(
        epochs=30,
        hidden=(32, 16),
        dropout=(0.0, 0.0),
        batch_size=32,
        holdout_fraction=0.0,
        learning_rate=3e-3,
    )
    res = train(x, mean, std, cfg, fit_widths=False)
    losses = [h["loss"] for h in res.history]
    assert losses[-1] < 0.5 * losses[0]
    pred = predict_moments(res.head, x, "regression")
    labels = np.stack([mean, std], 1)
    assert mae(labels, pred)[0] < 0.6 * mae(labels, train_mean(labels, len(x)))[0]


def test_one_step_lowers_the_loss_on_its_batch():
    x, mean, std = _toy(n=32)
    cfg = TrainConfig(
        epochs=1,
        batch_size=32,
        hidden=(16,),
        dropout=(0.0,),
        holdout_fraction=0.0,
        warmup_fraction=0.0,
        learning_rate=1e-2,
    )
    res = train(x, mean, std, cfg, fit_widths=False)
    # loss after the single step, recomputed without dropout
    loc, scale = predict(res.head, x)
    var = np.array([mean.var(), std.var()])
    after = np.mean((loc - mean) ** 2 / var[0] + (scale - std) ** 2 / var[1])
    assert after < res.history[0]["loss"]


def test_training_is_deterministic_and_seeded():
    x, mean, std = _toy(n=96)
    cfg = TrainConfig(epochs=3, hidden=(16,), dropout=(0.2,), batch_size=16, holdout_fraction=0.0)
    a = predict(train(x, mean, std, cfg, fit_widths=False).head, x)
    b = predict(train(x, mean, std, cfg, fit_widths=False).head, x)
    np.testing.assert_array_equal(a[0], b[0])
    c = predict(
        train(
            x,
            mean,
            std,
            TrainConfig(**{**cfg.to_dict(), "seed": 1, "hidden": (16,), "dropout": (0.2,)}),
            fit_widths=False,
        ).head,
        x,
    )
    assert not np.allclose(a[0], c[0])


def test_attention_training_on_ragged_token_states():
    rng = np.random.default_rng(0)
    lengths = rng.integers(1, 20, size=80)
    states = [rng.normal(size=(n, 6)).astype(np.float16) for n in lengths]
    mean = 0.9 - 0.01 * lengths / 20
    std = 0.05 + 0.01 * rng.random(80)
    cfg = TrainConfig(
        epochs=4, hidden=(8,), dropout=(0.1,), batch_size=16, pad_multiple=8, holdout_fraction=0.0
    )
    res = train(TokenStates(states), mean, std, cfg, fit_widths=False)
    assert np.isfinite([h["loss"] for h in res.history]).all()
    loc, scale = predict(res.head, TokenStates(states), batch_size=7, pad_multiple=8)
    # batching and padding do not change the predictions
    loc1, _ = predict(res.head, TokenStates(states[:1]))
    assert loc.shape == (80,) and (scale > 0).all()
    np.testing.assert_allclose(loc[0], loc1[0], rtol=1e-5)


def test_train_rejects_bad_labels_and_configs():
    x, mean, std = _toy(n=20)
    with pytest.raises(ValueError, match="shape"):
        train(x, mean[:10], std, TrainConfig(epochs=1))
    with pytest.raises(ValueError, match="finite"):
        train(x, np.where(np.arange(20) == 3, np.nan, mean), std, TrainConfig(epochs=1))
    with pytest.raises(ValueError, match="objective"):
        TrainConfig(objective="mse")
    with pytest.raises(ValueError, match="unknown"):
        TrainConfig.from_dict({"lr": 1.0})
    paper = TrainConfig.paper()
    assert (paper.learning_rate, paper.epochs, paper.weight_decay, paper.clip_norm) == (
        1e-5,
        30,
        0.01,
        0.1,
    )
    assert TrainConfig.from_dict(json.loads(json.dumps(paper.to_dict()))) == paper


def _trunc_exp_moments(lam):
    """Mean and std of the density ∝ exp(λx) on [0, 1] by numerical integration."""
    from scipy.integrate import quad

    z = quad(lambda x: np.exp(lam * x), 0, 1)[0]
    m = quad(lambda x: x * np.exp(lam * x), 0, 1)[0] / z
    v = quad(lambda x: (x - m) ** 2 * np.exp(lam * x), 0, 1)[0] / z
    return m, np.sqrt(v)


@pytest.mark.parametrize("lam", [-30.0, -3.0, 0.01, 1.0, 10.0, 60.0])
def test_max_truncated_std_is_the_truncated_exponential_bound(lam):
    m, s = _trunc_exp_moments(lam)
    assert max_truncated_std(np.array([m]))[0] == pytest.approx(s, rel=1e-6)


def test_max_truncated_std_edges():
    out = max_truncated_std(np.array([0.5, 0.0, 1.0, -0.2, 1.3]))
    assert out[0] == pytest.approx(np.sqrt(1 / 12), rel=1e-9)
    np.testing.assert_array_equal(out[1:], 0.0)
    # monotone: the bound shrinks as the mean leaves 1/2
    m = np.linspace(0.5, 0.999, 50)
    assert (np.diff(max_truncated_std(m)) < 0).all()


# ------------------------------------------------------------------ baselines


def test_mae_r2_metrics_closed_forms():
    y = np.array([[1.0, 0.1], [2.0, 0.2], [3.0, 0.6]])
    p = np.array([[1.5, 0.1], [2.0, 0.3], [2.0, 0.5]])
    np.testing.assert_allclose(mae(y, p), [0.5, 0.2 / 3])
    # column 0: SS_res = 0.25 + 0 + 1 = 1.25, SS_tot = 2
    assert r2(y, p)[0] == pytest.approx(1 - 1.25 / 2)
    assert r2(y, y)[1] == 1.0
    assert metrics(y, train_mean(y, 3))["r2_mean"] == pytest.approx(0.0, abs=1e-12)
    with pytest.raises(ValueError, match="shapes differ"):
        mae(y, p[:2])


def test_group_mean_matches_a_loop_and_falls_back_to_the_overall_mean():
    rng = np.random.default_rng(0)
    g = rng.integers(1, 5, size=50)
    y = rng.normal(size=(50, 2))
    model = GroupMean.fit(g, y)
    pred = model.predict(np.array([1, 2, 3, 4, 9]))
    for i, level in enumerate([1, 2, 3, 4]):
        np.testing.assert_allclose(pred[i], y[g == level].mean(0))
    np.testing.assert_allclose(pred[4], y.mean(0))


def test_ridge_matches_the_normal_equations_and_brute_force_loo():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(40, 5)) * np.array([1, 10, 0.1, 1, 3]) + 2.0
    y = x @ rng.normal(size=(5, 2)) + rng.normal(size=(40, 2))
    alphas = np.array([0.1, 3.0, 100.0])
    model = Ridge.fit(x, y, alphas=alphas)
    # closed form on standardised features with an unpenalised intercept
    xs = (x - x.mean(0)) / x.std(0)
    beta = np.linalg.solve(xs.T @ xs + model.alpha * np.eye(5), xs.T @ (y - y.mean(0)))
    np.testing.assert_allclose(model.coef, beta, rtol=1e-8, atol=1e-10)
    np.testing.assert_allclose(model.predict(x), xs @ beta + y.mean(0), rtol=1e-8)
    # brute-force leave-one-out (standardisation fixed, intercept refitted)
    for a, loo in zip(alphas, model.loo_mse, strict=True):
        errs = []
        for i in range(40):
            keep = np.arange(40) != i
            yk = y[keep]
            xk = xs[keep]
            xm = xk.mean(0)
            b = np.linalg.solve(
                (xk - xm).T @ (xk - xm) + a * np.eye(5), (xk - xm).T @ (yk - yk.mean(0))
            )
            errs.append((y[i] - (yk.mean(0) + (xs[i] - xm) @ b)) ** 2)
        assert loo == pytest.approx(np.mean(errs, 0).sum(), rel=0.05)
    assert model.alpha == alphas[int(np.argmin(model.loo_mse))]


# ------------------------------------------------------------------ checkpoints and priors


def test_checkpoint_round_trip(tmp_path):
    x, mean, std = _toy(n=64)
    cfg = TrainConfig(
        epochs=2, hidden=(16, 8), dropout=(0.1, 0.1), batch_size=16, holdout_fraction=0.0
    )
    res = train(x, mean, std, cfg, fit_widths=False)
    res.widths = {"scale_mu": 0.2, "scale_sigma": 0.05}
    save_checkpoint(
        tmp_path / "ck", res, backbone={"key": "abc"}, metrics={"head": {"mae_mean": 0.1}}
    )
    ck = load_checkpoint(tmp_path / "ck")
    assert ck.config == cfg and ck.widths == res.widths and ck.backbone == {"key": "abc"}
    np.testing.assert_array_equal(predict(ck.head, x)[0], predict(res.head, x)[0])
    np.testing.assert_array_equal(predict(ck.head, x)[1], predict(res.head, x)[1])


def test_checkpoint_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="not a predictor checkpoint"):
        load_checkpoint(tmp_path)
    x, mean, std = _toy(n=32)
    res = train(
        x,
        mean,
        std,
        TrainConfig(epochs=1, hidden=(8,), dropout=(0.0,), holdout_fraction=0.0),
        fit_widths=False,
    )
    save_checkpoint(tmp_path / "ck", res)
    manifest = json.loads((tmp_path / "ck" / "manifest.json").read_text())
    manifest["in_features"] = 13
    (tmp_path / "ck" / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(ValueError, match="shape"):
        load_checkpoint(tmp_path / "ck")
    manifest["format"] = "other"
    (tmp_path / "ck" / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(ValueError, match="format"):
        load_checkpoint(tmp_path / "ck")


def test_priors_file_round_trip_aligned_to_ids(tmp_path):
    ids = ["a", "b", "c"]
    path = write_priors(
        tmp_path / "p.json",
        ids,
        loc_mu=[1.0, 2.0, 3.0],
        loc_sigma=[0.1, 0.2, 0.3],
        scale_mu=0.5,
        scale_sigma=[0.01, 0.02, 0.03],
        meta={"x": 1},
    )
    got = load_priors(path, ["c", "a"])
    np.testing.assert_array_equal(got.loc_mu, [3.0, 1.0])
    np.testing.assert_array_equal(got.scale_mu, [0.5, 0.5])
    np.testing.assert_array_equal(got.loc_sigma, [0.3, 0.1])
    np.testing.assert_array_equal(got.scale_sigma, [0.03, 0.01])
    np.testing.assert_array_equal(load_priors(path).loc_mu, [1.0, 2.0, 3.0])
    # plain JSON, readable without this package
    raw = json.loads(path.read_text())
    assert raw["format"] == "optscale-priors" and raw["question_ids"] == ids
    with pytest.raises(ValueError, match="no prior for question 'z'"):
        load_priors(path, ["a", "z"])
    with pytest.raises(ValueError, match="scale_mu must be > 0"):
        write_priors(tmp_path / "q.json", ids, [1, 2, 3], [0.1, 0.1, 0.1], 0.0, 0.1)
    with pytest.raises(ValueError, match="distinct"):
        write_priors(tmp_path / "q.json", ["a", "a"], [1, 2], [0.1, 0.1], 0.1, 0.1)


def test_priors_feed_the_core_gaussian_prior(tmp_path):
    from optscale_jax.model import GaussianPrior

    path = write_priors(tmp_path / "p.json", ["q1", "q2"], [0.9, 1.2], [0.1, 0.2], 0.3, 0.05)
    prior = GaussianPrior(*load_priors(path, ["q2", "q1"]))
    np.testing.assert_array_equal(prior.loc_mu, [1.2, 0.9])


def test_official_priors_reader(tmp_path):
    f = tmp_path / "off.json"
    f.write_text(json.dumps([[0.5, 0.1], [0.6, -0.02]]))
    with pytest.warns(UserWarning, match="1 of 2 prior centres of sigma are <= 0"):
        p = read_official_priors(f, ["x", "y"])
    np.testing.assert_array_equal(p.loc_mu, [0.5, 0.6])
    np.testing.assert_array_equal(p.loc_sigma, [0.1, -0.02])  # used as stored, like the authors
    np.testing.assert_array_equal(p.scale_sigma, [0.1, 0.1])
    with pytest.raises(ValueError, match="has 2 .mu, sigma. records, the pool has 1 questions"):
        read_official_priors(f, ["x"])


def test_train_result_defaults():
    head = PriorHead(4, hidden=(2,), dropout=(0.0,), rngs=nnx.Rngs(0))
    r = TrainResult(head, TrainConfig())
    assert r.history == [] and r.holdout_index.size == 0
