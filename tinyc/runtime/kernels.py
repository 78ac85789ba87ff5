"""NumPy kernels, one per op of `tinyc.ir.ops.OPS`, keyed by op name.

A kernel is `fn(*arrays, out=None, **attrs) -> ndarray`: `attrs` are the node's canonical
attributes with symbols already resolved to ints. With `out` it writes the result into that
buffer (through NumPy's `out=` where one exists) and returns it. Kernels are pure: they never
write to their inputs, so the compiler can use them to fold constants. Results have the
node's dtype (comparisons bool, argmax i64, reductions keep the input dtype). When `out` is
None, reshape/transpose/expand_dims/squeeze may return views of their input.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from tinyc.ir.errors import DataError
from tinyc.ir.types import DTYPES

from . import rowops

Kernel = Callable[..., np.ndarray]


def _finish(result: Any, out: np.ndarray | None) -> np.ndarray:
    """Return `result` as an ndarray, or copy it into `out` and return `out`."""
    if out is None:
        return np.asarray(result)
    np.copyto(out, result, casting="unsafe")
    return out


def _ufunc_kernel(ufunc: np.ufunc) -> Kernel:
    def kernel(*arrays: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
        # ufuncs on 0-d arrays return NumPy scalars; asarray keeps the ndarray contract
        return np.asarray(ufunc(*arrays, out=out))

    kernel.__doc__ = f"Elementwise {ufunc.__name__} with broadcasting."
    return kernel


# op name -> NumPy ufunc; the elementwise families of `tinyc.ir.ops.primitive`.
UFUNCS: dict[str, np.ufunc] = {
    "add": np.add,
    "sub": np.subtract,
    "mul": np.multiply,
    "div": np.divide,
    "pow": np.power,
    "maximum": np.maximum,
    "equal": np.equal,
    "not_equal": np.not_equal,
    "less": np.less,
    "less_equal": np.less_equal,
    "greater": np.greater,
    "greater_equal": np.greater_equal,
    "neg": np.negative,
    "sqrt": np.sqrt,
    "exp": np.exp,
    "log": np.log,
}


_ZERO_BLOCK = 16384  # elements: a zero block this long makes np.maximum's inner loop long and unit-stride
_zero_blocks: dict[np.dtype, np.ndarray] = {}


def relu(x: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
    if x.dtype.kind == "f" and x.size and x.flags.c_contiguous and (out is None or out.flags.c_contiguous):
        # np.maximum against a scalar runs ~3x slower than against an array: compare with a zero
        # block, broadcast over the flat data cut into rows of its length (and the remainder)
        zeros = _zero_blocks.get(x.dtype)
        if zeros is None:
            zeros = _zero_blocks[x.dtype] = np.zeros(_ZERO_BLOCK, x.dtype)
        out = np.empty_like(x) if out is None else out
        xf, of = x.reshape(-1), out.reshape(-1)
        k = min(_ZERO_BLOCK, x.size)
        m = x.size - x.size % k
        np.maximum(xf[:m].reshape(-1, k), zeros[:k], out=of[:m].reshape(-1, k))
        if m < x.size:
            np.maximum(xf[m:], zeros[:x.size - m], out=of[m:])
        return out
    # a zero of x's dtype, so f32 stays f32 and i64 stays i64
    return np.asarray(np.maximum(x, x.dtype.type(0), out=out))


def where(cond: np.ndarray, a: np.ndarray, b: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
    return _finish(np.where(cond, a, b), out)


def cast(x: np.ndarray, dtype: str, out: np.ndarray | None = None) -> np.ndarray:
    if out is None:
        return np.asarray(x).astype(DTYPES[dtype])
    return _finish(x, out)


# --------------------------------------------------------------------------- reductions


def _leading_sum(x: np.ndarray, axes: tuple[int, ...], keepdims: bool, out: np.ndarray | None) -> np.ndarray | None:
    """sum over the leading axes of a contiguous float x as one GEMV (bias gradients), else None."""
    k = len(axes)
    if x.dtype.kind != "f" or not 0 < k < x.ndim or tuple(axes) != tuple(range(k)) or not x.flags.c_contiguous:
        return None
    shape = x.shape[k:]
    x2 = x.reshape(-1, int(np.prod(shape)))
    o = out.reshape(-1) if out is not None and out.flags.c_contiguous else None
    r = np.matmul(np.ones(x2.shape[0], x.dtype), x2, out=o)
    r = r.reshape((1,) * k + shape if keepdims else shape)
    return r if out is None or o is not None else _finish(r, out)


def _reduction(fn: Callable[..., Any]) -> Kernel:
    def kernel(x: np.ndarray, axes: tuple[int, ...], keepdims: bool, out: np.ndarray | None = None) -> np.ndarray:
        if fn is np.sum:
            r = _leading_sum(x, axes, keepdims, out)
            if r is not None:
                return out if out is not None else r
        # dtype=x.dtype keeps i64 sums i64 and f32 means f32 on every platform
        extra = {} if fn is np.max else {"dtype": x.dtype}
        return np.asarray(fn(x, axis=tuple(axes), keepdims=keepdims, out=out, **extra))

    kernel.__doc__ = f"Reduce by {fn.__name__} over axes."
    return kernel


# --------------------------------------------------------------------------- shapes


def reshape(x: np.ndarray, shape: tuple[int, ...], out: np.ndarray | None = None) -> np.ndarray:
    if out is not None and out.flags.c_contiguous and x.size:
        np.copyto(out.reshape(x.shape), x)  # one strided copy, not a copy then a copy into out
        return out
    return _finish(np.reshape(x, shape), out)


def transpose(x: np.ndarray, perm: tuple[int, ...], out: np.ndarray | None = None) -> np.ndarray:
    return _finish(np.transpose(x, perm), out)


def broadcast_to(x: np.ndarray, shape: tuple[int, ...], out: np.ndarray | None = None) -> np.ndarray:
    if out is None:
        # materialised: a read-only stride-0 view would surprise whoever receives it
        return np.array(np.broadcast_to(x, shape))
    return _finish(x, out)  # copyto broadcasts


def expand_dims(x: np.ndarray, axis: int, out: np.ndarray | None = None) -> np.ndarray:
    return _finish(np.expand_dims(x, axis), out)


def squeeze(x: np.ndarray, axes: tuple[int, ...], out: np.ndarray | None = None) -> np.ndarray:
    return _finish(np.squeeze(x, axis=tuple(axes)), out)


def slice_(x: np.ndarray, axis: int, start: int, stop: int, out: np.ndarray | None = None) -> np.ndarray:
    index = (slice(None),) * axis + (slice(start, stop),)
    return _finish(x[index], out)


def pad(x: np.ndarray, axis: int, before: int, after: int, out: np.ndarray | None = None) -> np.ndarray:
    shape = x.shape[:axis] + (before + x.shape[axis] + after,) + x.shape[axis + 1:]
    result = np.zeros(shape, x.dtype) if out is None else out
    if out is not None:
        result[...] = 0
    result[(slice(None),) * axis + (slice(before, before + x.shape[axis]),)] = x
    return result


def matmul(a: np.ndarray, b: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
    return np.matmul(a, b, out=out)


# --------------------------------------------------------------------------- indices and sources


def one_hot(indices: np.ndarray, depth: int, dtype: str, out: np.ndarray | None = None) -> np.ndarray:
    # an index outside [0, depth) gives a row of zeros (as in TensorFlow)
    hot = np.expand_dims(indices, -1) == np.arange(depth)
    return _finish(hot.astype(DTYPES[dtype]), out)


def argmax(x: np.ndarray, axis: int, keepdims: bool, out: np.ndarray | None = None) -> np.ndarray:
    return _finish(np.argmax(x, axis=axis, keepdims=keepdims).astype(np.int64, copy=False), out)


def fill(shape: tuple[int, ...], dtype: str, value: float, out: np.ndarray | None = None) -> np.ndarray:
    if out is None:
        return np.full(shape, value, dtype=DTYPES[dtype])
    out.fill(value)
    return out


def zeros_like(x: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
    if out is None:
        return np.zeros_like(x)
    out.fill(0)
    return out


def ones_like(x: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
    if out is None:
        return np.ones_like(x)
    out.fill(1)
    return out


def constant(
    value: np.ndarray, name: str, dtype: str, shape: tuple[int, ...], out: np.ndarray | None = None
) -> np.ndarray:
    """The array stored in the graph's constant table, passed in by the executor as `value`."""
    arr = np.asarray(value, dtype=DTYPES[dtype])
    if arr.shape != tuple(shape):
        raise DataError(f"constant {name!r} holds an array of shape {list(arr.shape)}, expected {list(shape)}")
    return _finish(arr, out)


# --------------------------------------------------------------------------- composites (fused, stable)


def _out(x: np.ndarray, out: np.ndarray | None) -> np.ndarray:
    return np.empty(x.shape, x.dtype) if out is None else out


def softmax(x: np.ndarray, axis: int, out: np.ndarray | None = None) -> np.ndarray:
    out = _out(x, out)
    x2, o2 = rowops.rows(x, axis), rowops.rows(out, axis)
    if x2 is not None and o2 is not None:
        rowops.softmax(x2, o2)
        return out
    # exp(x - max) cannot overflow; the result is the same as exp(x) / sum(exp(x))
    out = np.subtract(x, np.max(x, axis=axis, keepdims=True), out=out)
    np.exp(out, out=out)
    out /= np.sum(out, axis=axis, keepdims=True)
    return out


def _shifted_logsumexp(x: np.ndarray, axis: int) -> tuple[np.ndarray, np.ndarray]:
    """(x - max, log(sum(exp(x - max)))) along axis, kept: log_softmax(x) is their difference.

    Working on x - max never overflows, and subtracting the small log-sum from it (rather than
    adding max back first) keeps full precision for logits of any magnitude.
    """
    shifted = x - np.max(x, axis=axis, keepdims=True)
    return shifted, np.log(np.sum(np.exp(shifted), axis=axis, keepdims=True))


def log_softmax(x: np.ndarray, axis: int, out: np.ndarray | None = None) -> np.ndarray:
    shifted, lse = _shifted_logsumexp(x, axis)
    return np.asarray(np.subtract(shifted, lse, out=out))


def layer_norm(x: np.ndarray, axis: int, eps: float, out: np.ndarray | None = None) -> np.ndarray:
    out = _out(x, out)
    x2, o2 = rowops.rows(x, axis), rowops.rows(out, axis)
    if x2 is not None and o2 is not None:
        rowops.layer_norm(x2, eps, o2)
        return out
    return _finish(rowops.normalize(x, axis, eps)[0], out)


def _check_labels(labels: np.ndarray, classes: int) -> None:
    if labels.size and (labels.min() < 0 or labels.max() >= classes):
        raise DataError(
            f"softmax_cross_entropy: labels must lie in [0, {classes}), got values from {labels.min()} to {labels.max()}"
        )


def softmax_cross_entropy(
    logits: np.ndarray, labels: np.ndarray, reduction: str, out: np.ndarray | None = None
) -> np.ndarray:
    # nll = logsumexp(logits) - logits[label]; "mean" averages over all label elements
    _check_labels(labels, logits.shape[-1])
    shifted, lse = _shifted_logsumexp(logits, -1)
    nll = (lse - np.take_along_axis(shifted, np.expand_dims(labels, -1), axis=-1))[..., 0]
    if reduction == "mean":
        nll = np.mean(nll, dtype=logits.dtype)
    elif reduction == "sum":
        nll = np.sum(nll, dtype=logits.dtype)
    return _finish(nll, out)


def softmax_grad(y: np.ndarray, gy: np.ndarray, axis: int, out: np.ndarray | None = None) -> np.ndarray:
    # y * (gy - sum(gy * y, axis)), y = softmax(x)
    out = _out(y, out)
    y2, g2, o2 = rowops.rows(y, axis), rowops.rows(gy, axis), rowops.rows(out, axis)
    if y2 is not None and g2 is not None and o2 is not None:
        rowops.softmax_grad(y2, g2, o2)
        return out
    dot = np.sum(gy * y, axis=axis, keepdims=True)
    return np.asarray(np.multiply(y, gy - dot, out=out))


def log_softmax_grad(y: np.ndarray, gy: np.ndarray, axis: int, out: np.ndarray | None = None) -> np.ndarray:
    # gy - exp(y) * sum(gy, axis), y = log_softmax(x)
    return np.asarray(np.subtract(gy, np.exp(y) * np.sum(gy, axis=axis, keepdims=True), out=out))


def layer_norm_grad(x: np.ndarray, gy: np.ndarray, axis: int, eps: float, out: np.ndarray | None = None) -> np.ndarray:
    # (gy - mean(gy) - xhat * mean(gy * xhat)) / sqrt(var + eps)
    x2, o2 = rowops.rows(x, axis), rowops.rows(_out(x, out), axis) if out is None else rowops.rows(out, axis)
    if x2 is not None and o2 is not None and gy.shape == x.shape:
        np.copyto(o2, gy.reshape(o2.shape))
        rowops.layer_norm_grad(x2, o2, eps)
        return o2.reshape(x.shape) if out is None else out
    xhat, inv_std = rowops.normalize(x, axis, eps)
    g = gy - np.mean(gy, axis=axis, keepdims=True) - xhat * np.mean(gy * xhat, axis=axis, keepdims=True)
    return np.asarray(np.multiply(g, inv_std, out=out))


def softmax_cross_entropy_grad(
    logits: np.ndarray, labels: np.ndarray, gy: np.ndarray, reduction: str, out: np.ndarray | None = None
) -> np.ndarray:
    # (softmax(logits) - one_hot(labels)) * gy, divided by the label count for "mean"
    _check_labels(labels, logits.shape[-1])
    g = softmax(logits, axis=logits.ndim - 1)
    np.put_along_axis(g, np.expand_dims(labels, -1), np.take_along_axis(g, np.expand_dims(labels, -1), -1) - 1, -1)
    scale = gy if reduction != "none" else np.expand_dims(gy, -1)
    if reduction == "mean":
        scale = scale / max(labels.size, 1)
    return np.asarray(np.multiply(g, scale.astype(logits.dtype, copy=False), out=out))


# --------------------------------------------------------------------------- kernel facts
# What the memory plan (`tinyc.compiler.passes.memplan`) may rely on about these kernels; the
# tests hold each kernel to its entry here.

# Ops whose kernel, called without `out`, returns a view of its input (reshape: of a C-contiguous
# input); the memory plan may make their results views (`alias`) rather than buffers.
VIEW_OPS = frozenset(("reshape", "expand_dims", "squeeze", "transpose", "slice"))
# Readers of a strided view at full speed: GEMMs take a transposed operand as BLAS flags
# (NumPy's matmul passes strides to BLAS when one of the last two dims is unit-stride).
GEMMS = frozenset(("matmul", "matmul_t", "matmul_bias", "matmul_t_sum"))
# Readers that copy a strided view in one pass anyway (a transpose read only by them is a view).
COPIES = frozenset(("reshape", "concat"))
# Ops whose kernel is one NumPy ufunc (or computes fully before writing): `out` may alias any input.
INPLACE_SAFE = frozenset(("add", "sub", "mul", "div", "pow", "maximum", "neg", "sqrt", "exp", "log", "relu", "where"))
# Fused kernels that may write over some of their inputs only: op -> those input positions
# (each kernel reads such an input fully before its first write to `out`; see fused_kernels.py).
INPLACE_INPUTS = {"relu_grad": (0, 1), "affine": (0,), "layer_norm_grad_scaled": (1,), "softmax_grad": (1,),
                  "axpby": (0,), "adam_param": (0,),  # the optimizer's states and parameters updated in place
                  "allreduce": (0,)}  # sums in place: may reuse the flat buffer it reduces

# What the thread pool (`tinyc.runtime.parallel.split_plan`) may rely on to cut one instruction
# into row blocks. Ops whose result row i (along axis 0) is computed from row i of each input
# that has the result's rank and first dim, and from the whole of every other (broadcast) input:
ROWWISE = frozenset(UFUNCS) | {"relu", "relu_grad", "affine", "where", "cast", "axpby", "adam_param"}
# ops that work along one `axis` attribute: row-wise as above when that axis is not the first
ALONG_AXIS = frozenset({"softmax", "softmax_grad", "log_softmax", "log_softmax_grad", "layer_norm",
                        "layer_norm_grad", "layer_norm_affine", "layer_norm_grad_scaled", "concat"})
WEIGHT_GRADS = frozenset({"matmul_t_sum"})  # with ta: result rows from columns of `a`
PRODUCTS = GEMMS - WEIGHT_GRADS  # rows of the result from rows of `a`

# --------------------------------------------------------------------------- the table

KERNELS: dict[str, Kernel] = {name: _ufunc_kernel(ufunc) for name, ufunc in UFUNCS.items()}
KERNELS.update(
    {
        "relu": relu,
        "where": where,
        "cast": cast,
        "sum": _reduction(np.sum),
        "mean": _reduction(np.mean),
        "max": _reduction(np.max),
        "reshape": reshape,
        "transpose": transpose,
        "broadcast_to": broadcast_to,
        "expand_dims": expand_dims,
        "squeeze": squeeze,
        "slice": slice_,
        "pad": pad,
        "matmul": matmul,
        "one_hot": one_hot,
        "argmax": argmax,
        "fill": fill,
        "zeros_like": zeros_like,
        "ones_like": ones_like,
        "constant": constant,
        "softmax": softmax,
        "log_softmax": log_softmax,
        "layer_norm": layer_norm,
        "softmax_cross_entropy": softmax_cross_entropy,
        "softmax_grad": softmax_grad,
        "log_softmax_grad": log_softmax_grad,
        "layer_norm_grad": layer_norm_grad,
        "softmax_cross_entropy_grad": softmax_cross_entropy_grad,
    }
)

from .fused_kernels import FUSED_KERNELS  # the fused ops of the `fuse` pass (imported last: it is merged in)

KERNELS.update(FUSED_KERNELS)

from .parallel_kernels import PACKING, PARALLEL_KERNELS  # noqa: F401  (the data-parallel ops; PACKING for memplan)

KERNELS.update(PARALLEL_KERNELS)
