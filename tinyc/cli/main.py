"""The `tinyc` command: a typer app whose commands live one module each.

Each command module exposes `register(app)`; a module (train_cmd, say) can be replaced
wholesale without touching this file.
"""

from __future__ import annotations

from typing import Annotated

import typer

from ..ir.version import __version__
from . import compile_cmd, export_cmd, inspect_cmd, predict_cmd, train_cmd
from .errors import set_debug

app = typer.Typer(
    name="tinyc",
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


for _module in (compile_cmd, inspect_cmd, train_cmd, predict_cmd, export_cmd):
    _module.register(app)
