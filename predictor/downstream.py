"""Issue 13's downstream comparison: what a prior is worth in tokens, on SYNTHETIC pools.

No real 64-sample MATH-500 pool exists, so the pools are *label-conditioned synthetic
twins*: the synthetic MATH-500 twin's rows are matched to the validation questions by
difficulty rank (twin mean score vs. real label mean) and each row's scores are mapped,
rank for rank, onto a Beta with that question's *real* PRM score mean and std.
Correctness, answers and tokens stay the twin's. Every output says the pools are synthetic.

Five rows: OptScaleᵗ with the priors file's per-question widths, OptScaleᵗ with the same
centres and one global width, OptScaleᵗ with the authors' priors file (widths 0.1;
skipped with a note when the file is absent), OptScale⁰ (MLE) and OptScaleᵗ with the
constant population prior (widths 0.1). For each accuracy target (token budget) the
configuration ``(n_max, s_min, 1 − α)`` is picked on the pool drawn with one seed and
reported on the pool drawn with another.

Used by ``optscale predictor train --downstream`` and ``benchmarks/bench_predictor.py``.
"""

from __future__ import annotations

import dataclasses
import json
import os
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

import numpy as np

from optscale_jax.model import POPULATION_PRIOR_CENTRES, GaussianPrior
from optscale_jax.pool import Pool
from optscale_jax.sweep import Grid, sweep
from optscale_jax.synthetic import synthetic_pool
from predictor.data import Split, default_data_dir, load_split
from predictor.priors import load_priors, read_official_priors

__all__ = [
    "BUDGETS",
    "OPTSCALE0",
    "SHORT_NAMES",
    "authors_prior",
    "downstream_comparison",
    "format_downstream",
    "honest_comparison",
    "label_conditioned_pool",
]

OPTSCALE0 = "OptScale0 (MLE)"
PER_QUESTION = "OptScaleT: per-question widths"
GLOBAL = "OptScaleT: global widths"
AUTHORS = "OptScaleT: authors' priors file (widths 0.1)"
POPULATION = "OptScaleT: population prior (widths 0.1)"
#: Column labels of the printed table, in display order.
SHORT_NAMES: dict[str, str] = {
    PER_QUESTION: "per-q widths",
    GLOBAL: "global widths",
    AUTHORS: "authors' file",
    OPTSCALE0: "OptScale0",
    POPULATION: "population",
}
#: Token budgets (mean tokens per question) of the accuracy-at-equal-tokens half.
BUDGETS: tuple[int, ...] = (5000, 10000, 15000, 20000, 30000, 40000, 60000)
AUTHORS_FILE = Path("reference") / "official" / "MATH500_train_mu_sigma.json"


def label_conditioned_pool(val: Split, seed: int = 0, n_samples: int = 64) -> Pool:
    """The synthetic MATH-500 twin with each row's scores moved onto a real question's label.

    Args:
        val: questions with their real ``mean``/``std`` labels (e.g. the validation split).
        seed: seed of the synthetic twin.
        n_samples: samples per question.

    Returns:
        A pool whose row ``i`` is ``val``'s question ``i`` (ids ``val.ids``), dataset
        ``"math500 (label-conditioned synthetic)"``.
    """
    from scipy import stats

    twin = synthetic_pool("math500", n_samples=n_samples, seed=seed, n_questions=len(val))
    rows = np.empty(len(val), np.int64)
    rows[np.argsort(val.mean, kind="stable")] = np.argsort(twin.scores.mean(1), kind="stable")
    pool = twin.subset(rows)
    m = val.mean[:, None]
    sd = np.minimum(val.std, 0.99 * np.sqrt(val.mean * (1 - val.mean)))[:, None]
    common = m * (1 - m) / sd**2 - 1
    ranks = np.argsort(np.argsort(pool.scores, axis=1, kind="stable"), axis=1)
    u = (ranks + 0.5) / pool.scores.shape[1]
    scores = np.clip(stats.beta.ppf(u, m * common, (1 - m) * common), 0.0, 1.0)
    return dataclasses.replace(
        pool,
        scores=np.where(pool.mask, scores, 0.0),
        question_ids=list(val.ids),
        dataset="math500 (label-conditioned synthetic)",
    )


def _config_key(r: dict) -> tuple:
    return (r["n_max"], round(r["s_min"], 6), round(r["quantile"], 6))


def _honest(select: list[dict], report: list[dict], pick: Callable) -> dict | None:
    """Pick a configuration on the selection seed's records, report it on the other seed's."""
    chosen = pick(select)
    if chosen is None:
        return None
    other = {_config_key(r): r for r in report}[_config_key(chosen)]
    return {
        "config": {"n_max": chosen["n_max"], "s_min": chosen["s_min"],
                   "quantile": chosen["quantile"]},
        "selection_accuracy": chosen["accuracy"],
        "selection_tokens": chosen["mean_tokens"],
        "accuracy": other["accuracy"],
        "mean_tokens": other["mean_tokens"],
    }


def _fewest_tokens(target: float) -> Callable:
    return lambda recs: min(
        (r for r in recs if r["accuracy"] >= target - 1e-12),
        key=lambda r: r["mean_tokens"], default=None,
    )


def _best_accuracy(budget: float) -> Callable:
    return lambda recs: max(
        (r for r in recs if r["mean_tokens"] <= budget),
        key=lambda r: (r["accuracy"], -r["mean_tokens"]), default=None,
    )


def honest_comparison(
    select_pool: Pool,
    report_pool: Pool,
    priors: Mapping[str, GaussianPrior],
    *,
    select_seed: int = 0,
    report_seed: int = 1,
    grid: Grid | str = "official",
    targets: Sequence[float] | None = None,
    budgets: Sequence[int] = BUDGETS,
) -> dict:
    """Tokens at equal accuracy and accuracy at equal tokens, picked on one pool, reported on another.

    OptScale⁰ (MLE, :data:`OPTSCALE0`) is swept once with the first prior (it ignores it);
    OptScaleᵗ once per prior. For each target (budget) the configuration with the fewest
    mean tokens reaching the target (the highest accuracy within the budget, fewer tokens
    breaking ties) is chosen on ``select_pool``'s records only; its accuracy and tokens
    are read from ``report_pool``'s records of the same configuration.

    Args:
        select_pool: pool the configurations are picked on (swept with ``select_seed``).
        report_pool: pool they are reported on (swept with ``report_seed``); same questions.
        priors: name → OptScaleᵗ prior, aligned to the pools' rows.
        select_seed: sweep seed of ``select_pool``.
        report_seed: sweep seed of ``report_pool``.
        grid: sweep grid.
        targets: accuracy targets (default 0.930, 0.935, … up to the best selection accuracy).
        budgets: token budgets.

    Returns:
        ``{"targets", "budgets", "results"}``; ``results[name]`` has ``tokens_at_accuracy``
        (keyed ``"0.945"``) and ``accuracy_at_tokens`` (keyed ``"10000"``), each cell ``None``
        (nothing reaches it on the selection pool) or a dict with ``config``,
        ``selection_accuracy``, ``selection_tokens``, ``accuracy``, ``mean_tokens``.

    Raises:
        ValueError: if ``priors`` is empty or the seeds are equal.
    """
    if not priors:
        raise ValueError("priors: expected at least one named prior")
    if select_seed == report_seed:
        raise ValueError(
            f"report_seed: must differ from select_seed ({select_seed}) for an honest pick"
        )
    pools = {select_seed: select_pool, report_seed: report_pool}
    records: dict[str, dict[int, list[dict]]] = {}
    for k, (name, prior) in enumerate(priors.items()):
        methods = ("OptScale0", "OptScaleT") if k == 0 else ("OptScaleT",)
        for seed, pool in pools.items():
            res = sweep(pool, grid=grid, methods=methods, prior=prior, n_boot=0, seed=seed)
            if k == 0:
                records.setdefault(OPTSCALE0, {})[seed] = res.where(method="OptScale0")
            records.setdefault(name, {})[seed] = res.where(method="OptScaleT")
    if targets is None:
        sel_accs = sorted({r["accuracy"] for recs in records.values() for r in recs[select_seed]})
        targets = [round(a, 3) for a in np.arange(0.93, max(sel_accs) + 1e-9, 0.005)]
    results = {
        name: {
            "tokens_at_accuracy": {
                f"{t:.3f}": _honest(recs[select_seed], recs[report_seed], _fewest_tokens(t))
                for t in targets
            },
            "accuracy_at_tokens": {
                str(b): _honest(recs[select_seed], recs[report_seed], _best_accuracy(b))
                for b in budgets
            },
        }
        for name, recs in records.items()
    }
    return {"targets": [float(t) for t in targets], "budgets": [int(b) for b in budgets],
            "results": results}


def authors_prior(
    ids: Sequence[str], data_dir: str | os.PathLike | None = None
) -> tuple[GaussianPrior | None, str | None]:
    """The authors' MATH-500 priors file aligned to ``ids``, or ``(None, why)``.

    Returns:
        ``(prior, None)``, or ``(None, note)`` when the file (or ``benchmarks/math500.json``
        giving its question order) is absent or does not cover ``ids``.
    """
    try:
        data = Path(data_dir) if data_dir is not None else default_data_dir()
    except FileNotFoundError:
        return None, "authors' priors row skipped: no shared data directory"
    path, bench_path = data / AUTHORS_FILE, data / "benchmarks" / "math500.json"
    for p in (path, bench_path):
        if not p.is_file():
            return None, f"authors' priors row skipped: {p} not found"
    bench = json.loads(bench_path.read_text(encoding="utf-8"))
    order = [q["unique_id"] for q in bench]
    pos = {q: i for i, q in enumerate(order)}
    missing = [i for i in ids if i not in pos]
    if missing:
        return None, (
            f"authors' priors row skipped: {len(missing)} question ids (e.g. {missing[0]!r}) "
            f"are not MATH-500 questions of {bench_path}"
        )
    official = read_official_priors(path, order)
    idx = np.array([pos[i] for i in ids])
    return GaussianPrior(*(np.asarray(a)[idx] for a in official)), None


def downstream_comparison(
    priors_path: str | os.PathLike,
    val: Split | None = None,
    *,
    data_dir: str | os.PathLike | None = None,
    select_seed: int = 0,
    report_seed: int = 1,
    grid: Grid | str = "official",
    n_samples: int = 64,
) -> dict:
    """Issue 13's downstream table for a priors file with per-question widths.

    Args:
        priors_path: an ``optscale-priors`` file covering ``val``'s ids (e.g. from
            ``optscale predictor train --priors-out``); its ``meta.global_widths`` give the
            global-width row (default: the median per-question widths).
        val: the labelled questions (default: the validation split of ``data_dir``).
        data_dir: shared data dir (for the split and the authors' priors file).
        select_seed: seed of the pool the configurations are picked on.
        report_seed: seed of the pool they are reported on.
        grid: sweep grid.
        n_samples: samples per question of the synthetic pools.

    Returns:
        The JSON-ready result: ``experiment``, ``pool``, ``synthetic`` (True), ``pool_note``,
        ``protocol``, ``priors_file``, ``global_widths``, ``seconds``, ``notes`` (e.g. a
        skipped row) and ``results`` as in :func:`honest_comparison`.
    """
    if val is None:
        val = load_split("val", data_dir)
    select_pool = label_conditioned_pool(val, select_seed, n_samples)
    report_pool = label_conditioned_pool(val, report_seed, n_samples)
    ours = load_priors(priors_path, val.ids)
    meta = json.loads(Path(priors_path).read_text(encoding="utf-8")).get("meta", {})
    gw = meta.get("global_widths") or {
        "scale_mu": float(np.median(ours.scale_mu)),
        "scale_sigma": float(np.median(ours.scale_sigma)),
    }
    const = np.full(len(val), 1.0)
    authors, note = authors_prior(val.ids, data_dir)
    priors = {
        PER_QUESTION: GaussianPrior(*ours),
        GLOBAL: GaussianPrior(
            ours.loc_mu, gw["scale_mu"] * const, ours.loc_sigma, gw["scale_sigma"] * const
        ),
        AUTHORS: authors,
        POPULATION: GaussianPrior(
            POPULATION_PRIOR_CENTRES[0] * const, 0.1 * const,
            POPULATION_PRIOR_CENTRES[1] * const, 0.1 * const,
        ),
    }
    t0 = time.perf_counter()
    table = honest_comparison(
        select_pool, report_pool, {k: v for k, v in priors.items() if v is not None},
        select_seed=select_seed, report_seed=report_seed, grid=grid,
    )
    return {
        "experiment": "issue 13 downstream: OptScaleT prior widths, tokens at equal accuracy "
        "and accuracy at equal tokens",
        "pool": select_pool.dataset,
        "synthetic": True,
        "pool_note": "SYNTHETIC: twin rows matched to MATH-500 by difficulty rank, scores mapped "
        "onto a Beta with each question's real PRM mean/std",
        "protocol": f"configurations picked on the pool drawn with seed {select_seed}, "
        f"reported on the pool drawn with seed {report_seed}",
        "priors_file": str(priors_path),
        "global_widths": gw,
        "seconds": time.perf_counter() - t0,
        "notes": [note] if note else [],
        **table,
    }


def format_downstream(result: dict) -> str:
    """The downstream result as a plain-text table (reported seed: accuracy/tokens)."""
    names = [n for n in SHORT_NAMES if n in result["results"]]
    res = result["results"]

    def row(label: str, cells: list) -> str:
        return f"{label:>8s} " + " ".join(
            f"{c['accuracy']:8.3f}/{c['mean_tokens']:9.0f}    " if c else f"{'-':>22s}"
            for c in cells
        )

    lines = [
        f"SYNTHETIC {result['pool']}; {result['protocol']}",
        "mean tokens per question at each accuracy target (reported seed: accuracy/tokens)",
        f"{'target':>8s} " + " ".join(f"{SHORT_NAMES[n]:>22s}" for n in names),
    ]
    for t in result["targets"]:
        lines.append(row(f"{t:.3f}", [res[n]["tokens_at_accuracy"][f"{t:.3f}"] for n in names]))
    lines.append("accuracy at each token budget (reported seed: accuracy/tokens)")
    for b in result["budgets"]:
        lines.append(row(f"{b:d}", [res[n]["accuracy_at_tokens"][str(b)] for n in names]))
    lines.extend(result.get("notes", []))
    return "\n".join(lines)
