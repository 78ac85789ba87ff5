"""Graph algorithms over the IR with networkx: the value DiGraph, reachability, orders, liveness.

networkx is a tool used inside the compiler; nothing here is stored in the IR. Every helper is
deterministic: ties are broken by a node's position in `graph.nodes`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import replace

import networkx as nx

from ..ir.errors import IRError
from ..ir.graph import Graph, Node, live_values  # noqa: F401  (re-exported for the passes)
from ..ir.ops import canonical_attrs, infer_type


def value_digraph(graph: Graph) -> nx.DiGraph:
    """A DiGraph over node outputs, edge producer -> consumer (one edge per distinct input)."""
    g = nx.DiGraph()
    g.add_nodes_from(n.out for n in graph.nodes)
    producers = graph.producers
    g.add_edges_from((v, n.out) for n in graph.nodes for v in n.inputs if v in producers)
    return g


def check_acyclic(graph: Graph, where: str = "") -> nx.DiGraph:
    """The value DiGraph; IRError naming the values of a cycle if there is one."""
    dag = value_digraph(graph)
    if not nx.is_directed_acyclic_graph(dag):
        cycle = " -> ".join(f"%{u}" for u, _ in nx.find_cycle(dag))
        prefix = f"{where}: " if where else ""
        raise IRError(f"{prefix}the graph has a cycle: {cycle}")
    return dag


def topological_order(graph: Graph) -> list[Node]:
    """A deterministic topological order: among ready nodes, the earliest in `graph.nodes` first."""
    dag = check_acyclic(graph)
    index = {n.out: i for i, n in enumerate(graph.nodes)}
    producers = graph.producers
    return [producers[v] for v in nx.lexicographical_topological_sort(dag, key=index.__getitem__)]


def value_sizes(graph: Graph, batch: int | None = None) -> dict[str, int]:
    """Bytes of every node output, symbols taken as `batch` (1 if None)."""
    default = batch or 1
    return {n.out: n.type.nbytes(default=default) for n in graph.nodes}


def peak_live_bytes(graph: Graph, order: Sequence[Node] | None = None, batch: int | None = None,
                    sizes: dict[str, int] | None = None) -> int:
    """Peak bytes of node outputs alive at once when running `order` (default `graph.nodes`).

    A value is allocated when its node runs and freed after its last reader; outputs and updates
    live to the end. Inputs, parameters and constants are resident throughout and not counted.
    Symbols take the value `batch` (1 if None); `sizes` (from value_sizes) saves recomputing.
    """
    order = graph.nodes if order is None else order
    last_use: dict[str, int] = {}
    for i, n in enumerate(order):
        for v in n.inputs:
            last_use[v] = i
    keep = set(graph.output_values)
    frees: dict[int, list[str]] = {}
    for v, i in last_use.items():
        if v not in keep:
            frees.setdefault(i, []).append(v)
    size = value_sizes(graph, batch) if sizes is None else sizes
    live = peak = 0
    for i, n in enumerate(order):
        live += size[n.out]
        peak = max(peak, live)
        if n.out not in last_use and n.out not in keep:
            live -= size[n.out]  # never read: dies at once
        for v in frees.get(i, ()):
            live -= size.get(v, 0)  # inputs and params have no size here
    return peak


class Rewriter:
    """Builds the output of a forward rewriting pass: nodes are visited in order, kept, replaced by
    an existing value (uses renamed), or replaced by new nodes that inherit loc, note and scope.

    `sweep` is the rule-driven pass (simplify, fuse): `rules` maps an op to the rules tried on its
    nodes in order; a rule returns the value that now stands for the node (adding any nodes it
    needs) or None, and the first that fires wins.
    """

    def __init__(self, graph: Graph, rules: Mapping[str, Sequence[Callable]] | None = None) -> None:
        self.graph = graph
        self.rules = rules or {}
        self.changed = False
        self.nodes: list[Node] = []
        self.types = {i.name: i.type for i in graph.inputs}
        self.types.update((p.name, p.type) for p in graph.params)
        self.producers: dict[str, Node] = {}
        self.rename: dict[str, str] = {}
        self.constants = dict(graph.constants)
        self._next = graph.next_id()

    def value(self, v: str) -> str:
        """What `v` of the input graph is called in the output graph."""
        return self.rename.get(v, v)

    def renamed(self, node: Node) -> Node:
        """`node` reading the output graph's names."""
        inputs = tuple(self.value(v) for v in node.inputs)
        return node if inputs == node.inputs else replace(node, inputs=inputs)

    def add(self, node: Node) -> str:
        self.nodes.append(node)
        self.types[node.out] = node.type
        self.producers[node.out] = node
        return node.out

    def make(self, op: str, inputs: Sequence[str], attrs: dict, like: Node, out: str | None = None) -> Node:
        """A new type-checked node (not yet added) with `like`'s location, note and scope."""
        in_types = [self.types[v] for v in inputs]
        attrs = canonical_attrs(op, in_types, attrs)
        if out is None:
            out, self._next = str(self._next), self._next + 1
        return Node(out, op, tuple(inputs), attrs, infer_type(op, in_types, attrs), like.loc, like.note,
                    like.scope)

    def replace(self, old: str, new: str) -> None:
        """Every later use of `old` (and the outputs naming it) reads `new` instead."""
        self.rename[old] = self.value(new)

    def fit(self, v: str, node: Node) -> str:
        """`v` with `node`'s type: itself, or broadcast to the node's shape."""
        if self.types[v] == node.type:
            return v
        assert self.types[v].dtype == node.type.dtype, (v, node)
        return self.visit(self.make("broadcast_to", [v], {"shape": node.type.shape}, node))

    def visit(self, node: Node) -> str:
        """Add `node`, or what the first of its op's rules that fires replaces it with (of the
        node's type); return the value that now stands for it."""
        for rule in self.rules.get(node.op, ()):
            result = rule(self, node)
            if result is not None:
                self.changed = True
                return self.fit(result, node)
        return self.add(node)

    def sweep(self) -> Graph | None:
        """One forward sweep of the rules over the graph: the rewritten graph, or None if no rule fired."""
        for node in self.graph.nodes:
            node = self.renamed(node)
            mark = len(self.nodes)
            value = self.visit(node)
            if value == node.out:
                continue
            last = self.nodes[-1] if len(self.nodes) > mark else None
            if last is not None and last.out == value:
                # the node's last replacement node takes over its name: uses need no renaming
                self.nodes.pop()
                del self.producers[value], self.types[value]
                self.add(replace(last, out=node.out))
            else:
                self.replace(node.out, value)
        return self.finish() if self.changed else None

    def finish(self, **changes) -> Graph:
        outputs = tuple((k, self.value(v)) for k, v in self.graph.outputs)
        updates = tuple((k, self.value(v)) for k, v in self.graph.updates)
        return self.graph.with_nodes(self.nodes, outputs=outputs, updates=updates, **changes)
