"""The reference executor: runs a Graph node by node with the NumPy kernels, nothing clever.

It is the semantic reference that tests of passes, gradients and the planned Executor compare
against: no buffer reuse, no in-place updates, every result checked against its node's type.
Only the nodes that the requested results depend on run, so inputs nothing needs may be left
unfed and a dead node cannot fail.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np

from tinyc.ir.errors import IRError, ShapeError, TinycError
from tinyc.ir.graph import Graph, Node, live_values
from tinyc.ir.types import TensorType, resolve_shape

from .feeds import prepare
from .init import init_param
from .kernels import KERNELS

# which NumPy dtype kinds may be fed to an input of each dtype (then cast to it)
_FEEDABLE_KINDS = {"f32": "fiu", "f64": "fiu", "i64": "iu", "bool": "b"}
# attributes that may hold symbolic dims
_SHAPE_ATTRS = ("shape",)


def _fmt_shape(shape: Sequence) -> str:
    return "[" + ",".join(str(d) for d in shape) + "]"


def bind_symbols(graph: Graph, feeds: Mapping[str, Any], required: Sequence[str] | None = None) -> dict[str, int]:
    """Symbolic dim -> size, read off the fed inputs' shapes; ShapeError on any disagreement.

    `required` names the inputs that must be fed (default: all of them); other inputs are
    checked only when fed.
    """
    required = {i.name for i in graph.inputs} if required is None else set(required)
    bindings: dict[str, int] = {}
    bound_by: dict[str, str] = {}
    for inp in graph.inputs:
        if inp.name not in feeds:
            if inp.name in required:
                fed = ", ".join(sorted(feeds)) or "nothing"
                raise ShapeError(
                    f"input {inp.name!r} was not fed (fed: {fed})",
                    hint=f"feed an array of type {inp.type} under the name {inp.name!r}",
                )
            continue
        arr = np.asarray(feeds[inp.name])
        if arr.dtype.kind not in _FEEDABLE_KINDS[inp.type.dtype]:
            raise ShapeError(
                f"input {inp.name!r} is {inp.type} but was fed {arr.dtype} data",
                hint=f"convert it, e.g. np.asarray(x, dtype='{inp.type.np_dtype}')",
            )
        if arr.ndim != inp.type.rank:
            raise ShapeError(
                f"input {inp.name!r} is {inp.type} (rank {inp.type.rank}) but was fed an array of shape "
                f"{_fmt_shape(arr.shape)} (rank {arr.ndim})"
            )
        for axis, (dim, size) in enumerate(zip(inp.type.shape, arr.shape)):
            if isinstance(dim, int):
                if dim != size:
                    raise ShapeError(
                        f"input {inp.name!r} is {inp.type} but was fed shape {_fmt_shape(arr.shape)}: "
                        f"dim {axis} is {size}, expected {dim}"
                    )
            elif dim not in bindings:
                bindings[dim], bound_by[dim] = size, inp.name
            elif bindings[dim] != size:
                raise ShapeError(
                    f"input {inp.name!r} is {inp.type} and was fed shape {_fmt_shape(arr.shape)}: "
                    f"{dim}={size} here but {dim}={bindings[dim]} in input {bound_by[dim]!r}"
                )
    return bindings


def _resolve(shape: Sequence, bindings: Mapping[str, int], node: Node) -> tuple[int, ...]:
    try:
        return resolve_shape(tuple(shape), bindings)
    except KeyError as e:
        raise ShapeError(
            f"{node.op} %{node.out}: symbol {e.args[0]} is not bound by any fed input", loc=node.where()
        ) from None


def _cast_param(name: str, value: Any, t: TensorType) -> np.ndarray:
    arr = np.asarray(value)
    if arr.shape != tuple(t.shape):
        raise ShapeError(f"parameter {name!r} is {t} but was given an array of shape {_fmt_shape(arr.shape)}")
    return arr.astype(t.np_dtype, copy=False)


def _run_node(node: Node, args: list[np.ndarray], graph: Graph, bindings: Mapping[str, int]) -> np.ndarray:
    """Run one node's kernel and check its result against the node's type."""
    attrs = dict(node.attrs)
    for key in _SHAPE_ATTRS:
        if key in attrs:
            attrs[key] = _resolve(attrs[key], bindings, node)
    if node.op == "constant":
        if attrs["name"] not in graph.constants:
            raise IRError(f"constant %{node.out}: no array named {attrs['name']!r} in the graph", loc=node.where())
        attrs["value"] = graph.constants[attrs["name"]]
    if node.op not in KERNELS:
        raise IRError(f"{node.op} %{node.out}: no kernel for op {node.op!r}", loc=node.where())
    try:
        result = KERNELS[node.op](*args, **attrs)
    except TinycError as e:
        raise type(e)(f"{node.op} %{node.out}: {e.message}", loc=e.loc or node.where(), hint=e.hint) from e
    except (ValueError, IndexError, TypeError) as e:
        ins = ", ".join(_fmt_shape(a.shape) for a in args)
        raise ShapeError(
            f"{node.op} %{node.out} failed on inputs of shape {ins or '(none)'}: {e}", loc=node.where()
        ) from e
    want = (_resolve(node.type.shape, bindings, node), node.type.np_dtype)
    if (result.shape, result.dtype) != want:
        raise IRError(
            f"{node.op} %{node.out}: kernel returned {result.dtype}{_fmt_shape(result.shape)}, "
            f"node type is {node.type} = {want[1]}{_fmt_shape(want[0])}",
            loc=node.where(),
        )
    return result


def evaluate(
    graph: Graph,
    targets: Sequence[str],
    feeds: Mapping[str, Any],
    params: Mapping[str, Any] | None = None,
    seed: int = 0,
) -> dict[str, np.ndarray]:
    """Compute the values `targets` (value names); params missing from `params` take their init."""
    needed = live_values(graph, targets)
    required = [i.name for i in graph.inputs if i.name in needed]
    bindings = bind_symbols(graph, feeds, required)
    env: dict[str, np.ndarray] = {}
    for inp in graph.inputs:
        if inp.name in feeds:
            env[inp.name] = prepare(inp.name, feeds[inp.name], inp.type, inp.preprocess).astype(inp.type.np_dtype, copy=False)
    params = params or {}
    for p in graph.params:
        if p.name in params:
            env[p.name] = _cast_param(p.name, params[p.name], p.type)
        elif p.name in needed:
            env[p.name] = init_param(p, seed)
    for node in graph.nodes:
        if node.out in needed:
            env[node.out] = _run_node(node, [env[v] for v in node.inputs], graph, bindings)
    missing = [v for v in targets if v not in env]
    if missing:
        raise IRError(f"graph {graph.name!r}: value(s) {', '.join('%' + v for v in missing)} are never defined")
    return {v: env[v] for v in targets}


def run_graph(
    graph: Graph, feeds: Mapping[str, Any], params: Mapping[str, Any] | None = None, seed: int = 0
) -> dict[str, np.ndarray]:
    """Run `graph` once: its outputs keyed by output name, its updates keyed by parameter name.

    `params` defaults to the init values (`init_params(graph, seed)`); a partial dict overrides
    only the parameters it names. Output names and updated parameter names share one dict, so a
    graph where they collide is refused. The arrays returned are fresh copies.
    """
    clash = {name for name, _ in graph.outputs} & {name for name, _ in graph.updates}
    if clash:
        raise IRError(
            f"graph {graph.name!r}: {', '.join(sorted(clash))} is both an output and an updated parameter",
            hint="rename the output",
        )
    named = list(graph.outputs) + list(graph.updates)
    values = evaluate(graph, [v for _, v in named], feeds, params, seed)
    return {name: np.array(values[v]) for name, v in named}


def make_function(graph: Graph, input_values: Sequence[str]) -> Callable[[list[np.ndarray]], list[np.ndarray]]:
    """A callable taking arrays for `input_values` (graph inputs or parameters to override), in
    order, and returning the graph's outputs in order; other parameters take their init (seed 0)."""
    names = list(input_values)
    known = {i.name for i in graph.inputs} | set(graph.param_map)
    for name in names:
        if name not in known:
            raise IRError(
                f"{name!r} is not an input or parameter of graph {graph.name!r}",
                hint="pass tc.input or tc.param tensors as the function's inputs",
            )
    if len(set(names)) != len(names):
        raise IRError(f"an input is listed twice: {names}")
    targets = [v for _, v in graph.outputs]
    needed = live_values(graph, targets)
    unfed = [i.name for i in graph.inputs if i.name in needed and i.name not in names]
    if unfed:
        raise ShapeError(
            f"input {unfed[0]!r} was not fed: the outputs need it", hint="list it among the function's inputs"
        )
    defaults: dict[str, np.ndarray] = {}  # init values, computed on first call

    def run(arrays: list[np.ndarray]) -> list[np.ndarray]:
        if len(arrays) != len(names):
            raise IRError(f"expected {len(names)} array(s) ({', '.join(names)}), got {len(arrays)}")
        given = dict(zip(names, arrays))
        feeds = {k: v for k, v in given.items() if k not in graph.param_map}
        if not defaults:
            defaults.update((p.name, init_param(p)) for p in graph.params if p.name in needed and p.name not in given)
        params = {**defaults, **{k: v for k, v in given.items() if k in graph.param_map}}
        values = evaluate(graph, targets, feeds, params)
        return [np.array(values[v]) for v in targets]

    return run
