"""The `tinyc` command: a typer app whose commands live one module each.

Each command module exposes `register(app)`; a module (train_cmd, say) can be replaced
wholesale without touching this file.
"""

from __future__ import annotations

import sys
from typing import Annotated

import typer
from typer.core import TyperGroup

from ..ir.version import __version__
from . import compile_cmd, export_cmd, inspect_cmd, plot_cmd, predict_cmd, train_cmd
from .errors import USAGE_ERROR, report_usage, set_debug


class _Command(typer.Typer):
    """The app as a process runs it (console script, `python -m tinyc`): a closed output pipe
    ends it as it ends every Unix tool, by SIGPIPE (the shell sees 141), quietly, wherever the
    write happens: help text, a table, a model file's print. Python ignores SIGPIPE and raises
    BrokenPipeError instead, which click turns into exit 1 and model code into a model error.
    Tests run the app through CliRunner, which does not come here (their process keeps Python's
    handling; `errors.handles_errors` maps BrokenPipeError to 141 there)."""

    def __call__(self, *args, **kwargs):
        restore_sigpipe()
        return super().__call__(*args, **kwargs)


def restore_sigpipe() -> None:
    """SIGPIPE back to its default action (die quietly), as a C program has it."""
    import signal

    if hasattr(signal, "SIGPIPE"):
        try:
            signal.signal(signal.SIGPIPE, signal.SIG_DFL)
        except ValueError:  # not the main thread: keep Python's handling
            pass


class _Group(TyperGroup):
    """The command group: a usage mistake (a value out of range, a missing option, an unknown
    command) is reported as every other user error is, one `error:` line and a `hint:` line,
    exit 2, instead of click's usage box. CliRunner comes here too, so tests see what users see."""

    def main(self, args=None, prog_name=None, complete_var=None, standalone_mode=True, **extra):
        try:
            code = super().main(args, prog_name, complete_var, standalone_mode=False, **extra)
        except USAGE_ERROR as e:
            if not standalone_mode:
                raise
            code = report_usage(e)
        except typer.Abort:
            if not standalone_mode:
                raise
            typer.echo("error: aborted", err=True)
            code = 1
        if not standalone_mode:
            return code
        sys.exit(code if isinstance(code, int) else 0)


app = _Command(
    name="tinyc",
    cls=_Group,
    help="tinyc: a small deep-learning graph compiler (model.py -> .ir -> NumPy training).",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"tinyc {__version__}")
        raise typer.Exit()


@app.callback()
def main(
    version: Annotated[bool | None, typer.Option(
        "--version", callback=_version, is_eager=True, help="Print the version and exit.")] = None,
    debug: Annotated[bool, typer.Option("--debug", help="On error, show the full Python traceback.")] = False,
) -> None:
    """tinyc: a small deep-learning graph compiler (model.py -> .ir -> NumPy training)."""
    set_debug(debug)


for _module in (compile_cmd, inspect_cmd, train_cmd, predict_cmd, export_cmd, plot_cmd):
    _module.register(app)
