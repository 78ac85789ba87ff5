"""The `predict` entry of a Program as an ONNX model (opset 18): `to_onnx(program, weights)`.

Every op a predict entry can hold has a rule in `RULES` that emits ONNX nodes: the forward ops,
fused ones included, and the backward ops, which a predict output that is a gradient holds (a
saliency map: `tc.grad` of an output with respect to an input). The training-only ops (optimizer
updates, data-parallel packing and reduction) are listed in `NOT_EXPORTED`, and a test checks the
two cover the op registry. Symbolic dims stay symbolic (`B` is a `dim_param`);
where an op needs a shape as data, the size of a symbol is read from the input that has it.
An input's declared preprocessing is part of the graph: the ONNX input takes the raw data
(e.g. uint8 pixels) and the same steps as the runtime's (`tinyc.ir.preprocess.steps`) follow;
the rule is also stated in the model's metadata.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np

from ..ir import preprocess
from ..ir.errors import TinycError
from ..ir.graph import Graph, Node
from ..ir.program import PREDICT_ENTRY, Program
from ..ir.types import TensorType

OPSET = 18  # LayerNormalization (17) and reductions taking axes as an input (18)
IR_VERSION = 8  # the oldest ONNX IR that carries opset 18: readable by older ONNX Runtimes too


class ExportError(TinycError):
    """A program that cannot be exported: an op without an ONNX rule, missing weights."""


def _onnx():
    try:
        import onnx
    except ImportError:
        raise ExportError("exporting to ONNX needs the onnx package", hint="pip install 'tinyc[onnx]'") from None
    return onnx


def to_onnx(program: Program, weights: Mapping[str, np.ndarray], entry: str = PREDICT_ENTRY) -> Any:
    """An `onnx.ModelProto` of `entry` with `weights` as initializers, checked by onnx.checker."""
    onnx = _onnx()
    graph = program.entry(entry).graph
    b = _Builder(onnx, graph)
    for p in graph.params:
        if p.name not in weights:
            raise ExportError(f"no weights for parameter {p.name!r}", loc=p.loc)
        b.names[p.name] = b.initializer(p.name, np.asarray(weights[p.name], dtype=p.type.np_dtype))
    inputs = [b.bind_input(i.name, i.type, dict(getattr(i, "preprocess", {}) or {})) for i in graph.inputs]
    for node in graph.nodes:
        rule = RULES.get(node.op)
        if rule is None:
            why = NOT_EXPORTED.get(node.op, "no ONNX rule for this op")
            raise ExportError(f"{node.op} %{node.out}: cannot be exported to ONNX ({why})", loc=node.loc)
        try:
            b.names[node.out] = rule(b, node, [b.names[v] for v in node.inputs])
        except ExportError as e:  # a rule's own refusal: name the node and the user's line too
            raise ExportError(f"{node.op} %{node.out}: {e.message}", loc=node.loc, hint=e.hint) from None
    outputs = []
    for name, value in graph.outputs:
        b.add("Identity", [b.names[value]], name)
        outputs.append(b.value_info(name, graph.types[value]))
    h = onnx.helper
    g = h.make_graph(b.nodes, program.meta.get("model") or graph.name, inputs, outputs, initializer=b.initializers)
    model = h.make_model(g, opset_imports=[h.make_opsetid("", OPSET)], ir_version=IR_VERSION,
                         producer_name="tinyc", doc_string=f"the {entry} entry of {program.meta.get('model', 'a tinyc program')}")
    rules = {i.name: dict(i.preprocess) for i in graph.inputs if getattr(i, "preprocess", None)}
    h.set_model_props(model, {"tinyc.entry": entry, "tinyc.model": str(program.meta.get("model", "")),
                              "tinyc.preprocess": json.dumps(rules, sort_keys=True)})
    onnx.checker.check_model(model, full_check=True)
    return model


def encode_onnx(program: Program, weights: Mapping[str, np.ndarray], entry: str = PREDICT_ENTRY) -> bytes:
    """The serialized ONNX model (write it with `tinyc.ir.fileio.atomic_write`)."""
    return to_onnx(program, weights, entry).SerializeToString()


# --------------------------------------------------------------------------- building


_DTYPES = {"f32": "FLOAT", "f64": "DOUBLE", "i64": "INT64", "bool": "BOOL", "u8": "UINT8", "u16": "UINT16"}


class _Builder:
    """Collects ONNX nodes and initializers; `names` maps tinyc values to ONNX tensor names."""

    def __init__(self, onnx, graph: Graph) -> None:
        self.onnx, self.graph = onnx, graph
        self.nodes: list = []
        self.initializers: list = []
        self.names: dict[str, str] = {}
        self._dims: dict[str, str] = {}
        self._count = 0

    def fresh(self, hint: str) -> str:
        self._count += 1
        return f"{hint}_{self._count}"

    def elem(self, dtype: str) -> int:
        return getattr(self.onnx.TensorProto, _DTYPES[dtype])

    def add(self, op_type: str, inputs: list[str], output: str | None = None, **attrs: Any) -> str:
        output = output or self.fresh(op_type.lower())
        self.nodes.append(self.onnx.helper.make_node(op_type, inputs, [output], **attrs))
        return output

    def initializer(self, name: str, array: np.ndarray) -> str:
        self.initializers.append(self.onnx.numpy_helper.from_array(np.ascontiguousarray(array), name))
        return name

    def const(self, array: Any, dtype: Any) -> str:
        return self.initializer(self.fresh("const"), np.asarray(array, dtype=dtype))

    def ints(self, values) -> str:
        return self.const(list(values), np.int64)

    def scalar_like(self, value: float, t: TensorType) -> str:
        return self.const(value, t.np_dtype)

    def value_info(self, name: str, t: TensorType, dtype: str | None = None):
        return self.onnx.helper.make_tensor_value_info(name, self.elem(dtype or t.dtype), list(t.shape))

    def bind_input(self, name: str, t: TensorType, rule: Mapping[str, Any]):
        """The graph input `name` (raw data when a rule is declared, converted by its steps)."""
        if not rule:
            self.names[name] = name
            return self.value_info(name, t)
        y = self.add("Cast", [name], to=self.elem(t.dtype))
        for op, c in preprocess.steps(rule):
            y = self.add(op.capitalize(), [y, self.scalar_like(c, t)])
        self.names[name] = y
        return self.value_info(name, t, dtype=rule["raw"])

    def dim(self, symbol: str) -> str:
        """A 1-element int64 tensor holding the size of `symbol`, read once from an input that has it."""
        if symbol not in self._dims:
            for i in self.graph.inputs:
                if symbol in i.type.shape:
                    k = i.type.shape.index(symbol)
                    self._dims[symbol] = self.add("Shape", [i.name], start=k, end=k + 1)
                    break
            else:
                raise ExportError(f"dim {symbol!r} is not the size of any input, so ONNX cannot compute it")
        return self._dims[symbol]

    def shape(self, dims) -> str:
        """An int64 shape tensor of `dims` (ints and symbols)."""
        if all(isinstance(d, int) for d in dims):
            return self.ints(dims)
        parts = [self.dim(d) if isinstance(d, str) else self.ints([d]) for d in dims]
        return self.add("Concat", parts, axis=0)


# --------------------------------------------------------------------------- rules, keyed by op name

Rule = Callable[[_Builder, Node, list[str]], str]
RULES: dict[str, Rule] = {}


def rule(*ops: str):
    def register(fn: Rule) -> Rule:
        for op in ops:
            RULES[op] = fn
        return fn
    return register


_SIMPLE = {"add": "Add", "sub": "Sub", "mul": "Mul", "div": "Div", "pow": "Pow", "maximum": "Max",
           "equal": "Equal", "less": "Less", "less_equal": "LessOrEqual", "greater": "Greater",
           "greater_equal": "GreaterOrEqual",
           "neg": "Neg", "sqrt": "Sqrt", "exp": "Exp", "log": "Log", "relu": "Relu", "where": "Where",
           "matmul": "MatMul"}


@rule(*_SIMPLE)
def _simple(b, node, xs):
    return b.add(_SIMPLE[node.op], xs)


@rule("not_equal")
def _ne(b, node, xs):
    return b.add("Not", [b.add("Equal", xs)])


@rule("cast")
def _cast(b, node, xs):
    return b.add("Cast", xs, to=b.elem(node.attrs["dtype"]))


@rule("sum", "mean", "max")
def _reduce(b, node, xs):
    axes = node.attrs.get("axes")
    op = {"sum": "ReduceSum", "mean": "ReduceMean", "max": "ReduceMax"}[node.op]
    extra = [] if axes is None else [b.ints(axes)]
    return b.add(op, xs + extra, keepdims=int(node.attrs.get("keepdims", False)))


@rule("reshape")
def _reshape(b, node, xs):
    return b.add("Reshape", [xs[0], b.shape(node.type.shape)])  # the output type: no -1 left


@rule("broadcast_to")
def _broadcast_to(b, node, xs):
    return b.add("Expand", [xs[0], b.shape(node.type.shape)])


@rule("transpose")
def _transpose(b, node, xs):
    perm = node.attrs.get("perm")
    rank = node.type.rank
    return b.add("Transpose", xs, perm=list(perm) if perm is not None else list(range(rank))[::-1])


@rule("expand_dims")
def _expand_dims(b, node, xs):
    return b.add("Unsqueeze", [xs[0], b.ints([node.attrs["axis"]])])


@rule("squeeze")
def _squeeze(b, node, xs):
    axes = node.attrs.get("axes")
    if axes is None:  # the dims of size 1 in the type (at run time a batch of 1 must stay)
        axes = [k for k, d in enumerate(b.graph.types[node.inputs[0]].shape) if d == 1]
    return b.add("Squeeze", [xs[0], b.ints(axes)])


@rule("slice")
def _slice(b, node, xs):
    a = node.attrs
    return b.add("Slice", [xs[0], b.ints([a["start"]]), b.ints([a["stop"]]), b.ints([a["axis"]])])


@rule("pad")
def _pad(b, node, xs):
    rank, a = node.type.rank, node.attrs
    pads = [0] * (2 * rank)
    pads[a["axis"] % rank], pads[rank + a["axis"] % rank] = a["before"], a["after"]
    return b.add("Pad", [xs[0], b.ints(pads)])


@rule("concat")
def _concat(b, node, xs):
    return b.add("Concat", xs, axis=node.attrs["axis"])


@rule("one_hot")
def _one_hot(b, node, xs):
    values = b.const([0, 1], node.type.np_dtype)
    return b.add("OneHot", [xs[0], b.ints([node.attrs["depth"]]), values], axis=-1)


@rule("argmax")
def _argmax(b, node, xs):
    return b.add("ArgMax", xs, axis=node.attrs["axis"], keepdims=int(node.attrs["keepdims"]))


def _constant_of_shape(b, shape: str, value: float, t: TensorType) -> str:
    return b.add("ConstantOfShape", [shape],
                 value=b.onnx.numpy_helper.from_array(np.array([value], dtype=t.np_dtype)))


@rule("fill")
def _fill(b, node, xs):
    return _constant_of_shape(b, b.shape(node.type.shape), node.attrs["value"], node.type)


@rule("zeros_like", "ones_like")
def _like(b, node, xs):
    return _constant_of_shape(b, b.add("Shape", xs), 0.0 if node.op == "zeros_like" else 1.0, node.type)


@rule("constant")
def _constant(b, node, xs):
    return b.const(b.graph.constants[node.attrs["name"]], node.type.np_dtype)


@rule("softmax", "log_softmax")
def _softmax(b, node, xs):
    return b.add("Softmax" if node.op == "softmax" else "LogSoftmax", xs, axis=node.attrs["axis"])


def _swap_last(b, x: str, t: TensorType) -> str:
    perm = list(range(t.rank))
    perm[-2], perm[-1] = perm[-1], perm[-2]
    return b.add("Transpose", [x], perm=perm)


def _product(b, node, xs) -> str:
    a, c = xs[:2]
    types = [b.graph.types[v] for v in node.inputs[:2]]
    if node.attrs.get("ta"):
        a = _swap_last(b, a, types[0])
    if node.attrs.get("tb"):
        c = _swap_last(b, c, types[1])
    return b.add("MatMul", [a, c])


@rule("matmul_t")
def _matmul_t(b, node, xs):
    y = _product(b, node, xs)
    alpha = node.attrs.get("alpha", 1.0)
    return y if alpha == 1.0 else b.add("Mul", [y, b.scalar_like(alpha, node.type)])


@rule("matmul_bias")
def _matmul_bias(b, node, xs):
    return b.add("Add", [_product(b, node, xs), xs[2]])


@rule("affine")
def _affine(b, node, xs):
    return b.add("Add", [b.add("Mul", xs[:2]), xs[2]])


def _normalize(b, t: TensorType, x: str, axis: int, eps: float) -> tuple[str, str]:
    """(xhat, 1 / sqrt(var + eps)) of x along axis, as ONNX nodes (biased variance)."""
    axes = b.ints([axis])
    centered = b.add("Sub", [x, b.add("ReduceMean", [x, axes], keepdims=1)])
    var = b.add("ReduceMean", [b.add("Mul", [centered, centered]), axes], keepdims=1)
    rstd = b.add("Reciprocal", [b.add("Sqrt", [b.add("Add", [var, b.scalar_like(eps, t)])])])
    return b.add("Mul", [centered, rstd]), rstd


def _layer_norm(b, node, x: str, scale: str | None, shift: str | None) -> str:
    """LayerNormalization over the last axis; over another axis its decomposition (mean, variance)."""
    t, axis, eps = node.type, node.attrs["axis"] % node.type.rank, node.attrs["eps"]
    size = t.shape[axis]
    gain_bias = node.inputs[1:3] if scale else ()
    # LayerNormalization wants a gain and bias of shape [D]; others broadcast, so take the general path
    if axis == t.rank - 1 and isinstance(size, int) and all(b.graph.types[v].shape == (size,) for v in gain_bias):
        ones = scale or b.const(np.ones(size), t.np_dtype)
        zeros = shift or b.const(np.zeros(size), t.np_dtype)
        return b.add("LayerNormalization", [x, ones, zeros], axis=-1, epsilon=eps)
    y = _normalize(b, t, x, axis, eps)[0]
    if scale:
        y = b.add("Add", [b.add("Mul", [y, scale]), shift])
    return y


@rule("layer_norm")
def _layer_norm_plain(b, node, xs):
    return _layer_norm(b, node, xs[0], None, None)


@rule("layer_norm_affine")
def _layer_norm_affine(b, node, xs):
    return _layer_norm(b, node, xs[0], xs[1], xs[2])


# --------------------------------------------------------------------------- backward ops
# A predict output may be a gradient (`tc.grad` of an output with respect to an input: a saliency
# map), so the backward ops the autodiff emits are exported too, each by its decomposition.


def _sum_along(b, x: str, axis: int) -> str:
    return b.add("ReduceSum", [x, b.ints([axis])], keepdims=1)


@rule("relu_grad")
def _relu_grad(b, node, xs):
    # gy * (x > 0)
    x, gy = xs
    positive = b.add("Greater", [x, b.scalar_like(0.0, node.type)])
    return b.add("Mul", [gy, b.add("Cast", [positive], to=b.elem(node.type.dtype))])


@rule("softmax_grad")
def _softmax_grad(b, node, xs):
    # y * (gy - sum(gy * y))
    y, gy = xs
    return b.add("Mul", [y, b.add("Sub", [gy, _sum_along(b, b.add("Mul", [gy, y]), node.attrs["axis"])])])


@rule("log_softmax_grad")
def _log_softmax_grad(b, node, xs):
    # gy - exp(y) * sum(gy)
    y, gy = xs
    return b.add("Sub", [gy, b.add("Mul", [b.add("Exp", [y]), _sum_along(b, gy, node.attrs["axis"])])])


@rule("layer_norm_grad", "layer_norm_grad_scaled")
def _layer_norm_grad(b, node, xs):
    # g = gy (* scale); (g - mean(g) - xhat * mean(g * xhat)) * rstd
    x, g = xs[:2]
    if node.op == "layer_norm_grad_scaled":
        g = b.add("Mul", [g, xs[2]])
    axis = node.attrs["axis"]
    xhat, rstd = _normalize(b, node.type, x, axis, node.attrs["eps"])
    axes = b.ints([axis])
    mean_g = b.add("ReduceMean", [g, axes], keepdims=1)
    mean_gx = b.add("ReduceMean", [b.add("Mul", [g, xhat]), axes], keepdims=1)
    return b.add("Mul", [b.add("Sub", [b.add("Sub", [g, mean_g]), b.add("Mul", [xhat, mean_gx])]), rstd])


@rule("layer_norm_gain_grad")
def _layer_norm_gain_grad(b, node, xs):
    # sum(gy * layer_norm(x)) over every axis but axis
    x, gy = xs
    t = b.graph.types[node.inputs[0]]
    axis = node.attrs["axis"] % t.rank
    xhat = _normalize(b, t, x, axis, node.attrs["eps"])[0]
    others = [k for k in range(t.rank) if k != axis]
    product = b.add("Mul", [gy, xhat])
    if not others:  # a vector: nothing to sum over (ReduceSum with no axes would sum over all of them)
        return product
    return b.add("ReduceSum", [product, b.ints(others)], keepdims=0)


@rule("matmul_t_sum")
def _matmul_t_sum(b, node, xs):
    # sum over the batch dims of op(a) @ op(b)
    batch = b.graph.types[node.inputs[0]].rank - 2
    return b.add("ReduceSum", [_product(b, node, xs), b.ints(range(batch))], keepdims=0)


def _one_hot_like(b, labels: str, logits_type: TensorType) -> str:
    """one_hot(labels) over the last axis of the logits, in their dtype."""
    depth = b.ints([logits_type.shape[-1]]) if isinstance(logits_type.shape[-1], int) else b.dim(logits_type.shape[-1])
    return b.add("OneHot", [labels, depth, b.const([0, 1], logits_type.np_dtype)], axis=-1)


def _reduce_nll(b, nll: str, reduction: str) -> str:
    if reduction == "none":
        return nll
    return b.add("ReduceMean" if reduction == "mean" else "ReduceSum", [nll], keepdims=0)


@rule("softmax_cross_entropy")
def _softmax_cross_entropy(b, node, xs):
    # -sum(one_hot(labels) * log_softmax(logits)), then mean / sum / none
    logits, labels = xs
    t = b.graph.types[node.inputs[0]]
    picked = b.add("ReduceSum", [b.add("Mul", [b.add("LogSoftmax", [logits], axis=-1), _one_hot_like(b, labels, t)]),
                                 b.ints([-1])], keepdims=0)
    return _reduce_nll(b, b.add("Neg", [picked]), node.attrs["reduction"])


@rule("softmax_cross_entropy_grad")
def _softmax_cross_entropy_grad(b, node, xs):
    # (softmax(logits) - one_hot(labels)) * gy, divided by the label count for mean
    logits, labels, gy = xs
    t = node.type
    diff = b.add("Sub", [b.add("Softmax", [logits], axis=-1), _one_hot_like(b, labels, t)])
    reduction = node.attrs["reduction"]
    if reduction == "none":
        return b.add("Mul", [diff, b.add("Unsqueeze", [gy, b.ints([-1])])])
    if reduction == "mean":
        count = b.add("Cast", [b.add("Max", [b.add("Size", [labels]), b.const(1, np.int64)])], to=b.elem(t.dtype))
        gy = b.add("Div", [gy, count])
    return b.add("Mul", [diff, gy])


# Ops that only training graphs hold (a predict entry never has an optimizer), with why.
NOT_EXPORTED = {
    "axpby": "an optimizer update", "adam_param": "an optimizer update",
    "allreduce": "a reduction over the ranks of data-parallel training",
    "flat_concat": "packs gradients for data-parallel training",
}
