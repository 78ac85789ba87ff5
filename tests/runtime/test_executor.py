"""The Executor: batch-size independence, determinism, checkpoints, errors, and no compiler."""

from __future__ import annotations

import math
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

import tinyc as tc
from tinyc.compiler.driver import compile_graph
from tinyc.ir import codec
from tinyc.ir.builder import new_graph
from tinyc.ir.errors import CheckpointError, DataError, NumericsError, TinycError
from tinyc.ir.train import SCHEDULES, optimizer_spec
from tinyc.runtime import Executor
from tinyc.runtime.schedules import FACTORS, lr_at

THIS = os.path.basename(__file__)


def _classifier(opt=None):
    with new_graph("clf") as b:
        x, y = tc.input("x", ("B", 6)), tc.input("y", ("B",), "i64")
        w1 = tc.param("w1", (6, 16), tc.init.xavier_uniform())
        b1 = tc.param("b1", (16,), tc.init.uniform(-0.1, 0.1))
        w2 = tc.param("w2", (16, 4), tc.init.xavier_uniform())
        logits = tc.relu(x @ w1 + b1) @ w2
        loss = tc.softmax_cross_entropy(logits, y)
        graph = b.graph({"loss": loss, "logits": logits},
                        meta={"loss": "loss", "optimizer": optimizer_spec(opt or tc.optim.Adam()),
                              "train": {"batch_size": 32, "lr": 0.01}})
    return compile_graph(graph)[0]


@pytest.fixture(scope="module")
def program():
    return _classifier()


def _batch(n: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    return {"x": rng.normal(size=(n, 6)).astype(np.float32), "y": rng.integers(0, 4, n)}


def test_predict_is_per_example(program):
    ex = Executor(program)
    feeds = _batch(32)
    big = ex.predict({"x": feeds["x"]})["logits"]
    small = ex.predict({"x": feeds["x"][:5]})["logits"]
    np.testing.assert_allclose(small, big[:5], rtol=1e-5, atol=1e-6)
    assert len(ex._runners["predict"].cache) == 2  # one instruction list per batch size


def test_same_seed_gives_bit_identical_losses(program):
    runs = []
    for _ in range(2):
        ex = Executor(program, seed=7)
        runs.append([ex.train_step(_batch(32, s), lr=0.01)["loss"] for s in range(5)])
    assert runs[0] == runs[1]
    other = Executor(program, seed=8)
    assert other.train_step(_batch(32, 0), lr=0.01)["loss"] != runs[0][0]


def test_results_are_copies_and_losses_are_floats(program):
    ex = Executor(program)
    r1 = ex.train_step(_batch(8), lr=0.01)
    keep = r1["logits"].copy()
    ex.train_step(_batch(8, 1), lr=0.01)
    assert isinstance(r1["loss"], float) and math.isfinite(r1["loss"])
    np.testing.assert_array_equal(r1["logits"], keep)


def test_default_lr_comes_from_the_program(program):
    a, b = Executor(program), Executor(program)
    a.train_step(_batch(8))
    b.train_step(_batch(8), lr=0.01)
    for name in a.params:
        np.testing.assert_array_equal(a.params[name], b.params[name])


def test_state_dict_round_trip(program):
    ex = Executor(program, seed=1)
    for s in range(3):
        ex.train_step(_batch(16, s), lr=0.01)
    state = ex.state_dict()
    assert {"w1", "w1.m", "w1.v", "optim.step"} <= set(state)
    state["w1"][...] = 0  # a copy: the executor is unchanged
    assert ex.params["w1"].any()
    state = ex.state_dict()
    other = Executor(program, seed=99)
    other.train_step(_batch(16), lr=0.01)  # build its instruction lists first: arrays are written into
    other.load_state_dict(state)
    for s in range(3, 5):
        assert ex.train_step(_batch(16, s), lr=0.01)["loss"] == other.train_step(_batch(16, s), lr=0.01)["loss"]
    for name in state:
        np.testing.assert_array_equal(ex.params[name], other.params[name])


def test_load_state_dict_checks_shapes_names_dtypes(program):
    ex = Executor(program)
    state = ex.state_dict()
    bad = dict(state, w1=np.zeros((5, 16), np.float32))
    with pytest.raises(CheckpointError, match=r"'w1'.*\[5,16\].*\[6,16\]"):
        ex.load_state_dict(bad)
    np.testing.assert_array_equal(ex.params["b1"], state["b1"])
    with pytest.raises(CheckpointError, match="lacks"):
        ex.load_state_dict({k: v for k, v in state.items() if k != "w2"})
    with pytest.raises(CheckpointError, match="nope"):
        ex.load_state_dict(dict(state, nope=np.zeros(1)))
    with pytest.raises(CheckpointError, match="dtype"):
        ex.load_state_dict(dict(state, w2=state["w2"].astype(np.float64)))


def test_feed_errors(program):
    ex = Executor(program)
    with pytest.raises(DataError, match="'y'"):
        ex.train_step({"x": _batch(4)["x"]}, lr=0.1)
    with pytest.raises(DataError, match=r"'x'.*\[4,5\]"):
        ex.predict({"x": np.zeros((4, 5), np.float32)})
    with pytest.raises(DataError, match="B=4"):
        ex.train_step({"x": np.zeros((4, 6), np.float32), "y": np.zeros(3, np.int64)}, lr=0.1)


def test_kernel_error_names_node_and_line(program):
    ex = Executor(program)
    feeds = dict(_batch(4), y=np.array([0, 1, 9, 2]))
    with pytest.raises(TinycError) as err:
        ex.train_step(feeds, lr=0.1)
    assert "softmax_cross_entropy %" in str(err.value) and f"{THIS}:" in str(err.value)


def test_check_numerics_names_the_first_bad_node():
    with new_graph("nan") as b:
        x = tc.input("x", ("B",))
        y = tc.log(x * tc.param("w", (), tc.init.ones()))
        graph = b.graph({"loss": tc.exp(y).sum()}, meta={"loss": "loss", "optimizer": optimizer_spec(tc.optim.SGD())})
    line = b.nodes[-3].loc
    program = compile_graph(graph)[0]
    feeds = {"x": np.array([1.0, -1.0], np.float32)}
    with np.errstate(invalid="ignore"):
        assert math.isnan(Executor(program).train_step(feeds)["loss"])
        with pytest.raises(NumericsError) as err:
            Executor(program, check_numerics=True).train_step(feeds)
    assert str(err.value).startswith(line) and "log %" in str(err.value) and "NaN" in str(err.value)


BLOCKER = textwrap.dedent("""
    import sys
    BLOCKED = ("tinyc.compiler", "tinyc.models", "tinyc.cli", "networkx")
    class Block:
        def find_spec(self, name, path=None, target=None):
            if any(name == b or name.startswith(b + ".") for b in BLOCKED):
                raise ImportError("blocked: " + name)
    sys.meta_path.insert(0, Block())
    import numpy as np
    from tinyc.runtime import Executor, load
    ex = Executor(load(sys.argv[1]), seed=0)
    rng = np.random.default_rng(0)
    feeds = {"x": rng.normal(size=(8, 6)).astype(np.float32), "y": rng.integers(0, 4, 8)}
    losses = [ex.train_step(feeds, lr=0.05)["loss"] for _ in range(3)]
    assert losses[-1] < losses[0], losses
    print(ex.predict({"x": feeds["x"]})["logits"].shape)
    assert not [m for m in sys.modules if m.startswith(BLOCKED)]
""")


def test_runtime_needs_no_compiler(program, tmp_path):
    path = tmp_path / "clf.ir"
    codec.save_program(program, str(path))
    script = tmp_path / "run.py"
    script.write_text(BLOCKER)
    result = subprocess.run([sys.executable, str(script), str(path)], capture_output=True, text=True, timeout=120,
                            check=False)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "(8, 4)"


def test_schedules():
    assert set(FACTORS) == set(SCHEDULES)
    assert lr_at(50, 10, 100, 0.1, "constant") == 0.1
    assert lr_at(0, 10, 100, 0.1, "cosine", warmup=10) == pytest.approx(0.01)
    assert lr_at(9, 10, 100, 0.1, "cosine", warmup=10) == pytest.approx(0.1)
    assert lr_at(10, 10, 100, 0.1, "cosine", warmup=10) == pytest.approx(0.1)
    assert lr_at(55, 10, 100, 0.1, "cosine", warmup=10) == pytest.approx(0.05)
    assert lr_at(100, 10, 100, 0.1, "cosine", warmup=10) == pytest.approx(0.0)
    assert lr_at(25, 10, 100, 0.1, "step", gamma=0.5, step_size=2) == pytest.approx(0.05)
    assert lr_at(45, 10, 100, 0.1, "step", gamma=0.5, step_size=2) == pytest.approx(0.025)


def test_an_unplanned_entry_runs_the_same(program):
    from tinyc.ir.program import Entry, Program

    bare = Program({k: Entry(k, e.graph, None) for k, e in program.entries.items()}, program.meta)
    planned, unplanned = Executor(program, seed=2), Executor(bare, seed=2)
    for s in range(3):
        a = planned.train_step(_batch(8, s), lr=0.01)
        b = unplanned.train_step(_batch(8, s), lr=0.01)
        assert a["loss"] == b["loss"]
        np.testing.assert_array_equal(a["logits"], b["logits"])
