"""The synthetic twin: determinism, labels, speed, calibration to the published figures."""

from __future__ import annotations

import dataclasses
import json
import time

import numpy as np
import pytest

from optscale_jax.io import read_parquet, write_parquet
from optscale_jax.synthetic import (
    DATASETS,
    _first_appearance_ids,
    _official_targets,
    _summarise_prm_moments,
    best_of_n_accuracy,
    compare_with_official,
    load_calibration,
    majority_accuracy,
    synthetic_pool,
)


@pytest.mark.parametrize("dataset", DATASETS)
def test_every_dataset_is_labelled_and_deterministic(dataset):
    a = synthetic_pool(dataset, n_samples=16, seed=3)
    b = synthetic_pool(dataset, n_samples=16, seed=3)
    c = synthetic_pool(dataset, n_samples=16, seed=4)
    assert a.equals(b)
    assert not np.array_equal(a.scores, c.scores)
    assert a.synthetic and a.dataset == f"{dataset} (synthetic)" and a.label == a.dataset
    assert a.n_questions == load_calibration()["datasets"][dataset]["params"]["n_questions"]
    assert a.mask.all() and a.scores.shape == (a.n_questions, 16)
    assert ((a.scores >= 0) & (a.scores <= 1)).all()
    assert (a.tokens >= 1).all()
    assert a.gold is not None and a.prompts is None
    # correct samples carry the gold answer, wrong ones never do
    gold = np.array(a.gold, dtype=object)[:, None]
    assert (a.answers[a.correct] == np.broadcast_to(gold, a.answers.shape)[a.correct]).all()
    wrong = ~a.correct & (a.answers != None)  # noqa: E711
    assert not (a.answers[wrong] == np.broadcast_to(gold, a.answers.shape)[wrong]).any()


def test_unknown_dataset_and_bad_arguments():
    with pytest.raises(ValueError, match="unknown dataset 'math5000'"):
        synthetic_pool("math5000")
    with pytest.raises(ValueError, match="empty_rate"):
        synthetic_pool(empty_rate=1.0)


def test_generation_is_fast():
    synthetic_pool("math500", 64, seed=0)  # warm-up
    t0 = time.perf_counter()
    pool = synthetic_pool("math500", 64, seed=1)
    elapsed = time.perf_counter() - t0
    assert pool.scores.shape == (500, 64)
    assert elapsed < 1.0, f"500 x 64 synthetic pool took {elapsed:.2f} s"


def test_parquet_round_trip_keeps_synthetic_label(tmp_path):
    pool = synthetic_pool("gsm8k", 8, seed=2, n_questions=20, empty_rate=0.1)
    back = read_parquet(write_parquet(pool, tmp_path / "twin.parquet"))
    assert back.equals(pool) and back.synthetic and "synthetic" in back.dataset


def test_first_appearance_ids_match_a_loop():
    rng = np.random.default_rng(0)
    codes = rng.integers(-1, 6, size=(50, 12))
    got = _first_appearance_ids(codes)
    for i in range(50):
        seen: dict[int, int] = {}
        for j, c in enumerate(codes[i]):
            if c < 0:
                assert got[i, j] == -1
            else:
                seen.setdefault(int(c), len(seen))
                assert got[i, j] == seen[int(c)]


def _brute_bon(pool, n):
    ok = []
    for i in range(pool.n_questions):
        best, pick = -1.0, None
        for j in range(min(n, pool.n_max)):
            if pool.selectable[i, j] and pool.scores[i, j] > best:  # strict: ties keep the first
                best, pick = pool.scores[i, j], j
        ok.append(pick is not None and bool(pool.correct[i, pick]))
    return np.mean(ok)


def _brute_maj(pool, n):
    ok = []
    for i in range(pool.n_questions):
        counts: dict[int, int] = {}
        order: list[int] = []
        good: dict[int, bool] = {}
        for j in range(min(n, pool.n_max)):
            c = int(pool.answer_ids[i, j])
            if c < 0:
                continue
            if c not in counts:
                order.append(c)
            counts[c] = counts.get(c, 0) + 1
            good[c] = good.get(c, False) or bool(pool.correct[i, j])
        if not counts:
            ok.append(False)
            continue
        top = max(counts.values())
        win = next(c for c in order if counts[c] == top)
        ok.append(good[win])
    return np.mean(ok)


def test_curves_match_brute_force_loops():
    pool = synthetic_pool("aime25", 16, seed=5, n_questions=60, empty_rate=0.05)
    # quantise scores to create ties
    pool = pool.replace(scores=np.round(pool.scores, 1))
    ns = [1, 2, 3, 5, 16]
    np.testing.assert_allclose(best_of_n_accuracy(pool, ns), [_brute_bon(pool, n) for n in ns])
    np.testing.assert_allclose(majority_accuracy(pool, ns), [_brute_maj(pool, n) for n in ns])


def test_empty_completions_are_marked_and_never_selected():
    pool = synthetic_pool("math500", 16, seed=0, n_questions=300, empty_rate=0.2)
    assert 0.15 < pool.empty.mean() < 0.25
    # an empty completion keeps its drawn score (the fits use it) but is never selected
    assert (pool.scores[pool.empty] > 0).all()
    from optscale_jax.replay import prefix_best_of_n

    picks = prefix_best_of_n(pool)
    rows = np.arange(pool.n_questions)[:, None]
    has_choice = np.cumsum(pool.selectable, axis=1) > 0
    assert not pool.empty[rows, picks][has_choice].any()
    assert all(a is None for a in pool.answers[pool.empty])
    assert (pool.answer_ids[pool.empty] == -1).all() and not pool.correct[pool.empty].any()
    assert (pool.tokens[pool.empty] > 0).all()  # drawn and paid for


# ------------------------------------------------------------------ calibration


@pytest.mark.parametrize("dataset", DATASETS)
def test_n1_accuracy_and_tokens_match_official(dataset):
    off = load_calibration()["datasets"][dataset]["official"]
    pool = synthetic_pool(dataset, 8, seed=11, n_questions=4000)
    acc1 = pool.correct[:, 0].mean()
    assert abs(acc1 - off["bon"]["1"]) < 0.015, (acc1, off["bon"]["1"])
    assert abs(pool.correct.mean() - off["bon"]["1"]) < 0.015
    tok = pool.tokens.mean()
    assert abs(tok / off["tokens_per_sample"] - 1) < 0.03, (tok, off["tokens_per_sample"])
    # at the benchmark's own size too (stratified draws keep small pools close)
    small = synthetic_pool(dataset, 64, seed=0)
    assert abs(small.tokens.mean() / off["tokens_per_sample"] - 1) < 0.06
    assert abs(small.correct.mean() - off["bon"]["1"]) < 0.06


@pytest.mark.parametrize("dataset,tol_mean,tol_max", [("math500", 0.015, 0.03), ("gsm8k", 0.015, 0.03), ("amc23", 0.04, 0.08)])
def test_best_of_n_curve_close_to_official(dataset, tol_mean, tol_max):
    r = compare_with_official(dataset, seeds=range(3))
    assert r["bon_mean_abs_diff"] < tol_mean, r
    assert r["bon_max_abs_diff"] < tol_max, r
    # BoN gains over a single sample, as on the real model
    assert r["bon_synthetic"][3] > r["bon_synthetic"][0] + 0.02


def test_majority_vote_trails_best_of_n_on_hard_sets():
    # the official AIME24 results: SC@64 0.60 vs BoN@64 0.80; distractors make voting plateau
    bon = np.mean([best_of_n_accuracy(synthetic_pool("aime24", 64, s), [64])[0] for s in range(10)])
    maj = np.mean([majority_accuracy(synthetic_pool("aime24", 64, s), [64])[0] for s in range(10)])
    assert bon > maj + 0.03
    # and on MATH-500 voting at N = 2 cannot beat N = 1 (ties go to the first answer)
    p = synthetic_pool("math500", 2, 0)
    acc = majority_accuracy(p, [1, 2])
    assert acc[1] <= acc[0] + 0.01


def test_wrong_answers_cluster_into_few_distractors():
    pool = synthetic_pool("math500", 64, seed=0)
    n_wrong_samples = []
    n_wrong_classes = []
    for i in range(pool.n_questions):
        w = ~pool.correct[i] & (pool.answer_ids[i] >= 0)
        if w.sum() >= 10:
            n_wrong_samples.append(w.sum())
            n_wrong_classes.append(len(np.unique(pool.answer_ids[i][w])))
    assert len(n_wrong_samples) > 20
    # far fewer distinct wrong answers than wrong samples
    assert np.median(np.array(n_wrong_classes) / np.array(n_wrong_samples)) < 0.3


def test_correctness_rises_with_score():
    pool = synthetic_pool("math500", 64, seed=0)
    s, c = pool.scores.ravel(), pool.correct.ravel()
    lo, hi = np.quantile(s, [0.1, 0.9])
    assert c[s >= hi].mean() > c[s <= lo].mean() + 0.2
    # within questions with both outcomes, correct samples score higher on average
    diffs = [
        pool.scores[i, pool.correct[i]].mean() - pool.scores[i, ~pool.correct[i]].mean()
        for i in range(pool.n_questions)
        if 5 <= pool.correct[i].sum() <= 59
    ]
    assert len(diffs) > 30 and np.mean(diffs) > 0 and np.mean(np.array(diffs) > 0) > 0.6


def test_per_question_score_moments_follow_the_committed_quantiles():
    mom = load_calibration()["prm_moments"]
    pool = synthetic_pool("math500", 64, seed=0, n_questions=3000)
    m = pool.scores.mean(axis=1)
    sd = pool.scores.std(axis=1, ddof=1)
    probs = [0.1, 0.25, 0.5, 0.75, 0.9]
    real_m = np.interp(probs, mom["mean_probs"], mom["mean_quantiles"])
    np.testing.assert_allclose(np.quantile(m, probs), real_m, atol=0.012)
    # std: pooled over the mean bins, against the committed per-bin quantiles
    real_sd_median = np.median([np.interp(0.5, mom["std_probs"], q) for q in mom["std_quantiles_by_bin"]])
    assert abs(np.median(sd) - real_sd_median) < 0.015
    assert np.corrcoef(m, sd)[0, 1] < -0.5  # as in the real data (about -0.8)
    # scores pile up near 1 with a tail of low scores, like real PRM scores
    assert np.median(pool.scores) > 0.93 and np.quantile(pool.scores, 0.05) < 0.8


def test_harder_datasets_get_lower_scores_and_longer_completions():
    easy = synthetic_pool("gsm8k", 32, 0, n_questions=1000)
    hard = synthetic_pool("aime25", 32, 0, n_questions=1000)
    assert hard.scores.mean() < easy.scores.mean() - 0.02
    assert hard.tokens.mean() > 10 * easy.tokens.mean()


def test_params_override():
    base = synthetic_pool("math500", 16, 0, n_questions=400)
    from optscale_jax.synthetic import _params_for

    p = dataclasses.replace(_params_for("math500", load_calibration()), accuracy=0.5)
    low = synthetic_pool("math500", 16, 0, n_questions=400, params=p)
    assert abs(low.correct.mean() - 0.5) < 0.04 and base.correct.mean() > 0.85
    assert low.metadata["synthetic"]["params"]["accuracy"] == 0.5


@pytest.mark.data
def test_committed_calibration_regenerates_from_shared_files(shared_data):
    cal = load_calibration()
    mom = _summarise_prm_moments(
        [shared_data / "predictor" / "train_mu_sigma.json", shared_data / "predictor" / "val_mu_sigma.json"]
    )
    assert json.loads(json.dumps(mom)) == cal["prm_moments"]
    for ds in DATASETS:
        t = _official_targets(shared_data / "reference" / "official", ds)
        assert json.loads(json.dumps(t)) == cal["datasets"][ds]["official"]
        assert cal["datasets"][ds]["params"]["accuracy"] == t["bon"]["1"]


@pytest.mark.data
def test_score_moments_close_to_real_mu_sigma_files(shared_data):
    # independent of the committed summary: compare with the raw per-question moments
    real = np.array(json.loads((shared_data / "predictor" / "val_mu_sigma.json").read_text()))
    pool = synthetic_pool("math500", 64, seed=1)
    m = pool.scores.mean(axis=1)
    sd = pool.scores.std(axis=1, ddof=1)
    for probs in ([0.1, 0.25, 0.5, 0.75, 0.9],):
        np.testing.assert_allclose(np.quantile(m, probs), np.quantile(real[:, 0], probs), atol=0.02)
        np.testing.assert_allclose(np.quantile(sd, probs), np.quantile(real[:, 1], probs), atol=0.02)
