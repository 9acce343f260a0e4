"""Hostile-sweep variations of bad input: one line naming file/field, exit 2, nothing lost.

Each case is a row of docs/RELIABILITY.md, section "Found by the hostile sweep". CLI cases run
the real ``optscale`` app in-process; API cases assert a ``ValueError``/``TypeError`` naming
the argument.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from test_reliability_cli import assert_one_line_error, run

from optscale_jax.fit import GaussianPrior, fit_map, fit_mle
from optscale_jax.io import write_parquet
from optscale_jax.nstar import n_star
from optscale_jax.pool import Pool


def _sl(**kw) -> dict:
    rec = {"problem": "q", "unique_id": "a", "answer": "1", "completions": ["\\boxed{1}", "\\boxed{2}"],
           "scores": [[0.5, 0.6], [0.7]], "completion_tokens": [3, 4]}
    rec.update(kw)
    return rec


def _off(**kw) -> dict:
    sc = {"completions": [["\\boxed{1}", "\\boxed{2}"]], "scores": [[0.5, 0.7]], "completion_tokens": [[3, 4]]}
    rec = {"id": 1, "score": sc}
    for k, v in kw.items():
        (rec if k == "id" else sc)[k] = v
    return rec


def _text(name: str, text: str, *extra):
    def build(tmp: Path) -> list:
        (tmp / name).write_text(text, encoding="utf-8", newline="")
        return [tmp / name, *(x(tmp) if callable(x) else x for x in extra)]

    return build


def _bytes(name: str, data: bytes):
    def build(tmp: Path) -> Path:
        (tmp / name).write_bytes(data)
        return tmp / name

    return build


def _pool_parquet(tmp: Path) -> Path:
    pool = Pool.from_arrays([[0.9, 0.8, 0.7], [0.6, 0.95]], answers=[["1", "2", "1"], ["3", "3"]],
                            tokens=[[1, 2, 3], [4, 5]])
    pool = pool.replace(dataset="toy")
    return write_parquet(pool, tmp / "p.parquet")


def _column(name: str, values, typ):
    def build(tmp: Path) -> list:
        path = _pool_parquet(tmp)
        table = pq.read_table(path)
        i = table.column_names.index(name)
        pq.write_table(table.set_column(i, name, pa.array(values, typ)), path)
        return [path]

    return build


_OFF1 = json.dumps([_off(completions=[["a"]], scores=[[0.5]], completion_tokens=[[3]])])
_DEEP = "[" * 100_000 + "]" * 100_000

HOSTILE_CASES = {
    # id: (builder, needles in the one error line)
    "JSONL token count 10**30": (_text("a.jsonl", json.dumps(_sl(completion_tokens=[10**30, 4]))),
                                 ["a.jsonl", "line 1", "'completion_tokens[0]'", "token count"]),
    "JSONL token count 1e300": (_text("a.jsonl", json.dumps(_sl(completion_tokens=[1e300, 4]))),
                                ["a.jsonl", "'completion_tokens[0]'"]),
    "authors' JSON score 10**400": (_text("o.json", json.dumps([_off(scores=[[10**400, 0.7]])])),
                                    ["o.json", "record 0", "'score.scores[0]'", "401 digits"]),
    "authors' JSON nested 100000 deep": (_text("o.json", _DEEP), ["o.json", "nested too deeply"]),
    "JSONL unique_id null": (_text("a.jsonl", json.dumps(_sl(unique_id=None))),
                             ["a.jsonl", "line 1", "'unique_id'", "None"]),
    "JSONL unique_id a list": (_text("a.jsonl", json.dumps(_sl(unique_id=[1, 2]))), ["'unique_id'", "[1, 2]"]),
    "authors' JSON id null": (_text("o.json", json.dumps([_off(id=None)])), ["o.json", "record 0", "'id'"]),
    "authors' JSON id true": (_text("o.json", json.dumps([_off(id=True)])), ["o.json", "'id'", "True"]),
    "JSONL gold answer NaN": (
        _text("a.jsonl", json.dumps(_sl(answer=float("nan")))), ["a.jsonl", "'answer'", "nan"]),
    "--prompts gold answer NaN": (
        _text("o.json", _OFF1, "--prompts", _bytes("pr.json", b'[{"problem": "q", "answer": NaN}]')),
        ["pr.json", "record 0", "'answer'"]),
    "--prompts not UTF-8": (
        _text("o.json", _OFF1, "--prompts", _bytes("pr.json", b'[{"problem": "caf\xe9", "answer": "1"}]')),
        ["pr.json", "not UTF-8"]),
    "--prompts nested 100000 deep": (
        _text("o.json", _OFF1, "--prompts", _bytes("pr.json", _DEEP.encode())), ["pr.json", "nested too deeply"]),
    "--prompts a FIFO": (
        _text("o.json", _OFF1, "--prompts", lambda t: (os.mkfifo(t / "ff"), t / "ff")[1]),
        ["--prompts", "ff", "not a regular file"]),
    "Parquet scores as strings": (
        _column("scores", [["0.9", "0.8", "0.7"], ["0.6", "0.95"]], pa.list_(pa.string())),
        ["p.parquet", "'scores'", "column has type"]),
    "Parquet scores a scalar column": (_column("scores", [0.9, 0.6], pa.float64()), ["p.parquet", "'scores'"]),
    "Parquet fractional token counts": (
        _column("tokens", [[1.5, 2, 3], [4, 5]], pa.list_(pa.float64())), ["p.parquet", "'tokens'", "int64"]),
    "Parquet null token count": (
        _column("tokens", [[None, 2, 3], [4, 5]], pa.list_(pa.int64())), ["p.parquet", "row 0", "'tokens'", "null"]),
    "Parquet correct as strings": (
        _column("correct", [["yes", "no", "x"], ["a", "b"]], pa.list_(pa.string())), ["p.parquet", "'correct'"]),
    "Parquet null answer class": (
        _column("answer_ids", [[None, 0, 0], [0, 0]], pa.list_(pa.int32())), ["p.parquet", "'answer_ids'", "null"]),
    "Parquet empty question_id": (
        _column("question_id", ["", "b"], pa.string()), ["p.parquet", "row 0", "'question_id'"]),
    "Parquet score NaN names the file": (
        _column("scores", [[0.9, float("nan"), 0.7], [0.6, 0.95]], pa.list_(pa.float64())),
        ["p.parquet", "nan"]),
    "--grid empty": (lambda t: [_pool_parquet(t), "--grid", ""], ["--grid", "empty grid"]),
    "--grid ';;'": (lambda t: [_pool_parquet(t), "--grid", ";;"], ["--grid", "empty grid"]),
    "--grid n_max twice": (lambda t: [_pool_parquet(t), "--grid", "n_max=2;n_max=3"], ["--grid", "'n_max'", "twice"]),
    "--prior not UTF-8": (
        lambda t: [_pool_parquet(t), "-p", "OptScaleT", "--prior", _bytes("pr.json", b'[[0.5, 0.1], ["\xe9", 1]]')(t)],
        ["--prior", "pr.json", "not UTF-8"]),
    "--prior integer 10**400": (
        lambda t: [_pool_parquet(t), "-p", "OptScaleT", "--prior",
                   _bytes("pr.json", ("[[1" + "0" * 400 + ", 0.1], [0.5, 0.1]]").encode())(t)],
        ["--prior", "pr.json", "record 0", "'mu'"]),
    "--prior nested 100000 deep": (
        lambda t: [_pool_parquet(t), "-p", "OptScaleT", "--prior", _bytes("pr.json", _DEEP.encode())(t)],
        ["--prior", "pr.json", "nested too deeply"]),
    "--prior a FIFO": (
        lambda t: [_pool_parquet(t), "-p", "OptScaleT", "--prior", (os.mkfifo(t / "ff"), t / "ff")[1]],
        ["--prior", "ff", "not a regular file"]),
}


@pytest.mark.parametrize("case", list(HOSTILE_CASES))
def test_hostile_replay_input_is_one_line_exit_2(tmp_path, case) -> None:
    build, needles = HOSTILE_CASES[case]
    args = build(tmp_path)
    if "-p" not in args:
        args = [*args, "-p", "BoN,SC"]
    r = run("replay", *args, "--out", tmp_path / "out", "--grade", "no", "--n-boot", "0", "--no-progress")
    assert_one_line_error(r, *needles)
    assert not (tmp_path / "out").exists()  # refused before any output


ACCEPTED_CASES = {
    # a byte-order mark or CRLF line ends are read like the plain file (was "unknown pool format")
    "JSONL with a BOM": _text("a.jsonl", "\ufeff" + json.dumps(_sl())),
    "authors' JSON with a BOM": _text("o.json", "\ufeff" + json.dumps([_off()])),
    "JSONL with CRLF and blank lines": _text(
        "a.jsonl", "\r\n" + json.dumps(_sl()) + "\r\n\r\n  \r\n" + json.dumps(_sl(unique_id="b")) + "\r\n"),
    "--prompts with a BOM": _text("o.json", _OFF1, "--prompts", _bytes("pr.json", '\ufeff[{"problem": "q", "answer": "1"}]'.encode())),
    "--prior with a BOM": lambda t: [_pool_parquet(t), "-p", "OptScaleT", "--prior",
                                     _bytes("pr.json", "\ufeff[[0.5, 0.1], [0.5, 0.1]]".encode())(t)],
}


@pytest.mark.parametrize("case", list(ACCEPTED_CASES))
def test_bom_and_crlf_are_read(tmp_path, case) -> None:
    args = ACCEPTED_CASES[case](tmp_path)
    if "-p" not in args:
        args = [*args, "-p", "BoN"]
    r = run("replay", *args, "--grid", "s_min=0.9;quantile=0.1;n_max=1", "--out", tmp_path / "out",
            "--grade", "no", "--n-boot", "0", "--no-progress")
    assert r.exit_code == 0, r.output
    assert (tmp_path / "out" / "results.json").exists()


API_CASES = {
    "fit_mle scores as strings": (lambda: fit_mle([["0.5", "0.6"]]), TypeError, "scores"),
    "fit_mle complex scores": (lambda: fit_mle(np.array([[0.5 + 1j, 0.3]])), TypeError, "scores"),
    "fit_mle ragged rows": (lambda: fit_mle([[0.5, 0.6], [0.7]]), ValueError, "scores"),
    "fit_mle None": (lambda: fit_mle(None), TypeError, "scores"),
    "fit_map prior of the wrong length": (
        lambda: fit_map([[0.5, 0.6], [0.4, 0.3]], GaussianPrior(np.full(3, 0.5), 0.1, 0.2, 0.1)),
        ValueError, "prior.loc_mu"),
    "fit_map prior field a string": (
        lambda: fit_map([[0.5, 0.6]], GaussianPrior("0.5", 0.1, 0.2, 0.1)), TypeError, "prior.loc_mu"),
    "n_star alpha a string": (lambda: n_star(0.5, 0.1, 0.9, "0.1", n_max=64), TypeError, "alpha"),
    "n_star mu a string": (lambda: n_star("0.5", 0.1, 0.9, 0.1, n_max=64), TypeError, "mu"),
    "n_star s_min a list of strings": (lambda: n_star(0.5, 0.1, ["0.9"], 0.1, n_max=64), TypeError, "s_min"),
    "n_star mu None": (lambda: n_star(None, 0.1, 0.9, 0.1, n_max=64), TypeError, "mu"),
    "n_star shapes that do not broadcast": (
        lambda: n_star(np.zeros(3), np.full(2, 0.1), 0.9, 0.1, n_max=64), ValueError, "sigma (2,)"),
}


@pytest.mark.parametrize("case", list(API_CASES))
def test_hostile_api_arguments_are_named(case) -> None:
    call, exc, needle = API_CASES[case]
    with pytest.raises(exc) as info:
        call()
    assert needle in str(info.value)


# --- release 0.3: calibrate, replay's budget methods, run's new options, the new library entry points ---

def _toy_parquet(tmp: Path, tokens: bool = True) -> Path:
    pool = Pool.from_arrays([[0.9, 0.8, 0.7], [0.6, 0.95, 0.5]], answers=[["1", "2", "1"], ["3", "3", "4"]],
                            tokens=[[1, 2, 3], [4, 5, 6]] if tokens else None)
    return write_parquet(pool.replace(dataset="toy"), tmp / "p.parquet")


CLI_CASES_03 = {
    # id: (argv builder, needles in the one error line)
    "calibrate --n nan": (lambda t: ["calibrate", _toy_parquet(t), "--n", "nan"], ["--n", "not a finite number"]),
    "calibrate --n inf": (lambda t: ["calibrate", _toy_parquet(t), "--n", "1,inf"], ["--n", "inf"]),
    "calibrate --aggregate bogus": (lambda t: ["calibrate", _toy_parquet(t), "--aggregate", "bogus"],
                                    ["--aggregate", "'bogus'", "mean, last, min, product"]),
    "calibrate --seed -1": (lambda t: ["calibrate", "--seed", "-1"], ["--seed"]),
    "calibrate --prompts a directory": (lambda t: ["calibrate", _toy_parquet(t), "--prompts", t],
                                        ["--prompts", "is a directory"]),
    "replay --aggregate bogus": (lambda t: ["replay", _toy_parquet(t), "--aggregate", "bogus"], ["--aggregate"]),
    "replay --seed -1": (lambda t: ["replay", _toy_parquet(t), "--seed", "-1"], ["--seed"]),
    "replay --family mixture with only OptScaleT": (
        lambda t: ["replay", _toy_parquet(t), "-p", "OptScaleT", "--family", "mixture", "--grade", "no"],
        ["every configuration was skipped", "mixture"]),
    "replay budget policy on a pool without tokens": (
        lambda t: ["replay", _toy_parquet(t, tokens=False), "-p", "OptScaleBudget,BoN", "--grade", "no"],
        ["p.parquet", "no token counts", "OptScaleBudget", "--policy"]),
}


@pytest.mark.parametrize("case", list(CLI_CASES_03))
def test_hostile_new_options_are_one_line_exit_2(tmp_path, case) -> None:
    build, needles = CLI_CASES_03[case]
    args = build(tmp_path)
    r = run(*args, "--out", tmp_path / "out", "--n-boot", "0", *(["--no-progress"] if args[0] == "replay" else []))
    assert_one_line_error(r, *needles)
    assert not (tmp_path / "out").exists()


_RUN = ["run", "-e", "openai", "-m", "m", "--limit", "1", "--no-progress"]
RUN_CASES_03 = {
    "--temperature nan": (["--temperature", "nan"], ["--temperature", "nan", ">= 0"]),
    "--temperature -1": (["--temperature", "-1"], ["--temperature", "-1.0"]),
    "--top-p 2": (["--top-p", "2"], ["--top-p", "(0, 1]"]),
    "--timeout 0": (["--timeout", "0"], ["--timeout", "0.0", "> 0"]),
    "--timeout nan": (["--timeout", "nan"], ["--timeout"]),
    "--prior-std nan": (["--prior-std", "nan"], ["--prior-std"]),
    "--wave-size with OptScale0": (["--wave-size", "4"], ["--wave-size", "OptScaleBudget"]),
    "--token-budget below one sample for UniformEliminate": (
        ["--policy", "UniformEliminate", "--token-budget", "50"], ["--token-budget", "50", "512", "draw nothing"]),
    "URL port not a number": (["--base-url", "http://host:notaport"], ["--base-url", "not a server root"]),
    "URL port out of range": (["--base-url", "http://host:99999"], ["--base-url", "not a server root"]),
    "URL without a host": (["--base-url", "http://:8000"], ["--base-url"]),
    "URL with a space and credentials": (["--prm-base-url", "http://u:s3cret@ho st:8000"],
                                         ["--prm-base-url", "ho st"]),
    "URL with a query": (["--base-url", "http://h:8000/?a=1"], ["--base-url"]),
}


@pytest.mark.data
@pytest.mark.parametrize("case", list(RUN_CASES_03))
def test_hostile_run_options_refused_before_out(tmp_path, shared_data, case) -> None:
    extra, needles = RUN_CASES_03[case]
    r = run(*_RUN, "--data-dir", shared_data, "--out", tmp_path / "out", *extra)
    assert r.exit_code == 2, r.output
    assert "Traceback" not in r.output and "internal error" not in r.output
    lines = [ln for ln in r.output.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("error:"), r.output
    for needle in needles:
        assert needle in lines[0], (needle, lines[0])
    assert "s3cret" not in r.output
    assert not (tmp_path / "out").exists()  # refused before the run directory is made


def test_parse_urls_accepts_the_ordinary_forms() -> None:
    from optscale_jax.engines.balancer import parse_urls

    assert parse_urls("http://a:8000/, https://[::1]:9000,", "--base-url") == ["http://a:8000", "https://[::1]:9000"]


LIB_CASES_03 = {
    "allocate cost 0": (lambda a: a(cost=0.0), "cost"),
    "allocate cost nan": (lambda a: a(cost=float("nan")), "cost"),
    "allocate best of the wrong length": (lambda a: a(best=[0.2, 0.3]), "best has shape (2,)"),
    "allocate drawn of the wrong length": (lambda a: a(drawn=[1, 1]), "drawn"),
    "allocate n_max -1": (lambda a: a(n_max=-1), "n_max"),
    "allocate max_samples -1": (lambda a: a(max_samples=-1), "max_samples"),
    "allocate no questions": (lambda a: a(log_cdf=np.zeros(0), best=[], drawn=[], cost=1.0), "log_cdf"),
    "allocate k_max too large to build": (lambda a: a(k_max=10**12), "k_max=1000000000000"),
}


def test_allocate_expected_accuracy_checks_its_arguments_like_allocate() -> None:
    from optscale_jax.allocate import allocate_expected_accuracy, fit_calibration

    cal = fit_calibration(np.array([0.2, 0.5, 0.9, 0.95]), np.array([0, 0, 1, 1]))
    lf = np.log(np.full((3, len(cal.thresholds)), 0.5))
    for kw, needle in (({"cost": 0.0}, "cost"), ({"best": [0.2, 0.3]}, "best has shape (2,)")):
        args = dict(best=[0.2, 0.3, 0.4], drawn=[1, 1, 1], cost=100.0, budget=300.0)
        args.update(kw)
        with pytest.raises(ValueError, match=needle.replace("(", r"\(").replace(")", r"\)")):
            allocate_expected_accuracy(lf, args["best"], args["drawn"], args["cost"], args["budget"],
                                       calibration=cal, k_max=4)


@pytest.mark.parametrize("case", list(LIB_CASES_03))
def test_hostile_allocate_arguments_are_named(case) -> None:
    from optscale_jax.allocate import allocate

    def call(**kw):
        args = dict(log_cdf=np.log([0.5, 0.8, 0.5]), best=[0.2, 0.3, 0.97], drawn=[1, 1, 1], cost=100.0,
                    budget=300.0)
        args.update(kw)
        k_max = args.pop("k_max", 4)
        return allocate(args.pop("log_cdf"), args.pop("best"), args.pop("drawn"), args.pop("cost"),
                        args.pop("budget"), s_min=0.95, k_max=k_max, **args)

    build, needle = LIB_CASES_03[case]
    with pytest.raises(ValueError) as info:
        build(call)
    assert needle in str(info.value)


def test_allocate_checks_keep_the_documented_answer() -> None:
    from optscale_jax.allocate import allocate

    # the docstring's example (checked by hand there): the solved third question gets nothing
    a = allocate(np.log([0.5, 0.8, 0.5]), [0.2, 0.3, 0.97], [1, 1, 1], [100.0, 100.0, 100.0], 300.0,
                 s_min=0.95, k_max=4, n_max=np.array([8, 8, 8]), max_samples=10)
    assert a.extra.tolist() == [2, 1, 0]


@pytest.mark.parametrize("kw, needle", [
    ({"n_grid": [float("nan")]}, "n_grid"), ({"n_grid": [1.5]}, "n_grid"), ({"n_boot": -1}, "n_boot"),
    ({"n_bins": 0}, "n_bins"), ({"ppc_draws": 0}, "ppc_draws"), ({"seed": -1}, "seed"),
])
def test_hostile_calibrate_arguments_are_named(kw, needle) -> None:
    from optscale_jax.calibration import calibrate

    pool = Pool.from_arrays([[0.9, 0.8, 0.7], [0.6, 0.95, 0.5]])
    with pytest.raises(ValueError) as info:
        calibrate(pool, **kw)
    assert needle in str(info.value)


def test_calibrate_takes_one_family_name_as_a_string() -> None:
    from optscale_jax.calibration import calibrate

    pool = Pool.from_arrays([[0.9, 0.8, 0.7, 0.6], [0.6, 0.95, 0.5, 0.7]])
    assert calibrate(pool, families="beta", n_boot=0, ppc_draws=2).families == ["beta"]  # was 'b', 'e', ...


def test_parquet_chunks_larger_than_any_c_long(tmp_path) -> None:
    from optscale_jax.io import iter_parquet_chunks

    path = _toy_parquet(tmp_path)
    chunks = list(iter_parquet_chunks(path, 10**30))  # was OverflowError
    assert [c.n_questions for c in chunks] == [2]
    np.testing.assert_allclose(chunks[0].scores, Pool.from_arrays([[0.9, 0.8, 0.7], [0.6, 0.95, 0.5]]).scores)
