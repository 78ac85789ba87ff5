"""The fused ops: produced by the `fuse` pass after autodiff, so none is differentiable.

Kernels in tinyc.runtime.fused_kernels. Each is composite in the sense that its meaning is a
short expression of primitives, written in its docstring; tests/compiler/test_fuse.py holds
every rewrite to the unfused graph. Assembled into `OPS` by `tinyc.ir.ops`.
"""

from __future__ import annotations

import math

from ..errors import ShapeError
from ..types import TensorType
from .primitive import matmul
from .schema import Attr, broadcast, defop, elementwise_flops, require_float, same_dtype, scaled_flops


def _swap_last(t: TensorType, flag: bool) -> TensorType:
    if t.rank < 2:
        raise ShapeError(f"matmul_t: needs inputs of rank >= 2, got {t}")
    return t.with_shape(t.shape[:-2] + (t.shape[-1], t.shape[-2])) if flag else t


def _matmul_t_flops(ins, out, attrs):
    a = ins[0]
    return 2 * math.prod(out) * (a[-2] if attrs.get("ta") else a[-1])


def _matmul_t_sum_flops(ins, out, attrs):
    return 2 * math.prod(ins[0]) * out[-1]


@defop("matmul_t", inputs=("a", "b"), attrs={"ta": Attr("bool", False), "tb": Attr("bool", False),
                                             "alpha": Attr("float", 1.0)}, differentiable=False, flops=_matmul_t_flops)
def matmul_t(a: TensorType, b: TensorType, ta: bool, tb: bool, alpha: float) -> TensorType:
    """alpha * op(a) @ op(b), op transposing the last two dims when ta/tb: matmul(transpose(a), transpose(b)) * alpha."""
    return matmul(_swap_last(a, ta), _swap_last(b, tb))


@defop("matmul_t_sum", inputs=("a", "b"), attrs={"ta": Attr("bool", False), "tb": Attr("bool", False)},
       differentiable=False, flops=_matmul_t_sum_flops)
def matmul_t_sum(a: TensorType, b: TensorType, ta: bool, tb: bool) -> TensorType:
    """sum over the batch dims of op(a) @ op(b) (weight gradients): sum(matmul_t(a, b), axes=batch dims)."""
    if a.rank < 3 or a.shape[:-2] != b.shape[:-2]:
        raise ShapeError(f"matmul_t_sum: needs equal batch dims of rank >= 1, got {a} and {b}")
    y = matmul(_swap_last(a, ta), _swap_last(b, tb))
    return y.with_shape(y.shape[-2:])


@defop("matmul_bias", inputs=("a", "b", "bias"), attrs={"ta": Attr("bool", False), "tb": Attr("bool", False)},
       differentiable=False, flops=_matmul_t_flops)
def matmul_bias(a: TensorType, b: TensorType, bias: TensorType, ta: bool, tb: bool) -> TensorType:
    """op(a) @ op(b) + bias (a GEMM with its bias epilogue): add(matmul_t(a, b), bias), bias broadcast to the product."""
    y = matmul(_swap_last(a, ta), _swap_last(b, tb))
    same_dtype("matmul_bias", y, bias)
    if tuple(broadcast("matmul_bias", y, bias)) != tuple(y.shape):
        raise ShapeError(f"matmul_bias: bias {bias} does not broadcast to the product {y}")
    return y


@defop("relu_grad", inputs=("x", "gy"), differentiable=False, flops=elementwise_flops)
def relu_grad(x: TensorType, gy: TensorType) -> TensorType:
    """gy where x > 0, else 0 (backward of relu): where(greater(x, 0), gy, 0)."""
    require_float("relu_grad", x)
    if x != gy:
        raise ShapeError(f"relu_grad: value {x} and cotangent {gy} differ")
    return x


@defop("affine", inputs=("x", "scale", "shift"), differentiable=False, flops=scaled_flops(2))
def affine(x: TensorType, scale: TensorType, shift: TensorType) -> TensorType:
    """x * scale + shift with scale and shift broadcast to x (LayerNorm's gain and bias): add(mul(x, scale), shift)."""
    same_dtype("affine", x, scale, shift)
    require_float("affine", x)
    if tuple(broadcast("affine", x, scale, shift)) != tuple(x.shape):
        raise ShapeError(f"affine: scale {scale} and shift {shift} must broadcast to {x}")
    return x


@defop("layer_norm_grad_scaled", inputs=("x", "gy", "scale"), attrs={"axis": Attr("axis", -1), "eps": Attr("float", 1e-5)},
       differentiable=False, flops=scaled_flops(11))
def layer_norm_grad_scaled(x: TensorType, gy: TensorType, scale: TensorType, axis: int, eps: float) -> TensorType:
    """layer_norm's backward through a gain: layer_norm_grad(x, mul(gy, scale)), scale broadcast to x."""
    require_float("layer_norm_grad_scaled", x)
    if x != gy or tuple(broadcast("layer_norm_grad_scaled", x, scale)) != tuple(x.shape):
        raise ShapeError(f"layer_norm_grad_scaled: x {x}, cotangent {gy} and scale {scale} disagree")
    return x


@defop("layer_norm_affine", inputs=("x", "scale", "shift"), attrs={"axis": Attr("axis", -1), "eps": Attr("float", 1e-5)},
       differentiable=False, flops=scaled_flops(10))
def layer_norm_affine(x: TensorType, scale: TensorType, shift: TensorType, axis: int, eps: float) -> TensorType:
    """LayerNorm with its gain and bias, layer_norm(x) never stored: affine(layer_norm(x, axis, eps), scale, shift)."""
    return affine(x, scale, shift)


@defop("layer_norm_gain_grad", inputs=("x", "gy"), attrs={"axis": Attr("axis", -1), "eps": Attr("float", 1e-5)},
       differentiable=False, flops=scaled_flops(10))
def layer_norm_gain_grad(x: TensorType, gy: TensorType, axis: int, eps: float) -> TensorType:
    """The gain's gradient with layer_norm(x) recomputed from x: sum(mul(gy, layer_norm(x)), every axis but axis)."""
    require_float("layer_norm_gain_grad", x)
    if x != gy:
        raise ShapeError(f"layer_norm_gain_grad: x {x} and cotangent {gy} differ")
    return x.with_shape((x.shape[axis],))


def _same_types(op: str, *types: TensorType) -> TensorType:
    require_float(op, types[0])
    if any(t != types[0] for t in types):
        raise ShapeError(f"{op}: inputs must have one type, got {' and '.join(map(str, types))}")
    return types[0]


@defop("axpby", inputs=("x", "y"), attrs={"a": Attr("float"), "b": Attr("float"), "square": Attr("bool", False)},
       differentiable=False, flops=scaled_flops(4))
def axpby(x: TensorType, y: TensorType, a: float, b: float, square: bool) -> TensorType:
    """a * x + b * y, or a * x + b * (y * y) when square (Adam's moments): add(mul(a, x), mul(b, y))."""
    return _same_types("axpby", x, y)


@defop("adam_param", inputs=("p", "m", "v", "step_size", "bc2_sqrt"), attrs={"eps": Attr("float")},
       differentiable=False, flops=scaled_flops(6))
def adam_param(p: TensorType, m: TensorType, v: TensorType, step_size: TensorType, bc2_sqrt: TensorType,
               eps: float) -> TensorType:
    """Adam's parameter step p - step_size * (m / (sqrt(v) / bc2_sqrt + eps)), step_size and bc2_sqrt scalars."""
    if step_size.shape != () or bc2_sqrt.shape != ():
        raise ShapeError(f"adam_param: step_size and bc2_sqrt must be scalars, got {step_size}, {bc2_sqrt}")
    same_dtype("adam_param", p, step_size, bc2_sqrt)
    return _same_types("adam_param", p, m, v)


@defop("concat", inputs=("a", "b"), attrs={"axis": Attr("axis", -1)}, differentiable=False)
def concat(a: TensorType, b: TensorType, axis: int) -> TensorType:
    """a and b joined along axis (the gradients of a split's slices): add(pad(a, after=|b|), pad(b, before=|a|))."""
    same_dtype("concat", a, b)
    da, db = a.shape[axis], b.shape[axis]
    if a.rank != b.rank or a.shape[:axis] + a.shape[axis + 1:] != b.shape[:axis] + b.shape[axis + 1:] \
            or not isinstance(da, int) or not isinstance(db, int):
        raise ShapeError(f"concat: {a} and {b} differ outside axis {axis}, or it is symbolic")
    return a.with_shape(a.shape[:axis] + (da + db,) + a.shape[axis + 1:])

