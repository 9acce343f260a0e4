"""The ``optscale`` command.

Subcommands live next to what they drive (``optscale_jax/commands``); other
packages of the distribution add theirs through the ``optscale_jax.cli`` entry
point group (the predictor's ``optscale predictor …``), so the library never
imports them.
"""

from __future__ import annotations

import os
from importlib.metadata import entry_points
from pathlib import Path

import typer

__all__ = ["app", "main"]

app = typer.Typer(
    name="optscale",
    help="Probabilistically optimal inference-time scaling: replay pools, run live, train priors.",
    no_args_is_help=True,
    add_completion=False,
)


def _build() -> None:
    from optscale_jax.commands import replay, run

    replay.register(app)
    run.register(app)
    for ep in entry_points(group="optscale_jax.cli"):
        app.add_typer(ep.load(), name=ep.name)


def main() -> None:
    """Entry point of the ``optscale`` console script."""
    # Reuse compiled solvers across invocations (a cold sweep compiles for seconds);
    # set JAX_COMPILATION_CACHE_DIR to move it, or to "" to switch it off.
    os.environ.setdefault("JAX_COMPILATION_CACHE_DIR", str(Path.home() / ".cache" / "optscale-jax" / "jax"))
    _build()
    app()


if __name__ == "__main__":
    main()
