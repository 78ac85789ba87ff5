"""`tinyc inspect --memory`: a view of an entry's memory plan (`tinyc.ir.plan.MemoryPlan`).

Every figure is the plan's own; the report adds only what each value alive at the peak is
(op, type, line), whether the backward pass keeps it, and the bytes each `allreduce` sends. At a batch other than the plan's, the
planner (`tinyc.compiler.passes.memplan`) takes the figures again: its decisions do not depend
on the batch, only the bytes do.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ..ir.graph import format_where
from ..ir.numfmt import human_bytes
from ..ir.plan import MemoryPlan
from ..ir.program import Entry
from .views import saved_for_backward


def plan_at(entry: Entry, batch: int | None = None) -> MemoryPlan:
    """The entry's plan with its figures at `batch` (default: the plan's own batch)."""
    plan = entry.plan
    if plan is None or (batch is not None and batch != plan.batch):
        from ..compiler.passes.memplan import make_plan

        plan = make_plan(entry.graph, batch or (plan.batch if plan else None))
    return plan


def memory_report(entry: Entry, batch: int | None = None) -> dict[str, Any]:
    """The planned peak at `batch`: where it occurs, what is alive there, and what reuse saves."""
    plan = plan_at(entry, batch)
    graph = entry.graph
    producers, kept = graph.producers, saved_for_backward(graph)
    rows = []
    for v in plan.live_at_peak:
        n = producers[v]
        saved = v in kept
        # in a parameter's array, or in a packing node's buffer (counted with it): nothing extra
        in_place = plan.inplace.get(v, "") or (f"%{plan.placed[v]}" if v in plan.placed else "")
        rows.append({"value": v, "op": n.op, "type": str(n.type), "bytes": 0 if in_place else n.type.nbytes(default=plan.batch),
                     "loc": n.loc, "note": n.note, "scope": n.scope, "saved_for_backward": saved, "in_place_of": in_place})
    rows.sort(key=lambda r: (-r["bytes"], int(r["value"]) if r["value"].isdecimal() else 0))
    node = producers[plan.peak_at] if plan.peak_at else None
    return {
        "entry": entry.name,
        "batch": plan.batch,
        "peak_bytes": plan.peak_bytes,
        "peak_at": {"value": node.out, "op": node.op, "loc": node.where()} if node else None,
        "arena_bytes": plan.arena_bytes,
        "live_at_peak": rows,
        "no_reuse_bytes": plan.no_reuse_bytes,
        "no_inplace_peak_bytes": plan.no_inplace_peak_bytes,
        "resident_bytes": plan.resident_bytes,
        # what a data-parallel step sends: the buffer of each allreduce (all gradients and metrics)
        "allreduce": [{"value": n.out, "type": str(n.type), "bytes": n.type.nbytes(default=plan.batch)}
                      for n in graph.nodes if n.op == "allreduce"],
    }


def format_memory_report(report: Mapping[str, Any]) -> str:
    """The report as text for `tinyc inspect --memory`."""
    at = report["peak_at"]
    lines = [f"entry {report['entry']} at batch {report['batch']}:",
             f"  planned peak      {human_bytes(report['peak_bytes'])}"
             + (f" at %{at['value']} = {at['op']}  # {at['loc']}" if at else ""),
             f"  arena (packed)    {human_bytes(report['arena_bytes'])}  (what the executor allocates)",
             f"  without reuse     {human_bytes(report['no_reuse_bytes'])}",
             f"  without in-place  {human_bytes(report['no_inplace_peak_bytes'])}",
             f"  resident (inputs, params, state) {human_bytes(report['resident_bytes'])}"]
    lines += [f"  allreduce         {human_bytes(r['bytes'])} per step, %{r['value']}: {r['type']}  (summed over the ranks)"
              for r in report.get("allreduce", ())]
    lines.append(f"  alive at the peak ({len(report['live_at_peak'])} values):")
    for r in report["live_at_peak"]:
        saved = "  saved for backward" if r["saved_for_backward"] else ""
        saved += f"  (in {r['in_place_of']}'s array)" if r["in_place_of"] else ""
        where = format_where(r["loc"], r["note"], r["scope"])
        lines.append(f"    %{r['value']:<6} {r['op']:<22} {r['type']:<20} {human_bytes(r['bytes']):>10}  # {where}{saved}")
    return "\n".join(lines)
