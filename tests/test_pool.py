"""Pools: validation, transforms, readers (official, search-and-learn, Parquet) and their errors."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from optscale_jax.io import (
    PoolFormatError,
    detect_format,
    read_official,
    read_parquet,
    read_pool,
    read_prompts,
    read_search_and_learn,
    write_parquet,
)
from optscale_jax.pool import Pool
from optscale_jax.scores import aggregate_step_scores

SAL = "pools/search_and_learn_llama32_3b_math500_10x4.jsonl"


def _pool(**kw) -> Pool:
    base = dict(
        scores=[[0.9, 0.2, 0.5], [0.3, 0.7], []],
        tokens=[[10, 20, 30], [5, 6], []],
        answers=[["1", None, "2"], ["x", "y"], []],
        correct=[[True, False, False], [False, True], []],
        question_ids=["qa", "qb", "qc"],
        dataset="toy",
        gold=["1", "y", "z"],
        prompts=["p1", "p2", "p3"],
        step_scores=[[[0.9], [0.1, 0.3], [0.5, 0.5]], [[0.3], [0.7]], []],
    )
    base.update(kw)
    return Pool.from_arrays(**base)


# ---------------------------------------------------------------- validation


def test_from_arrays_pads_ragged_rows_and_normalises_padding():
    pool = _pool()
    assert pool.n_questions == 3 and pool.n_max == 3
    assert pool.n_samples.tolist() == [3, 2, 0]
    assert pool.mask.tolist() == [[True] * 3, [True, True, False], [False] * 3]
    assert pool.scores[1, 2] == 0.0 and pool.tokens[2].tolist() == [0, 0, 0]
    assert pool.answers[1, 2] is None and pool.answer_ids[1, 2] == -1
    assert pool.scores.dtype == np.float64 and pool.tokens.dtype == np.int64
    assert pool.answer_ids.dtype == np.int32 and pool.correct.dtype == bool


def test_padding_is_normalised_on_construction():
    pool = Pool(
        scores=np.array([[0.5, 7.0]]),  # 7.0 is padding: ignored and zeroed
        mask=np.array([[True, False]]),
        tokens=np.array([[3, 9]]),
        answers=np.array([["a", "b"]], dtype=object),
        answer_ids=np.array([[0, 1]]),
        correct=np.array([[True, True]]),
        question_ids=["q"],
        dataset="d",
        prompts=None,
        gold=None,
        step_scores=None,
    )
    assert pool.scores.tolist() == [[0.5, 0.0]]
    assert pool.tokens.tolist() == [[3, 0]]
    assert pool.answers.tolist() == [["a", None]]
    assert pool.answer_ids.tolist() == [[0, -1]]
    assert pool.correct.tolist() == [[True, False]]


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -0.1, 1.5])
def test_bad_scores_rejected_naming_question_and_sample(bad):
    with pytest.raises(ValueError, match=r"question 'qb' \(row 1\), sample 1"):
        Pool.from_arrays([[0.1, 0.2], [0.3, bad]], question_ids=["qa", "qb"])


def test_mask_must_be_prefix_contiguous():
    with pytest.raises(ValueError, match=r"prefix-contiguous at question 'q1' \(row 1\): sample 2"):
        Pool(
            scores=np.zeros((2, 3)),
            mask=np.array([[True, True, True], [True, False, True]]),
            tokens=np.zeros((2, 3), int),
            answers=np.full((2, 3), None, object),
            answer_ids=np.full((2, 3), -1),
            correct=np.zeros((2, 3), bool),
            question_ids=["q0", "q1"],
            dataset="d",
            prompts=None,
            gold=None,
            step_scores=None,
        )


def test_shape_and_metadata_mismatches_rejected():
    ok = _pool()
    with pytest.raises(ValueError, match="Pool.tokens has shape"):
        dataclasses.replace(ok, tokens=np.zeros((3, 2), int))
    with pytest.raises(ValueError, match="question_ids has 2 entries"):
        dataclasses.replace(ok, question_ids=["a", "b"])
    with pytest.raises(ValueError, match="duplicate id 'a' at rows 0 and 2"):
        dataclasses.replace(ok, question_ids=["a", "b", "a"])
    with pytest.raises(ValueError, match="gold has 2 entries"):
        dataclasses.replace(ok, gold=["1", "2"])
    with pytest.raises(ValueError, match="step_scores: question 'qb' \\(row 1\\) has 1 samples"):
        dataclasses.replace(ok, step_scores=[[[0.9], [0.1], [0.5]], [[0.3]], []])
    with pytest.raises(ValueError, match="negative token count"):
        dataclasses.replace(ok, tokens=np.array([[1, -2, 3], [0, 0, 0], [0, 0, 0]]))
    with pytest.raises(ValueError, match="from_arrays: tokens row 1 \\(question 'qb'\\) has 3 entries"):
        _pool(tokens=[[1, 2, 3], [1, 2, 3], []])


def test_empty_completions_are_never_selectable():
    pool = Pool.from_arrays(
        [[0.9, 0.8]], answers=[["5", "6"]], correct=[[True, True]], empty=[[True, False]]
    )
    assert pool.mask.tolist() == [[True, True]]  # drawn and paid for
    assert pool.selectable.tolist() == [[False, True]]
    # the stored score is kept (fits use it, as the authors' do); no answer, never correct
    assert pool.scores[0, 0] == 0.9 and pool.answers[0, 0] is None
    assert not pool.correct[0, 0] and pool.answer_ids[0, 0] == -1


def test_zero_question_and_zero_sample_pools():
    empty = Pool.from_arrays([])
    assert empty.n_questions == 0 and empty.n_max == 0
    nosamples = Pool.from_arrays([[], []])
    assert nosamples.mask.shape == (2, 0)
    assert nosamples.truncate(3).n_max == 0
    assert nosamples.permuted(0, 2)[0].equals(nosamples)


# ---------------------------------------------------------------- transforms


def test_subset_and_truncate():
    pool = _pool()
    sub = pool.subset([1, 0])
    assert sub.question_ids == ["qb", "qa"]
    assert sub.scores[0, :2].tolist() == [0.3, 0.7]
    assert sub.step_scores == [[[0.3], [0.7]], [[0.9], [0.1, 0.3], [0.5, 0.5]]]
    assert sub.gold == ["y", "1"] and sub.prompts == ["p2", "p1"]
    assert pool.subset(np.array([False, True, False])).question_ids == ["qb"]
    tr = pool.truncate(1)
    assert tr.n_max == 1 and tr.n_samples.tolist() == [1, 1, 0]
    assert tr.step_scores == [[[0.9]], [[0.3]], []]
    assert pool.truncate(10).equals(pool)
    with pytest.raises(ValueError):
        pool.truncate(-1)


def test_permuted_keeps_each_rows_samples_together():
    rng = np.random.default_rng(3)
    q, n = 20, 9
    lengths = rng.integers(0, n + 1, size=q)
    scores = [rng.random(k).tolist() for k in lengths]
    steps = [[[s, s / 2] for s in row] for row in scores]
    pool = Pool.from_arrays(
        scores,
        tokens=[list(range(100, 100 + k)) for k in lengths],
        answers=[[f"a{j}" for j in range(k)] for k in lengths],
        step_scores=steps,
    )
    perms = pool.permuted(7, 4)
    assert len(perms) == 4
    assert all(p.equals(o) for p, o in zip(pool.permuted(7, 4), perms, strict=True))  # deterministic
    assert not all(np.array_equal(perms[0].scores, p.scores) for p in perms[1:])
    for p in perms:
        assert np.array_equal(p.mask, pool.mask)
        for i in range(q):
            k = lengths[i]
            # the same multiset, and every field moved together with its score
            assert sorted(p.scores[i, :k]) == sorted(pool.scores[i, :k])
            orig = {a: j for j, a in enumerate(pool.answers[i, :k])}
            for jj in range(k):
                j = orig[p.answers[i, jj]]
                assert p.scores[i, jj] == pool.scores[i, j]
                assert p.tokens[i, jj] == pool.tokens[i, j]
                assert p.step_scores[i][jj] == pool.step_scores[i][j]


def test_permutation_orders_are_uniform():
    # each of the 3! orders of a full row should appear about equally often
    pool = Pool.from_arrays([[0.1, 0.2, 0.3]])
    orders = pool.permutation_orders(0, 6000)[:, 0, :]
    counts = {}
    for o in map(tuple, orders):
        counts[o] = counts.get(o, 0) + 1
    assert len(counts) == 6
    assert all(abs(c - 1000) < 150 for c in counts.values())


# ---------------------------------------------------------------- aggregation


@pytest.mark.parametrize(
    "how,ref",
    [("mean", np.mean), ("last", lambda a: a[-1]), ("min", np.min), ("product", np.prod)],
)
def test_aggregate_step_scores(how, ref):
    rng = np.random.default_rng(0)
    for _ in range(20):
        a = rng.random(rng.integers(1, 12))
        assert aggregate_step_scores(a.tolist(), how) == pytest.approx(float(ref(a)), rel=1e-12)
    assert aggregate_step_scores([], how) == 0.0
    with pytest.raises(ValueError, match="aggregate must be one of"):
        aggregate_step_scores([0.5], "median")


# ---------------------------------------------------------------- Parquet


def test_parquet_round_trip_is_lossless(tmp_path):
    pool = _pool(
        answer_ids=[[0, -1, 1], [0, 1], []],
        empty=[[False, True, False], [False, False], []],
        synthetic=True,
        metadata={"source": "x", "nested": {"a": [1, 2.5]}},
    )
    # a padded width larger than the longest row must survive too
    wide = pool.replace(
        scores=np.pad(pool.scores, ((0, 0), (0, 2))),
        mask=np.pad(pool.mask, ((0, 0), (0, 2))),
        tokens=np.pad(pool.tokens, ((0, 0), (0, 2))),
        answers=np.pad(pool.answers, ((0, 0), (0, 2)), constant_values=None),
        answer_ids=np.pad(pool.answer_ids, ((0, 0), (0, 2)), constant_values=-1),
        correct=np.pad(pool.correct, ((0, 0), (0, 2))),
        empty=np.pad(pool.empty, ((0, 0), (0, 2))),
    )
    for p in (pool, wide, pool.replace(prompts=None, gold=None, step_scores=None)):
        path = write_parquet(p, tmp_path / "sub" / "pool.parquet")
        back = read_parquet(path)
        assert back.equals(p)
        assert back.scores.tobytes() == p.scores.tobytes()  # bit-exact floats
        assert detect_format(path) == "parquet"
        assert read_pool(path).equals(p)


@settings(max_examples=25, deadline=None)
@given(
    rows=st.lists(
        st.lists(
            st.tuples(
                st.floats(0.0, 1.0, allow_nan=False),
                st.integers(0, 10**6),
                st.one_of(st.none(), st.text(max_size=5)),
                st.booleans(),
            ),
            max_size=6,
        ),
        max_size=6,
    )
)
def test_parquet_round_trip_random_pools(tmp_path_factory, rows):
    pool = Pool.from_arrays(
        [[r[0] for r in row] for row in rows],
        tokens=[[r[1] for r in row] for row in rows],
        answers=[[r[2] for r in row] for row in rows],
        correct=[[r[3] for r in row] for row in rows],
        step_scores=[[[r[0], r[0] / 3] for r in row] for row in rows],
    )
    path = tmp_path_factory.mktemp("pq") / "p.parquet"
    assert read_parquet(write_parquet(pool, path)).equals(pool)


def test_parquet_errors_name_the_file(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    foreign = tmp_path / "foreign.parquet"
    pq.write_table(pa.table({"a": [1, 2]}), foreign)
    with pytest.raises(PoolFormatError, match="foreign.parquet: no optscale_jax.pool schema metadata"):
        read_parquet(foreign)
    junk = tmp_path / "junk.parquet"
    junk.write_bytes(b"PAR1 not really")
    with pytest.raises(PoolFormatError, match="junk.parquet: not a readable Parquet file"):
        read_parquet(junk)
    with pytest.raises(ValueError, match="not JSON-serialisable"):
        write_parquet(_pool(metadata={"f": object()}), tmp_path / "x.parquet")


# ---------------------------------------------------------------- official format


def _official_record(qid, completions, scores, tokens, last=None, problem=None, wrap=True):
    w = (lambda x: [x]) if wrap else (lambda x: x)
    sc = {"completions": w(completions), "scores": w(scores), "completion_tokens": w(tokens)}
    if last is not None:
        sc["last_scores"] = w(last)
    if problem is not None:
        sc["problem"] = [problem]
    return {"id": qid, "output": "", "n": len(completions), "score": sc}


def _write(path: Path, obj) -> Path:
    path.write_text(json.dumps(obj))
    return path


def test_official_reader_with_prompts(tmp_path):
    prompts = _write(
        tmp_path / "gsm8k.json",
        [{"question": "Q1?", "answer": "work\n#### 1,234"}, {"question": "Q2?", "answer": "x\n#### 7"}],
    )
    pool_file = _write(
        tmp_path / "pool.json",
        [
            _official_record(
                1,
                ["so \\boxed{1234}", "", "no box here"],
                [0.9, 0.4, 0.7],
                [100, 0, 50],
                last=[0.95, 0.1, 0.6],
                problem="Q1?",
            ),
            _official_record(2, ["\\boxed{\\frac{1}{2}}"], [0.25], [12], last=[0.5]),
        ],
    )
    pool = read_official(pool_file, prompts)
    assert detect_format(pool_file) == "official"
    assert pool.dataset == "gsm8k"
    assert pool.question_ids == ["1", "2"]
    assert pool.gold == ["1234", "7"]
    assert pool.prompts == ["Q1?", "Q2?"]
    assert pool.scores.tolist() == [[0.9, 0.4, 0.7], [0.25, 0.0, 0.0]]  # empty keeps 0.4
    assert pool.tokens.tolist() == [[100, 0, 50], [12, 0, 0]]
    assert pool.answers.tolist() == [["1234", None, None], ["\\frac{1}{2}", None, None]]
    assert pool.empty.tolist() == [[False, True, False], [False, False, False]]
    assert pool.step_scores is None
    last = read_pool(pool_file, prompts=prompts, aggregate="last")
    assert last.scores.tolist() == [[0.95, 0.1, 0.6], [0.5, 0.0, 0.0]]
    with pytest.raises(PoolFormatError, match="needs per-step scores"):
        read_official(pool_file, aggregate="min")


@pytest.mark.parametrize("wrap", [True, False])
def test_official_reader_with_step_scores(tmp_path, wrap):
    steps = [[0.5, 0.9, 0.7], [0.2], [1.0, 0.4]]
    f = _write(
        tmp_path / "steps.json",
        [_official_record("a", ["\\boxed{1}", "\\boxed{2}", "\\boxed{3}"], steps, [1, 2, 3], wrap=wrap)],
    )
    for how, ref in [("mean", np.mean), ("min", np.min), ("product", np.prod), ("last", lambda a: a[-1])]:
        pool = read_official(f, aggregate=how)
        assert pool.scores[0].tolist() == pytest.approx([float(ref(np.array(s))) for s in steps])
        assert pool.step_scores == [steps]
    assert read_official(f).prompts is None and read_official(f).gold is None


@pytest.mark.parametrize(
    "record,match",
    [
        ({"score": {}}, r"record 1: field 'id': missing"),
        ({"id": 5}, r"record 1 \(id 5\): field 'score': missing"),
        (
            {"id": 5, "score": {"scores": [[0.1]], "completion_tokens": [[1]]}},
            r"record 1 \(id 5\): field 'score.completions': missing",
        ),
        (
            _official_record(5, ["a", "b"], [0.1], [1, 2]),
            r"record 1 \(id 5\): field 'score.scores': has 1 entries but 'score.completions' has 2",
        ),
        (
            _official_record(5, ["a", "b"], [0.1, float("nan")], [1, 2]),
            r"record 1 \(id 5\): field 'score.scores\[1\]': nan is not a finite number in \[0, 1\]",
        ),
        (
            _official_record(5, ["a"], [[0.1, 1.2]], [1]),
            r"record 1 \(id 5\): field 'score.scores\[0\]\[1\]': 1.2 is not a finite number",
        ),
        (
            _official_record(5, ["a"], [0.1], [-3]),
            r"record 1 \(id 5\): field 'score.completion_tokens\[0\]': -3 is not a non-negative integer",
        ),
        (
            _official_record(5, ["a", "b"], [[0.1], 0.2], [1, 1]),
            r"record 1 \(id 5\): field 'score.scores\[1\]': mixes per-step lists and single scores",
        ),
        (
            {"id": 5, "score": {"completions": [["a"]], "scores": [0.1], "completion_tokens": [[1]]}},
            r"record 1 \(id 5\): field 'score.scores': expected a one-element batch list",
        ),
    ],
)
def test_official_reader_errors_name_file_record_field(tmp_path, record, match):
    good = _official_record(1, ["\\boxed{1}"], [0.5], [3])
    f = _write(tmp_path / "bad_pool.json", [good, record])
    with pytest.raises(PoolFormatError, match="bad_pool.json: " + match):
        read_official(f)


def test_official_reader_file_level_errors(tmp_path):
    f = tmp_path / "broken.json"
    f.write_text('[{"id": 1,\n "score": }]')
    with pytest.raises(PoolFormatError, match=r"broken.json: line 2, column 11: invalid JSON"):
        read_official(f)
    f2 = _write(tmp_path / "obj.json", {"id": 1})
    with pytest.raises(PoolFormatError, match="obj.json: expected a JSON list of records, got dict"):
        read_official(f2)
    prompts = _write(tmp_path / "p.json", [{"problem": "A", "answer": "1"}])
    f3 = _write(tmp_path / "two.json", [_official_record(1, ["x"], [0.1], [1])] * 2)
    with pytest.raises(PoolFormatError, match="has 2 records but prompts file"):
        read_official(f3, prompts)
    f4 = _write(tmp_path / "mismatch.json", [_official_record(1, ["x"], [0.1], [1], problem="B")])
    with pytest.raises(PoolFormatError, match="score.problem': does not match entry 0"):
        read_official(f4, prompts)
    bad_prompts = _write(tmp_path / "bp.json", [{"problem": "A"}])
    with pytest.raises(PoolFormatError, match="bp.json: record 0: field 'answer': missing gold answer"):
        read_prompts(bad_prompts)


@pytest.mark.data
def test_read_prompts_real_benchmarks(shared_data):
    ids, texts, gold = read_prompts(shared_data / "benchmarks" / "math500.json")
    raw = json.loads((shared_data / "benchmarks" / "math500.json").read_text())
    assert len(ids) == 500 and ids[0] == raw[0]["unique_id"]
    assert gold == [r["answer"].strip() for r in raw]
    ids, texts, gold = read_prompts(shared_data / "benchmarks" / "gsm8k.json")
    raw = json.loads((shared_data / "benchmarks" / "gsm8k.json").read_text())
    assert len(gold) == 1319 and texts[0] == raw[0]["question"]
    assert all(g.lstrip("-").replace(".", "", 1).isdigit() for g in gold)
    assert ids[:2] == ["1", "2"]


# ---------------------------------------------------------------- search-and-learn


@pytest.mark.data
def test_search_and_learn_real_pool(shared_data):
    path = shared_data / SAL
    raw = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    assert detect_format(path) == "search_and_learn"
    for how, ref in [("mean", np.mean), ("last", lambda a: a[-1]), ("min", np.min), ("product", np.prod)]:
        pool = read_pool(path, aggregate=how)
        assert pool.scores.shape == (10, 4) and pool.mask.all()
        expect = np.array([[float(ref(np.array(s))) for s in r["scores"]] for r in raw])
        np.testing.assert_allclose(pool.scores, expect, rtol=0, atol=1e-15)
    # search-and-learn's own aggregate (agg_scores) is the last step score
    np.testing.assert_array_equal(read_pool(path, aggregate="last").scores, [r["agg_scores"] for r in raw])
    pool = read_search_and_learn(path)
    assert pool.question_ids == [r["unique_id"] for r in raw]
    assert pool.gold == [r["answer"] for r in raw]
    assert pool.prompts == [r["problem"] for r in raw]
    assert pool.tokens.tolist() == [r["completion_tokens"] for r in raw]
    assert pool.step_scores == [r["scores"] for r in raw]
    assert pool.answers[0, 2] == "(3,\\frac{\\pi}{2})"
    assert pool.dataset == path.stem


def test_search_and_learn_errors_name_line_and_field(tmp_path):
    good = {"completions": ["\\boxed{1}"], "scores": [[0.5]], "completion_tokens": [4], "answer": "1"}
    cases = [
        ("not json", r"line 2: invalid JSON"),
        ({**good, "scores": [[0.5, -1]]}, r"line 2: field 'scores\[0\]\[1\]': -1 is not a finite number"),
        ({k: v for k, v in good.items() if k != "completion_tokens"}, r"line 2: field 'completion_tokens': missing"),
        ({**good, "completions": "abc"}, r"line 2: field 'completions': expected a list of strings, got str"),
        ({**good, "completions": [3]}, r"line 2: field 'completions\[0\]': expected a string, got int"),
        ({**good, "completion_tokens": [1.5]}, r"line 2: field 'completion_tokens\[0\]': 1.5 is not a non-negative"),
        ({**good, "answer": ["x"]}, r"line 2: field 'answer': expected a string or number"),
    ]
    for k, (second, match) in enumerate(cases):
        f = tmp_path / f"bad{k}.jsonl"
        lines = [json.dumps(good), second if isinstance(second, str) else json.dumps(second)]
        f.write_text("\n".join(lines) + "\n")
        with pytest.raises(PoolFormatError, match=f"bad{k}.jsonl: " + match):
            read_search_and_learn(f)
    dup = tmp_path / "dup.jsonl"
    dup.write_text("\n".join(json.dumps({**good, "unique_id": "u"}) for _ in range(2)))
    with pytest.raises(PoolFormatError, match="duplicate question id 'u'"):
        read_search_and_learn(dup)


def test_detect_format_unknown(tmp_path):
    f = tmp_path / "x.txt"
    f.write_text("hello")
    with pytest.raises(PoolFormatError, match="x.txt: unknown pool format"):
        read_pool(f)


@pytest.mark.data
def test_official_reader_matches_records_to_real_prompts_by_position(shared_data, tmp_path):
    prompts = shared_data / "benchmarks" / "math500.json"
    raw = json.loads(prompts.read_text())
    for first in (0, 1):  # ids are informational: counting from 0 or from 1 gives the same pool
        f = _write(
            tmp_path / f"MATH500_pool_{first}.json",
            [
                _official_record(first, ["\\boxed{1}"], [0.5], [10], problem=raw[0]["problem"]),
                _official_record(first + 1, ["\\boxed{2}", "x"], [0.25, 0.75], [20, 30]),
            ],
        )
        pool = read_pool(f, prompts=prompts)
        assert pool.question_ids == [str(first), str(first + 1)]
        assert pool.gold == [raw[0]["answer"], raw[1]["answer"]]
        assert pool.prompts == [raw[0]["problem"], raw[1]["problem"]]
        assert pool.dataset == "math500"
        assert pool.n_samples.tolist() == [1, 2]
    # an id order that contradicts the position is an error, never a silent shift
    f = _write(
        tmp_path / "shuffled.json",
        [
            _official_record(3, ["\\boxed{1}"], [0.5], [10]),
            _official_record(1, ["\\boxed{2}"], [0.25], [20]),
        ],
    )
    with pytest.raises(PoolFormatError, match=r"shuffled.json: record 0 \(id 3\): field 'id': id 3"):
        read_pool(f, prompts=prompts)
