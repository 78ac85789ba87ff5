"""The IR verifier: checks every invariant a Graph promises, in one linear pass.

Run by the pass manager after each pass and by the codec after loading. A failure raises IRError
naming the pass, the node and its user location, followed by the IR lines around the node
(as JAX's `check_jaxpr` does).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any, NoReturn

import numpy as np

from . import init as init_rules
from .errors import IRError, TinycError
from .graph import Graph, Node
from .ops import OPS, canonical_attrs, infer_type
from .printer import format_node
from .program import Program
from .types import DTYPES, TensorType, dtype_of_numpy, format_shape

_CONTEXT = 3  # IR lines shown on each side of a bad node
_KINDS = ("param", "state")


def verify(graph: Graph, where: str = "") -> None:
    """Check SSA, definition before use, op schemas, attributes, types, constants, outputs,
    updates and parameter init rules; raise IRError on the first violation."""
    prefix = f"{where}: " if where else ""
    types: dict[str, TensorType] = {}

    def fail(message: str, loc: str = "", hint: str = "") -> NoReturn:
        raise IRError(f"{prefix}{message} (graph {graph.name})", loc=loc, hint=hint)

    def define(name: Any, t: Any, what: str, loc: str = "") -> None:
        if not isinstance(name, str) or not name:
            fail(f"{what} has an invalid name {name!r}", loc)
        if not isinstance(t, TensorType):
            fail(f"{what} %{name} has no TensorType (got {type(t).__name__})", loc)
        if name in types:
            fail(f"{what} %{name} is defined twice (values are SSA: defined once)", loc)
        types[name] = t

    for i in graph.inputs:
        define(i.name, i.type, "input")
    for p in graph.params:
        define(p.name, p.type, "parameter", p.loc)
        _check_param(p, fail)

    defined_anywhere = {n.out for n in graph.nodes}
    for index, node in enumerate(graph.nodes):
        problem = _check_node(node, types, graph.constants, defined_anywhere)
        if problem is not None:
            message, hint = problem
            raise IRError(
                f"{prefix}node %{node.out} ({node.op}): {message}\n{_context(graph, index)}",
                loc=node.where(),
                hint=hint,
            )
        define(node.out, node.type, "node", node.where())

    params = graph.param_map
    for kind, pairs in (("output", graph.outputs), ("update", graph.updates)):
        seen: set[str] = set()
        for name, value in pairs:
            if name in seen:
                fail(f"{kind} {name!r} is listed twice")
            seen.add(name)
            if value not in types:
                fail(f"{kind} {name} = %{value} is dangling: no input, parameter or node defines %{value}")
            if kind == "update":
                if name not in params:
                    fail(f"update targets {name!r}, which is not a parameter of the graph")
                if types[value] != params[name].type:
                    fail(f"update {name} = %{value} has type {types[value]}, but parameter {name} is {params[name].type}",
                         params[name].loc, hint="an update must keep the parameter's dtype and shape exactly")


def verify_program(program: Program) -> None:
    """Verify every entry of a program (names must match their keys)."""
    for key, entry in program.entries.items():
        if entry.name != key:
            raise IRError(f"program entry {key!r} is named {entry.name!r}")
        verify(entry.graph, where=f"entry {key}")


def _check_param(p, fail) -> None:
    if p.kind not in _KINDS:
        fail(f"parameter %{p.name} has kind {p.kind!r}; expected param or state", p.loc)
    if isinstance(p.seed, bool) or not isinstance(p.seed, int) or p.seed < 0:
        fail(f"parameter %{p.name} has seed {p.seed!r}; expected a non-negative int", p.loc)
    if p.type.symbols:
        fail(f"parameter %{p.name} has a symbolic dim: {p.type}", p.loc)
    init = dict(p.init) if isinstance(p.init, Mapping) else None
    if init is None or not isinstance(init.get("rule"), str):
        fail(f"parameter %{p.name} has init {p.init!r}; expected a dict with a 'rule'", p.loc)
    try:
        init_rules.make(**init)
    except TinycError as e:
        fail(f"parameter %{p.name}: {e.message}", p.loc)
    except TypeError as e:  # non-str keys in the dict
        fail(f"parameter %{p.name}: bad init {init!r} ({e})", p.loc)


def _check_node(node: Node, types: Mapping[str, TensorType], constants: Mapping[str, np.ndarray],
                defined_anywhere: set) -> tuple[str, str] | None:
    """The first problem of one node as (message, hint), or None."""
    if not isinstance(node.out, str) or not node.out:
        return f"has an invalid output name {node.out!r}", ""
    if node.out in types:
        return f"redefines %{node.out} (values are SSA: defined once)", ""
    if node.op not in OPS:
        return f"unknown op {node.op!r}", ""
    if not isinstance(node.inputs, tuple) or not isinstance(node.attrs, Mapping):
        return "inputs must be a tuple and attrs a mapping", ""
    for v in node.inputs:
        if v not in types:
            if v in defined_anywhere:
                return f"uses %{v} before it is defined (a cycle, or nodes out of order)", "order nodes topologically"
            return f"input %{v} is dangling: no input, parameter or node defines it", ""
    in_types = [types[v] for v in node.inputs]
    try:
        canon = canonical_attrs(node.op, in_types, node.attrs)
        inferred = infer_type(node.op, in_types, canon)
    except TinycError as e:
        return f"invalid on inputs ({', '.join(map(str, in_types))}): {e.message}", e.hint
    except Exception as e:  # noqa: BLE001 - a type rule tripped over a malformed attribute: still the graph's fault
        return f"invalid attributes {dict(node.attrs)!r}: {type(e).__name__}: {e}", ""
    if not _same(dict(node.attrs), canon):
        return f"attributes {dict(node.attrs)!r} are not canonical; expected {canon!r}", \
            "build nodes with Builder.apply, which normalises attributes"
    if inferred != node.type:
        return f"type {node.type} contradicts {node.op}'s inference {inferred}", ""
    if node.op == "constant":
        name = canon["name"]
        if name not in constants:
            return f"refers to constant {name!r}, which is not in the graph's constant table", ""
        arr = constants[name]
        if not isinstance(arr, np.ndarray) or arr.dtype not in DTYPES.values():
            return f"constant {name!r} is not an array of an IR dtype", ""
        got = f"{dtype_of_numpy(arr.dtype)}{format_shape(arr.shape)}"
        if got != str(node.type):
            return f"constant {name!r} holds {got}, but the node says {node.type}", ""
    return None


def _same(a: Any, b: Any) -> bool:
    """Equal including types (1 is not 1.0, a list is not a tuple); NaN equals NaN."""
    if type(a) is not type(b):
        return False
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    if isinstance(a, (tuple, list)):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b))
    if isinstance(a, float) and math.isnan(a):
        return math.isnan(b)
    return a == b


def _context(graph: Graph, index: int) -> str:
    """The IR lines around node `index`, the bad one marked with an arrow."""
    lo, hi = max(0, index - _CONTEXT), min(len(graph.nodes), index + _CONTEXT + 1)
    lines = [f"in graph {graph.name}:"]
    if lo > 0:
        lines.append("      ...")
    for i in range(lo, hi):
        lines.append(("  --> " if i == index else "      ") + format_node(graph.nodes[i]))
    if hi < len(graph.nodes):
        lines.append("      ...")
    return "\n".join(lines)
