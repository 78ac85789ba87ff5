"""The functions model code calls (`tc.matmul`, `tc.softmax`, ...), each recording one IR op.

Every function accepts Tensors, Python numbers and NumPy arrays (numbers and arrays become
constants). Compiler and runtime are imported lazily, inside `grad` and `function`, so that
`import tinyc` stays light and the runtime can be used without the compiler.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from .ir.builder import Tensor, current, user_location
from .ir.errors import IRError, ShapeError


def _unary(op: str, x: Any, **attrs: Any) -> Tensor:
    if not isinstance(x, Tensor):
        raise IRError(f"{op}: expected a Tensor, got {type(x).__name__}", loc=user_location(3),
                      hint="create it with tc.input, tc.param or tc.constant")
    return x.builder.apply(op, [x], **attrs)


def _nary(op: str, *args: Any, **attrs: Any) -> Tensor:
    like = next((a for a in args if isinstance(a, Tensor)), None)
    if like is None:
        raise IRError(f"{op}: needs at least one Tensor argument, got {', '.join(type(a).__name__ for a in args)}",
                      loc=user_location(3))
    b = like.builder
    return b.apply(op, [b.lift(a, like) for a in args], **attrs)


# --------------------------------------------------------------------------- sources


def input(name: str, shape: Sequence, dtype: str = "f32", *, scale: float | None = None, offset: float | None = None,
          mean: float | None = None, std: float | None = None, raw: str = "u8") -> Tensor:
    """A value fed at run time; dims may be symbols such as "B".

    Declare how raw data (`raw`: u8 pixels) maps to it, `((x * scale + offset) - mean) / std`, and
    every way of running the program (run, eval, predict, Executor, ONNX) applies that one rule:
    `tc.input("image", ("B", 28, 28), scale=1/255)`.
    """
    from .ir.preprocess import make_rule

    try:
        rule = make_rule(raw, scale, offset, mean, std)
    except IRError as e:
        raise IRError(f"input {name!r}: {e.message}", loc=user_location(2)) from None
    return current().input(name, shape, dtype, preprocess=rule)


def param(name: str, shape: Sequence, init: dict | None = None, dtype: str = "f32") -> Tensor:
    """A trainable parameter initialised by `init` (see `tc.init`); default zeros."""
    return current().param(name, shape, init, dtype)


def constant(value: Any, dtype: str | None = None) -> Tensor:
    """A constant array (or scalar) baked into the graph."""
    return current().constant(value, dtype)


def fill(shape: Sequence, value: float, dtype: str = "f32") -> Tensor:
    """A tensor of `shape` holding `value` everywhere (dims may be symbols)."""
    return current().apply("fill", [], shape=tuple(shape), value=value, dtype=dtype)


def zeros_like(x: Tensor) -> Tensor:
    """Zeros of x's type."""
    return _unary("zeros_like", x)


def ones_like(x: Tensor) -> Tensor:
    """Ones of x's type."""
    return _unary("ones_like", x)


# --------------------------------------------------------------------------- elementwise


def add(a, b): return _nary("add", a, b)
def sub(a, b): return _nary("sub", a, b)
def mul(a, b): return _nary("mul", a, b)
def div(a, b): return _nary("div", a, b)
def pow(a, b): return _nary("pow", a, b)
def maximum(a, b): return _nary("maximum", a, b)
def equal(a, b): return _nary("equal", a, b)
def not_equal(a, b): return _nary("not_equal", a, b)
def less(a, b): return _nary("less", a, b)
def less_equal(a, b): return _nary("less_equal", a, b)
def greater(a, b): return _nary("greater", a, b)
def greater_equal(a, b): return _nary("greater_equal", a, b)
def neg(x): return _unary("neg", x)
def sqrt(x): return _unary("sqrt", x)
def exp(x): return _unary("exp", x)
def log(x): return _unary("log", x)
def relu(x): return _unary("relu", x)


def where(cond, a, b) -> Tensor:
    """cond ? a : b, elementwise with broadcasting."""
    return _nary("where", cond, a, b)


def cast(x, dtype: str) -> Tensor:
    """x converted to `dtype` (f32, f64, i64 or bool)."""
    return _unary("cast", x, dtype=dtype)


# --------------------------------------------------------------------------- reductions and shapes


def sum(x, axis=None, keepdims: bool = False) -> Tensor:
    """Sum over `axis` (an int, a tuple, or None for all axes)."""
    return _unary("sum", x, axes=axis, keepdims=keepdims)


def mean(x, axis=None, keepdims: bool = False) -> Tensor:
    """Mean over `axis` (an int, a tuple, or None for all axes)."""
    return _unary("mean", x, axes=axis, keepdims=keepdims)


def max(x, axis=None, keepdims: bool = False) -> Tensor:
    """Maximum over `axis` (an int, a tuple, or None for all axes)."""
    return _unary("max", x, axes=axis, keepdims=keepdims)


def argmax(x, axis: int = -1, keepdims: bool = False) -> Tensor:
    """Index (i64) of the largest value along `axis`."""
    return _unary("argmax", x, axis=axis, keepdims=keepdims)


def reshape(x, shape: Sequence) -> Tensor:
    """x with a new shape; may use symbols such as "B" and one -1."""
    return _unary("reshape", x, shape=tuple(shape))


def transpose(x, axes: Sequence[int] | None = None) -> Tensor:
    """Permute dims; with no axes, reverse them (NumPy semantics)."""
    return _unary("transpose", x, perm=axes)


def broadcast_to(x, shape: Sequence) -> Tensor:
    """x broadcast to `shape` (NumPy rules)."""
    return _unary("broadcast_to", x, shape=tuple(shape))


def expand_dims(x, axis: int) -> Tensor:
    """x with a new dim of size 1 at `axis`."""
    return _unary("expand_dims", x, axis=axis)


def squeeze(x, axis=None) -> Tensor:
    """x without the size-1 dims `axis` (None: all of them)."""
    return _unary("squeeze", x, axes=axis)


def slice(x, start: int, stop: int, axis: int = -1) -> Tensor:
    """x[..., start:stop] along axis (NumPy basic slicing with step 1; negative bounds count from the end)."""
    dim = x.shape[axis] if isinstance(x, Tensor) and -x.ndim <= axis < x.ndim else None
    if isinstance(dim, int):
        start, stop = (v + dim if v < 0 else v for v in (start, stop))
    return _unary("slice", x, axis=axis, start=start, stop=stop)


def split(x, parts: int, axis: int = -1) -> list[Tensor]:
    """Cut x into `parts` equal slices along axis (a dim of known size)."""
    if not isinstance(x, Tensor):
        raise IRError(f"split: expected a Tensor, got {type(x).__name__}", loc=user_location(2))
    problem = ""
    if isinstance(parts, bool) or not isinstance(parts, int) or parts < 1:
        problem = f"parts must be a positive int, got {parts!r}"
    elif not -x.ndim <= axis < x.ndim:
        problem = f"axis {axis} is out of range for {x.type}"
    elif not isinstance(x.shape[axis], int):
        problem = f"dim {axis} of {x.type} is symbolic ({x.shape[axis]}): its size is not known when tracing"
    elif x.shape[axis] % parts:
        problem = f"dim {axis} of {x.type} does not divide into {parts} parts"
    if problem:
        raise ShapeError(f"split: {problem}", loc=user_location(2))
    size = x.shape[axis] // parts
    return [slice(x, i * size, (i + 1) * size, axis) for i in range(parts)]


def pad(x, before: int, after: int, axis: int = -1) -> Tensor:
    """Zeros before and after x along axis."""
    return _unary("pad", x, axis=axis, before=before, after=after)


def matmul(a, b) -> Tensor:
    """a[..., m, k] @ b[..., k, n]."""
    return _nary("matmul", a, b)


def one_hot(indices, depth: int, dtype: str = "f32") -> Tensor:
    """indices[...] -> [..., depth] with 1 at each index and 0 elsewhere."""
    return _unary("one_hot", indices, depth=depth, dtype=dtype)


# --------------------------------------------------------------------------- composites


def softmax(x, axis: int = -1) -> Tensor:
    """exp(x) / sum(exp(x)) along axis, computed stably."""
    return _unary("softmax", x, axis=axis)


def log_softmax(x, axis: int = -1) -> Tensor:
    """log(softmax(x)) along axis, computed stably."""
    return _unary("log_softmax", x, axis=axis)


def layer_norm(x, axis: int = -1, eps: float = 1e-5) -> Tensor:
    """(x - mean) / sqrt(var + eps) along axis, without gain or bias (see models.LayerNorm)."""
    return _unary("layer_norm", x, axis=axis, eps=eps)


def softmax_cross_entropy(logits, labels, reduction: str = "mean") -> Tensor:
    """Cross-entropy of softmax(logits) against integer labels; "mean", "sum" or "none"."""
    return _nary("softmax_cross_entropy", logits, labels, reduction=reduction)


# --------------------------------------------------------------------------- transforms


def grad(y: Tensor, xs: Sequence[Tensor] | Tensor) -> list[Tensor] | Tensor:
    """d(sum y)/dx for each x, built as IR nodes in y's graph (so grad of grad works)."""
    from .compiler.autodiff import grad as _grad

    return _grad(y, xs)


def function(outputs: Sequence[Tensor] | Tensor, inputs: Sequence[Tensor] = ()) -> Callable[..., Any]:
    """A callable running the traced graph: takes arrays for `inputs` (in order), returns arrays
    for `outputs` (a list, or one array if `outputs` is one Tensor). Parameters not listed in
    `inputs` take their init values (seed 0)."""
    from .runtime.reference import make_function

    single = isinstance(outputs, Tensor)
    outs = [outputs] if single else list(outputs)
    if not outs:
        raise IRError("tc.function needs at least one output", loc=user_location(2))
    b = outs[0].builder
    graph = b.graph([b.own(t) for t in outs])
    run = make_function(graph, [b.own(t).name for t in inputs])

    def call(*arrays: Any):
        if len(arrays) != len(inputs):
            raise IRError(f"this function takes {len(inputs)} array(s), got {len(arrays)}", loc=user_location(2))
        results = run([np.asarray(a) for a in arrays])
        return results[0] if single else results

    return call
