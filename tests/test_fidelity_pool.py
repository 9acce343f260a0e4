"""The authors' pool format read as the authors read it.

* Records are matched to prompts **by position** (their ``bon.py`` and notebooks do;
  their scorer writes ``id = position + 1`` for information only). Ids counting from 0
  or from 1 give the same pool; an id or ``problem`` text that contradicts the position
  is an error naming the record, never a silent shift.
* Empty completions keep their stored PRM score in every fit (the authors fit the
  scores as stored) and are never selected (both codes skip them).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import official
import pytest
from scipy.optimize import minimize
from test_pool import _official_record, _write

from optscale_jax.fit import fit_mle
from optscale_jax.grading import grade_pool
from optscale_jax.io import PoolFormatError, read_official
from optscale_jax.pool import Pool
from optscale_jax.replay import prefix_best_of_n
from optscale_jax.sweep import Grid, sweep


def _record(qid, completions, scores, tokens, problem=None):
    return _official_record(qid, completions, scores, tokens, problem=problem)


def random_official_pool(rng: np.random.Generator, q: int, n: int, first_id: int):
    """Prompts (integer answers) and an authors'-format pool with ids from ``first_id``."""
    prompts, records = [], []
    for k in range(q):
        gold = int(rng.integers(2, 60))
        text = f"Problem {k}: what is {gold} + 0?"
        prompts.append({"problem": text, "answer": str(gold)})
        comps, scores, toks = [], [], []
        for _ in range(n):
            kind = rng.choice(["right", "wrong", "nobox", "empty"], p=[0.4, 0.35, 0.1, 0.15])
            comps.append(
                {
                    "right": f"so the answer is \\boxed{{{gold}}}",
                    "wrong": f"hence \\boxed{{{gold + int(rng.integers(1, 5))}}}",
                    "nobox": "I could not finish",
                    "empty": "",
                }[kind]
            )
            # two decimals create ties (both codes keep the first drawn); an empty
            # completion often scores high, so skipping it matters
            scores.append(round(float(rng.uniform(0.01, 0.99)), 2))
            toks.append(0 if kind == "empty" else int(rng.integers(50, 900)))
        records.append(_record(k + first_id, comps, scores, toks, text if k % 3 == 0 else None))
    return prompts, records


def _authors_bon(prompts_file: Path, pool_file: Path, n_max: int, capsys):
    o = official.load("BoN_OptScale/bon.py", "load_validation_data", "evaluate_bon")
    data = o.load_validation_data(str(prompts_file), str(pool_file), "problem")
    acc, tokens = o.evaluate_bon(*data, max_N=n_max)
    capsys.readouterr()  # their progress prints
    return np.asarray(acc), np.asarray(tokens)


@pytest.mark.data
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_best_of_n_equals_the_authors_evaluation_for_ids_from_0_and_1(shared_data, tmp_path, seed, capsys):
    q, n = 14, 6
    pools = []
    for first_id in (0, 1):
        prompts, records = random_official_pool(np.random.default_rng(seed), q, n, first_id)
        p_file = _write(tmp_path / f"prompts_{first_id}.json", prompts)
        c_file = _write(tmp_path / f"pool_{first_id}.json", records)
        pool = grade_pool(read_official(c_file, p_file), workers=0)
        # gold alignment: entry k of the prompts for record k, whatever the ids
        assert pool.gold == [p["answer"] for p in prompts]
        assert pool.prompts == [p["problem"] for p in prompts]
        assert pool.question_ids == [str(k + first_id) for k in range(q)]
        picks = prefix_best_of_n(pool)
        ours_acc = pool.correct[np.arange(q)[:, None], picks].mean(axis=0)
        ours_tok = np.cumsum(pool.tokens, axis=1).mean(axis=0)
        ref_acc, ref_tok = _authors_bon(p_file, c_file, n, capsys)
        np.testing.assert_allclose(ours_acc, ref_acc, rtol=0, atol=1e-12)
        np.testing.assert_allclose(ours_tok, ref_tok, rtol=1e-12)
        assert pool.empty.any() and not pool.empty[np.arange(q)[:, None], picks][
            np.cumsum(pool.selectable, axis=1) > 0
        ].any()
        pools.append(pool)
    a, b = pools
    assert np.array_equal(a.scores, b.scores) and np.array_equal(a.correct, b.correct)


def test_ids_from_0_and_from_1_give_the_same_pool(tmp_path):
    prompts, recs0 = random_official_pool(np.random.default_rng(5), 5, 3, 0)
    _, recs1 = random_official_pool(np.random.default_rng(5), 5, 3, 1)
    p_file = _write(tmp_path / "p.json", prompts)
    a = read_official(_write(tmp_path / "a.json", recs0), p_file)
    b = read_official(_write(tmp_path / "b.json", recs1), p_file)
    assert a.question_ids == ["0", "1", "2", "3", "4"] and b.question_ids == ["1", "2", "3", "4", "5"]
    assert a.gold == b.gold == [p["answer"] for p in prompts]
    assert np.array_equal(a.scores, b.scores) and a.answers.tolist() == b.answers.tolist()


def _ids_file(tmp_path: Path, ids, problems=None) -> Path:
    recs = [
        _record(qid, ["\\boxed{1}"], [0.5], [3], None if problems is None else problems[k])
        for k, qid in enumerate(ids)
    ]
    return _write(tmp_path / "pool.json", recs)


@pytest.mark.parametrize(
    "ids,match",
    [
        ([2, 3, 4], r"record 0 \(id 2\): field 'id': id 2 contradicts the record's position 0"),
        ([1, 3, 4], r"record 1 \(id 3\): field 'id': id 3 contradicts the record's position 1: "
         r"expected 2 \(record 0 has id 1, so ids count from 1\)"),
        ([0, 1, 1], r"record 2 \(id 1\): field 'id': id 1 contradicts the record's position 2: expected 2"),
        ([1, 0, 2], r"record 1 \(id 0\): field 'id'"),  # a swap: never matched by id
        (["a", "b", "a"], r"record 2 \(id 'a'\): field 'id': duplicate id \(also record 0\)"),
    ],
)
def test_ids_that_contradict_positions_are_errors_naming_the_record(tmp_path, ids, match):
    prompts = _write(tmp_path / "p.json", [{"problem": f"P{k}", "answer": "1"} for k in range(3)])
    with pytest.raises(PoolFormatError, match=r"pool.json: " + match):
        read_official(_ids_file(tmp_path, ids), prompts)


def test_informational_ids_and_prefix_pools(tmp_path):
    prompts = _write(tmp_path / "p.json", [{"problem": f"P{k}", "answer": str(k)} for k in range(4)])
    # string ids are kept as they are; matching is by position
    pool = read_official(_ids_file(tmp_path, ["x", "y"]), prompts)
    assert pool.question_ids == ["x", "y"] and pool.gold == ["0", "1"]
    # a pool covering the first questions of the prompts file (the authors' loop needs
    # every prompt; we allow a prefix), ids from 1
    pool = read_official(_ids_file(tmp_path, [1, 2, 3]), prompts)
    assert pool.gold == ["0", "1", "2"] and pool.prompts == ["P0", "P1", "P2"]


def test_problem_text_that_contradicts_the_position_is_an_error(tmp_path):
    prompts = _write(tmp_path / "p.json", [{"problem": f"P{k}", "answer": "1"} for k in range(3)])
    ok = read_official(_ids_file(tmp_path, [1, 2, 3], problems=["P0", " P1 ", None]), prompts)
    assert ok.prompts == ["P0", "P1", "P2"]
    # the texts of records 1 and 2 are swapped: the ids alone would not show it
    with pytest.raises(
        PoolFormatError,
        match=r"pool.json: record 1 \(id 2\): field 'score.problem': does not match entry 1 of prompts file",
    ):
        read_official(_ids_file(tmp_path, [1, 2, 3], problems=["P0", "P2", "P1"]), prompts)


# ----------------------------------------------------------------- empty completions


def _authors_mle(data: np.ndarray) -> np.ndarray:
    o = official.load("BoN_OptScale/utils.py", "neg_log_likelihood")
    res = minimize(
        lambda p: o.neg_log_likelihood(p, data),
        [float(np.mean(data)), float(np.std(data))],
        bounds=[(None, None), (1e-6, None)],
        method="L-BFGS-B",
        options={"ftol": 1e-15, "gtol": 1e-12, "maxiter": 10_000},
    )
    return res.x


@pytest.mark.data
def test_empty_completions_keep_their_stored_score_in_the_fit(shared_data, tmp_path):
    rng = np.random.default_rng(3)
    q, n = 6, 12
    recs, stored = [], []
    for k in range(q):
        s = np.round(np.clip(rng.normal(0.75, 0.12, n), 0.02, 0.98), 4)
        comps = ["\\boxed{7}"] * n
        for j in rng.choice(n, size=3, replace=False):
            comps[j] = ""  # empty completion: the authors' scorer still gives it a PRM score
        stored.append(s)
        recs.append(_record(k + 1, comps, s.tolist(), [10] * n))
    pool = read_official(_write(tmp_path / "pool.json", recs))
    stored = np.array(stored)
    assert pool.empty.sum() == 3 * q
    np.testing.assert_array_equal(pool.scores, stored)  # nothing replaced by 0
    ours = fit_mle(pool.scores, pool.mask)
    direct = fit_mle(stored)
    np.testing.assert_array_equal(np.asarray(ours.mu), np.asarray(direct.mu))
    np.testing.assert_array_equal(np.asarray(ours.sigma), np.asarray(direct.sigma))
    for i in range(q):
        mu, sigma = _authors_mle(stored[i])
        assert float(ours.mu[i]) == pytest.approx(mu, abs=2e-5)
        assert float(ours.sigma[i]) == pytest.approx(sigma, abs=2e-5)


def test_empties_change_selection_only_never_the_optscale_fits():
    rng = np.random.default_rng(0)
    q, n = 25, 12
    scores = np.clip(rng.beta(8, 2, size=(q, n)), 0.01, 0.99)
    correct = scores > 0.85
    empty = rng.random((q, n)) < 0.15
    answer_ids = np.where(correct, 0, 1)
    with_empties = Pool.from_arrays(scores, correct=correct, answer_ids=answer_ids, empty=empty)
    without = Pool.from_arrays(scores, correct=correct & ~empty, answer_ids=np.where(empty, -1, answer_ids))
    np.testing.assert_array_equal(with_empties.scores, scores)
    g = Grid(s_min=(0.9, 0.95), quantile=(0.1,), n_max=(12,))
    a = sweep(with_empties, grid=g, methods=("OptScale0", "OptScaleT"), n_boot=0)
    b = sweep(without, grid=g, methods=("OptScale0", "OptScaleT"), n_boot=0)
    key = lambda r: (r["method"], r["s_min"], r["quantile"], r["n_max"])  # noqa: E731
    sa = {key(r): r["mean_samples"] for r in a.records}
    sb = {key(r): r["mean_samples"] for r in b.records}
    assert sa and sa == sb  # the same N*: empties enter the fits with their stored scores
    # the check can fail: zeroing the empties' scores (the old behaviour) moves N*
    zeroed = Pool.from_arrays(np.where(empty, 0.0, scores), correct=correct, empty=empty)
    c = sweep(zeroed, grid=g, methods=("OptScale0", "OptScaleT"), n_boot=0)
    assert {key(r): r["mean_samples"] for r in c.records} != sa
    # and selection never picks an empty completion while a non-empty one was drawn
    picks = prefix_best_of_n(with_empties)
    chosen_empty = with_empties.empty[np.arange(q)[:, None], picks]
    assert not chosen_empty[np.cumsum(with_empties.selectable, axis=1) > 0].any()
