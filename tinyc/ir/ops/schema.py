"""The op registry's base: `defop`, `Attr`, `OpSchema`, the table `OPS`, attribute checking
(`canonical_attrs`), type inference (`infer_type`) and the helpers every op family's type rules
and FLOP estimates share. The families (`primitive`, `composite`, `fused`, `parallel`) import
this module only; `tinyc.ir.ops` assembles them.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from ..errors import IRError, ShapeError
from ..types import DTYPES, TensorType, broadcast_shapes

OPSET_VERSION = 1
_REQUIRED = object()


@dataclass(frozen=True)
class Attr:
    """One attribute of an op: its kind (how it is checked and normalised) and default.

    `new_axis`: an axis of the result, which has one dim more than the input (expand_dims).
    `when_none`: for axes or perm left None, what None stands for given the input types
    (default: every dim for axes, the dims reversed for perm).
    """

    kind: str  # int | float | str | bool | dtype | axis | axes | perm | shape
    default: Any = _REQUIRED
    new_axis: bool = False
    when_none: Callable[..., tuple[int, ...]] | None = None

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
    family: str = ""  # the module of tinyc.ir.ops that declares it: primitive, composite, fused, parallel


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
            family=rule.__module__.rpartition(".")[2],
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
        if value is None and spec.when_none is not None:
            value = spec.when_none(*in_types)
        if spec.kind == "axis":
            value = _normalize_axis(op, value, rank + spec.new_axis)
        elif spec.kind == "axes":
            if value is None:
                value = tuple(range(rank))
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


def elementwise_flops(ins, out, attrs):
    return math.prod(out)


def reduce_flops(ins, out, attrs):
    return math.prod(ins[0])


def scaled_flops(k):
    return lambda ins, out, attrs: k * math.prod(ins[0])


def matmul_flops(ins, out, attrs):
    return 2 * math.prod(out) * ins[0][-1]


# --------------------------------------------------------------------------- helpers for rules


def same_dtype(op: str, *types: TensorType) -> str:
    dtypes = {t.dtype for t in types}
    if len(dtypes) > 1:
        raise IRError(
            f"{op}: dtypes differ: {' and '.join(map(str, types))}",
            hint="convert one side with tc.cast(x, dtype)",
        )
    return types[0].dtype


def require_float(op: str, t: TensorType) -> None:
    if not t.is_float:
        raise IRError(f"{op}: needs a float input, got {t}", hint="convert it with tc.cast(x, 'f32')")


def broadcast(op: str, *types: TensorType):
    try:
        return broadcast_shapes(*(t.shape for t in types))
    except ShapeError as e:
        raise ShapeError(f"{op}: {e.message}") from None
