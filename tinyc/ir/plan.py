"""The memory plan of an Entry: where each node output lives while the entry runs.

The `memplan` pass makes it (and documents how); the codec writes and reads it (`plan_doc`,
`decode_plan`); the executor follows it; `tinyc inspect --memory` shows it. Decisions (`slots`,
`buffers`, `inplace`, `reuse_input`, `static`, `alias`) hold at every batch size; the byte
figures are taken at the reference batch `batch` (`reference_batch`).

- `slots`: value -> buffer index; `buffers[i]` = (first, last): the node steps from the buffer's
  first write to its last read. The executor sizes each buffer per batch size and packs them
  into one arena (`tinyc.ir.arena`).
- `inplace`: value -> parameter whose array the value is written into (its update).
- `reuse_input`: value -> input value it is written over (same slot or parameter array).
- `static`: values of nodes without inputs, computed once per batch size.
- `alias`: value -> input value it is a view of (no buffer of its own).
- `placed`: value -> the packing node (`flat_concat`) it is written straight into: it lives in
  that node's buffer, at its position among the node's inputs, so packing it copies nothing.
- `peak_bytes` (at node `peak_at`, values `live_at_peak` alive there), `arena_bytes` (what the
  executor allocates), `unpacked_bytes` (one array per buffer), `no_reuse_bytes` (one per value),
  `no_inplace_peak_bytes`, `resident_bytes` (inputs and parameters), `static_bytes`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from typing import Any

from .docfields import check_dict, check_fields, check_int, check_list, check_str, fail
from .errors import IRError
from .graph import Graph
from .train import STORED_DEFAULTS

DEFAULT_BATCH = STORED_DEFAULTS["batch_size"]  # the reference batch of a graph that declares none: tc.Train's
MAX_BYTES = 2**62


def reference_batch(meta: Mapping[str, Any]) -> int:
    """The batch size a graph's byte figures (schedule, plan, pass stats) are taken at:
    the training batch size (`meta["train"]["batch_size"]`), else DEFAULT_BATCH."""
    train = meta.get("train") or {}
    return int(train.get("batch_size") or DEFAULT_BATCH)


@dataclass(frozen=True)
class MemoryPlan:
    """The home of every node output of one entry, and what that costs at `batch` (see the module doc)."""

    batch: int
    slots: Mapping[str, int]
    buffers: tuple[tuple[int, int], ...]
    inplace: Mapping[str, str]
    reuse_input: Mapping[str, str]
    static: tuple[str, ...]
    alias: Mapping[str, str]
    peak_bytes: int
    peak_at: str
    live_at_peak: tuple[str, ...]
    arena_bytes: int
    unpacked_bytes: int
    no_reuse_bytes: int
    no_inplace_peak_bytes: int
    resident_bytes: int
    static_bytes: int
    placed: Mapping[str, str] = field(default_factory=dict)

    __hash__ = None

    def homes(self) -> dict[str, int | str]:
        """value -> its buffer index, or the name of the parameter whose array holds it."""
        return {**self.slots, **{v: self.slots[p] for v, p in self.placed.items()}, **self.inplace}


PLAN_FIELDS = tuple(f.name for f in fields(MemoryPlan))
_BYTE_FIELDS = ("peak_bytes", "arena_bytes", "unpacked_bytes", "no_reuse_bytes", "no_inplace_peak_bytes",
                "resident_bytes", "static_bytes")


def check_plan(plan: MemoryPlan, graph: Graph) -> None:
    """IRError unless every value the plan names is one of `graph`'s and every home is allowed:
    buffers exist, an in-place write goes into a parameter the entry updates, of the same type."""
    defined = {n.out for n in graph.nodes}
    types = graph.types
    steps = len(graph.nodes)
    for i, (first, last) in enumerate(plan.buffers):
        if not 0 <= first <= last <= steps:
            raise IRError(f"memory plan: buffer {i} lives [{first}, {last}], outside the entry's {steps} steps")

    def node_value(v: str, what: str) -> None:
        if v not in defined:
            raise IRError(f"memory plan: {what} names %{v}, which no node of the entry defines")

    for v, s in plan.slots.items():
        node_value(v, "slots")
        if not 0 <= s < len(plan.buffers):
            raise IRError(f"memory plan places %{v} in buffer {s}, but the plan has no such buffer")
    updated = {p for p, _ in graph.updates}
    for v, p in plan.inplace.items():
        node_value(v, "inplace")
        if p not in updated or types[v] != types[p]:
            raise IRError(f"memory plan writes %{v} into parameter {p!r}, which it may not")
    for v, u in plan.reuse_input.items():
        node_value(v, "reuse_input")
        node_value(u, "reuse_input")
    for v, u in plan.alias.items():
        node_value(v, "alias")
        if u not in types:
            raise IRError(f"memory plan: alias makes %{v} a view of %{u}, which the entry does not have")
    producers = graph.producers
    for v, p in plan.placed.items():
        node_value(v, "placed")
        packer = producers.get(p)
        if packer is None or v not in packer.inputs or p not in plan.slots or v in plan.slots or types[v].symbols:
            raise IRError(f"memory plan places %{v} inside %{p}, which it cannot be")
    for v in (*plan.static, *plan.live_at_peak, *([plan.peak_at] if plan.peak_at else ())):
        node_value(v, "static, peak_at or live_at_peak")


def plan_doc(plan: MemoryPlan | None) -> dict[str, Any]:
    """The plan's fields as a map (the codec writes it with sorted keys); {} when unplanned."""
    return {} if plan is None else {name: getattr(plan, name) for name in PLAN_FIELDS}


def decode_plan(doc: Any, graph: Graph, where: str) -> MemoryPlan | None:
    """The plan a `.ir` document holds for `graph` (None for {}); IRFormatError if it is not one."""
    d = check_dict(doc, where, "plan")
    if not d:
        return None
    w = f"{where}: memory plan"
    d = {"placed": {}, **d}  # absent from files written before packing was planned
    check_fields(d, w, PLAN_FIELDS)

    def strings(key: str) -> tuple[str, ...]:
        return tuple(check_str(v, w, key) for v in check_list(d[key], w, key))

    def str_map(key: str) -> dict[str, str]:
        return {check_str(k, w, key): check_str(v, w, f"{key}[{k}]") for k, v in check_dict(d[key], w, key).items()}

    buffers = []
    for i, pair in enumerate(check_list(d["buffers"], w, "buffers")):
        if not isinstance(pair, list) or len(pair) != 2:
            fail(w, f"buffers[{i}] must be [first, last]")
        buffers.append((check_int(pair[0], w, f"buffers[{i}]", 0, MAX_BYTES),
                        check_int(pair[1], w, f"buffers[{i}]", 0, MAX_BYTES)))
    plan = MemoryPlan(
        batch=check_int(d["batch"], w, "batch", 1, MAX_BYTES),
        slots={k: check_int(v, w, f"slots[{k}]", 0, MAX_BYTES) for k, v in check_dict(d["slots"], w, "slots").items()},
        buffers=tuple(buffers),
        inplace=str_map("inplace"),
        reuse_input=str_map("reuse_input"),
        static=strings("static"),
        alias=str_map("alias"),
        placed=str_map("placed"),
        peak_at=check_str(d["peak_at"], w, "peak_at"),
        live_at_peak=strings("live_at_peak"),
        **{k: check_int(d[k], w, k, 0, MAX_BYTES) for k in _BYTE_FIELDS},
    )
    try:
        check_plan(plan, graph)
    except IRError as e:
        fail(where, e.message)
    return plan
