"""The live loop: waves, policies, budget, MR-Thinking, crash + resume, failures."""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from optscale_jax.engines.base import Completion, EngineError, SampleRequest
from optscale_jax.grading import Grader
from optscale_jax.io import read_parquet
from optscale_jax.online import (
    SAMPLES_FILE,
    MRThinking,
    Question,
    load_benchmark,
    read_samples,
    request_seed,
    run,
)
from optscale_jax.policies import ASC, DSC, ESC, BestOfN, OptScale, SelfConsistency, WeightedVote
from optscale_jax.replay import run_policy


def _u(*parts) -> float:
    return int.from_bytes(hashlib.sha256(repr(parts).encode()).digest()[:8], "big") / 2**64


class ToyEngine:
    """Deterministic in (prompt, seed, k); records every request."""

    name = "toy"

    def __init__(self, fail_after: int | None = None):
        self.fail_after = fail_after
        self.calls: list[list[SampleRequest]] = []

    def sample(self, requests):
        if self.fail_after is not None and len(self.calls) >= self.fail_after:
            raise EngineError("toy engine: connection lost")
        self.calls.append(list(requests))
        out = []
        for r in requests:
            comps = []
            for k in range(r.n):
                n_steps = 1 + int(3 * _u("n", r.prompt, r.seed, k))
                ans = 1 if _u("a", r.prompt, r.seed, k) < 0.6 else int(2 + 3 * _u("w", r.prompt, r.seed, k))
                steps = [f"step {t} {_u('s', r.prompt, r.seed, k, t):.3f}" for t in range(n_steps)]
                text = "\n\n".join(steps + [f"so \\boxed{{{ans}}}"])
                comps.append(Completion(text, 10 + int(90 * _u("t", r.prompt, r.seed, k)), "stop"))
            out.append(comps)
        return out


class ToyPRM:
    name = "toy-prm"

    def __init__(self, fail_after: int | None = None):
        self.fail_after = fail_after
        self.calls = 0

    def score(self, questions, completions):
        if self.fail_after is not None and self.calls >= self.fail_after:
            raise EngineError("toy PRM: out of memory")
        self.calls += 1
        out = []
        for q, c in zip(questions, completions, strict=False):
            steps = [s for s in c.split("\n\n") if s.strip()]
            bonus = 0.3 if "boxed{1}" in c else 0.0
            out.append([min(1.0, 0.55 + bonus + 0.15 * _u("p", q, s)) for s in steps])
        return out


NEEDS_NSTAR = pytest.mark.skipif(
    importlib.util.find_spec("optscale_jax.nstar") is None, reason="optscale_jax.nstar not available yet"
)

QUESTIONS = [Question(f"q{i}", f"What is {i} - {i} + 1?", "1") for i in range(6)]


@pytest.fixture(scope="module")
def grader():
    with Grader(workers=0) as g:
        yield g


def requested(engine: ToyEngine) -> Counter:
    """How many times each (prompt, seed) request was sent."""
    return Counter((r.prompt, r.seed) for call in engine.calls for r in call)


def policies():
    return [
        BestOfN(4),
        SelfConsistency(4),
        WeightedVote(3),
        ESC(n_max=8, window=2),
        ASC(n_max=8),
        DSC(n_max=6, window=2),
        # slow: the first fit of each shape compiles (25-50 s on a loaded 2-core CPU)
        pytest.param(OptScale(n_max=8, s_min=0.9, alpha=0.9, mode="oneshot"), marks=[NEEDS_NSTAR, pytest.mark.slow]),
        pytest.param(OptScale(n_max=8, s_min=0.9, alpha=0.9, mode="sequential"), marks=[NEEDS_NSTAR, pytest.mark.slow]),
    ]


@pytest.mark.parametrize("policy", policies(), ids=lambda p: getattr(p, "name", None))
def test_live_equals_replay_of_its_pool(policy, tmp_path, grader):
    """Every replay policy runs live; replaying the written pool reproduces its decisions."""
    eng = ToyEngine()
    res = run(QUESTIONS, eng, ToyPRM(), policy, out=tmp_path, seed=1, grader=grader, dataset="toy")
    pool = read_parquet(tmp_path / "pool.parquet")
    n_live = pool.n_samples
    assert res.summary["samples"] == int(n_live.sum())
    assert (n_live <= policy.n_max).all() and (n_live >= 1).all()
    drawn, chosen, rounds = run_policy(pool, policy)
    np.testing.assert_array_equal(drawn, n_live)
    np.testing.assert_array_equal(chosen, res.chosen)
    assert rounds == res.summary["waves"] == len(eng.calls)  # one engine call per wave
    # accuracy = correctness of the kept sample, graded by math-verify against gold "1"
    rows = np.arange(len(QUESTIONS))
    assert res.summary["accuracy"] == pytest.approx(pool.correct[rows, res.chosen].mean())
    assert pool.correct[pool.mask].tolist() == [a == "1" for a in pool.answers[pool.mask]]
    # tokens and the Best-of-n_max comparison
    assert res.summary["tokens"] == int(pool.tokens.sum())
    per = pool.tokens.sum(1) / n_live
    assert res.summary["bon_n_max_tokens_estimate"] == pytest.approx((per * policy.n_max).sum())
    # each request asked for new samples only: no (prompt, seed) twice
    assert max(requested(eng).values()) == 1


def test_pool_contents_match_the_log(tmp_path, grader):
    res = run(QUESTIONS[:3], ToyEngine(), ToyPRM(), BestOfN(3), out=tmp_path, grader=grader, aggregate="min")
    header, recs = read_samples(tmp_path / SAMPLES_FILE)
    assert header["policy"]["name"] == "BoN" and header["policy"]["n_max"] == 3
    assert header["questions"]["ids"] == ["q0", "q1", "q2"] and header["questions"]["count"] == 3
    assert res.pool.metadata["live_header"] == header  # the pool says how it was made
    pool = res.pool
    assert len(recs) == 9
    for r in recs:
        assert pool.scores[r["q"], r["j"]] == pytest.approx(min(r["step_scores"]))
        assert pool.tokens[r["q"], r["j"]] == r["tokens"]
        assert pool.step_scores[r["q"]][r["j"]] == r["step_scores"]
        assert r["seed"] == request_seed(0, r["q"], 0)  # one request of n=3 per question
    assert pool.prompts[0] == QUESTIONS[0].text and pool.gold == ["1"] * 3
    assert json.loads((tmp_path / "summary.json").read_text())["samples"] == 9


def test_batch_waves_and_token_budget(tmp_path, grader):
    eng = ToyEngine()
    res = run(QUESTIONS, eng, ToyPRM(), BestOfN(8), out=tmp_path / "a", batch=3, grader=grader)
    assert [sorted({r.n for r in c}) for c in eng.calls] == [[3], [3], [2]]
    assert all(len(c) == len(QUESTIONS) for c in eng.calls)  # all open questions in one call
    assert res.summary["samples"] == 48

    eng = ToyEngine()
    res = run(QUESTIONS, eng, ToyPRM(), BestOfN(8), out=tmp_path / "b", batch=1, token_budget=700, grader=grader)
    assert res.summary["budget_exhausted"] is True
    pool = res.pool
    spent = int(pool.tokens.sum())
    last_wave = int(pool.tokens[:, -1].sum()) if pool.n_max else 0
    assert spent >= 700 and spent - last_wave < 700  # stopped at the first wave past the budget
    assert (pool.n_samples == len(eng.calls)).all()


def test_mr_thinking_reprompts_with_previous_answer(tmp_path, grader):
    eng = ToyEngine()
    res = run(QUESTIONS[:2], eng, ToyPRM(), MRThinking(3, style="think-twice"), out=tmp_path, grader=grader,
              prompt_template="{question}")
    assert len(eng.calls) == 3 and all(r.n == 1 for c in eng.calls for r in c)
    _, recs = read_samples(tmp_path / SAMPLES_FILE)
    by = {(r["q"], r["j"]): r for r in recs}
    for q in range(2):
        assert by[(q, 0)]["prompt"] == QUESTIONS[q].text
        for j in (1, 2):
            prev = by[(q, j - 1)]["text"].strip()
            assert by[(q, j)]["prompt"] == (
                f"{QUESTIONS[q].text}\nThe assistant's previous answer is: <answer> {prev} </answer>, "
                "and please re-answer."
            )
    assert res.chosen.tolist() == [2, 2]  # the last round's answer is kept
    assert MRThinking(2, style="think-twice").prompt("Q", ["<think>long</think> The answer is 4."]).endswith(
        "<answer> The answer is 4. </answer>, and please re-answer."
    )


def _arrays(pool):
    return (pool.scores.tolist(), pool.tokens.tolist(), pool.answers.tolist(), pool.mask.tolist(),
            pool.step_scores)


@pytest.mark.parametrize("kill_after", [1, 3])
def test_engine_failure_then_resume(tmp_path, grader, kill_after):
    """An engine that dies after k calls: clear error, file resumable, no sample lost or redrawn."""
    policy = ASC(n_max=8, threshold=0.9)
    ref_eng = ToyEngine()
    ref = run(QUESTIONS, ref_eng, ToyPRM(), policy, out=tmp_path / "ref", grader=grader)

    bad = ToyEngine(fail_after=kill_after)
    with pytest.raises(EngineError, match="toy engine: connection lost"):
        run(QUESTIONS, bad, ToyPRM(), policy, out=tmp_path / "run", grader=grader)
    _, recs = read_samples(tmp_path / "run" / SAMPLES_FILE)
    assert len(recs) == sum(r.n for c in bad.calls for r in c)  # everything scored is on disk
    good = ToyEngine()
    res = run(QUESTIONS, good, ToyPRM(), policy, out=tmp_path / "run", grader=grader)
    assert res.summary["resumed_samples"] == len(recs)
    both = requested(bad) + requested(good)
    assert max(both.values()) == 1  # no request sent twice across the crash
    assert sum(r.n for c in bad.calls + good.calls for r in c) == res.summary["samples"]
    assert _arrays(res.pool) == _arrays(ref.pool)  # identical to the uninterrupted run
    assert res.chosen.tolist() == ref.chosen.tolist()


def test_scorer_failure_redraws_only_the_unscored_wave(tmp_path, grader):
    eng1 = ToyEngine()
    with pytest.raises(EngineError, match="toy PRM: out of memory"):
        run(QUESTIONS, eng1, ToyPRM(fail_after=1), BestOfN(4), out=tmp_path, batch=2, grader=grader)
    eng2 = ToyEngine()
    res = run(QUESTIONS, eng2, ToyPRM(), BestOfN(4), out=tmp_path, batch=2, grader=grader)
    assert res.summary["resumed_samples"] == 12  # wave 1 was scored and kept
    # wave 2 was drawn but never scored: it is drawn again, with the same seeds
    assert requested(eng1).keys() - requested(eng2).keys() == {k for k in requested(eng1) if
                                                               k[1] in {request_seed(0, q, 0) for q in range(6)}}
    assert res.summary["samples"] == 24


def test_torn_last_line_is_dropped(tmp_path, grader):
    run(QUESTIONS[:2], ToyEngine(), ToyPRM(), BestOfN(2), out=tmp_path, batch=1, grader=grader)
    path = tmp_path / SAMPLES_FILE
    full = path.read_bytes()
    lines = full.split(b"\n")
    # simulate a crash in the middle of writing the last record
    path.write_bytes(b"\n".join(lines[:-2]) + b"\n" + lines[-2][: len(lines[-2]) // 2])
    header, recs = read_samples(path)
    assert len(recs) == 3
    res = run(QUESTIONS[:2], ToyEngine(), ToyPRM(), BestOfN(2), out=tmp_path, batch=1, grader=grader)
    assert res.summary["samples"] == 4 and res.summary["resumed_samples"] == 3
    # the torn record was cut and drawn again identically (in a new wave)
    strip = lambda recs: [{k: v for k, v in r.items() if k != "wave"} for r in recs]  # noqa: E731
    old = [json.loads(x) for x in full.split(b"\n")[1:] if x]
    assert strip(read_samples(path)[1]) == strip(old)


def test_bad_runs_are_clear_errors(tmp_path, grader):
    run(QUESTIONS[:2], ToyEngine(), ToyPRM(), BestOfN(2), out=tmp_path, grader=grader)
    with pytest.raises(ValueError, match=r'policy.name was "BoN", now "SC" \(--policy\)'):
        run(QUESTIONS[:2], ToyEngine(), ToyPRM(), SelfConsistency(2), out=tmp_path, grader=grader)
    with pytest.raises(ValueError, match=r"questions.count was 2, now 3 .*questions.sha256 was"):
        run(QUESTIONS[:3], ToyEngine(), ToyPRM(), BestOfN(2), out=tmp_path, grader=grader)
    old = (tmp_path / SAMPLES_FILE).read_bytes()
    res = run(QUESTIONS[:2], ToyEngine(), ToyPRM(), BestOfN(2), out=tmp_path, resume=False, grader=grader)
    assert res.summary["moved_aside"] == str(tmp_path / "previous-1") and res.summary["resumed_samples"] == 0
    assert (tmp_path / "previous-1" / SAMPLES_FILE).read_bytes() == old  # moved aside, not deleted
    with pytest.raises(ValueError, match="question id 'a' appears more than once"):
        run([Question("a", "x"), Question("a", "y")], ToyEngine(), ToyPRM(), BestOfN(2), out=tmp_path / "d")
    with pytest.raises(ValueError, match="aggregate must be one of"):
        run(QUESTIONS, ToyEngine(), ToyPRM(), BestOfN(2), out=tmp_path / "e", aggregate="max")
    p = tmp_path / "x.jsonl"
    p.write_text('{"kind": "header", "format": "optscale-live-samples"}\nnot json\n{"kind": "sample"}\n')
    with pytest.raises(ValueError, match="line 2 is not valid JSON"):
        read_samples(p)


def slow_run_script(*, sleep: float, n: int) -> str:
    """A script that runs BestOfN(n) over QUESTIONS with an engine sleeping ``sleep`` s per
    call, one question per wave (argv: run directory, tests directory)."""
    return textwrap.dedent(
        f"""
        import sys, time
        sys.path.insert(0, sys.argv[2])
        from test_online import ToyEngine, ToyPRM, QUESTIONS
        from optscale_jax.grading import Grader
        from optscale_jax.online import run
        from optscale_jax.policies import BestOfN

        class Slow(ToyEngine):
            def sample(self, requests):
                time.sleep({sleep})
                return super().sample(requests)

        with Grader(workers=0) as g:
            run(QUESTIONS, Slow(), ToyPRM(), BestOfN({n}), out=sys.argv[1], batch=1, grader=g)
        """
    )


def test_process_killed_mid_run_resumes(tmp_path, grader):
    """SIGKILL a real run mid-way; the resumed run loses nothing and redraws nothing."""
    script = tmp_path / "killed.py"
    script.write_text(slow_run_script(sleep=0.5, n=16))
    out = tmp_path / "run"
    proc = subprocess.Popen([sys.executable, str(script), str(out), str(Path(__file__).parent)],
                            env={**os.environ, "JAX_PLATFORMS": "cpu"})
    path = out / SAMPLES_FILE
    deadline = time.time() + 120
    try:
        while time.time() < deadline:
            if path.exists() and path.read_bytes().count(b"\n") >= 1 + 3 * len(QUESTIONS):
                break
            assert proc.poll() is None, "the run ended before it could be killed"
            time.sleep(0.05)
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.wait(timeout=30)
    _, before = read_samples(path)
    assert 3 * len(QUESTIONS) <= len(before) < 16 * len(QUESTIONS)
    eng = ToyEngine()
    res = run(QUESTIONS, eng, ToyPRM(), BestOfN(16), out=out, batch=1, grader=grader)
    assert res.summary["samples"] == 16 * len(QUESTIONS)
    drawn_after = sum(r.n for c in eng.calls for r in c)
    assert drawn_after == 16 * len(QUESTIONS) - len(before)  # only the missing ones were drawn
    _, after = read_samples(path)
    assert after[: len(before)] == before
    ref = run(QUESTIONS, ToyEngine(), ToyPRM(), BestOfN(16), out=tmp_path / "ref", batch=1, grader=grader)
    assert _arrays(res.pool) == _arrays(ref.pool)


def test_load_benchmark(shared_data):
    name, qs = load_benchmark("math500", data_dir=shared_data, limit=3)
    assert name == "math500" and len(qs) == 3
    raw = json.loads((shared_data / "benchmarks" / "math500.json").read_text())[:3]
    assert [q.text for q in qs] == [r["problem"] for r in raw]
    assert [q.gold for q in qs] == [r["answer"].strip() for r in raw]
    _, gsm = load_benchmark(shared_data / "benchmarks" / "gsm8k.json", limit=2)
    assert all("####" not in q.gold for q in gsm)
    with pytest.raises(FileNotFoundError, match="nope.json does not exist"):
        load_benchmark("nope", data_dir=shared_data)


# --- the `optscale run` command -------------------------------------------------------


def _cli():
    import typer

    from optscale_jax.commands.run import register

    app = typer.Typer()

    @app.callback()
    def main() -> None:
        """optscale (test app)"""

    register(app)
    return app


def _bench(tmp_path) -> Path:
    path = tmp_path / "bench.json"
    path.write_text(json.dumps([{"problem": f"What is {i}+1?", "answer": str(i + 1), "unique_id": f"t{i}"}
                                for i in range(3)]))
    return path


def test_cli_run_transformers_then_replay(tmp_path):
    from typer.testing import CliRunner

    from optscale_jax.engines.transformers import make_tiny_models
    from optscale_jax.io import read_pool
    from optscale_jax.replay import replay

    gen, prm = make_tiny_models(tmp_path / "models")
    out = tmp_path / "run"
    args = ["run", "--engine", "transformers", "--model", str(gen), "--prm", str(prm),
            "--dataset", str(_bench(tmp_path)), "--policy", "SC", "--n-max", "3", "--batch", "2",
            "--max-tokens", "12", "--out", str(out), "--no-progress"]
    res = CliRunner().invoke(_cli(), args)
    assert res.exit_code == 0, res.output
    assert "SC on bench (3 questions, n_max=3)" in res.output
    summary = json.loads((out / "summary.json").read_text())
    assert summary["samples"] == 9 and summary["waves"] == 2
    pool = read_pool(out / "pool.parquet")
    assert pool.question_ids == ["t0", "t1", "t2"] and pool.gold == ["1", "2", "3"]
    assert replay(pool, SelfConsistency(3), n_boot=0).mean_samples == 3.0
    again = CliRunner().invoke(_cli(), args)  # a finished run resumes to the same result
    assert again.exit_code == 0, again.output
    assert json.loads((out / "summary.json").read_text())["resumed_samples"] == 9


def test_cli_engine_error_and_bad_options(tmp_path):
    from typer.testing import CliRunner

    bench = str(_bench(tmp_path))
    res = CliRunner().invoke(_cli(), ["run", "--engine", "openai", "--model", "m", "--dataset", bench,
                                      "--policy", "BoN", "--n-max", "2", "--out", str(tmp_path / "o"),
                                      "--base-url", "http://127.0.0.1:9", "--max-retries", "0",
                                      "--timeout", "2", "--no-progress"])
    assert res.exit_code == 3
    assert "engine error" in res.output and "run the same command to resume" in res.output
    res = CliRunner().invoke(_cli(), ["run", "--engine", "tpu", "--model", "m", "--dataset", bench,
                                      "--out", str(tmp_path / "o2")])
    assert res.exit_code == 2 and "unknown engine 'tpu'" in res.output
    res = CliRunner().invoke(_cli(), ["run", "--engine", "openai", "--model", "m", "--dataset", bench,
                                      "--policy", "magic", "--out", str(tmp_path / "o3")])
    assert res.exit_code == 2 and "unknown policy 'magic'" in res.output


@pytest.mark.slow
def test_notebook_04_live_runs():
    nbformat = pytest.importorskip("nbformat")
    nbclient = pytest.importorskip("nbclient")
    path = Path(__file__).resolve().parents[1] / "notebooks" / "04_live.ipynb"
    nb = nbformat.read(path, as_version=4)
    nbclient.NotebookClient(nb, timeout=600, kernel_name="python3",
                            resources={"metadata": {"path": str(path.parent)}}).execute()
    text = "".join(o.get("text", "") for c in nb.cells if c.cell_type == "code" for o in c.outputs)
    assert "identical to the uninterrupted run" in text


def test_every_torn_write_position_reads_back_the_complete_records(tmp_path, grader):
    """Cut the log at every byte: exactly the records whose line was complete survive."""
    run(QUESTIONS[:2], ToyEngine(), ToyPRM(), BestOfN(3), out=tmp_path / "r", batch=1, grader=grader,
        progress=True)
    raw = (tmp_path / "r" / SAMPLES_FILE).read_bytes()
    ends = [i + 1 for i, b in enumerate(raw) if b == ord("\n")]
    full = [json.loads(x) for x in raw.splitlines()]
    cut = tmp_path / "cut.jsonl"
    for k in range(len(raw) + 1):
        cut.write_bytes(raw[:k])
        complete = sum(e <= k for e in ends)
        if complete == 0:  # a torn header: an error that changes nothing
            with pytest.raises(ValueError, match="empty file" if k == 0 else "header line is incomplete"):
                read_samples(cut, repair=True)
            assert cut.read_bytes() == raw[:k]
            continue
        header, recs = read_samples(cut, repair=True)
        assert [header, *recs] == full[:complete]
        assert cut.read_bytes() == raw[: ends[complete - 1]]  # repaired to the last full line


def test_invalid_prm_scores_are_a_clear_error(tmp_path, grader):
    class NaNPRM(ToyPRM):
        def score(self, questions, completions):
            out = super().score(questions, completions)
            out[-1][0] = float("nan")
            return out

    with pytest.raises(EngineError, match=r"invalid step scores for sample 1 of question 'q1': step score 0 is nan"):
        run(QUESTIONS[:2], ToyEngine(), NaNPRM(), BestOfN(2), out=tmp_path, grader=grader)
    _, recs = read_samples(tmp_path / SAMPLES_FILE)
    assert recs == []  # nothing of the bad wave was written; the run can resume
