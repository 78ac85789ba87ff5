"""Dense layers built from tinyc ops: Linear, LayerNorm, FeedForward.

A layer creates its parameters when constructed, named `<name>.<param>` (so a model's
parameters read `enc0.ff.fc1.w`), and is then called on Tensors to trace its ops, which record
the layer's name as their scope (`enc0.ff.fc1`, see `Layer`).
"""

from __future__ import annotations

import functools
import math

import tinyc as tc
from tinyc.ir.builder import user_location
from tinyc.ir.errors import IRError


def join(prefix: str, name: str) -> str:
    """Hierarchical name `prefix.name`; an empty prefix names a top-level parameter."""
    return f"{prefix}.{name}" if prefix else name


class Layer:
    """Base of the layers: `__call__` runs inside `tc.name_scope(self.name)`, so every node a layer
    makes records its full hierarchical name (nested layers already carry their parent's prefix)."""

    name = ""

    def __init_subclass__(cls, **kwargs) -> None:
        super().__init_subclass__(**kwargs)
        call = cls.__dict__.get("__call__")
        if call is not None:
            @functools.wraps(call)
            def scoped(self, *args, **kw):
                with tc.name_scope(self.name):
                    return call(self, *args, **kw)
            cls.__call__ = scoped


class Linear(Layer):
    """y = x[..., d_in] @ w[d_in, d_out] + b, initialised like torch.nn.Linear."""

    def __init__(self, name: str, d_in: int, d_out: int, bias: bool = True, init: dict | None = None,
                 dtype: str = "f32") -> None:
        self.name = name
        self.d_in, self.d_out = d_in, d_out
        self.w = tc.param(join(name, "w"), (d_in, d_out), init or tc.init.lecun_uniform(), dtype=dtype)
        bound = 1.0 / math.sqrt(d_in)
        self.b = tc.param(join(name, "b"), (d_out,), tc.init.uniform(-bound, bound), dtype=dtype) if bias else None

    def __call__(self, x: tc.Tensor) -> tc.Tensor:
        y = x @ self.w
        return y + self.b if self.b is not None else y


class LayerNorm(Layer):
    """layer_norm(x) * gain + bias over the last dim (gain starts at 1, bias at 0)."""

    def __init__(self, name: str, dim: int, eps: float = 1e-5, dtype: str = "f32") -> None:
        self.name = name
        self.eps = eps
        self.gain = tc.param(join(name, "gain"), (dim,), tc.init.ones(), dtype=dtype)
        self.bias = tc.param(join(name, "bias"), (dim,), tc.init.zeros(), dtype=dtype)

    def __call__(self, x: tc.Tensor) -> tc.Tensor:
        return tc.layer_norm(x, axis=-1, eps=self.eps) * self.gain + self.bias


class FeedForward(Layer):
    """Linear(d, d_hidden) -> ReLU -> Linear(d_hidden, d)."""

    def __init__(self, name: str, d: int, d_hidden: int, dtype: str = "f32") -> None:
        self.name = name
        self.fc1 = Linear(join(name, "fc1"), d, d_hidden, dtype=dtype)
        self.fc2 = Linear(join(name, "fc2"), d_hidden, d, dtype=dtype)

    def __call__(self, x: tc.Tensor) -> tc.Tensor:
        return self.fc2(tc.relu(self.fc1(x)))


def check_choice(what: str, value: str, choices: tuple[str, ...]) -> str:
    """Refuse a configuration string that is not one of `choices`, naming the user's line."""
    if value not in choices:
        raise IRError(f"{what} must be one of {', '.join(map(repr, choices))}, got {value!r}", loc=user_location(3))
    return value
