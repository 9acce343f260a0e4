"""Random pools in the authors' JSON format, for the differential (fidelity) tests.

Each pool is a list of records ``{"id", "score": {"completions": [[...]], "scores":
[[...]], "completion_tokens": [[...]]}}`` as the authors' scorer writes them. The
completions are built to stress answer extraction and voting: ragged rows, tied
scores, empty completions (including rows that are all empty), completions with no
``\\boxed{}``, several boxes, nested braces, ``\\fbox``, ``\\boxed 5``, whitespace
inside the box, and the same correct value written in equivalent forms
(``\\frac{1}{2}``, ``0.5``, ``1/2``) that only math-verify would merge.

Grading uses a stub in place of math-verify on both sides (ours and theirs):
:func:`stub_correct` says whether an extracted string is one of the forms of 1/2.
"""

from __future__ import annotations

import json
import random
from pathlib import Path

import numpy as np

from optscale_jax.io import read_official
from optscale_jax.pool import Pool

GOLD = "GOLD-1/2"  # the gold answer handed to the authors' functions (a sentinel)
CORRECT_FORMS = {r"\frac{1}{2}", "0.5", "1/2", r"\dfrac{1}{2}", r"\frac12"}

_RIGHT = [r"\frac{1}{2}", "0.5", "1/2", r"\dfrac{1}{2}", " 0.5 ", r"\frac12"]
_WRONG = ["3", "2", r"\frac{3}{4}", "x^{2}", r"\{1, 2\}", "0.50", ""]


def stub_correct(answer: str | None) -> bool:
    """The stub grader: an extracted string is right when it is a form of 1/2."""
    return answer is not None and answer.strip() in CORRECT_FORMS


def stub_verify(x, y):
    """Drop-in for the authors' ``verify_extracted_answer`` (either argument order)."""
    ans = y if x == GOLD else x
    if ans is None:
        return None
    return stub_correct(ans)


def _completion(rng: random.Random, bias: float) -> str:
    r = rng.random()
    if r < 0.08:
        return ""
    if r < 0.16:
        return rng.choice(["I give up.", "so the answer is 1/2", r"$\frac{1}{2}$ maybe", "Hmm."])
    pick = rng.choice(_RIGHT) if rng.random() < bias else rng.choice(_WRONG)
    kind = rng.random()
    if kind < 0.55:
        return f"Thus the answer is $\\boxed{{{pick}}}$."
    if kind < 0.65:
        return f"first \\boxed{{{rng.choice(_WRONG)}}} then \\boxed{{{pick}}}"
    if kind < 0.72:
        return f"\\boxed{{{pick}}} and later \\fbox{{{rng.choice(_WRONG)}}}"
    if kind < 0.78:
        return f"\\boxed 5 then \\boxed{{{pick}}}" if rng.random() < 0.5 else "\\boxed 5"
    if kind < 0.84:
        return f"\\boxed{{{pick}}} and a truncated \\boxed{{\\frac{{1}}{{"
    if kind < 0.90:
        return f"\\boxed{{\\boxed{{{pick}}}}}"
    if kind < 0.95:
        return f"\\fbox{{{pick}}}"
    return f"\\boxed {{{pick}}}"


def random_records(
    seed: int, n_questions: int | None = None, width: int | None = None, consistent: float = 0.2
) -> list[dict]:
    """One random pool in the authors' format (see the module docstring).

    ``consistent``: share of rows that mostly repeat one completion (scored higher, so
    that easy questions sit at the easy end of DSC's ranking).
    """
    rng = random.Random(seed)
    q = n_questions or rng.randint(3, 14)
    w = width or rng.randint(1, 20)
    recs = []
    for i in range(q):
        n = w if i == 0 else rng.randint(1, w)
        bias = rng.choice([0.1, 0.4, 0.7, 0.95])
        if rng.random() < 0.08:
            comps = [""] * n  # a row of empty completions
        elif rng.random() < consistent:
            one = _completion(rng, bias)
            comps = [one if rng.random() < 0.9 else _completion(rng, bias) for _ in range(n)]
            low = 5
        else:
            comps = [_completion(rng, bias) for _ in range(n)]
            low = 1
        # ties: one decimal; never exactly 0 for a non-empty completion (see test_fidelity_bon)
        scores = [rng.randint(low, 10) / 10 if c != "" else rng.randint(0, 10) / 10 for c in comps]
        tokens = [rng.randint(0, 900) for _ in comps]
        recs.append({"id": i + 1, "score": {"completions": [comps], "scores": [scores],
                                            "completion_tokens": [tokens]}})
    return recs


def pool_from_records(recs: list[dict], tmp: Path) -> Pool:
    """Our pool from the records, read by :func:`read_official`, graded with the stub."""
    path = tmp / "pool.json"
    path.write_text(json.dumps(recs), encoding="utf-8")
    pool = read_official(path)
    correct = np.zeros(pool.mask.shape, dtype=bool)
    for i, j in zip(*np.nonzero(pool.mask), strict=True):
        correct[i, j] = stub_correct(pool.answers[i, j])
    return pool.replace(correct=correct)


def authors_lists(recs: list[dict]) -> tuple[list, list, list, list]:
    """(completions, tokens, scores, answers) as the authors' scripts hold them."""
    comps = [r["score"]["completions"] for r in recs]
    toks = [r["score"]["completion_tokens"] for r in recs]
    scores = [r["score"]["scores"] for r in recs]
    return comps, toks, scores, None


def with_stub_classes(pool: Pool) -> Pool:
    """``answer_ids`` as math-verify would give them here: every form of 1/2 is one class,
    other answers are compared stripped; no answer gets -1."""
    ids = np.full(pool.mask.shape, -1, dtype=np.int32)
    for i in range(pool.n_questions):
        seen: dict[str, int] = {}
        for j in np.flatnonzero(pool.mask[i]):
            a = pool.answers[i, j]
            if a is None:
                continue
            key = "1/2" if stub_correct(a) else a.strip()
            ids[i, j] = seen.setdefault(key, len(seen))
    return pool.replace(answer_ids=ids)
