"""`tinyc export MODEL.ir --weights CKPT -o OUT`: trained weights alone (safetensors) or the
`predict` entry as an ONNX model that other tools run."""

from __future__ import annotations

from enum import Enum
from pathlib import Path
from typing import Annotated

import typer

from ..ir.fileio import atomic_write, check_outputs, is_stream
from ..ir.program import PREDICT_ENTRY
from ..ir.types import format_shape
from .errors import DebugOption, EntryOption, handles_errors, opt
from .output import human_bytes, wrote
from .session import load_or_compile
from .train_cmd import ProgramArgument, WeightsOption


class Format(str, Enum):
    safetensors = "safetensors"
    onnx = "onnx"


@handles_errors
def export(
    model: ProgramArgument,
    weights: WeightsOption,
    output: Annotated[Path, typer.Option("-o", "--output", help="File to write.", show_default=False)],
    format: Annotated[Format | None, opt(
        "--format", "safetensors (weights only) or onnx (the predict entry); default: from OUT's suffix.")] = None,
    entry: EntryOption = "model",
    debug: DebugOption = False,
) -> None:
    """Write trained weights alone (safetensors) or the predict entry as an ONNX model."""
    from ..runtime.executor import Executor

    format = format or (Format.onnx if output.suffix.lower() == ".onnx" else Format.safetensors)
    check_outputs([("-o", output)], inputs=[model, weights])
    program = load_or_compile(model, entry).program
    executor = Executor(program)
    executor.load_weights(str(weights))
    name = program.meta.get("model") or model.stem
    if format is Format.safetensors:
        executor.save_weights(str(output))
        # a device or pipe's size says nothing of what went into it (0 B; onto `>> log`, the whole log)
        size = "" if is_stream(output) else f" ({human_bytes(output.stat().st_size)})"
        wrote(output, f"wrote {output}: {len(executor.weight_names)} weight tensors of {name}{size}")
        return
    from ..export.onnx_model import OPSET, encode_onnx

    graph = program.entry(PREDICT_ENTRY).graph
    data = encode_onnx(program, {p.name: executor.params[p.name] for p in graph.params})
    atomic_write(output, data)
    ins = ", ".join(f"{i.name} {_raw_type(i)}" for i in graph.inputs)
    outs = ", ".join(f"{n} {graph.types[v]}" for n, v in graph.outputs)
    wrote(output, f"wrote {output}: the predict entry of {name} as ONNX (opset {OPSET}), {ins} -> {outs} "
         f"({human_bytes(len(data))})")


def _raw_type(i) -> str:
    """What the ONNX model takes: the raw data when the input declares preprocessing."""
    if not i.preprocess:
        return str(i.type)
    return f"{i.preprocess['raw']}{format_shape(i.type.shape)}"


def register(app: typer.Typer) -> None:
    app.command("export")(export)
