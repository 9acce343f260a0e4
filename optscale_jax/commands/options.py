"""Options shared by the commands: ``--grid`` parsing and ``--prior`` files.

Typer-facing helpers; the rules they feed (grids, priors) live in the library.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import typer

__all__ = ["check_out_dir", "load_prior_file", "parse_grid"]


def check_out_dir(out: Path) -> None:
    """``--out`` must be (or be creatable as) a writable directory: checked before any work."""
    import os

    if out.exists() and not out.is_dir():
        raise typer.BadParameter(f"{out}: exists and is not a directory", param_hint="--out")
    parent = out
    while not parent.exists():
        parent = parent.parent
    if not parent.is_dir():
        raise typer.BadParameter(f"{out}: {parent} is not a directory", param_hint="--out")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise typer.BadParameter(f"{out}: {parent} is not writable", param_hint="--out")


def parse_grid(spec: str) -> Any:
    """Parse ``--grid``: ``official`` or ``s_min=0.9,0.95;quantile=0.05,0.1;n_max=8,16``.

    Args:
        spec: the option value.

    Returns:
        A :class:`optscale_jax.sweep.Grid`.

    Raises:
        typer.BadParameter: on an unknown key or a bad number (the message names it).
    """
    from optscale_jax.sweep import OFFICIAL_GRID, Grid

    if spec.strip().lower() == "official":
        return OFFICIAL_GRID
    if not spec.strip(" ;"):
        raise typer.BadParameter(f"empty grid {spec!r}; use 'official' or key=values", param_hint="--grid")
    parts: dict[str, list[str]] = {}
    for chunk in spec.split(";"):
        if not chunk.strip():
            continue
        if "=" not in chunk:
            raise typer.BadParameter(f"grid part {chunk!r} is not key=values", param_hint="--grid")
        key, vals = chunk.split("=", 1)
        key = key.strip()
        if key not in ("s_min", "quantile", "n_max"):
            raise typer.BadParameter(f"unknown grid key {key!r} (use s_min, quantile, n_max)", param_hint="--grid")
        if key in parts:
            raise typer.BadParameter(f"grid key {key!r} given twice; list its values once, comma-separated",
                                     param_hint="--grid")
        parts[key] = [v.strip() for v in vals.split(",") if v.strip()]
    base = {"s_min": OFFICIAL_GRID.s_min, "quantile": OFFICIAL_GRID.quantile, "n_max": OFFICIAL_GRID.n_max}
    out: dict[str, tuple] = {}
    for key, default in base.items():
        if key not in parts:
            out[key] = default
            continue
        try:
            conv = int if key == "n_max" else float
            out[key] = tuple(conv(v) for v in parts[key])
        except ValueError:
            raise typer.BadParameter(f"grid {key}: {parts[key]} are not all numbers", param_hint="--grid") from None
        if not out[key]:
            raise typer.BadParameter(f"grid {key} is empty", param_hint="--grid")
    try:
        return Grid(**out)
    except ValueError as e:
        raise typer.BadParameter(str(e), param_hint="--grid") from None


def load_prior_file(path: Path, question_ids: list[str], std: float, positions: Any = None) -> Any:
    """Per-question MAP prior for OptScaleᵗ from a file, for the CLI.

    Reads through :func:`optscale_jax.io.priors.read_priors` (the one reader): the authors'
    ``*_train_mu_sigma.json`` (a list of ``[mu, sigma]``, matched by position, centres
    used as stored) or an ``optscale-priors`` JSON (matched by question id). A warning
    (centres sigma <= 0) is printed as one line; a malformed file is one ``error:`` line
    and exit code 2.

    Args:
        path: the file.
        question_ids: the pool's question ids.
        std: prior std for the list format.
        positions: rows of the authors' list to take (e.g. the first ``--limit`` questions).

    Returns:
        A ``GaussianPrior`` with one entry per question.

    Raises:
        typer.Exit: code 2, after printing the error line.
    """
    from optscale_jax.io.priors import load_prior

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            prior = load_prior(path, question_ids, positions=positions, width=std)
        except ValueError as e:  # PriorsFileError names file, record and field
            typer.echo(f"error: --prior {' '.join(str(e).split())}", err=True)
            raise typer.Exit(code=2) from None
    for w in caught:
        typer.echo(f"warning: {' '.join(str(w.message).split())}", err=True)
    return prior
