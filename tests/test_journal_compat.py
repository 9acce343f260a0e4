"""Run directories written by an earlier release resume (headers without later fields)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from optscale_jax.journal import RunMismatchError, compare_headers


def _strip_family(path) -> dict:
    lines = path.read_text().splitlines()
    header = json.loads(lines[0])
    assert header["policy"].pop("family") == "truncnorm"
    path.write_text("\n".join([json.dumps(header), *lines[1:]]) + "\n")
    return header


def test_a_run_whose_header_has_no_policy_family_resumes_as_truncnorm(tmp_path) -> None:
    from test_online import QUESTIONS, ToyEngine, ToyPRM

    from optscale_jax.grading import Grader
    from optscale_jax.online import run
    from optscale_jax.policies import make

    def go(**kw):
        with Grader(workers=0) as grader:
            return run(QUESTIONS, ToyEngine(), ToyPRM(), make("OptScale0", n_max=6, s_min=0.9, alpha=0.9, **kw),
                       out=tmp_path, seed=3, grader=grader, dataset="toy")

    first = go()
    _strip_family(tmp_path / "samples.jsonl")  # as the previous release wrote it
    again = go()  # resumed, not refused: nothing new is drawn
    assert again.summary["samples"] == first.summary["samples"]
    np.testing.assert_array_equal(again.chosen, first.chosen)
    with pytest.raises(RunMismatchError, match=r'policy.family was "truncnorm", now "beta" \(--family\)'):
        go(family="beta")


def test_header_defaults_apply_only_to_an_absent_field() -> None:
    new = {"version": 2, "policy": {"name": "OptScale0", "family": "truncnorm"}}
    old = {"version": 2, "policy": {"name": "OptScale0"}}
    compare_headers("x", old, new, partial=False)  # absent == the default
    compare_headers("x", new, old, partial=False)
    compare_headers("x", {"version": 2, "policy": {"name": "BoN"}}, {"version": 2, "policy": {"name": "BoN"}},
                    partial=False)  # neither has it: nothing added
    with pytest.raises(RunMismatchError, match='policy.family was "beta", now "truncnorm"'):
        compare_headers("x", {"version": 2, "policy": {"name": "OptScale0", "family": "beta"}}, new,
                        partial=False)
