"""The `memplan` pass: liveness over the scheduled node order, buffer slots, in-place updates.

The plan (a `tinyc.ir.plan.MemoryPlan`, the entry's `plan`) says where each node output lives
while the program runs:

- `slots`: value -> buffer index. A buffer holds one value, or a chain of values each written
  over the one before it (`reuse_input`). `buffers[i]` = [first, last]: the node steps from the
  buffer's first write to its last read (alias lifetimes included). The executor sizes each
  buffer per batch size (from the value types) and packs them all into one arena by byte
  offset (`tinyc.ir.arena.pack`): buffers with overlapping lives get disjoint bytes.
- `inplace`: value -> parameter: the value is written straight into that parameter's array
  (an elementwise update such as `p - lr * g` whose input `p` is read for the last time there).
- `reuse_input`: value -> input value: an elementwise node writes over an input that dies there
  (same slot or parameter array as that input; recorded for reports and checks).
- `static`: values of nodes without inputs (fill, constant): computed once per batch size.
- `alias`: value -> input value: a view op (reshape, transpose, slice, ...) whose result is a
  NumPy view of its input's array, so it has no buffer of its own. The input's lifetime (and
  that of what it is a view of, transitively) extends to the alias's last reader, so no buffer
  is reused or written in place while a view of it may still be read.
- `placed`: value -> packing node (`flat_concat`, whose output is its inputs flattened one after
  another): the value is computed straight into its part of that node's buffer, so packing the
  gradients for the allreduce copies nothing. The buffer then lives from the first placed value.

Inputs and parameters are not planned: they live in their own arrays. A value lives from its
node until its last reader; outputs and updates live to the end of the step.

Sizes reported (bytes, at the reference batch `batch`, `tinyc.ir.plan.reference_batch`):
- `peak_bytes`: the most bytes of planned values alive at once (inputs, parameters, optimizer
  state and static values are resident and reported as `resident_bytes`/`static_bytes`);
  `peak_at` the node where it occurs and `live_at_peak` the values alive there.
- `arena_bytes`: the packed arena, what the executor allocates (>= peak_bytes);
  `unpacked_bytes` the sum of buffer sizes (what one array per buffer would take).
- `no_reuse_bytes`: the sum of all planned values (every value its own buffer).
- `no_inplace_peak_bytes`: the peak with in-place updates and input reuse turned off.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ...ir.arena import buffer_sizes, pack  # the executor's own packing, so the plan reports what it allocates
from ...ir.graph import Graph, Node
from ...ir.plan import MemoryPlan, reference_batch
from ...runtime.kernels import COPIES, GEMMS, INPLACE_INPUTS, INPLACE_SAFE, PACKING, VIEW_OPS  # kernel facts
from . import register_pass


def lifetimes(graph: Graph, alias: Mapping[str, str] | None = None) -> tuple[dict[str, int], dict[str, int]]:
    """(first, last): the node index defining each node output and the index of its last reader;
    outputs and updates (and anything they are) live to len(nodes). A value that `alias` views
    lives as long as its views."""
    end = len(graph.nodes)
    first = {n.out: i for i, n in enumerate(graph.nodes)}
    last = dict(first)
    for i, n in enumerate(graph.nodes):
        for v in n.inputs:
            last[v] = i
    for v in graph.output_values:
        last[v] = end
    for n in reversed(graph.nodes):  # views of views: the latest alias first
        base = (alias or {}).get(n.out)
        if base is not None:
            last[base] = max(last.get(base, -1), last[n.out])
    return first, last


def _splits_last(n: Node, graph: Graph) -> bool:
    """A reshape that keeps every dim but the last and splits the last one."""
    src, dst = graph.types[n.inputs[0]].shape, n.type.shape
    k = len(src) - 1
    return k >= 0 and len(dst) > k and tuple(dst[:k]) == tuple(src[:k])


def views(graph: Graph) -> dict[str, str]:
    """value -> input: the nodes of VIEW_OPS whose result is a view of their input's array.

    Layout is tracked per value: C-contiguous, or only its last axis unit-stride ("rows"), or
    strided. reshape views a contiguous value, or splits the last axis of a "rows" value;
    expand_dims, squeeze and slice are always views; a transpose is one when every reader is a
    GEMM and the view keeps a unit-stride axis among its last two (BLAS takes it as a flag), or
    every reader is a reshape or concat (which then makes the one copy).
    """
    layout = {v.name: "c" for v in graph.inputs + graph.params}
    consumers = graph.consumers
    outputs = set(graph.output_values)
    alias: dict[str, str] = {}
    for n in graph.nodes:
        layout[n.out] = "c"
        if n.op not in VIEW_OPS or not n.inputs:
            continue
        u = n.inputs[0]
        lay = layout.get(u, "strided")
        r = n.type.rank
        if n.op == "reshape":
            if lay == "rows" and _splits_last(n, graph):
                layout[n.out] = "rows"
            elif lay != "c":
                continue
        elif n.op == "transpose":
            perm = tuple(n.attrs["perm"])
            readers = {c.op for c in consumers.get(n.out, ())}
            blas = lay != "strided" and r >= 2 and graph.types[u].rank - 1 in perm[-2:]
            if n.out in outputs or not readers or not (readers <= GEMMS and blas or readers <= COPIES):
                continue
            layout[n.out] = "rows" if lay != "strided" and perm[-1] == r - 1 else "strided"
        elif n.op == "slice":  # a slice keeps every stride: contiguous only when cut along axis 0
            layout[n.out] = "c" if lay == "c" and n.attrs["axis"] == 0 else ("rows" if lay != "strided" else "strided")
        else:  # expand_dims, squeeze: the same strides with a dim of 1 added or dropped
            layout[n.out] = lay if lay == "c" else "strided"
        alias[n.out] = u
    return alias


def _claim_ok(value: str, param: str, graph: Graph, keep: set[str], update_of: Mapping[str, str]) -> bool:
    # a parameter's array may hold a dead temporary, or its own update, never another live result
    if value not in keep:
        return True
    outs = {v for _, v in graph.outputs}
    return update_of.get(param) == value and value not in outs and sum(v == value for _, v in graph.updates) == 1


def placements(graph: Graph, alias: Mapping[str, str], last: Mapping[str, int]) -> dict[str, str]:
    """value -> packing node that may hold it: a computed value (no source, view or output, and
    not viewed) read last by that node, at its first position among the node's inputs."""
    keep = set(graph.output_values) | set(alias.values())
    producers = graph.producers
    placed: dict[str, str] = {}
    for i, n in enumerate(graph.nodes):
        if n.op not in PACKING or n.out in alias:
            continue
        for v in dict.fromkeys(n.inputs):
            p = producers.get(v)
            if p is not None and p.inputs and v not in alias and v not in keep and last[v] == i \
                    and v not in placed and p.type.dtype == n.type.dtype:
                placed[v] = n.out
    return placed


def assign(graph: Graph, batch: int, inplace: bool = True, alias: Mapping[str, str] | None = None) -> dict[str, Any]:
    """Decide the home of every node output: a buffer, a parameter's array, static, a view
    (`alias`), or a part of a packing node's buffer (`placed`)."""
    alias = alias or {}
    first, last = lifetimes(graph, alias)
    placed = placements(graph, alias, last) if inplace else {}
    packers: dict[str, int] = {}  # packing node -> its buffer, made at its first placed input
    keep = set(graph.output_values)
    update_of = dict(graph.updates)
    types = graph.types
    params = graph.param_map
    home: dict[str, Any] = {}  # value -> buffer int | ("param", name)
    static: list[str] = []
    reuse: dict[str, str] = {}
    lives: list[list[int]] = []
    claimed: set[str] = set()
    for i, n in enumerate(graph.nodes):
        v = n.out
        if not n.inputs:
            static.append(v)
            continue
        if v in alias:  # a view: no buffer of its own; what it views lives as long (see lifetimes)
            continue
        if v in placed or v in packers:  # inside a packing node's buffer, alive from its first part on
            b = packers.setdefault(placed.get(v, v), len(lives))
            if b == len(lives):
                lives.append([first[v], last[v]])
            lives[b] = [min(lives[b][0], first[v]), max(lives[b][1], last[v])]
            home[v] = b
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
                if isinstance(home[u], int):
                    lives[home[u]][1] = max(lives[home[u]][1], last[v])
        else:
            home[v] = len(lives)
            lives.append([first[v], last[v]])
    return {"home": home, "static": static, "reuse_input": reuse, "buffers": lives, "placed": placed}


def _inplace_target(n: Node, i: int, graph: Graph, last, keep, update_of, claimed, home, types, params):
    """("param", p) or ("reuse", u) if `n` may write over an input that dies at `n`, else None."""
    if n.op in INPLACE_SAFE:
        candidates = n.inputs
    elif n.op in INPLACE_INPUTS:
        candidates = tuple(n.inputs[k] for k in INPLACE_INPUTS[n.op])
    else:
        return None
    t = types[n.out]
    for u in dict.fromkeys(candidates):
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


def peak(graph: Graph, home: Mapping[str, Any], batch: int, alias: Mapping[str, str] | None = None,
         placed: Mapping[str, str] | None = None) -> tuple[int, int, list[str]]:
    """(peak bytes, node index of the peak, values alive there) of planned values at `batch`.

    A buffer counts once however many values share it at a step; parameter arrays and views
    count zero.
    """
    first, last = lifetimes(graph, alias)
    deaths: dict[int, list[str]] = {}
    size: dict[int, int] = {}  # buffer -> its bytes: its largest value (a packing node holds its parts)
    for v, h in home.items():
        deaths.setdefault(last[v], []).append(v)
        if isinstance(h, int):
            size[h] = max(size.get(h, 0), graph.types[v].nbytes(default=batch))
    holders: dict[Any, int] = {}
    live = best = 0
    best_at = -1
    for i, n in enumerate(graph.nodes):
        h = home.get(n.out)
        if isinstance(h, int):
            holders[h] = holders.get(h, 0) + 1
            if holders[h] == 1:
                live += size[h]
        if live > best:
            best, best_at = live, i
        for v in deaths.get(i, ()):
            h = home[v]
            if isinstance(h, int):
                holders[h] -= 1
                if holders[h] == 0:
                    live -= size[h]
    alive = [v for v in home if first[v] <= best_at <= last[v]] if best_at >= 0 else []
    # a packing node's buffer is taken from its first placed part on: it counts as alive with them
    alive += sorted({(placed or {})[v] for v in alive if v in (placed or {})} - set(alive), key=first.__getitem__)
    return best, best_at, alive


def make_plan(graph: Graph, batch: int | None = None) -> MemoryPlan:
    """The memory plan of `graph` (in its node order), its figures at `batch` (default: the
    reference batch). The decisions do not depend on `batch`, only the byte figures do."""
    batch = batch or reference_batch(graph.meta)
    alias = views(graph)
    a = assign(graph, batch, alias=alias)
    home = a["home"]
    placed = a["placed"]
    peak_bytes, at, alive = peak(graph, home, batch, alias, placed)
    plain = assign(graph, batch, inplace=False, alias=alias)
    types = graph.types
    slots = {v: h for v, h in home.items() if isinstance(h, int) and v not in placed}
    buffers = tuple((first, last) for first, last in a["buffers"])
    sizes = buffer_sizes(slots, len(buffers), lambda v: types[v].nbytes(default=batch))
    return MemoryPlan(
        batch=batch,
        slots=slots,
        buffers=buffers,
        inplace={v: h[1] for v, h in home.items() if not isinstance(h, int)},
        reuse_input=a["reuse_input"],
        static=tuple(a["static"]),
        alias=alias,
        placed=placed,
        peak_bytes=peak_bytes,
        peak_at=graph.nodes[at].out if at >= 0 else "",
        live_at_peak=tuple(alive),
        arena_bytes=pack(sizes, buffers)[1],
        unpacked_bytes=sum(sizes),
        no_reuse_bytes=sum(types[v].nbytes(default=batch) for v in home),
        no_inplace_peak_bytes=peak(graph, plain["home"], batch, alias)[0],
        resident_bytes=sum(t.nbytes(default=batch) for t in (x.type for x in graph.inputs + graph.params)),
        static_bytes=sum(types[v].nbytes(default=batch) for v in a["static"]),
    )


@register_pass("memplan", makes_plan=True)
def memplan(graph: Graph) -> MemoryPlan:
    """Plan buffers: liveness, slot reuse and in-place updates; records the planned peak."""
    return make_plan(graph)
