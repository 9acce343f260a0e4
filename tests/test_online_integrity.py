"""Live-run integrity: one writer per directory, no mixed experiments, bad logs are clear errors.

The CLI cases run ``optscale run --engine openai`` in process against the fake vLLM server
(or a closed port: the run then writes its header and stops with an engine error, which is
all a resume check needs), so nothing here loads a model except the spec/describe check.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from test_engine_openai import fake
from test_online import QUESTIONS, ToyEngine, ToyPRM, slow_run_script
from typer.testing import CliRunner

from optscale_jax.engines.base import EngineError, ModelNotFoundError, check_model_ref
from optscale_jax.engines.openai import HTTPClient, OpenAIEngine, OpenAIPRM
from optscale_jax.grading import Grader
from optscale_jax.journal import (
    HEADER_FLAGS,
    LOCK_FILE,
    SAMPLES_FILE,
    RunLockedError,
    RunMismatchError,
    SamplesFormatError,
    lock_run_dir,
    read_samples,
)
from optscale_jax.online import run
from optscale_jax.policies import BestOfN

CLOSED = "http://127.0.0.1:9"  # nothing listens: the engine fails at its first request


@pytest.fixture(scope="module")
def grader():
    with Grader(workers=0) as g:
        yield g


def _cli():
    import typer

    from optscale_jax.commands.run import register

    app = typer.Typer()

    @app.callback()
    def main() -> None:
        """optscale (test app)"""

    register(app)
    return app


def invoke(args, **kw):
    return CliRunner().invoke(_cli(), ["run", *args], **kw)


def _bench(path: Path, n: int = 3, offset: int = 0) -> Path:
    path.write_text(json.dumps([{"problem": f"What is {i}+1?", "answer": str(i + 1), "unique_id": f"t{i}"}
                                for i in range(offset, offset + n)]))
    return path


# --- the lock ------------------------------------------------------------------------

_HOLD = textwrap.dedent(
    """
    import sys, time
    from optscale_jax.journal import lock_run_dir
    with lock_run_dir(sys.argv[1]):
        print("locked", flush=True)
        time.sleep(120)
    """
)


def _hold(out: Path) -> subprocess.Popen:
    proc = subprocess.Popen([sys.executable, "-c", _HOLD, str(out)], stdout=subprocess.PIPE, text=True,
                            env={**os.environ, "JAX_PLATFORMS": "cpu"})
    assert proc.stdout.readline().strip() == "locked"
    return proc


def test_lock_names_the_holder_and_sigkill_leaves_no_stale_lock(tmp_path, grader):
    out = tmp_path / "run"
    proc = _hold(out)
    try:
        assert (out / LOCK_FILE).read_text().split()[0] == str(proc.pid)  # the file records the holder
        t0 = time.perf_counter()
        with pytest.raises(RunLockedError, match=f"in use by another optscale run \\(PID {proc.pid};") as e:
            run(QUESTIONS[:2], ToyEngine(), ToyPRM(), BestOfN(2), out=out, grader=grader)
        assert e.value.holder == proc.pid and time.perf_counter() - t0 < 5  # at once, no waiting
        assert not (out / SAMPLES_FILE).exists()  # refused before touching anything
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
    # the dead holder's PID is still in the file, but the kernel released its flock
    assert (out / LOCK_FILE).read_text().split()[0] == str(proc.pid)
    res = run(QUESTIONS[:2], ToyEngine(), ToyPRM(), BestOfN(2), out=out, grader=grader)
    assert res.summary["samples"] == 4
    assert (out / LOCK_FILE).read_text() == ""  # released on exit


def test_lock_is_reentrant_in_a_thread_and_exclusive_across_threads(tmp_path, grader):
    out = tmp_path / "run"
    errors = []
    with lock_run_dir(out):
        res = run(QUESTIONS[:2], ToyEngine(), ToyPRM(), BestOfN(2), out=out, grader=grader)  # same thread
        assert res.summary["samples"] == 4

        def other():
            try:
                with lock_run_dir(out):
                    pass
            except RunLockedError as e:
                errors.append(str(e))

        t = threading.Thread(target=other)
        t.start()
        t.join()
    assert len(errors) == 1 and f"another thread of this process (PID {os.getpid()})" in errors[0]
    with lock_run_dir(out):  # free again
        pass


def test_out_that_is_a_file_is_a_clear_error(tmp_path, grader):
    out = tmp_path / "file"
    out.write_text("x")
    with pytest.raises(ValueError, match=f"run directory {out} cannot be created: File exists"):
        run(QUESTIONS[:2], ToyEngine(), ToyPRM(), BestOfN(2), out=out, grader=grader)
    assert out.read_text() == "x"


def test_second_cli_run_on_the_same_directory_stops_at_once(tmp_path, grader):
    """A run holds OUT; `optscale run` on OUT exits 2 naming its PID; the survivor's log is clean."""
    out = tmp_path / "run"
    script = tmp_path / "slow.py"
    script.write_text(slow_run_script(sleep=0.25, n=12))
    first = subprocess.Popen([sys.executable, str(script), str(out), str(Path(__file__).parent)],
                             env={**os.environ, "JAX_PLATFORMS": "cpu"})
    try:
        deadline = time.time() + 120
        while not ((out / SAMPLES_FILE).exists() and (out / SAMPLES_FILE).read_bytes().count(b"\n") >= 2):
            assert time.time() < deadline and first.poll() is None, "the first run ended too early"
            time.sleep(0.05)
        t0 = time.perf_counter()
        second = subprocess.run(
            [sys.executable, "-m", "optscale_jax.cli", "run", "--engine", "openai", "--model", "m",
             "--dataset", str(_bench(tmp_path / "b.json")), "--policy", "BoN", "--n-max", "2",
             "--out", str(out), "--base-url", CLOSED, "--no-progress"],
            capture_output=True, text=True, env={**os.environ, "JAX_PLATFORMS": "cpu"}, timeout=120)
        elapsed = time.perf_counter() - t0
        assert first.poll() is None, "the first run must still hold the directory"
        text = second.stdout + second.stderr
        assert second.returncode == 2, text
        assert f"(PID {first.pid};" in text and "Traceback" not in text
        assert elapsed < 60  # interpreter start-up only: it never waits for the lock
    finally:
        rc = first.wait(timeout=300)
    assert rc == 0
    _, recs = read_samples(out / SAMPLES_FILE)  # raises on any sample written twice
    assert len(recs) == 12 * len(QUESTIONS)
    assert len({(r["q"], r["j"]) for r in recs}) == len(recs)
    eng = ToyEngine()
    res = run(QUESTIONS, eng, ToyPRM(), BestOfN(12), out=out, batch=1, grader=grader)  # resumes cleanly
    assert res.summary["resumed_samples"] == 12 * len(QUESTIONS) and eng.calls == []


# --- the header: a resume with any difference refuses ------------------------------------


@pytest.fixture(scope="module")
def dirs(tmp_path_factory):
    """A base run (header written, engine failed at once) per policy family, with its arguments."""
    root = tmp_path_factory.mktemp("hdr")
    bench, other = _bench(root / "bench.json"), _bench(root / "other.json", offset=5)
    prior1, prior2 = root / "p1.json", root / "p2.json"
    prior1.write_text(json.dumps([[0.8, 0.1], [0.7, 0.1], [0.6, 0.2]]))
    prior2.write_text(json.dumps([[0.8, 0.1], [0.7, 0.1], [0.6, 0.3]]))
    common = ["--engine", "openai", "--model", "m", "--prm", "p", "--dataset", str(bench),
              "--base-url", CLOSED, "--max-retries", "0", "--timeout", "2", "--no-progress"]
    base = {
        "o0": [*common, "--policy", "OptScale0", "--n-max", "4", "--s-min", "0.9", "--quantile", "0.05"],
        "ot": [*common, "--policy", "OptScaleT", "--n-max", "4", "--prior", str(prior1)],
    }
    for name, args in base.items():
        res = invoke([*args, "--out", str(root / name)])
        assert res.exit_code == 3, res.output  # header written, then the engine error
        assert read_samples(root / name / SAMPLES_FILE)[1] == []
    return root, base, {"other": str(other), "prior2": str(prior2)}


def _set(args, flag, value):
    args = list(args)
    if flag in args:
        args[args.index(flag) + 1] = value
    else:
        args += [flag, value]
    return args


CHANGES = [  # (base, option, new value, header field that must be named)
    ("o0", "--model", "m2", "engine.model"),
    ("o0", "--prm", "p2", "prm.model"),
    ("o0", "--engine", "transformers", "engine.backend"),
    ("o0", "--temperature", "0.5", "engine.temperature"),
    ("o0", "--top-p", "0.9", "engine.top_p"),
    ("o0", "--max-tokens", "64", "engine.max_tokens"),
    ("o0", "--policy", "BoN", "policy.name"),
    ("o0", "--n-max", "8", "policy.n_max"),
    ("o0", "--s-min", "0.95", "policy.s_min"),
    ("o0", "--quantile", "0.1", "policy.alpha"),
    ("o0", "--mode", "sequential", "policy.mode"),
    ("o0", "--seed", "1", "seed"),
    ("o0", "--aggregate", "min", "aggregate"),
    ("o0", "--batch", "2", "batch"),
    ("o0", "--dataset", "{other}", "questions.sha256"),
    ("o0", "--limit", "2", "questions.count"),
    ("ot", "--prior", "{prior2}", "prior_file.sha256"),
    ("ot", "--prior-std", "0.2", "policy.prior"),
]


@pytest.mark.parametrize(("base", "flag", "value", "field"), CHANGES, ids=[f"{c[1]}" for c in CHANGES])
def test_resume_with_another_setting_refuses_naming_field_and_option(dirs, base, flag, value, field):
    root, bases, files = dirs
    out = root / base
    before = (out / SAMPLES_FILE).read_bytes()
    res = invoke(_set([*bases[base], "--out", str(out)], flag, value.format(**files)))
    assert res.exit_code == 2, res.output
    line = res.output.strip()
    assert "\n" not in line and "Traceback" not in res.output  # one line
    assert f"{field} was " in line and HEADER_FLAGS[field] in line and flag in HEADER_FLAGS[field]
    assert "--no-resume" in line
    assert (out / SAMPLES_FILE).read_bytes() == before  # nothing changed


def test_resume_with_the_same_settings_is_not_refused(dirs):
    root, bases, _ = dirs
    for name, args in bases.items():
        res = invoke([*args, "--out", str(root / name)])
        assert res.exit_code == 3, res.output  # got past every check to the (closed) engine


def test_every_cli_header_field_has_a_change_in_the_table():
    covered = {c[3] for c in CHANGES}
    cli_fields = {"engine.model", "prm.model", "engine.backend", "engine.temperature", "engine.top_p",
                  "engine.max_tokens", "policy.name", "policy.n_max", "policy.s_min", "policy.alpha",
                  "policy.mode", "seed", "aggregate", "batch", "questions.sha256", "questions.count",
                  "prior_file.sha256", "policy.prior"}
    assert cli_fields <= covered


def test_no_resume_moves_the_old_run_aside(tmp_path, grader):
    out = tmp_path / "run"
    run(QUESTIONS[:2], ToyEngine(), ToyPRM(), BestOfN(2), out=out, grader=grader)
    old = (out / SAMPLES_FILE).read_bytes()
    with pytest.raises(RunMismatchError) as e:
        run(QUESTIONS[:2], ToyEngine(), ToyPRM(), BestOfN(3), out=out, grader=grader)
    assert [d[0] for d in e.value.differences] == ["policy.n_max", "policy.n"]
    assert e.value.differences[0][1:] == (2, 3)
    res = run(QUESTIONS[:2], ToyEngine(), ToyPRM(), BestOfN(3), out=out, grader=grader, resume=False)
    assert res.summary["samples"] == 6 and res.summary["moved_aside"] == str(out / "previous-1")
    assert (out / "previous-1" / SAMPLES_FILE).read_bytes() == old
    assert (out / "previous-1" / "pool.parquet").exists()
    run(QUESTIONS[:2], ToyEngine(), ToyPRM(), BestOfN(3), out=out, grader=grader, resume=False)
    assert (out / "previous-2" / SAMPLES_FILE).exists()  # never overwrites an earlier one


def test_old_format_version_is_refused(tmp_path, grader):
    out = tmp_path / "run"
    out.mkdir()
    (out / SAMPLES_FILE).write_text('{"kind": "header", "format": "optscale-live-samples", "version": 1}\n')
    with pytest.raises(RunMismatchError, match="format version 1, this is version 2; .*--no-resume"):
        run(QUESTIONS[:2], ToyEngine(), ToyPRM(), BestOfN(2), out=out, grader=grader)


def test_pool_carries_the_header(tmp_path, grader):
    from optscale_jax.io import read_parquet

    out = tmp_path / "run"
    run(QUESTIONS[:2], ToyEngine(), ToyPRM(), BestOfN(2), out=out, grader=grader, seed=7, aggregate="min")
    header, _ = read_samples(out / SAMPLES_FILE)
    pool = read_parquet(out / "pool.parquet")
    assert pool.metadata["live_header"] == header
    assert header["seed"] == 7 and header["aggregate"] == "min" and header["engine"] == {"backend": "toy"}
    # a resumed run's pool carries the header on disk (the first run's creation time)
    res = run(QUESTIONS[:2], ToyEngine(), ToyPRM(), BestOfN(2), out=out, grader=grader, seed=7, aggregate="min")
    assert res.pool.metadata["live_header"] == header


def test_engine_spec_is_what_the_built_engines_describe(tmp_path):
    """The CLI refuses before loading from engine_spec: it must agree with the engines' describe()."""
    pytest.importorskip("torch")
    from optscale_jax.commands.run import engine_spec, make_engines
    from optscale_jax.engines.transformers import make_tiny_models

    gen, prm = make_tiny_models(tmp_path / "models")
    kw = dict(temperature=0.6, top_p=0.9, max_tokens=16)
    described = {}
    for engine, model, prm_ref in [("transformers", str(gen), str(prm)), ("openai", "m", "p")]:
        eng, scorer = make_engines(engine, model, prm_ref, **kw, api_key="sk-secret")
        spec_e, spec_p = engine_spec(engine, model, prm_ref, **kw)
        d_e, d_p = eng.describe(), scorer.describe()
        assert {k: d_e[k] for k in spec_e} == spec_e and {k: d_p[k] for k in spec_p} == spec_p
        assert "sk-secret" not in json.dumps([d_e, d_p])
        described[engine] = d_e, d_p
    assert described["openai"][0]["model"] == "m"
    assert described["transformers"][0]["model"] == str(gen.resolve())  # local models by absolute path
    assert described["transformers"][1]["model"] == str(prm.resolve())
    assert described["transformers"][0]["temperature"] == 0.6


# --- bad logs: clear errors before any sampling ------------------------------------------


def _good_log(tmp_path, grader) -> Path:
    out = tmp_path / "run"
    run(QUESTIONS[:2], ToyEngine(), ToyPRM(), BestOfN(2), out=out, grader=grader)
    return out


def _edit(rec, field, value):
    rec = dict(rec)
    if value is _DROP:
        rec.pop(field)
    else:
        rec[field] = value
    return rec


_DROP = object()
BAD = [  # (field, value, expected text)
    ("score", _DROP, "field 'score' is missing; expected a finite number in [0, 1]"),
    ("score", float("nan"), "field 'score' is nan; expected a finite number in [0, 1]"),
    ("score", 1.5, "field 'score' is 1.5; expected a finite number in [0, 1]"),
    ("score", "0.5", "field 'score' is \"0.5\"; expected a finite number in [0, 1]"),
    ("score", True, "field 'score' is true; expected a finite number in [0, 1]"),
    ("tokens", -1, "field 'tokens' is -1; expected an integer >= 0"),
    ("tokens", 3.0, "field 'tokens' is 3.0; expected an integer >= 0"),
    ("q", _DROP, "field 'q' is missing; expected an integer >= 0"),
    ("step_scores", [0.5, float("inf")], "field 'step_scores' is [0.5, Infinity]; expected a list of finite"),
    ("text", None, "field 'text' is null; expected a string"),
    ("kind", "note", "expected a sample record (kind 'sample'), got 'note'"),
]


@pytest.mark.parametrize(("field", "value", "expected"), BAD, ids=[f"{b[0]}={'missing' if b[1] is _DROP else repr(b[1])}" for b in BAD])
def test_bad_record_is_a_clear_error_before_any_sampling(tmp_path, grader, field, value, expected):
    out = _good_log(tmp_path, grader)
    path = out / SAMPLES_FILE
    lines = path.read_text().splitlines()
    lines[2] = json.dumps(_edit(json.loads(lines[2]), field, value))
    path.write_text("\n".join(lines) + "\n" + '{"kind": "sam')  # plus a torn tail
    before = path.read_bytes()
    with pytest.raises(SamplesFormatError) as e:
        read_samples(path)
    assert str(e.value).startswith(f"{path}: line 3: {expected}")
    eng = ToyEngine()
    with pytest.raises(SamplesFormatError, match="line 3"):
        run(QUESTIONS[:2], eng, ToyPRM(), BestOfN(4), out=out, grader=grader)
    assert eng.calls == [] and path.read_bytes() == before  # nothing sampled, nothing cut


def test_bad_log_through_the_cli_is_one_line_exit_2_before_loading(tmp_path):
    bench = str(_bench(tmp_path / "b.json"))
    out = tmp_path / "run"
    args = ["--engine", "openai", "--model", "m", "--dataset", bench, "--policy", "BoN", "--n-max", "2",
            "--base-url", CLOSED, "--max-retries", "0", "--timeout", "2", "--no-progress", "--out", str(out)]
    assert invoke(args).exit_code == 3  # header written
    path = out / SAMPLES_FILE
    rec = {"kind": "sample", "q": 0, "j": 0, "wave": 0, "seed": 1, "prompt": "p", "text": "t", "tokens": 3,
           "finish_reason": "stop", "step_scores": [0.5], "score": float("nan"), "answer": None}
    with open(path, "a") as fh:
        fh.write(json.dumps(rec) + "\n")
    res = invoke(args)
    assert res.exit_code == 2, res.output  # 3 would mean it reached the engine
    assert res.output.strip() == (f"error: {path}: line 2: field 'score' is nan; expected a finite "
                                  "number in [0, 1]")


def test_torn_header_is_an_error_that_loses_nothing(tmp_path, grader):
    out = tmp_path / "run"
    out.mkdir()
    path = out / SAMPLES_FILE
    path.write_bytes(b'{"kind": "header", "format": "optscale-live-sam')
    with pytest.raises(SamplesFormatError, match="header line is incomplete.*nothing was changed.*--no-resume"):
        run(QUESTIONS[:2], ToyEngine(), ToyPRM(), BestOfN(2), out=out, grader=grader)
    assert path.read_bytes() == b'{"kind": "header", "format": "optscale-live-sam'
    res = run(QUESTIONS[:2], ToyEngine(), ToyPRM(), BestOfN(2), out=out, grader=grader, resume=False)
    assert res.summary["samples"] == 4
    assert (out / "previous-1" / SAMPLES_FILE).read_bytes().startswith(b'{"kind": "header"')


def test_torn_tail_drops_only_the_tail(tmp_path, grader):
    out = _good_log(tmp_path, grader)
    path = out / SAMPLES_FILE
    full = path.read_bytes()
    path.write_bytes(full + b'{"kind": "sample", "q": 1, "j"')
    res = run(QUESTIONS[:2], ToyEngine(), ToyPRM(), BestOfN(2), out=out, grader=grader)
    assert res.summary["resumed_samples"] == 4 and path.read_bytes() == full


# --- models and secrets ---------------------------------------------------------------------


@pytest.mark.parametrize("flag", ["--model", "--prm"])
def test_missing_local_model_path_is_one_line_before_loading(tmp_path, flag):
    bench = str(_bench(tmp_path / "b.json"))
    missing = str(tmp_path / "nope" / "model")
    args = ["--engine", "transformers", "--model", "Qwen/x", "--prm", "Qwen/y", "--dataset", bench,
            "--out", str(tmp_path / "run"), "--no-progress"]
    res = invoke(_set(args, flag, missing))
    assert res.exit_code == 2, res.output
    assert res.output.strip() == f"error: {flag}: local model directory {missing} does not exist"
    assert not (tmp_path / "run").exists()  # stopped before anything


def test_check_model_ref():
    check_model_ref("Qwen/Qwen2.5-Math-PRM-7B")  # a hub id: left to the loader
    for bad in ("./nope", "/no/such/dir", "~/no-such-optscale-model", "a/b/c"):
        with pytest.raises(ModelNotFoundError, match="local model directory .* does not exist"):
            check_model_ref(bad, "--model")
    with pytest.raises(ModelNotFoundError, match="is a file"):
        check_model_ref(__file__, "--model")


SECRET = "sk-FAKE-0123456789-secret"


def test_api_key_reaches_no_file_log_or_message(tmp_path):
    bench = str(_bench(tmp_path / "b.json"))
    out = tmp_path / "run"
    with fake.FakeVLLMServer() as srv:
        res = invoke(["--engine", "openai", "--model", "m", "--prm", "p", "--base-url", srv.url,
                      "--dataset", bench, "--policy", "BoN", "--n-max", "2", "--max-tokens", "64",
                      "--api-key", SECRET, "--out", str(out), "--no-progress"])
    assert res.exit_code == 0, res.output
    assert SECRET not in res.output
    for f in out.rglob("*"):
        if f.is_file():
            assert SECRET.encode() not in f.read_bytes(), f
    header, _ = read_samples(out / SAMPLES_FILE)
    assert header["engine"]["backend"] == "openai" and "api_key" not in json.dumps(header)
    # through the environment variable, against a server that fails: the message has no key
    res = invoke(["--engine", "openai", "--model", "m", "--base-url", CLOSED, "--max-retries", "0",
                  "--timeout", "2", "--dataset", bench, "--out", str(tmp_path / "r2"), "--no-progress"],
                 env={"OPTSCALE_API_KEY": SECRET})
    assert res.exit_code == 3 and SECRET not in res.output


class _Echo(BaseHTTPRequestHandler):
    """Answers 400 with the request's Authorization header in the body (a leaky server)."""

    def do_POST(self):  # noqa: N802
        body = f"bad request; you sent {self.headers.get('Authorization')}".encode()
        self.send_response(400)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


def test_engine_errors_redact_the_api_key():
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _Echo)
    t = threading.Thread(target=httpd.serve_forever, daemon=True)
    t.start()
    try:
        url = f"http://127.0.0.1:{httpd.server_address[1]}"
        client = HTTPClient(url, api_key=SECRET, max_retries=0, timeout=5)
        with pytest.raises(EngineError, match=r"HTTP 400: bad request; you sent Bearer \*\*\*") as e:
            client.post("/v1/completions", {})
        assert SECRET not in str(e.value) and e.value.__cause__ is None and e.value.__context__ is None
        for backend in (OpenAIEngine(url, "m", api_key=SECRET), OpenAIPRM(url, "p", api_key=SECRET)):
            assert SECRET not in json.dumps(backend.describe())
    finally:
        httpd.shutdown()
