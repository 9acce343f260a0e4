"""``optscale calibrate``: is the score model right? Calibration report of a pool."""

from __future__ import annotations

import math
from pathlib import Path

import typer

from optscale_jax.commands.options import check_out_dir

__all__ = ["register"]

_HELP = (
    "Check OptScale's score model on a pool: at each one-shot and sequential checkpoint, fit each "
    "question's law on its first k scores and set the predicted P(best of the next n >= s_min) against "
    "the pool's next scores. Writes calibration.md, calibration.json, reliability.png, pit.png and "
    "ppc.png into OUT: reliability diagram, ECE with a bootstrap CI, coverage of the alpha promise per "
    "alpha of the official grid, PIT histograms, predictive checks of the max and spread, and a "
    "ranking of the score families by held-out log density.\n\n"
    "Without POOL, runs on a built-in SYNTHETIC twin (labelled so in every output)."
)


def _floats(text: str, hint: str) -> list[float]:
    try:
        values = [float(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise typer.BadParameter(f"{text!r}: expected comma-separated numbers, e.g. 0.9,0.95", param_hint=hint) from None
    if not values:
        raise typer.BadParameter(f"{text!r}: expected at least one number", param_hint=hint)
    bad = [v for v in values if not math.isfinite(v)]
    if bad:
        raise typer.BadParameter(f"{text!r}: {bad[0]} is not a finite number", param_hint=hint)
    return values


def calibrate_command(
    pool_path: Path | None = typer.Argument(None, metavar="POOL", help="Pool file (Parquet, search-and-learn JSONL or the authors' JSON). Default: a synthetic twin."),
    family: list[str] = typer.Option(["truncnorm"], "--family", "-f", help="Score family (repeatable or comma-separated): truncnorm, beta, logitnormal, mixture, or all."),
    out: Path = typer.Option(Path("optscale-calibration"), "--out", "-o", help="Output directory."),
    s_min: str = typer.Option("official", "--s-min", help="Target scores: 'official' (the grid's 0.85..0.99) or e.g. 0.9,0.95."),
    alpha: str = typer.Option("official", "--alpha", help="alpha values of the promise: 'official' (1 - the grid's quantiles) or e.g. 0.9,0.95."),
    n_grid: str = typer.Option("1,2,4,8,16,32", "--n", help="Look-ahead sample counts of the reliability diagram (N* is added)."),
    step: int = typer.Option(1, "--step", min=1, help="Samples between sequential checkpoints."),
    n_boot: int = typer.Option(1000, "--n-boot", min=0, help="Bootstrap replicates (over questions) for the CIs."),
    prompts: Path | None = typer.Option(None, "--prompts", help="Prompts file (the authors' JSON pool format)."),
    aggregate: str = typer.Option("mean", "--aggregate", help="Step-score aggregation: mean, last, min, product."),
    synthetic: str = typer.Option("math500", "--synthetic", help="Which synthetic twin to use when POOL is omitted."),
    n_questions: int | None = typer.Option(None, "--n-questions", min=1, help="Synthetic twin: number of questions (default the benchmark's)."),
    n_samples: int = typer.Option(64, "--n-samples", min=2, help="Synthetic twin: samples per question."),
    seed: int = typer.Option(0, "--seed", min=0, help="Seed of the synthetic pool, bootstraps and simulations."),
) -> None:
    from optscale_jax.calibration import calibrate, write_calibration_report
    from optscale_jax.inference import family_names
    from optscale_jax.scores import AGGREGATIONS
    from optscale_jax.sweep import OFFICIAL_GRID

    check_out_dir(out)
    if aggregate not in AGGREGATIONS:
        raise typer.BadParameter(f"unknown aggregation {aggregate!r}; choose from {', '.join(AGGREGATIONS)}",
                                 param_hint="--aggregate")
    known = family_names()
    fams: list[str] = []
    for f in family:
        for name in f.split(","):
            key = name.strip().lower()
            if key == "all":
                fams.extend(n for n in known if n not in fams)
            elif key not in known:
                raise typer.BadParameter(f"unknown score family {name.strip()!r}; choose from all, {', '.join(known)}",
                                         param_hint="--family")
            elif key not in fams:
                fams.append(key)
    if not fams:
        raise typer.BadParameter(f"no family given; choose from all, {', '.join(known)}", param_hint="--family")
    s_grid = OFFICIAL_GRID.s_min if s_min == "official" else _floats(s_min, "--s-min")
    a_grid = OFFICIAL_GRID.alpha if alpha == "official" else _floats(alpha, "--alpha")
    ns = _floats(n_grid, "--n")
    if any(int(n) != n or n < 1 for n in ns):
        raise typer.BadParameter(f"{n_grid!r}: look-ahead counts must be integers >= 1", param_hint="--n")
    for hint, values in (("--s-min", s_grid), ("--alpha", a_grid)):
        bad = [v for v in values if not 0.0 < v < 1.0]
        if bad:
            raise typer.BadParameter(f"{bad[0]} is not in (0, 1)", param_hint=hint)

    if pool_path is None:
        from optscale_jax.synthetic import synthetic_pool

        if prompts is not None:
            raise typer.BadParameter("--prompts needs a POOL in the authors' JSON format", param_hint="--prompts")
        try:
            pool = synthetic_pool(dataset=synthetic, n_samples=n_samples, seed=seed, n_questions=n_questions)
        except (ValueError, KeyError) as e:
            raise typer.BadParameter(f"no synthetic twin {synthetic!r}: {e}", param_hint="--synthetic") from None
        typer.echo(f"No POOL given: using the built-in SYNTHETIC twin '{pool.label}' "
                   f"({pool.n_questions} x {pool.n_max}); numbers are not real model outputs.")
    else:
        from optscale_jax.io import read_pool

        if prompts is not None and not prompts.is_file():
            what = ("is a directory" if prompts.is_dir() else "is not a regular file (a FIFO, socket or device)"
                    if prompts.exists() else "no such file")
            raise typer.BadParameter(f"{prompts}: {what}; expected a JSON file", param_hint="--prompts")
        try:
            pool = read_pool(pool_path, prompts=prompts, aggregate=aggregate)
        except ValueError as e:  # PoolFormatError names file, record and field
            raise typer.BadParameter(str(e), param_hint="POOL") from None
    drawn = pool.mask.sum(axis=1)
    if int(drawn.max(initial=0)) < 2:
        name = pool_path if pool_path is not None else pool.label
        raise typer.BadParameter(f"{name}: every question has fewer than 2 samples (most: "
                                 f"{int(drawn.max(initial=0))}); calibration needs scores to fit and "
                                 "scores held out", param_hint="POOL")
    result = calibrate(pool, families=fams, s_min=s_grid, alphas=a_grid, n_grid=[int(n) for n in ns],
                       step=step, n_boot=n_boot, seed=seed)
    paths = write_calibration_report(result, out, extra={"pool_file": None if pool_path is None else str(pool_path)})
    for r in result.ranking:
        typer.echo(f"{r['rank']}. {r['family']}: held-out lpd {r['heldout_lpd']:.3f} (k={r['checkpoint']}), "
                   f"ECE one-shot {r['ece_oneshot']:.3f}, sequential {r['ece_sequential']:.3f}; "
                   f"coverage at alpha=0.95 one-shot {r['coverage_0.95_lower']:.3f}-{r['coverage_0.95_upper']:.3f}")
    typer.echo(f"reports in {out}/: " + ", ".join(p.name for p in paths.values()))


def register(app: typer.Typer) -> None:
    """Add the ``calibrate`` command to an ``optscale`` Typer app."""
    app.command("calibrate", help=_HELP)(calibrate_command)
