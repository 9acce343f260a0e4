"""The ``optscale`` command.

Subcommands live next to what they drive (``optscale_jax/commands``); other
packages of the distribution add theirs through the ``optscale_jax.cli`` entry
point group (the predictor's ``optscale predictor …``), so the library never
imports them. Entry points load lazily, on first use of their subcommand, and
guarded: a core-only install (no ``[predictor]`` extra, so no flax) still starts,
and ``optscale predictor …`` then prints the ``pip install`` line to run.

Errors: every expected failure (bad option, malformed file, missing file,
missing optional dependency) is ONE line on stderr, ``error: <file>: <record>:
<field>: <what was expected>``, and exit code 2; ``optscale --debug …`` shows the
full traceback instead. Unexpected exceptions (bugs) print one line too, exit
code 1, and ask for ``--debug``.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Sequence
from importlib.metadata import EntryPoint, entry_points
from pathlib import Path
from typing import Any

import typer
from typer.core import TyperGroup

__all__ = ["app", "main", "EXTRA_HINTS", "format_error"]

#: The install line printed when an entry point's optional dependencies are missing.
EXTRA_HINTS: dict[str, str] = {
    "predictor": 'pip install "optscale-jax[predictor]"',
}

#: Short help shown in ``optscale --help`` for entry points that are not loaded yet.
_PLUGIN_HELP: dict[str, str] = {
    "predictor": "The OptScaleᵗ prior predictor: train a head on question features, write "
    "priors files (needs the predictor extra).",
}

#: Exceptions that are the user's input, not a bug: one line, exit code 2.
EXPECTED_ERRORS: tuple[type[BaseException], ...] = (ValueError, OSError, ImportError)

_PLUGINS: dict[str, EntryPoint] = {}


def format_error(exc: BaseException) -> str:
    """One line describing an expected error (no traceback, no newlines).

    Args:
        exc: the exception.

    Returns:
        ``"error: …"``; ``UnicodeDecodeError`` and ``json.JSONDecodeError`` keep their
        position, and a missing module names the module.
    """
    if isinstance(exc, typer.TyperException):
        text = exc.format_message()
    elif isinstance(exc, ModuleNotFoundError):
        text = f"missing optional dependency {exc.name!r} ({exc})"
    elif isinstance(exc, (json.JSONDecodeError, UnicodeDecodeError)):
        text = f"{type(exc).__name__}: {exc}"
    elif isinstance(exc, OSError) and exc.filename is not None:
        text = f"{exc.filename}: {exc.strerror or exc}"
    else:
        text = str(exc) or type(exc).__name__
    return "error: " + " ".join(text.split())


def _missing_extra_command(name: str, exc: ImportError) -> Any:
    """A stand-in subcommand for an entry point whose dependencies are not installed."""
    hint = EXTRA_HINTS.get(name, f'pip install "optscale-jax[{name}]"')
    missing = getattr(exc, "name", None) or str(exc)
    stub = typer.Typer(add_completion=False)

    @stub.command(
        name,
        add_help_option=False,
        context_settings={"allow_extra_args": True, "ignore_unknown_options": True},
        help=f"Unavailable: needs the {name} extra ({hint}).",
    )
    def _unavailable(ctx: typer.Context) -> None:
        typer.echo(
            f"error: 'optscale {name}' needs the optional dependency {missing!r}, "
            f"which is not installed; run: {hint}",
            err=True,
        )
        raise typer.Exit(code=2)

    return typer.main.get_command(stub)


def _placeholder_command(name: str) -> Any:
    """What ``optscale --help`` lists for an entry point not loaded yet (no import)."""
    stub = typer.Typer(add_completion=False)
    stub.command(name, help=_PLUGIN_HELP.get(name, f"Subcommands from {_PLUGINS[name].value}."))(
        lambda: None
    )
    return typer.main.get_command(stub)


class _RootGroup(TyperGroup):
    """The ``optscale`` group: lazy entry points, one-line errors."""

    def list_commands(self, ctx: Any) -> list[str]:
        names = list(super().list_commands(ctx))
        return names + [n for n in _PLUGINS if n not in names]

    def get_command(self, ctx: Any, cmd_name: str) -> Any:
        cmd = super().get_command(ctx, cmd_name)
        if cmd is None and cmd_name in _PLUGINS:
            return _placeholder_command(cmd_name)  # listing only: resolve_command loads it
        return cmd

    def resolve_command(self, ctx: Any, args: list[str]) -> Any:
        if args and args[0] in _PLUGINS and args[0] not in self.commands:
            name = args[0]
            try:
                plugin = _PLUGINS[name].load()
            except ImportError as exc:
                self.commands[name] = _missing_extra_command(name, exc)
            else:
                cmd = typer.main.get_command(plugin) if isinstance(plugin, typer.Typer) else plugin
                cmd.name = name
                self.commands[name] = cmd
        return super().resolve_command(ctx, args)

    def main(  # type: ignore[override]
        self,
        args: Sequence[str] | None = None,
        prog_name: str | None = None,
        complete_var: str | None = None,
        standalone_mode: bool = True,
        **extra: Any,
    ) -> Any:
        argv = list(sys.argv[1:] if args is None else args)
        debug = "--debug" in argv or os.environ.get("OPTSCALE_DEBUG", "") not in ("", "0")
        code = 0
        try:
            rv = super().main(
                args=argv, prog_name=prog_name, complete_var=complete_var, standalone_mode=False, **extra
            )
            code = rv if isinstance(rv, int) else 0
        except typer.Abort:
            typer.echo("Aborted!", err=True)
            code = 1
        except typer.TyperException as exc:  # click's usage errors, BadParameter
            if type(exc).__name__ == "NoArgsIsHelpError":
                exc.show()  # type: ignore[attr-defined]
                code = 0
            elif debug:
                raise
            else:
                typer.echo(format_error(exc), err=True)
                code = 2
        except EXPECTED_ERRORS as exc:
            if debug:
                raise
            typer.echo(format_error(exc), err=True)
            code = 2
        except Exception as exc:
            if debug:
                raise
            typer.echo(
                f"error: internal error {type(exc).__name__}: {' '.join(str(exc).split())} "
                "(rerun with --debug for the traceback, and please report it)",
                err=True,
            )
            code = 1
        if standalone_mode:
            sys.exit(code)
        return code


app = typer.Typer(
    name="optscale",
    cls=_RootGroup,
    help="Probabilistically optimal inference-time scaling: replay pools, run live, train priors.",
    no_args_is_help=True,
    add_completion=False,
)


@app.callback()
def _root(
    debug: bool = typer.Option(
        False, "--debug", help="Show the full traceback on errors (default: one line, exit code 2)."
    ),
) -> None:
    """Probabilistically optimal inference-time scaling: replay pools, run live, train priors."""


_BUILT = False


def _build() -> None:
    """Register the built-in commands and (lazily) the entry points; idempotent."""
    global _BUILT
    if _BUILT:
        return
    from optscale_jax.commands import calibrate, replay, run

    replay.register(app)
    calibrate.register(app)
    run.register(app)
    for ep in entry_points(group="optscale_jax.cli"):
        _PLUGINS.setdefault(ep.name, ep)
    _BUILT = True


def main() -> None:
    """Entry point of the ``optscale`` console script."""
    # Reuse compiled solvers across invocations (a cold sweep compiles for seconds);
    # set JAX_COMPILATION_CACHE_DIR to move it, or to "" to switch it off.
    os.environ.setdefault("JAX_COMPILATION_CACHE_DIR", str(Path.home() / ".cache" / "optscale-jax" / "jax"))
    # Fits and N* in float64, as the authors' numpy/scipy code computes them (float32
    # moves N* by one sample on about a fifth of the official grid's cells on MATH-500).
    # JAX_ENABLE_X64=0 chooses float32.
    os.environ.setdefault("JAX_ENABLE_X64", "1")
    _build()
    app()


if __name__ == "__main__":
    main()
