"""The `fuse` pass and its fused ops: kernels against plain NumPy, rewrites preserve values."""

from __future__ import annotations

from collections import Counter

import numpy as np
import pytest

import tinyc as tc
from tests.compiler.test_passes import assert_same_values
from tinyc.compiler.passes import load_all
from tinyc.ir.builder import new_graph
from tinyc.ir.errors import ShapeError
from tinyc.ir.graph import Graph
from tinyc.ir.ops import FUSED, OPS, canonical_attrs, infer_type
from tinyc.ir.train import optimizer_spec
from tinyc.ir.types import TensorType
from tinyc.ir.verify import verify
from tinyc.models import EncoderLayer, Linear, TransformerClassifier, softmax_cross_entropy
from tinyc.runtime.fused_kernels import FUSED_KERNELS
from tinyc.runtime.kernels import KERNELS

PASSES = load_all()
BEFORE_FUSE = ("verify", "autodiff", "optimizer", "simplify", "fold", "cse", "dce")
RNG = np.random.default_rng(0)


def randn(*shape: int) -> np.ndarray:
    return RNG.standard_normal(shape).astype(np.float32)


def swap(x: np.ndarray, flag: bool) -> np.ndarray:
    return np.swapaxes(x, -1, -2) if flag else x


# --------------------------------------------------------------------------- the registry


def test_fused_ops_are_declared_non_differentiable_with_kernels():
    assert set(FUSED_KERNELS) == set(FUSED)
    for op in FUSED:
        assert not OPS[op].differentiable and OPS[op].doc, op
        assert KERNELS[op] is FUSED_KERNELS[op]
    assert set(KERNELS) == set(OPS)


# --------------------------------------------------------------------------- kernels against NumPy

MATMUL_SHAPES = [((5, 3), (3, 4)), ((2, 5, 3), (3, 4)), ((2, 3, 5, 3), (3, 4)), ((2, 5, 3), (2, 3, 4)),
                 ((2, 1, 5, 3), (4, 3, 4))]


@pytest.mark.parametrize("ta", [False, True])
@pytest.mark.parametrize("tb", [False, True])
@pytest.mark.parametrize("shapes", MATMUL_SHAPES)
def test_matmul_t_matmul_bias_kernels(shapes, ta, tb):
    a, b = swap(randn(*shapes[0]), ta).copy(), swap(randn(*shapes[1]), tb).copy()
    want = np.matmul(swap(a, ta), swap(b, tb))
    bias = randn(want.shape[-1])
    np.testing.assert_allclose(KERNELS["matmul_t"](a, b, ta=ta, tb=tb, alpha=0.5), 0.5 * want, rtol=1e-5, atol=1e-5)
    out = np.full(want.shape, np.nan, np.float32)
    res = KERNELS["matmul_bias"](a, b, bias, ta=ta, tb=tb, out=out)
    assert res is out
    np.testing.assert_allclose(out, want + bias, rtol=1e-5, atol=1e-5)
    t = infer_type("matmul_t", [TensorType("f32", a.shape), TensorType("f32", b.shape)], {"ta": ta, "tb": tb, "alpha": 1.0})
    assert t.shape == want.shape


@pytest.mark.parametrize("ta", [False, True])
@pytest.mark.parametrize("tb", [False, True])
def test_matmul_t_sum_kernel(ta, tb):
    a, b = randn(3, 2, 5, 4), randn(3, 2, 4, 6)
    want = np.matmul(a, b).sum(axis=(0, 1))
    a_in, b_in = swap(a, ta).copy(), swap(b, tb).copy()
    out = np.empty((5, 6), np.float32)
    assert KERNELS["matmul_t_sum"](a_in, b_in, ta=ta, tb=tb, out=out) is out
    np.testing.assert_allclose(out, want, rtol=1e-5, atol=1e-5)


def test_elementwise_fused_kernels():
    x, g = randn(4, 5, 6), randn(4, 5, 6)
    x[0, 0, :2] = 0.0  # relu's derivative at 0 is 0, as in where(x > 0, g, 0)
    np.testing.assert_array_equal(KERNELS["relu_grad"](x, g), np.where(x > 0, g, 0))
    s, t = randn(6), randn(5, 6)
    np.testing.assert_allclose(KERNELS["affine"](x, s, t), x * s + t, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("square", [False, True])
def test_axpby_kernel_rounds_as_the_unfused_ops(square):
    x, y = randn(7, 3), randn(7, 3)
    a, b = np.float32(0.9), np.float32(0.1)
    want = a * x + b * (y * y if square else y)
    np.testing.assert_array_equal(KERNELS["axpby"](x, y, a=0.9, b=0.1, square=square), want)


def test_adam_param_kernel():
    p, m, v = randn(5, 4), randn(5, 4), np.abs(randn(5, 4))
    s, c = np.array(0.01, np.float32), np.array(0.3, np.float32)
    want = p - s * (m / (np.sqrt(v) / c + np.float32(1e-8)))
    np.testing.assert_array_equal(KERNELS["adam_param"](p, m, v, s, c, eps=1e-8), want)


def naive_layer_norm_grad(x, gy, axis, eps):
    mu = x.mean(axis=axis, keepdims=True)
    inv = 1 / np.sqrt(((x - mu) ** 2).mean(axis=axis, keepdims=True) + eps)
    xhat = (x - mu) * inv
    return (gy - gy.mean(axis=axis, keepdims=True) - xhat * (gy * xhat).mean(axis=axis, keepdims=True)) * inv


@pytest.mark.parametrize("axis", [2, 1])
def test_layer_norm_grad_scaled_kernel(axis):
    x, gy = randn(3, 4, 8).astype(np.float64), randn(3, 4, 8).astype(np.float64)
    scale = randn(8).astype(np.float64) if axis == 2 else randn(4, 1).astype(np.float64)
    want = naive_layer_norm_grad(x, gy * scale, axis, 1e-5)
    got = KERNELS["layer_norm_grad_scaled"](x, gy, scale, axis=axis, eps=1e-5, out=np.empty_like(x))
    np.testing.assert_allclose(got, want, rtol=1e-10, atol=1e-12)


def test_fused_type_rules_refuse_mismatches():
    f32 = lambda *s: TensorType("f32", s)
    with pytest.raises(ShapeError):
        infer_type("matmul_t", [f32(2, 3), f32(2, 4)], canonical_attrs("matmul_t", [f32(2, 3), f32(2, 4)], {}))
    assert infer_type("matmul_t", [f32(2, 3), f32(2, 4)], {"ta": True, "tb": False, "alpha": 1.0}).shape == (3, 4)
    with pytest.raises(ShapeError):
        infer_type("matmul_t_sum", [f32(2, 3, 4), f32(3, 4, 5)], {"ta": False, "tb": False})
    with pytest.raises(ShapeError):
        infer_type("matmul_bias", [f32(2, 3), f32(3, 4), f32(3)], {"ta": False, "tb": False})
    with pytest.raises(ShapeError):
        infer_type("relu_grad", [f32(2, 3), f32(3)], {})


# --------------------------------------------------------------------------- the pass


def fuse(graph: Graph) -> Graph:
    out = PASSES["fuse"].fn(graph)
    verify(out, where="after fuse")
    return out


def assert_same(before: Graph, after: Graph, rtol: float = 1e-4, atol: float = 1e-5) -> None:
    # labels (i64) index classes, so they must be non-negative
    assert_same_values(before, after, seed=1, rtol=rtol, atol=atol, ints=(0, 10))


def small(fn) -> Graph:
    with new_graph("t") as b:
        outputs = fn()
        return b.graph(outputs)


PATTERNS = {
    # name -> (graph builder, fused op it must produce)
    "transposed": (lambda: {"y": tc.matmul(tc.input("a", ("B", 4, 3)).transpose((0, 2, 1)),
                                           tc.input("b", ("B", 5, 4)).transpose((0, 2, 1)))}, "matmul_t"),
    "flattened": (lambda: {"y": tc.input("x", ("B", 4, 3)) @ tc.param("w", (3, 5))}, "matmul_t"),
    "scaled": (lambda: {"y": (tc.input("q", ("B", 4, 3)) @ tc.input("k", ("B", 3, 4))) * 0.25}, "matmul_t"),
    "bias": (lambda: {"y": tc.input("x", ("B", 4, 3)) @ tc.param("w", (3, 5)) + tc.param("b", (5,))}, "matmul_bias"),
    "weight_grad": (lambda: {"g": tc.matmul(tc.input("x", ("B", 4, 3)).transpose((0, 2, 1)),
                                            tc.input("gy", ("B", 4, 5))).sum(axis=0)}, "matmul_t_sum"),
    "weight_grad_keepdims": (lambda: {"g": tc.squeeze(tc.matmul(tc.input("x", ("B", 4, 3)).transpose((0, 2, 1)),
                                                                tc.input("gy", ("B", 4, 5))).sum(axis=0, keepdims=True),
                                                      0)}, "matmul_t_sum"),
    "affine": (lambda: {"y": tc.input("x", ("B", 6)) * tc.param("g", (6,), tc.init.normal(1.0))
                        + tc.param("b", (6,), tc.init.normal(1.0))}, "affine"),
    "layer_norm_affine": (lambda: {"y": tc.layer_norm(tc.input("x", ("B", 6))) * tc.param("g", (6,), tc.init.normal(1.0))
                                   + tc.param("b", (6,), tc.init.normal(1.0))}, "layer_norm_affine"),
}


@pytest.mark.parametrize("name", sorted(PATTERNS))
def test_each_rewrite_fires_and_preserves_values(name):
    build, op = PATTERNS[name]
    before = small(build)
    after = fuse(before)
    assert op in Counter(n.op for n in after.nodes), name
    assert len(after.nodes) < len(before.nodes) or name in ("flattened",)
    assert_same(before, after)
    assert fuse(after) == after  # idempotent


def test_shared_intermediate_is_not_fused_twice():
    def build():
        m = tc.input("x", ("B", 4, 3)) @ tc.param("w", (3, 5))
        return {"y": m + tc.param("b", (5,)), "m": m}

    before = small(build)
    after = fuse(before)
    ops = Counter(n.op for n in after.nodes)
    assert ops["matmul_bias"] == 0 and ops["matmul_t"] == 1  # m is needed anyway: add stays an add
    assert_same(before, after)


def training_graph(kind: str, opt) -> Graph:
    """One training step in f64 (Adam's m / sqrt(v) would amplify f32 rounding of tiny gradients)."""
    with new_graph(kind) as b:
        image, label = tc.input("image", ("B", 8, 8), dtype="f64"), tc.input("label", ("B",), dtype="i64")
        if kind == "vit":
            logits = TransformerClassifier(image=(8, 8), tokens="patches", patch=4, d_model=8, heads=2, layers=1,
                                           d_ff=16, dtype="f64")(image)
        else:  # the seed model's shape: post-norm, no residuals, one head
            x = Linear("embed", 8, 8, dtype="f64")(image)
            x = EncoderLayer("enc0", 8, heads=1, d_ff=8, residual=False, norm="post", dtype="f64")(x)
            logits = Linear("head", 8, 10, dtype="f64")(x.mean(axis=1))
        loss = softmax_cross_entropy(logits, label)
        graph = b.graph({"loss": loss, "logits": logits},
                        meta={"loss": "loss", "optimizer": optimizer_spec(opt), "train": {"batch_size": 3}})
    for name in BEFORE_FUSE:
        graph = PASSES[name].fn(graph)
    return graph


@pytest.mark.parametrize("kind,opt", [("vit", tc.optim.Adam(lr=1e-2)), ("seed", tc.optim.SGD(lr=0.1))])
def test_training_step_of_a_tiny_transformer_is_unchanged(kind, opt):
    before = training_graph(kind, opt)
    after = fuse(before)
    ops = Counter(n.op for n in after.nodes)
    for op in ("matmul_t_sum", "matmul_bias", "matmul_t", "relu_grad", "layer_norm_grad_scaled", "layer_norm_affine",
               "layer_norm_gain_grad"):
        assert ops[op] > 0, op
    assert ops["layer_norm"] == 0  # every LayerNorm output is recomputed by its gain gradient, never stored
    if kind == "vit":  # Adam: two moments and one parameter step per parameter
        n_params = sum(p.kind == "param" for p in before.params)
        assert ops["adam_param"] == n_params and ops["axpby"] == 2 * n_params
    assert ops["transpose"] < Counter(n.op for n in before.nodes)["transpose"]
    for n in after.nodes:  # the ReLU mask is read from relu's output, so the pre-activation dies early
        if n.op == "relu_grad":
            assert after.producers[n.inputs[0]].op == "relu"
    assert_same(before, after, rtol=1e-9, atol=1e-12)  # loss, logits and every parameter/state update
    assert fuse(after) == after
    fused = {n.out: n for n in after.nodes}
    originals = {n.out: n for n in before.nodes}
    for out, n in fused.items():  # a fused node keeps the location and note of the node it replaces
        if n.op in FUSED and out in originals:
            assert (n.loc, n.note) == (originals[out].loc, originals[out].note)
        elif n.op in FUSED:  # a new inner node of a pattern (concat under a pad): its root's place
            assert any((r.loc, r.note) == (n.loc, n.note) for r in after.consumers[out]), n
    attentions = sum(p.name.endswith("qkv.w") for p in before.params)  # q, k, v slices; their gradients joined
    assert ops["slice"] == 3 * attentions and ops["concat"] == 2 * attentions and ops["pad"] == 0
    for n in after.nodes:  # the heads' gradients are joined before their reshape, so no reshape copies them first
        if n.op == "concat":
            assert all(after.producers[v].op != "reshape" for v in n.inputs), n
