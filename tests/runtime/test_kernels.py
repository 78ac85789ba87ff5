"""Every kernel against a direct NumPy computation, in f32 and f64, with and without `out=`."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import pytest

from tinyc.ir.ops import OPS, canonical_attrs, infer_type
from tinyc.ir.types import TensorType, dtype_of_numpy
from tinyc.runtime.kernels import COPIES, GEMMS, INPLACE_INPUTS, INPLACE_SAFE, KERNELS, VIEW_OPS

RNG = np.random.default_rng(1234)
FLOATS = (np.float32, np.float64)
# shape pairs that broadcast in every way NumPy allows
PAIRS = [((3, 4), (3, 4)), ((2, 3, 4), (4,)), ((3, 1), (1, 4)), ((), (2, 3)), ((2, 1, 4), (3, 1))]


def arr(shape, dtype=np.float64, low=-2.0, high=2.0) -> np.ndarray:
    if np.dtype(dtype).kind == "i":
        return RNG.integers(int(low), int(high) + 1, shape).astype(dtype)
    if np.dtype(dtype).kind == "b":
        return RNG.random(shape) < 0.5
    return np.asarray(RNG.uniform(low, high, shape), dtype=dtype)


# --------------------------------------------------------------------------- naive references


def naive_softmax(x, axis):
    e = np.exp(x)
    return e / e.sum(axis=axis, keepdims=True)


def naive_layer_norm(x, axis, eps):
    return (x - x.mean(axis=axis, keepdims=True)) / np.sqrt(x.var(axis=axis, keepdims=True) + eps)


def naive_nll(logits, labels):
    p = naive_softmax(logits, -1).reshape(-1, logits.shape[-1])
    return -np.log(p[np.arange(p.shape[0]), labels.reshape(-1)]).reshape(labels.shape)


def naive_sce(logits, labels, reduction):
    nll = naive_nll(logits, labels)
    return {"mean": nll.mean(), "sum": nll.sum(), "none": nll}[reduction]


def apply_row_jacobian(x, gy, axis, jac):
    """grad_x = J^T gy for each row along `axis`, J = jac(row) the [n, n] Jacobian (the naive way)."""
    xm, gm = np.moveaxis(x, axis, -1), np.moveaxis(gy, axis, -1)
    n = xm.shape[-1]
    rows = [jac(r).T @ g for r, g in zip(xm.reshape(-1, n), gm.reshape(-1, n))]
    return np.moveaxis(np.reshape(rows, xm.shape), -1, axis)


def naive_softmax_grad(x, gy, axis):
    # J = diag(p) - p p^T
    return apply_row_jacobian(
        x, gy, axis, lambda r: np.diag(naive_softmax(r, 0)) - np.outer(naive_softmax(r, 0), naive_softmax(r, 0))
    )


def naive_log_softmax_grad(x, gy, axis):
    # J = I - 1 p^T
    return apply_row_jacobian(x, gy, axis, lambda r: np.eye(r.size) - np.outer(np.ones(r.size), naive_softmax(r, 0)))


def naive_layer_norm_grad(x, gy, axis, eps):
    # J = (I - 1/n - xhat xhat^T / n) / std
    def jac(r):
        n, std = r.size, np.sqrt(r.var() + eps)
        xhat = (r - r.mean()) / std
        return (np.eye(n) - 1.0 / n - np.outer(xhat, xhat) / n) / std

    return apply_row_jacobian(x, gy, axis, jac)


def naive_sce_grad(logits, labels, gy, reduction):
    hot = np.eye(logits.shape[-1])[labels]
    g = naive_softmax(logits, -1) - hot
    if reduction == "none":
        return g * gy[..., None]
    return g * gy / (labels.size if reduction == "mean" else 1)


# --------------------------------------------------------------------------- the table
# op -> fn(dtype) -> list of (inputs, attrs, reference(*inputs) -> expected); a test checks it covers OPS.

Case = tuple[list, dict, Callable[..., Any]]


def binary(ref, dtypes=FLOATS, low=-2.0):
    return lambda dt: [([arr(a, dt, low), arr(b, dt, low)], {}, ref) for a, b in PAIRS] if dt in dtypes else []


def compare(ref):
    """Comparisons: random pairs, plus a pair with ties (random floats are never equal)."""

    def make(dt):
        a = arr((6,), dt)
        b = np.where(np.arange(6) % 2 == 0, a, arr((6,), dt))
        return binary(ref, FLOATS + (np.int64,))(dt) + [([a, b], {}, ref)]

    return make


def unary(ref, low=-2.0, ints=False):
    shapes = [(), (5,), (2, 3, 4)]
    return lambda dt: (
        [([arr(s, dt, low)], {}, ref) for s in shapes]
        + ([([arr((4, 3), np.int64, -5, 5)], {}, ref)] if ints and dt is np.float64 else [])
    )


def reduce_cases(ref):
    def make(dt):
        x = arr((2, 3, 4), dt)
        cases = [
            ([x], {"axes": axes, "keepdims": kd}, lambda x, axes=axes, kd=kd: ref(x, axis=axes, keepdims=kd))
            for axes in (None, (1,), (0, 2), -1, (0, 1))
            for kd in (False, True)
        ]
        if ref is not np.mean:
            cases.append(([arr((3, 5), np.int64, -9, 9)], {"axes": 0}, lambda x: ref(x, axis=0)))
        return cases

    return make


def constant_cases(dt):
    v = arr((2, 3), dt)
    return [([], {"name": "c0", "dtype": dtype_of_numpy(dt), "shape": (2, 3), "value": v}, lambda: v)]


def sce_cases(dt):
    out = []
    for shape in [(6, 5), (2, 3, 4)]:
        logits, labels = arr(shape, dt, -3, 3), RNG.integers(0, shape[-1], shape[:-1])
        for red in ("mean", "sum", "none"):
            out.append(([logits, labels], {"reduction": red}, lambda lg, lb, red=red: naive_sce(lg, lb, red)))
    return out


def sce_grad_cases(dt):
    out = []
    for shape in [(6, 5), (2, 3, 4)]:
        logits, labels = arr(shape, dt, -3, 3), RNG.integers(0, shape[-1], shape[:-1])
        for red in ("mean", "sum", "none"):
            gy = arr(() if red != "none" else shape[:-1], dt)
            out.append(
                ([logits, labels, gy], {"reduction": red}, lambda lg, lb, g, red=red: naive_sce_grad(lg, lb, g, red))
            )
    return out


def grad_cases(forward, naive, attrs_list, inputs_from_x):
    def make(dt):
        out = []
        for shape, attrs in attrs_list:
            x, gy = arr(shape, dt), arr(shape, dt)
            first = forward(x, **attrs) if inputs_from_x == "y" else x
            out.append(([first, gy], attrs, lambda _y, g, x=x, attrs=attrs: naive(x, g, **attrs)))
        return out

    return make


AXES = [((4, 5), {"axis": -1}), ((3, 4, 5), {"axis": 1}), ((6,), {"axis": 0})]

CASES: dict[str, Callable[[type], list[Case]]] = {
    "add": binary(lambda a, b: a + b, FLOATS + (np.int64,)),
    "sub": binary(lambda a, b: a - b, FLOATS + (np.int64,)),
    "mul": binary(lambda a, b: a * b, FLOATS + (np.int64,)),
    "div": binary(lambda a, b: a / b, low=0.5),
    "pow": binary(lambda a, b: a**b, low=0.5),
    "maximum": binary(lambda a, b: np.where(a > b, a, b), FLOATS + (np.int64,)),
    "equal": compare(lambda a, b: a == b),
    "not_equal": compare(lambda a, b: ~(a == b)),
    "less": compare(lambda a, b: a < b),
    "less_equal": compare(lambda a, b: a <= b),
    "greater": compare(lambda a, b: a > b),
    "greater_equal": compare(lambda a, b: a >= b),
    "neg": unary(lambda x: 0 - x, ints=True),
    "sqrt": unary(lambda x: x**0.5, low=0.1),
    "exp": unary(lambda x: np.e**x),
    "log": unary(lambda x: np.log(x), low=0.1),
    "relu": unary(lambda x: x * (x > 0), ints=True),
    "where": lambda dt: [
        (
            [arr((3, 1), np.bool_), arr((3, 4), dt), arr((4,), dt)],
            {},
            lambda c, a, b: np.array([[a[i, j] if c[i, 0] else b[j] for j in range(4)] for i in range(3)]),
        ),
        ([arr((5,), np.bool_), arr((5,), dt), arr((), dt)], {}, lambda c, a, b: c * a + ~c * b),
        ([arr((5,), np.bool_), arr((), dt), arr((5,), dt)], {}, lambda c, a, b: c * a + ~c * b),
    ],
    "cast": lambda dt: [
        ([arr((3, 4), dt, -5, 5)], {"dtype": "i64"}, lambda x: np.trunc(x).astype(np.int64)),
        (
            [arr((3, 4), dt)],
            {"dtype": "f64" if dt is np.float32 else "f32"},
            lambda x: x.astype(np.float64 if dt is np.float32 else np.float32),
        ),
        ([arr((5,), np.int64, -3, 3)], {"dtype": dtype_of_numpy(dt)}, lambda x: x.astype(dt)),
        ([np.array([0.0, 1.5, -2.0], dt)], {"dtype": "bool"}, lambda x: np.array([False, True, True])),
    ],
    "sum": reduce_cases(np.sum),
    "mean": reduce_cases(np.mean),
    "max": reduce_cases(np.max),
    "reshape": lambda dt: [
        ([arr((3, 4), dt)], {"shape": (2, 6)}, lambda x: np.array(x.ravel().tolist(), dt).reshape(2, 6)),
        ([arr((2, 3, 4), dt)], {"shape": (2, -1)}, lambda x: x.reshape(2, 12)),
        ([arr((6,), dt)], {"shape": (1, 2, 3, 1)}, lambda x: x.reshape(1, 2, 3, 1)),
    ],
    "transpose": lambda dt: [
        ([arr((3, 4), dt)], {"perm": (1, 0)}, lambda x: np.array([[x[i, j] for i in range(3)] for j in range(4)])),
        ([arr((2, 3, 4), dt)], {"perm": (2, 0, 1)}, lambda x: np.einsum("abc->cab", x)),
        ([arr((2, 3, 4), dt)], {"perm": None}, lambda x: np.einsum("abc->cba", x)),
    ],
    "broadcast_to": lambda dt: [
        ([arr((3, 1), dt)], {"shape": (2, 3, 4)}, lambda x: x + np.zeros((2, 3, 4), dt)),
        ([arr((), dt)], {"shape": (5,)}, lambda x: np.full(5, x)),
    ],
    "expand_dims": lambda dt: [
        ([arr((3, 4), dt)], {"axis": 0}, lambda x: x[None]),
        ([arr((3, 4), dt)], {"axis": -1}, lambda x: x[:, :, None]),
        ([arr((3, 4), dt)], {"axis": 1}, lambda x: x[:, None, :]),
    ],
    "squeeze": lambda dt: [
        ([arr((1, 3, 1), dt)], {"axes": None}, lambda x: x.reshape(3)),
        ([arr((1, 3, 1), dt)], {"axes": 0}, lambda x: x[0]),
        ([arr((2, 1), dt)], {"axes": -1}, lambda x: x[:, 0]),
    ],
    "slice": lambda dt: [
        ([arr((2, 6), dt)], {"axis": 1, "start": 2, "stop": 5}, lambda x: x[:, 2:5]),
        ([arr((4, 3), dt)], {"axis": 0, "start": 0, "stop": 1}, lambda x: x[:1]),
    ],
    "pad": lambda dt: [
        ([arr((2, 3), dt)], {"axis": 1, "before": 1, "after": 2},
         lambda x: np.concatenate([np.zeros((2, 1), dt), x, np.zeros((2, 2), dt)], axis=1)),
    ],
    "matmul": lambda dt: [
        ([arr((3, 4), dt), arr((4, 5), dt)], {}, lambda a, b: np.einsum("mk,kn->mn", a, b)),
        ([arr((2, 3, 4), dt), arr((4, 5), dt)], {}, lambda a, b: np.einsum("bmk,kn->bmn", a, b)),
        ([arr((2, 1, 3, 4), dt), arr((5, 4, 2), dt)], {}, lambda a, b: np.einsum("...mk,...kn->...mn", a, b)),
    ],
    "one_hot": lambda dt: [
        (
            [np.array([0, 3, 1, 3], np.int64)],
            {"depth": 4, "dtype": dtype_of_numpy(dt)},
            lambda i: np.eye(4, dtype=dt)[i],
        ),
        (
            [np.array([[2, 5], [-1, 0]], np.int64)],
            {"depth": 3},  # out of range -> a row of zeros
            lambda i: np.array([[[0, 0, 1], [0, 0, 0]], [[0, 0, 0], [1, 0, 0]]], np.float32),
        ),
    ],
    "argmax": lambda dt: [
        ([arr((4, 5), dt)], {}, lambda x: np.array([max(range(5), key=lambda j: r[j]) for r in x])),
        ([arr((4, 5), dt)], {"axis": 0, "keepdims": True}, lambda x: np.argmax(x, axis=0)[None]),
        ([np.array([1, 7, 7, 2], np.int64)], {"axis": 0}, lambda x: np.array(1)),  # first of ties
    ],
    "fill": lambda dt: [
        ([], {"shape": (2, 3), "value": 1.5, "dtype": dtype_of_numpy(dt)}, lambda: np.full((2, 3), 1.5, dt)),
        ([], {"shape": (), "value": 3.0, "dtype": "i64"}, lambda: np.array(3, np.int64)),
        ([], {"shape": (4,), "value": 1.0, "dtype": "bool"}, lambda: np.ones(4, bool)),
    ],
    "zeros_like": lambda dt: [
        ([arr((2, 3), dt)], {}, lambda x: np.zeros((2, 3), dt)),
        ([arr((3,), np.int64)], {}, lambda x: np.zeros(3, np.int64)),
    ],
    "ones_like": lambda dt: [
        ([arr((2, 3), dt)], {}, lambda x: np.ones((2, 3), dt)),
        ([arr((), np.int64)], {}, lambda x: np.array(1)),
    ],
    "constant": constant_cases,
    "softmax": lambda dt: [([arr(s, dt, -3, 3)], a, lambda x, a=a: naive_softmax(x, **a)) for s, a in AXES] + [
        # a row spread wider than exp's range around its mean: the kernel redoes it shifted by the max
        ([np.array([[0.0, 60.0, -60.0, 1.0], [100.0, -100.0, 0.0, 2.0]], dt)], {"axis": -1},
         lambda x: naive_softmax(x - x.max(axis=-1, keepdims=True), -1)),
    ],
    "log_softmax": lambda dt: [([arr(s, dt, -3, 3)], a, lambda x, a=a: np.log(naive_softmax(x, **a))) for s, a in AXES],
    "layer_norm": lambda dt: [
        ([arr(s, dt, -3, 3)], {**a, "eps": eps}, lambda x, a=a, eps=eps: naive_layer_norm(x, eps=eps, **a))
        for s, a in AXES
        for eps in (1e-5, 0.1)
    ],
    "softmax_cross_entropy": sce_cases,
    "softmax_grad": grad_cases(KERNELS["softmax"], naive_softmax_grad, AXES, "y"),
    "log_softmax_grad": grad_cases(KERNELS["log_softmax"], naive_log_softmax_grad, AXES, "y"),
    "layer_norm_grad": grad_cases(None, naive_layer_norm_grad, [(s, {**a, "eps": 1e-3}) for s, a in AXES], "x"),
    "softmax_cross_entropy_grad": sce_grad_cases,
    # fused ops of the `fuse` pass (more in tests/compiler/test_fuse.py)
    "matmul_t": lambda dt: [
        ([arr((2, 4, 3), dt), arr((5, 4), dt)], {"ta": True, "tb": True, "alpha": 0.5},
         lambda a, b: 0.5 * np.einsum("bkm,nk->bmn", a, b)),
        ([arr((2, 3, 4), dt), arr((4, 5), dt)], {}, lambda a, b: np.einsum("bmk,kn->bmn", a, b)),
    ],
    "matmul_t_sum": lambda dt: [
        ([arr((2, 4, 3), dt), arr((2, 4, 5), dt)], {"ta": True}, lambda a, b: np.einsum("bkm,bkn->mn", a, b)),
        ([arr((2, 3, 4), dt), arr((2, 5, 4), dt)], {"tb": True}, lambda a, b: np.einsum("bmk,bnk->mn", a, b)),
    ],
    "matmul_bias": lambda dt: [
        ([arr((2, 3, 4), dt), arr((4, 5), dt), arr((5,), dt)], {}, lambda a, b, c: np.einsum("bmk,kn->bmn", a, b) + c),
    ],
    "relu_grad": lambda dt: [([arr((3, 4), dt), arr((3, 4), dt)], {}, lambda x, g: np.where(x > 0, g, 0))],
    "affine": lambda dt: [([arr((3, 4), dt), arr((4,), dt), arr((3, 1), dt)], {}, lambda x, s, t: x * s + t)],
    "layer_norm_grad_scaled": lambda dt: [
        ([arr((3, 4), dt, -3, 3), arr((3, 4), dt), arr((4,), dt)], {"axis": 1, "eps": 1e-3},
         lambda x, g, s: naive_layer_norm_grad(x, g * s, axis=1, eps=1e-3)),
    ],
    "layer_norm_affine": lambda dt: [
        ([arr(shape, dt, -3, 3), arr((4,), dt), arr((4,), dt)], {"axis": len(shape) - 1, "eps": 1e-3},
         lambda x, s, t: naive_layer_norm(x, axis=x.ndim - 1, eps=1e-3) * s + t) for shape in ((3, 4), (2, 3, 4))
    ] + [([arr((4, 3), dt, -3, 3), arr((4, 1), dt), arr((3,), dt)], {"axis": 0, "eps": 1e-3},
          lambda x, s, t: naive_layer_norm(x, axis=0, eps=1e-3) * s + t)],
    "layer_norm_gain_grad": lambda dt: [
        ([arr((2, 3, 4), dt, -3, 3), arr((2, 3, 4), dt)], {"axis": 2, "eps": 1e-3},
         lambda x, g: (naive_layer_norm(x, axis=2, eps=1e-3) * g).sum(axis=(0, 1))),
        ([arr((4, 3), dt, -3, 3), arr((4, 3), dt)], {"axis": 0, "eps": 1e-3},
         lambda x, g: (naive_layer_norm(x, axis=0, eps=1e-3) * g).sum(axis=1)),
    ],
    "concat": lambda dt: [
        ([arr((2, 3, 4), dt), arr((2, 3, 2), dt)], {"axis": 2}, lambda a, b: np.block([a, b])),
        ([arr((1, 4), dt), arr((3, 4), dt)], {"axis": 0}, lambda a, b: np.vstack([a, b])),
    ],
    "allreduce": lambda dt: [([arr((3, 4), dt)], {}, lambda x: x)],  # one rank: the identity
    "flat_concat": lambda dt: [
        ([arr((2, 3), dt), arr((), dt), arr((4,), dt)], {}, lambda a, b, c: np.r_[a.ravel(), b.ravel(), c]),
    ],
    "axpby": lambda dt: [
        ([arr((3, 4), dt), arr((3, 4), dt)], {"a": 0.9, "b": 0.1}, lambda x, y: 0.9 * x + 0.1 * y),
        ([arr((3, 4), dt), arr((3, 4), dt)], {"a": 0.999, "b": 0.001, "square": True}, lambda x, y: 0.999 * x + 0.001 * y * y),
    ],
    "adam_param": lambda dt: [
        ([arr((3, 4), dt), arr((3, 4), dt), arr((3, 4), dt, 0.1, 2.0), arr((), dt, 0.01, 0.02), arr((), dt, 0.5, 1.0)],
         {"eps": 1e-8}, lambda p, m, v, s, c: p - s * (m / (np.sqrt(v) / c + 1e-8))),
    ],
}


def _all_cases():
    for op, make in CASES.items():
        for dt in FLOATS:
            for i, case in enumerate(make(dt)):
                yield pytest.param(op, *case, id=f"{op}-{np.dtype(dt).name}-{i}")


def test_table_covers_every_op():
    assert set(CASES) == set(OPS)
    assert set(KERNELS) == set(OPS)


def test_every_op_has_a_float32_and_float64_case():
    for op, make in CASES.items():
        assert make(np.float32) and make(np.float64), op


@pytest.mark.parametrize("op,inputs,attrs,ref", list(_all_cases()))
def test_kernel_matches_numpy(op, inputs, attrs, ref):
    runtime = {"value": attrs["value"]} if op == "constant" else {}  # the array the executor passes
    attrs = {k: v for k, v in attrs.items() if k not in runtime}
    in_types = [TensorType(dtype_of_numpy(a.dtype), a.shape) for a in inputs]
    canon = canonical_attrs(op, in_types, attrs)
    want = infer_type(op, in_types, canon)
    saved = [a.copy() for a in inputs]

    got = KERNELS[op](*inputs, **canon, **runtime)

    assert isinstance(got, np.ndarray)
    assert got.dtype == want.np_dtype and got.shape == want.shape, f"{op}: {got.dtype}{got.shape} vs {want}"
    expected = np.asarray(ref(*inputs))
    if got.dtype.kind == "f":
        tol = 2e-5 if got.dtype == np.float32 else 1e-10
        np.testing.assert_allclose(got, expected, rtol=tol, atol=tol)
    else:
        np.testing.assert_array_equal(got, expected)
    for before, after in zip(saved, inputs):  # kernels are pure
        np.testing.assert_array_equal(before, after)

    # out=: the result lands in the given buffer, the same values
    buf = np.full(want.shape, 7, dtype=want.np_dtype)
    res = KERNELS[op](*inputs, out=buf, **canon, **runtime)
    assert res is buf
    np.testing.assert_array_equal(buf, got)


# --------------------------------------------------------------------------- composites: stability, FD


def test_composites_are_stable_on_huge_logits():
    x = np.array([[1000.0, 0.0, -1000.0], [-1e4, -1e4, -1e4]], np.float32)
    sm = KERNELS["softmax"](x, axis=1)
    lsm = KERNELS["log_softmax"](x, axis=1)
    loss = KERNELS["softmax_cross_entropy"](x, np.array([1, 0]), reduction="none")
    assert np.isfinite(sm).all() and np.isfinite(lsm).all() and np.isfinite(loss).all()
    np.testing.assert_allclose(sm[0], [1, 0, 0], atol=1e-6)
    np.testing.assert_allclose(lsm[1], np.log([1 / 3] * 3), rtol=1e-5)
    np.testing.assert_allclose(loss, [1000.0, np.log(3)], rtol=1e-5)


def test_softmax_cross_entropy_rejects_labels_out_of_range():
    from tinyc.ir.errors import DataError

    with pytest.raises(DataError, match=r"\[0, 3\)"):
        KERNELS["softmax_cross_entropy"](np.zeros((2, 3)), np.array([0, 3]), reduction="mean")


def central_difference(f, x, eps=1e-6):
    g = np.zeros_like(x)
    for i in np.ndindex(x.shape):
        xp, xm = x.copy(), x.copy()
        xp[i] += eps
        xm[i] -= eps
        g[i] = (f(xp) - f(xm)) / (2 * eps)
    return g


# (grad op, forward op, attrs, first input of the grad op from x)
FD_CASES = [
    ("softmax_grad", "softmax", {"axis": 1}, lambda x: KERNELS["softmax"](x, axis=1)),
    ("softmax_grad", "softmax", {"axis": 0}, lambda x: KERNELS["softmax"](x, axis=0)),
    ("log_softmax_grad", "log_softmax", {"axis": 1}, lambda x: KERNELS["log_softmax"](x, axis=1)),
    ("log_softmax_grad", "log_softmax", {"axis": 0}, lambda x: KERNELS["log_softmax"](x, axis=0)),
    ("layer_norm_grad", "layer_norm", {"axis": 1, "eps": 1e-5}, lambda x: x),
    ("layer_norm_grad", "layer_norm", {"axis": 0, "eps": 0.5}, lambda x: x),
]


@pytest.mark.parametrize("grad_op,fwd_op,attrs,first", FD_CASES, ids=[f"{c[0]}-{c[2]}" for c in FD_CASES])
def test_composite_grad_matches_finite_differences(grad_op, fwd_op, attrs, first):
    x, gy = arr((3, 4)), arr((3, 4))
    numeric = central_difference(lambda v: np.sum(gy * KERNELS[fwd_op](v, **attrs)), x)
    analytic = KERNELS[grad_op](first(x), gy, **attrs)
    np.testing.assert_allclose(analytic, numeric, rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_softmax_cross_entropy_grad_matches_finite_differences(reduction):
    logits, labels = arr((2, 3, 4), low=-3, high=3), RNG.integers(0, 4, (2, 3))
    gy = arr(() if reduction != "none" else (2, 3))
    loss = lambda v: np.sum(gy * KERNELS["softmax_cross_entropy"](v, labels, reduction=reduction))
    analytic = KERNELS["softmax_cross_entropy_grad"](logits, labels, gy, reduction=reduction)
    np.testing.assert_allclose(analytic, central_difference(loss, logits), rtol=1e-5, atol=1e-7)


# --------------------------------------------------------------------------- in place and fast paths


def test_kernel_fact_tables_name_kernels():
    for table in (VIEW_OPS, GEMMS, COPIES, INPLACE_SAFE, set(INPLACE_INPUTS)):
        assert table <= set(KERNELS) and table <= set(OPS)
    assert all(0 <= k < len(OPS[op].inputs) for op, ks in INPLACE_INPUTS.items() for k in ks)


INPLACE = {**{op: tuple(range(len(OPS[op].inputs))) for op in INPLACE_SAFE}, **INPLACE_INPUTS}


@pytest.mark.parametrize("op", sorted(INPLACE))
def test_inplace_inputs_may_be_the_output(op):
    # the memory plan writes these kernels' results over the named inputs (INPLACE_SAFE: any)
    checked = set()
    for dt in FLOATS:
        for inputs, attrs, _ in CASES[op](dt):
            in_types = [TensorType(dtype_of_numpy(a.dtype), a.shape) for a in inputs]
            canon = canonical_attrs(op, in_types, attrs)
            want = KERNELS[op](*inputs, **canon)
            for k in INPLACE[op]:
                if inputs[k].shape != want.shape or inputs[k].dtype != want.dtype:
                    continue  # the plan reuses only an input of the result's type
                ins = [a.copy() for a in inputs]
                res = KERNELS[op](*ins, out=ins[k], **canon)
                assert res is ins[k]
                np.testing.assert_array_equal(res, want, err_msg=f"{op} over input {k}")
                checked.add(k)
    assert checked == set(INPLACE[op]) - ({0} if op == "where" else set())  # where's condition is bool


@pytest.mark.parametrize("size", [0, 1, 5, 16384, 16384 * 2 + 7])
def test_relu_matches_maximum_across_block_sizes(size):
    x = arr((size,), np.float32)
    x[: min(size, 3)] = [np.nan, -0.0, 0.0][: min(size, 3)]
    want = np.maximum(x, np.float32(0))
    np.testing.assert_array_equal(KERNELS["relu"](x), want)
    np.testing.assert_array_equal(KERNELS["relu"](x.reshape(1, -1)[:, ::-1][:, ::-1]), want.reshape(1, -1))
    KERNELS["relu"](x, out=x)  # in place (INPLACE_SAFE)
    np.testing.assert_array_equal(x, want)
