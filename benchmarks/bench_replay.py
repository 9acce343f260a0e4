"""Benchmark: the full official OptScale sweep vs a per-question, per-configuration loop.

The sweep: 8 s_min x 6 (1 - alpha) x 4 n_max x 2 variants (MLE, MAP), one-shot mode, on
a 500 x 64 pool (the synthetic twin of MATH-500; grading excluded: the pool is already
graded). ``optscale_jax.sweep.sweep`` fits each question once per peek length and reuses
the fits for every (s_min, alpha).

The reference loop does what the authors' notebooks do: for every configuration and
every question, fit (mu, sigma) with scipy L-BFGS-B on the first k scores (MLE starts
at the sample mean/std, MAP at the prior centres with prior std 0.1), scan N = 1..n_max
on a 1000-point grid for the first N whose (1 - alpha)-quantile of the best score
reaches s_min, then take the best of the max(N*, k) drawn samples. It is timed on a
subset of questions and configurations in the same run and scaled to the full sweep.

Run:  python benchmarks/bench_replay.py [--loop-questions 20] [--loop-configs 6]
Writes benchmarks/results/bench_replay.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

os.environ.setdefault("JAX_PLATFORMS", "cpu")

import jax  # noqa: E402
import numpy as np  # noqa: E402
from scipy import optimize, stats  # noqa: E402

jax.config.update("jax_enable_x64", True)

from optscale_jax.model import population_prior  # noqa: E402
from optscale_jax.policies import OptScale, official_peek  # noqa: E402
from optscale_jax.replay import replay  # noqa: E402
from optscale_jax.sweep import OFFICIAL_GRID, sweep  # noqa: E402

HERE = Path(__file__).resolve().parent


def make_pool():
    from optscale_jax.synthetic import synthetic_pool

    return synthetic_pool(dataset="math500", n_samples=64, seed=0)


# ------------------------------------------------------------- the reference loop
def _neg_log_post(theta, x, prior):
    mu, sigma = theta
    a, b = (0.0 - mu) / sigma, (1.0 - mu) / sigma
    ll = stats.truncnorm.logpdf(x, a, b, loc=mu, scale=sigma).sum()
    if prior is not None:
        lm, sm, ls, ss = prior
        ll += stats.norm.logpdf(mu, lm, sm) + stats.norm.logpdf(sigma, ls, ss)
    return -ll if np.isfinite(ll) else 1e300


def loop_fit(x, prior):
    if prior is None:
        x0 = [float(np.mean(x)), max(float(np.std(x)), 1e-2)]
    else:
        x0 = [prior[0], prior[2]]
    res = optimize.minimize(_neg_log_post, x0, args=(x, prior), method="L-BFGS-B",
                            bounds=[(-100.0, 100.0), (1e-3, 100.0)])
    return res.x


def loop_n_star(mu, sigma, s_min, quantile, n_max, grid=1000):
    a, b = (0.0 - mu) / sigma, (1.0 - mu) / sigma
    xs = np.linspace(0.0, 1.0, grid)
    cdf = stats.truncnorm.cdf(xs, a, b, loc=mu, scale=sigma)
    for n in range(1, n_max + 1):
        cdf_max = cdf**n
        idx = int(np.searchsorted(cdf_max, quantile))
        q_val = xs[min(idx, grid - 1)]
        if q_val >= s_min:
            return n
    return n_max


def loop_config(pool, rows, n_max, s_min, quantile, prior, return_drawn=False):
    """One configuration, one question at a time (the official notebooks' shape)."""
    k = official_peek(n_max)
    correct, tokens, drawn = [], [], []
    for i in rows:
        x = pool.scores[i, :k]
        p = None if prior is None else tuple(float(np.asarray(c)[i]) for c in prior)
        mu, sigma = loop_fit(x, p)
        n = max(loop_n_star(mu, sigma, s_min, quantile, n_max), k)
        drawn.append(n)
        s = pool.scores[i, :n]
        j = int(np.argmax(s))
        correct.append(bool(pool.correct[i, j]))
        tokens.append(int(pool.tokens[i, :n].sum()))
    if return_drawn:
        return drawn
    return np.mean(correct), np.mean(tokens)


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--loop-questions", type=int, default=20)
    ap.add_argument("--loop-configs", type=int, default=6, help="configurations per variant in the loop subset")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--out", type=Path, default=HERE / "results" / "bench_replay.json")
    args = ap.parse_args(argv)

    t0 = time.perf_counter()
    pool = make_pool()
    t_pool = time.perf_counter() - t0
    q = pool.n_questions
    prior = population_prior(q)
    grid = OFFICIAL_GRID
    methods = ("OptScale0", "OptScaleT")

    # Fast path: first call includes JIT compilation; later calls are warm.
    t0 = time.perf_counter()
    res = sweep(pool, grid=grid, methods=methods, prior=prior, n_boot=0)
    t_cold = time.perf_counter() - t0
    warm = []
    for _ in range(args.repeats):
        t0 = time.perf_counter()
        res = sweep(pool, grid=grid, methods=methods, prior=prior, n_boot=0)
        warm.append(time.perf_counter() - t0)
    t_warm = float(np.median(warm))
    n_configs = 2 * grid.size

    # Everything: baselines, OptScale both modes, bootstrap CIs (for orientation).
    t0 = time.perf_counter()
    full = sweep(pool, grid=grid, prior=prior, modes=("oneshot", "sequential"), n_boot=1000)
    t_full = time.perf_counter() - t0

    # Reference loop on a subset, scaled.
    rng = np.random.default_rng(0)
    rows = np.sort(rng.choice(q, size=min(args.loop_questions, q), replace=False))
    configs = [(n, s, qu) for n in grid.n_max for s in grid.s_min for qu in grid.quantile]
    pick = rng.choice(len(configs), size=min(args.loop_configs, len(configs)), replace=False)
    subset = [configs[i] for i in pick]
    t0 = time.perf_counter()
    for pr in (None, prior):  # MLE, MAP
        for n_max, s_min, qu in subset:
            loop_config(pool, rows, n_max, s_min, qu, pr)
    t_loop_subset = time.perf_counter() - t0
    per_pair = t_loop_subset / (len(rows) * len(subset) * 2)
    t_loop_full = per_pair * q * n_configs

    # Agreement per (question, configuration): samples drawn by the loop (scipy fit + grid
    # N*) vs by our OptScale policy with the official N* rule, on the same subset.
    sub = pool.subset(rows)
    sub_prior = population_prior(len(rows))
    same, pairs, worst = 0, 0, 0
    for pr_loop, pr_ours in ((None, None), (prior, sub_prior)):
        for n_max, s_min, qu in subset:
            loop_drawn = loop_config(pool, rows, n_max, s_min, qu, pr_loop, return_drawn=True)
            ours = replay(sub, OptScale(n_max, s_min, 1.0 - qu, prior=pr_ours, nstar_rule="official"), n_boot=0)
            diff = np.abs(np.asarray(loop_drawn) - ours.n_drawn)
            same += int((diff == 0).sum())
            pairs += diff.size
            worst = max(worst, int(diff.max()))

    out = {
        "pool": res.label,
        "synthetic": res.synthetic,
        "shape": [q, pool.n_max],
        "configurations": n_configs,
        "pool_build_s": t_pool,
        "sweep_cold_s": t_cold,
        "sweep_warm_s": t_warm,
        "sweep_warm_runs_s": warm,
        "sweep_timings_last": res.timings,
        "full_sweep_all_methods_both_modes_with_ci_s": t_full,
        "full_sweep_records": len(full.records),
        "loop_subset": {"questions": int(len(rows)), "configs_per_variant": len(subset), "seconds": t_loop_subset},
        "loop_seconds_per_question_config": per_pair,
        "loop_full_estimate_s": t_loop_full,
        "speedup_vs_loop_cold": t_loop_full / t_cold,
        "speedup_vs_loop_warm": t_loop_full / t_warm,
        "loop_vs_ours_same_samples_drawn": {"pairs": pairs, "identical": same, "max_abs_difference": worst},
        "targets": {"sweep_under_10s": t_cold < 10.0, "speedup_at_least_100x": t_loop_full / t_cold >= 100},
        "machine": {"python": sys.version.split()[0], "jax": jax.__version__, "platform": platform.platform(),
                    "cpus": os.cpu_count()},
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(out, indent=1))
    print(f"pool {res.label} {q}x{pool.n_max}; {n_configs} OptScale configurations (one-shot, MLE+MAP)")
    print(f"sweep: cold {t_cold:.2f} s (incl. JIT), warm {t_warm:.2f} s")
    print(f"loop: {per_pair * 1e3:.2f} ms per (question, config) -> {t_loop_full:.0f} s for the full sweep")
    print(f"speed-up: {t_loop_full / t_cold:.0f}x cold, {t_loop_full / t_warm:.0f}x warm")
    print(f"everything (all methods, both modes, 1000 bootstrap): {t_full:.2f} s, {len(full.records)} records")
    print(f"loop vs ours (official N* rule): same samples drawn for {same}/{pairs} (question, config) pairs, "
          f"max difference {worst}")
    print(f"wrote {args.out}")
    return out


if __name__ == "__main__":
    main()
