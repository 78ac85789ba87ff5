"""The reference executor: traced graphs give what NumPy gives; feeds are checked with clear errors."""

from __future__ import annotations

import numpy as np
import pytest

import tinyc as tc
from tinyc.ir.program import Entry, Program
from tinyc.runtime.binding import bind_feeds
from tinyc.runtime.executor import Executor
from tinyc.runtime.init import init_params
from tinyc.runtime.reference import make_function, run_graph

RNG = np.random.default_rng(0)


def mlp_graph():
    """x[B,4] -> relu(x @ w1 + b1) @ w2 -> softmax cross-entropy against labels[B]."""
    with tc.graph() as b:
        x = tc.input("x", ("B", 4))
        labels = tc.input("labels", ("B",), "i64")
        w1 = tc.param("w1", (4, 8), init=tc.init.xavier_uniform())
        b1 = tc.param("b1", (8,), init=tc.init.normal(0.1))
        w2 = tc.param("w2", (8, 3), init=tc.init.lecun_uniform())
        logits = tc.relu(x @ w1 + b1) @ w2
        loss = tc.softmax_cross_entropy(logits, labels)
        pred = tc.argmax(logits)
        return b.graph({"loss": loss, "pred": pred, "logits": logits}, updates={"w2": w2 * 0.5})


def numpy_mlp(x, labels, p):
    logits = np.maximum(x @ p["w1"] + p["b1"], 0) @ p["w2"]
    z = logits - logits.max(-1, keepdims=True)
    logp = z - np.log(np.exp(z).sum(-1, keepdims=True))
    return logits, -logp[np.arange(len(labels)), labels].mean()


@pytest.mark.parametrize("batch", [2, 7])
def test_run_graph_matches_numpy_for_any_batch(batch):
    g = mlp_graph()
    x, labels = RNG.normal(size=(batch, 4)).astype(np.float32), RNG.integers(0, 3, batch)
    out = run_graph(g, {"x": x, "labels": labels}, seed=5)
    params = init_params(g, seed=5)
    logits, loss = numpy_mlp(x, labels, params)
    assert set(out) == {"loss", "pred", "logits", "w2"}
    assert out["loss"].dtype == np.float32 and out["loss"].shape == ()
    np.testing.assert_allclose(out["logits"], logits, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(out["loss"], loss, rtol=1e-5)
    np.testing.assert_array_equal(out["pred"], logits.argmax(-1))
    np.testing.assert_allclose(out["w2"], params["w2"] * 0.5)  # updates keyed by parameter name


def test_run_graph_uses_given_params_and_inits_the_rest():
    g = mlp_graph()
    x, labels = RNG.normal(size=(3, 4)), RNG.integers(0, 3, 3)
    w1 = RNG.normal(size=(4, 8))  # f64 for an f32 parameter: cast
    out = run_graph(g, {"x": x, "labels": labels}, params={"w1": w1})
    params = {**init_params(g), "w1": w1.astype(np.float32)}
    np.testing.assert_allclose(out["logits"], numpy_mlp(x.astype(np.float32), labels, params)[0], rtol=1e-5, atol=1e-6)
    assert out["logits"].dtype == np.float32  # the f64 feed was cast to the input's f32


def test_tc_function_equals_numpy():
    with tc.graph():
        x = tc.input("x", ("B", 3))
        w = tc.param("w", (3, 2))
        y = tc.layer_norm(tc.exp(x) * 2 - 1) + x.sum(axis=1, keepdims=True)
        z = tc.transpose(tc.reshape(y, ("B", 3, 1)), (1, 0, 2))
        f = tc.function([y, z, x @ w], [x, w])
        g = tc.function(tc.mean(tc.softmax(x) ** 2), [x])
    for batch in (1, 5):
        xv, wv = RNG.normal(size=(batch, 3)), RNG.normal(size=(3, 2))
        yv, zv, xw = f(xv, wv)
        h = np.exp(xv) * 2 - 1
        want = (h - h.mean(1, keepdims=True)) / np.sqrt(h.var(1, keepdims=True) + 1e-5) + xv.sum(1, keepdims=True)
        np.testing.assert_allclose(yv, want, rtol=1e-5, atol=1e-5)
        np.testing.assert_allclose(zv, want.reshape(batch, 3, 1).transpose(1, 0, 2), rtol=1e-5, atol=1e-5)
        np.testing.assert_allclose(xw, xv @ wv, rtol=1e-5, atol=1e-5)
        e = np.exp(xv)
        np.testing.assert_allclose(g(xv), np.mean((e / e.sum(1, keepdims=True)) ** 2), rtol=1e-5)


def test_params_default_to_their_init_and_outputs_are_copies():
    with tc.graph():
        x = tc.input("x", (2,))
        w = tc.param("w", (2,), init=tc.init.ones())
        f = tc.function([w, x + w], [x])
    first, total = f(np.array([1.0, 2.0]))
    np.testing.assert_array_equal(total, [2.0, 3.0])
    first[:] = 100  # must not leak into the next call
    np.testing.assert_array_equal(f(np.array([1.0, 2.0]))[1], [2.0, 3.0])


def test_unused_inputs_need_not_be_fed():
    with tc.graph():
        x = tc.input("x", (2,))
        tc.input("unused", (5,))
        f = tc.function(x * 3, [x])
    np.testing.assert_allclose(f([1.0, 2.0]), [3.0, 6.0])


def test_symbols_resolved_in_shape_attrs():
    with tc.graph() as b:
        x = tc.input("x", ("B", 2, 3))
        flat = tc.reshape(x, ("B", -1))
        ones = tc.broadcast_to(tc.constant(np.ones(6, np.float32)), ("B", 6))
        g = b.graph({"y": flat + ones + tc.fill(("B", 1), 2.0)})
    for batch in (1, 4):
        xv = RNG.normal(size=(batch, 2, 3)).astype(np.float32)
        np.testing.assert_allclose(run_graph(g, {"x": xv})["y"], xv.reshape(batch, 6) + 3.0, rtol=1e-6)


# --------------------------------------------------------------------------- errors


def test_missing_input_is_named():
    with tc.graph():
        x, y = tc.input("x", (2,)), tc.input("label", (2,))
        with pytest.raises(tc.DataError, match="input 'label' was not fed"):
            tc.function(x + y, [x])


@pytest.mark.parametrize(
    "feeds,message",
    [
        ({"x": np.zeros((2, 4))}, "input 'labels' (i64[B]) was not fed (fed: x)"),
        ({"x": np.zeros((2, 5)), "labels": np.zeros(2, np.int64)},
         "input 'x' is f32[B,4] but was fed shape [2,5]: dim 1 is 5, expected 4"),
        ({"x": np.zeros((2, 4)), "labels": np.zeros(3, np.int64)},
         "input 'labels' is i64[B] and was fed shape [3]: B=3 here but B=2 in input 'x'"),
        ({"x": np.zeros((2, 4, 1)), "labels": np.zeros(2, np.int64)},
         "input 'x' is f32[B,4] (rank 2) but was fed an array of shape [2,4,1] (rank 3)"),
        ({"x": np.zeros((2, 4)), "labels": np.zeros(2)}, "input 'labels' is i64[B] but was fed float64 data"),
        ({"x": np.zeros((2, 4), bool), "labels": np.zeros(2, np.int64)}, "input 'x' is f32[B,4] but was fed bool data"),
    ],
)
def test_both_executors_refuse_a_bad_feed_alike(feeds, message):
    # one binding (runtime/binding.py): the same DataError, naming the input and both shapes
    g = mlp_graph()
    with pytest.raises(tc.DataError) as reference:
        run_graph(g, feeds)
    with pytest.raises(tc.DataError) as planned:
        Executor(Program({"f": Entry("f", g)})).run("f", feeds)
    assert reference.value.message == message
    assert planned.value.message == f"entry 'f': {message}"


def test_bind_feeds_reads_the_symbols():
    feeds = {"x": np.zeros((6, 4), np.float32), "labels": np.zeros(6, np.int64)}
    arrays, bindings = bind_feeds(mlp_graph().inputs, feeds)
    assert bindings == {"B": 6} and arrays.keys() == feeds.keys()
    assert bind_feeds(mlp_graph().inputs, {"x": np.zeros((3, 4))}, required=["x"])[1] == {"B": 3}


def test_kernel_error_names_node_and_user_line():
    with tc.graph() as b:
        logits = tc.input("logits", ("B", 3))
        labels = tc.input("labels", ("B",), "i64")
        loss = tc.softmax_cross_entropy(logits, labels)  # this line is reported
        g = b.graph({"loss": loss})
    node = g.producers[g.outputs[0][1]]
    with pytest.raises(tc.DataError) as info:
        run_graph(g, {"logits": np.zeros((2, 3)), "labels": np.array([0, 3])})
    assert f"softmax_cross_entropy %{node.out}" in str(info.value)
    assert info.value.loc == node.loc and node.loc.startswith("test_reference.py:")


def test_make_function_rejects_unknown_names_and_bad_params():
    g = mlp_graph()
    with pytest.raises(tc.IRError, match="'nope' is not an input or parameter"):
        make_function(g, ["x", "labels", "nope"])
    f = make_function(g, ["x", "labels", "w1"])
    with pytest.raises(tc.ShapeError, match="parameter 'w1' is f32\\[4,8\\]"):
        f([np.zeros((2, 4)), np.zeros(2, np.int64), np.zeros((8, 4))])
    x, labels, w1 = RNG.normal(size=(2, 4)), np.array([2, 0]), RNG.normal(size=(4, 8))
    loss = f([x, labels, w1])[0]
    params = {**init_params(g), "w1": w1}
    np.testing.assert_allclose(loss, numpy_mlp(x, labels, params)[1], rtol=1e-5)


def test_output_and_update_names_must_not_collide():
    with tc.graph() as b:
        w = tc.param("w", (2,))
        g = b.graph({"w": w + 1}, updates={"w": w * 2})
    with pytest.raises(tc.IRError, match="both an output and an updated parameter"):
        run_graph(g, {})
