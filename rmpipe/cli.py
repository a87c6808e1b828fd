"""The `rmpipe` command. One front door of two (dvc.yaml is the other): both call the same
stage entry points. Each stage's ``command`` module lists its typer commands in ``COMMANDS``
(and sub-apps in ``GROUPS``); this file only registers them and turns user mistakes
(:class:`RmpipeError`) into one line on stderr and exit code 2."""

from __future__ import annotations

import functools
import sys

import typer

from pipeline.errors import RmpipeError
from rmpipe import commands as app_commands
from stages.embed import command as embed_command
from stages.evaluate import command as evaluate_command
from stages.fit import command as fit_command
from stages.prepare import command as prepare_command

app = typer.Typer(
    name="rmpipe",
    help="Reward models from observational user feedback (CausalRM): prepare -> embed -> fit -> evaluate.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


@app.callback()
def _root() -> None:
    """Reward models from observational user feedback (CausalRM): prepare -> embed -> fit -> evaluate."""
    # A callback keeps `rmpipe <command>` a group even while only one command is registered
    # (typer otherwise collapses a one-command app into that command).


def user_errors_exit_2(fn):
    """Print a user mistake as one line and exit 2; let our own bugs keep their traceback."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except RmpipeError as exc:
            print(f"rmpipe: error: {exc}", file=sys.stderr)
            raise typer.Exit(code=2) from None
        except KeyboardInterrupt:  # the command has said what was kept; 130 is the shell's ^C
            raise typer.Exit(code=130) from None

    return wrapper


for module in (prepare_command, embed_command, fit_command, evaluate_command, app_commands):
    for fn in getattr(module, "COMMANDS", ()):
        app.command(name=fn.__name__.replace("_", "-"))(user_errors_exit_2(fn))
    for name, group in getattr(module, "GROUPS", {}).items():
        for cmd in group.registered_commands:
            cmd.callback = user_errors_exit_2(cmd.callback)
        app.add_typer(group, name=name)


def main() -> None:
    app()


if __name__ == "__main__":
    main()
