"""Constant folding: evaluate nodes whose inputs are all constants, at compile time.

A folded node keeps its name, location and note and becomes a source: `fill` when every element
of the result is one value (symbolic shapes allowed), else `constant` (data added to
`graph.constants` as `fold<N>`, concrete shapes only, at most FOLD_LIMIT elements and never
larger than its largest constant input, so a broadcast is not materialised into the file).
Results that are not finite are left alone: the runtime's NaN check should report the user's
line. Constants no longer read are left for dce to drop.
"""

from __future__ import annotations

import numpy as np

from ...ir.graph import Graph, Node
from ...ir.ops import ELEMENTWISE, OPS
from ...ir.types import TensorType
from . import register_pass

FOLD_LIMIT = 1 << 20  # elements in one folded constant

# Ops whose output, on inputs that each hold one repeated value, is that value again (or the
# elementwise result of those values); they fold to a fill even with symbolic shapes.
UNIFORM_PRESERVING = frozenset(ELEMENTWISE) | {
    "broadcast_to", "reshape", "transpose", "expand_dims", "squeeze", "mean", "max",
}
# Ops whose result does not depend on the input's values at all.
VALUE_FREE = {"zeros_like": 0.0, "ones_like": 1.0}


def _exact_fill_value(value, dtype: str) -> float | None:
    """`value` as a fill attribute, if it is finite and the float stores it exactly."""
    v = float(value)
    if not np.isfinite(v) or np.asarray(v).astype(TensorType(dtype, ()).np_dtype) != value:
        return None
    return v


def _uniform(data: np.ndarray) -> bool:
    return data.size > 0 and bool((data == data.flat[0]).all())


class _Folder:
    def __init__(self, graph: Graph) -> None:
        self.graph = graph
        self.constants = dict(graph.constants)
        self.sources: dict[str, Node] = {}  # value -> its fill/constant node in the new graph
        self.changed = False

    def fill(self, node: Node, value: float) -> Node:
        return Node(node.out, "fill", (), {"shape": node.type.shape, "dtype": node.type.dtype, "value": value},
                    node.type, node.loc, node.note, node.scope)

    def array(self, v: str) -> np.ndarray:
        src = self.sources[v]
        if src.op == "constant":
            return self.constants[src.attrs["name"]]
        return np.full(src.type.shape, src.attrs["value"], dtype=src.type.np_dtype)

    def scalar(self, v: str) -> np.ndarray | None:
        """The one value of `v` as a 0-d array, if it has one."""
        src = self.sources[v]
        if src.op == "fill":
            return np.asarray(src.attrs["value"], dtype=src.type.np_dtype)
        data = self.constants[src.attrs["name"]]
        return np.asarray(data.flat[0]) if _uniform(data) else None

    def fold(self, node: Node) -> Node | None:
        """The source node replacing `node`, or None to keep it."""
        from ...runtime.kernels import KERNELS

        # zeros_like(x) -> fill(shape(x), 0) ; ones_like(x) -> fill(shape(x), 1)
        if node.op in VALUE_FREE:
            return self.fill(node, VALUE_FREE[node.op])
        if node.op in ("fill", "constant") or OPS[node.op].effectful or not all(v in self.sources for v in node.inputs):
            return None  # an effectful op (allreduce) depends on more than its inputs: never evaluated here
        types = [self.graph.types[v] for v in node.inputs]
        # op(fill a, fill b) -> fill(op(a, b)) when op maps uniform inputs to a uniform result
        if node.op in UNIFORM_PRESERVING and 0 not in node.type.shape and all(0 not in t.shape for t in types):
            scalars = [self.scalar(v) for v in node.inputs]
            if all(s is not None for s in scalars):
                if node.op in ELEMENTWISE:
                    value = KERNELS[node.op](*scalars, **dict(node.attrs))
                else:
                    value = scalars[0]
                value = _exact_fill_value(np.asarray(value).astype(node.type.np_dtype), node.type.dtype)
                return None if value is None else self.fill(node, value)
        # op(c1, c2) -> constant(op(c1, c2)): concrete shapes only
        if node.type.symbols or any(t.symbols for t in types):
            return None
        numel = node.type.numel()
        biggest = max((t.numel() for t in types), default=0)
        attrs = {k: (node.type.shape if OPS[node.op].attrs[k].kind == "shape" else v) for k, v in node.attrs.items()}
        data = np.asarray(KERNELS[node.op](*[self.array(v) for v in node.inputs], **attrs)).astype(node.type.np_dtype)
        if data.shape != node.type.shape or not np.isfinite(data.astype(np.float64)).all():
            return None
        if _uniform(data):
            value = _exact_fill_value(data.flat[0], node.type.dtype)
            if value is not None:
                return self.fill(node, value)
        if numel > FOLD_LIMIT or numel > biggest:
            return None
        name = f"fold{node.out}"
        while name in self.constants:
            name += "_"
        self.constants[name] = np.ascontiguousarray(data)
        attrs = {"name": name, "dtype": node.type.dtype, "shape": node.type.shape}
        return Node(node.out, "constant", (), attrs, node.type, node.loc, node.note, node.scope)

    def canonical(self, node: Node) -> Node:
        """constant c with one repeated value -> fill (smaller file, visible to simplify)."""
        if node.op == "constant":
            data = self.constants[node.attrs["name"]]
            if _uniform(data):
                value = _exact_fill_value(data.flat[0], node.type.dtype)
                if value is not None:
                    return self.fill(node, value)
        return node


@register_pass("fold")
def fold(graph: Graph) -> Graph:
    """Evaluate nodes whose inputs are all constants into fill or constant nodes."""
    f = _Folder(graph)
    nodes = []
    for node in graph.nodes:
        with np.errstate(all="ignore"):  # a NaN result is detected and left unfolded
            new = f.fold(node) or f.canonical(node)
        if new is not node:
            f.changed = True
        if new.op in ("fill", "constant"):
            f.sources[new.out] = new
        nodes.append(new)
    if not f.changed:
        return graph
    return graph.with_nodes(nodes, constants=f.constants)
