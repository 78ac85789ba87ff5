"""What `tinyc inspect` shows: a program summary as text or JSON, and Graphviz DOT."""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import asdict, is_dataclass
from typing import Any

from ..ir.graph import GRAD_NOTE, GRAD_SEED_NOTE, OPTIMIZER_NOTE, Graph, live_values
from ..ir.program import Program
from .output import echo, human_bytes, table


def param_count(graph: Graph, kind: str = "param") -> tuple[int, int, int]:
    """(tensors, values, bytes) of the parameters of `kind` ("param" or "state")."""
    ps = [p for p in graph.params if p.kind == kind]
    return len(ps), sum(p.type.numel() for p in ps), sum(p.type.nbytes() for p in ps)


def op_counts(graph: Graph) -> dict[str, int]:
    """op -> number of nodes, most frequent first (ties by name)."""
    counts = Counter(n.op for n in graph.nodes)
    return dict(sorted(counts.items(), key=lambda kv: (-kv[1], kv[0])))


def planned_peak(program: Program) -> tuple[int, Any, str] | None:
    """(largest planned peak bytes over the entries, its batch, its entry), or None when nothing is planned."""
    peaks = [(e.plan.peak_bytes, e.plan.batch, name) for name, e in program.entries.items() if e.plan]
    return max(peaks, key=lambda p: p[0]) if peaks else None


def print_summary(program: Program, name: str, entries: list[str]) -> None:
    """Inputs, outputs, params with sizes and total count, the layer table, node count per op, per entry."""
    echo(f"program {name}: {len(program.entries)} entries ({', '.join(program.entries)})")
    for entry_name in entries:
        entry = program.entries[entry_name]
        g = entry.graph
        echo("")
        echo(f"entry {entry_name}: {len(g.nodes)} nodes")
        echo(f"  inputs:  {', '.join(f'{i.name} {i.type}' for i in g.inputs) or '-'}")
        echo(f"  outputs: {', '.join(f'{n} {g.types[v]}' for n, v in g.outputs) or '-'}")
        if g.updates:
            shown = ", ".join(n for n, _ in g.updates[:6]) + (", ..." if len(g.updates) > 6 else "")
            echo(f"  updates: {len(g.updates)} ({shown})")
        if entry.plan:
            echo(f"  planned peak: {human_bytes(entry.plan.peak_bytes)} at batch {entry.plan.batch}")
        tensors, values, nbytes = param_count(g)
        echo(f"  params: {tensors} tensors, {values:,} values, {human_bytes(nbytes)}")
        state = param_count(g, "state")
        if state[0]:
            echo(f"  optimizer state: {state[0]} tensors, {state[1]:,} values, {human_bytes(state[2])}")
        from .summary import print_layer_summary  # it draws on role_of below

        print_layer_summary(program, entry_name)
        table(["op", "nodes"], list(op_counts(g).items()), right=(1,))


def summary_json(program: Program, name: str, entries: list[str], stats: dict[str, list[Any]],
                 memory: dict[str, Any] | None = None) -> str:
    """The machine-readable summary (`inspect --format json`)."""
    out: dict[str, Any] = {"file": name, "meta": _plain(dict(program.meta)), "entries": {}}
    for entry_name in entries:
        entry = program.entries[entry_name]
        g = entry.graph
        _, values, nbytes = param_count(g)
        out["entries"][entry_name] = {
            "nodes": len(g.nodes),
            "inputs": [{"name": i.name, "type": str(i.type)} for i in g.inputs],
            "outputs": [{"name": n, "type": str(g.types[v])} for n, v in g.outputs],
            "updates": [n for n, _ in g.updates],
            "params": [{"name": p.name, "kind": p.kind, "type": str(p.type), "values": p.type.numel(),
                        "init": _plain(dict(p.init))} for p in g.params],
            "param_count": values,
            "param_bytes": nbytes,
            "ops": op_counts(g),
            "plan": {"peak_bytes": entry.plan.peak_bytes, "batch": entry.plan.batch} if entry.plan else {},
        }
        if entry_name in stats:  # a model file: how each pass changed the entry (a .ir holds only the result)
            out["entries"][entry_name]["stats"] = [_plain(s) for s in stats[entry_name]]
        if memory is not None:
            out["entries"][entry_name]["memory"] = _plain(memory[entry_name])
    return json.dumps(out, indent=2, sort_keys=False)


def _plain(v: Any) -> Any:
    """JSON-able form of meta values, PassStats and the like."""
    if is_dataclass(v) and not isinstance(v, type):
        return _plain(asdict(v))
    if isinstance(v, dict):
        return {str(k): _plain(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [_plain(x) for x in v]
    if isinstance(v, (str, int, float, bool)) or v is None:
        return v
    if hasattr(v, "item"):  # numpy scalar
        return v.item()
    return str(v)


def role_of(graph: Graph) -> dict[str, str]:
    """node out -> "forward" | "backward" | "optimizer".

    Provenance decides first (the note `grad of ...` or `grad seed`, or `optimizer ...`); a node without it that
    only the updates need (no named output) counts as optimizer, the rest as forward.
    """
    needed = live_values(graph, [v for _, v in graph.outputs])
    roles = {}
    for n in graph.nodes:
        if n.note.startswith(GRAD_NOTE) or n.note == GRAD_SEED_NOTE:
            roles[n.out] = "backward"
        elif n.note.startswith(OPTIMIZER_NOTE):
            roles[n.out] = "optimizer"
        elif n.out in needed:
            roles[n.out] = "forward"
        else:
            roles[n.out] = "optimizer"
    return roles


def saved_for_backward(graph: Graph, roles: dict[str, str] | None = None) -> set[str]:
    """The forward values a backward node reads: what backprop keeps alive (roles by `role_of`)."""
    roles = roles or role_of(graph)
    consumers = graph.consumers
    return {n.out for n in graph.nodes
            if roles[n.out] == "forward" and any(roles[c.out] == "backward" for c in consumers.get(n.out, ()))}
