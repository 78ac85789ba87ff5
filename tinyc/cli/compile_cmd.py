"""`tinyc compile MODEL.py -o OUT.ir`: trace, run the pass pipeline, write the program."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from ..ir.fileio import atomic_write, check_output_folder, check_outputs
from .errors import DebugOption, EntryOption, fail, handles_errors
from .output import echo, human_bytes, table, wrote
from .session import Compiled, compile_model
from .views import param_count, planned_peak


@handles_errors
def compile(
    model: Annotated[Path | None, typer.Argument(
        help="Model file whose model() (or --entry) returns tc.Train.", metavar="MODEL.py",
        show_default=False)] = None,
    output: Annotated[Path | None, typer.Option(
        "-o", "--output", help="Program file to write (default: MODEL's name with .ir, in the current directory).",
        show_default=False)] = None,
    entry: EntryOption = "model",
    dump_dir: Annotated[Path | None, typer.Option(
        "--dump-dir", help="Write the IR text before and after every pass: DIR/<entry>/NN-<pass>.txt.",
        show_default=False)] = None,
    list_passes: Annotated[bool, typer.Option("--list-passes", help="List the registered passes and exit.")] = False,
    debug: DebugOption = False,
) -> None:
    """Compile a model file into a program file (.ir) that `tinyc run` trains."""
    if list_passes:
        print_passes()
        return
    if model is None:
        raise fail("missing MODEL (a model file such as examples/mlp_mnist.py)",
                   hint="tinyc compile MODEL.py -o MODEL.ir")
    if model.suffix == ".ir":
        raise fail(f"{model} is a compiled program, not a model file", hint=f"tinyc inspect {model}")
    out = output if output is not None else Path(model.stem + ".ir")
    check_outputs([("", out)], inputs=[model])  # before compiling, not after
    if dump_dir is not None:
        check_output_folder(dump_dir, "--dump-dir")
    compiled = compile_model(model, entry)
    if dump_dir is not None:
        write_dumps(compiled, dump_dir)
    from ..ir import codec

    codec.save_program(compiled.program, str(out))
    wrote(out, summary_line(compiled, out))


def summary_line(compiled: Compiled, out: Path) -> str:
    """`wrote mlp.ir: train_step 160 nodes, predict 12 nodes; 101,770 params; planned peak 1.2 MiB (train_step at batch 64)`."""
    program = compiled.program
    entries = ", ".join(f"{name} {len(e.graph.nodes)} nodes" for name, e in program.entries.items())
    params = max((param_count(e.graph)[1] for e in program.entries.values()), default=0)
    text = f"wrote {out}: {entries}; {params:,} params"
    peak = planned_peak(program)
    if peak is not None:
        text += f"; planned peak {human_bytes(peak[0])} ({peak[2]}" + (f" at batch {peak[1]})" if peak[1] is not None else ")")
    return text


def write_dumps(compiled: Compiled, dump_dir: Path) -> None:
    """DIR/<entry>/00-trace.txt, 01-verify.txt, ...: the IR text before any pass, then after each."""
    from ..ir.printer import format_graph

    for entry_name, steps in compiled.history.items():
        folder = dump_dir / entry_name
        folder.mkdir(parents=True, exist_ok=True)
        for index, (pass_name, graph) in enumerate(steps):
            atomic_write(folder / f"{index:02d}-{pass_name}.txt", format_graph(graph).encode())


def print_passes() -> None:
    """Every registered pass with its one-line description, default pipeline order first."""
    from ..compiler.manager import DEFAULT_PIPELINE
    from ..compiler.passes import load_all

    passes = load_all()  # every pipeline name is registered (tests/compiler/test_manager.py)
    order = list(DEFAULT_PIPELINE) + sorted(n for n in passes if n not in DEFAULT_PIPELINE)
    table(["pass", "description"], [(n, passes[n].description) for n in order])
    echo(f"default pipeline: {' -> '.join(DEFAULT_PIPELINE)}")


def register(app: typer.Typer) -> None:
    app.command("compile")(compile)
