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

from tinyc.ir.errors import DataError, IRError, ShapeError, TinycError
from tinyc.ir.graph import Graph, Node, live_values
from tinyc.ir.types import TensorType, format_shape

from .binding import bind_feeds, resolve_attrs, resolve_dims
from .init import init_param
from .kernels import KERNELS


def _cast_param(name: str, value: Any, t: TensorType) -> np.ndarray:
    arr = np.asarray(value)
    if arr.shape != tuple(t.shape):
        raise ShapeError(f"parameter {name!r} is {t} but was given an array of shape {format_shape(arr.shape)}")
    return arr.astype(t.np_dtype, copy=False)


def _run_node(node: Node, args: list[np.ndarray], graph: Graph, bindings: Mapping[str, int]) -> np.ndarray:
    """Run one node's kernel and check its result against the node's type."""
    attrs = resolve_attrs(node, graph, bindings)
    if node.op not in KERNELS:
        raise IRError(f"{node.op} %{node.out}: no kernel for op {node.op!r}", loc=node.where())
    try:
        result = KERNELS[node.op](*args, **attrs)
    except TinycError as e:
        raise type(e)(f"{node.op} %{node.out}: {e.message}", loc=e.loc or node.where(), hint=e.hint) from e
    except (ValueError, IndexError, TypeError) as e:
        ins = ", ".join(format_shape(a.shape) for a in args)
        raise ShapeError(
            f"{node.op} %{node.out} failed on inputs of shape {ins or '(none)'}: {e}", loc=node.where()
        ) from e
    want = (resolve_dims(node.type, bindings, node), node.type.np_dtype)
    if (result.shape, result.dtype) != want:
        raise IRError(
            f"{node.op} %{node.out}: kernel returned {result.dtype}{format_shape(result.shape)}, "
            f"node type is {node.type} = {want[1]}{format_shape(want[0])}",
            loc=node.where(),
        )
    return result


def compute_values(
    graph: Graph,
    targets: Sequence[str],
    feeds: Mapping[str, Any],
    params: Mapping[str, Any] | None = None,
    seed: int = 0,
) -> dict[str, np.ndarray]:
    """Compute the values `targets` (value names); params missing from `params` take their init."""
    needed = live_values(graph, targets)
    required = [i.name for i in graph.inputs if i.name in needed]
    arrays, bindings = bind_feeds(graph.inputs, feeds, required)  # the same checks as the Executor's
    env: dict[str, np.ndarray] = {}
    for inp in graph.inputs:
        if inp.name in arrays:
            env[inp.name] = arrays[inp.name].astype(inp.type.np_dtype, copy=False)
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
    values = compute_values(graph, [v for _, v in named], feeds, params, seed)
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
        raise DataError(f"input {unfed[0]!r} was not fed: the outputs need it", hint="list it among the function's inputs")
    defaults: dict[str, np.ndarray] = {}  # init values, computed on first call

    def run(arrays: list[np.ndarray]) -> list[np.ndarray]:
        if len(arrays) != len(names):
            raise IRError(f"expected {len(names)} array(s) ({', '.join(names)}), got {len(arrays)}")
        given = dict(zip(names, arrays))
        feeds = {k: v for k, v in given.items() if k not in graph.param_map}
        if not defaults:
            defaults.update((p.name, init_param(p)) for p in graph.params if p.name in needed and p.name not in given)
        params = {**defaults, **{k: v for k, v in given.items() if k in graph.param_map}}
        values = compute_values(graph, targets, feeds, params)
        return [np.array(values[v]) for v in targets]

    return run
