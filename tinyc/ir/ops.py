"""The op registry: every op declared once, with its attributes and its type rule.

A schema is data: name, input names, typed attributes with defaults, op-set version (`since`),
whether it is differentiable, a FLOP estimate and a pure type rule
`(TensorType..., **attrs) -> TensorType`. Gradient rules live in `tinyc.compiler.vjp`, kernels in
`tinyc.runtime.kernels`; a test checks the three tables agree. The primitives are declared here,
the composites in `composite_ops.py`, the fused ops of the `fuse` pass in `fused_ops.py`; all
register into the one table `OPS`.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from .errors import IRError, ShapeError
from .types import DTYPES, Dim, TensorType, broadcast_shapes, symbolic_numel

OPSET_VERSION = 1
_REQUIRED = object()


@dataclass(frozen=True)
class Attr:
    """One attribute of an op: its kind (how it is checked and normalised) and default."""

    kind: str  # int | float | str | bool | dtype | axis | axes | perm | shape
    default: Any = _REQUIRED

    @property
    def required(self) -> bool:
        return self.default is _REQUIRED


@dataclass(frozen=True)
class OpSchema:
    name: str
    inputs: tuple[str, ...]
    attrs: Mapping[str, Attr]
    infer: Callable[..., TensorType]
    since: int = 1
    differentiable: bool = True
    composite: bool = False
    # effectful: the result depends on more than the inputs (a collective across ranks), so
    # passes never fold it, merge two of them (cse) or move it; dce still drops an unused one
    effectful: bool = False
    variadic: bool = False  # the last input may repeat (one or more values)
    flops: Callable[[list, tuple, dict], int] = field(default=lambda ins, out, attrs: 0)
    doc: str = ""


OPS: dict[str, OpSchema] = {}


def defop(name, inputs=(), attrs=None, since=1, differentiable=True, composite=False, flops=None,
          effectful=False, variadic=False):
    """Declare an op; the decorated function is its type rule."""

    def register(rule):
        if name in OPS:
            raise ValueError(f"op {name!r} declared twice")
        OPS[name] = OpSchema(
            name=name,
            inputs=tuple(inputs),
            attrs=dict(attrs or {}),
            infer=rule,
            since=since,
            differentiable=differentiable,
            composite=composite,
            effectful=effectful,
            variadic=variadic,
            flops=flops or (lambda ins, out, a: 0),
            doc=(rule.__doc__ or "").strip().splitlines()[0] if rule.__doc__ else "",
        )
        return rule

    return register


def schema(op: str) -> OpSchema:
    try:
        return OPS[op]
    except KeyError:
        raise IRError(f"unknown op {op!r}") from None


# --------------------------------------------------------------------------- attributes


def _check_kind(op: str, key: str, kind: str, value: Any) -> Any:
    """Validate one attribute value and return its canonical (hashable, msgpack-able) form."""

    def bad(expected: str):
        return IRError(f"{op}: attribute {key}={value!r} is not {expected}")

    if kind == "int" or kind == "axis":
        if isinstance(value, bool) or not isinstance(value, int):
            raise bad("an int")
        return int(value)
    if kind == "float":
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise bad("a number")
        return float(value)
    if kind == "bool":
        if not isinstance(value, bool):
            raise bad("a bool")
        return value
    if kind == "str":
        if not isinstance(value, str):
            raise bad("a string")
        return value
    if kind == "dtype":
        if value not in DTYPES:
            raise bad(f"one of {', '.join(DTYPES)}")
        return value
    if kind in ("axes", "perm"):
        if value is None:
            return None
        if isinstance(value, int) and not isinstance(value, bool):
            value = (value,)
        if not isinstance(value, (tuple, list)) or any(isinstance(v, bool) or not isinstance(v, int) for v in value):
            raise bad("a list of ints")
        return tuple(int(v) for v in value)
    if kind == "shape":
        if not isinstance(value, (tuple, list)):
            raise bad("a shape (list of ints and symbols)")
        for v in value:
            if isinstance(v, bool) or not isinstance(v, (int, str)) or (isinstance(v, int) and v < -1):
                raise bad("a shape (list of ints and symbols)")
        return tuple(int(v) if isinstance(v, int) else v for v in value)
    raise AssertionError(f"unknown attribute kind {kind}")


def _normalize_axis(op: str, axis: int, rank: int) -> int:
    if not -rank <= axis < rank:
        raise ShapeError(f"{op}: axis {axis} is out of range for rank {rank}")
    return axis % rank


def canonical_attrs(op: str, in_types: list[TensorType], attrs: Mapping[str, Any]) -> dict[str, Any]:
    """Check attrs against the schema, fill defaults and normalise axes (negative -> positive,
    None -> explicit). The result is what a Node stores, so equal ops compare equal."""
    s = schema(op)
    unknown = set(attrs) - set(s.attrs)
    if unknown:
        raise IRError(f"{op}: unknown attribute(s) {', '.join(sorted(unknown))}; it takes {', '.join(s.attrs) or 'none'}")
    rank = in_types[0].rank if in_types else 0
    out: dict[str, Any] = {}
    for key, spec in s.attrs.items():
        if key in attrs and attrs[key] is not None or (key in attrs and spec.kind in ("axes", "perm")):
            value = _check_kind(op, key, spec.kind, attrs[key])
        elif spec.required:
            raise IRError(f"{op}: missing attribute {key}")
        else:
            value = spec.default
        if spec.kind == "axis":
            value = _normalize_axis(op, value, rank + (1 if op == "expand_dims" else 0))
        elif spec.kind == "axes":
            if value is None:
                value = tuple(range(rank)) if op != "squeeze" else tuple(i for i, d in enumerate(in_types[0].shape) if d == 1)
            axes = tuple(sorted(_normalize_axis(op, a, rank) for a in value))
            if len(set(axes)) != len(axes):
                raise ShapeError(f"{op}: repeated axis in {value}")
            value = axes
        elif spec.kind == "perm":
            if value is None:
                value = tuple(reversed(range(rank)))
            value = tuple(_normalize_axis(op, a, rank) for a in value)
            if sorted(value) != list(range(rank)):
                raise ShapeError(f"{op}: axes {value} are not a permutation of {rank} dims")
        out[key] = value
    return out


def infer_type(op: str, in_types: list[TensorType], attrs: Mapping[str, Any]) -> TensorType:
    """The output type of `op` on inputs of `in_types` with canonical `attrs`."""
    s = schema(op)
    if len(in_types) < len(s.inputs) if s.variadic else len(in_types) != len(s.inputs):
        if s.variadic:
            raise IRError(f"{op}: takes {len(s.inputs)} or more inputs ({', '.join(s.inputs)}...), got {len(in_types)}")
        raise IRError(f"{op}: takes {len(s.inputs)} input(s) ({', '.join(s.inputs)}), got {len(in_types)}")
    try:
        return s.infer(*in_types, **attrs)
    except ShapeError as e:  # e.g. the size limit, raised by TensorType itself: name the op
        if e.message.startswith(f"{op}:"):
            raise
        raise ShapeError(f"{op}: {e.message}", loc=e.loc, hint=e.hint) from None


# --------------------------------------------------------------------------- FLOP estimates


def _elementwise_flops(ins, out, attrs):
    return math.prod(out)


def _reduce_flops(ins, out, attrs):
    return math.prod(ins[0])


def _scaled(k):
    return lambda ins, out, attrs: k * math.prod(ins[0])


def _matmul_flops(ins, out, attrs):
    return 2 * math.prod(out) * ins[0][-1]


# --------------------------------------------------------------------------- helpers for rules


def _fmt(t: TensorType) -> str:
    return str(t)


def _same_dtype(op: str, *types: TensorType) -> str:
    dtypes = {t.dtype for t in types}
    if len(dtypes) > 1:
        raise IRError(
            f"{op}: dtypes differ: {' and '.join(_fmt(t) for t in types)}",
            hint="convert one side with tc.cast(x, dtype)",
        )
    return types[0].dtype


def _require_float(op: str, t: TensorType) -> None:
    if not t.is_float:
        raise IRError(f"{op}: needs a float input, got {_fmt(t)}", hint="convert it with tc.cast(x, 'f32')")


def _broadcast(op: str, *types: TensorType):
    try:
        return broadcast_shapes(*(t.shape for t in types))
    except ShapeError as e:
        raise ShapeError(f"{op}: {e.message}") from None


# --------------------------------------------------------------------------- elementwise


ELEMENTWISE_BINARY = ("add", "sub", "mul", "div", "pow", "maximum")
COMMUTATIVE = ("add", "mul", "maximum", "eq", "ne")
COMPARISONS = ("eq", "ne", "lt", "le", "gt", "ge")
UNARY = ("neg", "sqrt", "exp", "log", "relu")
REDUCTIONS = ("sum", "mean", "max")


def _binary_rule(name: str, float_only: bool):
    def rule(a: TensorType, b: TensorType) -> TensorType:
        dtype = _same_dtype(name, a, b)
        if dtype == "bool" or (float_only and dtype not in ("f32", "f64")):
            raise IRError(f"{name}: needs {'float' if float_only else 'numeric'} inputs, got {_fmt(a)} and {_fmt(b)}")
        return TensorType(dtype, _broadcast(name, a, b))

    rule.__doc__ = f"Elementwise {name} with NumPy broadcasting."
    return rule


for _name in ELEMENTWISE_BINARY:
    defop(_name, inputs=("a", "b"), flops=_elementwise_flops)(_binary_rule(_name, _name in ("div", "pow")))


def _compare_rule(name: str):
    def rule(a: TensorType, b: TensorType) -> TensorType:
        _same_dtype(name, a, b)
        return TensorType("bool", _broadcast(name, a, b))

    rule.__doc__ = f"Elementwise comparison {name} -> bool."
    return rule


for _name in COMPARISONS:
    defop(_name, inputs=("a", "b"), differentiable=False, flops=_elementwise_flops)(_compare_rule(_name))


def _unary_rule(name: str, float_only: bool):
    def rule(x: TensorType) -> TensorType:
        if float_only:
            _require_float(name, x)
        elif x.dtype == "bool":
            raise IRError(f"{name}: needs a numeric input, got {_fmt(x)}")
        return x

    rule.__doc__ = f"Elementwise {name}."
    return rule


for _name in UNARY:
    defop(_name, inputs=("x",), flops=_elementwise_flops)(_unary_rule(_name, _name not in ("neg", "relu")))

ELEMENTWISE = ELEMENTWISE_BINARY + COMPARISONS + UNARY + ("where", "cast")


@defop("where", inputs=("cond", "a", "b"), flops=_elementwise_flops)
def where(cond: TensorType, a: TensorType, b: TensorType) -> TensorType:
    """cond ? a : b, broadcast."""
    if cond.dtype != "bool":
        raise IRError(f"where: condition must be bool, got {_fmt(cond)}", hint="compare first, e.g. x > 0")
    return TensorType(_same_dtype("where", a, b), _broadcast("where", cond, a, b))


@defop("cast", inputs=("x",), attrs={"dtype": Attr("dtype")}, flops=_elementwise_flops)
def cast(x: TensorType, dtype: str) -> TensorType:
    """Convert to another dtype."""
    return x.with_dtype(dtype)


# --------------------------------------------------------------------------- reductions


def _reduce_rule(name: str):
    def rule(x: TensorType, axes: tuple[int, ...], keepdims: bool) -> TensorType:
        if x.dtype == "bool":
            raise IRError(f"{name}: needs a numeric input, got {_fmt(x)}")
        if name == "mean":
            _require_float(name, x)
        shape = tuple(1 if i in axes else d for i, d in enumerate(x.shape) if keepdims or i not in axes)
        return x.with_shape(shape)

    rule.__doc__ = f"Reduce by {name} over axes (all when None), keeping them as 1 if keepdims."
    return rule


for _name in REDUCTIONS:
    defop(_name, inputs=("x",), attrs={"axes": Attr("axes", None), "keepdims": Attr("bool", False)}, flops=_reduce_flops)(
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
            raise ShapeError(f"reshape: cannot reshape [{','.join(map(str, src))}] into [{','.join(map(str, shape))}]")
        rest = syms - t_syms
        if rest and known // t_known != 1:
            raise ShapeError(
                f"reshape: -1 in [{','.join(map(str, shape))}] would mix {' * '.join(rest)} with {known // t_known}",
                hint="name the symbolic dim explicitly, e.g. reshape(x, ('B', -1))",
            )
        fill: Dim = next(iter(rest)) if rest else known // t_known
        if sum(rest.values()) > 1:
            raise ShapeError(f"reshape: -1 would stand for a product of symbols {dict(rest)}")
        shape = tuple(fill if d == -1 else d for d in shape)
    elif (known, syms) != symbolic_numel(shape):
        raise ShapeError(f"reshape: cannot reshape [{','.join(map(str, src))}] into [{','.join(map(str, shape))}]: sizes differ")
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
    got = _broadcast("broadcast_to", x, TensorType(x.dtype, shape))
    if tuple(got) != tuple(shape):
        raise ShapeError(f"broadcast_to: cannot broadcast {_fmt(x)} to [{','.join(map(str, shape))}]")
    return x.with_shape(shape)


@defop("expand_dims", inputs=("x",), attrs={"axis": Attr("axis")})
def expand_dims(x: TensorType, axis: int) -> TensorType:
    """Insert a dim of size 1 at axis."""
    shape = list(x.shape)
    shape.insert(axis, 1)
    return x.with_shape(tuple(shape))


@defop("squeeze", inputs=("x",), attrs={"axes": Attr("axes", None)})
def squeeze(x: TensorType, axes: tuple[int, ...]) -> TensorType:
    """Remove dims of size 1 (all of them when axes is None)."""
    for a in axes:
        if x.shape[a] != 1:
            raise ShapeError(f"squeeze: dim {a} of {_fmt(x)} is {x.shape[a]}, not 1")
    return x.with_shape(tuple(d for i, d in enumerate(x.shape) if i not in axes))


@defop("slice", inputs=("x",), attrs={"axis": Attr("axis"), "start": Attr("int"), "stop": Attr("int")})
def slice_(x: TensorType, axis: int, start: int, stop: int) -> TensorType:
    """x[..., start:stop, ...] along axis (a concrete dim; step 1)."""
    dim = x.shape[axis]
    if not isinstance(dim, int):
        raise ShapeError(f"slice: dim {axis} of {_fmt(x)} is symbolic; only concrete dims can be sliced")
    if not 0 <= start < stop <= dim:
        raise ShapeError(f"slice: [{start}:{stop}] is not a non-empty range inside dim {axis} of {_fmt(x)}")
    return x.with_shape(x.shape[:axis] + (stop - start,) + x.shape[axis + 1:])


@defop("pad", inputs=("x",), attrs={"axis": Attr("axis"), "before": Attr("int"), "after": Attr("int")})
def pad(x: TensorType, axis: int, before: int, after: int) -> TensorType:
    """Zeros before and after x along axis (a concrete dim): the gradient of slice."""
    dim = x.shape[axis]
    if not isinstance(dim, int) or before < 0 or after < 0:
        raise ShapeError(f"pad: cannot pad dim {axis} of {_fmt(x)} by ({before}, {after})")
    return x.with_shape(x.shape[:axis] + (before + dim + after,) + x.shape[axis + 1:])


# --------------------------------------------------------------------------- linear algebra


@defop("matmul", inputs=("a", "b"), flops=_matmul_flops)
def matmul(a: TensorType, b: TensorType) -> TensorType:
    """a[..., m, k] @ b[..., k, n] -> [..., m, n], batch dims broadcast."""
    dtype = _same_dtype("matmul", a, b)
    if dtype not in ("f32", "f64"):
        raise IRError(f"matmul: needs float inputs, got {_fmt(a)} @ {_fmt(b)}")
    if a.rank < 2 or b.rank < 2:
        raise ShapeError(f"matmul: needs inputs of rank >= 2, got {_fmt(a)} @ {_fmt(b)}", hint="use reshape or expand_dims")
    if a.shape[-1] != b.shape[-2]:
        raise ShapeError(
            f"matmul: inner dims differ: {_fmt(a)} @ {_fmt(b)} ({a.shape[-1]} != {b.shape[-2]})",
            hint="transpose one side (x.T) or check the layer sizes",
        )
    try:
        batch = broadcast_shapes(a.shape[:-2], b.shape[:-2])
    except ShapeError as e:
        raise ShapeError(f"matmul: batch dims of {_fmt(a)} @ {_fmt(b)}: {e.message}") from None
    return TensorType(dtype, tuple(batch) + (a.shape[-2], b.shape[-1]))


# --------------------------------------------------------------------------- indices


@defop("one_hot", inputs=("indices",), attrs={"depth": Attr("int"), "dtype": Attr("dtype", "f32")}, differentiable=False)
def one_hot(indices: TensorType, depth: int, dtype: str) -> TensorType:
    """indices[...] -> [..., depth] with 1 at each index."""
    if indices.dtype != "i64":
        raise IRError(f"one_hot: indices must be i64, got {_fmt(indices)}")
    if depth < 1:
        raise ShapeError(f"one_hot: depth must be positive, got {depth}")
    return TensorType(dtype, indices.shape + (depth,))


@defop("argmax", inputs=("x",), attrs={"axis": Attr("axis", -1), "keepdims": Attr("bool", False)}, differentiable=False,
       flops=_reduce_flops)
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


# The composite ops (softmax, log_softmax, layer_norm, softmax_cross_entropy) and their backward
# ops live in composite_ops.py; imported here, after the helpers they use.
from . import composite_ops  # noqa: F401

COMPOSITE = tuple(name for name, s in OPS.items() if s.composite)


# The fused ops of the `fuse` pass live in fused_ops.py; imported last, as they use the helpers above.
from .fused_ops import FUSED  # noqa: F401  (re-exported)
# The ops of data parallelism (allreduce and the flat buffer it reduces) live in parallel_ops.py.
from .parallel_ops import EFFECTFUL  # noqa: F401,E402  (re-exported)
