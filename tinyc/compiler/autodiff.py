"""Symbolic reverse-mode differentiation: the backward pass is built as IR nodes.

The driver stays micrograd-small: find the values on a path from the inputs of interest to the
output (networkx reachability), walk the nodes in reverse order, call each op's VJP rule
(`tinyc.compiler.vjp`) with the output's cotangent, and sum cotangents where a value fans out.
An op without a rule is differentiated through its decomposition (`tinyc.compiler.decompose`);
non-differentiable ops and integer/bool values stop gradients. Every backward node keeps the
forward node's location and the note `grad of <op>`, so errors and the printer point at the
user's line.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace

import networkx as nx

from ..ir.builder import Builder, Tensor, user_location
from ..ir.errors import IRError
from ..ir.graph import GRAD_NOTE, GRAD_SEED_NOTE, Graph, Node
from ..ir.ops import schema
from .decompose import DECOMPOSITIONS
from .vjp import VJPS

_SOURCE = ("", "source")  # a networkx node no value name can equal


def _provenance(node: Node) -> str:
    """`grad of softmax`; differentiating a backward node again gives `grad of grad of softmax`."""
    return f"{GRAD_NOTE} {node.note if node.note.startswith(GRAD_NOTE) else node.op}"


def _on_path(b: Builder, nodes: Sequence[Node], y: str, wrt: set[str]) -> set[str]:
    """Float values that lie on some path from a value in `wrt` to `y` (integers carry no gradient)."""
    types = b.types
    dag = nx.DiGraph()
    dag.add_edges_from((v, n.out) for n in nodes if n.type.is_float for v in n.inputs if types[v].is_float)
    dag.add_nodes_from((y, _SOURCE))
    dag.add_edges_from((_SOURCE, w) for w in wrt)
    return (nx.ancestors(dag, y) | {y}) & nx.descendants(dag, _SOURCE)


def _vjp(b: Builder, node: Node, g: Tensor, needs: Sequence[bool], where: tuple[str, str, str]) -> list:
    """The cotangents of node's inputs given its output's cotangent `g` (None: no gradient)."""
    ins = [b.tensor(v) for v in node.inputs]
    if node.op in VJPS:
        return list(VJPS[node.op](b, ins, b.tensor(node.out), g, **node.attrs))
    if node.op in DECOMPOSITIONS:
        # no hand rule (the composites' backward ops): differentiate the decomposition, recomputed here
        start = len(b.nodes)
        out = DECOMPOSITIONS[node.op](b, ins, **node.attrs)
        wanted = {v for v, need in zip(node.inputs, needs) if need}
        found = _backprop(b, b.nodes[start:], out.name, g, wanted, where)
        # a value passed twice gets its total once (the driver would otherwise add it twice)
        return [found.get(v) if v not in node.inputs[:i] else None for i, v in enumerate(node.inputs)]
    if not schema(node.op).differentiable:
        return [None] * len(ins)
    raise IRError(f"{node.op}: no gradient rule and no decomposition", loc=node.loc,
                  hint="add a VJP to tinyc/compiler/vjp.py or declare the op non-differentiable")


def _backprop(b: Builder, nodes: Sequence[Node], y: str, seed: Tensor, wrt: set[str],
              where: tuple[str, str, str] | None = None) -> dict[str, Tensor]:
    """Reverse mode over `nodes` (in topological order): cotangents of the `wrt` values that y
    depends on. `where` forces one provenance for every node made (used inside decompositions)."""
    path = _on_path(b, nodes, y, wrt)
    cot: dict[str, Tensor] = {y: seed} if y in path else {}
    found: dict[str, Tensor] = {}
    for node in reversed(nodes):
        g = cot.pop(node.out, None)
        if g is None:
            continue
        if node.out in wrt:
            found[node.out] = g
        needs = [v in path for v in node.inputs]
        if not any(needs):
            continue
        here = where or (node.loc, _provenance(node), node.scope)
        with b.at(*here):
            grads = _vjp(b, node, g, needs, here)
            if len(grads) != len(node.inputs):
                raise IRError(f"VJP of {node.op} returned {len(grads)} cotangents for {len(node.inputs)} inputs",
                              loc=node.loc)
            for i, (v, need, gv) in enumerate(zip(node.inputs, needs, grads)):
                if not need or gv is None:
                    continue
                gv = gv() if callable(gv) else gv
                if gv.type != b.types[v]:
                    raise IRError(f"VJP of {node.op} gave {gv.type} for input {i} of type {b.types[v]}", loc=node.loc)
                cot[v] = cot[v] + gv if v in cot else gv  # fan-out: cotangents add
    found.update((w, cot[w]) for w in wrt if w in cot)
    return found


def _prune(b: Builder, start: int, keep: set[str]) -> None:
    """Drop nodes appended since `start` that no kept value needs (cotangents nobody asked for)."""
    live = set(keep)
    kept = []
    for node in reversed(b.nodes[start:]):
        if node.out in live:
            kept.append(node)
            live.update(node.inputs)
        else:
            del b.types[node.out]
    b.nodes[start:] = reversed(kept)


def _differentiate(b: Builder, y: str, wrt: Sequence[str], seed: str | None = None) -> dict[str, str | None]:
    """Append to `b` the gradients of y (of sum(y * seed) when y is not scalar) w.r.t. each of
    `wrt`: value name, zeros when y does not depend on it, None for integer/bool values."""
    types = b.types
    if not types[y].is_float:
        raise IRError(f"cannot differentiate %{y}: it is {types[y]}, not a float value")
    start = len(b.nodes)
    producer = next((n for n in reversed(b.nodes) if n.out == y), None)
    with b.at(producer.loc if producer else "", GRAD_SEED_NOTE, producer.scope if producer else ""):
        if seed is None:
            seed_t = b.apply("ones_like", [b.tensor(y)])
        else:
            seed_t = b.tensor(seed)
            if seed_t.type != types[y]:
                raise IRError(f"seed cotangent %{seed} is {seed_t.type}, but %{y} is {types[y]}")
    floats = {w for w in wrt if types[w].is_float}
    found = _backprop(b, b.nodes[:start], y, seed_t, floats)
    _prune(b, start, {t.name for t in found.values()})
    result: dict[str, str | None] = {}
    for w in wrt:
        if w not in floats:
            result[w] = None
        elif w in found:
            result[w] = found[w].name
        else:
            with b.at("", "zero grad"):  # y does not depend on w
                result[w] = b.apply("zeros_like", [b.tensor(w)]).name
    return result


def gradients(graph: Graph, y_value: str, wrt_values: Sequence[str],
              seed_cotangent: str | None = None) -> tuple[Graph, dict[str, str | None]]:
    """A copy of graph with the backward nodes appended, and wrt value -> its gradient value
    (zeros where y does not depend on it, None for integer/bool values). Outputs are unchanged."""
    b = Builder.from_graph(graph)
    for v in (y_value, *wrt_values, *([seed_cotangent] if seed_cotangent else [])):
        if v not in b.types:
            raise IRError(f"gradients: no value %{v} in graph {graph.name}")
    grads = _differentiate(b, y_value, list(wrt_values), seed_cotangent)
    return replace(graph, nodes=tuple(b.nodes), constants=dict(b.constants)), grads


def grad(y: Tensor, xs: Sequence[Tensor] | Tensor) -> list[Tensor | None] | Tensor | None:
    """d(sum y)/dx for each x, appended to y's own graph (so grad of grad works). A zero Tensor
    when y does not depend on x; None when x is an integer or bool value (no gradient)."""
    if not isinstance(y, Tensor):
        raise IRError(f"grad: y must be a Tensor, got {type(y).__name__}", loc=user_location(2))
    single = isinstance(xs, Tensor)
    xs = [xs] if single else list(xs)
    b = y.builder
    names = [b.own(x).name for x in xs]
    if not y.type.is_float:
        raise IRError(f"grad: y is {y.type}; only float values have gradients", loc=user_location(2))
    grads = _differentiate(b, y.name, names)
    out = [b.tensor(grads[n]) if grads[n] is not None else None for n in names]
    return out[0] if single else out
