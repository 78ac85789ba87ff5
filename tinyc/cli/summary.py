"""`tinyc inspect FILE --summary`: a per-layer table, as torchinfo or Keras `summary()` print it.

Rows are the layer scopes the IR records on every node (`enc0.attn.qkv`, like JAX's name stack),
in the order the forward pass first reaches them; nodes outside any layer (the loss, say) form
the row `(top)`. Per row: the output shape (of the scope's last forward node), its parameters
(those named `<scope>.<name>`), forward and backward FLOPs (the op schemas' estimates at the
program's batch), and the bytes its forward values hold for the backward pass (read by a backward
node). Optimizer updates are no layer's: the optimizer is one line with the state it keeps.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

from ..compiler.manager import node_flops
from ..ir.graph import Graph
from ..ir.numfmt import human_bytes, human_count
from ..ir.plan import reference_batch
from ..ir.program import TRAIN_ENTRY, Program
from .output import echo, table
from .views import role_of, saved_for_backward

TOP = "(top)"  # the row of nodes outside every layer scope


@dataclass
class LayerRow:
    layer: str
    output: str = ""
    params: int = 0
    forward_flops: int = 0
    backward_flops: int = 0
    saved_bytes: int = 0


def layer_rows(graph: Graph, batch: int) -> tuple[list[LayerRow], int]:
    """(one row per layer scope in forward order, FLOPs of the optimizer's nodes)."""
    roles = role_of(graph)
    types, saved = graph.types, saved_for_backward(graph, roles)
    rows: dict[str, LayerRow] = {}
    optimizer = 0
    for n in graph.nodes:  # forward nodes first: they decide the order of the rows
        if roles[n.out] == "forward":
            row = rows.setdefault(n.scope or TOP, LayerRow(n.scope or TOP))
            row.output = str(n.type)
            row.forward_flops += node_flops(n, types, batch)
            if n.out in saved:
                row.saved_bytes += n.type.nbytes(default=batch)
    for n in graph.nodes:
        if roles[n.out] == "backward":
            rows.setdefault(n.scope or TOP, LayerRow(n.scope or TOP)).backward_flops += node_flops(n, types, batch)
        elif roles[n.out] == "optimizer":
            optimizer += node_flops(n, types, batch)
    for p in graph.params:
        if p.kind == "param":
            scope = p.name.rsplit(".", 1)[0] if "." in p.name else TOP
            rows.setdefault(scope, LayerRow(scope)).params += p.type.numel()
    return list(rows.values()), optimizer


def optimizer_line(program: Program, graph: Graph, flops: int) -> str | None:
    """`optimizer adam (lr 0.003, ...): 63 state tensors (m 31, v 31, step 1), 209,941 values, 820.1 KiB`."""
    state = [p for p in graph.params if p.kind == "state"]
    spec = dict(program.meta.get("optimizer") or {})
    if not state and not spec:
        return None
    kind = spec.pop("kind", "optimizer")
    settings = ", ".join(f"{k} {v:g}" if isinstance(v, float) else f"{k} {v}" for k, v in sorted(spec.items()))
    kinds = Counter(p.name.rsplit(".", 1)[-1] for p in state)
    held = ", ".join(f"{k} {n}" for k, n in kinds.items())
    values = sum(p.type.numel() for p in state)
    nbytes = sum(p.type.nbytes() for p in state)
    text = f"optimizer {kind}" + (f" ({settings})" if settings else "")
    text += f": {len(state)} state tensors ({held}), {values:,} values, {human_bytes(nbytes)}" if state else ": no state"
    return text + f"; update {human_count(flops)} FLOPs"


def print_layer_summary(program: Program, entry: str) -> None:
    """The layer table of one entry, its totals, and the optimizer's line."""
    graph = program.entries[entry].graph
    batch = reference_batch(program.meta)
    rows, optimizer = layer_rows(graph, batch)
    cells = [(r.layer, r.output, f"{r.params:,}", human_count(r.forward_flops), human_count(r.backward_flops),
              human_bytes(r.saved_bytes)) for r in rows]
    total = LayerRow("total", params=sum(r.params for r in rows), forward_flops=sum(r.forward_flops for r in rows),
                     backward_flops=sum(r.backward_flops for r in rows), saved_bytes=sum(r.saved_bytes for r in rows))
    cells.append(("total", "", f"{total.params:,}", human_count(total.forward_flops),
                  human_count(total.backward_flops), human_bytes(total.saved_bytes)))
    echo("")
    table(["layer", "output", "params", "forward FLOPs", "backward FLOPs", "saved for backward"], cells,
          title=f"entry {entry}: layers (FLOPs and bytes at batch {batch})", right=(2, 3, 4, 5))
    line = optimizer_line(program, graph, optimizer) if entry == TRAIN_ENTRY else None
    if line:
        echo(line)
