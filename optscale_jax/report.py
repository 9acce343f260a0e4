"""Reports of a sweep: the paper's Table 1 (markdown, CSV, LaTeX), the accuracy-vs-
tokens plot with the Pareto frontier (PNG), JSON of everything, and a side-by-side
comparison with the authors' published numbers.

Every output names the pool; a synthetic pool is labelled "synthetic" in each of them.
"""

from __future__ import annotations

import csv
import io
import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from optscale_jax.policies.registry import REGISTRY
from optscale_jax.sweep import SweepResult

__all__ = [
    "METHOD_LABELS",
    "table1_rows",
    "budget_rows",
    "budget_markdown",
    "table_markdown",
    "table_csv",
    "table_latex",
    "plot_frontier",
    "write_report",
    "official_dataset_name",
    "load_official_table",
    "load_official_bon",
    "compare_with_official",
]

#: Row labels of the paper's Table 1 (as in the authors' results_table.csv), by method
#: (from :data:`optscale_jax.policies.registry.REGISTRY`).
METHOD_LABELS: dict[str, str] = {name: m.label for name, m in REGISTRY.items() if m.replayable}

_OFFICIAL_NAMES = {"math500": "MATH500", "gsm8k": "GSM8K", "aime24": "AIME24", "aime25": "AIME25", "amc23": "AMC23"}


def _pick(result: SweepResult, method: str, n_max: int, mode: str | None,
          score_family: str | None = None) -> dict[str, Any] | None:
    family = REGISTRY[method].family
    if family == "fixed":
        recs = result.where(method=method, N=n_max)
        return recs[0] if recs else None
    if family == "optscale":
        return result.best(method, n_max, mode=mode,
                           **({} if score_family is None else {"family": score_family}))
    recs = result.where(method=method, n_max=n_max)
    return recs[0] if recs else None


def table1_rows(result: SweepResult, n_max_values: Sequence[int] | None = None) -> list[dict[str, Any]]:
    """Rows of the paper's Table 1 for one pool.

    For each n_max: BoN and SC at N = n_max, ESC/ASC/DSC at that budget, and OptScale's
    best grid configuration (highest accuracy, ties by fewest tokens, the rule that
    reproduces the authors' table). Sequential OptScale rows follow when swept. A sweep
    over several score families (``meta["families"]``) has one OptScale row per family,
    labelled ``[family]`` and with a ``family`` key.

    Args:
        result: a sweep.
        n_max_values: budgets (default: the sweep's grid).

    Returns:
        Dicts with ``block`` (n_max), ``method``, ``label`` (e.g. "Best-of-N (BoN) ($N=8$)"),
        ``accuracy`` (percent), ``tokens``, ``samples`` and the chosen configuration.
    """
    ns = list(n_max_values or result.meta.get("grid", {}).get("n_max", []))
    width = result.meta.get("pool_width")
    if width is not None:  # never label a budget larger than the samples the pool holds
        ns = [n for n in ns if n <= width]
    methods = [m for m in METHOD_LABELS if m in result.meta.get("methods", METHOD_LABELS)
               and REGISTRY[m].family != "budget"]  # budget methods: budget_rows
    modes = result.meta.get("modes", ["oneshot"])
    score_families = list(result.meta.get("families") or ["truncnorm"])
    labelled = score_families != ["truncnorm"]  # records carry "family": one row per family
    rows: list[dict[str, Any]] = []
    for n in ns:
        for m in methods:
            is_opt = REGISTRY[m].family == "optscale"
            for mode, fam in [(md, f) for md in (modes if is_opt else [None])
                              for f in (score_families if is_opt and labelled else [None])]:
                rec = _pick(result, m, n, mode, fam)
                if rec is None:
                    continue
                label = METHOD_LABELS[m]
                if mode == "sequential":
                    label = label.replace("(Ours)", "(Ours, sequential)")
                if fam is not None:
                    label += f" [{fam}]"
                rows.append({
                    "block": n,
                    "method": m,
                    "mode": mode,
                    "label": f"{label} ($N={n}$)",
                    "accuracy": 100.0 * rec["accuracy"],
                    "accuracy_ci": [100.0 * x for x in rec.get("accuracy_ci", [math.nan, math.nan])],
                    "tokens": rec["mean_tokens"],
                    "samples": rec["mean_samples"],
                    "s_min": rec.get("s_min"),
                    "quantile": rec.get("quantile"),
                    **({} if fam is None else {"family": fam}),
                })
    return rows


def budget_rows(result: SweepResult) -> list[dict[str, Any]]:
    """The "Accuracy at a token budget" rows: each budget method against every other method.

    For each token budget a budget method ran at (``B`` tokens per question: its
    ``token_budget`` over the questions), the budget methods' own records, then for every
    other method of the sweep its most accurate record paying at most ``B`` tokens per
    question (ties: fewer tokens), i.e. accuracy read off each method's own records at
    that budget. These picks are made on the pool they are reported on (in-sample; the
    out-of-sample comparison is ``benchmarks/bench_allocate.py``).

    Returns:
        Dicts with ``budget`` (tokens per question), ``method``, ``accuracy`` and
        ``accuracy_ci`` (percent), ``tokens``, ``samples`` and ``config`` (a short text);
        empty when no budget method was swept.
    """
    q = max(int(result.n_questions), 1)
    own = [r for r in result.records
           if r.get("token_budget") is not None and r["method"] in REGISTRY
           and REGISTRY[r["method"]].family == "budget"]
    others = [r for r in result.records if r.get("token_budget") is None]
    rows: list[dict[str, Any]] = []

    def row(b: float, r: dict[str, Any]) -> dict[str, Any]:
        cfg = ", ".join(f"{k}={r[k]}" for k in ("N", "n_max", "s_min", "quantile", "mode")
                        if r.get(k) is not None)
        return {"budget": b, "method": r["method"], "accuracy": 100.0 * r["accuracy"],
                "accuracy_ci": [100.0 * x for x in r.get("accuracy_ci", [math.nan, math.nan])],
                "tokens": r["mean_tokens"], "samples": r["mean_samples"], "config": cfg}

    for b in sorted({float(r["token_budget"]) / q for r in own}):
        rows.extend(row(b, r) for r in own if math.isclose(float(r["token_budget"]) / q, b))
        for m in dict.fromkeys(r["method"] for r in others):
            fits = [r for r in others if r["method"] == m and r["mean_tokens"] <= b]
            if fits:
                rows.append(row(b, max(fits, key=lambda r: (r["accuracy"], -r["mean_tokens"]))))
    return rows


def budget_markdown(result: SweepResult, rows: list[dict[str, Any]] | None = None) -> str:
    """The "Accuracy at a token budget" section as markdown ("" without budget methods)."""
    rows = budget_rows(result) if rows is None else rows
    if not rows:
        return ""
    lines = [
        "## Accuracy at a token budget",
        "",
        f"Pool: {result.label}" + (" (SYNTHETIC data)" if result.synthetic else "") + ". "
        "Budget methods spend one token budget across all questions (at most one wave over); "
        "every other method is read at its most accurate configuration paying at most the "
        "budget per question, chosen on this same pool (in-sample).",
        "",
        "| budget (tokens/q) | method | acc. % | 95% CI | tokens/q | samples/q | configuration |",
        "|---:|---|---:|---:|---:|---:|---|",
    ]
    for r in rows:
        lo, hi = r["accuracy_ci"]
        ci = "" if math.isnan(lo) else f"[{lo:.1f}, {hi:.1f}]"
        name = REGISTRY[r["method"]].short if r["method"] in REGISTRY else r["method"]
        lines.append(f"| {r['budget']:.0f} | {name} | {r['accuracy']:.1f} | {ci} | {r['tokens']:.0f} | "
                     f"{r['samples']:.2f} | {r['config']} |")
    return "\n".join(lines) + "\n"


def _clip_note(result: SweepResult) -> list[str]:
    clipped = result.meta.get("n_max_clipped") or []
    if not clipped:
        return []
    width = result.meta.get("pool_width")
    return ["", f"Note: budgets N = {', '.join(map(str, clipped))} exceed the pool's {width} samples "
                f"per question and were clipped to N = {width}."]


def _acc_col(label: str) -> tuple[str, str]:
    return f"{label} acc.", f"{label} token."


def table_markdown(result: SweepResult, rows: list[dict[str, Any]] | None = None) -> str:
    """The Table 1 layout as a markdown table, headed by the pool label.

    Args:
        result: a sweep.
        rows: rows from :func:`table1_rows` (computed when omitted).

    Returns:
        Markdown text.
    """
    rows = table1_rows(result) if rows is None else rows
    acc, tok = _acc_col(result.label)
    lines = [
        f"**Pool: {result.label}** ({result.n_questions} questions"
        + ("; SYNTHETIC data, not real model outputs" if result.synthetic else "")
        + f"; votes: {result.meta.get('vote', 'official')} rule)",
        *_clip_note(result),
        "",
        f"| Baseline | {acc} | 95% CI | {tok} | samples |",
        "|---|---:|---:|---:|---:|",
    ]
    last = None
    for r in rows:
        if last is not None and r["block"] != last:
            lines.append("| | | | | |")
        last = r["block"]
        lo, hi = r["accuracy_ci"]
        ci = "" if math.isnan(lo) else f"[{lo:.1f}, {hi:.1f}]"
        lines.append(f"| {r['label']} | {r['accuracy']:.1f} | {ci} | {r['tokens']:.0f} | {r['samples']:.2f} |")
    return "\n".join(lines) + "\n"


def table_csv(result: SweepResult, rows: list[dict[str, Any]] | None = None) -> str:
    """The Table 1 layout as CSV (the authors' column names plus a ``pool`` column).

    Blocks are separated by an empty row as in the authors' results_table.csv.

    Args:
        result: a sweep.
        rows: rows from :func:`table1_rows`.

    Returns:
        CSV text.
    """
    rows = table1_rows(result) if rows is None else rows
    acc, tok = _acc_col(result.label)
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["Baseline", acc, tok, "samples", "pool", "synthetic"])
    last = None
    for r in rows:
        if last is not None and r["block"] != last:
            w.writerow([""])
        last = r["block"]
        w.writerow([r["label"], f"{r['accuracy']:.1f}", f"{r['tokens']:.0f}", f"{r['samples']:.2f}",
                    result.label, str(result.synthetic).lower()])
    return buf.getvalue()


def _tex_escape(text: str) -> str:
    # Keep $...$ math segments; escape specials only outside them.
    segs = text.split("$")
    for i in range(0, len(segs), 2):
        segs[i] = segs[i].replace("&", r"\&").replace("%", r"\%").replace("_", r"\_").replace("#", r"\#")
    return "$".join(segs)


def table_latex(result: SweepResult, rows: list[dict[str, Any]] | None = None) -> str:
    """The Table 1 layout as a LaTeX ``table`` (booktabs), captioned with the pool label.

    Args:
        result: a sweep.
        rows: rows from :func:`table1_rows`.

    Returns:
        LaTeX source.
    """
    rows = table1_rows(result) if rows is None else rows
    lab = _tex_escape(result.label)
    lines = [
        r"\begin{table}[t]",
        r"\centering",
        rf"\caption{{Accuracy (\%) and mean tokens per question on {lab}"
        + (r" (\textbf{synthetic} pool, not real model outputs)" if result.synthetic else "")
        + ".}",
        r"\begin{tabular}{lrr}",
        r"\toprule",
        rf"Baseline & {lab} acc. & {lab} token. \\",
        r"\midrule",
    ]
    last = None
    for r in rows:
        if last is not None and r["block"] != last:
            lines.append(r"\midrule")
        last = r["block"]
        lines.append(rf"{_tex_escape(r['label'])} & {r['accuracy']:.1f} & {r['tokens']:.0f} \\")
    lines += [r"\bottomrule", r"\end{tabular}", r"\end{table}"]
    return "\n".join(lines) + "\n"


_STYLE = {
    "BoN": ("tab:blue", "o", "-"),
    "SC": ("tab:orange", "s", "-"),
    "WeightedSC": ("tab:brown", "v", "-"),
    "ESC": ("tab:green", "^", "--"),
    "ASC": ("tab:red", "D", "--"),
    "DSC": ("tab:purple", "P", "--"),
    "OptScale0": ("tab:cyan", ".", ""),
    "OptScaleT": ("tab:pink", ".", ""),
}


def plot_frontier(result: SweepResult, path: str | Path | None = None, *, ax: Any = None) -> Any:
    """Accuracy vs mean tokens for every method, with the Pareto frontier.

    Fixed-size baselines are lines over N; ESC/ASC/DSC lines over n_max; OptScale
    configurations a cloud of points per variant. The title names the pool and says
    "synthetic" for the synthetic twin.

    Args:
        result: a sweep.
        path: PNG path to write (optional).
        ax: matplotlib axes to draw on (optional).

    Returns:
        The matplotlib figure.
    """
    if ax is None:
        # A pyplot-free figure: no GUI backend needed and the caller's backend untouched
        # (a notebook shows it with display(fig)).
        from matplotlib.figure import Figure

        fig = Figure(figsize=(8, 5.5))
        ax = fig.subplots()
    else:
        fig = ax.figure
    for m in result.meta.get("methods", list(_STYLE)):
        color, marker, ls = _STYLE.get(m, ("k", "x", "-"))
        recs = result.where(method=m)
        if not recs:
            continue
        if m.startswith("OptScale"):
            for mode, mk in (("oneshot", "."), ("sequential", "x")):
                rr = [r for r in recs if r.get("mode") == mode]
                if rr:
                    ax.scatter([r["mean_tokens"] for r in rr], [100 * r["accuracy"] for r in rr],
                               s=12, color=color, marker=mk, alpha=0.6,
                               label=f"{METHOD_LABELS[m]} {mode}")
        else:
            rr = sorted(recs, key=lambda r: r["mean_tokens"])
            ax.plot([r["mean_tokens"] for r in rr], [100 * r["accuracy"] for r in rr],
                    color=color, marker=marker, ls=ls, ms=4, label=METHOD_LABELS[m])
    front = result.frontier()
    if front:
        ax.step([r["mean_tokens"] for r in front], [100 * r["accuracy"] for r in front],
                where="post", color="k", lw=1.2, alpha=0.8, label="Pareto frontier")
    if any(r["mean_tokens"] > 0 for r in result.records):  # a pool without token counts: linear
        ax.set_xscale("log")
    ax.set_xlabel("mean tokens per question")
    ax.set_ylabel("accuracy (%)")
    title = f"{result.label}: accuracy vs tokens ({result.n_questions} questions)"
    if result.synthetic and "synthetic" not in title.lower():
        title += " [synthetic]"
    ax.set_title(title)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    if path is not None:
        fig.savefig(path, dpi=120)
    return fig


def _json_default(o: Any) -> Any:
    if isinstance(o, (np.integer,)):
        return int(o)
    if isinstance(o, (np.floating,)):
        return float(o)
    if isinstance(o, np.ndarray):
        return o.tolist()
    raise TypeError(f"not JSON serialisable: {type(o)}")


def write_report(result: SweepResult, out_dir: str | Path, *, extra: dict[str, Any] | None = None) -> dict[str, Path]:
    """Write every report of a sweep into a directory.

    Files: ``table1.md``, ``table1.csv``, ``table1.tex``, ``frontier.png`` and
    ``results.json`` (every record, the frontier, Table 1 rows, timings, options). When
    budget methods were swept, ``table1.md`` ends with an "Accuracy at a token budget"
    section and ``results.json`` holds its rows as ``accuracy_at_budget``
    (:func:`budget_rows`).

    Args:
        result: a sweep.
        out_dir: directory (created if missing).
        extra: more JSON-serialisable content to store under ``"extra"``.

    Returns:
        Mapping of report kind to path.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    rows = table1_rows(result)
    paths = {
        "markdown": out / "table1.md",
        "csv": out / "table1.csv",
        "latex": out / "table1.tex",
        "png": out / "frontier.png",
        "json": out / "results.json",
    }
    budget = budget_rows(result)
    paths["markdown"].write_text(table_markdown(result, rows)
                                 + ("\n" + budget_markdown(result, budget) if budget else ""),
                                 encoding="utf-8")
    paths["csv"].write_text(table_csv(result, rows), encoding="utf-8")
    paths["latex"].write_text(table_latex(result, rows), encoding="utf-8")
    plot_frontier(result, paths["png"])  # a pyplot-free figure: nothing to close
    payload = result.to_dict()
    payload["table1"] = rows
    if budget:
        payload["accuracy_at_budget"] = budget
    if extra:
        payload["extra"] = extra
    paths["json"].write_text(json.dumps(payload, indent=1, default=_json_default, allow_nan=True), encoding="utf-8")
    return paths


# ------------------------------------------------------------------ official numbers
def official_dataset_name(dataset: str) -> str | None:
    """The authors' file prefix for a dataset name (``"math500"`` -> ``"MATH500"``)."""
    key = dataset.lower().replace("(synthetic)", "").replace("-", "").replace("_", "").strip()
    return _OFFICIAL_NAMES.get(key)


def load_official_table(path: str | Path, dataset: str) -> list[dict[str, Any]]:
    """Read the authors' ``results_table.csv`` for one dataset.

    Args:
        path: the CSV file (``reference/official/results_table.csv``).
        dataset: dataset name, e.g. ``"math500"`` or ``"MATH500"``.

    Returns:
        Rows with ``label``, ``block`` (N), ``accuracy`` (percent), ``tokens``.

    Raises:
        ValueError: when the dataset has no columns in the file (message names both).
    """
    name = official_dataset_name(dataset) or dataset
    path = Path(path)
    with open(path, newline="", encoding="utf-8") as fh:
        reader = csv.reader(fh)
        header = next(reader)
        try:
            ia = header.index(f"{name} acc.")
            it = header.index(f"{name} token.")
        except ValueError:
            raise ValueError(f"{path}: no columns for dataset {name!r} (header {header})") from None
        rows = []
        for lineno, rec in enumerate(reader, start=2):
            if len(rec) <= it or not rec[0].strip('"'):
                continue
            label = rec[0]
            block = None
            if "$N=" in label:
                block = int(label.split("$N=")[1].split("$")[0])
            try:
                rows.append({"label": label, "block": block, "accuracy": float(rec[ia]), "tokens": float(rec[it])})
            except ValueError:
                raise ValueError(f"{path}: line {lineno}: non-numeric value in {label!r}") from None
    return rows


def load_official_bon(path: str | Path) -> list[dict[str, float]]:
    """Read an authors' ``*_BoN_results.json``: ``[{"N", "accuracy", "token_count"}]``."""
    data = json.loads(Path(path).read_text(encoding="utf-8"))
    out = []
    for i, r in enumerate(data):
        try:
            out.append({"N": int(r["N"]), "accuracy": float(r["accuracy"]), "tokens": float(r["token_count"])})
        except (KeyError, TypeError, ValueError) as e:
            raise ValueError(f"{path}: record {i}: missing or bad field ({e})") from None
    return out


def compare_with_official(result: SweepResult, official_rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Pair our Table 1 rows with the authors' rows of the same label and N.

    Args:
        result: our sweep.
        official_rows: from :func:`load_official_table`.

    Returns:
        Rows with ``label``, ``ours_accuracy``, ``official_accuracy``, ``ours_tokens``,
        ``official_tokens`` (None where the authors have no such row).
    """
    theirs = {r["label"]: r for r in official_rows}
    out = []
    for r in table1_rows(result):
        o = theirs.get(r["label"])
        out.append({
            "label": r["label"],
            "ours_accuracy": r["accuracy"],
            "official_accuracy": None if o is None else o["accuracy"],
            "ours_tokens": r["tokens"],
            "official_tokens": None if o is None else o["tokens"],
        })
    return out
