"""What every command shares: bad input becomes one line on stderr and exit code 2."""

from __future__ import annotations

import functools
import os

import typer

from edgedistill.errors import UserError
from edgedistill.terminal import terminal_safe

state = {"debug": bool(os.environ.get("EDGEDISTILL_DEBUG"))}


def table_console():
    """A rich console for tables; piped output gets a fixed, wide-enough width instead of rich's 80-column guess."""
    from edgedistill.terminal import SafeConsole

    console = SafeConsole()
    return console if console.is_terminal else SafeConsole(width=160)


def user_errors(command):
    """Wrap a command so a UserError prints `error: ...` (no traceback unless --debug) and exits 2."""

    @functools.wraps(command)
    def wrapper(*args, **kwargs):
        try:
            return command(*args, **kwargs)
        except UserError as exc:
            if state["debug"]:
                raise
            for line in str(exc).split("\n"):  # one line per problem
                typer.echo(f"error: {terminal_safe(line, one_line=True)}", err=True)
            raise typer.Exit(2) from None
        except KeyboardInterrupt:
            typer.echo("interrupted; finished stages are kept: rerun with --resume to continue", err=True)
            raise typer.Exit(130) from None

    return wrapper
