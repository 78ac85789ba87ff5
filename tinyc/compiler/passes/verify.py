"""The "verify" pass: check the graph is well-formed before anything else runs."""

from __future__ import annotations

from ...ir.graph import Graph
from . import register_pass


@register_pass("verify")
def verify_pass(graph: Graph) -> Graph:
    """Check the graph is well-formed (SSA, types, attributes, outputs); change nothing."""
    from ...ir.verify import verify

    verify(graph, where="verify pass")
    return graph
