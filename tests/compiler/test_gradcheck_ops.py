"""Gradients against finite differences, in float64 to 1e-6: every differentiable op (a table
checked complete), random compositions (hypothesis), a one-layer Transformer's loss, and
Hessian-vector products through the composites."""

from __future__ import annotations

import zlib
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import tinyc as tc
from tests.gradcheck import check_grad
from tinyc.ir.ops import OPS

# --------------------------------------------------------------------------- the table

BATCHES = (1, 3)  # a symbolic "B" is fed with each of these


def normal(*shape):
    return ("normal", shape)


def positive(*shape):
    return ("positive", shape)


def away(*shape):
    """Values with |x| in [0.2, 2]: far from relu's kink at 0."""
    return ("away", shape)


def labels(classes, *shape):
    return ("labels", shape, classes)


@dataclass
class Case:
    name: str
    build: Callable
    specs: dict
    wrt: tuple = ()
    symbolic: bool = field(init=False)

    def __post_init__(self):
        self.symbolic = any("B" in spec[1] for spec in self.specs.values())
        self.wrt = self.wrt or tuple(k for k, spec in self.specs.items() if spec[0] != "labels")

    def arrays(self, batch: int) -> dict[str, np.ndarray]:
        rng = np.random.default_rng(zlib.crc32(self.name.encode()) + batch)
        out = {}
        for key, spec in self.specs.items():
            shape = tuple(batch if d == "B" else d for d in spec[1])
            if spec[0] == "normal":
                out[key] = rng.normal(size=shape)
            elif spec[0] == "positive":
                out[key] = rng.uniform(0.5, 2.0, size=shape)
            elif spec[0] == "away":
                out[key] = rng.uniform(0.2, 2.0, size=shape) * rng.choice([-1.0, 1.0], size=shape)
            else:
                out[key] = rng.integers(0, spec[2], size=shape)
        return out

    @property
    def shapes(self) -> dict:
        return {k: spec[1] for k, spec in self.specs.items()}


def apply(op, **attrs):
    """An op with no front-end function (the composites' backward ops)."""
    return lambda *ts: ts[0].builder.apply(op, list(ts), **attrs)


CASES = [
    Case("add", lambda a, b: a + b, dict(a=normal(2, 3), b=normal(2, 3))),
    Case("add_bcast_right", lambda a, b: a + b, dict(a=normal(2, 3), b=normal(3))),
    Case("add_bcast_both", lambda a, b: a + b, dict(a=normal(2, 1), b=normal(1, 3))),
    Case("add_batch", lambda a, b: a + b, dict(a=normal("B", 3), b=normal(1, 3))),
    Case("sub_bcast_left", lambda a, b: a - b, dict(a=normal(3, 1), b=normal(2, 1, 4))),
    Case("mul_bcast", lambda a, b: a * b, dict(a=normal(2, 3), b=normal(2, 1))),
    Case("mul_scalar", lambda a, b: a * b, dict(a=normal(), b=normal(2, 3))),
    Case("mul_same_value", lambda a: a * a, dict(a=normal(2, 3))),
    Case("div", lambda a, b: a / b, dict(a=normal(2, 3), b=positive(3))),
    Case("div_bcast_both", lambda a, b: a / b, dict(a=normal(1, 3), b=positive(2, 1))),
    Case("pow", lambda a, b: a**b, dict(a=positive(2, 3), b=normal(2, 3))),
    Case("pow_bcast", lambda a, b: a**b, dict(a=positive(3), b=normal(2, 1))),
    Case("pow_const_exponent", lambda a: a**3.0 + a**0.5, dict(a=positive(2, 3))),
    Case("maximum", lambda a, b: tc.maximum(a, b), dict(a=normal(2, 3), b=normal(3))),
    Case("neg", lambda a: -a, dict(a=normal(2, 3))),
    Case("sqrt", lambda a: tc.sqrt(a), dict(a=positive(2, 3))),
    Case("exp", lambda a: tc.exp(a), dict(a=normal(2, 3))),
    Case("log", lambda a: tc.log(a), dict(a=positive(2, 3))),
    Case("relu", lambda a: tc.relu(a), dict(a=away(2, 3))),
    Case("where", lambda c, a, b: tc.where(c > 0.0, a, b), dict(c=away(2, 3), a=normal(2, 3), b=normal(3)),
         wrt=("a", "b")),
    Case("where_batch", lambda c, a, b: tc.where(c > 0.0, a, b), dict(c=away("B", 1), a=normal(1, 3), b=normal())),
    Case("cast", lambda a, i: tc.cast(a, "f64") * tc.cast(i, "f64"), dict(a=normal(2, 3), i=labels(5, 2, 3))),
    Case("sum_axis", lambda a: tc.sum(a, axis=1), dict(a=normal(2, 3))),
    Case("sum_keepdims", lambda a: tc.sum(a, axis=(0, 2), keepdims=True), dict(a=normal(2, 3, 2))),
    Case("sum_all", lambda a: tc.sum(a) * tc.sum(a), dict(a=normal(2, 3))),
    Case("sum_batch", lambda a: tc.sum(a, axis=0), dict(a=normal("B", 3))),
    Case("mean_axis", lambda a: tc.mean(a, axis=-1), dict(a=normal(2, 3))),
    Case("mean_keepdims", lambda a: tc.mean(a, axis=0, keepdims=True), dict(a=normal(2, 3))),
    Case("mean_batch", lambda a: tc.mean(a, axis=0), dict(a=normal("B", 3))),
    Case("mean_batch_all", lambda a: tc.mean(a) * tc.mean(a), dict(a=normal("B", 2))),
    Case("max_axis", lambda a: tc.max(a, axis=1), dict(a=normal(3, 4))),
    Case("max_keepdims", lambda a: tc.max(a, axis=0, keepdims=True), dict(a=normal(3, 4))),
    Case("max_all", lambda a: tc.max(a), dict(a=normal(2, 3))),
    Case("max_batch", lambda a: tc.max(a, axis=-1), dict(a=normal("B", 4))),
    Case("reshape", lambda a: tc.reshape(a, (3, 4)), dict(a=normal(2, 6))),
    Case("reshape_batch", lambda a: tc.reshape(a, ("B", 2, -1)), dict(a=normal("B", 6))),
    Case("transpose", lambda a: tc.transpose(a, (1, 2, 0)), dict(a=normal(2, 3, 4))),
    Case("transpose_batch", lambda a: a.T, dict(a=normal("B", 3))),
    Case("broadcast_to", lambda a: tc.broadcast_to(a, (2, 3)), dict(a=normal(3))),
    Case("broadcast_to_batch", lambda a, z: tc.broadcast_to(a, ("B", 3)) * z, dict(a=normal(1, 3), z=normal("B", 3))),
    Case("expand_dims", lambda a: tc.expand_dims(a, 1), dict(a=normal(2, 3))),
    Case("squeeze", lambda a: tc.squeeze(a, 1), dict(a=normal(2, 1, 3))),
    Case("slice", lambda a: tc.slice(a, 1, 3, axis=1) * tc.slice(a, 0, 2, axis=1), dict(a=normal(2, 4))),
    Case("slice_batch", lambda a: tc.slice(a, -2, 4), dict(a=normal("B", 4))),
    Case("pad", lambda a: tc.pad(a, 1, 2, axis=0) * tc.pad(a, 3, 0, axis=0), dict(a=normal(2, 3))),
    Case("matmul", lambda a, b: a @ b, dict(a=normal(2, 3), b=normal(3, 4))),
    Case("matmul_batched", lambda a, b: a @ b, dict(a=normal(2, 2, 3), b=normal(2, 3, 4))),
    Case("matmul_bcast_rank", lambda a, b: a @ b, dict(a=normal(2, 2, 3), b=normal(3, 4))),
    Case("matmul_bcast_one", lambda a, b: a @ b, dict(a=normal(1, 2, 3), b=normal(3, 3, 2))),
    Case("matmul_batch", lambda a, b: a @ b, dict(a=normal("B", 2, 3), b=normal(3, 4))),
    Case("softmax", lambda a: tc.softmax(a), dict(a=normal(2, 5))),
    Case("softmax_axis0", lambda a: tc.softmax(a, axis=0), dict(a=normal(3, 4))),
    Case("log_softmax", lambda a: tc.log_softmax(a), dict(a=normal(2, 5))),
    Case("log_softmax_batch", lambda a: tc.log_softmax(a, axis=1), dict(a=normal("B", 4, 2))),
    Case("layer_norm", lambda a: tc.layer_norm(a), dict(a=normal(2, 5))),
    Case("layer_norm_axis0", lambda a: tc.layer_norm(a, axis=0, eps=1e-3), dict(a=normal(4, 3))),
    Case("sce_mean", lambda x, y: tc.softmax_cross_entropy(x, y), dict(x=normal(3, 5), y=labels(5, 3))),
    Case("sce_sum", lambda x, y: tc.softmax_cross_entropy(x, y, "sum"), dict(x=normal(2, 2, 4), y=labels(4, 2, 2))),
    Case("sce_none", lambda x, y: tc.softmax_cross_entropy(x, y, "none"), dict(x=normal(3, 4), y=labels(4, 3))),
    Case("sce_batch", lambda x, y: tc.softmax_cross_entropy(x, y), dict(x=normal("B", 4), y=labels(4, "B"))),
    Case("softmax_grad", apply("softmax_grad", axis=-1), dict(y=normal(2, 4), g=normal(2, 4))),
    Case("log_softmax_grad", apply("log_softmax_grad", axis=0), dict(y=normal(3, 2), g=normal(3, 2))),
    Case("layer_norm_grad", apply("layer_norm_grad", axis=-1, eps=1e-5), dict(x=normal(2, 4), g=normal(2, 4))),
    Case("sce_grad_mean", apply("softmax_cross_entropy_grad", reduction="mean"),
         dict(x=normal(3, 4), y=labels(4, 3), g=normal())),
    Case("sce_grad_none", apply("softmax_cross_entropy_grad", reduction="none"),
         dict(x=normal(3, 4), y=labels(4, 3), g=normal(3))),
    Case("sce_grad_batch", apply("softmax_cross_entropy_grad", reduction="mean"),
         dict(x=normal("B", 4), y=labels(4, "B"), g=normal())),
]
PARAMS = [pytest.param(c, b, id=f"{c.name}-B{b}" if c.symbolic else c.name)
          for c in CASES for b in (BATCHES if c.symbolic else BATCHES[:1])]


def traced_ops(case: Case) -> set[str]:
    with tc.graph() as b:
        case.build(*(tc.input(k, s, "i64" if case.specs[k][0] == "labels" else "f64") for k, s in case.shapes.items()))
    return {n.op for n in b.nodes}


def test_table_covers_every_differentiable_op():
    differentiable = {name for name, s in OPS.items() if s.differentiable}
    covered = set().union(*(traced_ops(c) for c in CASES))
    assert differentiable - covered == set()
    assert len({c.name for c in CASES}) == len(CASES)


@pytest.mark.parametrize("case,batch", PARAMS)
def test_op_gradient(case: Case, batch: int):
    check_grad(case.build, case.arrays(batch), list(case.wrt), shapes=case.shapes)


# --------------------------------------------------------------------------- random compositions

# bounded, smooth-almost-everywhere building blocks; every value stays broadcastable to [2,3]
UNARY = [
    lambda a: -a,
    lambda a: tc.exp(-(a * a)),
    lambda a: tc.log(a * a + 1.0),
    lambda a: tc.sqrt(a * a + 1.0),
    tc.relu,
    tc.softmax,
    tc.log_softmax,
    tc.layer_norm,
    lambda a: tc.sum(a, axis=-1, keepdims=True),
    lambda a: tc.mean(a, axis=0, keepdims=True) if a.ndim == 2 else tc.mean(a, keepdims=True),
    lambda a: tc.max(a, axis=-1, keepdims=True),
]
BINARY = [
    lambda a, b: a + b,
    lambda a, b: a - b,
    lambda a, b: a * b,
    lambda a, b: a / (b * b + 1.0),
    tc.maximum,
    lambda a, b: (a * a + 1.0) ** tc.exp(-(b * b)),
    lambda a, b: tc.where(a > b, a * b, b),
]
STEP = st.tuples(st.booleans(), st.integers(0, 100), st.integers(0, 100), st.integers(0, 100))


def compose(steps):
    def build(x, y, z):
        pool = [x, y, z]
        for binary, k, i, j in steps:
            if binary:
                pool.append(BINARY[k % len(BINARY)](pool[i % len(pool)], pool[j % len(pool)]))
            else:
                pool.append(UNARY[k % len(UNARY)](pool[i % len(pool)]))
        return pool[-1] if len(pool) > 3 else x * y * z

    return build


@settings(max_examples=100, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(STEP, min_size=1, max_size=6), st.integers(0, 2**16))
def test_random_compositions(steps, seed):
    rng = np.random.default_rng(seed)
    inputs = dict(x=rng.normal(size=(2, 3)), y=rng.normal(size=(3,)), z=rng.normal(size=(2, 1)))
    check_grad(compose(steps), inputs, ["x", "y", "z"])


# --------------------------------------------------------------------------- a Transformer's loss

D, T, H, C = 4, 3, 6, 3
TRANSFORMER_PARAMS = {"wq": (D, D), "wk": (D, D), "wv": (D, D), "wo": (D, D), "w1": (D, H), "b1": (H,),
                      "w2": (H, D), "b2": (D,), "wc": (D, C), "bc": (C,)}


def transformer_loss(x, labels_):
    """One pre-pooling encoder block: single-head attention, residual + layer_norm, ReLU FFN."""
    p = {name: tc.param(name, shape, tc.init.normal(0.5), dtype="f64") for name, shape in TRANSFORMER_PARAMS.items()}
    q, k, v = x @ p["wq"], x @ p["wk"], x @ p["wv"]
    att = tc.softmax(q @ tc.transpose(k, (0, 2, 1)) / float(np.sqrt(D)))
    x1 = tc.layer_norm(x + (att @ v) @ p["wo"])
    ffn = tc.relu(x1 @ p["w1"] + p["b1"]) @ p["w2"] + p["b2"]
    x2 = tc.layer_norm(x1 + ffn)
    logits = tc.mean(x2, axis=1) @ p["wc"] + p["bc"]
    return tc.softmax_cross_entropy(logits, labels_)


@pytest.mark.parametrize("batch", BATCHES)
def test_transformer_loss(batch):
    rng = np.random.default_rng(batch)
    params = {name: rng.normal(scale=0.5, size=shape) for name, shape in TRANSFORMER_PARAMS.items()}
    inputs = {"x": rng.normal(size=(batch, T, D)), "labels": rng.integers(0, C, size=(batch,))}
    check_grad(transformer_loss, inputs, ["x", *params], shapes={"x": ("B", T, D), "labels": ("B",)},
               params=params, max_coords=12)


# --------------------------------------------------------------------------- second order


def composite_loss(x):
    """A scalar that goes through all four composites."""
    w = tc.constant(np.linspace(-1.0, 1.0, 12).reshape(4, 3), "f64")
    lbl = tc.constant(np.array([0, 2, 1]), "i64")
    c = tc.constant(np.linspace(0.5, -0.5, 12).reshape(3, 4), "f64")
    logits = tc.layer_norm(x) @ w
    return (tc.softmax_cross_entropy(logits, lbl) + tc.sum(tc.softmax(x) * c)
            + tc.sum(tc.log_softmax(x, axis=0) * c * c))


def test_hessian_vector_product_via_check_grad():
    # d/dx (grad f(x) . v) = H v, checked against finite differences of grad f . v
    def grad_dot_v(x, v):
        return tc.sum(tc.grad(composite_loss(x), x) * v)

    rng = np.random.default_rng(7)
    check_grad(grad_dot_v, {"x": rng.normal(size=(3, 4)), "v": rng.normal(size=(3, 4))}, ["x", "v"])


def test_hessian_vector_product_vs_gradient_differences():
    rng = np.random.default_rng(8)
    x0, v0 = rng.normal(size=(3, 4)), rng.normal(size=(3, 4))
    with tc.graph():
        x = tc.input("x", (3, 4), "f64")
        v = tc.input("v", (3, 4), "f64")
        g = tc.grad(composite_loss(x), x)
        grad_fn = tc.function(g, [x])
        hv_fn = tc.function(tc.grad(tc.sum(g * v), x), [x, v])
    h = 1e-4
    # 5-point central difference of the gradient along v
    at = [grad_fn(x0 + k * h * v0) for k in (2, 1, -1, -2)]
    fd = (-at[0] + 8 * at[1] - 8 * at[2] + at[3]) / (12 * h)
    np.testing.assert_allclose(hv_fn(x0, v0), fd, rtol=1e-6, atol=1e-8)
