"""Binding a run: feeds to a graph's inputs, symbolic dims to sizes, attributes to those sizes.

Both executors (the planned `Executor` and the reference `run_graph`) and the data-set binding
(`datasets.bind`) check feeds here, so one mistake raises one error with one message: a
DataError naming the input, its type and the shape or dtype it was fed. Each fed array then
goes through the input's declared preprocessing (`feeds.prepare`).
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from typing import Any

import numpy as np

from ..ir.errors import DataError, IRError, ShapeError
from ..ir.graph import Graph, Input, Node
from ..ir.ops import OPS
from ..ir.types import TensorType, format_shape, resolve_shape
from .feeds import prepare

# NumPy kinds of data each kind of input takes (cast on the way in): floats take any number,
# integers take integers, bools only bools.
FEEDABLE_KINDS = {"f": "fiu", "i": "iu", "b": "b"}


def bind_feeds(inputs: Sequence[Input], feeds: Mapping[str, Any], required: Collection[str] | None = None,
               entry: str = "") -> tuple[dict[str, np.ndarray], dict[str, int]]:
    """(fed arrays by input name, preprocessed; symbolic dim -> size read off their shapes);
    DataError on any missing input, wrong dtype, rank, dim, or a symbol two inputs disagree on.

    `required` names the inputs that must be fed (default: all); others are checked when fed.
    """
    where = f"entry {entry!r}: " if entry else ""
    arrays: dict[str, np.ndarray] = {}
    bindings: dict[str, int] = {}
    bound_by: dict[str, str] = {}
    for inp in inputs:
        name, t = inp.name, inp.type
        if name not in feeds:
            if required is None or name in required:
                raise DataError(f"{where}input {name!r} ({t}) was not fed (fed: {', '.join(sorted(feeds)) or 'nothing'})",
                                hint=f"feed an array of type {t} under the name {name!r}")
            continue
        a = np.asarray(feeds[name])
        check_feed(name, t, a, bindings, bound_by, where)
        arrays[name] = prepare(name, a, t, inp.preprocess)
    return arrays, bindings


def check_feed(name: str, t: TensorType, a: np.ndarray, bindings: dict[str, int], bound_by: dict[str, str],
               where: str = "", records: bool = False) -> None:
    """Refuse array `a` for input `name` of type `t` (DataError) on a wrong kind of data, rank or
    dim, or a symbol bound otherwise by the input `bound_by[symbol]`; else bind t's symbols.

    With `records`, axis 0 of `a` is a data set's record axis (shown as N): the batch, bound
    per batch by the executor, so neither checked nor bound here.
    """
    if a.dtype.kind not in FEEDABLE_KINDS[t.np_dtype.kind]:
        raise DataError(f"{where}input {name!r} is {t} but was fed {a.dtype} data",
                        hint=f"convert it, e.g. np.asarray(x, dtype='{t.np_dtype}')")
    shape = format_shape(("N", *a.shape[1:]) if records and a.ndim else a.shape)
    if a.ndim != t.rank:
        raise DataError(f"{where}input {name!r} is {t} (rank {t.rank}) but was fed an array of shape "
                        f"{shape} (rank {a.ndim})")
    for axis, (dim, size) in enumerate(zip(t.shape, a.shape)):
        if records and axis == 0:
            continue
        if isinstance(dim, int):
            if dim != size:
                raise DataError(f"{where}input {name!r} is {t} but was fed shape {shape}: "
                                f"dim {axis} is {size}, expected {dim}")
        elif dim not in bindings:
            bindings[dim], bound_by[dim] = size, name
        elif bindings[dim] != size:
            raise DataError(f"{where}input {name!r} is {t} and was fed shape {shape}: "
                            f"{dim}={size} here but {dim}={bindings[dim]} in input {bound_by[dim]!r}")


def resolve_dims(t: TensorType | Sequence, bindings: Mapping[str, int], node: Node) -> tuple[int, ...]:
    """A node's shape (or shape attribute) with its symbols replaced by their sizes."""
    shape = t.shape if isinstance(t, TensorType) else t
    try:
        return resolve_shape(tuple(shape), bindings)
    except KeyError as e:
        raise ShapeError(f"{node.op} %{node.out}: symbol {e.args[0]} is not bound by any fed input",
                         loc=node.where()) from None


def resolve_attrs(node: Node, graph: Graph, bindings: Mapping[str, int]) -> dict[str, Any]:
    """The node's attributes as its kernel takes them: attributes of kind "shape" in the op
    schema with symbols replaced by sizes; a constant gets its array as `value`."""
    spec = OPS[node.op].attrs if node.op in OPS else {}
    attrs = {k: resolve_dims(v, bindings, node) if k in spec and spec[k].kind == "shape" else v
             for k, v in node.attrs.items()}
    if node.op == "constant":
        if attrs["name"] not in graph.constants:
            raise IRError(f"constant %{node.out}: no array named {attrs['name']!r} in the graph", loc=node.where())
        attrs["value"] = graph.constants[attrs["name"]]
    return attrs
