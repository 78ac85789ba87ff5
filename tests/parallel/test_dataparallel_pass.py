"""The `dataparallel` pass and LocalComm: N simulated ranks train as one process on the global batch."""

from __future__ import annotations

import numpy as np
import pytest

import tinyc as tc
from tinyc.compiler import manager
from tinyc.compiler.driver import compile_graph
from tinyc.compiler.passes.cse import cse
from tinyc.compiler.passes.dce import dce
from tinyc.compiler.passes.fold import fold
from tinyc.ir.builder import new_graph
from tinyc.ir.train import optimizer_spec
from tinyc.runtime import Executor
from tinyc.runtime.comm import LocalComm, run_ranks
from tinyc.runtime.reference import run_graph


def model_graph(opt=None):
    """A two-layer classifier with a scalar metric (accuracy) and a per-example output (logits)."""
    with new_graph("mlp") as b:
        x, y = tc.input("x", ("B", 6)), tc.input("y", ("B",), "i64")
        with tc.scope("l0"):
            h = tc.relu(x @ tc.param("w", (6, 16), tc.init.xavier_uniform()) + tc.param("b", (16,), tc.init.uniform(-0.1, 0.1)))
        logits = tc.layer_norm(h) @ tc.param("out", (16, 3), tc.init.xavier_uniform())
        acc = tc.cast(tc.equal(tc.argmax(logits), y), "f32").mean()
        opt = opt or tc.optim.SGD(0.1, momentum=0.9)
        return b.graph({"loss": tc.softmax_cross_entropy(logits, y), "accuracy": acc, "logits": logits},
                       meta={"loss": "loss", "optimizer": optimizer_spec(opt), "train": {"batch_size": 8}})


def data(n: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 6)).astype(np.float32)
    return {"x": x, "y": (x[:, 0] > 0).astype(np.int64) + (x[:, 1] > 0.5)}


def test_one_allreduce_of_every_gradient_and_scalar_output():
    program, _ = compile_graph(model_graph())
    g = program.entries["train_step"].graph
    reduces = [n for n in g.nodes if n.op == "allreduce"]
    assert len(reduces) == 1
    packed = g.producers[reduces[0].inputs[0]]
    assert packed.op == "flat_concat"
    params = sum(p.type.numel() for p in g.params if p.kind == "param")
    assert packed.type.shape == (params + 2,)  # every gradient, the loss and the accuracy
    consumers = {v for n in g.nodes if n.op in ("slice", "reshape") for v in n.inputs}
    assert reduces[0].out in consumers
    assert "batch_share" in {i.name for i in g.inputs}
    # the per-example output stays this rank's own; the predict entry has no collective
    assert g.producers[dict(g.outputs)["logits"]].op not in ("slice", "reshape")
    assert not any(n.op == "allreduce" for n in program.entries["predict"].graph.nodes)


def test_one_rank_step_equals_the_step_without_the_pass(monkeypatch):
    with_pass, _ = compile_graph(model_graph(tc.optim.Adam(0.01)))
    monkeypatch.setattr(manager, "DEFAULT_PIPELINE", tuple(p for p in manager.DEFAULT_PIPELINE if p != "dataparallel"))
    without, _ = compile_graph(model_graph(tc.optim.Adam(0.01)))
    a, b = Executor(with_pass, seed=3), Executor(without, seed=3)
    batch = data(8)
    for _ in range(3):
        ra, rb = a.train_step(batch, lr=0.01), b.train_step(batch, lr=0.01)
        assert ra["loss"] == pytest.approx(rb["loss"], rel=1e-6)
        assert ra["accuracy"] == rb["accuracy"]
    for name in b.params:
        np.testing.assert_allclose(a.params[name], b.params[name], rtol=1e-5, atol=1e-7, err_msg=name)


def _ranks_run(program, batches, world: int, seed: int = 0):
    """Train on each global batch with `world` LocalComm ranks (uneven contiguous slices);
    returns (per-step losses, final parameters) of every rank."""
    def rank(comm):
        ex = Executor(program, seed=seed, comm=comm)
        losses = []
        for batch in batches:
            n = len(batch["y"])
            part = np.array_split(np.arange(n), world)[comm.rank]
            out = ex.train_step({k: v[part] for k, v in batch.items()}, lr=0.1, share=len(part) / n)
            losses.append((out["loss"], out["accuracy"]))
        return losses, ex.state_dict()

    return run_ranks(LocalComm.world(world), rank)


@pytest.mark.parametrize("world", [2, 3])
def test_local_ranks_train_as_one_process_on_the_global_batch(world):
    program, _ = compile_graph(model_graph())
    full = data(7 * 20, seed=1)
    batches = [{k: v[i * 7:(i + 1) * 7] for k, v in full.items()} for i in range(20)]  # 7 = 4+3, 3+2+2
    one = Executor(program, seed=0)
    ref = [one.train_step(b, lr=0.1) for b in batches[:1]]
    first_params = one.state_dict()
    ref += [one.train_step(b, lr=0.1) for b in batches[1:]]
    ranks = _ranks_run(program, batches, world)
    for losses, _ in ranks[1:]:
        assert losses == ranks[0][0]  # every rank holds the same global metrics
    for (loss, acc), r in zip(ranks[0][0], ref):
        assert loss == pytest.approx(r["loss"], rel=1e-4)
        assert acc == pytest.approx(r["accuracy"], abs=1e-6)
    assert ranks[0][0][0][0] == pytest.approx(ref[0]["loss"], rel=1e-6)
    for name, a in ranks[0][1].items():
        for _, state in ranks[1:]:
            np.testing.assert_array_equal(state[name], a, err_msg=name)  # replicas stay identical
    step1 = _ranks_run(program, batches[:1], world)[0][1]
    for name in first_params:
        np.testing.assert_allclose(step1[name], first_params[name], rtol=1e-6, atol=1e-7, err_msg=name)


@pytest.mark.parametrize("world", [2, 3])
def test_the_reduced_gradients_are_the_global_batch_s(world, monkeypatch):
    # without the optimizer the step returns the gradients it would apply: those of N ranks on
    # uneven parts (7 = 4+3, 3+2+2) are the gradients of one process on the global batch
    monkeypatch.setattr(manager, "DEFAULT_PIPELINE", tuple(p for p in manager.DEFAULT_PIPELINE if p != "optimizer"))
    program, _ = compile_graph(model_graph())
    batch = data(7, seed=4)
    want = Executor(program, seed=0).train_step(batch, lr=0.1)

    def rank(comm):
        part = np.array_split(np.arange(7), world)[comm.rank]
        return Executor(program, seed=0, comm=comm).train_step({k: v[part] for k, v in batch.items()}, lr=0.1,
                                                              share=len(part) / 7)

    got = run_ranks(LocalComm.world(world), rank)
    grads = [k for k in want if k.startswith("grad.")]
    assert len(grads) == 3
    for k in grads:
        for r in got:
            np.testing.assert_array_equal(r[k], got[0][k])  # every rank applies the same step
        error = np.linalg.norm(got[0][k] - want[k]) / np.linalg.norm(want[k])
        assert error <= 1e-6, (k, error)
    assert got[0]["loss"] == pytest.approx(want["loss"], rel=1e-6)


def test_local_ranks_are_bitwise_reproducible():
    program, _ = compile_graph(model_graph(tc.optim.Adam(0.01)))
    full = data(40, seed=2)
    batches = [{k: v[i * 8:(i + 1) * 8] for k, v in full.items()} for i in range(5)]
    a, b = _ranks_run(program, batches, 2), _ranks_run(program, batches, 2)
    assert a[0][0] == b[0][0]
    for name in a[0][1]:
        np.testing.assert_array_equal(a[0][1][name], b[0][1][name])


def test_local_comm_sums_in_rank_order():
    parts = [np.float32([1e8, 1.0]), np.float32([1.0, 2.0]), np.float32([-1e8, 3.0])]

    def summed(c):
        buf = parts[c.rank].copy()
        c.sum_in_place(buf)
        return buf

    got = run_ranks(LocalComm.world(3), summed)
    want = (parts[0] + parts[1]) + parts[2]  # (1e8 + 1) rounds to 1e8 in f32: the order shows
    for g in got:
        np.testing.assert_array_equal(g, want)
    assert want[0] == 0.0


def test_an_exception_on_one_rank_ends_every_rank():
    def rank(comm):
        if comm.rank == 1:
            raise ValueError("rank 1 failed")
        comm.Barrier()  # would wait for rank 1 forever without the abort

    with pytest.raises(ValueError, match="rank 1 failed"):
        run_ranks(LocalComm.world(2), rank)


def _allreduce_twice():
    with new_graph("g") as b:
        x = tc.input("x", (3,))
        c = tc.constant(np.float32([1, 2, 3]))
        r1, r2 = (b.apply("allreduce", [x]) for _ in range(2))
        rc = b.apply("allreduce", [c])
        return b.graph({"a": r1, "b": r2, "c": rc})


def test_passes_keep_every_allreduce():
    g = _allreduce_twice()
    for p in (cse, fold, dce):
        out = p(g)
        assert sum(n.op == "allreduce" for n in out.nodes) == 3, p.__name__
    want = run_graph(g, {"x": np.float32([4, 5, 6])})  # one rank: the identity
    np.testing.assert_array_equal(want["c"], [1, 2, 3])


def test_gradients_are_computed_in_the_flat_buffer():
    program, _ = compile_graph(model_graph(tc.optim.Adam(0.01)))
    entry = program.entries["train_step"]
    g, plan = entry.graph, entry.plan
    packer = next(n for n in g.nodes if n.op == "flat_concat")
    grads = [v for v in packer.inputs if g.producers[v].note != "dataparallel"]  # all but the weighted metrics
    assert grads and all(plan.placed.get(v) == packer.out for v in grads)
    reduced = next(n for n in g.nodes if n.op == "allreduce")
    assert plan.reuse_input.get(reduced.out) == packer.out  # summed in place: no second copy
    ex = Executor(program, seed=1)
    batch = data(8)
    ex.train_step(batch, lr=0.01)
    compiled = next(iter(ex._runners["train_step"].cache.values()))
    ops = [node.op for *_, node in compiled.instrs]
    assert "flat_concat" not in ops  # every part is in place: packing costs nothing
    flat = next(out for *_, out, node in compiled.instrs if node.op == "allreduce")
    for v in grads:  # each gradient's array is its part of the one buffer
        assert any(np.shares_memory(out, flat) for *_, out, node in compiled.instrs if node.out == v)


def test_gradients_past_the_size_limit_are_packed_into_several_buffers(monkeypatch):
    """Gradients that total more than one tensor may hold go into several flat buffers, each
    reduced on its own (the limit lowered here so a small model needs several): ranks still train
    as one process, and no size error names a buffer the user never wrote."""
    from tinyc.compiler.passes import dataparallel

    whole, _ = compile_graph(model_graph())
    monkeypatch.setattr(dataparallel, "PACK_LIMIT", 100)  # the model's gradients total 160 elements
    cut, _ = compile_graph(model_graph())
    g = cut.entries["train_step"].graph
    packers = [n for n in g.nodes if n.op == "flat_concat"]
    assert len(packers) >= 2 and all(n.type.numel() <= 100 for n in packers)
    assert sum(n.op == "allreduce" for n in g.nodes) == len(packers)
    params = sum(p.type.numel() for p in g.params if p.kind == "param")
    assert sum(n.type.numel() for n in packers) == params + 2  # every gradient once, loss and accuracy
    full = data(7 * 4, seed=4)
    batches = [{k: v[i * 7:(i + 1) * 7] for k, v in full.items()} for i in range(4)]
    want, got = _ranks_run(whole, batches, 2), _ranks_run(cut, batches, 2)
    for (w_losses, w_state), (g_losses, g_state) in zip(want, got):
        np.testing.assert_allclose(g_losses, w_losses, rtol=1e-6)
        for name in w_state:
            np.testing.assert_allclose(g_state[name], w_state[name], rtol=1e-6, atol=1e-7, err_msg=name)
