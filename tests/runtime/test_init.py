"""Parameter initialisers: shape, dtype, statistics, determinism, and the rule table complete."""

from __future__ import annotations

import inspect
import math

import numpy as np
import pytest

import tinyc as tc
from tinyc.ir import init as rules
from tinyc.ir.graph import Param
from tinyc.ir.types import TensorType
from tinyc.runtime.init import INITIALIZERS, fans, init_param, init_params

SHAPE = (400, 250)  # fan_in 400, fan_out 250: 100k samples, statistics good to ~1%
FAN_IN, FAN_OUT = SHAPE


def param(init: dict, shape=SHAPE, dtype="f32", seed=7, name="w", kind="param") -> Param:
    return Param(name, TensorType(dtype, shape), init, seed=seed, kind=kind)


# rule args -> (expected mean, expected std, bound on |x - mean| or None); worked out by hand
STATS = {
    "zeros": ({}, 0.0, 0.0, 0.0),
    "ones": ({}, 1.0, 0.0, 0.0),
    "constant": ({"value": 2.5}, 2.5, 0.0, 0.0),
    "normal": ({"std": 0.02, "mean": 1.0}, 1.0, 0.02, None),
    "uniform": ({"low": -3.0, "high": 1.0}, -1.0, 4 / math.sqrt(12), 2.0),
    "xavier_uniform": (
        {"gain": 2.0},
        0.0,
        2 * math.sqrt(2 / (FAN_IN + FAN_OUT)),
        2 * math.sqrt(6 / (FAN_IN + FAN_OUT)),
    ),
    "xavier_normal": ({"gain": 1.0}, 0.0, math.sqrt(2 / (FAN_IN + FAN_OUT)), None),
    "kaiming_uniform": ({"gain": math.sqrt(2)}, 0.0, math.sqrt(2 / FAN_IN), math.sqrt(6 / FAN_IN)),
    "kaiming_normal": ({"gain": math.sqrt(2)}, 0.0, math.sqrt(2 / FAN_IN), None),
    "lecun_uniform": ({}, 0.0, 1 / math.sqrt(3 * FAN_IN), 1 / math.sqrt(FAN_IN)),
}


def test_tables_complete():
    assert set(INITIALIZERS) == set(rules.RULES) == set(STATS)


@pytest.mark.parametrize("rule", sorted(rules.RULES))
def test_initializer_takes_exactly_the_rule_args(rule):
    sig = inspect.signature(INITIALIZERS[rule])
    assert list(sig.parameters)[:3] == ["shape", "rng", "dtype"]
    assert set(list(sig.parameters)[3:]) == set(rules.RULES[rule])


@pytest.mark.parametrize("rule", sorted(STATS))
@pytest.mark.parametrize("dtype", ["f32", "f64"])
def test_statistics_shape_dtype(rule, dtype):
    args, mean, std, bound = STATS[rule]
    w = init_param(param(rules.make(rule, **args), dtype=dtype))
    assert w.shape == SHAPE and w.dtype == TensorType(dtype, ()).np_dtype
    assert abs(w.mean() - mean) <= 6 * std / math.sqrt(w.size) + 1e-6  # 6 standard errors of the mean
    np.testing.assert_allclose(w.std(), std, rtol=0.02, atol=1e-12)
    if bound is not None:
        assert np.abs(w - mean).max() <= bound * (1 + 1e-6)
        if bound > 0:  # a uniform fills its range
            assert np.abs(w - mean).max() >= 0.99 * bound


def test_rank1_fans_and_scalars():
    assert fans((7,)) == (7, 7)
    assert fans(()) == (1, 1)
    assert fans((3, 5, 4)) == (5, 4)
    b = init_param(param(rules.lecun_uniform(), shape=(10_000,)))
    assert np.abs(b).max() <= 1 / math.sqrt(10_000)
    assert init_param(param(rules.xavier_normal(), shape=())).shape == ()


def test_deterministic_per_seed_and_per_param():
    p = param(rules.normal(0.1))
    a, b = init_param(p, seed=0), init_param(p, seed=0)
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, init_param(p, seed=1))
    assert not np.array_equal(a, init_param(param(rules.normal(0.1), seed=8), seed=0))


@pytest.mark.parametrize("rule", sorted(STATS))
def test_a_float32_parameter_is_never_held_in_float64(rule):
    """Drawn and scaled in float32: the peak is one float32 array (plus NumPy's small buffers),
    never the float64 copy (twice the size) that drawing in float64 and casting would need."""
    import tracemalloc

    p = param(rules.make(rule, **STATS[rule][0]), shape=(512, 512), dtype="f32")
    tracemalloc.start()
    w = init_param(p)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert w.dtype == np.float32 and peak < 1.25 * w.nbytes, (peak, w.nbytes)


def test_integer_params_get_their_dtype():
    assert init_param(param(rules.zeros(), shape=(3,), dtype="i64")).dtype == np.int64


def test_init_params_covers_params_and_state():
    with tc.graph() as b:
        x = tc.input("x", ("B", 3))
        w = tc.param("w", (3, 2), init=tc.init.xavier_uniform())
        with tc.scope("layer"):
            tc.param("bias", (2,), init=tc.init.ones())
        b.param("w.m", (3, 2), init=tc.init.zeros(), kind="state")
        g = b.graph([x @ w])
    values = init_params(g, seed=3)
    assert set(values) == {"w", "layer.bias", "w.m"}
    np.testing.assert_array_equal(values["layer.bias"], np.ones(2, np.float32))
    np.testing.assert_array_equal(values["w"], init_param(g.param_map["w"], seed=3))
    assert values["w.m"].shape == (3, 2) and not values["w.m"].any()


def test_unknown_rule_is_an_ir_error():
    with pytest.raises(tc.IRError, match="unknown init rule 'bogus'"):
        init_param(param({"rule": "bogus"}))
