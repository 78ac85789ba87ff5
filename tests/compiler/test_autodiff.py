"""The autodiff driver, VJP table, decompositions and the autodiff pass: composites' hand rules vs
their decompositions, provenance, fan-out, stop-gradients, and the pass's outputs."""

from __future__ import annotations

import numpy as np
import pytest

import tinyc as tc
from tests.gradcheck import numeric_grad
from tinyc.compiler.autodiff import gradients
from tinyc.compiler.decompose import DECOMPOSITIONS, decompose_graph
from tinyc.compiler.passes import PASSES, load_all
from tinyc.compiler.vjp import VJPS
from tinyc.ir.builder import Builder
from tinyc.ir.errors import IRError
from tinyc.ir.ops import COMPOSITE, OPS
from tinyc.ir.printer import format_graph
from tinyc.ir.verify import verify
from tinyc.runtime.reference import run_graph

RNG = np.random.default_rng(0)


def test_every_differentiable_op_has_a_rule_or_decomposition():
    for name, s in OPS.items():
        if s.differentiable:
            assert name in VJPS or name in DECOMPOSITIONS, name
    assert set(VJPS) <= {n for n, s in OPS.items() if s.differentiable}
    assert set(DECOMPOSITIONS) == set(COMPOSITE)


# --------------------------------------------------------------------------- composites

# composite -> (attrs, builds its inputs from an f64 Tensor x[3,5] and i64 labels[3])
COMPOSITE_CASES = {
    "softmax": ({"axis": -1}, lambda x, lbl: [x]),
    "log_softmax": ({"axis": 0}, lambda x, lbl: [x]),
    "layer_norm": ({"axis": -1, "eps": 1e-5}, lambda x, lbl: [x]),
    "softmax_cross_entropy": ({"reduction": "mean"}, lambda x, lbl: [x, lbl]),
    "softmax_grad": ({"axis": -1}, lambda x, lbl: [tc.softmax(x), x * x]),
    "log_softmax_grad": ({"axis": -1}, lambda x, lbl: [tc.log_softmax(x), x * x]),
    "layer_norm_grad": ({"axis": -1, "eps": 1e-5}, lambda x, lbl: [x, tc.exp(x)]),
    "softmax_cross_entropy_grad": ({"reduction": "none"}, lambda x, lbl: [x, lbl, tc.sum(x, axis=-1)]),
}


def test_composite_cases_cover_every_composite():
    assert set(COMPOSITE_CASES) == set(COMPOSITE)


def _feeds():
    return {"x": RNG.normal(size=(3, 5)), "lbl": RNG.integers(0, 5, size=(3,)), "r": RNG.normal(size=(3, 5))}


@pytest.mark.parametrize("op", sorted(COMPOSITE))
def test_composite_kernel_matches_decomposition(op):
    attrs, make = COMPOSITE_CASES[op]
    with tc.graph() as b:
        x, lbl = tc.input("x", (3, 5), "f64"), tc.input("lbl", (3,), "i64")
        y = b.apply(op, make(x, lbl), **attrs)
        graph = b.graph({"y": y})
    flat = decompose_graph(graph)
    verify(flat)
    assert not {n.op for n in flat.nodes} & set(COMPOSITE)
    feeds = _feeds()
    np.testing.assert_allclose(run_graph(flat, feeds)["y"], run_graph(graph, feeds)["y"], rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("op", ["softmax", "log_softmax", "layer_norm", "softmax_cross_entropy"])
def test_hand_vjp_matches_gradient_of_decomposition(op):
    attrs, make = COMPOSITE_CASES[op]
    with tc.graph() as b:
        x, lbl = tc.input("x", (3, 5), "f64"), tc.input("lbl", (3,), "i64")
        r = tc.input("r", (3, 5), "f64")
        v = tc.input("v", (3, 5), "f64")
        ins = make(x, lbl)
        hand = b.apply(op, ins, **attrs)
        start = len(b.nodes)
        g_hand = tc.grad(hand if hand.shape == () else tc.sum(hand * r), x)
        assert f"{op}_grad" in {n.op for n in b.nodes[start:]}  # the hand rule was used
        dec = DECOMPOSITIONS[op](b, ins, **attrs)
        g_dec = tc.grad(dec if dec.shape == () else tc.sum(dec * r), x)
        # second order: Hessian-vector products through the *_grad op (differentiated via its
        # decomposition) and through the fully decomposed op
        hv_hand = tc.grad(tc.sum(g_hand * v), x)
        hv_dec = tc.grad(tc.sum(g_dec * v), x)
        run = tc.function([g_hand, g_dec, hv_hand, hv_dec], [x, lbl, r, v])
    feeds = _feeds()
    got = run(feeds["x"], feeds["lbl"], feeds["r"], RNG.normal(size=(3, 5)))
    np.testing.assert_allclose(got[0], got[1], rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(got[2], got[3], rtol=1e-8, atol=1e-10)


# --------------------------------------------------------------------------- provenance


def test_backward_nodes_carry_forward_location_and_note():
    with tc.graph() as b:
        x = tc.input("x", ("B", 4), "f64")
        y = tc.softmax(x)  # the line every "grad of softmax" node points at
        loss = tc.sum(y * y)
        start = len(b.nodes)
        (gx,) = tc.grad(loss, [x])
        mid = len(b.nodes)
        tc.grad(tc.sum(gx), x)
        graph = b.graph({"loss": loss, "gx": gx})
    softmax_node = next(n for n in b.nodes if n.op == "softmax")
    assert softmax_node.loc.startswith("test_autodiff.py:")
    backward = b.nodes[start:mid]
    assert all(n.note.startswith("grad") for n in backward)
    sg = next(n for n in backward if n.op == "softmax_grad")
    assert (sg.note, sg.loc) == ("grad of softmax", softmax_node.loc)
    assert f"# grad of softmax @ {softmax_node.loc}" in format_graph(graph)
    second = b.nodes[mid:]
    assert any(n.note == "grad of grad of softmax" and n.loc == softmax_node.loc for n in second)


# --------------------------------------------------------------------------- the driver


def test_fan_out_accumulates():
    with tc.graph():
        x = tc.input("x", (4,), "f64")
        y = x * x + tc.exp(x) + 3.0 * x  # x is read four times
        g = tc.grad(y, x)
        f = tc.function(g, [x])
    x0 = RNG.normal(size=4)
    np.testing.assert_allclose(f(x0), 2 * x0 + np.exp(x0) + 3.0, rtol=1e-12)


def test_integer_values_get_no_gradient():
    with tc.graph() as b:
        logits = tc.input("logits", (3, 4), "f64")
        labels = tc.input("labels", (3,), "i64")
        loss = tc.softmax_cross_entropy(logits, labels)
        g_logits, g_labels = tc.grad(loss, [logits, labels])
        # argmax and comparisons stop gradients; only sum(logits) contributes
        z = tc.sum(logits) + tc.sum(tc.cast(tc.argmax(logits), "f64")) + tc.sum(tc.cast(logits > 0.0, "f64"))
        gz = tc.grad(z, logits)
        f = tc.function(gz, [logits])
        graph = b.graph({"loss": loss})
    assert g_labels is None and g_logits.type == logits.type
    np.testing.assert_array_equal(f(RNG.normal(size=(3, 4))), np.ones((3, 4)))
    _, grads = gradients(graph, dict(graph.outputs)["loss"], ["logits", "labels"])
    assert grads["labels"] is None and grads["logits"] is not None
    with pytest.raises(IRError, match="float"):
        tc.grad(tc.argmax(logits), logits)


def test_unreachable_input_gets_zeros():
    with tc.graph():
        x = tc.input("x", (2, 3), "f64")
        z = tc.input("z", ("B", 3), "f64")
        gx, gz = tc.grad(tc.sum(x * 2.0), [x, z])
        f = tc.function([gx, gz], [x, z])
    assert gz.type == z.type
    got = f(np.ones((2, 3)), np.ones((5, 3)))
    np.testing.assert_array_equal(got[0], np.full((2, 3), 2.0))
    np.testing.assert_array_equal(got[1], np.zeros((5, 3)))


def test_gradient_with_respect_to_an_intermediate_value():
    with tc.graph():
        x = tc.input("x", (3,), "f64")
        h = x * 2.0
        y = tc.exp(h) * x
        gh, gx = tc.grad(y, [h, x])
        f = tc.function([gh, gx], [x])
    x0 = RNG.normal(size=3)
    gh0, gx0 = f(x0)
    np.testing.assert_allclose(gh0, np.exp(2 * x0) * x0, rtol=1e-12)
    np.testing.assert_allclose(gx0, np.exp(2 * x0) * (2 * x0 + 1), rtol=1e-12)


def test_ties_share_the_cotangent():
    with tc.graph():
        x = tc.input("x", (3,), "f64")
        y = tc.input("y", (3,), "f64")
        g_max = tc.grad(tc.max(x), x)
        gx, gy = tc.grad(tc.sum(tc.maximum(x, y)), [x, y])
        f = tc.function([g_max, gx, gy], [x, y])
    got = f(np.array([1.0, 1.0, 0.0]), np.array([1.0, 2.0, -1.0]))
    np.testing.assert_array_equal(got[0], [0.5, 0.5, 0.0])
    np.testing.assert_array_equal(got[1], [0.5, 0.0, 1.0])
    np.testing.assert_array_equal(got[2], [0.5, 1.0, 0.0])


def test_no_dead_backward_nodes():
    # only the cotangents asked for are built: no d/dc for a constant, no log for a fixed exponent
    with tc.graph() as b:
        x = tc.input("x", (2, 3), "f64")
        c = tc.constant(np.ones((2, 3)), "f64")
        y = tc.sum(x**2.0 * c @ tc.constant(np.ones((3, 3)), "f64"))
        start = len(b.nodes)
        g = tc.grad(y, x)
    backward = b.nodes[start:]
    assert "log" not in {n.op for n in backward}
    needed = {g.name}
    for n in reversed(backward):
        assert n.out in needed, f"dead backward node {n}"
        needed.update(n.inputs)


def test_gradients_is_pure_and_takes_a_seed():
    with tc.graph() as b:
        x = tc.input("x", (2, 3), "f64")
        tc.input("r", (2, 3), "f64")  # the seed cotangent, passed by name
        y = tc.exp(x)
        graph = b.graph({"y": y})
    before = format_graph(graph)
    new, grads = gradients(graph, dict(graph.outputs)["y"], ["x"], seed_cotangent="r")
    assert format_graph(graph) == before and len(new.nodes) > len(graph.nodes)
    verify(new)
    with_grad = new.with_nodes(new.nodes, outputs=new.outputs + (("gx", grads["x"]),))
    feeds = {"x": RNG.normal(size=(2, 3)), "r": RNG.normal(size=(2, 3))}
    np.testing.assert_allclose(run_graph(with_grad, feeds)["gx"], feeds["r"] * np.exp(feeds["x"]), rtol=1e-12)


def test_long_chain_is_linear_time():
    # 10k+ nodes: a quadratic driver would take minutes here
    b = Builder("chain")
    x = b.input("x", (3,), "f64")
    h = x
    for _ in range(3000):
        h = h * 1.0001 + 0.001
    graph = b.graph({"loss": b.apply("sum", [h])})
    assert len(graph.nodes) > 10_000
    new, grads = gradients(graph, dict(graph.outputs)["loss"], ["x"])
    out = new.with_nodes(new.nodes, outputs=(("g", grads["x"]),))
    np.testing.assert_allclose(run_graph(out, {"x": np.zeros(3)})["g"], np.full(3, 1.0001**3000), rtol=1e-9)


# --------------------------------------------------------------------------- the pass


def _model_graph(loss_name="loss"):
    with tc.graph() as b:
        x = tc.input("x", ("B", 3), "f64")
        labels = tc.input("labels", ("B",), "i64")
        with tc.scope("fc"):
            w = tc.param("w", (3, 4), tc.init.normal(0.5), dtype="f64")
            bias = tc.param("b", (4,), dtype="f64")
        tc.param("unused", (2,), dtype="f64")
        loss = tc.softmax_cross_entropy(tc.relu(x @ w + bias), labels)
        return b.graph({loss_name: loss, "logits_sum": tc.sum(x @ w)}, meta={"loss": loss_name})


def test_autodiff_pass_adds_parameter_gradients():
    load_all()
    graph = _model_graph("nll")
    before = format_graph(graph)
    new = PASSES["autodiff"].fn(graph)
    assert format_graph(graph) == before  # pure
    verify(new, where="autodiff")
    outputs = dict(new.outputs)
    assert [n for n, _ in new.outputs] == ["nll", "logits_sum", "grad.fc.w", "grad.fc.b", "grad.unused"]
    for p in graph.params:
        assert new.types[outputs[f"grad.{p.name}"]] == p.type
    rng = np.random.default_rng(1)
    feeds = {"x": rng.normal(size=(5, 3)), "labels": rng.integers(0, 4, size=5)}
    params = {"fc.w": rng.normal(size=(3, 4)), "fc.b": rng.normal(size=4), "unused": rng.normal(size=2)}
    got = run_graph(new, feeds, params)
    np.testing.assert_array_equal(got["grad.unused"], np.zeros(2))

    def loss_at(name):
        return lambda value: float(run_graph(graph, feeds, {**params, name: value})["nll"])

    for name in ("fc.w", "fc.b"):
        coords = list(np.ndindex(params[name].shape))
        numeric = numeric_grad(loss_at(name), params[name], coords, 1e-6).reshape(params[name].shape)
        np.testing.assert_allclose(got[f"grad.{name}"], numeric, rtol=1e-6, atol=1e-9)


def test_autodiff_pass_errors():
    load_all()
    graph = _model_graph("nll")
    with pytest.raises(IRError, match="no output 'nll'"):
        PASSES["autodiff"].fn(graph.with_nodes(graph.nodes, outputs=graph.outputs[1:]))
    once = PASSES["autodiff"].fn(graph)
    with pytest.raises(IRError, match="already has output"):
        PASSES["autodiff"].fn(once)


def test_autodiff_pass_on_a_graph_without_parameters_adds_nothing():
    from tinyc.compiler.passes import load_all

    with tc.graph() as b:
        x = tc.input("x", ("B", 3))
        loss = (x * x).sum()
    g = b.graph({"loss": loss}, meta={"loss": "loss"})
    out = load_all()["autodiff"].fn(g)
    assert out.outputs == g.outputs and out.nodes == g.nodes
