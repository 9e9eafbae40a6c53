"""The `nalu` command line: thin Typer wrappers around plain functions that return data.

This module holds the app (errors, --version) and the list of commands; each command
lives in a module of this package: train, reports (eval, extrapolate, inspect),
export (plot, export, predict) and benchmark. Shared options are in options.py.

TensorFlow is imported inside the commands that need it, never at import time,
so `nalu --help` stays fast. Errors a user can cause become one line on stderr
and exit code 2 (set NALU_DEBUG=1 for the traceback).
"""

from __future__ import annotations

import gc
import sys
from typing import Annotated

import typer
from typer.core import TyperGroup
from typer.exceptions import Abort, TyperException

from nalu_cli import __version__
from nalu_cli.cli import benchmark, export, reports, train
from nalu_cli.errors import NaluError, as_write_error, debugging


class NaluGroup(TyperGroup):
    """Turns user errors (NaluError, bad flags) into one line on stderr and exit code 2."""

    def main(self, args=None, prog_name=None, complete_var=None, standalone_mode=True, **extra):
        try:
            code = super().main(args, prog_name, complete_var, standalone_mode=False, **extra)
        except NaluError as error:
            if debugging():
                raise
            _fail(str(error))
        except OSError as error:  # a full disk, a read-only directory: one line, like any user error
            if debugging() or as_write_error(error) is None:
                raise
            _fail(str(as_write_error(error)))
        except TyperException as error:  # bad flags and arguments (typer's own click exceptions)
            if type(error).__name__ == "NoArgsIsHelpError":
                print(error.format_message())
                sys.exit(0)
            _fail(error.format_message(), code=error.exit_code)
        except Abort:
            _fail("aborted", code=130)
        sys.exit(code if isinstance(code, int) else 0)


def _fail(message: str, code: int = 2):
    print(f"nalu: error: {' '.join(message.split())}", file=sys.stderr)
    sys.exit(code)


app = typer.Typer(
    cls=NaluGroup,
    help="Train, evaluate, extrapolate and export neural arithmetic units (NAC, NALU, ...).",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    # Plain click help: typer's rich help imports rich.markdown and markdown_it, 0.25 s against
    # 0.11 s for `nalu --help` on this machine (median of 15). Commands still print with Rich.
    rich_markup_mode=None,
)


def _version(value: bool):
    if value:
        print(f"nalu {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, help="Show the version and exit.")
    ] = False,
):
    pass


# In the order `nalu --help` lists them.
app.command()(train.train)
app.command("eval")(reports.eval_command)
app.command()(reports.extrapolate)
app.command()(reports.inspect)
app.command()(export.plot)
app.command()(export.export)
app.command()(export.predict)
app.command()(benchmark.benchmark)


def main():
    try:
        app()
    finally:
        # Objects that live until exit are left to the process's end, not traced by the collector:
        # Python's last collections walk every object TensorFlow made (its import alone makes
        # millions), 0.65 s of a 6.4 s `nalu train --op add` here. Files are closed by then (each
        # writer closes its own), and atexit handlers still run.
        gc.freeze()
