"""The optimizer pass: one step equals torch-semantics NumPy, and small problems train to ~0 loss."""

from __future__ import annotations

import numpy as np
import pytest

import tinyc as tc
from tinyc.compiler.driver import compile_graph
from tinyc.compiler.manager import run_pipeline
from tinyc.compiler.passes.memplan import memplan
from tinyc.compiler.passes.optimizer import optimizer
from tinyc.ir.builder import new_graph
from tinyc.ir.program import Entry, Program
from tinyc.ir.train import optimizer_spec
from tinyc.runtime import Executor

OPTIMIZERS = {
    "sgd": tc.optim.SGD(lr=0.1),
    "sgd_wd": tc.optim.SGD(lr=0.1, weight_decay=0.1),
    "momentum": tc.optim.SGD(lr=0.1, momentum=0.9, weight_decay=0.01),
    "nesterov": tc.optim.SGD(lr=0.1, momentum=0.9, nesterov=True),
    "adam": tc.optim.Adam(lr=0.01),
    "adam_wd": tc.optim.Adam(lr=0.01, weight_decay=0.1),
    "adamw": tc.optim.AdamW(lr=0.01, weight_decay=0.1),
}


def _numpy_steps(opt, w0: np.ndarray, grads: list[np.ndarray], lr: float) -> np.ndarray:
    """torch.optim semantics, written out in float64 NumPy."""
    w = w0.astype(np.float64)
    buf = m = v = None
    for t, g in enumerate(grads, start=1):
        g = g.astype(np.float64)
        if opt.kind == "sgd":
            g = g + opt.weight_decay * w
            if opt.momentum:
                buf = g.copy() if buf is None else opt.momentum * buf + g
                g = g + opt.momentum * buf if opt.nesterov else buf
            w = w - lr * g
        else:
            if opt.kind == "adam":
                g = g + opt.weight_decay * w
            else:
                w = w * (1 - lr * opt.weight_decay)
            m = (1 - opt.beta1) * g if m is None else opt.beta1 * m + (1 - opt.beta1) * g
            v = (1 - opt.beta2) * g * g if v is None else opt.beta2 * v + (1 - opt.beta2) * g * g
            m_hat, v_hat = m / (1 - opt.beta1**t), v / (1 - opt.beta2**t)
            w = w - lr * m_hat / (np.sqrt(v_hat) + opt.eps)
    return w


def _grad_fed_program(opt) -> Program:
    """A program whose gradient is an input `g`, so steps can be driven by hand."""
    with new_graph("opt") as b:
        g = tc.input("g", (3, 2))
        w = tc.param("w", (3, 2), tc.init.normal(1.0))
        loss = (w * g).sum()
        graph = b.graph({"loss": loss, "grad.w": g * 1.0}, meta={"optimizer": optimizer_spec(opt)})
    graph = optimizer(graph)
    return Program({"train_step": Entry("train_step", graph, memplan(graph))})


@pytest.mark.parametrize("name", OPTIMIZERS)
def test_steps_match_numpy(name):
    opt = OPTIMIZERS[name]
    ex = Executor(_grad_fed_program(opt), seed=3)
    w0 = ex.params["w"].copy()
    rng = np.random.default_rng(1)
    grads = [rng.normal(size=(3, 2)).astype(np.float32) for _ in range(4)]
    for g in grads:
        ex.train_step({"g": g}, lr=opt.lr)
    np.testing.assert_allclose(ex.params["w"], _numpy_steps(opt, w0, grads, opt.lr), rtol=2e-5, atol=1e-6)


@pytest.mark.parametrize("opt, kinds", [
    (tc.optim.Adam(), {"w": "param", "optim.step": "state", "w.m": "state", "w.v": "state"}),
    (tc.optim.SGD(), {"w": "param"}),  # no momentum: no state
])
def test_pass_adds_lr_state_and_updates(opt, kinds):
    with new_graph("opt") as b:
        g = tc.input("g", (3,))
        w = tc.param("w", (3,))
        graph = b.graph({"loss": (w * g).sum(), "grad.w": g * 2.0}, meta={"optimizer": optimizer_spec(opt)})
    out, _ = run_pipeline(graph, ["optimizer", "verify"])
    assert [i.name for i in out.inputs][-1] == "lr" and out.types["lr"].shape == ()
    assert {p.name: p.kind for p in out.params} == kinds
    assert {name for name, _ in out.updates} == set(kinds)  # every param and state slot is updated
    assert [name for name, _ in out.outputs] == ["loss"]
    added = out.nodes[len(graph.nodes):]
    assert added and all(n.note == f"optimizer {opt.kind}" for n in added)
    assert optimizer(graph) == optimizer(graph)  # pure and deterministic


# --------------------------------------------------------------------------- end to end


def _regression(opt):
    with new_graph("linreg") as b:
        x, y = tc.input("x", ("B", 3)), tc.input("y", ("B", 1))
        w, bias = tc.param("w", (3, 1)), tc.param("b", (1,))
        pred = x @ w + bias
        loss = ((pred - y) * (pred - y)).mean()
        graph = b.graph({"loss": loss, "pred": pred}, meta={"loss": "loss", "optimizer": optimizer_spec(opt),
                                                              "train": {"batch_size": 32}})
    rng = np.random.default_rng(0)
    xs = rng.normal(size=(32, 3)).astype(np.float32)
    ys = xs @ np.array([[1.0], [-2.0], [0.5]], np.float32) + 0.25
    return graph, {"x": xs, "y": ys}


def _xor(opt):
    with new_graph("xor") as b:
        x, y = tc.input("x", ("B", 2)), tc.input("y", ("B",), "i64")
        w1 = tc.param("w1", (2, 16), tc.init.kaiming_uniform(1.4))
        b1 = tc.param("b1", (16,), tc.init.uniform(0.0, 0.1))
        w2 = tc.param("w2", (16, 2), tc.init.xavier_uniform())
        logits = tc.relu(x @ w1 + b1) @ w2
        loss = tc.softmax_cross_entropy(logits, y)
        graph = b.graph({"loss": loss, "logits": logits}, meta={"loss": "loss", "optimizer": optimizer_spec(opt),
                                                                 "train": {"batch_size": 4}})
    xs = np.array([[0, 0], [0, 1], [1, 0], [1, 1]], np.float32)
    return graph, {"x": xs, "y": np.array([0, 1, 1, 0], np.int64)}


TRAINING = {
    "sgd": (tc.optim.SGD(), 0.1, 0.3),
    "momentum": (tc.optim.SGD(momentum=0.9), 0.05, 0.1),
    "adam": (tc.optim.Adam(), 0.05, 0.05),
    "adamw": (tc.optim.AdamW(weight_decay=1e-4), 0.05, 0.05),
}


@pytest.mark.parametrize("problem", [_regression, _xor])
@pytest.mark.parametrize("name", TRAINING)
def test_small_problems_train_to_zero_loss(problem, name):
    opt, lr_reg, lr_xor = TRAINING[name]
    graph, feeds = problem(opt)
    program, _ = compile_graph(graph)
    ex = Executor(program, seed=0)
    lr = lr_reg if problem is _regression else lr_xor
    first = ex.train_step(feeds, lr=lr)["loss"]
    for _ in range(400):
        loss = ex.train_step(feeds, lr=lr)["loss"]
    assert loss < 1e-2 * first, (name, first, loss)
    if problem is _xor:
        assert (np.argmax(ex.predict({"x": feeds["x"]})["logits"], -1) == feeds["y"]).all()
