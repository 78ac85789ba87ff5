"""The memory plan: valid (the planned Executor matches the reference), smaller than no reuse,
and what a training step really allocates stays close to it."""

from __future__ import annotations

import itertools
import random
import tracemalloc
from dataclasses import replace

import numpy as np
import pytest

import tinyc as tc
from tests.ir.graphgen import Chooser, build_graph
from tinyc.compiler.driver import compile_graph
from tinyc.compiler.passes.memplan import lifetimes, make_plan, memplan
from tinyc.ir.arena import pack
from tinyc.ir.builder import new_graph
from tinyc.ir.program import Entry, Program
from tinyc.ir.train import optimizer_spec
from tinyc.runtime import Executor
from tinyc.runtime.arena import arena_layout
from tinyc.runtime.reference import run_graph


def check_plan(graph, plan, batches=(1, 3, 64)) -> None:
    """No value is overwritten while still needed: values whose bytes overlap in the packed arena
    (at each of `batches`) or that share a parameter's array have disjoint lives, except a value
    written over an input that dies at its node (which then starts at the same byte)."""
    first, last = lifetimes(graph, plan.alias)
    reuse = plan.reuse_input
    types = graph.types
    for batch in batches:
        offsets, arena = arena_layout(plan, types, {"B": batch})
        spans = {}
        for v, s in plan.slots.items():
            start, size = offsets[s], types[v].nbytes(default=batch)
            assert start % 64 == 0 and start + size <= arena.nbytes, f"%{v} lies outside the arena"
            spans[v] = (start, start + size)
        values = sorted(spans, key=first.__getitem__)
        for i, a in enumerate(values):
            for b in values[i + 1:]:
                (sa, ea), (sb, eb) = spans[a], spans[b]
                if ea <= sb or eb <= sa or sa == ea or sb == eb:
                    continue  # disjoint bytes
                ok = last[a] < first[b] or (reuse.get(b) == a and last[a] == first[b] and sa == sb)
                assert ok, f"%{a} and %{b} share bytes {max(sa, sb)}..{min(ea, eb)} at batch {batch} while both alive"
    homes: dict = {}
    for v, p in plan.inplace.items():
        homes.setdefault(p, []).append(v)
    for param, values in homes.items():
        values.sort(key=first.__getitem__)
        for a, b in itertools.pairwise(values):
            ok = last[a] < first[b] or (reuse.get(b) == a and last[a] == first[b])
            assert ok, f"%{a} and %{b} share {param}'s array while both alive"
        readers = [i for i, n in enumerate(graph.nodes) if param in n.inputs]
        assert max(readers) <= first[values[0]], f"{param} is read after %{values[0]} overwrote it"
        updates = dict(graph.updates)
        assert param in updates
        assert all(v == updates[param] or v not in graph.output_values for v in values)


def _assert_same(got, want):
    for k, w in want.items():
        np.testing.assert_allclose(np.asarray(got[k]), w, rtol=1e-6, atol=1e-6, equal_nan=True, err_msg=k)


@pytest.mark.parametrize("seed", range(40))
def test_random_graphs_match_reference(seed):
    graph = build_graph(Chooser(random.Random(seed)), 14)
    plan = memplan(graph)
    check_plan(graph, plan)
    ex = Executor(Program({"f": Entry("f", graph, plan)}), seed=seed)
    rng = np.random.default_rng(seed)
    for batch in (3, 5, 3):  # a new batch size gets its own instruction list; updates chain across runs
        feeds = {i.name: rng.normal(size=i.type.concrete({"B": batch})).astype(i.type.np_dtype) for i in graph.inputs}
        params = ex.state_dict()
        with np.errstate(all="ignore"):
            want = run_graph(graph, feeds, params)
            got = ex.run("f", feeds)
        _assert_same(got, {k: want[k] for k, _ in graph.outputs})
        for p, _ in graph.updates:
            np.testing.assert_allclose(ex.params[p], want[p], rtol=1e-6, atol=1e-6, equal_nan=True, err_msg=p)


def test_random_graphs_exercise_reuse():
    plans = [memplan(build_graph(Chooser(random.Random(seed)), 14)) for seed in range(40)]
    assert sum(bool(p.inplace) for p in plans) >= 5
    assert sum(bool(p.alias) for p in plans) >= 20
    assert sum(bool(p.reuse_input) for p in plans) >= 20
    assert sum(len(set(p.slots.values())) < len(p.slots) for p in plans) >= 20  # in-place chains
    assert sum(p.arena_bytes < p.unpacked_bytes for p in plans) >= 20  # buffers sharing bytes


def _mlp(seed: int, opt, width: int | None = None, features: int = 5, norm: bool = True):
    rng = random.Random(seed)
    depth, width = rng.randint(1, 3), width or rng.choice([4, 8])
    with new_graph(f"mlp{seed}") as b:
        x, y = tc.input("x", ("B", features)), tc.input("y", ("B",), "i64")
        h = x
        for i in range(depth):
            with tc.scope(f"l{i}"):
                w = tc.param("w", (h.shape[-1], width), tc.init.xavier_uniform())
                h = tc.relu(h @ w + tc.param("b", (width,), tc.init.uniform(-0.1, 0.1)))
                if rng.random() < 0.5 and norm:
                    h = tc.layer_norm(h)
        logits = h @ tc.param("out", (width, 3), tc.init.xavier_uniform())
        loss = tc.softmax_cross_entropy(logits, y)
        acc = tc.cast(tc.equal(tc.argmax(logits), y), "f32").mean()
        return b.graph({"loss": loss, "logits": logits, "acc": acc},
                       meta={"loss": "loss", "optimizer": optimizer_spec(opt), "train": {"batch_size": 16}})


@pytest.mark.parametrize("seed,opt", [(0, tc.optim.SGD(momentum=0.9)), (1, tc.optim.Adam()), (2, tc.optim.AdamW()),
                                      (3, tc.optim.SGD(weight_decay=0.1, momentum=0.5, nesterov=True))])
def test_training_graphs_match_reference(seed, opt):
    program, _ = compile_graph(_mlp(seed, opt))
    entry = program.entries["train_step"]
    check_plan(entry.graph, entry.plan)
    assert entry.plan.inplace, "parameter updates should be written in place"
    ex = Executor(program, seed=seed)
    rng = np.random.default_rng(seed)
    for batch in (16, 7, 16):
        feeds = {"x": rng.normal(size=(batch, 5)).astype(np.float32), "y": rng.integers(0, 3, batch)}
        params = ex.state_dict()
        want = run_graph(entry.graph, {**feeds, "lr": np.float32(0.1), "batch_share": np.float32(1)}, params)
        got = ex.train_step(feeds, lr=0.1)
        _assert_same(got, {k: want[k] for k, _ in entry.graph.outputs})
        for p in ex.params:
            np.testing.assert_allclose(ex.params[p], want[p], rtol=1e-5, atol=1e-6, err_msg=p)


def test_planned_peak_below_no_reuse():
    program, _ = compile_graph(_mlp(5, tc.optim.Adam()))
    plan = program.entries["train_step"].plan
    assert plan.peak_bytes <= plan.arena_bytes < plan.no_reuse_bytes
    assert plan.peak_bytes <= plan.no_inplace_peak_bytes
    at64 = make_plan(program.entries["train_step"].graph, 64)
    assert at64.peak_bytes > plan.peak_bytes  # batch 16 -> 64
    assert at64.peak_bytes <= at64.arena_bytes <= 1.1 * at64.peak_bytes + 64 * len(plan.buffers)
    # the decisions do not depend on the batch, only the byte figures
    assert (at64.slots, at64.buffers, at64.inplace, at64.alias) == (plan.slots, plan.buffers, plan.inplace, plan.alias)


def test_step_allocates_little_beyond_the_plan():
    program, _ = compile_graph(_mlp(4, tc.optim.Adam(), width=64, features=32, norm=False))
    plan = program.entries["train_step"].plan
    ex = Executor(program)
    rng = np.random.default_rng(0)
    batch = 256
    feeds = {"x": rng.normal(size=(batch, 32)).astype(np.float32), "y": rng.integers(0, 3, batch)}
    tracemalloc.start()
    try:
        ex.train_step(feeds, lr=0.01)  # builds the instruction list and allocates the arena
        _, first_peak = tracemalloc.get_traced_memory()
        tracemalloc.reset_peak()
        base, _ = tracemalloc.get_traced_memory()
        ex.train_step(feeds, lr=0.01)
        _, step_peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    scale = batch / plan.batch
    planned = plan.arena_bytes * scale
    assert first_peak < 1.25 * planned + 100_000  # arena + kernel temporaries + instruction list
    # a warm step allocates only kernel temporaries (one activation for where) and the outputs;
    # no layer_norm here: its fused kernels' temporaries are several activations (see kernels.py)
    assert step_peak - base < 0.5 * plan.peak_bytes * scale


def test_check_plan_rejects_an_overlap():
    with new_graph("g") as b:
        x = tc.input("x", ("B", 4))
        a, c = tc.exp(x), tc.neg(x)
        graph = b.graph({"y": a * c})
    plan = memplan(graph)
    check_plan(graph, plan)
    wrong = replace(plan, slots={v: 0 for v in plan.slots})  # %a and %c alive together in one buffer
    with pytest.raises(AssertionError):
        check_plan(graph, wrong)
    lying = replace(plan, buffers=tuple((i, i) for i in range(len(plan.buffers))))  # packed onto the same bytes
    with pytest.raises(AssertionError):
        check_plan(graph, lying)


@pytest.mark.parametrize("seed", range(30))
def test_pack_gives_overlapping_lives_disjoint_bytes(seed):
    rng = random.Random(seed)
    n = rng.randint(1, 40)
    sizes = [rng.choice([0, 1, 63, 64, 100, 4096, rng.randint(1, 10**5)]) for _ in range(n)]
    lives = []
    for _ in range(n):
        f = rng.randint(0, 30)
        lives.append((f, f + rng.randint(0, 10)))
    offsets, total = pack(sizes, lives)
    for a in range(n):
        assert offsets[a] % 64 == 0 and offsets[a] + sizes[a] <= total
        for b in range(a + 1, n):
            if lives[a][0] <= lives[b][1] and lives[b][0] <= lives[a][1]:
                assert offsets[a] + sizes[a] <= offsets[b] or offsets[b] + sizes[b] <= offsets[a], (a, b)
    # never more than one array per buffer, and at least the most bytes alive at one step
    rounded = [max(64, -(-s // 64) * 64) for s in sizes]
    most = max(sum(r for r, (f, l) in zip(rounded, lives) if f <= t <= l) for t in range(41))
    assert most <= total <= sum(rounded)


def _attention_step(heads: int):
    """A training step whose q, k, v are slices of one GEMM, reshaped and transposed per head."""
    from tinyc.models import MultiHeadAttention

    with new_graph("attn") as b:
        x, y = tc.input("x", ("B", 6, 8)), tc.input("y", ("B",), "i64")
        h = MultiHeadAttention("attn", 8, heads=heads)(x)
        logits = h.mean(axis=1) @ tc.param("out", (8, 3), tc.init.xavier_uniform())
        graph = b.graph({"loss": tc.softmax_cross_entropy(logits, y)},
                        meta={"loss": "loss", "optimizer": optimizer_spec(tc.optim.Adam()), "train": {"batch_size": 4}})
    return compile_graph(graph)[0]


@pytest.mark.parametrize("heads", [1, 2])
def test_views_of_views_match_reference(heads):
    program = _attention_step(heads)
    entry = program.entries["train_step"]
    plan, graph = entry.plan, entry.graph
    check_plan(graph, plan)
    ops = {n.out: n.op for n in graph.nodes}
    viewed = {ops[v] for v in plan.alias}
    assert {"slice", "reshape" if heads > 1 else "slice"} <= viewed and not set(plan.alias) & set(plan.slots)
    if heads > 1:  # q, k, v: reshape and transpose of a slice stay views of the qkv GEMM's output
        assert any(ops[plan.alias[v]] == "reshape" and ops[v] == "transpose" for v in plan.alias)
    ex = Executor(program, seed=heads)
    rng = np.random.default_rng(heads)
    for batch in (4, 3):
        feeds = {"x": rng.normal(size=(batch, 6, 8)).astype(np.float32), "y": rng.integers(0, 3, batch)}
        want = run_graph(graph, {**feeds, "lr": np.float32(0.01), "batch_share": np.float32(1)}, ex.state_dict())
        got = ex.train_step(feeds, lr=0.01)
        _assert_same(got, {"loss": want["loss"]})
        _assert_same_adam_step(ex.state_dict(), want, key_bias=slice(8, 16))


def _assert_same_adam_step(got, want, key_bias):
    """Adam's moments m and v (the gradients, before Adam divides by them) agree everywhere; the
    parameters agree wherever the gradient is more than rounding noise. The key bias (the middle
    third of `attn.qkv.b`) has a zero true gradient (softmax ignores a constant added to a whole
    row of scores: about 1e-19 in float64), so its float32 gradient is rounding noise of ~1e-9 that
    depends on the BLAS kernel, and Adam turns noise of any size into a step of ~lr: there the two
    executors may differ by ~lr whatever the plan, so only the moments are compared."""
    moments = [k for k in got if k.endswith((".m", ".v"))]
    assert moments, "Adam keeps m and v per parameter"
    for k in moments:
        np.testing.assert_allclose(got[k], want[k], rtol=1e-5, atol=1e-8, err_msg=k)
    for p in (k for k in got if f"{k}.v" in got):
        meaningful = np.sqrt(want[f"{p}.v"]) > 1e-7  # |gradient| far above rounding noise (~1e-9)
        assert meaningful.mean() > 0.6, p
        if p == "attn.qkv.b":
            assert not meaningful[key_bias].any(), "the key bias's gradient is noise"
        np.testing.assert_allclose(got[p][meaningful], want[p][meaningful], rtol=1e-5, atol=1e-6, err_msg=p)


def test_a_view_keeps_its_base_alive():
    with new_graph("g") as b:
        x = tc.input("x", ("B", 4))
        a = tc.exp(x)
        r = a.reshape(("B", 2, 2))  # a view of a: a's buffer must outlive r's last reader
        c = tc.neg(x)
        d = tc.exp(c) * 2.0  # may not land in a's buffer while r is still to be read
        graph = b.graph({"y": (r.sum(axis=2) + tc.slice(d, 0, 2, axis=1)) * 1.0})
    plan = memplan(graph)
    assert plan.alias
    check_plan(graph, plan)
    ex = Executor(Program({"f": Entry("f", graph, plan)}))
    feeds = {"x": np.arange(8, dtype=np.float32).reshape(2, 4) / 8}
    _assert_same(ex.run("f", feeds), run_graph(graph, feeds))
