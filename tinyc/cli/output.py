"""Terminal output: rich tables on a terminal, plain aligned text when piped."""

from __future__ import annotations

import io
import sys
from collections.abc import Sequence

import typer

from ..ir.numfmt import human_bytes, human_count  # noqa: F401 (the one size formatter, for the CLI)


def is_terminal() -> bool:
    return sys.stdout.isatty()


def echo(text: str = "") -> None:
    """Print text as is (never as rich markup: IR text is full of `[B,28]`)."""
    typer.echo(text)


def wrote(path: object, text: str) -> None:
    """The `wrote X: ...` line of a command that wrote file X: on stderr when X is this process's
    stdout (`-o /dev/stdout | ...`), so that the file's bytes are alone on it."""
    typer.echo(text, err=_is_stdout(path))


def _is_stdout(path: object) -> bool:
    import os

    try:
        return os.path.samestat(os.stat(path), os.fstat(sys.stdout.fileno()))
    except (OSError, ValueError, AttributeError, io.UnsupportedOperation):  # no real stdout (a test runner)
        return False


def table(headers: Sequence[str], rows: Sequence[Sequence[object]], title: str = "",
          right: Sequence[int] = ()) -> None:
    """Print a table; columns whose index is in `right` are right-aligned (numbers)."""
    cells = [[str(c) for c in row] for row in rows]
    if is_terminal():
        from rich.console import Console
        from rich.table import Table
        from rich.text import Text  # Text, not str: cells such as f32[B,28] are not markup

        t = Table(title=Text(title) if title else None, title_justify="left", highlight=False)
        for i, h in enumerate(headers):
            t.add_column(h, justify="right" if i in right else "left")
        for row in cells:
            t.add_row(*(Text(c) for c in row))
        Console(highlight=False).print(t)
        return
    widths = [max([len(h)] + [len(r[i]) for r in cells]) for i, h in enumerate(headers)]

    def line(row: Sequence[str]) -> str:
        return "  ".join(c.rjust(w) if i in right else c.ljust(w) for i, (c, w) in enumerate(zip(row, widths))).rstrip()

    if title:
        echo(title)
    echo(line(headers))
    echo(line(["-" * w for w in widths]))
    for row in cells:
        echo(line(row))
