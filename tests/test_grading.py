"""Grading: extraction, math-verify comparison, time bounds, caching, classes, the real pool."""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

from optscale_jax.grading import (
    Grader,
    equivalence_classes,
    extract_answer,
    extract_boxed,
    extract_gold,
    grade_pool,
    math_verify_equal,
    search_and_learn_agreement,
)
from optscale_jax.io import read_pool
from optscale_jax.pool import Pool

SAL = "pools/search_and_learn_llama32_3b_math500_10x4.jsonl"

# ----------------------------------------------------------------- helpers for workers
# (top-level so that spawned worker processes can unpickle them)

_CALLS = {"n": 0}


def _counting_check(gold: str, answer: str) -> bool:
    _CALLS["n"] += 1
    return gold == answer


def _slow_check(gold: str, answer: str) -> bool:
    if answer == "slow":
        time.sleep(60)
    return gold == answer


def _crashing_check(gold: str, answer: str) -> bool:
    if answer == "boom":
        raise RuntimeError("parser exploded")
    return gold == answer


# ----------------------------------------------------------------- extraction


@pytest.mark.parametrize(
    "text,expected",
    [
        (r"The answer is $\boxed{5}$.", "5"),
        (r"$\boxed{\frac{1}{2}}$", r"\frac{1}{2}"),
        (r"\boxed{\left( 3, \frac{\pi}{2} \right)}", r"\left( 3, \frac{\pi}{2} \right)"),
        (r"first \boxed{1} then \boxed{2} finally \boxed{\sqrt{\frac{a}{b}}}", r"\sqrt{\frac{a}{b}}"),
        (r"\fbox{42}", "42"),
        (r"\boxed{1} and \fbox{x^{2}}", "x^{2}"),
        (r"\boxed { 7 }", "7"),
        (r"\boxed 5.", "5"),
        (r"set \boxed{\{1, 2\}}", r"\{1, 2\}"),
        (r"\boxed{3} then truncated \boxed{\frac{1}{", "3"),  # unclosed last box ignored
        ("no box at all", None),
        ("", None),
        (None, None),
        (r"\boxed{}", None),
    ],
)
def test_extract_answer_lenient(text, expected):
    assert extract_answer(text, rule="lenient") == expected


@pytest.mark.parametrize(
    "text,expected",
    [
        (r"The answer is $\boxed{5}$.", "5"),
        (r"first \boxed{1} then \boxed{2} finally \boxed{\sqrt{\frac{a}{b}}}", r"\sqrt{\frac{a}{b}}"),
        (r"\fbox{42}", None),  # the authors read \boxed{ only
        (r"\boxed{1} and \fbox{x^{2}}", "1"),
        (r"\boxed { 7 }", None),
        (r"\boxed 5.", None),
        (r"\boxed{ 7 }", " 7 "),  # verbatim: their vote counts " 7 " and "7" apart
        (r"\boxed{}", ""),
        (r"\boxed{3} then truncated \boxed{\frac{1}{", "3"),
        (r"\boxed{\boxed{4}", "4"),  # unclosed outer box, complete inner one
        (r"\boxed{\boxed{4}}", r"\boxed{4}"),  # matches do not overlap
        (None, None),
    ],
)
def test_extract_answer_official(text, expected):
    assert extract_answer(text) == expected


def test_extract_answer_unknown_rule():
    with pytest.raises(ValueError, match="rule"):
        extract_answer("x", rule="strict")


def test_extract_boxed_empty_box_is_empty_string():
    assert extract_boxed(r"\boxed{ }") == ""


@pytest.mark.parametrize(
    "raw,gold",
    [
        ("Janet sells 16 - 3 - 4 = <<16-3-4=9>>9 duck eggs.\n#### 18", "18"),
        ("lots of work\n#### 1,234", "1234"),
        ("#### -5", "-5"),
        (" \\frac{14}{3} ", "\\frac{14}{3}"),
        ("\\boxed{27}", "27"),
        ("204", "204"),
    ],
)
def test_extract_gold(raw, gold):
    assert extract_gold(raw) == gold


# ----------------------------------------------------------------- math-verify


@pytest.mark.parametrize(
    "gold,answer,equal",
    [
        ("\\frac{1}{2}", "0.5", True),
        ("\\frac{1}{2}", "1/2", True),
        ("0.5", "\\frac12", True),
        ("\\left( 3, \\frac{\\pi}{2} \\right)", "(3,\\frac{\\pi}{2})", True),
        ("\\left( 3, \\frac{\\pi}{2} \\right)", "\\left(3, \\frac{3\\pi}{2}\\right)", False),
        ("3\\sqrt{13}", "\\sqrt{117}", True),
        ("27", "9", False),
        ("p - q", "p-q", True),
        ("1234", "1,234", True),
    ],
)
def test_math_verify_equal(gold, answer, equal):
    assert math_verify_equal(gold, answer) is equal


def test_equivalence_classes_merge_equal_answers():
    with Grader(workers=0) as g:
        ids = equivalence_classes(["1/2", "\\frac{1}{2}", None, "0.5", "3", " 3", "\\frac{6}{2}", "7"], g)
    assert ids.tolist() == [0, 0, -1, 0, 1, 1, 1, 2]


def test_equivalence_classes_with_known_correctness_skip_checks():
    _CALLS["n"] = 0
    with Grader(workers=0, check=_counting_check) as g:
        ids = equivalence_classes(
            ["a", "b", "c", "a", "d"], g, correct=[True, False, True, True, False]
        )
    # b and c are not compared (incorrect vs correct), a and c share the correct class
    assert ids.tolist() == [0, 1, 0, 0, 2]
    assert _CALLS["n"] == 1  # only d vs b (the one incorrect representative)


def test_results_are_cached():
    _CALLS["n"] = 0
    with Grader(workers=0, check=_counting_check) as g:
        assert g.check_many([("1", "1"), ("1", "2"), ("1", "1")])[0].equal
        assert not g.equal("1", "2")
        assert _CALLS["n"] == 2
        assert set(g.cache) == {("1", "1"), ("1", "2")}


# ----------------------------------------------------------------- time bounds, workers


def test_timed_out_check_is_reported_not_hung():
    with Grader(timeout=1.0, workers=2, check=_slow_check) as g:
        t0 = time.perf_counter()
        res = g.check_many([("1", "1"), ("1", "slow"), ("2", "3"), ("4", "4")])
        elapsed = time.perf_counter() - t0
        assert [r.equal for r in res] == [True, False, False, True]
        assert [r.timed_out for r in res] == [False, True, False, False]
        assert g.timeouts == [("1", "slow")]
        assert elapsed < 15  # the sleeping check was killed after ~1 s, not 60 s
        # the killed worker was replaced: the grader still works
        assert g.equal("5", "5") and not g.equal("5", "6")


def test_failing_check_counts_as_not_equal_with_reason():
    with Grader(timeout=5.0, workers=1, check=_crashing_check) as g:
        res = g.check_many([("x", "boom"), ("x", "x")])
    assert not res[0].equal and "parser exploded" in res[0].error
    assert res[1].equal and res[1].error is None


def test_grader_works_off_the_main_thread():
    # math-verify's own signal.alarm timeout would fail here; ours does not.
    def job() -> tuple[bool, bool, str]:
        with Grader(timeout=10.0, workers=1) as g:
            return g.equal("\\frac{1}{2}", "0.5"), g.equal("2", "3"), threading.current_thread().name

    with ThreadPoolExecutor(1) as ex:
        eq, neq, name = ex.submit(job).result(timeout=120)
    assert name != threading.main_thread().name
    assert eq and not neq


# ----------------------------------------------------------------- grade_pool


def test_grade_pool_small():
    pool = Pool.from_arrays(
        [[0.9, 0.1, 0.5, 0.3], [0.2, 0.4]],
        answers=[["0.5", "2", "\\frac{1}{2}", None], ["x+1", "1+x"]],
        gold=["1/2", "x + 1"],
        question_ids=["a", "b"],
    )
    g = grade_pool(pool, workers=0)
    assert g.correct.tolist() == [[True, False, True, False], [True, True, False, False]]
    assert g.answer_ids.tolist() == [[0, 1, 0, -1], [0, 0, -1, -1]]
    assert g.metadata["grading"]["timeouts"] == []
    assert pool.correct.sum() == 0  # input untouched
    with pytest.raises(ValueError, match="no gold answers"):
        grade_pool(Pool.from_arrays([[0.1]], answers=[["1"]]), workers=0)
    with pytest.raises(ValueError, match="1 gold answers for 2 questions"):
        grade_pool(pool, ["1"], workers=0)


def test_grade_pool_reports_timeouts_by_question():
    pool = Pool.from_arrays(
        [[0.9, 0.8], [0.5]], answers=[["1", "slow"], ["2"]], gold=["1", "2"], question_ids=["qa", "qb"]
    )
    with Grader(timeout=1.0, workers=1, check=_slow_check) as g:
        out = grade_pool(pool, grader=g)
    assert out.correct.tolist() == [[True, False], [True, False]]
    assert out.metadata["grading"]["timeouts"] == [["qa", "1", "slow"]]
    assert out.answer_ids.tolist() == [[0, 1], [0, -1]]


def test_grade_pool_reproduces_synthetic_labels():
    # independent check: the synthetic generator assigns correctness and classes by
    # construction; grading its answer strings must give the same arrays.
    from optscale_jax.synthetic import synthetic_pool

    pool = synthetic_pool("aime24", n_samples=12, seed=4, n_questions=15)
    blank = pool.replace(correct=np.zeros_like(pool.correct), answer_ids=np.full_like(pool.answer_ids, -1))
    graded = grade_pool(blank, workers=0)
    np.testing.assert_array_equal(graded.correct, pool.correct)
    np.testing.assert_array_equal(graded.answer_ids, pool.answer_ids)


@pytest.mark.data
def test_grading_on_the_real_pool_agrees_with_its_pred_fields(shared_data):
    with Grader(timeout=10.0, workers=2) as g:
        report = search_and_learn_agreement(shared_data / SAL, grader=g)
        pool = grade_pool(read_pool(shared_data / SAL), grader=g)
    # correctness of every stored prediction (naive / maj / weighted at n = 1, 2, 4)
    # graded against gold equals what our graded pool gives for the same rule
    assert report["overall_field_vs_ours"] == 1.0
    assert all(v == 1.0 for v in report["field_vs_ours"].values())
    assert report["accuracy_fields"]["pred_naive@4"] == 0.7
    assert report["accuracy_fields"]["pred_weighted@4"] == 0.8
    # answer extraction: our last-\boxed answer of the same pick equals the stored one,
    # except where the completion has no \boxed at all (search-and-learn then takes the
    # last expression of the text) or it mangled the box (question 1, n = 1)
    assert report["extraction_agreement"] == {"pred_naive@1": 0.7, "pred_naive@2": 0.8, "pred_naive@4": 0.9}
    assert report["timeouts"] == []
    # hand-checked labels of the first sample of each question
    assert pool.correct[:, 0].tolist() == [False, False, True, True, False, True, False, False, True, False]
    assert pool.correct.sum() == 23
    assert pool.answer_ids[0].tolist() == [0, 1, 1, 1]  # (3, pi/2) written three ways
    assert pool.answer_ids[6].tolist() == [-1, 0, 1, 1]  # no \boxed in the first completion
