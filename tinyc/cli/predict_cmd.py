"""`tinyc predict MODEL.ir --weights W INPUT...`: the top classes of image files, `.npy` arrays or
examples of a data set, as a table or as JSON lines (`--json`, with the logits)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any

import numpy as np
import typer

from ..ir.errors import DataError
from ..ir.program import PREDICT_ENTRY
from .errors import DebugOption, EntryOption, handles_errors, opt
from .output import echo, table
from .session import load_or_compile
from .train_cmd import DataDirOption, ProgramArgument, WeightsOption, _load_data


@dataclass
class Example:
    name: str  # how the output names it: a file, file[i], or mnist test #i
    array: np.ndarray
    label: int | None = None
    pixels: bool = False  # from an image file or a data set: raw integers are pixels (x / 255) by default


@handles_errors
def predict(
    model: ProgramArgument,
    weights: WeightsOption,
    inputs: Annotated[list[Path] | None, typer.Argument(
        help="Image files (PNG, JPEG, ...), .npy arrays (one example, or a batch), or folders of them.",
        metavar="INPUT...",
        show_default=False)] = None,
    data: Annotated[str | None, opt("--data", "Predict examples of a data set instead: mnist, fashion-mnist, idx:DIR.")] = None,
    split: Annotated[str, typer.Option("--split", help="The data set's split: train or test.")] = "test",
    index: Annotated[str, typer.Option("--index", help="Examples of --data: N, or A:B (from A up to B).")] = "0:10",
    data_dir: DataDirOption = None,
    top: Annotated[int, typer.Option("--top", help="Classes shown per input.", min=1)] = 3,
    as_json: Annotated[bool, typer.Option("--json", help="One JSON object per input (top classes and logits).")] = False,
    resize: Annotated[bool, typer.Option("--resize", help="Scale images to the input's size.")] = False,
    grey: Annotated[bool, typer.Option("--grey", help="Convert colour images to greyscale.")] = False,
    batch_size: Annotated[int, typer.Option("--batch-size", help="Examples per forward pass.", min=1)] = 256,
    entry: EntryOption = "model",
    debug: DebugOption = False,
) -> None:
    """Classify image files, .npy arrays or data-set examples with trained weights: top classes and probabilities."""
    from ..runtime.executor import Executor
    from ..runtime.trainer import logits_output

    if not inputs and data is None:
        raise DataError("nothing to predict: give image or .npy files, or --data NAME")
    if inputs and data is not None:
        raise DataError("give INPUT files or --data, not both")
    program = load_or_compile(model, entry).program
    graph = program.entry(PREDICT_ENTRY).graph
    if len(graph.inputs) != 1:
        raise DataError(f"predict takes programs with one input; this one has {len(graph.inputs)} "
                        f"({', '.join(i.name for i in graph.inputs)})", hint="use the Python API: Executor.predict")
    (inp,) = graph.inputs
    executor = Executor(program)
    executor.load_weights(str(weights))
    if data is not None:
        examples = _dataset_examples(data, data_dir, split, index, inp.name)
    else:
        shape = inp.type.shape[1:]
        examples = [e for path, folder in _files(inputs) for e in _file_examples(path, shape, resize, grey, folder)]
    logits_name = logits_output(program)
    logits = np.concatenate([
        executor.predict({inp.name: _feed(inp, examples[s:s + batch_size])})[logits_name]
        for s in range(0, len(examples), batch_size)
    ])
    _report(examples, logits, min(top, logits.shape[-1]), as_json)


def _feed(inp: Any, batch: list[Example]) -> np.ndarray:
    """A batch for the input: raw pixels without a declared rule get the data sets' x / 255."""
    from ..runtime.datasets.dataset import PIXELS
    from ..runtime.feeds import prepare

    arrays = [prepare(inp.name, e.array, inp.type, inp.preprocess, PIXELS if e.pixels else None) for e in batch]
    try:
        return np.stack(arrays)
    except ValueError:
        shapes = sorted({f"{e.name}: {list(e.array.shape)}" for e in batch})
        raise DataError(f"inputs of different shapes: {', '.join(shapes[:2])}") from None


def _files(inputs: list[Path]) -> list[tuple[Path, Path | None]]:
    """Each input file, and the files of each folder (by name; hidden ones skipped), with its folder."""
    files: list[tuple[Path, Path | None]] = []
    for path in inputs:
        if not path.is_dir():
            files.append((path, None))
            continue
        inside = sorted(p for p in path.iterdir() if not p.name.startswith("."))
        if not inside:
            raise DataError(f"{path}: an empty folder")
        files += [(p, path) for p in inside]
    return files


def _file_examples(path: Path, shape: tuple, resize: bool, grey: bool, folder: Path | None = None) -> list[Example]:
    """The examples in one file: an image, or a .npy array of one example or a batch of them."""
    from ..runtime.datasets.images import IMAGE_SUFFIXES, read_image

    suffix = path.suffix.lower()
    if suffix == ".npy":
        try:
            array = np.load(path, allow_pickle=False)
        except OSError as e:
            raise DataError(f"{path}: cannot read ({e.strerror or e})") from None
        except ValueError as e:
            raise DataError(f"{path}: not a NumPy array file ({e})") from None
        if array.dtype.kind == "f" and not np.isfinite(array).all():  # its classes would read "nan%"
            raise DataError(f"{path}: the array holds NaN or infinite values")
        rank = len(shape)
        if array.ndim == rank:
            return [Example(str(path), array)]
        if array.ndim == rank + 1:
            return [Example(f"{path}[{i}]", a) for i, a in enumerate(array)]
        raise DataError(f"{path}: an array of shape {list(array.shape)}, but the input takes examples of shape "
                        f"{list(shape)} (or a batch of them)")
    if suffix in IMAGE_SUFFIXES and not path.is_dir():
        return [Example(str(path), read_image(str(path), shape, resize=resize, grey=grey), pixels=True)]
    if not path.exists():
        raise DataError(f"{path}: no such file or folder")
    what = "a folder" if path.is_dir() else f"not an image ({', '.join(IMAGE_SUFFIXES)}) or a .npy file"
    hint = f"predict reads the files directly in {folder}: name the ones to read, e.g. {folder}/*.png" if folder else ""
    raise DataError(f"{path}: {what}", hint=hint)


def _dataset_examples(name: str, data_dir: Path | None, split: str, index: str, field: str) -> list[Example]:
    """The chosen examples of the data set's field named as the program's input (as `tinyc run` binds it)."""
    if split not in ("train", "test"):
        raise DataError(f"--split must be train or test, got {split!r}")
    part = _load_data(name, data_dir, err=True)[split]  # stdout holds the predictions alone
    if field not in part:  # an npz's arrays are named by the user
        raise DataError(f"program input {field!r} has no field in data set {name} (fields: {', '.join(part)})",
                        hint="name the model's inputs after the data set's fields")
    chosen = _indices(index, len(part))
    if not chosen:
        raise DataError(f"--index {index}: not N or A:B within the {len(part):,} examples of {name} {split}")
    labels = part.get("label")
    pixels = field in part.raw_rules  # raw integers the data set says are pixels (an npz's uint8 arrays)
    return [Example(f"{name} {split} #{i}", part[field][i], None if labels is None else int(labels[i]),
                    pixels=pixels) for i in chosen]


def _indices(index: str, n: int) -> range:
    """The examples `--index` names (N or A:B, as a Python slice); empty when it names none."""
    try:
        if ":" in index:
            start, stop = (int(v) if v else None for v in index.split(":"))
            return range(n)[start:stop]
        i = int(index)
    except ValueError:
        return range(0)
    return range(i, i + 1) if 0 <= i < n else range(0)


def _report(examples: list[Example], logits: np.ndarray, k: int, as_json: bool) -> None:
    shifted = logits.astype(np.float64) - logits.max(axis=-1, keepdims=True)
    probs = np.exp(shifted) / np.exp(shifted).sum(axis=-1, keepdims=True)
    order = np.argsort(-probs, axis=-1, kind="stable")[:, :k]
    if as_json:
        for e, row, p, z in zip(examples, order, probs, logits):
            record = {"input": e.name, "top": [{"class": int(c), "probability": float(p[c])} for c in row],
                      "logits": [float(v) for v in z]}
            if e.label is not None:
                record["label"] = e.label
            echo(json.dumps(record))
        return
    labelled = any(e.label is not None for e in examples)
    headers = ["input", *(["label"] if labelled else []), *(f"#{i + 1}" for i in range(k))]
    rows = [[e.name, *([str(e.label)] if labelled else []), *(f"{c} ({p[c]:.2%})" for c in row)]
            for e, row, p in zip(examples, order, probs)]
    table(headers, rows, right=tuple(range(1, len(headers))))


def register(app: typer.Typer) -> None:
    app.command("predict")(predict)
