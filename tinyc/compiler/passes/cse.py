"""Common subexpression elimination: one node per distinct (op, inputs, attributes)."""

from __future__ import annotations

import hashlib

from ...ir.graph import Graph, Node
from ...ir.ops import COMMUTATIVE, OPS
from ..graphutil import Rewriter
from . import register_pass


def cse_key(node: Node, constants) -> tuple:
    """Equal keys compute equal values: commutative inputs sorted, constants keyed by their data."""
    op, inputs, attrs = node.key()
    if op in COMMUTATIVE:
        # add(a, b) == add(b, a)
        inputs = tuple(sorted(inputs))
    if op == "constant":
        # constant{name=c1} == constant{name=c2} when the arrays are equal
        data = constants[node.attrs["name"]]
        attrs = (data.dtype.str, data.shape, hashlib.sha1(data.tobytes()).hexdigest())
    return op, inputs, attrs, node.type


@register_pass("cse")
def cse(graph: Graph) -> Graph:
    """Merge nodes computing the same value; the first one (and its location) is kept."""
    rw = Rewriter(graph)
    seen: dict[tuple, str] = {}
    for node in graph.nodes:
        node = rw.renamed(node)
        if OPS[node.op].effectful:
            rw.add(node)  # two allreduces of one value are two collectives: each rank runs both
            continue
        key = cse_key(node, graph.constants)
        if key in seen:
            # op(a, b) == op(a, b) -> the first of them
            rw.replace(node.out, seen[key])
        else:
            seen[key] = rw.add(node)
    if not rw.rename:
        return graph
    return rw.finish()
