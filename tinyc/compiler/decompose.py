"""Decompositions of the composite ops into primitives: the reference semantics of each fused
kernel, and the path autodiff takes through an op that has no VJP rule (grad of grad).

Each entry is `fn(b, inputs, **attrs) -> Tensor`, written with builder ops so a decomposition is
just more IR. Numerically stable forms only: softmax and log-softmax subtract the row max first.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import replace

from ..ir.builder import Builder, Tensor
from ..ir.graph import Graph
from ..ir.ops import COMPOSITE


def count(b: Builder, x: Tensor, axes: Sequence[int], dtype: str, keepdims: bool = True) -> Tensor:
    """How many elements of x lie along `axes` (what mean divides by), as a scalar fill when every
    dim is static, else as a runtime sum of ones (a symbolic "B" is only known when it runs)."""
    dims = [x.shape[a] for a in axes]
    if all(isinstance(d, int) for d in dims):
        return b.apply("fill", [], shape=(), dtype=dtype, value=float(math.prod(dims)))
    ones = b.apply("ones_like", [x])
    if ones.dtype != dtype:
        ones = b.apply("cast", [ones], dtype=dtype)
    return b.apply("sum", [ones], axes=tuple(axes), keepdims=keepdims)


def softmax(b: Builder, inputs: Sequence[Tensor], axis: int) -> Tensor:
    # softmax(x) = exp(x - max x) / sum exp(x - max x)
    (x,) = inputs
    e = b.apply("exp", [x - b.apply("max", [x], axes=(axis,), keepdims=True)])
    return e / b.apply("sum", [e], axes=(axis,), keepdims=True)


def log_softmax(b: Builder, inputs: Sequence[Tensor], axis: int) -> Tensor:
    # log_softmax(x) = s - log sum exp(s), s = x - max x
    (x,) = inputs
    s = x - b.apply("max", [x], axes=(axis,), keepdims=True)
    return s - b.apply("log", [b.apply("sum", [b.apply("exp", [s])], axes=(axis,), keepdims=True)])


def _normalize(b: Builder, x: Tensor, axis: int, eps: float) -> tuple[Tensor, Tensor]:
    """(xhat, 1/sqrt(var + eps)) of x along axis (biased variance, as in every framework)."""
    d = x - b.apply("mean", [x], axes=(axis,), keepdims=True)
    var = b.apply("mean", [d * d], axes=(axis,), keepdims=True)
    rstd = 1.0 / b.apply("sqrt", [var + eps])
    return d * rstd, rstd


def layer_norm(b: Builder, inputs: Sequence[Tensor], axis: int, eps: float) -> Tensor:
    # layer_norm(x) = (x - mean x) / sqrt(var x + eps)
    (x,) = inputs
    return _normalize(b, x, axis, eps)[0]


def _one_hot_like(b: Builder, labels: Tensor, logits: Tensor) -> Tensor:
    return b.apply("one_hot", [labels], depth=logits.shape[-1], dtype=logits.dtype)


def softmax_cross_entropy(b: Builder, inputs: Sequence[Tensor], reduction: str) -> Tensor:
    # nll = -sum(one_hot(labels) * log_softmax(logits), -1), then mean / sum / none
    logits, labels = inputs
    axis = logits.ndim - 1
    picked = b.apply("sum", [log_softmax(b, [logits], axis) * _one_hot_like(b, labels, logits)], axes=(axis,))
    nll = -picked
    if reduction == "none":
        return nll
    return b.apply("mean" if reduction == "mean" else "sum", [nll], axes=None)


def softmax_grad(b: Builder, inputs: Sequence[Tensor], axis: int) -> Tensor:
    # y * (gy - sum(gy * y))
    y, gy = inputs
    return y * (gy - b.apply("sum", [gy * y], axes=(axis,), keepdims=True))


def log_softmax_grad(b: Builder, inputs: Sequence[Tensor], axis: int) -> Tensor:
    # gy - exp(y) * sum(gy)
    y, gy = inputs
    return gy - b.apply("exp", [y]) * b.apply("sum", [gy], axes=(axis,), keepdims=True)


def layer_norm_grad(b: Builder, inputs: Sequence[Tensor], axis: int, eps: float) -> Tensor:
    # (gy - mean(gy) - xhat * mean(gy * xhat)) * rstd
    x, gy = inputs
    xhat, rstd = _normalize(b, x, axis, eps)
    mean_gy = b.apply("mean", [gy], axes=(axis,), keepdims=True)
    mean_gx = b.apply("mean", [gy * xhat], axes=(axis,), keepdims=True)
    return (gy - mean_gy - xhat * mean_gx) * rstd


def softmax_cross_entropy_grad(b: Builder, inputs: Sequence[Tensor], reduction: str) -> Tensor:
    # (softmax(logits) - one_hot(labels)) * gy, divided by the label count for mean
    logits, labels, gy = inputs
    diff = softmax(b, [logits], logits.ndim - 1) - _one_hot_like(b, labels, logits)
    if reduction == "none":
        return diff * b.apply("expand_dims", [gy], axis=-1)
    if reduction == "mean":
        gy = gy / count(b, labels, tuple(range(labels.ndim)), gy.dtype, keepdims=False)
    return diff * gy


DECOMPOSITIONS: dict[str, Callable[..., Tensor]] = {
    "softmax": softmax,
    "log_softmax": log_softmax,
    "layer_norm": layer_norm,
    "softmax_cross_entropy": softmax_cross_entropy,
    "softmax_grad": softmax_grad,
    "log_softmax_grad": log_softmax_grad,
    "layer_norm_grad": layer_norm_grad,
    "softmax_cross_entropy_grad": softmax_cross_entropy_grad,
}
assert set(DECOMPOSITIONS) == set(COMPOSITE), "every composite op needs a decomposition"


def decompose_graph(graph: Graph) -> Graph:
    """The same function with every composite node replaced by its primitives (renumbered)."""
    b = Builder.from_graph(graph.with_nodes(()))
    env: dict[str, Tensor] = {}  # old value -> new Tensor

    def arg(name: str) -> Tensor:
        return env[name] if name in env else b.tensor(name)

    for node in graph.nodes:
        ins = [arg(v) for v in node.inputs]
        if node.op in DECOMPOSITIONS:
            # a replacement keeps the location (and provenance) of what it replaces
            with b.at(node.loc, node.note, node.scope):
                env[node.out] = DECOMPOSITIONS[node.op](b, ins, **node.attrs)
        else:
            env[node.out] = b.add_node(node.op, [t.name for t in ins], dict(node.attrs), node.type, node.loc, node.note,
                                       node.scope)

    def rename(pairs):
        return tuple((name, arg(v).name) for name, v in pairs)

    return replace(graph, nodes=tuple(b.nodes), outputs=rename(graph.outputs), updates=rename(graph.updates),
                   constants=dict(b.constants))
