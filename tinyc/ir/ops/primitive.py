"""The primitive ops: elementwise families, reductions, shape ops, matmul, indices and sources.

Named sets (`ELEMENTWISE`, `COMMUTATIVE`, ...) sit beside the schemas for rewrites to match on.
"""

from __future__ import annotations

from ..errors import IRError, ShapeError
from ..types import Dim, TensorType, broadcast_shapes, format_shape, symbolic_numel
from .schema import (
    Attr,
    broadcast,
    defop,
    elementwise_flops,
    matmul_flops,
    reduce_flops,
    require_float,
    same_dtype,
)

# --------------------------------------------------------------------------- elementwise


ELEMENTWISE_BINARY = ("add", "sub", "mul", "div", "pow", "maximum")
COMMUTATIVE = ("add", "mul", "maximum", "equal", "not_equal")
COMPARISONS = ("equal", "not_equal", "less", "less_equal", "greater", "greater_equal")
# the comparisons' names before they took the front-end's (tc.equal, ...): files that use them still load
FORMER_NAMES = {"eq": "equal", "ne": "not_equal", "lt": "less", "le": "less_equal", "gt": "greater",
                "ge": "greater_equal"}
UNARY = ("neg", "sqrt", "exp", "log", "relu")
REDUCTIONS = ("sum", "mean", "max")


def _binary_rule(name: str, float_only: bool):
    def rule(a: TensorType, b: TensorType) -> TensorType:
        dtype = same_dtype(name, a, b)
        if not a.is_numeric or (float_only and not a.is_float):
            raise IRError(f"{name}: needs {'float' if float_only else 'numeric'} inputs, got {a} and {b}")
        return TensorType(dtype, broadcast(name, a, b))

    rule.__doc__ = f"Elementwise {name} with NumPy broadcasting."
    return rule


for _name in ELEMENTWISE_BINARY:
    defop(_name, inputs=("a", "b"), flops=elementwise_flops)(_binary_rule(_name, _name in ("div", "pow")))


def _compare_rule(name: str):
    def rule(a: TensorType, b: TensorType) -> TensorType:
        same_dtype(name, a, b)
        return TensorType("bool", broadcast(name, a, b))

    rule.__doc__ = f"Elementwise comparison {name} -> bool."
    return rule


for _name in COMPARISONS:
    defop(_name, inputs=("a", "b"), differentiable=False, flops=elementwise_flops)(_compare_rule(_name))


def _unary_rule(name: str, float_only: bool):
    def rule(x: TensorType) -> TensorType:
        if float_only:
            require_float(name, x)
        elif not x.is_numeric:
            raise IRError(f"{name}: needs a numeric input, got {x}")
        return x

    rule.__doc__ = f"Elementwise {name}."
    return rule


for _name in UNARY:
    defop(_name, inputs=("x",), flops=elementwise_flops)(_unary_rule(_name, _name not in ("neg", "relu")))

ELEMENTWISE = ELEMENTWISE_BINARY + COMPARISONS + UNARY + ("where", "cast")


@defop("where", inputs=("cond", "a", "b"), flops=elementwise_flops)
def where(cond: TensorType, a: TensorType, b: TensorType) -> TensorType:
    """cond ? a : b, broadcast."""
    if cond.dtype != "bool":
        raise IRError(f"where: condition must be bool, got {cond}", hint="compare first, e.g. x > 0")
    return TensorType(same_dtype("where", a, b), broadcast("where", cond, a, b))


@defop("cast", inputs=("x",), attrs={"dtype": Attr("dtype")}, flops=elementwise_flops)
def cast(x: TensorType, dtype: str) -> TensorType:
    """Convert to another dtype."""
    return x.with_dtype(dtype)


# --------------------------------------------------------------------------- reductions


def _reduce_rule(name: str):
    def rule(x: TensorType, axes: tuple[int, ...], keepdims: bool) -> TensorType:
        if not x.is_numeric:
            raise IRError(f"{name}: needs a numeric input, got {x}")
        if name == "mean":
            require_float(name, x)
        shape = tuple(1 if i in axes else d for i, d in enumerate(x.shape) if keepdims or i not in axes)
        return x.with_shape(shape)

    rule.__doc__ = f"Reduce by {name} over axes (all when None), keeping them as 1 if keepdims."
    return rule


for _name in REDUCTIONS:
    defop(_name, inputs=("x",), attrs={"axes": Attr("axes", None), "keepdims": Attr("bool", False)}, flops=reduce_flops)(
        _reduce_rule(_name)
    )


# --------------------------------------------------------------------------- shape ops


@defop("reshape", inputs=("x",), attrs={"shape": Attr("shape")})
def reshape(x: TensorType, shape: tuple[Dim, ...]) -> TensorType:
    """Same elements, new shape; one dim may be -1; symbols such as B may appear."""
    return x.with_shape(resolve_reshape(x.shape, shape))


def resolve_reshape(src: tuple[Dim, ...], shape: tuple[Dim, ...]) -> tuple[Dim, ...]:
    """The target shape of a reshape with its -1 worked out, checked symbolically."""
    known, syms = symbolic_numel(src)
    wild = [i for i, d in enumerate(shape) if d == -1]
    if len(wild) > 1:
        raise ShapeError(f"reshape: only one dim may be -1, got {list(shape)}")
    t_known, t_syms = symbolic_numel(tuple(d for d in shape if d != -1))
    if wild:
        if t_syms - syms or (t_known and known % t_known) or t_known == 0:
            raise ShapeError(f"reshape: cannot reshape {format_shape(src)} into {format_shape(shape)}")
        rest = syms - t_syms
        if rest and known // t_known != 1:
            raise ShapeError(
                f"reshape: -1 in {format_shape(shape)} would mix {' * '.join(rest)} with {known // t_known}",
                hint="name the symbolic dim explicitly, e.g. reshape(x, ('B', -1))",
            )
        fill: Dim = next(iter(rest)) if rest else known // t_known
        if sum(rest.values()) > 1:
            raise ShapeError(f"reshape: -1 would stand for a product of symbols {dict(rest)}")
        shape = tuple(fill if d == -1 else d for d in shape)
    elif (known, syms) != symbolic_numel(shape):
        raise ShapeError(f"reshape: cannot reshape {format_shape(src)} into {format_shape(shape)}: sizes differ")
    return tuple(shape)


@defop("transpose", inputs=("x",), attrs={"perm": Attr("perm", None)})
def transpose(x: TensorType, perm: tuple[int, ...]) -> TensorType:
    """Permute dims (NumPy semantics: no perm reverses them)."""
    return x.with_shape(tuple(x.shape[p] for p in perm))


@defop("broadcast_to", inputs=("x",), attrs={"shape": Attr("shape")})
def broadcast_to(x: TensorType, shape: tuple[Dim, ...]) -> TensorType:
    """Broadcast to an explicit shape."""
    if -1 in shape:
        raise ShapeError(f"broadcast_to: -1 is not allowed in {list(shape)}")
    got = broadcast("broadcast_to", x, TensorType(x.dtype, shape))
    if tuple(got) != tuple(shape):
        raise ShapeError(f"broadcast_to: cannot broadcast {x} to {format_shape(shape)}")
    return x.with_shape(shape)


@defop("expand_dims", inputs=("x",), attrs={"axis": Attr("axis", new_axis=True)})
def expand_dims(x: TensorType, axis: int) -> TensorType:
    """Insert a dim of size 1 at axis."""
    shape = list(x.shape)
    shape.insert(axis, 1)
    return x.with_shape(tuple(shape))


def _unit_dims(x: TensorType) -> tuple[int, ...]:
    return tuple(i for i, d in enumerate(x.shape) if d == 1)


@defop("squeeze", inputs=("x",), attrs={"axes": Attr("axes", None, when_none=_unit_dims)})
def squeeze(x: TensorType, axes: tuple[int, ...]) -> TensorType:
    """Remove dims of size 1 (all of them when axes is None)."""
    for a in axes:
        if x.shape[a] != 1:
            raise ShapeError(f"squeeze: dim {a} of {x} is {x.shape[a]}, not 1")
    return x.with_shape(tuple(d for i, d in enumerate(x.shape) if i not in axes))


@defop("slice", inputs=("x",), attrs={"axis": Attr("axis"), "start": Attr("int"), "stop": Attr("int")})
def slice_(x: TensorType, axis: int, start: int, stop: int) -> TensorType:
    """x[..., start:stop, ...] along axis (a concrete dim; step 1)."""
    dim = x.shape[axis]
    if not isinstance(dim, int):
        raise ShapeError(f"slice: dim {axis} of {x} is symbolic; only concrete dims can be sliced")
    if not 0 <= start < stop <= dim:
        raise ShapeError(f"slice: [{start}:{stop}] is not a non-empty range inside dim {axis} of {x}")
    return x.with_shape(x.shape[:axis] + (stop - start,) + x.shape[axis + 1:])


@defop("pad", inputs=("x",), attrs={"axis": Attr("axis"), "before": Attr("int"), "after": Attr("int")})
def pad(x: TensorType, axis: int, before: int, after: int) -> TensorType:
    """Zeros before and after x along axis (a concrete dim): the gradient of slice."""
    dim = x.shape[axis]
    if not isinstance(dim, int) or before < 0 or after < 0:
        raise ShapeError(f"pad: cannot pad dim {axis} of {x} by ({before}, {after})")
    return x.with_shape(x.shape[:axis] + (before + dim + after,) + x.shape[axis + 1:])


# --------------------------------------------------------------------------- linear algebra


@defop("matmul", inputs=("a", "b"), flops=matmul_flops)
def matmul(a: TensorType, b: TensorType) -> TensorType:
    """a[..., m, k] @ b[..., k, n] -> [..., m, n], batch dims broadcast."""
    dtype = same_dtype("matmul", a, b)
    if not a.is_float:
        raise IRError(f"matmul: needs float inputs, got {a} @ {b}")
    if a.rank < 2 or b.rank < 2:
        raise ShapeError(f"matmul: needs inputs of rank >= 2, got {a} @ {b}", hint="use reshape or expand_dims")
    if a.shape[-1] != b.shape[-2]:
        raise ShapeError(
            f"matmul: inner dims differ: {a} @ {b} ({a.shape[-1]} != {b.shape[-2]})",
            hint="transpose one side (x.T) or check the layer sizes",
        )
    try:
        batch = broadcast_shapes(a.shape[:-2], b.shape[:-2])
    except ShapeError as e:
        raise ShapeError(f"matmul: batch dims of {a} @ {b}: {e.message}") from None
    return TensorType(dtype, tuple(batch) + (a.shape[-2], b.shape[-1]))


# --------------------------------------------------------------------------- indices


@defop("one_hot", inputs=("indices",), attrs={"depth": Attr("int"), "dtype": Attr("dtype", "f32")}, differentiable=False)
def one_hot(indices: TensorType, depth: int, dtype: str) -> TensorType:
    """indices[...] -> [..., depth] with 1 at each index."""
    if indices.dtype != "i64":
        raise IRError(f"one_hot: indices must be i64, got {indices}")
    if depth < 1:
        raise ShapeError(f"one_hot: depth must be positive, got {depth}")
    return TensorType(dtype, indices.shape + (depth,))


@defop("argmax", inputs=("x",), attrs={"axis": Attr("axis", -1), "keepdims": Attr("bool", False)}, differentiable=False,
       flops=reduce_flops)
def argmax(x: TensorType, axis: int, keepdims: bool) -> TensorType:
    """Index of the largest element along axis -> i64."""
    shape = tuple(1 if i == axis else d for i, d in enumerate(x.shape) if keepdims or i != axis)
    return TensorType("i64", shape)


# --------------------------------------------------------------------------- sources


@defop("fill", attrs={"shape": Attr("shape"), "dtype": Attr("dtype", "f32"), "value": Attr("float")}, differentiable=False)
def fill(shape: tuple[Dim, ...], dtype: str, value: float) -> TensorType:
    """A tensor of one value (scalars written in model code become fills of shape [])."""
    if -1 in shape:
        raise ShapeError(f"fill: -1 is not allowed in {list(shape)}")
    return TensorType(dtype, shape)


@defop("zeros_like", inputs=("x",), differentiable=False)
def zeros_like(x: TensorType) -> TensorType:
    """Zeros of x's type."""
    return x


@defop("ones_like", inputs=("x",), differentiable=False)
def ones_like(x: TensorType) -> TensorType:
    """Ones of x's type."""
    return x


@defop("constant", attrs={"name": Attr("str"), "dtype": Attr("dtype"), "shape": Attr("shape")}, differentiable=False)
def constant(name: str, dtype: str, shape: tuple[Dim, ...]) -> TensorType:
    """An array stored in the graph's constant table under `name`."""
    if any(isinstance(d, str) or d < 0 for d in shape):
        raise ShapeError(f"constant: shape must be concrete, got {list(shape)}")
    return TensorType(dtype, shape)
