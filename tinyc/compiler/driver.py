"""The compile driver: model file -> traced Graph -> Program with `train_step` and `predict`.

`predict` keeps the declared outputs that can be computed without the labels. Labels are the
inputs the loss needs beyond those of the outputs that need strictly less than the loss (for
`{"logits": x @ w}` with `loss = ce(logits, y)`, the label is `y`); when no output needs less
than the loss, the labels are the loss's integer inputs. `Program.meta` records both lists.
"""

from __future__ import annotations

import importlib.machinery
import importlib.util
import itertools
import os
import sys
import traceback
from collections.abc import Callable
from dataclasses import replace
from typing import Any

from ..ir.builder import Tensor, file_label, new_graph
from ..ir.errors import ModelFileError, TinycError
from ..ir.graph import Graph
from ..ir.plan import reference_batch
from ..ir.program import LOSS_OUTPUT, PREDICT_ENTRY, TRAIN_ENTRY, Program, loss_output
from ..ir.train import Train, optimizer_spec
from ..ir.version import __version__
from . import manager
from .graphutil import live_values
from .passes.dce import dce

ENTRIES = (TRAIN_ENTRY, PREDICT_ENTRY)  # the order compile_graph builds them in
_counter = itertools.count()


def _import_model(path: str):
    """Import the model file under a fresh module name, its folder first on sys.path."""
    name = file_label(path)
    folder = os.path.dirname(os.path.abspath(path))
    if not os.path.isfile(path):
        raise ModelFileError("no such model file", loc=name)
    module_name = f"_tinyc_model_{next(_counter)}"
    # an explicit loader: a model file is Python whatever its suffix (else the spec is None)
    spec = importlib.util.spec_from_file_location(module_name, path,
                                                  loader=importlib.machinery.SourceFileLoader(module_name, path))
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses and pickling look modules up by name
    sys.path.insert(0, folder)
    try:
        spec.loader.exec_module(module)
    except SyntaxError as e:
        where = file_label(e.filename or path)
        raise ModelFileError(f"syntax error: {e.msg}", loc=f"{where}:{e.lineno or 1}") from None
    except (TinycError, BrokenPipeError):  # a closed stdout is the reader's doing, not the model's
        raise
    except (Exception, SystemExit) as e:
        raise _user_error(path, e, "importing the model file") from e
    finally:
        if folder in sys.path:
            sys.path.remove(folder)
    return module


def _user_error(path: str, e: BaseException, doing: str) -> ModelFileError:
    """A ModelFileError at the innermost traceback frame in the user's file."""
    line = 1
    for frame, lineno in traceback.walk_tb(e.__traceback__):
        if os.path.abspath(frame.f_code.co_filename) == os.path.abspath(path):
            line = lineno
    loc = f"{file_label(path)}:{line}"
    if isinstance(e, SystemExit):  # not tinyc's exit: the model file must return, not end the process
        return ModelFileError(f"{doing}: the model file called sys.exit({e.code!r})", loc=loc,
                              hint="a model file defines functions; tinyc ends the process")
    text = f"{type(e).__name__}: {e}" if str(e) else type(e).__name__
    return ModelFileError(f"{doing}: {text}", loc=loc)


def trace_model_file(path: str, entry: str = "model") -> tuple[Graph, Train]:
    """Import `path`, call its `entry` inside a fresh graph, return the traced Graph and Train."""
    name = file_label(path)
    graph_name = os.path.splitext(name)[0]
    with new_graph(graph_name) as b:
        module = _import_model(path)
        fn = getattr(module, entry, None)
        if not callable(fn):
            raise ModelFileError(f"defines no function {entry!r}", loc=f"{name}:1",
                                 hint=f"define `def {entry}():` returning tc.Train(loss, ...), or pass --entry")
        line = getattr(getattr(fn, "__code__", None), "co_firstlineno", 1)
        try:
            train = fn()
        except (TinycError, BrokenPipeError):
            raise
        except (Exception, SystemExit) as e:
            raise _user_error(path, e, f"calling {entry}()") from e
        if not isinstance(train, Train):
            raise ModelFileError(f"{entry}() returned {type(train).__name__}, not tc.Train",
                                 loc=f"{name}:{line}", hint="return tc.Train(loss, outputs={...}, optimizer=...)")
        graph = _train_graph(b, train, f"{name}:{line}")
    return graph, train


def _train_graph(b, train: Train, loc: str) -> Graph:
    if not isinstance(train.loss, Tensor) or train.loss.builder is not b:
        raise ModelFileError("tc.Train(loss=...) must be a Tensor traced in this model", loc=loc)
    if train.loss.type.shape != () or not train.loss.type.is_float:
        raise ModelFileError(f"the loss must be a float scalar, got {train.loss.type}", loc=loc,
                             hint="reduce it with .mean() or .sum()")
    outputs = dict(train.outputs)
    if LOSS_OUTPUT in outputs:
        raise ModelFileError("outputs may not be named 'loss': the loss is always an output", loc=loc)
    for key, t in outputs.items():
        if not isinstance(t, Tensor) or t.builder is not b:
            raise ModelFileError(f"output {key!r} must be a Tensor traced in this model", loc=loc)
    try:
        meta = {"loss": LOSS_OUTPUT, "optimizer": optimizer_spec(train.optimizer), "train": train.defaults()}
    except TinycError as e:  # the settings of tc.Train(...): point at the function that returned it
        raise ModelFileError(e.message, loc=loc, hint=e.hint) from None
    return b.graph({LOSS_OUTPUT: train.loss, **outputs}, meta=meta)


def _input_deps(graph: Graph, value: str) -> frozenset[str]:
    names = {i.name for i in graph.inputs}
    return frozenset(v for v in live_values(graph, [value]) if v in names)


def split_inputs(graph: Graph) -> tuple[list[str], list[str]]:
    """(data inputs, label inputs) of a traced training graph (rule in the module docstring)."""
    outs = dict(graph.outputs)
    loss_deps = _input_deps(graph, outs[loss_output(graph.meta)])
    others = [_input_deps(graph, v) for k, v in graph.outputs if k != loss_output(graph.meta)]
    smaller = [d for d in others if d < loss_deps]
    if smaller:
        labels = loss_deps - frozenset().union(*smaller)
    else:
        types = graph.types
        labels = frozenset(v for v in loss_deps if types[v].is_exact)
    order = [i.name for i in graph.inputs]
    return [v for v in order if v not in labels], [v for v in order if v in labels]


def compile_graph(graph: Graph, on_pass: Callable | None = None) -> tuple[Program, dict[str, list]]:
    """Compile a traced training graph into a Program; also returns each entry's PassStats.

    `on_pass(index, name, graph, stats)` is the pass manager's hook; it sees train_step's passes
    first, then predict's (`index` restarts at 0 with each entry, in ENTRIES order).
    """
    batch = reference_batch(graph.meta)
    data, labels = split_inputs(graph)

    train, train_stats = manager.run_entry(TRAIN_ENTRY, graph, manager.DEFAULT_PIPELINE, on_pass=on_pass, batch=batch)
    entries = {TRAIN_ENTRY: train}
    stats = {TRAIN_ENTRY: train_stats}
    loss = loss_output(graph.meta)
    label_set = set(labels)
    keep = [(k, v) for k, v in graph.outputs if k != loss and not (_input_deps(graph, v) & label_set)]
    if keep:
        meta = {k: v for k, v in graph.meta.items() if k == "train"}  # predict needs no loss or optimizer
        fwd = _prune(replace(graph, outputs=tuple(keep), updates=(), meta=meta))
        predict, predict_stats = manager.run_entry(PREDICT_ENTRY, fwd, manager.FORWARD_PIPELINE,
                                                   on_pass=on_pass, batch=batch)
        entries[PREDICT_ENTRY] = predict
        stats[PREDICT_ENTRY] = predict_stats
    program_meta: dict[str, Any] = {
        "train": dict(graph.meta.get("train", {})),
        "optimizer": dict(graph.meta.get("optimizer", {})),
        "model": graph.name,
        "tinyc": __version__,
        "data_inputs": data,
        "label_inputs": labels,
    }
    return Program(entries, program_meta), stats


def _prune(graph: Graph) -> Graph:
    """Only the nodes, inputs and parameters the outputs need (labels drop out of predict)."""
    graph = dce(graph)  # nodes and constants
    live = live_values(graph)
    return replace(graph, inputs=tuple(i for i in graph.inputs if i.name in live),
                   params=tuple(p for p in graph.params if p.name in live))


def compile_file(path: str, entry: str = "model", on_pass: Callable | None = None) -> tuple[Program, dict[str, list]]:
    """Trace and compile a model file."""
    graph, _ = trace_model_file(path, entry)
    program, stats = compile_graph(graph, on_pass)
    meta = dict(program.meta)
    meta["model"] = file_label(path)
    return Program(program.entries, meta), stats
