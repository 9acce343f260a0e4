"""Benchmark: how wall time and peak memory grow with the pool (questions Q x samples N).

Sizes (full run): Q in {10^3, 10^4, 10^5} at N = 64, and N in {8, 64, 256, 1024} at
Q = 10^3 (``--quick``: Q in {250, 1000, 4000} and N in {8, 32, 128}). Pools are synthetic
twins of MATH-500 (``optscale_jax.synthetic.synthetic_pool``), written to Parquet first
(``optscale_jax.io.write_parquet``, row groups of 4096 questions). Operations:

* ``read``: ``read_parquet`` of the pool;
* ``fits``: ``fit_prefixes`` (MLE) at ``--fit-lengths`` (8) prefix lengths spread evenly
  over 1..N (``--fit-lengths N`` or more: every prefix, measured). Each prefix fit works
  on (Q,) running sums (n, Σx, Σx², max − min) accumulated once, so the fits of *every*
  prefix cost about N/8 times as much (``every_prefix_est_s`` in the JSON: an estimate,
  labelled so) and grow as Q·N;
* ``sweep_oneshot``: the official grid (8 s_min x 6 alpha x budgets 8..64, clipped to N)
  for OptScale0 (MLE), ``nstar_rule="closed"``, chunks of 4096 questions
  (``chunk_size``), 100 bootstrap replicates, at every size (10^5 x 64 included);
* ``sweep_sequential``: the same but sequential mode, on a REDUCED grid at every size
  (s_min {0.9, 0.97} x 1 - alpha {0.05, 0.1} x budgets {8, 64}: the official 192
  configurations cost ~200 s of CPU per 10^4 questions; the reduced grid keeps the series
  comparable across sizes; ``--sequential-grid official`` for the full one);
* ``bon_sc_prefixes``: Best-of-N and majority vote at every prefix length.

Every measurement runs in a fresh subprocess (reads the Parquet file, then runs the
operation); its peak resident memory is that child's ``ru_maxrss`` (``os.wait4``), so one
measurement does not pollute the next. Times include JAX compilation (``cold``); when the
cold run took under ``--warm-below`` (120 s) it is repeated in the same child (``warm``).
The growth exponent is the least-squares slope of log(cold time) against log(Q·N)
(cold at every size, so that the series is consistent; the fixed compile time makes the
small sizes look dear, so it under-states growth a little), separately for the Q series and
the N series; linear growth is 1. Each run also
records the child's process CPU time (``cpu_s``, all threads): on a shared machine wall
time is inflated by other jobs, CPU time much less, so exponents are printed for both.
On CPU, with a shared machine, the figures are indicative only.

Run:  python benchmarks/bench_scale.py [--quick]
Writes benchmarks/results/bench_scale[_quick].json and .png. On a busy machine the two
series can run as separate processes (``--series Q --q-sizes 100000`` and ``--series N``,
each with ``--out``), and ``--max-sequential-qn`` skips the sequential sweep above a size
(recorded as a skipped row); ``--merge A.json B.json rows.log`` then writes the table,
exponents, JSON and PNG from the rows of earlier runs (their JSON, or their printed rows).
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


#: Sequential sweep grid of the benchmark (``--sequential-grid reduced``; see the docstring).
REDUCED_GRID = {"s_min": (0.9, 0.97), "quantile": (0.05, 0.1), "n_max": (8, 64)}


def _child(op: str, path: str, warm_below: float, fit_lengths: int = 8, seq_grid: str = "reduced") -> None:
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

            n = pool.n_max
            lengths = np.unique(np.linspace(1, n, min(fit_lengths, n)).round().astype(int))
            r = fit_prefixes(pool.scores, pool.mask, lengths=lengths)
            return np.asarray(r.mu)
        if op.startswith("sweep_"):
            from optscale_jax.sweep import Grid, sweep

            mode = op.split("_", 1)[1]
            grid = "official"
            if mode == "sequential" and seq_grid == "reduced":
                grid = Grid(**REDUCED_GRID)
            return sweep(pool, grid=grid, methods=("OptScale0",), modes=(mode,), n_boot=100,
                         chunk_size=4096)
        if op == "bon_sc_prefixes":
            return prefix_best_of_n_index(pool.scores, pool.mask, pool.selectable), \
                prefix_majority_index(pool.mask, pool.answer_ids)
        raise ValueError(op)

    import warnings

    warnings.simplefilter("ignore")
    pool = read_parquet(path) if op != "read" else None
    t0, c0 = time.perf_counter(), time.process_time()
    run(pool)
    cold, cold_cpu = time.perf_counter() - t0, time.process_time() - c0
    warm = warm_cpu = None
    if cold < warm_below:
        t0, c0 = time.perf_counter(), time.process_time()
        run(pool)
        warm, warm_cpu = time.perf_counter() - t0, time.process_time() - c0
    extra = {}
    if op == "fits":
        n_fit = len(np.unique(np.linspace(1, pool.n_max, min(fit_lengths, pool.n_max)).round()))
        extra = {"prefix_lengths": n_fit,
                 "every_prefix_est_s": (warm or cold) * pool.n_max / n_fit}
    print(json.dumps({"cold_s": cold, "warm_s": warm, "cold_cpu_s": cold_cpu, "warm_cpu_s": warm_cpu,
                      **extra}))


def _measure(op: str, path: Path, warm_below: float, fit_lengths: int = 8, seq_grid: str = "reduced") -> dict:
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]))
    with tempfile.TemporaryFile("w+") as out:
        proc = subprocess.Popen([sys.executable, __file__, "--child", op, str(path), str(warm_below),
                                 str(fit_lengths), seq_grid],
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
            axes[0, col].loglog(x, [p[1]["cold_s"] for p in pts], "o-", label=op)
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


def _load_rows(paths: list[str]) -> list[dict]:
    """Rows from earlier runs: result JSON files, or logs with one JSON row a line."""
    rows: list[dict] = []
    for path in paths:
        text = Path(path).read_text()
        try:
            rows += json.loads(text)["rows"]
            continue
        except (json.JSONDecodeError, KeyError, TypeError):
            pass
        for line in text.splitlines():
            if line.startswith("{") and '"op"' in line:
                rows.append(json.loads(line))
    seen: dict[tuple, dict] = {}
    for r in rows:  # the later measurement of a (series, op, Q, N) wins
        seen[(r["series"], r["op"], r["Q"], r["N"])] = r
    return list(seen.values())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="smaller sizes (a few minutes)")
    ap.add_argument("--ops", default=",".join(OPS), help="comma-separated subset of " + ",".join(OPS))
    ap.add_argument("--warm-below", type=float, default=120.0, help="repeat a run that took less (s)")
    ap.add_argument("--fit-lengths", type=int, default=8, help="prefix lengths of the fits op")
    ap.add_argument("--sequential-grid", choices=("reduced", "official"), default="reduced",
                    help="grid of the sequential sweep (default reduced: see the docstring)")
    ap.add_argument("--out", default=None, help="JSON path (default benchmarks/results/bench_scale*.json)")
    ap.add_argument("--series", choices=("Q", "N", "both"), default="both")
    ap.add_argument("--q-sizes", default=None, help="comma-separated Q values of the Q series")
    ap.add_argument("--n-sizes", default=None, help="comma-separated N values of the N series")
    ap.add_argument("--max-sequential-qn", type=float, default=None,
                    help="skip sweep_sequential when Q*N exceeds this (recorded as skipped)")
    ap.add_argument("--note", default="", help="free text stored in the JSON (how the rows were measured)")
    ap.add_argument("--merge", nargs="+", default=None,
                    help="no measuring: table, exponents, JSON and PNG from these runs' rows")
    args = ap.parse_args()
    sizes = dict(QUICK if args.quick else FULL)
    if args.q_sizes:
        sizes["q"] = [int(x) for x in args.q_sizes.split(",")]
    if args.n_sizes:
        sizes["n"] = [int(x) for x in args.n_sizes.split(",")]
    ops = [o for o in args.ops.split(",") if o]
    name = "bench_scale_quick" if args.quick else "bench_scale"
    out = Path(args.out) if args.out else ROOT / "benchmarks" / "results" / f"{name}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    os.environ.setdefault("JAX_PLATFORMS", "cpu")
    from optscale_jax.io import write_parquet
    from optscale_jax.synthetic import synthetic_pool

    plan = ([("Q", q, sizes["q_n"]) for q in sizes["q"]] if args.series != "N" else []) + \
        ([("N", sizes["n_q"], n) for n in sizes["n"]] if args.series != "Q" else [])
    rows: list[dict] = _load_rows(args.merge) if args.merge else []
    if args.merge:
        plan = []
        ops = [o for o in OPS if any(r["op"] == o for r in rows)]
        sizes["q"] = sorted({r["Q"] for r in rows if r["series"] == "Q"})
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
                if op == "sweep_sequential" and args.max_sequential_qn and q * n > args.max_sequential_qn:
                    r = {"series": series, "op": op, "Q": q, "N": n, "skipped": True,
                         "error": f"skipped: Q*N > --max-sequential-qn {args.max_sequential_qn:g}"}
                    rows.append(r)
                    print(json.dumps(r), flush=True)
                    continue
                r = {"series": series, "op": op, "Q": q, "N": n,
                     **_measure(op, files[(q, n)], args.warm_below, args.fit_lengths,
                                args.sequential_grid)}
                rows.append(r)
                print(json.dumps(r), flush=True)
    exponents = {}
    for series in ("Q", "N"):
        for op in ops:
            pts = [r for r in rows if r["series"] == series and r["op"] == op and "error" not in r]
            t = [r["cold_s"] for r in pts]  # cold everywhere: the large sizes have no warm run
            cpu = [r.get("cold_cpu_s") for r in pts]
            exponents[f"{series}:{op}"] = {
                "time": _slope([r["Q"] * r["N"] for r in pts], t),
                "cpu": _slope([r["Q"] * r["N"] for r in pts], cpu),
                "peak_rss": _slope([r["Q"] * r["N"] for r in pts], [r["peak_rss_mib"] for r in pts]),
            }
    # Marginal cost: the CPU seconds a further Q*N costs between the two largest sizes of a
    # series, against the warm CPU per Q*N at the smallest size. Equal = linear growth once
    # the fixed compile time is paid (the cold exponents above under-state growth).
    marginal = {}
    for series in ("Q", "N"):
        for op in ops:
            pts = sorted((r for r in rows if r["series"] == series and r["op"] == op and "error" not in r),
                         key=lambda r: r["Q"] * r["N"])
            if len(pts) < 3 or not pts[0].get("warm_cpu_s"):
                continue
            a, b = pts[-2], pts[-1]
            d_qn = b["Q"] * b["N"] - a["Q"] * a["N"]
            marginal[f"{series}:{op}"] = {
                "marginal_cpu_us_per_qn": 1e6 * (b["cold_cpu_s"] - a["cold_cpu_s"]) / d_qn,
                "warm_cpu_us_per_qn_smallest": 1e6 * pts[0]["warm_cpu_s"] / (pts[0]["Q"] * pts[0]["N"]),
            }
    print("\nGrowth exponents (slope of log y vs log Q*N, cold runs; 1 = linear). SYNTHETIC pools, "
          "shared CPU:")
    print(f"{'series:op':28s} {'wall':>6s} {'cpu':>6s} {'peak RSS':>9s}")
    for key, v in exponents.items():
        fmt = lambda x: "   n/a" if x is None else f"{x:6.2f}"  # noqa: E731
        print(f"{key:28s} {fmt(v['time'])} {fmt(v['cpu'])} {fmt(v['peak_rss']):>9s}")
    print(f"\n{'op':18s} {'Q':>7s} {'N':>5s} {'cold s':>8s} {'warm s':>8s} {'cpu s':>8s} {'RSS MiB':>8s}")
    for r in rows:
        f = lambda x: "     n/a" if x is None else f"{x:8.2f}"  # noqa: E731
        if "peak_rss_mib" not in r:
            print(f"{r['op']:18s} {r['Q']:7d} {r['N']:5d} {r.get('error', '')}")
            continue
        print(f"{r['op']:18s} {r['Q']:7d} {r['N']:5d} {f(r.get('cold_s'))} {f(r.get('warm_s'))} "
              f"{f(r.get('warm_cpu_s') or r.get('cold_cpu_s'))} {r['peak_rss_mib']:8.0f}")
    if "sweep_sequential" in ops and args.sequential_grid == "reduced":
        print("sweep_sequential: REDUCED grid (2 s_min x 2 alpha x n_max {8, 64}); sweep_oneshot: official grid")
    print("\nMarginal CPU per Q*N (us) between the two largest sizes vs warm at the smallest:")
    for key, v in marginal.items():
        print(f"{key:28s} {v['marginal_cpu_us_per_qn']:9.3f} {v['warm_cpu_us_per_qn_smallest']:9.3f}")
    big = [r for r in rows if r["op"].startswith("sweep_") and r["Q"] == max(sizes["q"])]
    for r in big:
        print(f"official sweep ({r['op']}) {r['Q']} x {r['N']}: {r.get('cold_s', float('nan')):.1f} s, "
              f"peak RSS {r.get('peak_rss_mib', float('nan')):.0f} MiB{'  ' + r['error'] if 'error' in r else ''}")
    result = {
        "benchmark": "bench_scale",
        "quick": args.quick,
        "synthetic": True,
        "note": "synthetic twins of MATH-500; CPU; machine shared with other jobs while measured "
                "(wall times inflated; cpu_s is the child's process CPU time)",
        "sequential_grid": REDUCED_GRID if args.sequential_grid == "reduced" else "official",
        "fits": f"{args.fit_lengths} prefix lengths spread over 1..N; every_prefix_est_s = time x N / lengths",
        "machine": {"platform": platform.platform(), "cpus": os.cpu_count(), "python": sys.version.split()[0]},
        "sizes": sizes,
        "rows": rows,
        "exponents": exponents,
        "exponents_note": "slopes of cold runs (compile included: under-states growth); see marginal",
        "marginal": marginal,
        "how_measured": args.note,
        "total_s": time.perf_counter() - t_start,
    }
    out.write_text(json.dumps(result, indent=1))
    png = out.with_suffix(".png")
    _plot(rows, png, f"bench_scale{' --quick' if args.quick else ''}: synthetic pools, CPU ({os.cpu_count()} "
          "cores, shared)")
    print(f"wrote {out} and {png}")


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        _child(sys.argv[2], sys.argv[3], float(sys.argv[4]), int(sys.argv[5]), sys.argv[6])
    else:
        main()
