"""The `memplan` pass: liveness over the scheduled node order, buffer slots, in-place updates.

The plan (stored in `graph.meta["memplan"]`, moved to `Entry.plan` by the driver) says where
each node output lives while the program runs:

- `slots`: value -> slot index. Values whose lifetimes do not overlap share a slot (greedy
  best fit by size at the reference batch). The executor sizes each slot, per batch size, as the
  largest of its values, so the same plan serves every batch.
- `inplace`: value -> parameter: the value is written straight into that parameter's array
  (an elementwise update such as `p - lr * g` whose input `p` is read for the last time there).
- `reuse_input`: value -> input value: an elementwise node writes over an input that dies there
  (same slot or parameter array as that input; recorded for reports and checks).
- `static`: values of nodes without inputs (fill, constant): computed once per batch size.

Inputs and parameters are not planned: they live in their own arrays. A value lives from its
node until its last reader; outputs and updates live to the end of the step.

Sizes reported (bytes, at the reference batch `batch`):
- `peak_bytes`: the most bytes of planned values alive at once (inputs, parameters, optimizer
  state and static values are resident and reported as `resident_bytes`/`static_bytes`);
  `peak_at` the node where it occurs and `live_at_peak` the values alive there.
- `arena_bytes`: the sum of slot sizes, what the executor allocates (>= peak_bytes).
- `no_reuse_bytes`: the sum of all planned values (every value its own buffer).
- `no_inplace_peak_bytes`: the peak with in-place updates and input reuse turned off.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ...ir.graph import Graph, Node
from . import register_pass

DEFAULT_BATCH = 64
# Ops whose kernel is one NumPy ufunc (or computes fully before writing): `out` may alias an input.
INPLACE_SAFE = frozenset(("add", "sub", "mul", "div", "pow", "maximum", "neg", "sqrt", "exp", "log", "relu", "where"))
GRAD_NOTE = "grad of"


def reference_batch(graph: Graph) -> int:
    """The batch size the plan's byte counts are computed at."""
    train = graph.meta.get("train") or {}
    return int(train.get("batch_size") or graph.meta.get("batch_size") or DEFAULT_BATCH)


def lifetimes(graph: Graph) -> tuple[dict[str, int], dict[str, int]]:
    """(first, last): the node index defining each node output and the index of its last reader;
    outputs and updates (and anything they are) live to len(nodes)."""
    end = len(graph.nodes)
    first = {n.out: i for i, n in enumerate(graph.nodes)}
    last = dict(first)
    for i, n in enumerate(graph.nodes):
        for v in n.inputs:
            last[v] = i
    for v in graph.output_values:
        last[v] = end
    return first, last


def _claim_ok(value: str, param: str, graph: Graph, keep: set[str], update_of: Mapping[str, str]) -> bool:
    # a parameter's array may hold a dead temporary, or its own update, never another live result
    if value not in keep:
        return True
    outs = {v for _, v in graph.outputs}
    return update_of.get(param) == value and value not in outs and sum(v == value for _, v in graph.updates) == 1


def assign(graph: Graph, batch: int, inplace: bool = True) -> dict[str, Any]:
    """Decide the home of every node output: a slot, a parameter's array, or static."""
    _, last = lifetimes(graph)
    keep = set(graph.output_values)
    update_of = dict(graph.updates)
    types = graph.types
    params = graph.param_map
    home: dict[str, Any] = {}  # value -> slot int | ("param", name)
    static: list[str] = []
    reuse: dict[str, str] = {}
    slot_bytes: list[int] = []
    free: list[int] = []
    claimed: set[str] = set()
    for i, n in enumerate(graph.nodes):
        v = n.out
        if not n.inputs:
            static.append(v)
            continue
        target = _inplace_target(n, i, graph, last, keep, update_of, claimed, home, types, params) if inplace else None
        if target is not None:
            kind, u = target
            if kind == "param":
                home[v] = ("param", u)
                claimed.add(u)
            else:
                home[v] = home[u]
                reuse[v] = u
        else:
            home[v] = _best_fit(free, slot_bytes, types[v].nbytes(default=batch))
        for u in dict.fromkeys(n.inputs):
            if last.get(u) == i and isinstance(home.get(u), int) and home[u] != home[v]:
                free.append(home[u])
        if last[v] == i and isinstance(home[v], int):
            free.append(home[v])  # never read: its buffer is free again at once
    return {"home": home, "static": static, "reuse_input": reuse, "slot_bytes": slot_bytes}


def _inplace_target(n: Node, i: int, graph: Graph, last, keep, update_of, claimed, home, types, params):
    """("param", p) or ("reuse", u) if `n` may write over an input that dies at `n`, else None."""
    if n.op not in INPLACE_SAFE:
        return None
    t = types[n.out]
    for u in dict.fromkeys(n.inputs):
        if last.get(u) != i or types[u] != t:
            continue
        if u in params:
            if u in update_of and u not in claimed and _claim_ok(n.out, u, graph, keep, update_of):
                return ("param", u)
        elif u in home and u not in keep:
            h = home[u]
            if isinstance(h, int) or _claim_ok(n.out, h[1], graph, keep, update_of):
                return ("reuse", u)
    return None


def _best_fit(free: list[int], slot_bytes: list[int], size: int) -> int:
    """The smallest free slot that fits; else the largest free one, grown; else a new slot."""
    fits = [s for s in free if slot_bytes[s] >= size]
    if fits:
        s = min(fits, key=lambda s: (slot_bytes[s], s))
    elif free:
        s = max(free, key=lambda s: (slot_bytes[s], -s))
        slot_bytes[s] = size
    else:
        slot_bytes.append(size)
        return len(slot_bytes) - 1
    free.remove(s)
    return s


def peak(graph: Graph, home: Mapping[str, Any], batch: int) -> tuple[int, int, list[str]]:
    """(peak bytes, node index of the peak, values alive there) of planned values at `batch`.

    A buffer counts once however many values share it at a step; parameter arrays count zero.
    """
    first, last = lifetimes(graph)
    deaths: dict[int, list[str]] = {}
    for v in home:
        deaths.setdefault(last[v], []).append(v)
    holders: dict[Any, int] = {}
    live = best = 0
    best_at = -1
    for i, n in enumerate(graph.nodes):
        h = home.get(n.out)
        if isinstance(h, int):
            holders[h] = holders.get(h, 0) + 1
            if holders[h] == 1:
                live += n.type.nbytes(default=batch)
        if live > best:
            best, best_at = live, i
        for v in deaths.get(i, ()):
            h = home[v]
            if isinstance(h, int):
                holders[h] -= 1
                if holders[h] == 0:
                    live -= graph.types[v].nbytes(default=batch)
    alive = [v for v in home if first[v] <= best_at <= last[v]] if best_at >= 0 else []
    return best, best_at, alive


def make_plan(graph: Graph, batch: int | None = None) -> dict[str, Any]:
    """The memory plan of `graph` (in its node order) as a msgpack-able dict."""
    batch = batch or reference_batch(graph)
    a = assign(graph, batch)
    home = a["home"]
    peak_bytes, at, alive = peak(graph, home, batch)
    plain = assign(graph, batch, inplace=False)
    types = graph.types
    return {
        "batch": batch,
        "slots": {v: h for v, h in home.items() if isinstance(h, int)},
        "slot_bytes": a["slot_bytes"],
        "inplace": {v: h[1] for v, h in home.items() if not isinstance(h, int)},
        "reuse_input": a["reuse_input"],
        "static": a["static"],
        "peak_bytes": peak_bytes,
        "peak_at": graph.nodes[at].out if at >= 0 else "",
        "live_at_peak": alive,
        "arena_bytes": sum(a["slot_bytes"]),
        "no_reuse_bytes": sum(types[v].nbytes(default=batch) for v in home),
        "no_inplace_peak_bytes": peak(graph, plain["home"], batch)[0],
        "resident_bytes": sum(t.nbytes(default=batch) for t in (x.type for x in graph.inputs + graph.params)),
        "static_bytes": sum(types[v].nbytes(default=batch) for v in a["static"]),
    }


@register_pass("memplan")
def memplan(graph: Graph) -> Graph:
    """Plan buffers: liveness, slot reuse and in-place updates; records the planned peak."""
    meta = dict(graph.meta)
    meta["memplan"] = make_plan(graph)
    return graph.with_nodes(graph.nodes, meta=meta)


# --------------------------------------------------------------------------- reports


def _homes_from_plan(plan: Mapping[str, Any]) -> dict[str, Any]:
    home: dict[str, Any] = dict(plan.get("slots", {}))
    home.update((v, ("param", p)) for v, p in plan.get("inplace", {}).items())
    return home


def memory_report(graph_or_entry: Any, batch: int | None = None) -> dict[str, Any]:
    """The planned peak at `batch`: where it occurs, what is alive there, and what reuse saves."""
    graph = getattr(graph_or_entry, "graph", graph_or_entry)
    plan = getattr(graph_or_entry, "plan", None) or graph.meta.get("memplan") or make_plan(graph)
    batch = batch or plan.get("batch") or reference_batch(graph)
    home = _homes_from_plan(plan)
    peak_bytes, at, alive = peak(graph, home, batch)
    plain_home = assign(graph, batch, inplace=False)["home"]
    producers, consumers = graph.producers, graph.consumers
    rows = []
    for v in alive:
        n = producers[v]
        saved = not n.note.startswith(GRAD_NOTE) and any(c.note.startswith(GRAD_NOTE) for c in consumers.get(v, ()))
        in_place = home[v][1] if not isinstance(home[v], int) else ""
        rows.append({"value": v, "op": n.op, "type": str(n.type), "bytes": 0 if in_place else n.type.nbytes(default=batch),
                     "loc": n.loc, "note": n.note, "saved_for_backward": saved, "in_place_of": in_place})
    rows.sort(key=lambda r: (-r["bytes"], int(r["value"]) if r["value"].isdigit() else 0))
    # values in a parameter's array cost nothing extra; the rest add up to the peak
    node = graph.nodes[at] if at >= 0 else None
    return {
        "entry": getattr(graph_or_entry, "name", graph.name),
        "batch": batch,
        "peak_bytes": peak_bytes,
        "peak_at": {"value": node.out, "op": node.op, "loc": node.where()} if node else None,
        "live_at_peak": rows,
        "no_reuse_bytes": sum(graph.types[v].nbytes(default=batch) for v in home),
        "no_inplace_peak_bytes": peak(graph, plain_home, batch)[0],
        "resident_bytes": sum(x.type.nbytes(default=batch) for x in graph.inputs + graph.params),
    }


def _mb(n: int) -> str:
    for unit, scale in (("MB", 2**20), ("KB", 2**10)):
        if n >= scale:
            return f"{n / scale:.1f} {unit}"
    return f"{n} B"


def format_memory_report(report: Mapping[str, Any]) -> str:
    """The report as text for `tinyc inspect --memory`."""
    at = report["peak_at"]
    lines = [f"entry {report['entry']} at batch {report['batch']}:",
             f"  planned peak      {_mb(report['peak_bytes'])}"
             + (f" at %{at['value']} = {at['op']}  # {at['loc']}" if at else ""),
             f"  without reuse     {_mb(report['no_reuse_bytes'])}",
             f"  without in-place  {_mb(report['no_inplace_peak_bytes'])}",
             f"  resident (inputs, params, state) {_mb(report['resident_bytes'])}",
             f"  alive at the peak ({len(report['live_at_peak'])} values):"]
    for r in report["live_at_peak"]:
        saved = "  saved for backward" if r["saved_for_backward"] else ""
        saved += f"  (in {r['in_place_of']}'s array)" if r["in_place_of"] else ""
        where = f"{r['note']} @ {r['loc']}" if r["note"] else r["loc"]
        lines.append(f"    %{r['value']:<6} {r['op']:<22} {r['type']:<20} {_mb(r['bytes']):>10}  # {where}{saved}")
    return "\n".join(lines)
