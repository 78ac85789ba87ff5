"""The pass manager: strict pipelines, verification naming the pass, statistics, callbacks."""

from __future__ import annotations

import itertools
from dataclasses import replace

import numpy as np
import pytest

import tinyc as tc
from tinyc.compiler.manager import (
    DEFAULT_PIPELINE,
    FORWARD_PIPELINE,
    PassStats,
    available,
    estimate_bytes,
    estimate_flops,
    format_stats,
    run_pipeline,
)
from tinyc.compiler.passes import PASSES, register_pass
from tinyc.ir.errors import IRError
from tinyc.ir.graph import Graph
from tinyc.ir.types import TensorType
from tinyc.runtime.reference import run_graph


def mlp() -> Graph:
    with tc.graph() as b:
        x = tc.input("x", ["B", 4])
        w = tc.param("w", [4, 5], init=tc.init.normal(0.1))
        h = tc.relu(x @ w) * 1.0 + 0.0
        y = tc.sum(h, axis=1) + tc.sum(h, axis=1)
        return b.graph({"y": y})


def test_pipelines_name_registered_passes():
    assert FORWARD_PIPELINE == tuple(p for p in DEFAULT_PIPELINE if p not in ("autodiff", "dataparallel", "optimizer"))
    # run_pipeline is strict, so the driver's pipelines must name only registered passes
    assert available(DEFAULT_PIPELINE) == DEFAULT_PIPELINE
    for name in DEFAULT_PIPELINE:
        assert PASSES[name].description, name  # `tinyc compile --list-passes` shows it


def test_run_pipeline_records_stats_and_calls_back():
    g = mlp()
    names = ("verify", "simplify", "fold", "cse", "dce", "schedule")
    seen = []
    out, stats = run_pipeline(g, names, on_pass=lambda i, name, graph, s: seen.append((i, name, graph, s)), batch=8)
    assert [s.name for s in stats] == list(names)
    assert [(i, n) for i, n, _, _ in seen] == list(enumerate(names))
    assert seen[-1][2] is out and [s for *_, s in seen] == stats
    assert stats[0].nodes_before == len(g.nodes)
    for a, b in itertools.pairwise(stats):
        assert b.nodes_before == a.nodes_after
    assert stats[-1].nodes_after == len(out.nodes) < len(g.nodes)
    assert all(isinstance(s, PassStats) and s.ms >= 0 and s.flops > 0 and s.bytes > 0 for s in stats)
    assert stats[-1].flops == estimate_flops(out, 8) < estimate_flops(g, 8)
    feeds = {"x": np.random.default_rng(0).standard_normal((8, 4)).astype(np.float32)}
    np.testing.assert_allclose(run_graph(out, feeds)["y"], run_graph(g, feeds)["y"], rtol=1e-6)
    assert "simplify" in format_stats(stats)


def test_estimates():
    with tc.graph() as b:
        x = tc.input("x", ["B", 4])
        w = tc.param("w", [4, 5])
        g = b.graph({"y": tc.relu(x @ w)})
    # matmul: 2 * (B*5) * 4 ; relu: B*5
    assert estimate_flops(g, batch=3) == 2 * 15 * 4 + 15
    assert estimate_flops(g) == 2 * 5 * 4 + 5  # symbols at 1
    # x, w, matmul, relu in f32
    assert estimate_bytes(g, batch=3) == 4 * (12 + 20 + 15 + 15)


def test_unknown_pass_lists_the_known_ones():
    with pytest.raises(IRError) as err:
        run_pipeline(mlp(), ["simplify", "no_such_pass"])
    assert "no_such_pass" in str(err.value) and "simplify" in str(err.value) and "dce" in str(err.value)


@pytest.fixture
def broken_pass():
    """A pass that gives one node a wrong type, registered for the test only."""

    @register_pass("broken_for_test")
    def broken(graph: Graph) -> Graph:
        """Corrupt a type."""
        n = graph.nodes[0]
        bad = replace(n, type=TensorType("f64", n.type.shape))
        return graph.with_nodes((bad,) + graph.nodes[1:])

    yield "broken_for_test"
    del PASSES["broken_for_test"]


def test_verification_failure_names_the_pass(broken_pass):
    with pytest.raises(IRError) as err:
        run_pipeline(mlp(), ["simplify", broken_pass, "dce"])
    assert f"after pass {broken_pass}" in str(err.value)
    # without verification the manager trusts the pass
    run_pipeline(mlp(), [broken_pass], verify=False)


def test_default_pipeline_on_a_training_graph_keeps_loss_and_updates():
    """The whole registered pipeline against autodiff + optimizer alone, on a small classifier."""
    names = DEFAULT_PIPELINE
    with tc.graph() as b:
        x = tc.input("x", ["B", 4])
        labels = tc.input("labels", ["B"], "i64")
        w1 = tc.param("w1", [4, 8], init=tc.init.normal(0.5))
        w2 = tc.param("w2", [8, 3], init=tc.init.normal(0.5))
        h = tc.layer_norm(tc.relu(x @ w1) * 1.0)
        loss = tc.softmax_cross_entropy(h @ w2, labels)
        spec = tc.optim.optimizer_spec(tc.optim.Adam(lr=0.1))
        g = b.graph({"loss": loss}, meta={"loss": "loss", "optimizer": spec})
    base, _ = run_pipeline(g, [n for n in names if n in ("verify", "autodiff", "dataparallel", "optimizer")])
    out, stats = run_pipeline(g, names, batch=5)
    assert [s.name for s in stats] == list(names)
    rng = np.random.default_rng(1)
    feeds = {"x": rng.standard_normal((5, 4)).astype(np.float32), "labels": rng.integers(0, 3, 5),
             "lr": np.float32(0.1), "batch_share": np.float32(1)}
    want, got = run_graph(base, feeds), run_graph(out, feeds)
    assert want.keys() == got.keys() and "w1" in got
    for k in want:
        np.testing.assert_allclose(got[k], want[k], rtol=1e-5, atol=1e-6, err_msg=k)
    assert len(out.nodes) < len(base.nodes)


def test_a_failing_pass_is_named():
    @register_pass("raises_for_test")
    def raises(graph: Graph) -> Graph:
        """Fail."""
        raise ZeroDivisionError("boom")

    @register_pass("returns_none_for_test")
    def returns_none(graph: Graph) -> Graph:
        """Forget to return."""

    try:
        with pytest.raises(ZeroDivisionError) as err:
            run_pipeline(mlp(), ["raises_for_test"])
        assert "in pass 'raises_for_test'" in err.value.__notes__
        with pytest.raises(IRError, match="returns_none_for_test.*NoneType"):
            run_pipeline(mlp(), ["returns_none_for_test"])
    finally:
        del PASSES["raises_for_test"], PASSES["returns_none_for_test"]
