"""Algebraic simplification: identities that remove or cheapen nodes without changing values.

One forward sweep; a node's inputs are already simplified when it is visited, and nodes a rule
creates are simplified in turn, so chains such as neg(neg(neg(neg x))) collapse in one run and a
second run changes nothing. Rules keep the node's exact type: when the surviving operand is
smaller than the result (x[3] * ones[2,3]) a broadcast_to is inserted.

Exactness: every rule holds in IEEE arithmetic up to the sign of zero (x + 0 -> x keeps -0.0).
Rules that would hide a NaN or Inf, x * 0 -> 0 and x - x -> 0, fire only on integer tensors:
for floats inf * 0 and inf - inf are NaN, which the runtime's NaN check must still see.
Dead operands are left for dce.
"""

from __future__ import annotations

from collections.abc import Callable

from ...ir.graph import Graph, Node
from ..graphutil import Rewriter
from . import register_pass


class _Simplifier(Rewriter):
    def const(self, v: str) -> float | None:
        """The value of `v` if every element of it is that one value (fill, uniform constant)."""
        node = self.producers.get(v)
        if node is None:
            return None
        if node.op == "fill":
            return node.attrs["value"]
        if node.op == "constant":
            data = self.constants[node.attrs["name"]]
            if data.size and (data == data.flat[0]).all():
                return float(data.flat[0])
        return None

    def emit(self, op: str, inputs, like: Node, **attrs) -> str:
        """A new node computing op(inputs), itself simplified."""
        return self.visit(self.make(op, inputs, attrs, like))

    def zeros(self, like: Node) -> str:
        return self.emit("fill", [], like, shape=like.type.shape, dtype=like.type.dtype, value=0.0)


Rule = Callable[[_Simplifier, Node], "str | None"]


def _identity_operand(unit: float, sides: tuple[int, ...]):
    """op(x, unit) -> x (and op(unit, x) -> x for the sides listed)."""

    def rule(s: _Simplifier, n: Node) -> str | None:
        for side in sides:
            if s.const(n.inputs[side]) == unit:
                return n.inputs[1 - side]
        return None

    return rule


# add(x, 0) -> x ; add(0, x) -> x
add_zero = _identity_operand(0.0, (1, 0))
# sub(x, 0) -> x
sub_zero = _identity_operand(0.0, (1,))
# mul(x, 1) -> x ; mul(1, x) -> x
mul_one = _identity_operand(1.0, (1, 0))
# div(x, 1) -> x
div_one = _identity_operand(1.0, (1,))
# pow(x, 1) -> x
pow_one = _identity_operand(1.0, (1,))


def sub_self(s: _Simplifier, n: Node) -> str | None:
    # sub(x, x) -> 0   (integers only: inf - inf is NaN)
    if n.inputs[0] == n.inputs[1] and n.type.is_exact:
        return s.zeros(n)
    return None


def mul_zero(s: _Simplifier, n: Node) -> str | None:
    # mul(x, 0) -> 0 ; mul(0, x) -> 0   (integers only: inf * 0 is NaN)
    if n.type.is_exact and 0.0 in (s.const(n.inputs[0]), s.const(n.inputs[1])):
        return s.zeros(n)
    return None


def pow_two(s: _Simplifier, n: Node) -> str | None:
    # pow(x, 2) -> mul(x, x)
    x = n.inputs[0]
    return s.emit("mul", [x, x], n) if s.const(n.inputs[1]) == 2.0 else None


def pow_zero(s: _Simplifier, n: Node) -> str | None:
    # pow(x, 0) -> 1   (IEEE pow(nan, 0) is 1 too)
    if s.const(n.inputs[1]) == 0.0:
        return s.emit("fill", [], n, shape=n.type.shape, dtype=n.type.dtype, value=1.0)
    return None


def neg_neg(s: _Simplifier, n: Node) -> str | None:
    # neg(neg(x)) -> x
    inner = s.producers.get(n.inputs[0])
    return inner.inputs[0] if inner is not None and inner.op == "neg" else None


def transpose_identity(s: _Simplifier, n: Node) -> str | None:
    # transpose(x, [0, 1, ..]) -> x
    return n.inputs[0] if tuple(n.attrs["perm"]) == tuple(range(len(n.attrs["perm"]))) else None


def transpose_transpose(s: _Simplifier, n: Node) -> str | None:
    # transpose(transpose(x, p), q) -> transpose(x, [p[q[0]], p[q[1]], ..])
    inner = s.producers.get(n.inputs[0])
    if inner is None or inner.op != "transpose":
        return None
    p, q = inner.attrs["perm"], n.attrs["perm"]
    return s.emit("transpose", [inner.inputs[0]], n, perm=tuple(p[j] for j in q))


def same_type(s: _Simplifier, n: Node) -> str | None:
    # reshape(x, shape(x)) -> x ; broadcast_to(x, shape(x)) -> x ; cast(x, dtype(x)) -> x
    return n.inputs[0] if s.types[n.inputs[0]] == n.type else None


def reshape_reshape(s: _Simplifier, n: Node) -> str | None:
    # reshape(reshape(x, s1), s2) -> reshape(x, s2)
    inner = s.producers.get(n.inputs[0])
    if inner is None or inner.op != "reshape":
        return None
    return s.emit("reshape", [inner.inputs[0]], n, shape=n.type.shape)


def broadcast_broadcast(s: _Simplifier, n: Node) -> str | None:
    # broadcast_to(broadcast_to(x, s1), s2) -> broadcast_to(x, s2)
    inner = s.producers.get(n.inputs[0])
    if inner is None or inner.op != "broadcast_to":
        return None
    return s.emit("broadcast_to", [inner.inputs[0]], n, shape=n.type.shape)


def reduce_trivial(s: _Simplifier, n: Node) -> str | None:
    # sum(x, axes=[]) -> x ; sum/mean/max over dims of size 1 with keepdims -> x
    x = n.inputs[0]
    shape = s.types[x].shape
    if not n.attrs["axes"] or (n.attrs["keepdims"] and all(shape[a] == 1 for a in n.attrs["axes"])):
        return x
    return None


def squeeze_expand(s: _Simplifier, n: Node) -> str | None:
    # squeeze(x, axes=[]) -> x ; squeeze(expand_dims(x, a), [a]) -> x
    if not n.attrs["axes"]:
        return n.inputs[0]
    inner = s.producers.get(n.inputs[0])
    if inner is not None and inner.op == "expand_dims" and tuple(n.attrs["axes"]) == (inner.attrs["axis"],):
        return inner.inputs[0]
    return None


def expand_squeeze(s: _Simplifier, n: Node) -> str | None:
    # expand_dims(squeeze(x, [a]), a) -> x
    inner = s.producers.get(n.inputs[0])
    if inner is not None and inner.op == "squeeze" and tuple(inner.attrs["axes"]) == (n.attrs["axis"],):
        return inner.inputs[0]
    return None


# op name -> its rules, tried in order; the first that fires wins.
RULES: dict[str, tuple[Rule, ...]] = {
    "add": (add_zero,),
    "sub": (sub_zero, sub_self),
    "mul": (mul_one, mul_zero),
    "div": (div_one,),
    "pow": (pow_one, pow_zero, pow_two),
    "neg": (neg_neg,),
    "transpose": (transpose_identity, transpose_transpose),
    "reshape": (same_type, reshape_reshape),
    "broadcast_to": (same_type, broadcast_broadcast),
    "cast": (same_type,),
    "sum": (reduce_trivial,),
    "mean": (reduce_trivial,),
    "max": (reduce_trivial,),
    "squeeze": (squeeze_expand,),
    "expand_dims": (expand_squeeze,),
}


@register_pass("simplify")
def simplify(graph: Graph) -> Graph:
    """Apply algebraic identities (x*1, x+0, neg(neg x), transpose/reshape chains, ...)."""
    return _Simplifier(graph, RULES).sweep() or graph
