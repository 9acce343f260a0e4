"""Bad input to the ``optscale`` CLI: one line on stderr naming file/field, exit code 2.

Every case runs the real ``optscale`` app in-process (``typer.testing.CliRunner``);
only the core-install case (flax missing) needs a subprocess. See docs/RELIABILITY.md.
"""

from __future__ import annotations

import gzip
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from test_policies import score_pool
from typer.testing import CliRunner

from optscale_jax.cli import _build, app
from optscale_jax.io import PARQUET_METADATA_KEY, write_parquet
from optscale_jax.pool import Pool

_build()
runner = CliRunner()
REPO = Path(__file__).resolve().parents[1]


def run(*args: str):
    return runner.invoke(app, [str(a) for a in args])


def assert_one_line_error(r, *needles: str) -> None:
    """Exit code 2, exactly one ``error:`` line on stderr containing every needle, no traceback."""
    assert r.exit_code == 2, (r.exit_code, r.output)
    assert "Traceback" not in r.output
    errors = [line for line in r.stderr.splitlines() if line.strip()]
    errors = [line for line in errors if not line.startswith("warning:")]
    assert len(errors) == 1 and errors[0].startswith("error: "), r.stderr
    for needle in needles:
        assert needle in errors[0], (needle, errors[0])


def _set_parquet_meta(path: Path, edit) -> Path:
    """Rewrite a pool Parquet file's optscale_jax.pool schema metadata with ``edit(meta)``."""
    table = pq.read_table(path)
    meta = table.schema.metadata[PARQUET_METADATA_KEY]
    new = edit(json.loads(meta))
    raw = new if isinstance(new, bytes) else json.dumps(new).encode()
    pq.write_table(table.replace_schema_metadata({PARQUET_METADATA_KEY: raw}), path)
    return path


def _small_pool() -> Pool:
    pool = Pool.from_arrays([[0.9, 0.8, 0.7], [0.6, 0.95]], answers=[["1", "2", "1"], ["3", "3"]])
    pool = pool.replace(dataset="toy")
    return pool


# ----------------------------------------------------------------------------- replay: files


def _dir(tmp: Path) -> list[str]:
    (tmp / "adir").mkdir()
    return [tmp / "adir"]


def _no_questions(tmp: Path) -> list[str]:
    (tmp / "empty_list.json").write_text("[]")
    return [tmp / "empty_list.json"]


def _all_rows_empty(tmp: Path) -> list[str]:
    lines = [{"problem": f"q{i}", "unique_id": f"q{i}", "answer": "1", "completions": [], "scores": [],
              "completion_tokens": []} for i in range(3)]
    (tmp / "hollow.jsonl").write_text("\n".join(json.dumps(x) for x in lines) + "\n")
    return [tmp / "hollow.jsonl"]


def _null_qid(tmp: Path) -> list[str]:
    path = write_parquet(_small_pool(), tmp / "nullid.parquet")
    table = pq.read_table(path)
    import pyarrow as pa

    col = pa.array([None, "b"], pa.string())
    pq.write_table(table.set_column(0, "question_id", col), path)
    return [path]


def _meta_no_dataset(tmp: Path) -> list[str]:
    path = write_parquet(_small_pool(), tmp / "nodataset.parquet")
    return [_set_parquet_meta(path, lambda m: {k: v for k, v in m.items() if k != "dataset"})]


def _meta_bad_json(tmp: Path) -> list[str]:
    path = write_parquet(_small_pool(), tmp / "badmeta.parquet")
    return [_set_parquet_meta(path, lambda m: b"{not json")]


def _prompts_with_jsonl(tmp: Path) -> list[str]:
    line = {"problem": "q", "unique_id": "a", "answer": "1", "completions": ["1"], "scores": [[0.5]],
            "completion_tokens": [3]}
    (tmp / "p.jsonl").write_text(json.dumps(line) + "\n")
    (tmp / "prompts.json").write_text(json.dumps([{"problem": "q", "answer": "1"}]))
    return [tmp / "p.jsonl", "--prompts", tmp / "prompts.json"]


def _prompts_with_parquet(tmp: Path) -> list[str]:
    (tmp / "prompts.json").write_text(json.dumps([{"problem": "q", "answer": "1"}]))
    return [write_parquet(_small_pool(), tmp / "p.parquet"), "--prompts", tmp / "prompts.json"]


def _missing(tmp: Path) -> list[str]:
    return [tmp / "missing.parquet"]


def _symlink_loop(tmp: Path) -> list[str]:
    os.symlink(tmp / "loop_b", tmp / "loop_a")
    os.symlink(tmp / "loop_a", tmp / "loop_b")
    return [tmp / "loop_a"]


def _fifo(tmp: Path) -> list[str]:
    os.mkfifo(tmp / "fifo")  # opening it would block forever: must be refused unopened
    return [tmp / "fifo"]


def _gzip(tmp: Path) -> list[str]:
    line = {"problem": "q", "completions": ["1"], "scores": [[0.5]], "completion_tokens": [3]}
    with gzip.open(tmp / "pool.jsonl.gz", "wt") as fh:
        fh.write(json.dumps(line) + "\n")
    return [tmp / "pool.jsonl.gz"]


def _empty_file(tmp: Path) -> list[str]:
    (tmp / "empty.jsonl").write_text("")
    return [tmp / "empty.jsonl"]


def _non_utf8(tmp: Path) -> list[str]:
    (tmp / "latin1.jsonl").write_bytes(
        b'{"problem": "caf\xe9", "completions": ["1"], "scores": [[0.5]], "completion_tokens": [3]}\n'
    )
    return [tmp / "latin1.jsonl"]


def _truncated_jsonl(tmp: Path) -> list[str]:
    (tmp / "cut.jsonl").write_text('{"problem": "q", "completions": ["1"], "scores": [[0.5]\n')
    return [tmp / "cut.jsonl"]


def _out_is_file(tmp: Path) -> list[str]:
    (tmp / "taken").write_text("x")
    return [write_parquet(_small_pool(), tmp / "p.parquet"), "--out", tmp / "taken"]


def _prompts_missing(tmp: Path) -> list[str]:
    return [write_parquet(_small_pool(), tmp / "p.parquet"), "--prompts", tmp / "nope.json"]


REPLAY_FILE_CASES = {
    # id: (builder, needles in the one error line)
    "pool is a directory": (_dir, ["adir", "is a directory"]),
    "pool has 0 questions": (_no_questions, ["empty_list.json", "has no questions"]),
    "all rows empty": (_all_rows_empty, ["hollow.jsonl", "0 samples"]),
    "parquet null question_id": (_null_qid, ["nullid.parquet", "row 0", "'question_id'", "null"]),
    "parquet metadata without dataset": (_meta_no_dataset, ["nodataset.parquet", "'dataset'", "missing"]),
    "parquet metadata bad JSON": (_meta_bad_json, ["badmeta.parquet", "invalid JSON"]),
    "--prompts with a JSONL pool": (_prompts_with_jsonl, ["prompts.json", "p.jsonl", "search_and_learn"]),
    "--prompts with a Parquet pool": (_prompts_with_parquet, ["prompts.json", "parquet"]),
    "--prompts file missing": (_prompts_missing, ["--prompts", "nope.json", "no such file"]),
    "missing pool": (_missing, ["missing.parquet", "no such file"]),
    "symlink loop": (_symlink_loop, ["loop_a", "cannot read"]),
    "FIFO": (_fifo, ["fifo", "not a regular file"]),
    "gzip pool": (_gzip, ["pool.jsonl.gz", "gzip"]),
    "empty file": (_empty_file, ["empty.jsonl", "is empty"]),
    "non-UTF-8 JSONL": (_non_utf8, ["latin1.jsonl", "not UTF-8"]),
    "truncated JSONL line": (_truncated_jsonl, ["cut.jsonl", "line 1", "invalid JSON"]),
    "--out is an existing file": (_out_is_file, ["--out", "taken", "not a directory"]),
}


@pytest.mark.parametrize("case", list(REPLAY_FILE_CASES))
def test_replay_bad_files(tmp_path, case) -> None:
    build, needles = REPLAY_FILE_CASES[case]
    args = build(tmp_path)
    if "--out" not in args:
        args = [*args, "--out", tmp_path / "out"]
    r = run("replay", *args, "--no-progress", "--n-boot", "0")
    assert_one_line_error(r, *needles)
    if case != "--out is an existing file":
        assert not (tmp_path / "out").exists()  # refused before any output


# --------------------------------------------------------------------------- replay: options


REPLAY_OPTION_CASES = {
    "--policy all --policy bogus": (["-p", "all", "-p", "bogus"], ["--policy", "'bogus'"]),
    "--policy BoN,,bogus": (["-p", "BoN,bogus"], ["--policy", "'bogus'"]),
    "--grid n_max=0": (["--grid", "n_max=0"], ["--grid", "n_max"]),
    "--grid s_min=1.5": (["--grid", "s_min=1.5"], ["--grid", "s_min"]),
    "--grid garbage": (["--grid", "speed"], ["--grid", "key=values"]),
    "--step 0": (["--step", "0"], ["--step"]),
    "unknown option": (["--frobnicate"], ["--frobnicate"]),
    "--mode greedy": (["--mode", "greedy"], ["--mode", "greedy"]),
}


@pytest.mark.parametrize("case", list(REPLAY_OPTION_CASES))
def test_replay_bad_options_before_reading_the_pool(tmp_path, case) -> None:
    args, needles = REPLAY_OPTION_CASES[case]
    # The pool is a FIFO: reading it would hang, so a passing test proves the option was
    # refused before the pool was touched.
    os.mkfifo(tmp_path / "fifo")
    r = run("replay", tmp_path / "fifo", *args, "--out", tmp_path / "out", "--no-progress")
    assert_one_line_error(r, *needles)


def test_out_checked_before_the_pool_is_read(tmp_path) -> None:
    (tmp_path / "taken").write_text("x")
    os.mkfifo(tmp_path / "fifo")
    r = run("replay", tmp_path / "fifo", "--out", tmp_path / "taken", "--no-progress")
    assert_one_line_error(r, "--out", "taken")


# ------------------------------------------------------------------------- replay: clipping


def test_grid_beyond_the_pool_width_is_clipped_with_one_warning(tmp_path) -> None:
    """A 4-wide pool never yields a row or record labelled N > 4 (the real-data bug)."""
    pool = score_pool(4, q=30, n=4, min_len=4)
    pool = pool.replace(dataset="four")
    path = write_parquet(pool, tmp_path / "four.parquet")
    out = tmp_path / "out"
    r = run("replay", path, "-p", "BoN,SC,ESC", "--grid", "s_min=0.9;quantile=0.1;n_max=4,8,64",
            "--out", out, "--n-boot", "0", "--no-progress")
    assert r.exit_code == 0, r.output
    warn = [line for line in r.stderr.splitlines() if line.startswith("warning:")]
    assert len(warn) == 1 and "8, 64" in warn[0] and "clipped to 4" in warn[0], r.stderr
    data = json.loads((out / "results.json").read_text())
    assert data["meta"]["grid"]["n_max"] == [4]
    assert data["meta"]["n_max_clipped"] == [8, 64] and data["meta"]["pool_width"] == 4
    assert max(x["N"] or 0 for x in data["records"]) == 4
    assert max(x["n_max"] for x in data["records"]) == 4
    assert all(x["mean_samples"] <= 4 for x in data["records"])
    table = (out / "table1.md").read_text()
    assert "$N=4$" in table and "$N=8$" not in table and "$N=64$" not in table
    assert "clipped to N = 4" in table


def test_one_question_one_sample_replays(tmp_path) -> None:
    pool = Pool.from_arrays([[0.8]], answers=[["1"]], answer_ids=[[0]], correct=[[True]])
    path = write_parquet(pool, tmp_path / "one.parquet")
    r = run("replay", path, "-p", "BoN,SC", "--out", tmp_path / "o", "--n-boot", "0", "--no-progress")
    assert r.exit_code == 0, r.output
    data = json.loads((tmp_path / "o" / "results.json").read_text())
    assert {x["N"] for x in data["records"]} == {1}
    assert all(x["accuracy"] == 1.0 for x in data["records"])


def test_debug_shows_the_traceback(tmp_path) -> None:
    (tmp_path / "adir").mkdir()
    r = runner.invoke(app, ["--debug", "replay", str(tmp_path / "adir"), "--no-progress"])
    assert r.exit_code != 0
    assert r.exception is not None  # re-raised for the traceback


# ------------------------------------------------------------------------- predictor CLI


def _fake_checkpoint(tmp: Path) -> Path:
    """Passes the cheap checks (the files exist), so the option under test decides."""
    ck = tmp / "ck"
    ck.mkdir()
    (ck / "manifest.json").write_text("{}")
    (ck / "params.msgpack").write_bytes(b"")
    return ck


def _q(name: str, content: bytes):
    def build(tmp: Path) -> list[str]:
        (tmp / name).write_bytes(content)
        return [_fake_checkpoint(tmp), "--questions", tmp / name, "--out", tmp / "priors.json"]

    return build


PREDICT_CASES = {
    "missing checkpoint": (lambda t: [t / "nock"], ["CHECKPOINT", "nock", "no such directory"]),
    "checkpoint is a file": (
        lambda t: [(t / "f").write_text("x") and t / "f"], ["CHECKPOINT", "not a directory"]),
    "checkpoint without params": (
        lambda t: [(t / "ck").mkdir() or (t / "ck" / "manifest.json").write_text("{}") and t / "ck"],
        ["ck", "missing params.msgpack"]),
    "checkpoint manifest bad JSON": (
        lambda t: [(_fake_checkpoint(t) / "manifest.json").write_text("{bad") and t / "ck"],
        ["manifest.json", "invalid JSON"]),
    "checkpoint foreign format": (lambda t: [_fake_checkpoint(t)], ["ck", "format"]),
    "--questions truncated": (_q("cut.json", b'[{"problem": "x"'), ["--questions", "cut.json", "invalid JSON"]),
    "--questions non-UTF-8": (_q("bin.json", b'["caf\xe9"]'), ["--questions", "bin.json", "not UTF-8"]),
    "--questions not a list": (_q("obj.json", b'{"a": 1}'), ["--questions", "obj.json", "JSON object"]),
    "--questions empty list": (_q("none.json", b"[]"), ["--questions", "none.json", "empty list"]),
    "--questions item without text": (_q("notext.json", b'[{"id": 1}]'), ["notext.json", "item 0", "'problem'"]),
    "--questions item a number": (_q("num.json", b"[3]"), ["num.json", "item 0"]),
    "--questions duplicate ids": (
        _q("dup.json", b'[{"problem": "a", "id": 1}, {"problem": "b", "id": 1}]'), ["dup.json", "duplicate"]),
    "--questions missing": (
        lambda t: [_fake_checkpoint(t), "--questions", t / "nope.json"], ["--questions", "nope.json", "no such file"]),
    "--out is a directory": (lambda t: [_fake_checkpoint(t), "--out", t], ["--out", "is a directory"]),
}


@pytest.mark.parametrize("case", list(PREDICT_CASES))
def test_predictor_predict_bad_input(tmp_path, case) -> None:
    build, needles = PREDICT_CASES[case]
    r = run("predictor", "predict", *build(tmp_path))
    assert_one_line_error(r, *needles)


TRAIN_CASES = {
    "--out is a file": (lambda t: ["--out", (t / "f").write_text("x") and t / "f"], ["--out", "not a directory"]),
    "--data missing": (lambda t: ["--data", t / "nodata"], ["--data", "no such directory"]),
    "--backbone missing": (lambda t: ["--backbone", t / "nobb"], ["--backbone", "no such directory"]),
    "--objective bogus": (lambda t: ["--objective", "bogus"], ["--objective", "'bogus'"]),
    "--pooling bogus": (lambda t: ["--pooling", "max"], ["--pooling", "'max'"]),
    "--priors-out is a directory": (lambda t: ["--priors-out", t], ["--priors-out", "is a directory"]),
    "--table-json is a directory": (lambda t: ["--table-json", t], ["--table-json", "is a directory"]),
    "--train-subset 0": (lambda t: ["--train-subset", "0"], ["--train-subset"]),
}


@pytest.mark.parametrize("case", list(TRAIN_CASES))
def test_predictor_train_bad_input(tmp_path, case) -> None:
    build, needles = TRAIN_CASES[case]
    args = build(tmp_path)
    if "--out" not in args:
        args = [*args, "--out", tmp_path / "run"]
    r = run("predictor", "train", *args)
    assert_one_line_error(r, *needles)
    assert not (tmp_path / "run").exists()


# --------------------------------------------------------------------- core-only install

_BLOCK_FLAX = textwrap.dedent(
    """
    import sys

    class _NoFlax:
        def find_spec(self, name, path=None, target=None):
            if name == "flax" or name.startswith("flax."):
                raise ModuleNotFoundError(f"No module named {name!r}", name=name)
            return None

    sys.meta_path.insert(0, _NoFlax())
    sys.argv = ["optscale", *sys.argv[1:]]
    from optscale_jax.cli import main

    main()
    """
)


@pytest.mark.parametrize(
    "args,code,needle",
    [
        (["--help"], 0, "predictor"),
        (["replay", "--help"], 0, "POOL"),
        (["predictor", "--help"], 2, 'pip install "optscale-jax[predictor]"'),
        (["predictor", "predict", "ck"], 2, 'pip install "optscale-jax[predictor]"'),
    ],
)
def test_cli_starts_without_flax(args, code, needle) -> None:
    env = {**os.environ, "JAX_PLATFORMS": "cpu", "COLUMNS": "200"}
    p = subprocess.run([sys.executable, "-c", _BLOCK_FLAX, *args], capture_output=True, text=True,
                       timeout=120, cwd=REPO, env=env)
    out = p.stdout + p.stderr
    assert p.returncode == code, out
    assert needle in out and "Traceback" not in out
    if code == 2:
        assert len([x for x in p.stderr.splitlines() if x.strip()]) == 1
