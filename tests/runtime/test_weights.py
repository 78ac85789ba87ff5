"""Weights only: `Executor.save_weights` / `load_weights` round trips, reads checkpoints, refuses misfits."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from safetensors.numpy import load_file

from tinyc.compiler.driver import compile_file
from tinyc.ir.errors import CheckpointError
from tinyc.runtime.checkpoint import load_checkpoint, save_checkpoint
from tinyc.runtime.executor import Executor

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


@pytest.fixture(scope="module")
def mlp():
    return compile_file(str(EXAMPLES / "mlp_mnist.py"), "model")[0]


def _trained(program, steps: int = 3) -> Executor:
    ex = Executor(program, seed=1)
    rng = np.random.default_rng(0)
    for _ in range(steps):
        ex.train_step({"image": rng.random((8, 28, 28), dtype=np.float32), "label": rng.integers(0, 10, 8)}, lr=0.05)
    return ex


def test_weights_round_trip_without_optimizer_state(mlp, tmp_path):
    ex = _trained(mlp)
    state_names = set(ex.params) - set(ex.weight_names)
    assert state_names  # SGD with momentum: the velocities are state, not weights
    path = str(tmp_path / "w.safetensors")
    ex.save_weights(path)
    raw = load_file(path)  # a plain safetensors reader opens it, names as in the program
    assert sorted(raw) == sorted(["fc1.w", "fc1.b", "fc2.w", "fc2.b"]) == sorted(ex.weight_names)
    meta = load_checkpoint(path)[1]
    assert meta["kind"] == "weights" and meta["model"] == mlp.meta.get("model", "") and len(meta["params"]) == 16

    fresh = Executor(mlp, seed=2)
    assert not np.array_equal(fresh.params["fc1.w"], ex.params["fc1.w"])
    fresh.load_weights(path)
    x = np.random.default_rng(3).random((5, 28, 28), dtype=np.float32)
    np.testing.assert_array_equal(fresh.predict({"image": x})["logits"], ex.predict({"image": x})["logits"])


def test_load_weights_reads_a_training_checkpoint_and_ignores_its_state(mlp, tmp_path):
    ex = _trained(mlp)
    path = str(tmp_path / "ckpt.safetensors")
    save_checkpoint(path, ex.state_dict(), {"epoch": 1})
    fresh = Executor(mlp, seed=2)
    before = {n: fresh.params[n].copy() for n in fresh.params if n not in fresh.weight_names}
    assert fresh.load_weights(path) == {"epoch": 1}
    for name in fresh.weight_names:
        np.testing.assert_array_equal(fresh.params[name], ex.params[name])
    for name, a in before.items():  # optimizer state is not weights: untouched
        np.testing.assert_array_equal(fresh.params[name], a)


def test_weights_of_another_program_are_refused_naming_parameter_and_shapes(mlp, tmp_path):
    model = tmp_path / "small.py"
    model.write_text((EXAMPLES / "mlp_mnist.py").read_text().replace("128", "32"))
    small = compile_file(str(model), "model")[0]
    path = str(tmp_path / "small.safetensors")
    Executor(small).save_weights(path)
    target = Executor(mlp, seed=0)
    before = {n: a.copy() for n, a in target.params.items()}
    with pytest.raises(CheckpointError) as e:
        target.load_weights(path)
    assert str(e.value.message) == (f"{path}: parameter 'fc1.w' is float32[784, 32] in the checkpoint "
                                    "but float32[784, 128] in the program")
    for name, a in before.items():  # nothing written
        np.testing.assert_array_equal(target.params[name], a)


def test_unknown_tensor_is_refused(mlp, tmp_path):
    ex = Executor(mlp)
    path = str(tmp_path / "w.safetensors")
    weights = {n: ex.params[n] for n in ex.weight_names}
    save_checkpoint(path, {**weights, "head.w": np.zeros((2, 2), np.float32)}, {})
    with pytest.raises(CheckpointError, match="tensor 'head.w' is not a parameter of this program"):
        Executor(mlp).load_weights(path)
