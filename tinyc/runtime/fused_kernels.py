"""NumPy kernels of the fused ops (`tinyc.ir.ops.FUSED`), merged into `KERNELS` by kernels.py.

Same contract as every kernel: `fn(*arrays, out=None, **attrs) -> ndarray`, inputs never
written. These exist for speed, so they write through `out` and avoid temporaries: a 3-D @ 2-D
product runs as one 2-D GEMM over the flattened rows, and transposes reach BLAS as strides.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from . import rowops

Kernel = Callable[..., np.ndarray]


def _op(x: np.ndarray, flag: bool) -> np.ndarray:
    return np.swapaxes(x, -1, -2) if flag else x


def _rows(x: np.ndarray) -> np.ndarray | None:
    """x[..., n] as a 2-D [rows, n] view, or None when that needs a copy."""
    if x.ndim == 2:
        return x
    try:  # also a strided view (a slice of a wider GEMM output) whose rows merge without a copy
        return np.reshape(x, (-1, x.shape[-1]), copy=False)
    except ValueError:
        return None


def _product(a: np.ndarray, b: np.ndarray, ta: bool, tb: bool, out: np.ndarray | None) -> np.ndarray:
    """op(a) @ op(b) into `out` (allocated when None)."""
    a_op, b_op = _op(a, ta), _op(b, tb)
    if out is None:
        shape = np.broadcast_shapes(a_op.shape[:-2], b_op.shape[:-2]) + (a_op.shape[-2], b_op.shape[-1])
        out = np.empty(shape, np.result_type(a, b))
    if b_op.ndim == 2 and a.ndim > 2 and not ta:
        # x[..., k] @ w[k, n] is one GEMM over all rows of x, not one GEMM per batch element
        a2, o2 = _rows(a), _rows(out)
        if a2 is not None and o2 is not None:
            np.matmul(a2, b_op, out=o2)
            return out
    np.matmul(a_op, b_op, out=out)
    return out


def matmul_t(a: np.ndarray, b: np.ndarray, ta: bool, tb: bool, alpha: float, out: np.ndarray | None = None) -> np.ndarray:
    out = _product(a, b, ta, tb, out)
    if alpha != 1.0:
        out *= out.dtype.type(alpha)
    return out


def matmul_t_sum(a: np.ndarray, b: np.ndarray, ta: bool, tb: bool, out: np.ndarray | None = None) -> np.ndarray:
    if ta and not tb:
        # sum_i a_i^T b_i = [a_1; a_2; ...]^T [b_1; b_2; ...]: one GEMM contracting over batch * rows
        a2, b2 = a.reshape(-1, a.shape[-1]), b.reshape(-1, b.shape[-1])
        return np.matmul(a2.T, b2, out=out)
    batch = tuple(range(a.ndim - 2))
    return np.asarray(np.sum(np.matmul(_op(a, ta), _op(b, tb)), axis=batch, out=out))


def matmul_bias(a: np.ndarray, b: np.ndarray, bias: np.ndarray, ta: bool, tb: bool,
                out: np.ndarray | None = None) -> np.ndarray:
    out = _product(a, b, ta, tb, out)
    np.add(out, bias, out=out)
    return out


def relu_grad(x: np.ndarray, gy: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
    # gy * (x > 0): a multiply by a bool mask is ~10x faster than np.where
    return np.multiply(gy, np.greater(x, 0), out=out)


def affine(x: np.ndarray, scale: np.ndarray, shift: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
    out = np.multiply(x, scale, out=out)
    np.add(out, shift, out=out)
    return out


def layer_norm_grad_scaled(x: np.ndarray, gy: np.ndarray, scale: np.ndarray, axis: int, eps: float,
                           out: np.ndarray | None = None) -> np.ndarray:
    # g = gy * scale; (g - mean(g) - xhat * mean(g * xhat)) / sqrt(var(x) + eps), along axis
    if out is None:
        out = np.empty(np.broadcast_shapes(x.shape, gy.shape), x.dtype)
    np.multiply(gy, scale, out=out)
    x2, g2 = rowops.rows(x, axis), rowops.rows(out, axis)
    if x2 is not None and g2 is not None:
        rowops.layer_norm_grad(x2, g2, eps)
        return out
    xm, g = np.moveaxis(x, axis, -1), np.moveaxis(out, axis, -1)
    n = xm.shape[-1]
    inv_n = x.dtype.type(1.0 / n)
    xhat = xm - np.sum(xm, axis=-1, keepdims=True) * inv_n
    var = np.einsum("...i,...i->...", xhat, xhat)[..., None] * inv_n
    inv_std = 1.0 / np.sqrt(var + x.dtype.type(eps))
    xhat *= inv_std
    mean_g = np.sum(g, axis=-1, keepdims=True) * inv_n
    mean_gx = np.einsum("...i,...i->...", g, xhat)[..., None] * inv_n
    xhat *= mean_gx
    g -= mean_g
    g -= xhat
    g *= inv_std
    return out


def layer_norm_affine(x: np.ndarray, scale: np.ndarray, shift: np.ndarray, axis: int, eps: float,
                      out: np.ndarray | None = None) -> np.ndarray:
    # layer_norm(x) * scale + shift, normalised straight into `out`
    if out is None:
        out = np.empty(x.shape, x.dtype)
    x2, o2 = rowops.rows(x, axis), rowops.rows(out, axis)
    if x2 is not None and o2 is not None:
        rowops.layer_norm(x2, eps, o2)
    else:
        np.copyto(out, rowops.normalize(x, axis, eps)[0])
    out *= scale
    out += shift
    return out


def layer_norm_gain_grad(x: np.ndarray, gy: np.ndarray, axis: int, eps: float,
                         out: np.ndarray | None = None) -> np.ndarray:
    # sum of gy * layer_norm(x) over every axis but `axis`, layer_norm(x) recomputed (one temporary)
    x2, g2 = rowops.rows(x, axis), rowops.rows(gy, axis)
    if x2 is not None and g2 is not None:
        return rowops.layer_norm_gain_grad(x2, g2, eps, out)
    prod = np.moveaxis(rowops.normalize(x, axis, eps)[0] * gy, axis, -1)
    return np.sum(prod.reshape(-1, prod.shape[-1]), axis=0, out=out)


def axpby(x: np.ndarray, y: np.ndarray, a: float, b: float, square: bool, out: np.ndarray | None = None) -> np.ndarray:
    # a * x + b * y (or b * (y * y)), rounded exactly as the unfused ops; `out` may be x (an
    # optimizer state updated in place): y's term is formed first, x is read before out is written
    by = np.multiply(y, y) if square else np.multiply(y, y.dtype.type(b))
    if square:
        by *= by.dtype.type(b)
    out = np.multiply(x, x.dtype.type(a), out=out)
    out += by
    return out


def adam_param(p: np.ndarray, m: np.ndarray, v: np.ndarray, step_size: np.ndarray, bc2_sqrt: np.ndarray, eps: float,
               out: np.ndarray | None = None) -> np.ndarray:
    # p - step_size * (m / (sqrt(v) / bc2_sqrt + eps)), op by op as the unfused graph, one temporary;
    # p is read only by the last subtract, so `out` may be p (the parameter updated in place)
    d = np.sqrt(v)
    d /= bc2_sqrt
    d += d.dtype.type(eps)
    np.divide(m, d, out=d)
    d *= step_size
    return np.subtract(p, d, out=out)


def concat(a: np.ndarray, b: np.ndarray, axis: int, out: np.ndarray | None = None) -> np.ndarray:
    return np.concatenate((a, b), axis=axis, out=out)


FUSED_KERNELS: dict[str, Kernel] = {
    "concat": concat,
    "axpby": axpby,
    "adam_param": adam_param,
    "matmul_t": matmul_t,
    "matmul_t_sum": matmul_t_sum,
    "matmul_bias": matmul_bias,
    "relu_grad": relu_grad,
    "affine": affine,
    "layer_norm_grad_scaled": layer_norm_grad_scaled,
    "layer_norm_affine": layer_norm_affine,
    "layer_norm_gain_grad": layer_norm_gain_grad,
}
