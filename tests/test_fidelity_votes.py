"""Majority vote (SC), ESC and ASC against the authors' ``SC/`` code on random pools.

The authors' functions run as they are: ``get_answer`` (``SC/utils.py``) extracts the
answers from the completion texts, ``get_majority_answer``, ``ESC`` and ``ASC``
(``SC/esc_and_asc.py``) pick the stopping point and the answer. ``SC/maj_vote.py``
defines its ``get_majority_answer`` inside ``main()``, so the identical top-level copy
in ``esc_and_asc.py`` stands in for it. Their evaluation loops only add grading
(math-verify) and sums; the grading here is a stub applied to both sides
(:func:`fidelity_gen.stub_correct`). Our side reads the same records with
:func:`optscale_jax.io.read_official` and replays :class:`SelfConsistency`,
:class:`ESC` and :class:`ASC` under the default (official) vote rule. Compared per
question: the stopping point, the chosen answer string (``None`` included), its
correctness and the tokens charged.

With ``vote="math-verify"`` the same comparison must fail on pools with equivalent
answer forms: that is checked too, so the test can tell the two rules apart.
"""

from __future__ import annotations

import fidelity_gen as gen
import numpy as np
import official
import pytest

from optscale_jax.grading import extract_answer, vote_classes
from optscale_jax.policies import ASC, ESC, SelfConsistency
from optscale_jax.pool import Pool
from optscale_jax.replay import replay

pytestmark = pytest.mark.data


def _oracle():
    o = official.load("SC/esc_and_asc.py", "ESC", "ASC", "get_majority_answer", "get_answer")
    return o


def _theirs(o, recs, method, n):
    """Per question: (samples used, answer, tokens) from the authors' functions."""
    out = []
    for rec in recs:
        comps = rec["score"]["completions"][0]
        toks = rec["score"]["completion_tokens"][0]
        answers = [o.get_answer(c) for c in comps]
        if method == "SC":
            used = answers[:n]
            tok = sum(toks[:n])
        else:
            fn = o.ESC if method == "ESC" else o.ASC
            used, t = fn(answers, {"input": 0, "output": toks}, 5 if method == "ESC" else 0.95, n)
            tok = sum(t["output"])
        out.append((len(used), o.get_majority_answer(used, len(used)), tok))
    return out


def _ours(method, n):
    return {"SC": SelfConsistency, "ESC": ESC, "ASC": ASC}[method](n)


def _compare(o, recs, pool, method, n, vote="official"):
    res = replay(pool, _ours(method, n), n_boot=0, vote=vote)
    bad = []
    for i, (used, ans, tok) in enumerate(_theirs(o, recs, method, n)):
        ours_ans = pool.answers[i, res.chosen[i]]
        if (res.n_drawn[i], ours_ans, res.tokens[i], bool(res.correct[i])) != (
            used, ans, tok, gen.stub_correct(ans)
        ):
            bad.append((i, (int(res.n_drawn[i]), ours_ans, int(res.tokens[i])), (used, ans, tok)))
    return bad


def test_extraction_matches_authors_on_many_strings(shared_data) -> None:
    o = _oracle()
    rng = np.random.default_rng(0)
    atoms = ["\\boxed{", "\\boxed", "\\fbox{", "{", "}", "\\{", "\\}", " ", "\n", "1", "x",
             "\\frac{1}{2}", "\\boxed 5", "\\boxed {3}", "$", "\\", "0.5"]
    for _ in range(5000):
        text = "".join(rng.choice(atoms, size=rng.integers(0, 16)))
        assert extract_answer(text) == o.get_answer(text), repr(text)
    for seed in range(100):
        for rec in gen.random_records(seed):
            for c in rec["score"]["completions"][0]:
                assert extract_answer(c) == o.get_answer(c), repr(c)


@pytest.mark.parametrize("method", ["SC", "ESC", "ASC"])
def test_votes_match_authors_on_random_pools(shared_data, tmp_path, method) -> None:
    o = _oracle()
    for seed in range(200):
        recs = gen.random_records(seed)
        pool = gen.pool_from_records(recs, tmp_path)
        width = max(len(r["score"]["completions"][0]) for r in recs)
        for n in sorted({1, 2, 4, 5, 6, width, width + 3, 1 + seed % (width + 1)}):
            bad = _compare(o, recs, pool, method, n)
            assert not bad, f"seed {seed}, {method} n={n}: (question, ours, theirs) {bad[:3]}"


@pytest.mark.parametrize("method", ["SC", "ESC", "ASC"])
def test_math_verify_rule_is_told_apart(shared_data, tmp_path, method) -> None:
    """The same comparison fails under vote="math-verify" (equivalent forms merged, no
    answer not voting): so the test above would fail if our default rule changed."""
    o = _oracle()
    differ = 0
    for seed in range(60):
        recs = gen.random_records(seed)
        pool = gen.with_stub_classes(gen.pool_from_records(recs, tmp_path))
        width = max(len(r["score"]["completions"][0]) for r in recs)
        differ += bool(_compare(o, recs, pool, method, width, vote="math-verify"))
    assert differ >= 3


def _equivalent_forms_pool() -> tuple[list[dict], Pool]:
    """Correct answers in three forms, wrong answers agreeing, and unboxed samples."""
    comps = [r"\boxed{\frac{1}{2}}", r"\boxed{0.5}", r"\boxed{1/2}", r"\boxed{3}", r"\boxed{3}",
             "no box", "no box either", "still none"]
    recs = [{"id": 1, "score": {"completions": [comps], "scores": [[0.5] * 8],
                                "completion_tokens": [[10] * 8]}}]
    return recs, comps


def test_equivalent_forms_example(shared_data, tmp_path) -> None:
    o = _oracle()
    recs, comps = _equivalent_forms_pool()
    pool = gen.pool_from_records(recs, tmp_path)
    assert vote_classes(pool).tolist() == [[0, 1, 2, 3, 3, 4, 4, 4]]
    theirs = _theirs(o, recs, "SC", 8)
    assert theirs == [(8, None, 80)]  # "no answer" wins their vote: wrong
    assert _compare(o, recs, pool, "SC", 8) == []
    mv = replay(gen.with_stub_classes(pool), SelfConsistency(8), n_boot=0, vote="math-verify")
    assert mv.correct.tolist() == [1.0]  # ours merges the three forms of 1/2
    assert _compare(o, recs, gen.with_stub_classes(pool), "SC", 8, vote="math-verify")


def test_unknown_vote_rule(shared_data, tmp_path) -> None:
    recs, _ = _equivalent_forms_pool()
    pool = gen.pool_from_records(recs, tmp_path)
    with pytest.raises(ValueError, match="vote must be one of"):
        replay(pool, SelfConsistency(4), vote="exact")
