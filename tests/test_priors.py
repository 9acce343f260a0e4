"""Priors files: one reader and writer (``optscale_jax.io.priors``) for the CLI and the predictor."""

from __future__ import annotations

import json
import math
import re
import warnings
from pathlib import Path

import numpy as np
import official
import pytest
import typer
from scipy.optimize import minimize
from typer.testing import CliRunner

from optscale_jax.commands.options import load_prior_file
from optscale_jax.commands.replay import register
from optscale_jax.fit import fit_map
from optscale_jax.io.priors import (
    NonPositiveSigmaCentreWarning,
    PriorsFileError,
    load_prior,
    read_priors,
    write_priors,
)
from optscale_jax.model import GaussianPrior

OFFICIAL = {"MATH500": 500, "GSM8K": 1319, "AIME24": 30, "AIME25": 30, "AMC23": 40}


def _write(path: Path, obj) -> Path:
    path.write_text(json.dumps(obj))
    return path


def test_round_trip_by_id(tmp_path):
    ids = ["a", "b", "c"]
    f = write_priors(
        tmp_path / "sub" / "p.json", ids, [0.5, -0.2, 0.9], [0.1, 0.2, 0.3],
        scale_mu=[0.1, 0.2, 0.3], scale_sigma=0.05, pred_mean=[0.4, 0.5, 0.6], meta={"k": 1},
    )
    raw = json.loads(f.read_text())
    assert raw["format"] == "optscale-priors" and raw["version"] == 1
    assert raw["space"] == "truncnorm_params" and raw["meta"] == {"k": 1}
    got = read_priors(f, ["c", "a"])  # another order, a subset
    assert got.loc_mu.tolist() == [0.9, 0.5] and got.loc_sigma.tolist() == [0.3, 0.1]
    assert got.scale_mu.tolist() == [0.3, 0.1] and got.scale_sigma.tolist() == [0.05, 0.05]
    whole = read_priors(f)
    assert whole.loc_mu.tolist() == [0.5, -0.2, 0.9]
    prior = load_prior(f, ids)
    assert isinstance(prior, GaussianPrior)
    np.testing.assert_array_equal(prior.loc_sigma, [0.1, 0.2, 0.3])
    # the authors' list written as optscale-priors reads back to the same arrays
    lst = _write(tmp_path / "list.json", [[0.6, 0.12], [0.45, -0.01]])
    with pytest.warns(NonPositiveSigmaCentreWarning):
        a = read_priors(lst, ["x", "y"])
    g = write_priors(tmp_path / "conv.json", ["x", "y"], a.loc_mu, a.loc_sigma, a.scale_mu, a.scale_sigma)
    with pytest.warns(NonPositiveSigmaCentreWarning):
        b = read_priors(g, ["x", "y"])
    for u, v in zip(a, b, strict=True):
        np.testing.assert_array_equal(u, v)


@pytest.mark.data
@pytest.mark.parametrize("name", sorted(OFFICIAL))
def test_the_authors_files_are_read_as_they_are(shared_data, name):
    path = shared_data / "reference" / "official" / f"{name}_train_mu_sigma.json"
    rows = np.array(json.loads(path.read_text()), dtype=float)
    assert rows.shape == (OFFICIAL[name], 2)
    n_bad = int((rows[:, 1] <= 0).sum())
    ids = [f"q{i}" for i in range(len(rows))]
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        p = read_priors(path, ids)
    ours = [w for w in caught if issubclass(w.category, NonPositiveSigmaCentreWarning)]
    if n_bad:
        assert len(ours) == 1  # ONE warning line, saying how many
        msg = str(ours[0].message)
        assert "\n" not in msg and f": {n_bad} of {len(rows)} prior centres of sigma are <= 0" in msg
    else:
        assert not ours
    assert {"MATH500": 3, "GSM8K": 8}.get(name, 0) == n_bad
    np.testing.assert_array_equal(p.loc_mu, rows[:, 0])
    np.testing.assert_array_equal(p.loc_sigma, rows[:, 1])  # no clipping
    assert (p.scale_mu == 0.1).all() and (p.scale_sigma == 0.1).all()


@pytest.mark.data
def test_predictor_and_cli_read_the_same_arrays(shared_data, tmp_path, capsys):
    from predictor.priors import load_priors, read_official_priors

    path = shared_data / "reference" / "official" / "MATH500_train_mu_sigma.json"
    ids = [q["unique_id"] for q in json.loads((shared_data / "benchmarks" / "math500.json").read_text())]
    with pytest.warns(NonPositiveSigmaCentreWarning):
        pred = read_official_priors(path, ids)
    cli = load_prior_file(path, ids, 0.1)
    assert "warning: " in capsys.readouterr().err
    for a, b in zip(pred, cli, strict=True):
        np.testing.assert_array_equal(a, b)
    f = write_priors(tmp_path / "p.json", ids[:5], pred.loc_mu[:5], pred.loc_sigma[:5], 0.2, 0.3)
    for a, b in zip(load_priors(f, ids[4::-1]), load_prior_file(f, ids[4::-1], 0.1), strict=True):
        np.testing.assert_array_equal(a, b)


GOOD = {
    "format": "optscale-priors", "version": 1, "space": "truncnorm_params",
    "question_ids": ["a", "b"], "loc_mu": [0.5, 0.6], "scale_mu": [0.1, 0.1],
    "loc_sigma": [0.1, 0.2], "scale_sigma": [0.1, 0.1],
}


def _bad(**changes):
    d = json.loads(json.dumps(GOOD))
    for k, v in changes.items():
        if v is None:
            d.pop(k)
        else:
            d[k] = v
    return d


@pytest.mark.parametrize(
    "content,match",
    [
        ("[[0.5, 0.1],\n [0.5 0.1]]", r"line 2, column 7: invalid JSON"),
        ({"a": 1}, r"expected a list of \[mu, sigma\] pairs \(the authors' format\) or an 'optscale-priors' object, got an object with format None"),
        ("3", r"expected a list of \[mu, sigma\] pairs .* got int"),
        ([], r"the list of \[mu, sigma\] records is empty"),
        ([[0.5, 0.1], [0.5]], r"record 1: expected a \[mu, sigma\] pair, got 1 entries"),
        ([[0.5, 0.1], "x"], r"record 1: expected a \[mu, sigma\] pair, got str"),
        ([[0.5, 0.1], [0.5, "0.1"]], r"record 1: field 'sigma': expected a number, got '0.1'"),
        ([[0.5, 0.1], [True, 0.1]], r"record 1: field 'mu': expected a number, got True"),
        ("[[0.5, 0.1], [NaN, 0.1]]", r"record 1: field 'mu': nan is not finite"),
        ("[[0.5, Infinity], [0.5, 0.1]]", r"record 0: field 'sigma': inf is not finite"),
        ([[0.5, 0.1]] * 3, r"has 3 \[mu, sigma\] records, the pool has 2 questions"),
        (_bad(version=None), r"field 'version': missing"),
        (_bad(version=2), r"field 'version': version 2 is newer than this package reads \(1\)"),
        (_bad(version="1"), r"field 'version': expected a positive integer, got '1'"),
        (_bad(space="moments"), r"field 'space': unknown parameter space 'moments' \(known: truncnorm_params\)"),
        (_bad(question_ids=None), r"field 'question_ids': missing or not a list"),
        (_bad(question_ids=["a", "a"]), r"record 1: field 'question_ids': duplicate question id 'a' \(also record 0\)"),
        (_bad(question_ids=["a", None]), r"record 1: field 'question_ids': expected a string, got None"),
        (_bad(loc_sigma=None), r"field 'loc_sigma': missing or not a list"),
        (_bad(scale_mu=[0.1]), r"field 'scale_mu': has 1 entries, 'question_ids' has 2"),
        (_bad(loc_mu=[0.5, None]), r"record 1 \(question 'b'\): field 'loc_mu': expected a number, got None"),
        (_bad(loc_sigma="[0.1, NaN]"), r"field 'loc_sigma': missing or not a list"),
        (_bad(scale_sigma=[0.1, 0.0]), r"record 1 \(question 'b'\): field 'scale_sigma': 0.0 is not > 0"),
        (_bad(scale_mu=[-0.5, 0.1]), r"record 0 \(question 'a'\): field 'scale_mu': -0.5 is not > 0"),
        (_bad(question_ids=["a", "c"]), r"field 'question_ids': no prior for question 'b' \(1 of 2 pool questions missing\)"),
    ],
)
def test_every_validation_error_names_file_record_field(tmp_path, content, match):
    f = tmp_path / "priors_bad.json"
    f.write_text(content if isinstance(content, str) else json.dumps(content))
    with pytest.raises(PriorsFileError, match=r"priors_bad.json: " + match) as info:
        read_priors(f, ["a", "b"])
    assert isinstance(info.value, ValueError)
    text = str(info.value)
    assert "np.float64" not in text and "\n" not in text


def test_non_finite_values_in_columns(tmp_path):
    f = tmp_path / "p.json"
    f.write_text(json.dumps(GOOD).replace("[0.1, 0.2]", "[0.1, NaN]"))
    with pytest.raises(PriorsFileError, match=r"record 1 \(question 'b'\): field 'loc_sigma': nan is not finite"):
        read_priors(f)


def test_reader_arguments_and_positions(tmp_path):
    lst = _write(tmp_path / "l.json", [[0.1, 0.1], [0.2, 0.2], [0.3, 0.3]])
    p = read_priors(lst, ["x", "y"], positions=range(2))  # the first rows (run --limit)
    assert p.loc_mu.tolist() == [0.1, 0.2]
    with pytest.raises(PriorsFileError, match=r"l.json: has 3 \[mu, sigma\] records, position 5 was asked for"):
        read_priors(lst, positions=[0, 5])
    with pytest.raises(ValueError, match="width must be a finite number > 0"):
        read_priors(lst, width=0.0)
    assert read_priors(lst, width=0.25).scale_sigma.tolist() == [0.25] * 3
    with pytest.raises(PriorsFileError, match="cannot read the file"):
        read_priors(tmp_path / "missing.json")


def test_writer_validates(tmp_path):
    with pytest.raises(ValueError, match=r"question ids must be distinct: 'a' at 0 and 1"):
        write_priors(tmp_path / "w.json", ["a", "a"], [0.1, 0.2], [0.1, 0.1])
    with pytest.raises(ValueError, match=r"loc_mu of question 'b' is nan, not finite"):
        write_priors(tmp_path / "w.json", ["a", "b"], [0.1, math.nan], [0.1, 0.1])
    with pytest.raises(ValueError, match=r"scale_sigma must be > 0, question 'a' has 0.0"):
        write_priors(tmp_path / "w.json", ["a", "b"], [0.1, 0.2], [0.1, 0.1], 0.1, 0.0)
    with pytest.raises(ValueError, match=r"loc_sigma has shape \(3,\), expected \(2,\)"):
        write_priors(tmp_path / "w.json", ["a", "b"], [0.1, 0.2], [0.1, 0.1, 0.1])
    assert not (tmp_path / "w.json").exists()


@pytest.mark.data
@pytest.mark.parametrize("loc_sigma", [-0.0216, -0.3, 0.0, 0.05])
def test_map_with_a_non_positive_sigma_centre_equals_the_authors_posterior(shared_data, loc_sigma):
    """N(σ̄, 0.1) on σ > 0 is a proper prior for any σ̄; our MAP equals scipy on the authors' posterior."""
    o = official.load("BoN_OptScale/utils.py", "neg_log_posterior")
    rng = np.random.default_rng(int(abs(loc_sigma) * 1e4))
    for loc_mu in (0.5, 0.93):
        data = np.clip(rng.normal(0.85, 0.1, 10), 0.01, 0.99)
        ours = fit_map(data[None], GaussianPrior(loc_mu, 0.1, loc_sigma, 0.1))
        ref = minimize(
            lambda p, m=loc_mu: o.neg_log_posterior(p, data, m, loc_sigma),
            [float(np.mean(data)), float(np.std(data))],
            bounds=[(None, None), (1e-6, None)], method="L-BFGS-B",
            options={"ftol": 1e-15, "gtol": 1e-12, "maxiter": 10_000},
        )
        assert float(ours.mu[0]) == pytest.approx(ref.x[0], abs=1e-5)
        assert float(ours.sigma[0]) == pytest.approx(ref.x[1], abs=1e-5)
        # the maximum is interior (σ > 0), not at the σ bound
        assert float(ours.sigma[0]) > 1e-3


def test_gaussian_prior_accepts_non_positive_sigma_centres_and_prints_plain_numbers():
    from optscale_jax.policies import gaussian_prior

    p = gaussian_prior([0.5, 0.6], [0.1, -0.02])
    assert p.loc_sigma.tolist() == [0.1, -0.02]
    with pytest.raises(ValueError, match=r"\(mu, sigma\) = \(0.5, nan\) must be finite") as info:
        gaussian_prior([0.5, 0.5], [0.1, math.nan])
    assert "np.float64" not in str(info.value)
    with pytest.raises(ValueError, match=r"scale_sigma=0.0"):
        gaussian_prior([0.5], [0.1], 0.1, 0.0)


# ----------------------------------------------------------------------------- CLI

runner = CliRunner()


def _app() -> typer.Typer:
    app = typer.Typer()

    @app.callback()
    def main() -> None:
        """optscale (test harness)."""

    register(app)
    return app


SMALL = ["--grid", "s_min=0.9;quantile=0.1;n_max=8", "--n-boot", "0", "--no-progress"]


@pytest.mark.data
def test_cli_replay_reads_the_authors_math500_priors(shared_data, tmp_path):
    path = shared_data / "reference" / "official" / "MATH500_train_mu_sigma.json"
    res = runner.invoke(_app(), ["replay", "--policy", "OptScaleT", "--prior", str(path),
                                 "--out", str(tmp_path / "o"), *SMALL])
    assert res.exit_code == 0, res.output
    lines = [ln for ln in res.output.splitlines() if ln.startswith("warning: ")]
    assert len(lines) == 1 and "3 of 500 prior centres of sigma are <= 0" in lines[0]
    rec = json.loads((tmp_path / "o" / "results.json").read_text())
    assert "OptScaleT" in json.dumps(rec)


def test_cli_prior_errors_are_one_line_exit_2(tmp_path):
    bad = _write(tmp_path / "bad_priors.json", _bad(version=7))
    res = runner.invoke(_app(), ["replay", "--policy", "OptScaleT", "--prior", str(bad),
                                 "--out", str(tmp_path / "o"), "--synthetic", "aime24", *SMALL])
    assert res.exit_code == 2
    err = [ln for ln in res.output.splitlines() if ln.startswith("error: ")]
    assert len(err) == 1 and re.search(r"bad_priors.json: field 'version': version 7 is newer", err[0])
    assert "Traceback" not in res.output
    short = _write(tmp_path / "short.json", [[0.5, 0.1]] * 3)
    res = runner.invoke(_app(), ["replay", "--policy", "OptScaleT", "--prior", str(short),
                                 "--out", str(tmp_path / "o"), "--synthetic", "aime24", *SMALL])
    assert res.exit_code == 2 and "short.json: has 3 [mu, sigma] records, the pool has 30 questions" in res.output


def test_cli_prior_that_no_chosen_policy_reads_is_an_error(tmp_path):
    f = _write(tmp_path / "p.json", [[0.5, 0.1]] * 30)
    res = runner.invoke(_app(), ["replay", "--policy", "BoN,OptScale0", "--prior", str(f),
                                 "--out", str(tmp_path / "o"), "--synthetic", "aime24", *SMALL])
    assert res.exit_code == 2
    assert "no chosen policy reads a prior (only OptScaleT" in res.output
    assert not (tmp_path / "o").exists()


@pytest.mark.data
def test_cli_run_prior_that_the_policy_does_not_read_is_an_error(shared_data, tmp_path):
    """The live runner refuses it too, before loading any model."""
    from optscale_jax.commands.run import register as register_run

    f = _write(tmp_path / "p.json", [[0.5, 0.1]] * 30)

    app = typer.Typer()

    @app.callback()
    def main() -> None:
        """optscale (test harness)."""

    register_run(app)
    res = runner.invoke(app, ["run", "--engine", "openai", "--model", "m", "--prm", "p", "--policy", "BoN",
                              "--prior", str(f), "--out", str(tmp_path / "r"), "--dataset", "aime24"])
    assert res.exit_code == 2 and "does not read a prior (only OptScaleT" in res.output, res.output
