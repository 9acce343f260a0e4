"""``optscale replay``: replay every scaling method over a pool and write the reports."""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import numpy as np
import typer

from optscale_jax.commands.options import check_out_dir, load_prior_file, parse_grid
from optscale_jax.policies.registry import DEFAULT_METHODS, REGISTRY, SWEEP_METHODS, resolve

__all__ = ["register"]

_HELP = (
    "Replay scaling methods over a pool of scored completions and write Table 1 (markdown, CSV, "
    "LaTeX), the accuracy-vs-tokens plot and JSON into OUT.\n\n"
    "Without POOL, runs on the built-in synthetic twin of MATH-500 (500 questions x 64 samples), "
    "labelled \"synthetic\" in every output."
)


def _warn_clipped(grid: Any, pool: Any, pool_path: Path | None) -> None:
    """One warning line when --grid budgets exceed the samples the pool holds (they are clipped)."""
    from optscale_jax.sweep import clip_grid, pool_width

    width = pool_width(pool)
    _, clipped = clip_grid(grid, width)
    if clipped:
        name = pool_path if pool_path is not None else pool.label
        typer.echo(f"warning: {name}: --grid n_max {', '.join(map(str, clipped))} exceed the pool's {width} "
                   f"samples per question; clipped to {width} (no table labels N > {width})", err=True)


def _summary_table(result: Any) -> Any:
    from rich.table import Table

    from optscale_jax.report import table1_rows

    title = f"{result.label} — {result.n_questions} questions"
    if result.synthetic:
        title += " (SYNTHETIC pool)"
    title += f"; votes: {result.meta.get('vote', 'official')} rule"
    table = Table(title=title)
    for col, just in (("method", "left"), ("N", "right"), ("acc. %", "right"), ("95% CI", "right"),
                      ("tokens/q", "right"), ("samples/q", "right"), ("s_min, 1-α", "left")):
        table.add_column(col, justify=just)
    last = None
    for r in table1_rows(result):
        if last is not None and r["block"] != last:
            table.add_section()
        last = r["block"]
        lo, hi = r["accuracy_ci"]
        name = REGISTRY[r["method"]].short if r["method"] in REGISTRY else r["method"]
        if r["mode"] == "sequential":
            name += " seq."
        if r.get("family"):
            from rich.markup import escape

            name += escape(f" [{r['family']}]")  # a literal "[beta]", not rich markup
        cfg = "" if r["s_min"] is None else f"{r['s_min']}, {r['quantile']}"
        table.add_row(name, str(r["block"]), f"{r['accuracy']:.1f}",
                      "" if np.isnan(lo) else f"{lo:.1f}–{hi:.1f}",
                      f"{r['tokens']:.0f}", f"{r['samples']:.2f}", cfg)
    return table


def replay_command(
    pool_path: Path | None = typer.Argument(None, metavar="POOL", help="Pool file (Parquet, search-and-learn JSONL or the authors' JSON). Default: the synthetic twin of MATH-500."),
    policy: list[str] = typer.Option(["all"], "--policy", "-p", help=f"Method(s): all (every one but OptScaleH), {', '.join(SWEEP_METHODS)}. Repeatable."),
    grid: str = typer.Option("official", "--grid", help="'official' or 's_min=0.9,0.95;quantile=0.05,0.1;n_max=8,16'."),
    mode: str = typer.Option("oneshot", "--mode", help="OptScale mode: oneshot (the authors'), sequential, or both."),
    step: int = typer.Option(1, "--step", min=1, help="Sequential OptScale: new samples between refits (b)."),
    out: Path = typer.Option(Path("optscale-replay"), "--out", "-o", help="Output directory."),
    prior: Path | None = typer.Option(None, "--prior", help="OptScaleᵗ prior: the authors' *_train_mu_sigma.json or an optscale-priors JSON. Default: a population prior."),
    prior_std: float = typer.Option(0.1, "--prior-std", help="Prior std for [mu, sigma] list priors."),
    prompts: Path | None = typer.Option(None, "--prompts", help="Prompts file with gold answers (the authors' format)."),
    aggregate: str = typer.Option("mean", "--aggregate", help="Step-score aggregation: mean, last, min, product."),
    synthetic: str = typer.Option("math500", "--synthetic", help="Which synthetic twin to use when POOL is omitted."),
    n_perms: int = typer.Option(0, "--n-perms", min=0, help="Average over this many random re-orderings of each row."),
    n_boot: int = typer.Option(1000, "--n-boot", min=0, help="Bootstrap replicates for confidence intervals."),
    nstar: str = typer.Option("closed", "--nstar", help="N* rule: closed (closed form) or official (the authors' grid scan)."),
    grade: str = typer.Option("auto", "--grade", help="Grade answers against gold with math-verify: auto (when the pool has gold answers but no answer classes), yes, no."),
    seed: int = typer.Option(0, "--seed", min=0, help="Seed for the synthetic pool, re-orderings and bootstrap."),
    vote: str = typer.Option("official", "--vote", help="Vote rule of SC/ESC/ASC/DSC: official (the authors': exact extracted strings, 'no answer' votes and can win) or math-verify (equivalence classes; 'no answer' does not vote)."),
    progress: bool = typer.Option(True, "--progress/--no-progress", help="Show a progress bar."),
    family: str = typer.Option("truncnorm", "--family", help="Score family (or families, comma-separated) of OptScale⁰/OptScaleᵗ: truncnorm (the paper's), beta, logitnormal, mixture, or any registered one; each runs the whole grid, one table row per family."),
    chunk_size: int = typer.Option(4096, "--chunk-size", min=1, help="Questions per chunk: fits, N* and outcome tables are built a chunk at a time (memory bounded by the chunk; results equal one chunk)."),
) -> None:
    from rich.console import Console

    from optscale_jax.report import write_report
    from optscale_jax.sweep import METHODS, GridClippedWarning, sweep

    console = Console()
    check_out_dir(out)
    methods: list[str] = []
    for p in policy:  # every name is checked, also next to "all"
        for name in p.split(","):
            key = name.strip().lower()
            if key == "all":
                methods.extend(m for m in DEFAULT_METHODS if m not in methods)
                continue
            try:
                canonical = resolve(key, replayable=True)
            except ValueError:
                raise typer.BadParameter(f"unknown policy {name.strip()!r}; choose from all, {', '.join(METHODS)}", param_hint="--policy") from None
            if canonical not in methods:
                methods.append(canonical)
    if not methods:
        raise typer.BadParameter("no policy given; choose from all, " + ", ".join(METHODS), param_hint="--policy")
    modes = {"oneshot": ["oneshot"], "sequential": ["sequential"], "both": ["oneshot", "sequential"]}.get(mode)
    if modes is None:
        raise typer.BadParameter(f"unknown mode {mode!r}; choose oneshot, sequential or both", param_hint="--mode")
    if nstar not in ("closed", "official"):
        raise typer.BadParameter(f"unknown N* rule {nstar!r}; choose closed or official", param_hint="--nstar")
    if vote not in ("official", "math-verify"):
        raise typer.BadParameter(f"unknown vote rule {vote!r}; choose official or math-verify", param_hint="--vote")
    if grade not in ("auto", "yes", "no"):
        raise typer.BadParameter(f"unknown grading choice {grade!r}; choose auto, yes or no", param_hint="--grade")
    the_grid = parse_grid(grid)
    from optscale_jax.scores import AGGREGATIONS
    from optscale_jax.sweep import DEFAULT_FAMILIES, resolve_families

    if aggregate not in AGGREGATIONS:
        raise typer.BadParameter(f"unknown aggregation {aggregate!r}; choose from {', '.join(AGGREGATIONS)}",
                                 param_hint="--aggregate")

    try:
        families = resolve_families(family)
    except ValueError as e:
        raise typer.BadParameter(str(e), param_hint="--family") from None
    if families != DEFAULT_FAMILIES:
        if not any(m in ("OptScale0", "OptScaleT") for m in methods):
            raise typer.BadParameter(f"no chosen policy has a score family (only OptScale0 and OptScaleT "
                                     f"do; chosen: {', '.join(methods)})", param_hint="--family")
        if nstar != "closed":
            raise typer.BadParameter(f"--nstar {nstar} (the authors' grid scan) exists only for the "
                                     "truncnorm family; use --nstar closed", param_hint="--family")

    if pool_path is None:
        from optscale_jax.synthetic import synthetic_pool

        try:
            pool = synthetic_pool(dataset=synthetic, n_samples=64, seed=seed)
        except (ValueError, KeyError) as e:
            raise typer.BadParameter(f"no synthetic twin {synthetic!r}: {e}", param_hint="--synthetic") from None
        console.print(f"[bold yellow]No POOL given: using the built-in SYNTHETIC twin '{pool.label}' "
                      f"({pool.n_questions} x {pool.n_max}); numbers are not real model outputs.[/]")
    else:
        from optscale_jax.io import read_pool

        for path, hint in ((prompts, "--prompts"), (prior, "--prior")):
            if path is not None and not path.is_file():
                what = ("is a directory" if path.is_dir() else "is not a regular file (a FIFO, socket or device)"
                        if path.exists() else "no such file")
                raise typer.BadParameter(f"{path}: {what}; expected a JSON file", param_hint=hint)
        try:
            pool = read_pool(pool_path, prompts=prompts, aggregate=aggregate)
        except ValueError as e:  # PoolFormatError is a ValueError naming file/record/field
            raise typer.BadParameter(str(e), param_hint="POOL") from None
        if not pool.mask.any():
            raise typer.BadParameter(f"{pool_path}: all {pool.n_questions} questions have 0 samples; "
                                     "nothing to replay", param_hint="POOL")
    if pool_path is None and prompts is not None:
        raise typer.BadParameter("--prompts needs a POOL in the authors' JSON format", param_hint="--prompts")
    budget_methods = [m for m in methods if REGISTRY[m].family == "budget"]
    if budget_methods and not (pool.tokens[pool.mask] > 0).any():
        name = pool_path if pool_path is not None else pool.label
        raise typer.BadParameter(f"{name}: has no token counts, so {', '.join(budget_methods)} (one token "
                                 "budget for all questions) cannot be replayed on it; expected a pool with "
                                 "completion token counts", param_hint="--policy")
    _warn_clipped(the_grid, pool, pool_path)
    has_answers = any(a is not None for a in pool.answers[pool.mask])
    ungraded = has_answers and not (pool.answer_ids[pool.mask] >= 0).any()
    if grade == "yes" or (grade == "auto" and ungraded and pool.gold is not None):
        from optscale_jax.grading import grade_pool

        if pool.gold is None:
            raise typer.BadParameter("the pool has no gold answers to grade against (pass --prompts)", param_hint="--grade")
        console.print(f"grading {int(pool.mask.sum())} answers against gold with math-verify ...")
        pool = grade_pool(pool, progress=progress)
        info = pool.metadata.get("grading", {})
        console.print(f"graded: {info.get('checks', '?')} checks, {len(info.get('timeouts', []))} timed out")
    elif ungraded:
        console.print("[bold yellow]warning:[/] the pool's answers are not graded (no gold answers): "
                      "every sample counts as wrong and voting has no answer classes")
    prior_obj = None
    if prior is not None and not any(REGISTRY[m].uses_prior for m in methods):
        typer.echo(f"error: --prior {prior}: no chosen policy reads a prior (only OptScaleT, the MAP "
                   f"variant, and OptScaleBudget do; chosen: {', '.join(methods)})", err=True)
        raise typer.Exit(code=2)
    if prior is not None:
        prior_obj = load_prior_file(prior, pool.question_ids, prior_std)

    with warnings.catch_warnings():  # _warn_clipped said it once already
        warnings.simplefilter("ignore", GridClippedWarning)
        warnings.filterwarnings("ignore", message="sweep: skipping")  # printed below, one line each
        result = sweep(pool, grid=the_grid, methods=methods, modes=modes, prior=prior_obj, nstar_rule=nstar,
                       step=step, n_perms=n_perms, seed=seed, n_boot=n_boot, progress=progress, vote=vote,
                       chunk_size=chunk_size, families=families)
    for note in result.meta.get("skipped", []):
        typer.echo(f"warning: --family: skipped {note}", err=True)
    if not result.records:
        typer.echo(f"error: --policy {','.join(methods)} --family {','.join(families or ['truncnorm'])}: "
                   "every configuration was skipped, nothing to report (see the warnings above)",
                   err=True)
        raise typer.Exit(code=2)
    paths = write_report(result, out, extra={"pool_file": None if pool_path is None else str(pool_path)})
    console.print(_summary_table(result))
    console.print(f"sweep took {result.timings.get('total', float('nan')):.2f} s; reports in {out}/: "
                  + ", ".join(p.name for p in paths.values()))


def register(app: typer.Typer) -> None:
    """Add the ``replay`` command to an ``optscale`` Typer app.

    Args:
        app: the CLI application.
    """
    app.command("replay", help=_HELP)(replay_command)
