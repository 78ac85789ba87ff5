"""Row blocks and the pool (tinyc/runtime/parallel.py): blocks compute what the whole kernel
computes, cuts depend on shapes only, training gives the same bits at every thread count and
run to run, a worker that never runs cannot stall a step, and on the examples the planned
executor (row blocks over the memory plan's reused buffers) matches the reference executor."""

from __future__ import annotations

import threading
from pathlib import Path

import numpy as np
import pytest

import tinyc as tc
from tinyc.compiler.driver import compile_graph, trace_model_file
from tinyc.ir.builder import new_graph
from tinyc.ir.train import optimizer_spec
from tinyc.runtime import Executor, parallel
from tinyc.runtime.kernels import ALONG_AXIS, KERNELS, PRODUCTS, ROWWISE, WEIGHT_GRADS
from tinyc.runtime.parallel import Pool, split, split_plan
from tinyc.runtime.reference import run_graph

B, T, D, N = 64, 16, 256, 128  # [B, T, D] f32 is cut into 2 to 4 blocks
RNG = np.random.default_rng(0)


def f32(*shape):
    return RNG.standard_normal(shape, dtype=np.float32)


# (op, inputs, attrs, exact): exact when each element is computed by the same arithmetic whatever
# the block (element-wise); products and row ops may round differently in another GEMM/GEMV shape
CASES = [
    ("add", [f32(B, T, D), f32(D)], {}, True),
    ("mul", [f32(B, T, D), f32(1, T, D)], {}, True),
    ("relu_grad", [f32(B, T, D), f32(B, T, D)], {}, True),
    ("adam_param", [f32(B * T, D), f32(B * T, D), np.abs(f32(B * T, D)), np.float32(1e-3), np.float32(0.9)],
     {"eps": 1e-8}, True),
    ("concat", [f32(B, T, 2, 64), f32(B, T, 2, 64)], {"axis": 2}, True),
    ("layer_norm_affine", [f32(B, T, D), f32(D), f32(D)], {"axis": 2, "eps": 1e-5}, False),
    ("layer_norm_grad_scaled", [f32(B, T, D), f32(B, T, D), f32(D)], {"axis": 2, "eps": 1e-5}, False),
    ("softmax", [f32(B, 16, T, T)], {"axis": 3}, False),
    ("softmax_grad", [f32(B, 16, T, T), f32(B, 16, T, T)], {"axis": 3}, False),
    ("matmul_bias", [f32(B, T, 64), f32(64, N), f32(N)], {"ta": False, "tb": False}, False),
    ("matmul_t", [f32(B, T, 64), f32(N, 64)], {"ta": False, "tb": True, "alpha": 0.5}, False),
    ("matmul", [f32(B, 16, T, 64), f32(B, 16, 64, T)], {}, False),
    ("matmul_t_sum", [f32(B, T, D), f32(B, T, N)], {"ta": True, "tb": False}, False),  # cut out's rows
    ("matmul_t_sum", [f32(B, T, N), f32(B, T, D)], {"ta": True, "tb": False}, False),  # cut out's columns
]


def _whole(op, ins, attrs):
    return np.asarray(KERNELS[op](*ins, **attrs))


@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize(("op", "ins", "attrs", "exact"), CASES, ids=[f"{c[0]}{i}" for i, c in enumerate(CASES)])
def test_blocks_compute_the_whole_kernel(op, ins, attrs, exact, threads):
    want = _whole(op, ins, attrs)
    out = np.full_like(want, np.nan)
    blocks = split(KERNELS[op], op, ins, out, attrs)
    assert blocks is not None and len(blocks) >= 2
    Pool(threads).run(blocks)
    if exact:
        np.testing.assert_array_equal(out, want)
    else:
        # a sum of many products: rounding relative to the largest magnitude, not each element's
        np.testing.assert_allclose(out, want, rtol=1e-5, atol=1e-6 * np.abs(want).max())


def test_an_in_place_instruction_splits_row_for_row():
    x, y = f32(B, T, D), f32(B, T, D)
    want = x + y
    blocks = split(KERNELS["add"], "add", (x, y), x, {})  # the memory plan may write add into its input
    assert blocks is not None
    Pool(2).run(blocks)
    np.testing.assert_array_equal(x, want)


@pytest.mark.parametrize(("op", "ins", "attrs", "why"), [
    ("sum", [f32(B, T, D)], {"axes": (0, 1), "keepdims": False}, "a reduction over rows"),
    ("softmax", [f32(B * T, D)], {"axis": 0}, "normalised along the first axis"),
    ("matmul_t", [f32(B * T, 64), f32(B * T, N)], {"ta": True, "tb": False, "alpha": 1.0}, "rows from columns"),
    ("add", [f32(B, T, 8), f32(8)], {}, "too small to pay for the dispatch"),
])
def test_what_stays_whole(op, ins, attrs, why):
    want = _whole(op, ins, attrs)
    assert split_plan(op, ins, np.empty_like(want), attrs) is None, why


def test_an_output_overlapping_an_input_off_row_stays_whole():
    buf = f32(B * T + 1, D)
    x, out = buf[1:], buf[:-1]  # out row i is x row i - 1: blocks would read rows others wrote
    assert split_plan("relu", (x,), out, {}) is None


def test_cuts_depend_on_shapes_only():
    ins, out = [f32(B, T, 4 * D), f32(4 * D)], np.empty((B, T, 4 * D), np.float32)
    cuts = split_plan("add", ins, out, {})[0]
    assert cuts == [(0, 16), (16, 32), (32, 48), (48, 64)]
    assert split_plan("add", ins, out, {})[0] == cuts  # nothing but shapes: the same every time


def test_the_tables_name_kernels():
    for table in (ROWWISE, ALONG_AXIS, PRODUCTS, WEIGHT_GRADS):
        assert table <= set(KERNELS), table - set(KERNELS)


def test_a_block_error_reaches_the_caller():
    def bad():
        raise ValueError("block failed")

    ran = []
    with pytest.raises(ValueError, match="block failed"):
        Pool(2).run([lambda: ran.append(0), bad, lambda: ran.append(2), lambda: ran.append(3)])
    assert sorted(ran) == [0, 2, 3]  # the other blocks still ran


def test_a_worker_that_never_runs_cannot_stall_a_step():
    """A worker kept busy elsewhere (its core taken by another process) leaves its blocks to the
    caller, which neither waits for it nor spins."""
    pool = Pool(2)
    release = threading.Event()
    stuck = parallel._Task([release.wait])
    pool.queues[0].put(stuck)  # the worker now blocks inside another task
    try:
        done = []
        finished = threading.Event()
        caller = threading.Thread(target=lambda: (pool.run([lambda i=i: done.append(i) for i in range(4)]),
                                                  finished.set()))
        caller.start()
        assert finished.wait(timeout=30), "the step waited for a worker that could not run"
        assert sorted(done) == [0, 1, 2, 3]
    finally:
        release.set()
        caller.join(timeout=30)


# ------------------------------------------------------------------ whole training steps

def _program(optimizer):
    """A small Transformer-like block whose activations [B, T, 256] are cut into row blocks."""
    with new_graph("blocks") as b:
        x, y = tc.input("x", ("B", T, 32)), tc.input("y", ("B",), "i64")
        h = x @ tc.param("w0", (32, 64), tc.init.xavier_uniform()) + tc.param("b0", (64,), tc.init.zeros())
        h = tc.layer_norm(h, axis=-1)
        f = tc.relu(h @ tc.param("w1", (64, D), tc.init.xavier_uniform()))
        h = h + f @ tc.param("w2", (D, 64), tc.init.xavier_uniform())
        logits = h.mean(axis=1) @ tc.param("w3", (64, 10), tc.init.xavier_uniform())
        loss = tc.softmax_cross_entropy(logits, y)
        graph = b.graph({"loss": loss}, meta={"loss": "loss", "optimizer": optimizer_spec(optimizer),
                                              "train": {"batch_size": B, "lr": 0.01}})
    return compile_graph(graph)[0]


@pytest.fixture(scope="module")
def program():
    return _program(tc.optim.Adam())


def _train(program, threads: int, steps: int = 3) -> tuple[list[float], dict[str, np.ndarray]]:
    ex = Executor(program, seed=0, threads=threads)
    rng = np.random.default_rng(1)
    losses = []
    for _ in range(steps):
        feeds = {"x": rng.standard_normal((B, T, 32), dtype=np.float32), "y": rng.integers(0, 10, B)}
        losses.append(ex.train_step(feeds, lr=0.01)["loss"])
    return losses, ex.state_dict()


def _assert_same_bits(a, b):
    assert a[0] == b[0]
    assert a[1].keys() == b[1].keys()
    for name in a[1]:
        np.testing.assert_array_equal(a[1][name], b[1][name], err_msg=name)


@pytest.fixture
def splits(monkeypatch):
    """Whether each instruction built from now on is cut into row blocks (True) or stays whole."""
    made = []
    real = parallel.split

    def counting(*args, **kwargs):
        blocks = real(*args, **kwargs)
        made.append(blocks is not None)
        return blocks

    monkeypatch.setattr(parallel, "split", counting)
    return made


def test_training_is_bit_identical_run_to_run_and_across_thread_counts(program, splits):
    one = _train(program, 1)
    assert sum(splits) >= 6, "the step has too few split instructions for this test to mean anything"
    _assert_same_bits(one, _train(program, 1))  # run to run at each thread count
    two = _train(program, 2)
    _assert_same_bits(two, _train(program, 2))
    three = _train(program, 3)
    _assert_same_bits(three, _train(program, 3))
    _assert_same_bits(one, two)  # and across thread counts: the cuts do not depend on them
    _assert_same_bits(one, three)


def test_blocks_train_as_the_whole_kernels_do(monkeypatch):
    program = _program(tc.optim.SGD())  # Adam would magnify rounding on near-zero gradients
    blocked = _train(program, 2)
    monkeypatch.setattr(parallel, "split", lambda *args, **kwargs: None)
    whole = _train(program, 2)
    np.testing.assert_allclose(blocked[0], whole[0], rtol=1e-5)
    for name in whole[1]:
        np.testing.assert_allclose(blocked[1][name], whole[1][name], rtol=1e-4, atol=1e-6, err_msg=name)


# ------------------------------------------------------------------ the examples: planned executor vs reference

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


@pytest.fixture(scope="module", params=["mlp_mnist", "seed_transformer", "vit_mnist"])
def example(request):
    graph, _ = trace_model_file(str(EXAMPLES / f"{request.param}.py"))
    return request.param, compile_graph(graph)[0]


@pytest.mark.parametrize("threads", [1, 2, 3])
def test_the_planned_executor_matches_the_reference_on_the_examples(example, threads, splits):
    """Row blocks on top of the memory plan's buffer reuse and in-place updates: two training steps
    of each example at batch 64 give what the reference executor (no reuse, whole kernels) gives."""
    name, program = example
    graph = program.entries["train_step"].graph
    rng = np.random.default_rng(7)
    ex = Executor(program, seed=0, threads=threads)
    for step in range(2):  # the second step runs on the buffers and parameters the first left
        feeds = {"image": rng.integers(0, 256, (64, 28, 28)).astype(np.uint8), "label": rng.integers(0, 10, 64)}
        want = run_graph(graph, {**feeds, "lr": np.float32(1e-3), "batch_share": np.float32(1)}, ex.state_dict())
        got = ex.train_step(feeds, lr=1e-3)
        np.testing.assert_allclose(got["loss"], want["loss"], rtol=1e-5)
        state = ex.state_dict()
        for p in state:
            # Adam turns a gradient of rounding noise into a step of ~lr: compare a parameter where
            # its gradient is above that noise (its moments, the gradients, are compared everywhere)
            keep = np.sqrt(want[f"{p}.v"]) > 1e-7 if f"{p}.v" in want else np.ones(want[p].shape, bool)
            scale = np.abs(want[p]).max() or 1.0
            np.testing.assert_allclose(state[p][keep], want[p][keep], rtol=1e-4, atol=1e-5 * scale,
                                       err_msg=f"{name} step {step}: {p}")
    assert sum(splits) >= {"mlp_mnist": 1, "seed_transformer": 20, "vit_mnist": 40}[name]
