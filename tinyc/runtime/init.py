"""Parameter initialisers, one per rule of `tinyc.ir.init.RULES`, keyed by rule name.

An initialiser is `fn(shape, rng, dtype, **args) -> ndarray` of the parameter's dtype, drawn and
scaled in that dtype (a float32 parameter never has a float64 copy: half the peak memory). Every parameter draws from its own stream
`np.random.default_rng([seed, param.seed])`, so adding a parameter never changes the others.
Fans follow the `x @ w` convention: for a weight [..., fan_in, fan_out], fan_in = shape[-2].
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np

from tinyc.ir.errors import IRError
from tinyc.ir.graph import Graph, Param
from tinyc.ir.types import DTYPES, FLOAT_DTYPES

Initializer = Callable[..., np.ndarray]


def fans(shape: tuple[int, ...]) -> tuple[int, int]:
    """(fan_in, fan_out): shape[-2], shape[-1] for rank >= 2; shape[0] twice for rank 1; 1 for scalars."""
    if len(shape) >= 2:
        fan_in, fan_out = shape[-2], shape[-1]
    elif len(shape) == 1:
        fan_in = fan_out = shape[0]
    else:
        fan_in = fan_out = 1
    return max(fan_in, 1), max(fan_out, 1)  # an empty dim must not divide by zero


def _uniform(shape, rng: np.random.Generator, dtype: np.dtype, low: float, high: float) -> np.ndarray:
    x = _draw(rng.random, shape, dtype)
    x *= high - low  # in place, in the parameter's dtype: no float64 copy of a large parameter
    x += low
    return x


def _normal(shape, rng: np.random.Generator, dtype: np.dtype, mean: float, std: float) -> np.ndarray:
    x = _draw(rng.standard_normal, shape, dtype)
    x *= std
    x += mean
    return x


def _draw(sample, shape, dtype: np.dtype) -> np.ndarray:
    """Draw straight in a float parameter's dtype; other dtypes (rare, small) via float64."""
    if dtype in [DTYPES[d] for d in FLOAT_DTYPES]:
        return sample(shape, dtype=dtype)
    return sample(shape).astype(dtype)


def xavier_uniform(shape, rng, dtype, gain: float) -> np.ndarray:
    # Glorot: var = 2 / (fan_in + fan_out); uniform(-a, a) has var a^2 / 3
    fan_in, fan_out = fans(shape)
    bound = gain * math.sqrt(6.0 / (fan_in + fan_out))
    return _uniform(shape, rng, dtype, -bound, bound)


def xavier_normal(shape, rng, dtype, gain: float) -> np.ndarray:
    fan_in, fan_out = fans(shape)
    return _normal(shape, rng, dtype, 0.0, gain * math.sqrt(2.0 / (fan_in + fan_out)))


def kaiming_uniform(shape, rng, dtype, gain: float) -> np.ndarray:
    # He: var = gain^2 / fan_in (pass gain=sqrt(2) for ReLU layers)
    bound = gain * math.sqrt(3.0 / fans(shape)[0])
    return _uniform(shape, rng, dtype, -bound, bound)


def kaiming_normal(shape, rng, dtype, gain: float) -> np.ndarray:
    return _normal(shape, rng, dtype, 0.0, gain / math.sqrt(fans(shape)[0]))


def lecun_uniform(shape, rng, dtype) -> np.ndarray:
    # PyTorch's nn.Linear default: uniform(-1/sqrt(fan_in), 1/sqrt(fan_in))
    bound = 1.0 / math.sqrt(fans(shape)[0])
    return _uniform(shape, rng, dtype, -bound, bound)


INITIALIZERS: dict[str, Initializer] = {
    "zeros": lambda shape, rng, dtype: np.zeros(shape, dtype),
    "ones": lambda shape, rng, dtype: np.ones(shape, dtype),
    "constant": lambda shape, rng, dtype, value: np.full(shape, value, dtype),
    "normal": lambda shape, rng, dtype, std, mean: _normal(shape, rng, dtype, mean, std),
    "uniform": lambda shape, rng, dtype, low, high: _uniform(shape, rng, dtype, low, high),
    "xavier_uniform": xavier_uniform,
    "xavier_normal": xavier_normal,
    "kaiming_uniform": kaiming_uniform,
    "kaiming_normal": kaiming_normal,
    "lecun_uniform": lecun_uniform,
}


def init_param(param: Param, seed: int = 0) -> np.ndarray:
    """The initial value of one parameter (or state slot), of its dtype and shape."""
    args = dict(param.init)
    rule = args.pop("rule", None)
    if rule not in INITIALIZERS:
        raise IRError(
            f"parameter {param.name!r}: unknown init rule {rule!r}; known: {', '.join(INITIALIZERS)}", loc=param.loc
        )
    shape = tuple(param.type.shape)
    if any(not isinstance(d, int) for d in shape):
        raise IRError(f"parameter {param.name!r} has a symbolic shape {param.type}", loc=param.loc)
    rng = np.random.default_rng([seed, param.seed])
    dtype = param.type.np_dtype
    return np.asarray(INITIALIZERS[rule](shape, rng, dtype, **args), dtype=dtype)


def init_params(graph: Graph, seed: int = 0) -> dict[str, np.ndarray]:
    """Initial values of every parameter and optimizer-state slot of `graph`, by name."""
    return {p.name: init_param(p, seed) for p in graph.params}
