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
