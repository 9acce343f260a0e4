"""DSC against the authors' ``SC/dsc.py`` on random pools.

Their allocation runs as it is: ``split_easy_hard`` (ranking by difficulty, then
``dsc_allocate``: the easy binary search with its neighbour window, and the second
search) with ``DSC_judge`` and ``MyStoppingCriteria``. Two names in their namespace are
replaced: ``random.sample`` (they judge a random subset of the whole pool row) by the
first ``k`` samples, which is what a replay of the drawn prefix sees, and ``DSC_judge``
by a spy that records which questions the easy search judged. Their per-question
evaluation loop (``evaluate_dsc_with_max_sample_size``: easy questions answer with
their first sample, the others stop by ``MyStoppingCriteria``'s easy threshold) is
restated here with their own ``MyStoppingCriteria`` and ``Counter`` majority because it
grades and sums inline; its grading is a stub applied to both sides. Difficulty is
theirs: 1 - the mean stored score of the row; question texts sort in row order so
their tie-break (by text) is ours (by row).

Compared per question: easy or not, the samples the answer uses, the answer string,
its correctness, the easy midpoints they count, and the tokens: ours charge the probe
samples a question drew (the authors add an estimate instead), so ours = theirs + the
unused probe samples of the questions their search judged.

``n_max = 5`` is left out: there the authors' judge returns 5 for every row (it stops
before looking) and calls every question easy; ours judges the window. Tested below.
"""

from __future__ import annotations

import contextlib
import io
import types
from collections import Counter

import fidelity_gen as gen
import numpy as np
import official
import pytest

from optscale_jax.grading import vote_classes
from optscale_jax.policies import DSC
from optscale_jax.policies.baselines import dsc_official_difficulty
from optscale_jax.replay import _observe, replay

pytestmark = pytest.mark.data


def _authors_dsc(recs, m):
    o = official.load("SC/dsc.py", "split_easy_hard", "MyStoppingCriteria", "DSC_judge")
    g = o.split_easy_hard.__globals__

    class Tagged(list):
        src: int

    def first_k(pop, k):
        out = Tagged(pop[:k])
        out.src = id(pop)
        return out

    g["random"] = types.SimpleNamespace(sample=first_k)
    answers = [[o.get_answer(c) for c in r["score"]["completions"][0]] for r in recs]
    index_of = {id(a): i for i, a in enumerate(answers)}
    judged: set[int] = set()
    real_judge = o.DSC_judge

    def spy(input_list, *args, **kw):
        if "window_size" in kw:  # the easy search (the second search passes no window)
            judged.add(index_of[getattr(input_list, "src", id(input_list))])
        return real_judge(input_list, *args, **kw)

    g["DSC_judge"] = spy
    scores = [r["score"]["scores"][0] for r in recs]
    difficulty = [1 - np.mean(s) for s in scores]
    texts = [f"q{i:04d}" for i in range(len(recs))]
    with contextlib.redirect_stdout(io.StringIO()):
        _, _, _, _, alloc, easy_mid, _ = o.split_easy_hard(
            {"questions": texts, "eval": difficulty}, answers, 3, 5, m)
    judge = o.MyStoppingCriteria(0.95, 0.50)
    out = []
    for i, rec in enumerate(recs):
        toks = rec["score"]["completion_tokens"][0]
        if alloc[i] == 1:
            out.append((True, 1, answers[i][0], toks[0]))
            continue
        assert alloc[i] == -1  # their second search never allocates m (see DSC's docstring)
        stop = m
        for k in range(min(m, len(answers[i]))):
            if judge.should_stop(answers[i][: k + 1])["easy_stop"]:
                stop = k + 1
                break
        used = answers[i][:stop]
        out.append((False, len(used), Counter(used).most_common(1)[0][0], sum(toks[:stop])))
    return out, easy_mid, judged


def _ours(pool, m):
    pol = DSC(m, difficulty=dsc_official_difficulty(pool.scores, pool.mask))
    res = replay(pool, pol, n_boot=0)
    cap = np.minimum(pool.n_samples, m)
    obs = _observe(pool, res.n_drawn.astype(np.int64), vote_classes(pool), cap)
    return res, pol.search(obs)


@pytest.mark.parametrize("block", range(2))
def test_dsc_matches_authors_on_random_pools(shared_data, tmp_path, block) -> None:
    for seed in range(block * 100, block * 100 + 100):
        recs = gen.random_records(seed, n_questions=4 + seed % 24, consistent=0.1 + 0.8 * (seed % 2))
        pool = gen.pool_from_records(recs, tmp_path)
        width = max(len(r["score"]["completions"][0]) for r in recs)
        for m in sorted({1, 4, 6, 8, width, width + 2, 6 + seed % 20} - {5}):
            theirs, easy_mid, judged = _authors_dsc(recs, m)
            res, srch = _ours(pool, m)
            assert not srch.probes
            assert sum(srch.midpoint_easy) == easy_mid, f"seed {seed}, n_max {m}"
            for i, (easy, used, ans, tok) in enumerate(theirs):
                where = f"seed {seed}, n_max {m}, question {i}"
                toks = recs[i]["score"]["completion_tokens"][0]
                probed = i in judged and m >= 5 and len(toks) >= 5
                assert bool(srch.easy[i]) == easy, where
                assert bool(srch.probed[i]) == probed, where
                assert pool.answers[i, res.chosen[i]] == ans, where
                assert bool(res.correct[i]) == gen.stub_correct(ans), where
                drawn = max(used, 5 if probed else 0)
                assert res.n_drawn[i] == drawn, where
                assert res.tokens[i] == tok + sum(toks[used:drawn]), where


def test_dsc_at_n_max_5_authors_call_everything_easy(shared_data, tmp_path) -> None:
    """A known difference: their judge stops before looking when n_max == window."""
    recs = gen.random_records(3, n_questions=12, width=8)
    theirs, _, _ = _authors_dsc(recs, 5)
    assert all(easy for easy, *_ in theirs)
    res, srch = _ours(gen.pool_from_records(recs, tmp_path), 5)
    assert not srch.easy.all()


def test_dsc_without_difficulty_and_window_variant(shared_data, tmp_path) -> None:
    """Without a difficulty array the official variant ranks by a first sample; the
    window variant is ours. Both end, draw within the budget and pick drawn samples."""
    recs = gen.random_records(11, n_questions=20, width=16)
    pool = gen.pool_from_records(recs, tmp_path)
    for pol in (DSC(16), DSC(16, variant="window")):
        res = replay(pool, pol, n_boot=0)
        assert (res.n_drawn >= 1).all() and (res.n_drawn <= np.minimum(pool.n_samples, 16)).all()
        assert (res.chosen < res.n_drawn).all()
    with pytest.raises(ValueError, match="DSC.variant"):
        DSC(8, variant="paper")
