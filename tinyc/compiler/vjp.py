"""Vector-Jacobian products: one rule per differentiable op, keyed by op name.

`rule(b, inputs, out, g, **attrs) -> [cotangent per input]` receives the forward node's input
Tensors, its output Tensor and the output's cotangent `g`, and emits the backward ops with the
builder, so the backward graph is just more IR (and can be differentiated again). A cotangent is
a Tensor of exactly the input's type, None (no gradient: labels, conditions), or a zero-argument
callable that the driver calls only when that input needs a gradient (for terms that are costly
or partial, such as d(a**b)/db = a**b * log a). Broadcasting is undone by `sum_to`.

Composites have hand-written rules that emit the fused backward ops declared in `ir.ops`
(`softmax_grad`, ...); those backward ops have no rule here: autodiff differentiates their
decomposition (`tinyc.compiler.decompose`) instead, which is how grad of grad works.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from ..ir.builder import Builder, Tensor
from ..ir.types import Shape
from .decompose import count


def sum_to(b: Builder, g: Tensor, shape: Shape) -> Tensor:
    """Undo broadcasting: sum g over the leading dims it has beyond `shape` and over the dims
    where `shape` is 1 but g is not (symbolic dims are equal when their names are)."""
    shape = tuple(shape)
    if tuple(g.shape) == shape:
        return g
    lead = g.ndim - len(shape)
    axes = tuple(range(lead)) + tuple(lead + i for i, d in enumerate(shape) if d == 1 and g.shape[lead + i] != 1)
    if axes:
        g = b.apply("sum", [g], axes=axes, keepdims=True)
    if lead:
        g = b.apply("squeeze", [g], axes=tuple(range(lead)))
    return g


def _zero(b: Builder, like: Tensor) -> Tensor:
    return b.apply("fill", [], shape=(), dtype=like.dtype, value=0.0)


def _as(b: Builder, mask: Tensor, like: Tensor) -> Tensor:
    """A bool mask as 0/1 in like's dtype."""
    return b.apply("cast", [mask], dtype=like.dtype)


def _where(b: Builder, cond: Tensor, x: Tensor, y: Tensor) -> Tensor:
    return b.apply("where", [cond, x, y])


# --------------------------------------------------------------------------- elementwise


def _add(b, ins, out, g):
    a, c = ins
    return [lambda: sum_to(b, g, a.shape), lambda: sum_to(b, g, c.shape)]


def _sub(b, ins, out, g):
    a, c = ins
    return [lambda: sum_to(b, g, a.shape), lambda: sum_to(b, -g, c.shape)]


def _mul(b, ins, out, g):
    a, c = ins
    return [lambda: sum_to(b, g * c, a.shape), lambda: sum_to(b, g * a, c.shape)]


def _div(b, ins, out, g):
    # d(a/c) = da / c - dc * a / c**2 = (da - dc * out) / c
    a, c = ins
    return [lambda: sum_to(b, g / c, a.shape), lambda: sum_to(b, -(g * out) / c, c.shape)]


def _pow(b, ins, out, g):
    # d(a**c)/da = c * a**(c-1); d(a**c)/dc = a**c * log a, with log 0 read as 0 so that
    # 0**c (c > 0) gets the limit 0 instead of NaN; only emitted when c needs a gradient
    a, c = ins

    def d_exponent():
        safe = _where(b, a == 0.0, b.apply("ones_like", [a]), a)
        return sum_to(b, g * out * b.apply("log", [safe]), c.shape)

    return [lambda: sum_to(b, g * c * a ** (c - 1.0), a.shape), d_exponent]


def _maximum(b, ins, out, g):
    # ties split the cotangent evenly (as JAX does): the mean of the two one-sided derivatives
    a, c = ins
    share = _as(b, a > c, g) + _as(b, a == c, g) * 0.5
    return [lambda: sum_to(b, g * share, a.shape), lambda: sum_to(b, g * (1.0 - share), c.shape)]


def _neg(b, ins, out, g):
    return [-g]


def _sqrt(b, ins, out, g):
    return [g * 0.5 / out]


def _exp(b, ins, out, g):
    return [g * out]


def _log(b, ins, out, g):
    return [g / ins[0]]


def _relu(b, ins, out, g):
    # relu'(0) = 0, as in every framework
    (x,) = ins
    return [_where(b, x > 0.0, g, _zero(b, g))]


def _where_rule(b, ins, out, g):
    cond, a, c = ins
    zero = _zero(b, g)
    return [
        None,
        lambda: sum_to(b, _where(b, cond, g, zero), a.shape),
        lambda: sum_to(b, _where(b, cond, zero, g), c.shape),
    ]


def _cast(b, ins, out, g, dtype):
    (x,) = ins
    return [b.apply("cast", [g], dtype=x.dtype) if x.type.is_float else None]


# --------------------------------------------------------------------------- reductions


def _keep(b: Builder, g: Tensor, x: Tensor, axes: tuple[int, ...], keepdims: bool) -> Tensor:
    """A reduction's cotangent with the reduced axes back as 1s (broadcastable against x)."""
    if keepdims:
        return g
    return b.apply("reshape", [g], shape=tuple(1 if i in axes else d for i, d in enumerate(x.shape)))


def _sum(b, ins, out, g, axes, keepdims):
    (x,) = ins
    return [b.apply("broadcast_to", [_keep(b, g, x, axes, keepdims)], shape=x.shape)]


def _mean(b, ins, out, g, axes, keepdims):
    (x,) = ins
    g = _keep(b, g, x, axes, keepdims) / count(b, x, axes, g.dtype)
    return [b.apply("broadcast_to", [g], shape=x.shape)]


def _max(b, ins, out, g, axes, keepdims):
    # the cotangent goes to the argmax positions; tied maxima share it evenly
    (x,) = ins
    mask = _as(b, x == _keep(b, out, x, axes, keepdims), x)
    ties = b.apply("sum", [mask], axes=axes, keepdims=True)
    return [mask * (_keep(b, g, x, axes, keepdims) / ties)]


# --------------------------------------------------------------------------- shapes


def _reshape(b, ins, out, g, shape):
    return [b.apply("reshape", [g], shape=ins[0].shape)]


def _transpose(b, ins, out, g, perm):
    inverse = [0] * len(perm)
    for i, p in enumerate(perm):
        inverse[p] = i
    return [b.apply("transpose", [g], perm=tuple(inverse))]


def _broadcast_to(b, ins, out, g, shape):
    return [sum_to(b, g, ins[0].shape)]


def _expand_dims(b, ins, out, g, axis):
    return [b.apply("squeeze", [g], axes=(axis,))]


def _squeeze(b, ins, out, g, axes):
    return [b.apply("reshape", [g], shape=ins[0].shape)]


def _slice(b, ins, out, g, axis, start, stop):
    # d x[start:stop] -> zeros around g
    return [b.apply("pad", [g], axis=axis, before=start, after=ins[0].shape[axis] - stop)]


def _pad(b, ins, out, g, axis, before, after):
    return [b.apply("slice", [g], axis=axis, start=before, stop=before + ins[0].shape[axis])]


def _swap_last(b: Builder, x: Tensor) -> Tensor:
    perm = tuple(range(x.ndim - 2)) + (x.ndim - 1, x.ndim - 2)
    return b.apply("transpose", [x], perm=perm)


def _matmul(b, ins, out, g):
    # out = a @ c: da = g @ c^T, dc = a^T @ g, broadcast batch dims summed away
    a, c = ins
    return [
        lambda: sum_to(b, b.apply("matmul", [g, _swap_last(b, c)]), a.shape),
        lambda: sum_to(b, b.apply("matmul", [_swap_last(b, a), g]), c.shape),
    ]


# --------------------------------------------------------------------------- composites


def _softmax(b, ins, out, g, axis):
    return [b.apply("softmax_grad", [out, g], axis=axis)]


def _log_softmax(b, ins, out, g, axis):
    return [b.apply("log_softmax_grad", [out, g], axis=axis)]


def _layer_norm(b, ins, out, g, axis, eps):
    return [b.apply("layer_norm_grad", [ins[0], g], axis=axis, eps=eps)]


def _softmax_cross_entropy(b, ins, out, g, reduction):
    logits, labels = ins
    return [b.apply("softmax_cross_entropy_grad", [logits, labels, g], reduction=reduction), None]


Rule = Callable[..., Sequence]

VJPS: dict[str, Rule] = {
    "add": _add,
    "sub": _sub,
    "mul": _mul,
    "div": _div,
    "pow": _pow,
    "maximum": _maximum,
    "neg": _neg,
    "sqrt": _sqrt,
    "exp": _exp,
    "log": _log,
    "relu": _relu,
    "where": _where_rule,
    "cast": _cast,
    "sum": _sum,
    "mean": _mean,
    "max": _max,
    "reshape": _reshape,
    "transpose": _transpose,
    "broadcast_to": _broadcast_to,
    "expand_dims": _expand_dims,
    "squeeze": _squeeze,
    "slice": _slice,
    "pad": _pad,
    "matmul": _matmul,
    "softmax": _softmax,
    "log_softmax": _log_softmax,
    "layer_norm": _layer_norm,
    "softmax_cross_entropy": _softmax_cross_entropy,
}
