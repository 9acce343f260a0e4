"""Regressions found in the release review (engineer R): start-up cost and silent results."""

from __future__ import annotations

import subprocess
import sys


def test_replay_sweep_report_import_without_jax():
    # `optscale report` and the replay/sweep modules load no JAX until a policy runs: the
    # chunking helper `slice_rows` lives in `sharding`, which imports JAX at module level.
    code = ("import sys, optscale_jax.replay, optscale_jax.sweep, optscale_jax.report; "
            "print(sorted(m for m in ('jax', 'numpyro') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_allocate_refuses_nan_log_cdf():
    # A NaN fit used to give NaN gains, so that question silently got no sample at all.
    import numpy as np
    import pytest

    from optscale_jax.allocate import Calibration, allocate, allocate_expected_accuracy

    with pytest.raises(ValueError, match="log_cdf is NaN for question 1"):
        allocate(np.log([0.5, np.nan, 0.5]), [0.2, 0.3, 0.2], [1, 1, 1], 100.0, 1e3,
                 s_min=0.95, k_max=4)
    draws = np.log([[0.5, 0.5], [0.5, np.nan]])  # (S, Q): one bad posterior draw
    with pytest.raises(ValueError, match="question 1"):
        allocate(draws, [0.2, 0.3], [1, 1], 100.0, 1e3, s_min=0.95, k_max=4)
    cal = Calibration(thresholds=np.array([0.5, 0.9]), values=np.array([0.1, 0.5, 0.9]))
    with pytest.raises(ValueError, match="log_cdf_at is NaN for question 0"):
        allocate_expected_accuracy(np.array([[np.nan, -0.1], [-1.0, -0.1]]), [0.2, 0.3], [1, 1],
                                   100.0, 1e3, calibration=cal, k_max=4)
    ok = allocate(np.log([0.5, 0.8]), [0.2, 0.3], [1, 1], 100.0, 1e3, s_min=0.95, k_max=4)
    assert ok.extra.tolist() == [4, 4]  # budget for all 8 items
