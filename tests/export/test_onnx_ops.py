"""Every op a predict entry can hold (forward and backward ops: an output may be a gradient) runs
the same in ONNX Runtime as in tinyc's reference executor.

Each case is a one-op graph with a symbolic batch, exported with `to_onnx` (which runs
`onnx.checker` with full shape inference) and run at batch 1 and 5; the ops the exporter refuses
are exactly the training-only ones (optimizer updates, data-parallel packing and reduction).
"""

from __future__ import annotations

import json

import numpy as np
import pytest

import tinyc as tc
from tinyc.export.onnx_model import NOT_EXPORTED, RULES, ExportError, to_onnx
from tinyc.ir.builder import new_graph
from tinyc.ir.ops import OPS
from tinyc.ir.program import Entry, Program
from tinyc.runtime.executor import Executor
from tinyc.runtime.reference import run_graph

ort = pytest.importorskip("onnxruntime")

W = np.random.default_rng(7).normal(size=(4, 4)).astype(np.float32)
GAIN = np.random.default_rng(8).normal(size=(4,)).astype(np.float32)



def _applied(op: str, operands):
    """A case applying `op` to operands(x, y)."""
    return lambda b, x, y, i: b.apply(op, operands(x, y))


def _cross_entropy(reduction: str, grad: bool):
    """The loss (or its backward op) over 5 classes, the labels `i` in 0..4, the cotangent from `y`."""
    def case(b, x, y, i):
        logits = b.apply("pad", [x], axis=2, before=0, after=1)
        if not grad:
            return b.apply("softmax_cross_entropy", [logits, i], reduction=reduction)
        gy = {"mean": tc.mean(y), "sum": tc.sum(y), "none": tc.sum(y, axis=2)}[reduction]
        return b.apply("softmax_cross_entropy_grad", [logits, i, gy], reduction=reduction)
    return case


CASES = {
    **{op: _applied(op, lambda x, y: [x, y]) for op in ("add", "sub", "mul", "div", "pow", "maximum")},
    **{op: _applied(op, lambda x, y: [x, tc.maximum(x, y)])
       for op in ("equal", "not_equal", "less", "less_equal", "greater", "greater_equal")},
    **{op: _applied(op, lambda x, y: [x]) for op in ("neg", "sqrt", "exp", "log")},
    "relu": lambda b, x, y, i: tc.relu(x - 1.25),
    "where": lambda b, x, y, i: tc.where(x > y, x, y),
    "cast": lambda b, x, y, i: tc.cast(x * 3.0, "i64"),
    "cast_f64": lambda b, x, y, i: tc.cast(x, "f64"),
    "sum": lambda b, x, y, i: tc.sum(x, axis=(1, 2)),
    "mean": lambda b, x, y, i: tc.mean(x, axis=1, keepdims=True),
    "max": lambda b, x, y, i: tc.max(x, axis=2),
    "sum_all": lambda b, x, y, i: tc.sum(x),
    "reshape": lambda b, x, y, i: x.reshape("B", 12),
    "transpose": lambda b, x, y, i: b.apply("transpose", [x], perm=(0, 2, 1)),
    "broadcast_to": lambda b, x, y, i: b.apply("broadcast_to", [tc.mean(x, axis=1, keepdims=True)], shape=("B", 3, 4)),
    "expand_dims": lambda b, x, y, i: b.apply("expand_dims", [x], axis=1),
    "squeeze": lambda b, x, y, i: b.apply("squeeze", [b.apply("expand_dims", [x], axis=2)]),
    "slice": lambda b, x, y, i: b.apply("slice", [x], axis=2, start=1, stop=3),
    "pad": lambda b, x, y, i: b.apply("pad", [x], axis=1, before=1, after=2),
    "matmul": lambda b, x, y, i: tc.matmul(x, b.constant(W)),
    "one_hot": lambda b, x, y, i: b.apply("one_hot", [i], depth=5),
    "argmax": lambda b, x, y, i: tc.argmax(x, axis=1),
    "fill": lambda b, x, y, i: tc.fill(("B", 3, 4), 1.5) * x,
    "zeros_like": lambda b, x, y, i: tc.zeros_like(x),
    "ones_like": lambda b, x, y, i: tc.ones_like(x),
    "constant": lambda b, x, y, i: x + b.constant(GAIN),
    "softmax": lambda b, x, y, i: b.apply("softmax", [x], axis=1),
    "log_softmax": lambda b, x, y, i: b.apply("log_softmax", [x], axis=-1),
    "layer_norm": lambda b, x, y, i: b.apply("layer_norm", [x], axis=-1, eps=1e-5),
    "layer_norm_axis1": lambda b, x, y, i: b.apply("layer_norm", [x], axis=1, eps=1e-3),
    "matmul_t": lambda b, x, y, i: b.apply("matmul_t", [x, y], ta=False, tb=True, alpha=0.5),
    "matmul_t_ta": lambda b, x, y, i: b.apply("matmul_t", [x, y], ta=True, tb=False),
    "matmul_bias": lambda b, x, y, i: b.apply("matmul_bias", [x, b.param("w", (4, 4)), b.param("g", (4,))]),
    "affine": lambda b, x, y, i: b.apply("affine", [x, b.param("g", (4,)), b.constant(GAIN)]),
    "layer_norm_affine": lambda b, x, y, i: b.apply("layer_norm_affine", [x, b.param("g", (4,)), b.constant(GAIN)]),
    "layer_norm_affine_axis1": lambda b, x, y, i: b.apply("layer_norm_affine", [x, b.constant(GAIN[:3, None]),
                                                                                 b.constant(GAIN[:3, None])], axis=1),
    "concat": lambda b, x, y, i: b.apply("concat", [x, y], axis=1),
    # backward ops: a predict output may be a gradient (x, y > 0; x - 1.25 has both signs)
    "relu_grad": lambda b, x, y, i: b.apply("relu_grad", [x - 1.25, y]),
    "softmax_grad": lambda b, x, y, i: b.apply("softmax_grad", [b.apply("softmax", [x], axis=1), y], axis=1),
    "log_softmax_grad": lambda b, x, y, i: b.apply("log_softmax_grad", [b.apply("log_softmax", [x], axis=-1), y],
                                                   axis=-1),
    "layer_norm_grad": lambda b, x, y, i: b.apply("layer_norm_grad", [x, y], axis=-1, eps=1e-5),
    "layer_norm_grad_axis1": lambda b, x, y, i: b.apply("layer_norm_grad", [x, y], axis=1, eps=1e-3),
    "layer_norm_grad_scaled": lambda b, x, y, i: b.apply("layer_norm_grad_scaled", [x, y, b.param("g", (4,))],
                                                         axis=-1, eps=1e-5),
    "layer_norm_gain_grad": lambda b, x, y, i: b.apply("layer_norm_gain_grad", [x, y], axis=-1, eps=1e-5),
    "layer_norm_gain_grad_axis1": lambda b, x, y, i: b.apply("layer_norm_gain_grad", [x, y], axis=1, eps=1e-5),
    # of a vector (every axis is the normalized one): nothing to sum over
    "layer_norm_gain_grad_rank1": lambda b, x, y, i: b.apply("layer_norm_gain_grad", [tc.sum(tc.sum(x, axis=2), axis=1),
                                                                                       tc.sum(tc.sum(y, axis=2), axis=1)],
                                                             axis=0, eps=1e-5),
    "matmul_t_sum": lambda b, x, y, i: b.apply("matmul_t_sum", [x, y], ta=True, tb=False),
    "matmul_t_sum_tb": lambda b, x, y, i: b.apply("matmul_t_sum", [x, y], ta=False, tb=True),
    **{f"softmax_cross_entropy_{r}": _cross_entropy(r, grad=False) for r in ("mean", "sum", "none")},
    **{f"softmax_cross_entropy_grad_{r}": _cross_entropy(r, grad=True) for r in ("mean", "sum", "none")},
}


def _program(case: str) -> tuple[Program, dict]:
    with new_graph("case") as b:
        x, y = tc.input("x", ("B", 3, 4)), tc.input("y", ("B", 3, 4))
        i = tc.input("i", ("B", 3), dtype="i64")
        out = CASES[case](b, x, y, i)
        graph = b.graph({"out": out})
    used = {v for n in graph.nodes for v in n.inputs}
    graph = graph.with_nodes(graph.nodes, inputs=tuple(inp for inp in graph.inputs if inp.name in used))
    weights = {"w": W, "g": GAIN}
    return Program({"predict": Entry("predict", graph)}), {p.name: weights[p.name] for p in graph.params}


@pytest.mark.parametrize("case", sorted(CASES))
def test_op_runs_the_same_in_onnx_runtime(case):
    program, weights = _program(case)
    graph = program.entries["predict"].graph
    session = ort.InferenceSession(to_onnx(program, weights).SerializeToString(), providers=["CPUExecutionProvider"])
    for batch in (1, 5):
        rng = np.random.default_rng(batch)
        feeds = {"x": rng.uniform(0.5, 2, (batch, 3, 4)).astype(np.float32),
                 "y": rng.uniform(0.5, 2, (batch, 3, 4)).astype(np.float32),
                 "i": rng.integers(0, 5, (batch, 3))}
        feeds = {inp.name: feeds[inp.name] for inp in graph.inputs}
        want = run_graph(graph, feeds, weights)["out"]
        got = session.run(None, feeds)[0]
        assert got.dtype == want.dtype and got.shape == want.shape, (got.dtype, got.shape, want.dtype, want.shape)
        if want.dtype.kind == "f":  # float32 rounding, relative to the output's scale (gradients cancel)
            np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5 * max(float(np.abs(want).max()), 1e-3))
        else:
            np.testing.assert_array_equal(got, want)


def test_every_op_is_exported_or_refused_for_a_reason():
    assert not set(RULES) & set(NOT_EXPORTED)
    assert set(RULES) | set(NOT_EXPORTED) == set(OPS)
    tested = {n.op for case in CASES for n in _program(case)[0].entries["predict"].graph.nodes}
    assert tested == set(RULES), set(RULES) - tested


def test_an_op_without_a_mapping_names_the_op_and_the_model_line():
    with new_graph("case") as b:
        x = tc.input("x", ("B", 3))
        g = b.apply("axpby", [x, x], a=0.9, b=0.1); line = __import__("inspect").currentframe().f_lineno
        graph = b.graph({"out": g})
    with pytest.raises(ExportError) as e:
        to_onnx(Program({"predict": Entry("predict", graph)}), {})
    assert str(e.value).splitlines()[0] == (f"{__file__.split('/')[-1]}:{line}: axpby %{graph.nodes[-1].out}: "
                                            "cannot be exported to ONNX (an optimizer update)")


@pytest.mark.parametrize("rule", [{"scale": 1 / 255}, {"mean": 33.3, "std": 78.6},
                                  {"raw": "u16", "scale": 0.3, "offset": -2.0, "mean": 10.0, "std": 4.0}])
def test_declared_preprocessing_is_in_the_graph_and_stated_in_the_metadata(rule):
    with new_graph("case") as b:
        x = tc.input("x", ("B", 3, 4), **rule)
        graph = b.graph({"out": x * 2.0})
    program = Program({"predict": Entry("predict", graph)})
    model = to_onnx(program, {})
    raw = {"u8": np.uint8, "u16": np.uint16}[rule.get("raw", "u8")]
    stated = json.loads({p.key: p.value for p in model.metadata_props}["tinyc.preprocess"])
    assert stated == {"x": graph.inputs[0].preprocess} and stated["x"]["raw"] == rule.get("raw", "u8")
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    for batch in (1, 5):
        pixels = np.random.default_rng(batch).integers(0, np.iinfo(raw).max, (batch, 3, 4), dtype=raw)
        want = Executor(program).predict({"x": pixels})["out"]  # tinyc applies the rule when it feeds
        np.testing.assert_allclose(session.run(None, {"x": pixels})[0], want, rtol=1e-6, atol=1e-6 * np.abs(want).max())


def test_a_size_onnx_cannot_compute_names_the_op_and_the_model_line():
    with new_graph("case") as b:
        tc.input("x", ("B", 3))
        y = tc.fill(("N", 3), 1.5); line = __import__("inspect").currentframe().f_lineno
        graph = b.graph({"out": y})
    with pytest.raises(ExportError) as e:
        to_onnx(Program({"predict": Entry("predict", graph)}), {})
    assert str(e.value) == (f"{__file__.split('/')[-1]}:{line}: fill %{graph.nodes[-1].out}: dim 'N' is not the size "
                            "of any input, so ONNX cannot compute it")
