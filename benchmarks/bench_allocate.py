"""Benchmark: one wave of the budget allocator (optscale_jax.allocate) for 10^5 questions.

Speed section: :func:`optscale_jax.allocate.allocate` (jitted; bisection on the
gain-per-token threshold) against a plain-NumPy reference of the same greedy rule (the
(Q, K) marginal gains, a stable sort of all Q*K items by gain per token, the prefix that
fits the budget), timed in the same run on the same inputs; the two allocations are
checked to agree. Target: < 50 ms per wave for 10^5 questions.

Sections are functions that add to one JSON dict; the accuracy-vs-budget evaluation
(every twin, the real 10x4 pool, bootstrap intervals, honest configuration selection)
is meant to be added as another section (``section_accuracy(results, args)``) calling
``optscale_jax.replay.replay(pool, make("OptScaleBudget", n_max=..., token_budget=B))``.

Run:  python benchmarks/bench_allocate.py [--questions 100000] [--k-max 8] [--repeats 20]
Writes benchmarks/results/bench_allocate.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path

os.environ.setdefault("JAX_PLATFORMS", "cpu")

import jax  # noqa: E402
import numpy as np  # noqa: E402

from optscale_jax.allocate import allocate  # noqa: E402


def numpy_reference(log_f, best, drawn, cost, budget, *, s_min, k_max, n_max, max_samples):
    """The greedy rule in plain NumPy: sort every item by gain per token, take the prefix."""
    q = log_f.shape[0]
    f = np.exp(log_f)
    k = np.arange(k_max)[None, :]
    gains = np.where(best[:, None] < s_min, f[:, None] ** k * (1.0 - f[:, None]), 0.0)
    cap = np.clip(n_max - drawn, 0, k_max)
    valid = (k < cap[:, None]) & (gains > 0)
    ratio = np.where(valid, gains / cost[:, None], -np.inf).ravel()
    order = np.argsort(-ratio, kind="stable")
    c = np.broadcast_to(cost[:, None], (q, k_max)).ravel()[order]
    ok = valid.ravel()[order] & (np.cumsum(c) <= budget) & (np.arange(order.size) < max_samples)
    take = np.zeros(q * k_max, bool)
    take[order[ok]] = True
    return take.reshape(q, k_max).sum(axis=1)


def section_speed(results: dict, args: argparse.Namespace) -> None:
    rng = np.random.default_rng(0)
    q, k_max = args.questions, args.k_max
    log_f = np.log(rng.uniform(0.05, 0.999, q)).astype(np.float32)
    best = rng.uniform(0.0, 1.0, q).astype(np.float32)
    drawn = rng.integers(0, 8, q)
    cost = rng.uniform(200, 2000, q).astype(np.float32)
    budget = float(cost.mean() * q * 1.5)
    wave = q
    kw = dict(s_min=0.95, k_max=k_max, n_max=64, max_samples=wave)
    out = allocate(log_f, best, drawn, cost, budget, **kw)
    out.extra.block_until_ready()  # compile
    times = []
    for _ in range(args.repeats):
        t0 = time.perf_counter()
        allocate(log_f, best, drawn, cost, budget, **kw).extra.block_until_ready()
        times.append(time.perf_counter() - t0)
    ref_times = []
    for _ in range(max(3, args.repeats // 5)):
        t0 = time.perf_counter()
        ref = numpy_reference(log_f.astype(np.float64), best, drawn, cost.astype(np.float64),
                              budget, **kw)
        ref_times.append(time.perf_counter() - t0)
    got = np.asarray(out.extra)
    agree = float((got == ref).mean())
    ms, ref_ms = 1e3 * float(np.median(times)), 1e3 * float(np.median(ref_times))
    results["speed"] = {
        "questions": q, "k_max": k_max, "wave_size": wave, "repeats": args.repeats,
        "allocate_ms_median": ms, "allocate_ms_min": 1e3 * float(np.min(times)),
        "numpy_sort_reference_ms_median": ref_ms, "speedup_vs_numpy": ref_ms / ms,
        "rows_agreeing_with_reference": agree,
        "samples_allocated": int(got.sum()), "target_ms": 50.0,
    }
    print(f"allocate, {q} questions x k_max {k_max}: {ms:.1f} ms per wave (median of "
          f"{args.repeats}; target < 50 ms); NumPy sort reference {ref_ms:.1f} ms "
          f"({ref_ms / ms:.1f}x); rows agreeing {100 * agree:.3f}%")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--questions", type=int, default=100_000)
    ap.add_argument("--k-max", type=int, default=8)
    ap.add_argument("--repeats", type=int, default=20)
    ap.add_argument("--out", type=Path,
                    default=Path(__file__).parent / "results" / "bench_allocate.json")
    args = ap.parse_args()
    results: dict = {
        "machine": {"platform": platform.platform(), "cpus": os.cpu_count(),
                    "jax": jax.__version__, "backend": jax.default_backend(),
                    "note": "shared machine: other jobs were running; figures are indicative"},
    }
    section_speed(results, args)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2))
    print(f"wrote {args.out} (the machine was shared with other jobs while this ran)")


if __name__ == "__main__":
    main()
