"""Scheduling: a deterministic node order that keeps peak live memory low.

Greedy list scheduling over the dataflow DAG: among the nodes whose inputs are all computed,
run the one with the smallest net allocation (bytes of its output minus bytes of the inputs it
is the last reader of), ties broken by the current position. This finishes a branch (whose last
step frees its intermediates) before opening the next. Priorities are kept in a heap with lazy
invalidation, so the pass is O((nodes + edges) log nodes). Nodes left unscheduled mean a cycle,
which networkx then finds and names.

The greedy order is kept only when its estimated peak (graphutil.peak_live_bytes) is strictly
lower than the current order's, so scheduling never makes the estimate worse, and a second run
reproduces the first (the greedy order is a fixed point of itself). The node order is the
schedule; nothing else is recorded.
"""

from __future__ import annotations

import heapq

from ...ir.graph import Graph, Node
from ...ir.plan import DEFAULT_BATCH, reference_batch
from ..graphutil import check_acyclic, peak_live_bytes, value_sizes
from . import register_pass


def greedy_order(graph: Graph, batch: int = DEFAULT_BATCH, sizes: dict[str, int] | None = None) -> list[Node]:
    """The memory-greedy topological order of `graph.nodes` (see the module docstring)."""
    nodes = graph.nodes
    producers = graph.producers
    keep = set(graph.output_values)
    size = value_sizes(graph, batch) if sizes is None else sizes
    args = [tuple(dict.fromkeys(v for v in n.inputs if v in producers)) for n in nodes]  # distinct, in order
    readers: dict[str, list[int]] = {}
    for i, a in enumerate(args):
        for v in a:
            readers.setdefault(v, []).append(i)
    remaining = {v: len(r) for v, r in readers.items()}  # readers not yet scheduled
    pending = [len(a) for a in args]  # inputs not yet computed
    done = [False] * len(nodes)

    def priority(i: int) -> int:
        freed = sum(size[v] for v in args[i] if remaining[v] == 1 and v not in keep)
        return size[nodes[i].out] - freed

    current: dict[int, int] = {}
    heap: list[tuple[int, int]] = []

    def push(i: int) -> None:
        current[i] = p = priority(i)
        heapq.heappush(heap, (p, i))

    for i, p in enumerate(pending):
        if p == 0:
            push(i)
    order: list[Node] = []
    while heap:
        p, i = heapq.heappop(heap)
        if done[i] or current[i] != p:
            continue  # stale entry: the node was rescheduled with a better priority
        done[i] = True
        order.append(nodes[i])
        for v in args[i]:
            remaining[v] -= 1
            if remaining[v] == 1:
                # the last reader of v now frees it: its priority drops if it is ready
                last = next(j for j in readers[v] if not done[j])
                if pending[last] == 0:
                    push(last)
        for j in readers.get(nodes[i].out, ()):
            pending[j] -= 1
            if pending[j] == 0:
                push(j)
    if len(order) < len(nodes):
        check_acyclic(graph, where="schedule")  # networkx names the cycle that stalled the list
    return order


@register_pass("schedule")
def schedule(graph: Graph) -> Graph:
    """Order nodes to keep peak live memory low (greedy list scheduling, deterministic)."""
    batch = reference_batch(graph.meta)  # symbolic dims (the batch) sized as the plan sizes them
    sizes = value_sizes(graph, batch)
    order = greedy_order(graph, batch, sizes)
    if all(a is b for a, b in zip(order, graph.nodes)):
        return graph
    if peak_live_bytes(graph, order, sizes=sizes) >= peak_live_bytes(graph, graph.nodes, sizes=sizes):
        return graph
    return graph.with_nodes(order)
