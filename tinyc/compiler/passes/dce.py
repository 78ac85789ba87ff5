"""Dead code elimination: keep only what the outputs and updates depend on."""

from __future__ import annotations

from ...ir.graph import Graph
from ..graphutil import live_values
from . import register_pass


@register_pass("dce")
def dce(graph: Graph) -> Graph:
    """Remove nodes the outputs and updates do not depend on, and constants no node reads."""
    # Inputs and parameters always stay: they are the program's interface and its state.
    live = live_values(graph)
    nodes = [n for n in graph.nodes if n.out in live]
    used = {n.attrs["name"] for n in nodes if n.op == "constant"}
    constants = {k: v for k, v in graph.constants.items() if k in used}
    if len(nodes) == len(graph.nodes) and len(constants) == len(graph.constants):
        return graph
    return graph.with_nodes(nodes, constants=constants)
