"""Best-of-N against the authors' ``BoN_OptScale/bon.py`` on random pools.

Their ``evaluate_bon`` is run as it is, question by question, for every N up to the
pool width; only two names in its namespace are replaced: ``verify_extracted_answer``
by a stub grader (math-verify is slow and not what is compared; the same stub grades
our pool) and ``get_answer`` by a wrapper that records which completion it chose (then
calls their own extraction). Our side reads the same records with
:func:`optscale_jax.io.read_official` and replays :class:`BestOfN` with
:func:`optscale_jax.replay.replay`. Compared for every question and N: the chosen
completion, its correctness and the tokens charged.

Known difference, kept on purpose and tested separately: a non-empty completion whose
score is exactly 0 is never chosen by the authors once an empty one with a higher
score has been skipped (their loop stops when the best remaining score is 0); ours
picks it. The random pools give non-empty completions scores in [0.1, 1].
"""

from __future__ import annotations

import contextlib
import io

import fidelity_gen as gen
import numpy as np
import official
import pytest

from optscale_jax.policies import BestOfN
from optscale_jax.replay import replay

pytestmark = pytest.mark.data


def _authors_bon(recs, max_n):
    """Per question and N: (chosen completion text, correct, tokens) from their code."""
    o = official.load("BoN_OptScale/bon.py", "evaluate_bon")
    g = o.evaluate_bon.__globals__
    chosen: list[str] = []
    real_get_answer = g["get_answer"]

    def spy(text):
        chosen.append(text)
        return real_get_answer(text)

    g["get_answer"] = spy
    g["verify_extracted_answer"] = gen.stub_verify
    comps, toks, scores, _ = gen.authors_lists(recs)
    out = {}
    for i in range(len(recs)):
        chosen.clear()
        with contextlib.redirect_stdout(io.StringIO()):
            acc, tok = o.evaluate_bon([f"q{i}"], [gen.GOLD], [comps[i]], [toks[i]], [scores[i]], max_n)
        for n in range(1, max_n + 1):
            out[i, n] = (chosen[n - 1], acc[n - 1] == 1.0, tok[n - 1])
    return out


@pytest.mark.parametrize("block", range(4))
def test_best_of_n_matches_authors_on_random_pools(shared_data, tmp_path, block) -> None:
    for seed in range(block * 50, block * 50 + 50):
        recs = gen.random_records(seed)
        pool = gen.pool_from_records(recs, tmp_path)
        width = max(len(r["score"]["completions"][0]) for r in recs)
        theirs = _authors_bon(recs, width)
        for n in range(1, width + 1):
            res = replay(pool, BestOfN(n), n_boot=0)
            for i, rec in enumerate(recs):
                text, ok, tok = theirs[i, n]
                comps = rec["score"]["completions"][0]
                where = f"seed {seed}, question {i}, N={n}"
                assert res.tokens[i] == tok, where
                assert bool(res.correct[i]) == ok, where
                if any(c != "" for c in comps[:n]):
                    assert comps[res.chosen[i]] == text, where
                else:  # all empty: both answer nothing
                    assert text == "" and not ok, where


def test_zero_score_after_an_empty_completion_is_a_known_difference(shared_data, tmp_path) -> None:
    """Their loop gives up when the best remaining score is 0; ours picks the 0-scored answer."""
    recs = [{"id": 1, "score": {"completions": [["", r"\boxed{0.5}"]], "scores": [[0.9, 0.0]],
                                "completion_tokens": [[5, 7]]}}]
    theirs = _authors_bon(recs, 2)
    assert theirs[0, 2] == ("", False, 12)
    pool = gen.pool_from_records(recs, tmp_path)
    res = replay(pool, BestOfN(2), n_boot=0)
    assert res.chosen.tolist() == [1] and res.correct.tolist() == [1.0]
    assert np.array_equal(res.tokens, [12])


def test_whitespace_only_completion_is_a_known_difference(shared_data, tmp_path) -> None:
    """docs/FIDELITY.md: a whitespace-only completion counts as empty here (never chosen);
    the authors skip only the exact string ''."""
    recs = [{"id": 1, "score": {"completions": [[r"\boxed{0.5}", " \n "]], "scores": [[0.5, 0.9]],
                                "completion_tokens": [[5, 7]]}}]
    theirs = _authors_bon(recs, 2)
    assert theirs[0, 2] == (" \n ", False, 12)  # they pick the blank completion: wrong
    res = replay(gen.pool_from_records(recs, tmp_path), BestOfN(2), n_boot=0)
    assert res.chosen.tolist() == [0] and res.correct.tolist() == [1.0]
