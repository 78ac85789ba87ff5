"""The `fuse` pass: rewrite patterns of primitive ops into fused ops with faster kernels.

One forward sweep over the graph after autodiff and the optimizer. A fused node takes the
output name, location, note and scope of the node it replaces (the root of the pattern); nodes that
only fed a pattern become dead and are dropped here. Inner nodes of a pattern are fused only
when the pattern is their sole reader, so nothing is ever computed twice. The fused ops and
their meaning as primitives are declared in `tinyc.ir.ops` (the "fused ops" section).
"""

from __future__ import annotations

from collections.abc import Callable

from ...ir.errors import ShapeError
from ...ir.graph import Graph, Node
from ...ir.types import broadcast_shapes
from ..graphutil import Rewriter, live_values
from . import register_pass


class _Fuser(Rewriter):
    def __init__(self, graph: Graph, rules) -> None:
        super().__init__(graph, rules)
        self.orig = graph.producers
        self.uses = graph.consumers
        self.results = set(graph.output_values)
        self.index = {n.out: i for i, n in enumerate(graph.nodes)}

    def producer(self, v: str, op: str | None = None, sole: bool = False) -> Node | None:
        """The input graph's node defining `v` (if it is `op`; if `sole`, only when read once)."""
        n = self.orig.get(v)
        if n is None or (op is not None and n.op != op):
            return None
        if sole and (len(self.uses.get(v, ())) != 1 or v in self.results):
            return None
        return n

    def scalar_fill(self, v: str) -> float | None:
        n = self.producer(v, "fill")
        return n.attrs["value"] if n is not None and n.type.shape == () else None

    def peel(self, v: str) -> tuple[str, bool]:
        """(x, True) when `v` = transpose(x) swapping the last two dims only, else (v, False)."""
        n = self.producer(v, "transpose")
        if n is not None:
            perm, r = tuple(n.attrs["perm"]), n.type.rank
            if r >= 2 and perm == tuple(range(r - 2)) + (r - 1, r - 2):
                return n.inputs[0], True
        return v, False

    def operands(self, m: Node) -> tuple[list[str], dict]:
        """The inputs and transpose flags of matmul node `m` with its transposes folded in."""
        (a, ta), (b, tb) = self.peel(m.inputs[0]), self.peel(m.inputs[1])
        return [self.value(a), self.value(b)], {"ta": ta, "tb": tb}

    def fits(self, small: str, big: str) -> bool:
        """`small` broadcasts to `big`'s type (same dtype, the result keeps big's shape)."""
        s, b = self.types[self.value(small)], self.types[self.value(big)]
        if s.dtype != b.dtype:
            return False
        try:
            return tuple(broadcast_shapes(s.shape, b.shape)) == tuple(b.shape)
        except ShapeError:
            return False

    def emit(self, node: Node, op: str, inputs: list[str], **attrs) -> None:
        new = self.make(op, inputs, attrs, like=node, out=node.out)
        assert new.type == node.type, (node, new)  # a rewrite never changes a value's type
        self.add(new)


def _weight_grad(f: _Fuser, n: Node) -> str | None:
    # squeeze(sum(matmul(a, b), batch axes, keepdims), batch axes) -> matmul_t_sum(a, b)
    # sum(matmul(a, b), batch axes) -> matmul_t_sum(a, b); transposes of a, b fold into ta, tb
    if n.op == "squeeze":
        s = f.producer(n.inputs[0], "sum", sole=True)
        if s is None or not s.attrs["keepdims"] or tuple(s.attrs["axes"]) != tuple(n.attrs["axes"]):
            return None
    elif n.op == "sum" and not n.attrs["keepdims"]:
        s = n
    else:
        return None
    m = f.producer(s.inputs[0], "matmul", sole=True)
    if m is None or m.type.rank < 3 or tuple(s.attrs["axes"]) != tuple(range(m.type.rank - 2)):
        return None
    a, b = (f.graph.types[v] for v in m.inputs)
    if not (a.rank == b.rank == m.type.rank and a.shape[:-2] == b.shape[:-2]):
        return None
    inputs, flags = f.operands(m)
    f.emit(n, "matmul_t_sum", inputs, **flags)
    return n.out


def _squeeze_sum(f: _Fuser, n: Node) -> str | None:
    # squeeze(sum(x, axes, keepdims=True), axes) -> sum(x, axes)
    s = f.producer(n.inputs[0], "sum", sole=True)
    if s is None or not s.attrs["keepdims"] or tuple(s.attrs["axes"]) != tuple(n.attrs["axes"]):
        return None
    f.emit(n, "sum", [f.value(s.inputs[0])], axes=s.attrs["axes"], keepdims=False)
    return n.out


def _matmul(f: _Fuser, n: Node) -> str | None:
    # matmul(transpose(a), transpose(b)) -> matmul_t(a, b, ta, tb); x[..., k] @ w[k, n] -> matmul_t (one GEMM)
    inputs, flags = f.operands(n)
    if not (flags["ta"] or flags["tb"] or (f.types[inputs[1]].rank == 2 and f.types[inputs[0]].rank > 2)):
        return None
    f.emit(n, "matmul_t", inputs, **flags)
    return n.out


def _scaled_matmul(f: _Fuser, n: Node) -> str | None:
    # mul(matmul(a, b), c) -> matmul_t(a, b, alpha=c) for a scalar fill c (attention's 1/sqrt(d))
    for m_v, c_v in (n.inputs, n.inputs[::-1]):
        m, c = f.producer(m_v, "matmul", sole=True), f.scalar_fill(c_v)
        if m is not None and c is not None and m.type == n.type:
            inputs, flags = f.operands(m)
            f.emit(n, "matmul_t", inputs, alpha=c, **flags)
            return n.out
    return None


def _bias(f: _Fuser, n: Node) -> str | None:
    # add(matmul(a, b), bias) -> matmul_bias(a, b, bias)
    for m_v, bias in (n.inputs, n.inputs[::-1]):
        m = f.producer(m_v, "matmul", sole=True)
        if m is not None and m.type == n.type and f.fits(bias, m_v):
            inputs, flags = f.operands(m)
            f.emit(n, "matmul_bias", inputs + [f.value(bias)], **flags)
            return n.out
    return None


def _gain_grad_sum(f: _Fuser, m: Node, ln: Node) -> bool:
    """`m` = mul(gy, ln) read only by a sum over every axis but ln's (the gain's gradient; with
    keepdims, then read only by the squeeze of those axes)."""
    readers = f.uses.get(m.out, ())
    if m.op != "mul" or m.out in f.results or len(readers) != 1 or f.graph.types[m.inputs[0]] != f.graph.types[m.inputs[1]]:
        return False
    s, rank = readers[0], ln.type.rank
    axes = tuple(range(rank - 1))
    if s.op != "sum" or ln.attrs["axis"] != rank - 1 or tuple(s.attrs["axes"]) != axes:
        return False
    if not s.attrs["keepdims"]:
        return True
    after = f.uses.get(s.out, ())
    return (s.out not in f.results and len(after) == 1 and after[0].op == "squeeze"
            and tuple(after[0].attrs["axes"]) == axes)


def _recomputable(f: _Fuser, ln: Node, forward: Node) -> bool:
    """layer_norm `ln` is read by `forward` (the gain's mul) and otherwise only by gain gradients,
    which recompute it from its input: then ln's output need not be stored."""
    if ln.out in f.results:
        return False
    return all(u.out == forward.out or _gain_grad_sum(f, u, ln) for u in f.uses.get(ln.out, ()))


def _affine(f: _Fuser, n: Node) -> str | None:
    # add(mul(x, s), t) -> affine(x, s, t) when s and t broadcast to x (LayerNorm's gain and bias);
    # add(mul(layer_norm(x), s), t) -> layer_norm_affine(x, s, t) when the gain gradients recompute layer_norm(x)
    for m_v, t in (n.inputs, n.inputs[::-1]):
        m = f.producer(m_v, "mul", sole=True)
        if m is None or m.type != n.type or not n.type.is_float:
            continue
        for x, s in (m.inputs, m.inputs[::-1]):
            if f.graph.types[x] == n.type and f.fits(s, x) and f.fits(t, x):
                ln = f.producer(x, "layer_norm")
                if ln is not None and _recomputable(f, ln, m):
                    f.emit(n, "layer_norm_affine", [f.value(ln.inputs[0]), f.value(s), f.value(t)], **ln.attrs)
                else:
                    f.emit(n, "affine", [f.value(x), f.value(s), f.value(t)])
                return n.out
    return None


def _gain_grad(f: _Fuser, n: Node) -> str | None:
    # sum(mul(gy, layer_norm(x)), every axis but the last) -> layer_norm_gain_grad(x, gy) when layer_norm(x)
    # is not stored (its forward reader became layer_norm_affine); also squeeze(sum(..., keepdims))
    s = f.producer(n.inputs[0], "sum", sole=True) if n.op == "squeeze" else n
    m = s and f.producer(s.inputs[0], "mul", sole=True)
    if m is None:
        return None
    for ln_v, gy in (m.inputs, m.inputs[::-1]):
        ln = f.producer(ln_v, "layer_norm")
        if ln is None or not _gain_grad_sum(f, m, ln) or f.uses[m.out][0].out != s.out:
            continue
        if n.op == "squeeze" and not s.attrs["keepdims"] or n.op == "sum" and s.attrs["keepdims"]:
            continue
        forward = [u for u in f.uses.get(ln.out, ()) if not _gain_grad_sum(f, u, ln)]
        if len(forward) == 1 and _forms_affine(f, forward[0], ln) and _recomputable(f, ln, forward[0]):
            f.emit(n, "layer_norm_gain_grad", [f.value(ln.inputs[0]), f.value(gy)], **ln.attrs)
            return n.out
    return None


def _forms_affine(f: _Fuser, m: Node, ln: Node) -> bool:
    """`m` is the mul of an affine pattern over `ln` (the rewrite `_affine` makes into layer_norm_affine)."""
    readers = f.uses.get(m.out, ())
    if m.op != "mul" or m.out in f.results or len(readers) != 1 or readers[0].op != "add" or m.type != ln.type:
        return False
    add = readers[0]
    t = add.inputs[1] if add.inputs[0] == m.out else add.inputs[0]
    s = m.inputs[1] if m.inputs[0] == ln.out else m.inputs[0]
    return add.type == m.type and m.type.is_float and f.fits(s, ln.out) and f.fits(t, ln.out)


def _axpby(f: _Fuser, n: Node) -> str | None:
    # add(mul(a, x), mul(b, y)) -> axpby(x, y, a, b); mul(b, mul(y, y)) -> square=True (Adam's moments)
    def scaled(v: str) -> tuple[float, str] | None:
        m = f.producer(v, "mul", sole=True)
        if m is None:
            return None
        for c, x in (m.inputs, m.inputs[::-1]):
            k = f.scalar_fill(c)
            if k is not None and f.graph.types[x] == n.type:
                return k, x
        return None

    for u, w in (n.inputs, n.inputs[::-1]):
        left, right = scaled(u), scaled(w)
        if left is None or right is None:
            continue
        sq = f.producer(right[1], "mul", sole=True)
        square = sq is not None and sq.inputs[0] == sq.inputs[1]
        y = sq.inputs[0] if square else right[1]
        f.emit(n, "axpby", [f.value(left[1]), f.value(y)], a=left[0], b=right[0], square=square)
        return n.out
    return None


def _adam_param(f: _Fuser, n: Node) -> str | None:
    # sub(p, mul(s, div(m, add(div(sqrt(v), c), eps)))) -> adam_param(p, m, v, s, c, eps), s and c scalars
    def sole(v: str, op: str) -> Node | None:
        return f.producer(v, op, sole=True)

    p, x = n.inputs
    step = sole(x, "mul")
    if step is None:
        return None
    for s, y in (step.inputs, step.inputs[::-1]):
        q = sole(y, "div")
        d = q and sole(q.inputs[1], "add")
        z = d and sole(d.inputs[0], "div")
        r = z and sole(z.inputs[0], "sqrt")
        eps = d and f.scalar_fill(d.inputs[1])
        scalars = (f.graph.types[s], z and f.graph.types[z.inputs[1]])
        if r is None or eps is None or any(t is None or t.shape != () for t in scalars):
            continue
        m, v = q.inputs[0], r.inputs[0]
        if not (f.graph.types[p] == f.graph.types[m] == f.graph.types[v] == n.type):
            continue
        f.emit(n, "adam_param", [f.value(u) for u in (p, m, v, s, z.inputs[1])], eps=eps)
        return n.out
    return None


def _relu_grad(f: _Fuser, n: Node) -> str | None:
    # where(gt(x, 0), g, 0) -> relu_grad(x, g)
    cond, g, zero = n.inputs
    gt = f.producer(cond, "greater")
    if gt is None or f.scalar_fill(zero) != 0.0 or f.scalar_fill(gt.inputs[1]) != 0.0:
        return None
    x = gt.inputs[0]
    if not (f.graph.types[x] == f.graph.types[g] == n.type):
        return None
    # relu(x) > 0 exactly where x > 0: reading relu's output lets x die early (and relu run in place)
    relu = next((u for u in f.uses.get(x, ()) if u.op == "relu" and f.index[u.out] < f.index[n.out]), None)
    f.emit(n, "relu_grad", [f.value(relu.out if relu is not None else x), f.value(g)])
    return n.out


def _layer_norm_grad(f: _Fuser, n: Node) -> str | None:
    # layer_norm_grad(x, mul(gy, s)) -> layer_norm_grad_scaled(x, gy, s)
    x = n.inputs[0]
    m = f.producer(n.inputs[1], "mul", sole=True)
    if m is None:
        return None
    for gy, s in (m.inputs, m.inputs[::-1]):
        if f.graph.types[gy] == n.type and f.fits(s, gy):
            f.emit(n, "layer_norm_grad_scaled", [f.value(x), f.value(gy), f.value(s)], **n.attrs)
            return n.out
    return None


def _concat(f: _Fuser, n: Node) -> str | None:
    # add(pad(a, p, |b| + q), pad(b, p + |a|, q)) -> pad(concat(a, b), p, q) (the gradient of a split)
    pads = [f.producers.get(f.value(v)) for v in n.inputs]
    if any(p is None or p.op != "pad" for p in pads) or n.inputs[0] == n.inputs[1]:
        return None
    if any(len(f.uses.get(v, ())) != 1 or v in f.results for v in n.inputs):
        return None
    first, second = pads
    axis = first.attrs["axis"]
    if second.attrs["axis"] != axis or first.type != second.type:
        return None
    width = {p.out: f.types[p.inputs[0]].shape[axis] for p in pads}
    if first.attrs["before"] + width[first.out] != second.attrs["before"]:
        first, second = second, first
        if first.attrs["before"] + width[first.out] != second.attrs["before"]:
            return None
    before, after = first.attrs["before"], second.attrs["after"]
    a, b = f.value(first.inputs[0]), f.value(second.inputs[0])
    if before == after == 0:
        f.add(_joined(f, a, b, axis, n, out=n.out))
        return n.out
    joined = _joined(f, a, b, axis, n)
    f.add(joined)
    f.emit(n, "pad", [joined.out], axis=axis, before=before, after=after)
    return n.out


def _joined(f: _Fuser, a: str, b: str, axis: int, like: Node, out: str | None = None) -> Node:
    """concat(a, b) along axis, its reshaped inputs joined before the reshape (so never copied)."""
    # concat(reshape(x), reshape(y), last axis) -> reshape(concat(x, y, axis)) when each reshape
    # merges x's (y's) dims from `axis` on: a view of strided x, y (attention heads) is copied once
    ra, rb = f.producers.get(a), f.producers.get(b)
    ta = f.types[a]
    if ra is not None and rb is not None and ra.op == rb.op == "reshape" and axis == ta.rank - 1:
        x, y = f.types[ra.inputs[0]], f.types[rb.inputs[0]]
        if x.rank == y.rank > axis and x.shape[:axis] == y.shape[:axis] == ta.shape[:axis] \
                and x.shape[axis + 1:] == y.shape[axis + 1:] and isinstance(x.shape[axis], int) \
                and isinstance(y.shape[axis], int):
            inner = _joined(f, ra.inputs[0], rb.inputs[0], axis, like)
            f.add(inner)
            shape = tuple(ta.shape[:axis]) + (ta.shape[axis] + f.types[b].shape[axis],)
            return f.make("reshape", [inner.out], {"shape": shape}, like=like, out=out)
    return f.make("concat", [a, b], {"axis": axis}, like=like, out=out)


# op of a pattern's root -> rules tried in order (the first that matches rewrites the node)
RULES: dict[str, tuple[Callable[[_Fuser, Node], str | None], ...]] = {
    "squeeze": (_weight_grad, _gain_grad, _squeeze_sum),
    "sum": (_weight_grad, _gain_grad),
    "matmul": (_matmul,),
    "mul": (_scaled_matmul,),
    "add": (_bias, _axpby, _affine, _concat),
    "sub": (_adam_param,),
    "where": (_relu_grad,),
    "layer_norm_grad": (_layer_norm_grad,),
}


@register_pass("fuse")
def fuse(graph: Graph) -> Graph:
    """Fuse patterns into single ops: transposed/flattened GEMMs, bias epilogues, LayerNorm (+gain) and ReLU backward, Adam, concat."""
    fused = _Fuser(graph, RULES).sweep()
    if fused is None:
        return graph
    # drop what only fed the fused patterns (values live before the rewrite and dead after it)
    before = live_values(graph)
    after = live_values(fused)
    return fused.with_nodes([n for n in fused.nodes if n.out in after or n.out not in before])
