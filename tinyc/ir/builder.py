"""Tracing: a Builder records ops applied to Tensor handles into a Graph.

Model code never sees the Builder directly: `tc.input`, `tc.param` and every op function use
the current one (a fresh one per `tc.graph()` block, else a default). The compiler uses the same
Builder to append backward nodes to an existing graph (`Builder.from_graph`).
"""

from __future__ import annotations

import contextlib
import os
import sys
import zlib
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import numpy as np

from . import init as init_rules
from .errors import IRError, TinycError
from .graph import NAME_RE, Graph, Input, Node, Param
from .ops import canonical_attrs, infer_type
from .types import TensorType, dtype_of_numpy

_PKG_DIR = os.path.dirname(os.path.dirname(os.path.abspath(__file__))) + os.sep


def file_label(path: str) -> str:
    """A file's name as the IR and messages record it: its base name, as valid text. A name that
    is not UTF-8 (bytes decoded with surrogates by Python) shows U+FFFD where a byte was invalid,
    rather than making the program unencodable."""
    name = os.path.basename(path)
    return os.fsencode(name).decode("utf-8", "replace")


def user_location(depth: int = 1) -> str:
    """`file.py:LINE` of the innermost frame outside the tinyc package.

    The layers of `tinyc.models` are library code too (as Flax's are to JAX), so a node a
    `Linear` creates, and an error about it, names the user's line that called the layer.
    """
    frame = sys._getframe(depth)
    while frame is not None:
        path = frame.f_code.co_filename
        if not path.startswith(_PKG_DIR) and not path.startswith("<frozen"):
            return f"{file_label(path)}:{frame.f_lineno}"
        frame = frame.f_back
    return ""


class Tensor:
    """A handle to one value of a graph being traced. Supports `+ - * / ** @`, comparisons,
    `.T`, `.shape`, `.dtype`, `.reshape`, `.sum`, `.mean`, `.max`, `.transpose`."""

    __slots__ = ("builder", "name", "type")
    __array_priority__ = 1000  # so `ndarray + Tensor` defers to Tensor.__radd__

    def __init__(self, builder: Builder, name: str, type: TensorType) -> None:
        self.builder = builder
        self.name = name
        self.type = type

    @property
    def shape(self) -> tuple:
        return self.type.shape

    @property
    def dtype(self) -> str:
        return self.type.dtype

    @property
    def ndim(self) -> int:
        return self.type.rank

    def __repr__(self) -> str:
        return f"Tensor(%{self.name}: {self.type})"

    __hash__ = object.__hash__

    def __bool__(self) -> bool:
        raise IRError(
            "a traced Tensor has no truth value: its data exists only when the program runs",
            loc=user_location(2),
            hint="use tc.where(cond, a, b) instead of if/else on a Tensor",
        )

    # arithmetic; the reflected forms put a lifted scalar on the left
    def _bin(self, op, other, reflected=False):
        other = self.builder.lift(other, like=self)
        return self.builder.apply(op, [other, self] if reflected else [self, other])

    def __add__(self, o): return self._bin("add", o)
    def __radd__(self, o): return self._bin("add", o, True)
    def __sub__(self, o): return self._bin("sub", o)
    def __rsub__(self, o): return self._bin("sub", o, True)
    def __mul__(self, o): return self._bin("mul", o)
    def __rmul__(self, o): return self._bin("mul", o, True)
    def __truediv__(self, o): return self._bin("div", o)
    def __rtruediv__(self, o): return self._bin("div", o, True)
    def __pow__(self, o): return self._bin("pow", o)
    def __rpow__(self, o): return self._bin("pow", o, True)
    def __matmul__(self, o): return self._bin("matmul", o)
    def __rmatmul__(self, o): return self._bin("matmul", o, True)
    def __lt__(self, o): return self._bin("less", o)
    def __le__(self, o): return self._bin("less_equal", o)
    def __gt__(self, o): return self._bin("greater", o)
    def __ge__(self, o): return self._bin("greater_equal", o)
    def __eq__(self, o): return self._bin("equal", o)  # type: ignore[override]
    def __ne__(self, o): return self._bin("not_equal", o)  # type: ignore[override]

    def __neg__(self):
        return self.builder.apply("neg", [self])

    @property
    def T(self) -> Tensor:
        return self.builder.apply("transpose", [self], perm=None)

    def transpose(self, *axes) -> Tensor:
        perm = axes[0] if len(axes) == 1 and isinstance(axes[0], (tuple, list)) else (axes or None)
        return self.builder.apply("transpose", [self], perm=perm)

    def reshape(self, *shape) -> Tensor:
        shape = shape[0] if len(shape) == 1 and isinstance(shape[0], (tuple, list)) else shape
        return self.builder.apply("reshape", [self], shape=tuple(shape))

    def sum(self, axis=None, keepdims=False) -> Tensor:
        return self.builder.apply("sum", [self], axes=axis, keepdims=keepdims)

    def mean(self, axis=None, keepdims=False) -> Tensor:
        return self.builder.apply("mean", [self], axes=axis, keepdims=keepdims)

    def max(self, axis=None, keepdims=False) -> Tensor:
        return self.builder.apply("max", [self], axes=axis, keepdims=keepdims)


class Builder:
    """Records inputs, parameters, constants and nodes; `graph()` freezes them into a Graph."""

    def __init__(self, name: str = "main") -> None:
        self.name = name
        self.inputs: dict[str, Input] = {}
        self.params: dict[str, Param] = {}
        self.nodes: list[Node] = []
        self.constants: dict[str, np.ndarray] = {}
        self.types: dict[str, TensorType] = {}
        self._const_keys: dict[tuple, str] = {}
        self._next = 0
        self._scope: list[str] = []  # parameter name prefixes (tc.scope)
        self._node_scope = ""  # the layer scope recorded on new nodes (tc.name_scope)
        self._at: tuple[str, str, str] | None = None  # (loc, note, scope) forced by the compiler

    # ------------------------------------------------------------------ graph <-> builder
    @classmethod
    def from_graph(cls, graph: Graph) -> Builder:
        """A builder holding `graph`, to append nodes to it."""
        b = cls(graph.name)
        b.inputs = {i.name: i for i in graph.inputs}
        b.params = {p.name: p for p in graph.params}
        b.nodes = list(graph.nodes)
        b.constants = dict(graph.constants)
        b.types = dict(graph.types)
        b._next = graph.next_id()
        for key, arr in b.constants.items():
            b._const_keys[(arr.dtype.str, arr.shape, arr.tobytes())] = key
        return b

    def graph(self, outputs: Mapping[str, Tensor] | Sequence[Tensor] = (), updates=(), meta=None) -> Graph:
        """Freeze what was traced. `outputs` is a dict name -> Tensor or a list (named out0, ...)."""
        if not isinstance(outputs, Mapping):
            outputs = {f"out{i}": t for i, t in enumerate(outputs)}
        outs = tuple((name, self.own(t).name) for name, t in outputs.items())
        ups = tuple((name, self.own(t).name) for name, t in (updates.items() if isinstance(updates, Mapping) else updates))
        return Graph(
            name=self.name,
            inputs=tuple(self.inputs.values()),
            params=tuple(self.params.values()),
            nodes=tuple(self.nodes),
            outputs=outs,
            updates=ups,
            constants=dict(self.constants),
            meta=dict(meta or {}),
        )

    def tensor(self, name: str) -> Tensor:
        """A handle to an existing value of this builder."""
        return Tensor(self, name, self.types[name])

    def own(self, t: Any) -> Tensor:
        if not isinstance(t, Tensor):
            raise IRError(f"expected a Tensor, got {type(t).__name__}", loc=user_location(2))
        if t.builder is not self:
            raise IRError(
                f"{t!r} belongs to another graph",
                loc=user_location(2),
                hint="build every value of one program inside the same tc.graph() block",
            )
        return t

    # ------------------------------------------------------------------ sources
    def _check_new_name(self, name: str, what: str) -> None:
        if not isinstance(name, str) or not NAME_RE.match(name):
            raise IRError(f"{what} name {name!r} is not valid: use letters, digits, _ and .", loc=user_location(3))
        if name in self.types:
            raise IRError(f"{what} {name!r} is defined twice", loc=user_location(3),
                          hint="give each input and parameter its own name")

    def input(self, name: str, shape: Sequence, dtype: str = "f32", preprocess: Mapping | None = None) -> Tensor:
        self._check_new_name(name, "input")
        t = self._type(dtype, shape)
        rule = dict(preprocess or {})
        if rule and not t.is_float:
            raise IRError(f"input {name!r}: preprocessing gives floats, but the input is {t}", loc=user_location(2))
        self.inputs[name] = Input(name, t, rule)
        self.types[name] = t
        return Tensor(self, name, t)

    def param(self, name: str, shape: Sequence, init: Mapping | None = None, dtype: str = "f32", kind: str = "param") -> Tensor:
        name = ".".join(self._scope + [name])
        self._check_new_name(name, "parameter")
        t = self._type(dtype, shape)
        if t.symbols:
            raise IRError(f"parameter {name!r} has a symbolic dim: {t}", loc=user_location(2))
        init = self._init_rule(init)
        self.params[name] = Param(name, t, init, seed=zlib.crc32(name.encode()) & 0x7FFFFFFF, kind=kind,
                                  loc=self._loc()[0])
        self.types[name] = t
        return Tensor(self, name, t)

    @staticmethod
    def _init_rule(init: Any) -> dict:
        """The canonical init dict (floats, every argument) of what the user passed."""
        if init is None:
            return init_rules.zeros()
        if not isinstance(init, Mapping) or not isinstance(init.get("rule"), str):
            raise IRError(f"init must be a rule from tc.init, got {init!r}", loc=user_location(3),
                          hint="e.g. init=tc.init.normal(0.02)")
        try:
            return init_rules.make(**init)
        except TinycError as e:
            raise type(e)(e.message, loc=user_location(3), hint=e.hint) from None

    def constant(self, value: Any, dtype: str | None = None) -> Tensor:
        arr = np.asarray(value)
        # float data defaults to f32, as in every DL framework; pass dtype="f64" to keep doubles
        dtype = dtype or ("f32" if arr.dtype.kind == "f" else dtype_of_numpy(arr.dtype))
        if arr.ndim == 0:
            return self.apply("fill", [], shape=(), dtype=dtype, value=float(arr))
        arr = np.ascontiguousarray(arr.astype(TensorType(dtype, ()).np_dtype))
        key = (arr.dtype.str, arr.shape, arr.tobytes())
        if key not in self._const_keys:
            self._const_keys[key] = f"c{len(self.constants)}"
            self.constants[self._const_keys[key]] = arr
        return self.apply("constant", [], name=self._const_keys[key], dtype=dtype, shape=tuple(arr.shape))

    def lift(self, value: Any, like: Tensor) -> Tensor:
        """A Tensor for `value`: Tensors pass through, Python numbers and arrays become constants
        of `like`'s dtype family."""
        if isinstance(value, Tensor):
            return self.own(value)
        if isinstance(value, (bool, int, float, np.number, np.bool_)):
            if like.type.is_exact and isinstance(value, float) and not float(value).is_integer():
                raise IRError(f"cannot combine {like!r} with the float {value}", loc=user_location(3),
                              hint="cast the tensor first: tc.cast(x, 'f32')")
            return self.apply("fill", [], shape=(), dtype=like.dtype, value=float(value))
        if isinstance(value, (np.ndarray, list, tuple)):
            arr = np.asarray(value)
            dtype = like.dtype if arr.dtype.kind == "f" and like.type.is_float else dtype_of_numpy(arr.dtype)
            return self.constant(arr, dtype)
        raise IRError(f"cannot use a {type(value).__name__} as a tensor", loc=user_location(3))

    # ------------------------------------------------------------------ ops
    def apply(self, op: str, inputs: Sequence[Any], **attrs: Any) -> Tensor:
        """Append `op(inputs, attrs)`; errors name the user's line."""
        loc, note, scope = self._loc()
        try:
            ins = [self.own(t) for t in inputs]
            in_types = [t.type for t in ins]
            attrs = canonical_attrs(op, in_types, attrs)
            out_type = infer_type(op, in_types, attrs)
        except TinycError as e:
            # the loc stays exactly `file:line`; the layer goes first in the message
            message = f"[{scope}] {e.message}" if scope else e.message
            raise type(e)(message, loc=e.loc or loc, hint=e.hint) from None
        return self.add_node(op, [t.name for t in ins], attrs, out_type, loc, note, scope)

    def add_node(self, op: str, inputs: Sequence[str], attrs: dict, out_type: TensorType, loc: str, note: str = "",
                 scope: str = "") -> Tensor:
        """Append an already type-checked node."""
        name = str(self._next)
        self._next += 1
        self.nodes.append(Node(name, op, tuple(inputs), attrs, out_type, loc, note, scope))
        self.types[name] = out_type
        return Tensor(self, name, out_type)

    def _loc(self) -> tuple[str, str, str]:
        return self._at if self._at is not None else (user_location(3), "", self._node_scope)

    @contextlib.contextmanager
    def at(self, loc: str, note: str = "", scope: str = "") -> Iterator[None]:
        """Nodes created inside carry `loc`, `note` and `scope` (the compiler's provenance)."""
        saved, self._at = self._at, (loc, note, scope)
        try:
            yield
        finally:
            self._at = saved

    def name_scope(self, name: str) -> contextlib.AbstractContextManager[None]:
        """Nodes created inside record the layer scope `outer.name`. A layer's full hierarchical
        name continues the enclosing scope rather than repeating it: in `x.enc0`, `enc0.attn` gives
        `x.enc0.attn` (the longest tail of the outer scope that begins `name` is not doubled)."""
        if not isinstance(name, str) or (name and not NAME_RE.match(name)):
            raise IRError(f"scope name {name!r} is not valid: use letters, digits, _ and .", loc=user_location(2))
        outer = self._node_scope.split(".") if self._node_scope else []
        parts = name.split(".") if name else []
        for i in range(len(outer)):
            tail = outer[i:]
            if parts[:len(tail)] == tail:
                outer = outer[:i]
                break
        return self._in_scope(".".join(outer + parts))

    @contextlib.contextmanager
    def _in_scope(self, scope: str) -> Iterator[None]:
        saved, self._node_scope = self._node_scope, scope
        try:
            yield
        finally:
            self._node_scope = saved

    @contextlib.contextmanager
    def scope(self, prefix: str) -> Iterator[None]:
        """Parameters created inside are named `prefix.name` (scopes nest); nodes created inside
        record the same prefix as their layer scope, so both name the same part of the model."""
        self._scope.append(prefix)
        try:
            with self._in_scope(".".join(filter(None, (self._node_scope, prefix)))):
                yield
        finally:
            self._scope.pop()

    def _type(self, dtype: str, shape: Sequence) -> TensorType:
        try:
            if isinstance(shape, (int, str)):
                shape = (shape,)
            return TensorType(dtype, tuple(shape))
        except TinycError as e:
            raise type(e)(e.message, loc=user_location(4)) from None


_STACK: list[Builder] = [Builder("main")]


def current() -> Builder:
    """The builder that `tc.*` functions record into."""
    return _STACK[-1]


@contextlib.contextmanager
def new_graph(name: str = "main") -> Iterator[Builder]:
    """Trace into a fresh builder for the duration of the block."""
    b = Builder(name)
    _STACK.append(b)
    try:
        yield b
    finally:
        _STACK.remove(b)


def reset_default() -> None:
    """Forget everything traced into the default builder (for notebooks and tests)."""
    _STACK[0] = Builder("main")
