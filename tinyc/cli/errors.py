"""How the CLI reports failures: one line on stderr, no traceback unless `--debug`.

A TinycError (the user's file:line first, then a `hint:` line when there is one) or an OSError
exits 2; an unexpected exception is an internal error and exits 1; Ctrl-C exits 130; a closed
output pipe (`| head`) ends quietly with 141.
"""

from __future__ import annotations

import functools
import sys
import traceback
from collections.abc import Callable
from typing import Annotated, Any

import typer

from ..ir.errors import TinycError

USER_ERROR = 2
INTERNAL_ERROR = 1
INTERRUPTED = 130  # 128 + SIGINT, what shells report for Ctrl-C
BROKEN_PIPE = 141  # 128 + SIGPIPE, what a C tool killed by a closed pipe reports

# Set by the app callback (`tinyc --debug CMD`); reset on every invocation. In a data-parallel
# run `launch.join` sets `prefix` ("[rank 1] ") and `on_fatal`, which ends the whole job.
_STATE: dict[str, Any] = {"debug": False, "prefix": "", "on_fatal": None}

# Exceptions a command passes on: deliberate exits, and click's usage errors, which the command
# group (`main._Group`) reports with `report_usage`. Recent typer vendors click and does not
# install it, so click is never imported here by name.
USAGE_ERROR = next(c for c in typer.BadParameter.__mro__ if c.__name__ == "ClickException")
_PASS_THROUGH = (typer.Exit, typer.Abort, USAGE_ERROR, SystemExit)

DebugOption = Annotated[bool, typer.Option("--debug", help="On error, show the full Python traceback.")]
# --entry means the model file's function in every command, as in `tinyc compile`
EntryOption = Annotated[str, typer.Option("--entry", help="Function of the model file to call.")]


def opt(flag: str, text: str, **kw: Any) -> Any:
    """A command-line option whose help says its default itself (or has none worth showing)."""
    return typer.Option(flag, help=text, show_default=False, **kw)


def set_debug(on: bool) -> None:
    _STATE["debug"] = bool(on)


def set_rank(prefix: str, on_fatal: Callable[[int], None] | None) -> None:
    """Errors start with `prefix`; an error on this rank alone calls `on_fatal(exit code)`."""
    _STATE["prefix"], _STATE["on_fatal"] = prefix, on_fatal


def fail(message: str, hint: str = "") -> typer.Exit:
    """Print `error: message` (and `hint:`) to stderr; return the Exit to raise."""
    typer.echo(f"{_STATE['prefix']}error: {message}", err=True)
    if hint:
        typer.echo(f"{_STATE['prefix']}hint: {hint}", err=True)
    return typer.Exit(USER_ERROR)


def report(exc: BaseException, debug: bool) -> int:
    """Print `exc` the CLI way and return the exit code."""
    if debug:
        traceback.print_exception(type(exc), exc, exc.__traceback__, file=sys.stderr)
    rank = _STATE["prefix"]
    if isinstance(exc, TinycError):
        first, *rest = str(exc.message).splitlines() or [""]
        typer.echo(f"{rank}error: {exc.loc + ': ' if exc.loc else ''}{first}", err=True)
        if debug and rest:  # verifier context (IR lines around the node) is for compiler work
            typer.echo("\n".join(rest), err=True)
        if exc.hint:
            typer.echo(f"{rank}hint: {exc.hint}", err=True)
        return USER_ERROR
    if isinstance(exc, OSError):
        what = f"{exc.filename}: {exc.strerror}" if exc.filename and exc.strerror else str(exc)
        typer.echo(f"{rank}error: {what}", err=True)
        return USER_ERROR
    if isinstance(exc, KeyboardInterrupt):
        typer.echo(f"{rank}error: interrupted", err=True)
        return INTERRUPTED
    first = (str(exc).splitlines() or [""])[0]
    typer.echo(f"{rank}internal error: {type(exc).__name__}: {first}", err=True)
    if not debug:
        typer.echo("run with --debug for the traceback", err=True)
    return INTERNAL_ERROR


def report_usage(exc: Exception) -> int:
    """Print a usage mistake (click's, e.g. `--epochs -1`) as one `error:` line and a `hint:`
    naming the command's help; return the exit code (2)."""
    if type(exc).__name__ == "NoArgsIsHelpError":  # `tinyc` alone: the help is the answer
        exc.show()
        return USER_ERROR
    ctx = getattr(exc, "ctx", None)
    typer.echo(f"error: {exc.format_message()}", err=True)
    typer.echo(f"hint: {ctx.command_path if ctx else 'tinyc'} --help", err=True)
    return USER_ERROR


def _silence_stdout() -> None:
    # Point stdout at /dev/null so that the interpreter's final flush does not fail again.
    import os

    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError):  # no real file descriptor (e.g. under a test runner)
        pass


def handles_errors(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Wrap a command so that errors print as one line (see module doc); honours `debug=`."""

    @functools.wraps(fn)
    def command(*args: Any, **kwargs: Any) -> Any:
        debug = bool(kwargs.get("debug")) or _STATE["debug"]
        try:
            return fn(*args, **kwargs)
        except _PASS_THROUGH:
            raise
        except BrokenPipeError:  # `tinyc inspect m.ir | head`: the reader left; stop quietly
            _silence_stdout()
            raise typer.Exit(BROKEN_PIPE) from None
        except BaseException as exc:  # noqa: BLE001 - the CLI's single reporting point
            code = report(exc, debug)
            if _STATE["on_fatal"] is not None and not getattr(exc, "every_rank", False):
                _STATE["on_fatal"](code)  # the other ranks would wait for this one forever: end the job
            raise typer.Exit(code) from None

    return command
