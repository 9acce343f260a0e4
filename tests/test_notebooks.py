"""Notebooks are documentation that runs: execute them headless.

(02_replay and 04_live are executed by tests/test_report.py and tests/test_online.py.)
"""

from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def _execute(name: str) -> str:
    nbformat = pytest.importorskip("nbformat")
    nbclient = pytest.importorskip("nbclient")
    nb = nbformat.read(REPO / "notebooks" / name, as_version=4)
    client = nbclient.NotebookClient(
        nb, timeout=600, kernel_name="python3", resources={"metadata": {"path": str(REPO / "notebooks")}}
    )
    client.execute()
    return "".join(
        str(o.get("text", "")) + str(o.get("data", {}).get("text/plain", ""))
        for c in nb.cells
        if c.cell_type == "code"
        for o in c.get("outputs", [])
    )


@pytest.mark.slow
def test_score_model_notebook_runs():
    out = _execute("01_score_model.ipynb")
    assert "BOUNDARY" in out


@pytest.mark.slow
def test_predictor_notebook_runs(shared_data):
    out = _execute("03_predictor.ipynb")
    assert "MAE" in out or "mae" in out


@pytest.mark.slow
def test_budget_notebook_runs():
    out = _execute("05_budget.ipynb")  # a synthetic twin, offline, ~20 s
    assert "replay draws the same samples: yes" in out and "BUDGET NOTEBOOK DONE" in out


@pytest.mark.slow
def test_model_checking_notebook_runs():
    out = _execute("06_model_checking.ipynb")  # a 40-question synthetic twin, offline
    assert "N* equals brute force on every question: True" in out
    assert "MODEL CHECKING NOTEBOOK DONE" in out
