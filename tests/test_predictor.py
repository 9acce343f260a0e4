"""Predictor end to end: a tiny random transformers backbone, the feature cache,
the score-model objective, the CLI, and the real data."""

import json

import numpy as np
import pytest

pytest.importorskip("torch")
pytest.importorskip("transformers")

from predictor.checkpoint import load_checkpoint, save_checkpoint  # noqa: E402
from predictor.features import Backbone, TokenStates, default_backbone_path, encode  # noqa: E402
from predictor.pipeline import featurize, write_head_priors  # noqa: E402
from predictor.priors import load_priors  # noqa: E402
from predictor.training import (  # noqa: E402
    TrainConfig,
    label_params,
    predict,
    predict_moments,
    train,
)

TEXTS = [
    "What is $1+1$?",
    "Find all real $x$ such that $x^2 - 5x + 6 = 0$.",
    "How many positive divisors does 3600 have?",
    "What is $1+1$?",  # duplicate
    "Compute $\\sum_{k=1}^{100} k$ and give the answer modulo 7, showing every step of the work.",
]


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory):
    """A randomly initialised 2-layer BERT (width 16) with MiniLM's tokenizer, saved locally."""
    import torch
    from transformers import AutoTokenizer, BertConfig, BertModel

    tok = AutoTokenizer.from_pretrained(default_backbone_path(), local_files_only=True)
    torch.manual_seed(0)
    cfg = BertConfig(
        vocab_size=tok.vocab_size,
        hidden_size=16,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=32,
        max_position_embeddings=128,
    )
    d = tmp_path_factory.mktemp("tiny_bert")
    BertModel(cfg).save_pretrained(d)
    tok.save_pretrained(d)
    return d


def test_token_states_match_unpadded_single_text_forward(tiny_dir, tmp_path):
    import torch
    from transformers import AutoModel, AutoTokenizer

    bb = Backbone.from_pretrained(tiny_dir, max_length=16, batch_size=3)
    states = encode(bb, TEXTS, cache_dir=tmp_path)
    tok = AutoTokenizer.from_pretrained(tiny_dir, local_files_only=True)
    model = AutoModel.from_pretrained(tiny_dir, local_files_only=True).eval()
    assert states.dim == 16 and len(states) == len(TEXTS)
    for text, s in zip(TEXTS, states.states, strict=True):
        enc = tok(text, truncation=True, max_length=16, return_tensors="pt")
        with torch.no_grad():
            ref = model(**enc).last_hidden_state[0].numpy()
        assert s.shape == ref.shape  # padding removed, truncation at max_length
        np.testing.assert_allclose(
            s.astype(np.float32), ref, rtol=2e-2, atol=2e-2
        )  # stored as float16
    assert states.lengths[-1] == 16
    hidden, mask = states.padded([0, 4])
    assert hidden.shape == (2, 16, 16) and mask.sum(1).tolist() == [states.lengths[0], 16]


def test_feature_cache_hits_and_keys(tiny_dir, tmp_path):
    bb = Backbone.from_pretrained(tiny_dir, max_length=32, batch_size=2)
    first = encode(bb, TEXTS, cache_dir=tmp_path)
    # 4 distinct texts, batches of 2 -> 2 forward passes; the duplicate is encoded once
    assert bb.n_forward == 2
    second = encode(bb, TEXTS[::-1], cache_dir=tmp_path)
    assert bb.n_forward == 2  # all cache hits: the backbone did not run
    for a, b in zip(first.states, second.states[::-1], strict=True):
        np.testing.assert_array_equal(a, b)
    # a fresh backbone from the same directory shares the cache
    again = Backbone.from_pretrained(tiny_dir, max_length=32)
    encode(again, TEXTS[:2], cache_dir=tmp_path)
    assert again.key == bb.key and again.n_forward == 0
    # a different truncation length is a different key: cache miss
    other = Backbone.from_pretrained(tiny_dir, max_length=8)
    assert other.key != bb.key
    encode(other, TEXTS[:1], cache_dir=tmp_path)
    assert other.n_forward == 1
    # a new text alone misses
    encode(bb, ["A brand new question?"], cache_dir=tmp_path)
    assert bb.n_forward == 3


def test_decoder_only_backbone_without_pad_token(tmp_path):
    """A tiny random Qwen2 (the paper's backbone family): no pad token in the tokenizer,
    causal attention; batched states equal one-text-at-a-time states."""
    import torch
    from transformers import AutoTokenizer, Qwen2Config, Qwen2Model

    tok = AutoTokenizer.from_pretrained(default_backbone_path(), local_files_only=True)
    tok.eos_token = "[SEP]"
    tok.pad_token = None
    torch.manual_seed(0)
    cfg = Qwen2Config(
        vocab_size=tok.vocab_size,
        hidden_size=16,
        intermediate_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        num_key_value_heads=1,
        max_position_embeddings=128,
    )
    d = tmp_path / "tiny_qwen2"
    Qwen2Model(cfg).save_pretrained(d)
    tok.save_pretrained(d)
    bb = Backbone.from_pretrained(d, max_length=32, batch_size=8)
    assert bb.tokenizer.pad_token == "[SEP]" and bb.hidden_size == 16
    batched = encode(bb, TEXTS, cache_dir="")
    for text, s in zip(TEXTS, batched.states, strict=True):
        single = bb.forward([text])[0]
        np.testing.assert_allclose(s.astype(np.float32), single, rtol=2e-2, atol=2e-2)


def test_feature_errors(tiny_dir, tmp_path):
    with pytest.raises(FileNotFoundError, match="no config.json"):
        Backbone.from_pretrained(tmp_path)
    bb = Backbone.from_pretrained(tiny_dir)
    with pytest.raises(TypeError, match=r"texts\[1\]"):
        encode(bb, ["ok", 3], cache_dir=tmp_path)
    with pytest.raises(ValueError, match="pooling"):
        featurize(bb, ["ok"], pooling="max", cache_dir=tmp_path)


def test_default_backbone_loads_offline(tmp_path):
    bb = Backbone.from_pretrained(max_length=32)
    assert bb.hidden_size == 384
    states = encode(bb, TEXTS[:2], cache_dir=tmp_path)
    assert states.dim == 384 and np.isfinite(states.mean_pooled()).all()


def _synthetic_questions(n, seed=0):
    rng = np.random.default_rng(seed)
    words = ["prime", "integral", "triangle", "probability", "sum", "matrix", "digit", "circle"]
    texts, mean, std = [], [], []
    for _ in range(n):
        k = int(rng.integers(3, 12))
        ws = rng.choice(words, size=k)
        texts.append("Compute the " + " ".join(ws) + "?")
        hard = np.mean([w in ("integral", "matrix", "probability") for w in ws])
        mean.append(0.95 - 0.2 * hard + 0.01 * rng.normal())
        std.append(0.04 + 0.08 * hard)
    return texts, np.array(mean), np.array(std)


def test_tiny_backbone_end_to_end(tiny_dir, tmp_path):
    texts, mean, std = _synthetic_questions(48)
    bb = Backbone.from_pretrained(tiny_dir, max_length=32)
    feats = featurize(bb, texts, pooling="attention", cache_dir=tmp_path / "cache")
    assert isinstance(feats, TokenStates)
    cfg = TrainConfig(
        epochs=15,
        hidden=(32,),
        dropout=(0.1,),
        batch_size=16,
        pad_multiple=16,
        learning_rate=3e-3,
        holdout_fraction=0.25,
    )
    res = train(feats, mean, std, cfg, fit_widths=False)
    assert res.history[-1]["loss"] < res.history[0]["loss"]
    assert len(res.holdout_index) == 12 and "holdout_mae_mean" in res.history[-1]
    save_checkpoint(tmp_path / "ck", res, backbone={"key": bb.key, "pooling": "attention"})
    ck = load_checkpoint(tmp_path / "ck")
    np.testing.assert_array_equal(predict(ck.head, feats)[0], predict(res.head, feats)[0])
    ids = [f"q{i}" for i in range(len(texts))]
    widths = {"scale_mu": 0.3, "scale_sigma": 0.05}
    path = write_head_priors(tmp_path / "priors.json", ck.head, "score_model", widths, feats, ids)
    pri = load_priors(path, ids[::-1])
    loc, scale = predict(ck.head, feats)
    np.testing.assert_allclose(pri.loc_mu, loc[::-1])
    np.testing.assert_allclose(pri.loc_sigma, scale[::-1])
    np.testing.assert_array_equal(pri.scale_mu, 0.3)


@pytest.mark.slow
def test_score_model_objective_recovers_label_parameters():
    """Two groups of questions with different labels: the head's (μ̄, σ̄) converge to
    each group's truncated-normal parameters, the minimiser of the cross-entropy."""
    x = np.repeat(np.eye(2, dtype=np.float32), 32, axis=0)
    mean = np.where(x[:, 0] > 0, 0.9, 0.7)
    std = np.where(x[:, 0] > 0, 0.05, 0.12)
    cfg = TrainConfig(
        objective="score_model",
        epochs=150,
        hidden=(16,),
        dropout=(0.0,),
        batch_size=64,
        learning_rate=1e-2,
        holdout_fraction=0.0,
        n_quantiles=64,
    )
    res = train(x, mean, std, cfg)
    losses = [h["loss"] for h in res.history]
    assert losses[-1] < losses[0]
    loc, scale = predict(res.head, x[[0, -1]])
    ref_loc, ref_scale, ok = label_params(np.array([0.9, 0.7]), np.array([0.05, 0.12]))
    assert ok.all()
    np.testing.assert_allclose(loc, ref_loc, rtol=0.03)
    np.testing.assert_allclose(scale, ref_scale, rtol=0.05)
    # and their moments are the labels
    np.testing.assert_allclose(
        predict_moments(res.head, x[[0, -1]], "score_model"), [[0.9, 0.05], [0.7, 0.12]], rtol=0.03
    )
    # fitted widths: residuals are ~0 on this noiseless problem
    assert res.widths["scale_mu"] < 0.05 and res.widths["n"] == 64


@pytest.mark.slow
def test_cli_train_and_predict(tiny_dir, tmp_path):
    from typer.testing import CliRunner

    from predictor.cli import app

    data = tmp_path / "data" / "predictor"
    data.mkdir(parents=True)
    for split, n, seed in (("train", 40, 0), ("val", 12, 1)):
        texts, mean, std = _synthetic_questions(n, seed)
        qs = [
            {
                "problem": t,
                "unique_id": f"{split}/{i}.json",
                "level": 1 + i % 5,
                "subject": "Algebra",
            }
            for i, t in enumerate(texts)
        ]
        (data / f"{split}_data.json").write_text(json.dumps(qs))
        (data / f"{split}_mu_sigma.json").write_text(json.dumps(np.stack([mean, std], 1).tolist()))
    runner = CliRunner()
    common = ["--backbone", str(tiny_dir), "--cache-dir", str(tmp_path / "cache")]
    r = runner.invoke(
        app,
        [
            "train",
            "--data",
            str(tmp_path / "data"),
            "--out",
            str(tmp_path / "ck"),
            "--epochs",
            "3",
            "--pooling",
            "attention",
            "--max-length",
            "32",
            "--priors-out",
            str(tmp_path / "p.json"),
            *common,
        ],
    )
    assert r.exit_code == 0, r.output
    assert "per-level mean" in r.output and "ridge" in r.output and "prior widths" in r.output
    val_ids = [f"val/{i}.json" for i in range(12)]
    p = load_priors(tmp_path / "p.json", val_ids)
    assert (p.scale_mu > 0).all() and (p.loc_sigma > 0).all()
    qfile = tmp_path / "questions.json"
    qfile.write_text(
        json.dumps([{"problem": "What is 2+2?", "unique_id": "x"}, {"question": "Sum?", "id": "y"}])
    )
    r = runner.invoke(
        app,
        [
            "predict",
            str(tmp_path / "ck"),
            "--questions",
            str(qfile),
            "--out",
            str(tmp_path / "p2.json"),
            *common,
        ],
    )
    assert r.exit_code == 0, r.output
    p2 = load_priors(tmp_path / "p2.json", ["y", "x"])
    assert p2.loc_mu.shape == (2,) and np.isfinite(p2.loc_mu).all()
    r = runner.invoke(app, ["predict", str(tmp_path / "nope"), *common])
    assert r.exit_code != 0


@pytest.mark.data
def test_real_data_and_baselines(shared_data):
    from predictor.baselines import GroupMean, metrics, train_mean
    from predictor.data import load_split

    tr, va = load_split("train", shared_data), load_split("val", shared_data)
    assert len(tr) == 4501 and len(va) == 500 and not set(tr.ids) & set(va.ids)
    assert set(np.unique(tr.levels)) == {1, 2, 3, 4, 5}
    m0 = metrics(va.labels, train_mean(tr.labels, len(va)))
    m1 = metrics(va.labels, GroupMean.fit(tr.levels, tr.labels).predict(va.levels))
    # the figures quoted in shared/data/README.md
    assert m0["mae_mean"] == pytest.approx(0.041, abs=5e-4) and m0["mae_std"] == pytest.approx(
        0.027, abs=5e-4
    )
    assert m1["mae_mean"] == pytest.approx(0.040, abs=5e-4) and m1["r2_mean"] == pytest.approx(
        0.04, abs=5e-3
    )
    with pytest.raises(ValueError, match="split"):
        load_split("test", shared_data)
