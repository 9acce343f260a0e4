"""Issue 13's downstream comparison (predictor.downstream) on a tiny label-conditioned pool,
and ``optscale predictor train --downstream`` refusing to run without ``--priors-out``."""

import dataclasses
import json

import numpy as np
import pytest
from scipy import stats

from optscale_jax.model import GaussianPrior
from optscale_jax.sweep import Grid, sweep
from predictor.data import Split
from predictor.downstream import (
    OPTSCALE0,
    downstream_comparison,
    format_downstream,
    honest_comparison,
    label_conditioned_pool,
)
from predictor.priors import write_priors

GRID = Grid(s_min=(0.6, 0.8, 0.9), quantile=(0.5, 0.9), n_max=(4, 8))
Q = 12


def _split(q: int = Q) -> Split:
    rng = np.random.default_rng(3)
    mean = rng.uniform(0.3, 0.95, q)
    std = rng.uniform(0.03, 0.2, q)
    return Split(
        ids=[f"q{i}" for i in range(q)], texts=["?"] * q, subjects=["Algebra"] * q,
        levels=np.ones(q, np.int64), mean=mean, std=std,
    )


def _priors(q: int = Q) -> dict[str, GaussianPrior]:
    one = np.ones(q)
    return {
        "wide": GaussianPrior(0.8 * one, 0.5 * one, 0.1 * one, 0.2 * one),
        "narrow": GaussianPrior(0.8 * one, 0.05 * one, 0.1 * one, 0.02 * one),
    }


def test_label_conditioned_pool_carries_each_questions_label():
    val = _split()
    pool = label_conditioned_pool(val, seed=0, n_samples=16)
    assert pool.question_ids == val.ids and pool.scores.shape == (Q, 16)
    assert "synthetic" in pool.dataset
    # scores are Beta quantiles at the rank midpoints: their mean is close to the label's
    m, sd = val.mean[:, None], val.std[:, None]
    c = m * (1 - m) / sd**2 - 1
    expect = stats.beta.ppf((np.arange(16) + 0.5) / 16, m * c, (1 - m) * c)
    np.testing.assert_allclose(np.sort(pool.scores, axis=1), np.clip(expect, 0, 1), atol=1e-9)


def test_honest_comparison_picks_on_the_selection_pool_only():
    val = _split()
    sel, rep = (label_conditioned_pool(val, s, n_samples=8) for s in (0, 1))
    targets, budgets = (0.3, 0.5, 0.7), (2000, 6000, 20000)
    out = honest_comparison(sel, rep, _priors(), grid=GRID, targets=targets, budgets=budgets)
    assert list(out["results"]) == [OPTSCALE0, "wide", "narrow"]
    # reference: the selection pool's own sweep, picked by brute force
    recs = sweep(sel, grid=GRID, methods=("OptScaleT",), prior=_priors()["wide"], n_boot=0,
                 seed=0).where(method="OptScaleT")
    for t in targets:
        ok = [r for r in recs if r["accuracy"] >= t - 1e-12]
        cell = out["results"]["wide"]["tokens_at_accuracy"][f"{t:.3f}"]
        if not ok:
            assert cell is None
            continue
        assert cell["selection_tokens"] == pytest.approx(min(r["mean_tokens"] for r in ok))
    # property: scrambling the report pool's scores changes what is reported, never the pick
    rng = np.random.default_rng(9)
    noise = rng.uniform(size=rep.scores.shape)
    scrambled = dataclasses.replace(rep, scores=np.where(rep.mask, noise, 0.0))
    out2 = honest_comparison(sel, scrambled, _priors(), grid=GRID, targets=targets, budgets=budgets)
    changed = False
    for name, res in out["results"].items():
        for half in ("tokens_at_accuracy", "accuracy_at_tokens"):
            for key, cell in res[half].items():
                cell2 = out2["results"][name][half][key]
                assert (cell is None) == (cell2 is None)
                if cell is not None:
                    assert cell["config"] == cell2["config"]
                    assert cell["selection_tokens"] == cell2["selection_tokens"]
                    changed |= cell["mean_tokens"] != cell2["mean_tokens"]
    assert changed
    with pytest.raises(ValueError, match="report_seed"):
        honest_comparison(sel, rep, _priors(), select_seed=1, report_seed=1, grid=GRID)


def test_downstream_comparison_rows_and_skipped_authors_row(tmp_path):
    val = _split()
    path = tmp_path / "p.json"
    one = np.ones(Q)
    write_priors(path, val.ids, 0.8 * one, 0.1 * one, 0.3 * one, 0.05 * one,
                 meta={"global_widths": {"scale_mu": 0.5, "scale_sigma": 0.1}})
    res = downstream_comparison(path, val, data_dir=tmp_path, grid=GRID, n_samples=8)
    assert res["synthetic"] and "seed 0" in res["protocol"] and "seed 1" in res["protocol"]
    assert set(res["results"]) == {
        OPTSCALE0, "OptScaleT: per-question widths", "OptScaleT: global widths",
        "OptScaleT: population prior (widths 0.1)",
    }
    assert len(res["notes"]) == 1 and "authors' priors row skipped" in res["notes"][0]
    text = format_downstream(res)
    assert text.startswith("SYNTHETIC") and "authors' file" not in text.splitlines()[2]
    json.dumps(res)  # JSON-ready


def test_cli_downstream_needs_priors_out(tmp_path):
    from typer.testing import CliRunner

    from predictor.cli import app

    r = CliRunner().invoke(app, ["train", "--downstream", "--out", str(tmp_path / "ck")])
    assert r.exit_code == 2
    assert "--priors-out" in r.output and "Traceback" not in r.output
    assert not (tmp_path / "ck").exists()


try:  # the tiny random backbone of test_predictor (no downloads)
    from test_predictor import _synthetic_questions, tiny_dir  # noqa: F401
except pytest.skip.Exception:  # torch or transformers missing

    @pytest.fixture
    def tiny_dir():
        pytest.skip("torch and transformers are needed for the tiny backbone")


@pytest.mark.slow
def test_cli_train_downstream_writes_the_table(tiny_dir, tmp_path):
    from typer.testing import CliRunner

    from predictor.cli import app

    data = tmp_path / "data" / "predictor"
    data.mkdir(parents=True)
    for split, n, seed in (("train", 30, 0), ("val", 10, 1)):
        texts, mean, std = _synthetic_questions(n, seed)
        qs = [{"problem": t, "unique_id": f"{split}/{i}.json", "level": 1 + i % 5,
               "subject": "Algebra"} for i, t in enumerate(texts)]
        (data / f"{split}_data.json").write_text(json.dumps(qs))
        (data / f"{split}_mu_sigma.json").write_text(json.dumps(np.stack([mean, std], 1).tolist()))
    table = tmp_path / "table.json"
    r = CliRunner().invoke(app, [
        "train", "--data", str(tmp_path / "data"), "--out", str(tmp_path / "ck"),
        "--epochs", "1", "--max-length", "32", "--members", "1", "--ensemble-epochs", "5",
        "--backbone", str(tiny_dir), "--cache-dir", str(tmp_path / "cache"),
        "--priors-out", str(tmp_path / "p.json"), "--table-json", str(table), "--downstream",
    ])
    assert r.exit_code == 0, r.output
    assert "SYNTHETIC" in r.output and "authors' priors row skipped" in r.output
    down = json.loads(table.read_text())["downstream"]
    assert down["synthetic"] is True and "seed 1" in down["protocol"]
    assert {OPTSCALE0, "OptScaleT: per-question widths", "OptScaleT: global widths"} <= set(
        down["results"]
    )
