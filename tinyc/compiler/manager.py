"""The pass manager: runs a named pipeline of passes, verifying and measuring after each.

`run_pipeline` is strict: every name must be a registered pass, so a typo never silently skips
one (a test checks that both pipelines below name only registered passes).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass

from ..ir.errors import IRError
from ..ir.graph import Graph, Node
from ..ir.numfmt import human_bytes, human_count
from ..ir.ops import schema
from ..ir.plan import MemoryPlan
from ..ir.program import Entry
from ..ir.types import TensorType
from .graphutil import peak_live_bytes
from .passes import load_all

DEFAULT_PIPELINE = ("verify", "autodiff", "dataparallel", "optimizer", "simplify", "fold", "cse", "fuse", "dce", "schedule", "memplan")
FORWARD_PIPELINE = tuple(p for p in DEFAULT_PIPELINE if p not in ("autodiff", "dataparallel", "optimizer"))


@dataclass(frozen=True)
class PassStats:
    """What one pass did: node counts, estimated FLOPs and bytes at the stats batch, wall time."""

    name: str
    nodes_before: int
    nodes_after: int
    flops: int
    bytes: int
    ms: float
    peak_bytes: int = 0  # peak live bytes of node outputs in the graph's node order


OnPass = Callable[[int, str, Graph, PassStats], None]


def available(names: Iterable[str]) -> tuple[str, ...]:
    """The names among `names` that are registered passes, in order (for tools that list them)."""
    passes = load_all()
    return tuple(n for n in names if n in passes)


def node_flops(node: Node, types: Mapping[str, TensorType], batch: int | None = None) -> int:
    """The op schema's FLOP estimate of one node, every symbolic dim taken as `batch` (or 1)."""
    d = batch or 1

    def concrete(t):
        return tuple(x if isinstance(x, int) else d for x in t.shape)

    return int(schema(node.op).flops([concrete(types[v]) for v in node.inputs], concrete(node.type), dict(node.attrs)))


def estimate_flops(graph: Graph, batch: int | None = None) -> int:
    """Sum of the op schemas' FLOP estimates, every symbolic dim taken as `batch` (or 1)."""
    types = graph.types
    return sum(node_flops(n, types, batch) for n in graph.nodes)


def estimate_bytes(graph: Graph, batch: int | None = None) -> int:
    """Sum of the sizes of every value (inputs, parameters, node outputs) at `batch` (or 1)."""
    return sum(t.nbytes(default=batch or 1) for t in graph.types.values())


def stats_for(name: str, before: Graph, after: Graph, ms: float, batch: int | None = None) -> PassStats:
    return PassStats(
        name=name,
        nodes_before=len(before.nodes),
        nodes_after=len(after.nodes),
        flops=estimate_flops(after, batch),
        bytes=estimate_bytes(after, batch),
        ms=ms,
        peak_bytes=peak_live_bytes(after, batch=batch),
    )


def run_pipeline(
    graph: Graph,
    names: Sequence[str],
    *,
    verify: bool = True,
    on_pass: OnPass | None = None,
    batch: int | None = None,
) -> tuple[Graph, list[PassStats]]:
    """Run the passes `names` in order; verify after each (naming the pass on failure) and
    return the final graph with one PassStats per pass (a plan made on the way is dropped)."""
    entry, stats = run_entry("", graph, names, verify=verify, on_pass=on_pass, batch=batch)
    return entry.graph, stats


def run_entry(
    name: str,
    graph: Graph,
    names: Sequence[str],
    *,
    verify: bool = True,
    on_pass: OnPass | None = None,
    batch: int | None = None,
) -> tuple[Entry, list[PassStats]]:
    """Run the passes `names` as `run_pipeline` does; the Entry `name` holds the final graph and
    the memory plan of the last planning pass (None if no pass plans)."""
    passes = load_all()
    unknown = [n for n in names if n not in passes]
    if unknown:
        raise IRError(
            f"unknown pass(es) {', '.join(map(repr, unknown))}",
            hint=f"known passes: {', '.join(sorted(passes))}",
        )
    if verify:
        from ..ir.verify import verify as verify_graph
    all_stats: list[PassStats] = []
    plan: MemoryPlan | None = None
    for index, pass_name in enumerate(names):
        start = time.perf_counter()
        try:
            result = passes[pass_name].fn(graph)
        except Exception as e:  # a bug in a pass: say which one, keep the traceback
            note = f"in pass {pass_name!r}"
            if hasattr(e, "add_note"):  # Python 3.11+ prints it with the traceback
                e.add_note(note)
            else:  # Python 3.10: the same attribute, for whoever inspects the exception
                e.__notes__ = [*getattr(e, "__notes__", []), note]
            raise
        ms = (time.perf_counter() - start) * 1e3
        want = MemoryPlan if passes[pass_name].makes_plan else Graph
        if not isinstance(result, want):
            raise IRError(f"pass {pass_name!r} returned a {type(result).__name__}, not a {want.__name__}")
        if isinstance(result, MemoryPlan):  # the graph stays as it is; the plan goes on the Entry
            plan, result = result, graph
        if verify:
            verify_graph(result, where=f"after pass {pass_name}")  # its errors start with `where`
        stats = stats_for(pass_name, graph, result, ms, batch)
        all_stats.append(stats)
        if on_pass is not None:
            on_pass(index, pass_name, result, stats)
        graph = result
    return Entry(name, graph, plan), all_stats


def format_stats(stats: Sequence[PassStats]) -> str:
    """A fixed-width table of pass statistics (sizes in binary units, as every command prints them)."""
    lines = [f"{'pass':<12}{'nodes':>14}{'FLOPs':>12}{'bytes':>12}{'live peak':>12}{'ms':>10}"]
    for s in stats:
        nodes = f"{s.nodes_before}->{s.nodes_after}"
        lines.append(f"{s.name:<12}{nodes:>14}{human_count(s.flops):>12}{human_bytes(s.bytes):>12}"
                     f"{human_bytes(s.peak_bytes):>12}{s.ms:>10.2f}")
    total = math.fsum(s.ms for s in stats)
    lines.append(f"{'total':<12}{'':>14}{'':>12}{'':>12}{'':>12}{total:>10.2f}")
    return "\n".join(lines)
