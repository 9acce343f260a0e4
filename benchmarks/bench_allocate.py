"""Benchmark: one wave of the budget allocator (optscale_jax.allocate) for 10^5 questions.

Speed section: :func:`optscale_jax.allocate.allocate` (jitted; bisection on the
gain-per-token threshold) against a plain-NumPy reference of the same greedy rule (the
(Q, K) marginal gains, a stable sort of all Q*K items by gain per token, the prefix that
fits the budget), timed in the same run on the same inputs; the two allocations are
checked to agree. Target: < 50 ms per wave for 10^5 questions.

Accuracy section (``section_accuracy``): accuracy against the total token budget on
every synthetic twin and on the real 10x4 pool, for OptScaleBudget, UniformEliminate,
OptScale⁰ and OptScaleᵗ (one-shot and sequential), ASC, ESC, DSC and Best-of-N.

* Budgets are levels ``L`` in samples per question: ``B = L * m̄ * Q`` tokens for the pool,
  ``m̄`` its mean tokens per sample.
* Honest selection: every configuration is chosen on the *selection* seed of a twin and
  reported on the *report* seed (another draw of the same twin). Budget methods: at each
  level the (s_min, wave size b) with the highest accuracy on the selection seed (ties:
  fewer tokens). Per-question methods (their own grids: BoN's N, ESC/ASC/DSC's n_max,
  OptScale's (s_min, α, n_max)): at each level, the configuration read off the method's
  selection-seed Pareto frontier at that budget, i.e. the most accurate one paying at
  most ``L * m̄`` tokens per question (no interpolation); that configuration's accuracy
  and tokens on the report seed are what is shown. The real pool (10 questions, no
  second seed) uses the configurations chosen on the MATH-500 twin's selection seed.
* Bootstrap 95% intervals over questions (``optscale_jax.replay.bootstrap_ci``).
* A PNG with one curve per method per pool (report seed), JSON with every row.

Run:  python benchmarks/bench_allocate.py [--quick] [--skip-speed] [--skip-accuracy]
      [--questions 100000] [--k-max 8] [--repeats 20]
Writes benchmarks/results/bench_allocate.json (``--quick``: bench_allocate_quick.json)
and bench_allocate_accuracy.png (``--quick``: bench_allocate_quick.png).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
import warnings
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


# --------------------------------------------------------------------- accuracy vs budget
#: Per-question methods compared at matched tokens, with the sweep modes they run in.
CURVE_METHODS = ("BoN", "ESC", "ASC", "DSC", "OptScale0", "OptScaleT")
BUDGET_METHODS = ("OptScaleBudget", "UniformEliminate")
_CONFIG_KEYS = ("method", "variant", "mode", "n_max", "N", "k", "s_min", "quantile")


def curve_name(rec: dict) -> str:
    """The curve a sweep record belongs to (OptScale's modes are separate curves)."""
    return rec["method"] + (" seq." if rec.get("mode") == "sequential" else "")


def config_key(rec: dict) -> tuple:
    """What identifies a configuration across two sweeps of the same grid."""
    return tuple(rec.get(k) for k in _CONFIG_KEYS)


def pick_at_budget(records: list[dict], budget_per_q: float) -> dict | None:
    """The most accurate record paying at most ``budget_per_q`` tokens (ties: fewer tokens).

    This is the record of the Pareto frontier of ``records`` read at that budget.
    """
    ok = [r for r in records if r["mean_tokens"] <= budget_per_q]
    return max(ok, key=lambda r: (r["accuracy"], -r["mean_tokens"])) if ok else None


def matched_curves(select: list[dict], report: list[dict], select_budgets: list[float]
                   ) -> dict[str, list[tuple[dict | None, dict | None]]]:
    """Per curve and budget: the configuration chosen on ``select``, and it on ``report``.

    Returns:
        ``{curve: [(chosen select record, the same configuration's report record), ...]}``,
        one pair per budget (``(None, None)`` where no configuration fits the budget).
    """
    by_key = {config_key(r): r for r in report}
    out: dict[str, list] = {}
    for name in dict.fromkeys(curve_name(r) for r in select):
        recs = [r for r in select if curve_name(r) == name]
        pairs = []
        for b in select_budgets:
            chosen = pick_at_budget(recs, b)
            pairs.append((chosen, None if chosen is None else by_key.get(config_key(chosen))))
        out[name] = pairs
    return out


def _budget_run(pool, name: str, budget_per_q: float, s_min: float, wave: int, n_boot: int,
                seed: int) -> dict:
    from optscale_jax.policies import make
    from optscale_jax.replay import bootstrap_ci, replay

    width = int(pool.n_samples.max())
    pol = make(name, n_max=width, s_min=s_min, token_budget=budget_per_q * pool.n_questions,
               wave_size=wave, n_questions=pool.n_questions)
    res = replay(pool, pol, n_boot=0)
    lo, hi = bootstrap_ci(res.correct, n_boot=n_boot, seed=seed)
    return {"method": name, "s_min": s_min, "wave_size": wave, "accuracy": float(res.accuracy),
            "accuracy_ci": [float(lo), float(hi)], "mean_tokens": float(res.mean_tokens),
            "mean_samples": float(res.mean_samples),
            "budget_per_q": float(budget_per_q)}


def _pools(args: argparse.Namespace, quick: bool):
    """``[(name, select pool, report pool or None, real pool or None)]``."""
    from optscale_jax.synthetic import DATASETS, synthetic_pool

    n_q = 120 if quick else None
    out = []
    for ds in DATASETS:
        sel = synthetic_pool(ds, 32, args.select_seed, n_questions=n_q)
        rep = synthetic_pool(ds, 32, args.report_seed, n_questions=n_q)
        out.append((f"{ds} (synthetic)", sel, rep))
    return out


def _real_pool(args: argparse.Namespace):
    from optscale_jax.grading import grade_pool
    from optscale_jax.io import read_pool, shared_data_dir

    try:
        data = args.data if args.data is not None else shared_data_dir()
    except FileNotFoundError:
        return None
    path = Path(data) / "pools" / "search_and_learn_llama32_3b_math500_10x4.jsonl"
    if not path.is_file():
        return None
    return grade_pool(read_pool(path)), str(path)


def section_accuracy(results: dict, args: argparse.Namespace) -> None:
    """Accuracy at matched total tokens, every method, every twin and the real 10x4 pool."""
    from optscale_jax.sweep import OFFICIAL_GRID, Grid, sweep

    quick = bool(args.quick)
    levels = [1.5, 3.0, 6.0] if quick else [1.25, 1.5, 2.0, 3.0, 4.0, 6.0, 8.0, 16.0]
    s_mins = (0.95, 0.98) if quick else (0.9, 0.95, 0.98)
    wave_fracs = (1.0,) if quick else (0.25, 1.0)
    grid = Grid(s_min=OFFICIAL_GRID.s_min if not quick else (0.9, 0.95, 0.98),
                quantile=OFFICIAL_GRID.quantile if not quick else (0.05, 0.1),
                n_max=(2, 4, 8, 16, 32))
    modes = ("oneshot", "sequential")
    t_start = time.perf_counter()
    section: dict = {
        "protocol": (
            f"configurations chosen on selection seed {args.select_seed}, reported on seed "
            f"{args.report_seed} of each synthetic twin; the real 10x4 pool uses the "
            "configurations chosen on the MATH-500 twin's selection seed (cut to the pool's 4 "
            "samples per question, levels up to 4). Budgets are levels in "
            "samples per question (B = level x mean tokens per sample x questions). Budget "
            "methods: (s_min, wave size b) with the best selection-seed accuracy at each level. "
            "Per-question methods: the configuration on their selection-seed Pareto frontier "
            "at each budget (most accurate with tokens/q <= budget; no interpolation), "
            "reported with its report-seed accuracy and tokens. 95% bootstrap intervals over "
            "questions."),
        "select_seed": args.select_seed, "report_seed": args.report_seed, "quick": quick,
        "levels_samples_per_question": levels, "budget_grid": {"s_min": list(s_mins),
                                                               "wave_fraction_of_Q": list(wave_fracs)},
        "sweep_grid": {"s_min": list(grid.s_min), "quantile": list(grid.quantile),
                       "n_max": list(grid.n_max), "modes": list(modes)},
        "pools": {},
    }
    print("\n" + section["protocol"])
    pools = _pools(args, quick)
    real = _real_pool(args)
    all_levels = levels
    if real:  # selected on the MATH-500 twin cut to the real pool's samples per question
        width = int(real[0].n_samples.max())
        pools.append(("real 10x4 (search-and-learn Llama-3.2-3B, MATH-500)",
                      pools[0][1].truncate(width), real[0]))
    for name, sel, rep in pools:
        is_real = real is not None and rep is real[0]
        t0 = time.perf_counter()
        m_sel = float(sel.tokens[sel.mask].mean())
        m_rep = float(rep.tokens[rep.mask].mean())
        width = int(min(sel.n_samples.max(), rep.n_samples.max()))
        levels = [lv for lv in all_levels if lv <= width]
        g = Grid(s_min=grid.s_min, quantile=grid.quantile,
                 n_max=tuple(n for n in grid.n_max if n <= width))
        sweeps = {}
        for tag, pool in (("select", sel), ("report", rep)):
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                sweeps[tag] = sweep(pool, grid=g, methods=CURVE_METHODS, modes=modes,
                                    n_boot=args.n_boot, seed=args.report_seed).records
        curves = matched_curves(sweeps["select"], sweeps["report"], [lv * m_sel for lv in levels])
        rows: dict[str, list] = {}
        for curve, pairs in curves.items():
            rows[curve] = []
            for lv, (chosen, got) in zip(levels, pairs, strict=True):
                if got is None:
                    rows[curve].append(None)
                    continue
                rows[curve].append({
                    "level": lv, "budget_per_q": lv * m_rep, "accuracy": got["accuracy"],
                    "accuracy_ci": got.get("accuracy_ci"), "mean_tokens": got["mean_tokens"],
                    "mean_samples": got["mean_samples"],
                    "config": {k: chosen.get(k) for k in ("N", "n_max", "s_min", "quantile")
                               if chosen.get(k) is not None},
                    "select_accuracy": chosen["accuracy"]})
        # budget methods: choose (s_min, b) per level on the selection pool
        for bm in BUDGET_METHODS:
            rows[bm] = []
            for lv in levels:
                cands = [_budget_run(sel, bm, lv * m_sel, s, max(1, int(round(f * sel.n_questions))),
                                     0, 0) | {"wave_fraction": f}
                         for s in s_mins for f in wave_fracs]
                cfg = max(cands, key=lambda r: (r["accuracy"], -r["mean_tokens"]))
                wave = max(1, int(round(cfg["wave_fraction"] * rep.n_questions)))
                got = _budget_run(rep, bm, lv * m_rep, cfg["s_min"], wave, args.n_boot, args.report_seed)
                got.update({"level": lv, "select_accuracy": cfg["accuracy"],
                            "config": {"s_min": cfg["s_min"], "wave_fraction": cfg["wave_fraction"]}})
                rows[bm].append(got)
        # the intervals are marginal (per method); the winner per level on the report seed:
        winners = []
        for i, lv in enumerate(levels):
            cells = {c: r[i] for c, r in rows.items() if r[i] is not None}
            best = max(cells.values(), key=lambda r: r["accuracy"])["accuracy"]
            winners.append({"level": lv, "best_accuracy": best,
                            "best": sorted(c for c, r in cells.items() if r["accuracy"] == best)})
        section["pools"][name] = {
            "synthetic": bool(rep.synthetic), "questions": int(rep.n_questions),
            "samples_per_question": int(rep.n_samples.max()), "levels": levels,
            "mean_tokens_per_sample": {"select": m_sel, "report": m_rep},
            "select": f"MATH-500 twin cut to {width} samples, seed {args.select_seed}" if is_real else
                      f"seed {args.select_seed}",
            "report": real[1] if is_real else f"seed {args.report_seed}",
            "rows": rows, "winners": winners, "seconds": time.perf_counter() - t0,
        }
        _print_pool_table(name, section["pools"][name], levels)
    section["seconds"] = time.perf_counter() - t_start
    results["accuracy"] = section
    png = args.out.with_name(("bench_allocate_quick" if quick else "bench_allocate_accuracy") + ".png")
    _plot(section, png)
    results["accuracy"]["png"] = png.name
    print(f"wrote {png}")


def _print_pool_table(name: str, pool: dict, levels: list[float]) -> None:
    print(f"\n{name}: {pool['questions']} questions x {pool['samples_per_question']} samples; "
          f"selection {pool['select']}, report {pool['report']}"
          + (" [SYNTHETIC]" if pool["synthetic"] else " [REAL]"))
    head = "| method | " + " | ".join(f"{lv:g} samples/q" for lv in levels) + " |"
    print(head)
    print("|---|" + "---:|" * len(levels))
    for curve, cells in pool["rows"].items():
        out = []
        for c in cells:
            if c is None:
                out.append("—")
                continue
            lo, hi = c["accuracy_ci"] or (float("nan"), float("nan"))
            out.append(f"{100 * c['accuracy']:.1f} [{100 * lo:.1f}, {100 * hi:.1f}] "
                       f"({c['mean_tokens'] / pool['mean_tokens_per_sample']['report']:.2f})")
        print(f"| {curve} | " + " | ".join(out) + " |")
    print("(cells: report accuracy % [95% CI] (tokens/q actually paid, in samples of mean length))")


def _plot(section: dict, path: Path) -> None:
    from matplotlib.figure import Figure

    names = list(section["pools"])
    cols = 3
    rows = (len(names) + cols - 1) // cols
    fig = Figure(figsize=(5.2 * cols, 4.0 * rows))
    axes = fig.subplots(rows, cols, squeeze=False).ravel()
    for ax, name in zip(axes, names, strict=False):
        pool = section["pools"][name]
        m = pool["mean_tokens_per_sample"]["report"]
        for curve, cells in pool["rows"].items():
            pts = sorted((c["mean_tokens"] / m, 100 * c["accuracy"]) for c in cells if c is not None)
            if not pts:
                continue
            style = dict(lw=2.2, marker="o") if curve == "OptScaleBudget" else dict(lw=1, marker=".")
            ax.plot([p[0] for p in pts], [p[1] for p in pts], label=curve, **style)
        ax.set_xscale("log")
        ax.set_title(name + ("" if pool["synthetic"] else " [real]"), fontsize=9)
        ax.set_xlabel("tokens per question paid (in mean samples), report seed")
        ax.set_ylabel("accuracy (%)")
        ax.grid(True, which="both", alpha=0.3)
    for ax in axes[len(names):]:
        ax.set_visible(False)
    axes[0].legend(fontsize=7)
    fig.suptitle("Accuracy at a token budget (configurations chosen on another seed; "
                 "twins are SYNTHETIC)", fontsize=10)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--questions", type=int, default=100_000)
    ap.add_argument("--k-max", type=int, default=8)
    ap.add_argument("--repeats", type=int, default=20)
    ap.add_argument("--quick", action="store_true",
                    help="accuracy section on small twins, few budgets (a few minutes)")
    ap.add_argument("--skip-speed", action="store_true")
    ap.add_argument("--skip-accuracy", action="store_true")
    ap.add_argument("--select-seed", type=int, default=0)
    ap.add_argument("--report-seed", type=int, default=1)
    ap.add_argument("--n-boot", type=int, default=1000)
    ap.add_argument("--data", type=Path, default=None,
                    help="shared data directory (default: optscale_jax.io.shared_data_dir)")
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args()
    if args.out is None:
        name = "bench_allocate_quick.json" if args.quick else "bench_allocate.json"
        args.out = Path(__file__).parent / "results" / name
    results: dict = {
        "machine": {"platform": platform.platform(), "cpus": os.cpu_count(),
                    "jax": jax.__version__, "backend": jax.default_backend(),
                    "load_average_at_start": list(os.getloadavg())},
    }
    if not args.skip_speed:
        section_speed(results, args)
    if not args.skip_accuracy:
        section_accuracy(results, args)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2))
    print(f"wrote {args.out} (load average at the end: {os.getloadavg()[0]:.2f})")


if __name__ == "__main__":
    main()
