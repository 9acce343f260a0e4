"""Benchmark: how wall time and peak memory grow with the pool (questions Q x samples N).

Sizes (full run): Q in {10^3, 10^4, 10^5} at N = 64, and N in {8, 64, 256, 1024} at
Q = 10^3 (``--quick``: Q in {250, 1000, 4000} and N in {8, 32, 128}). Pools are synthetic
twins of MATH-500 (``optscale_jax.synthetic.synthetic_pool``), written to Parquet first
(``optscale_jax.io.write_parquet``, row groups of 4096 questions). Operations:

* ``read``: ``read_parquet`` of the pool;
* ``fits``: ``fit_prefixes`` (MLE) of every prefix length 1..N;
* ``sweep_oneshot`` / ``sweep_sequential``: the official grid (8 s_min x 6 alpha x budgets
  8..64, clipped to N) for OptScale0 (MLE), ``nstar_rule="closed"``, chunks of 4096
  questions (``chunk_size``), 100 bootstrap replicates;
* ``bon_sc_prefixes``: Best-of-N and majority vote at every prefix length.

Every measurement runs in a fresh subprocess (reads the Parquet file, then runs the
operation); its peak resident memory is that child's ``ru_maxrss`` (``os.wait4``), so one
measurement does not pollute the next. Times include JAX compilation (``cold``); when the
cold run took under 20 s it is repeated in the same child (``warm``). The growth
exponent is the least-squares slope of log(time) against log(Q·N) (warm time where there
is one), separately for the Q series and the N series; linear growth is 1. On CPU, with
a shared machine, the figures are indicative only.

Run:  python benchmarks/bench_scale.py [--quick]
Writes benchmarks/results/bench_scale[_quick].json and .png.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
OPS = ("read", "fits", "sweep_oneshot", "sweep_sequential", "bon_sc_prefixes")
FULL = {"q": [1000, 10_000, 100_000], "q_n": 64, "n": [8, 64, 256, 1024], "n_q": 1000}
QUICK = {"q": [250, 1000, 4000], "q_n": 64, "n": [8, 32, 128], "n_q": 250}


def _child(op: str, path: str, warm_below: float) -> None:
    """Run one measurement in this process and print its JSON on the last line."""
    os.environ.setdefault("JAX_PLATFORMS", "cpu")
    import jax

    jax.config.update("jax_enable_x64", True)
    import numpy as np

    from optscale_jax.io import read_parquet
    from optscale_jax.selection import prefix_best_of_n_index, prefix_majority_index

    def run(pool):
        if op == "read":
            return read_parquet(path)
        if op == "fits":
            from optscale_jax.fit import fit_prefixes

            r = fit_prefixes(pool.scores, pool.mask)
            return np.asarray(r.mu)
        if op.startswith("sweep_"):
            from optscale_jax.sweep import sweep

            mode = op.split("_", 1)[1]
            return sweep(pool, grid="official", methods=("OptScale0",), modes=(mode,), n_boot=100,
                         chunk_size=4096)
        if op == "bon_sc_prefixes":
            return prefix_best_of_n_index(pool.scores, pool.mask, pool.selectable), \
                prefix_majority_index(pool.mask, pool.answer_ids)
        raise ValueError(op)

    import warnings

    warnings.simplefilter("ignore")
    pool = read_parquet(path) if op != "read" else None
    t0 = time.perf_counter()
    run(pool)
    cold = time.perf_counter() - t0
    warm = None
    if cold < warm_below:
        t0 = time.perf_counter()
        run(pool)
        warm = time.perf_counter() - t0
    print(json.dumps({"cold_s": cold, "warm_s": warm}))


def _measure(op: str, path: Path, warm_below: float) -> dict:
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]))
    with tempfile.TemporaryFile("w+") as out:
        proc = subprocess.Popen([sys.executable, __file__, "--child", op, str(path), str(warm_below)],
                                stdout=out, stderr=subprocess.DEVNULL, env=env)
        _, status, usage = os.wait4(proc.pid, 0)
        proc.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0)
        text = out.read()
    if proc.returncode != 0:
        return {"error": f"exit {proc.returncode}", "peak_rss_mib": usage.ru_maxrss / 1024}
    res = json.loads(text.strip().splitlines()[-1])
    res["peak_rss_mib"] = usage.ru_maxrss / 1024  # Linux: kilobytes
    return res


def _slope(xs: list[float], ys: list[float]) -> float | None:
    import numpy as np

    pts = [(x, y) for x, y in zip(xs, ys, strict=True) if y and y > 0]
    if len(pts) < 2:
        return None
    lx, ly = np.log([p[0] for p in pts]), np.log([p[1] for p in pts])
    return float(np.polyfit(lx, ly, 1)[0])


def _plot(rows: list[dict], path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(2, 2, figsize=(11, 8))
    for col, series in enumerate(("Q", "N")):
        for op in OPS:
            pts = sorted((r["Q"] * r["N"], r) for r in rows if r["series"] == series and r["op"] == op
                         and "error" not in r)
            if not pts:
                continue
            x = [p[0] for p in pts]
            axes[0, col].loglog(x, [p[1]["warm_s"] or p[1]["cold_s"] for p in pts], "o-", label=op)
            axes[1, col].loglog(x, [p[1]["peak_rss_mib"] for p in pts], "o-", label=op)
        axes[0, col].set_title(f"{series} series: time (s)")
        axes[1, col].set_title(f"{series} series: peak RSS (MiB)")
        for r in (0, 1):
            axes[r, col].set_xlabel("Q x N")
            axes[r, col].grid(True, which="both", alpha=0.3)
    axes[0, 0].legend(fontsize=8)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="smaller sizes (a few minutes)")
    ap.add_argument("--ops", default=",".join(OPS), help="comma-separated subset of " + ",".join(OPS))
    ap.add_argument("--warm-below", type=float, default=20.0, help="repeat a run that took less (s)")
    ap.add_argument("--out", default=None, help="JSON path (default benchmarks/results/bench_scale*.json)")
    args = ap.parse_args()
    sizes = QUICK if args.quick else FULL
    ops = [o for o in args.ops.split(",") if o]
    name = "bench_scale_quick" if args.quick else "bench_scale"
    out = Path(args.out) if args.out else ROOT / "benchmarks" / "results" / f"{name}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    os.environ.setdefault("JAX_PLATFORMS", "cpu")
    from optscale_jax.io import write_parquet
    from optscale_jax.synthetic import synthetic_pool

    plan = [("Q", q, sizes["q_n"]) for q in sizes["q"]] + [("N", sizes["n_q"], n) for n in sizes["n"]]
    rows: list[dict] = []
    t_start = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        files: dict[tuple[int, int], Path] = {}
        for series, q, n in plan:
            if (q, n) not in files:
                t0 = time.perf_counter()
                pool = synthetic_pool("math500", n_samples=n, seed=0, n_questions=q)
                files[(q, n)] = write_parquet(pool, Path(tmp) / f"pool_{q}x{n}.parquet")
                del pool
                print(f"# wrote synthetic {q} x {n} pool in {time.perf_counter() - t0:.1f} s", flush=True)
            for op in ops:
                r = {"series": series, "op": op, "Q": q, "N": n,
                     **_measure(op, files[(q, n)], args.warm_below)}
                rows.append(r)
                print(json.dumps(r), flush=True)
    exponents = {}
    for series in ("Q", "N"):
        for op in ops:
            pts = [r for r in rows if r["series"] == series and r["op"] == op and "error" not in r]
            t = [r["warm_s"] or r["cold_s"] for r in pts]
            exponents[f"{series}:{op}"] = {
                "time": _slope([r["Q"] * r["N"] for r in pts], t),
                "peak_rss": _slope([r["Q"] * r["N"] for r in pts], [r["peak_rss_mib"] for r in pts]),
            }
    print("\nGrowth exponents (slope of log y vs log Q*N; 1 = linear). SYNTHETIC pools, shared CPU:")
    print(f"{'series:op':28s} {'time':>6s} {'peak RSS':>9s}")
    for key, v in exponents.items():
        fmt = lambda x: "   n/a" if x is None else f"{x:6.2f}"  # noqa: E731
        print(f"{key:28s} {fmt(v['time'])} {fmt(v['peak_rss']):>9s}")
    big = [r for r in rows if r["op"].startswith("sweep_") and r["Q"] == max(sizes["q"])]
    for r in big:
        print(f"official sweep ({r['op']}) {r['Q']} x {r['N']}: {r.get('cold_s', float('nan')):.1f} s, "
              f"peak RSS {r['peak_rss_mib']:.0f} MiB{'  ' + r['error'] if 'error' in r else ''}")
    result = {
        "benchmark": "bench_scale",
        "quick": args.quick,
        "synthetic": True,
        "note": "synthetic twins of MATH-500; CPU; machine shared with other jobs while measured",
        "machine": {"platform": platform.platform(), "cpus": os.cpu_count(), "python": sys.version.split()[0]},
        "sizes": sizes,
        "rows": rows,
        "exponents": exponents,
        "total_s": time.perf_counter() - t_start,
    }
    out.write_text(json.dumps(result, indent=1))
    png = out.with_suffix(".png")
    _plot(rows, png, f"bench_scale{' --quick' if args.quick else ''}: synthetic pools, CPU ({os.cpu_count()} "
          "cores, shared)")
    print(f"wrote {out} and {png}")


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        _child(sys.argv[2], sys.argv[3], float(sys.argv[4]))
    else:
        main()
