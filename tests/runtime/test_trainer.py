"""The training loop: it learns, resumes bit for bit, names the node behind a NaN, follows the lr schedule.

Also home of the synthetic data set the CLI tests share (`write_synthetic_idx`, `write_model`):
28x28 images whose class is the position of a bright block, plus noise, as IDX files. No network,
no real MNIST.
"""

from __future__ import annotations

import os
import struct
from pathlib import Path

import numpy as np
import pytest

from tinyc.compiler.driver import compile_file
from tinyc.ir.errors import CheckpointError, DataError, NumericsError
from tinyc.runtime.checkpoint import load_checkpoint
from tinyc.runtime.datasets import load_dataset
from tinyc.runtime.trainer import TIMING_KEYS, Reporter, RunConfig, Trainer

# ---------------------------------------------------------------- synthetic data and models


def write_idx(path: Path, array: np.ndarray) -> None:
    magic = 0x0803 if array.ndim == 3 else 0x0801
    path.write_bytes(
        struct.pack(">I", magic) + struct.pack(f">{array.ndim}I", *array.shape) + array.astype(np.uint8).tobytes()
    )


def synthetic_images(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Class c is a bright 7x7 block at cell (c // 4, c % 4) of a 4x4 grid, on uniform noise.

    One label in ten is then redrawn at random, so that accuracies land below 100% (near 90%).
    """
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 10, n)
    images = rng.integers(0, 70, (n, 28, 28))
    for i, c in enumerate(labels):
        r, k = 7 * (c // 4), 7 * (c % 4)
        images[i, r : r + 7, k : k + 7] = rng.integers(180, 256, (7, 7))
    relabel = rng.random(n) < 0.1
    labels[relabel] = rng.integers(0, 10, int(relabel.sum()))
    return images.astype(np.uint8), labels.astype(np.uint8)


def write_synthetic_idx(folder: Path, n_train: int = 600, n_test: int = 200, seed: int = 0) -> Path:
    """The four standard IDX files of a learnable 10-class data set; returns the folder."""
    folder.mkdir(parents=True, exist_ok=True)
    for prefix, n, s in (("train", n_train, seed), ("t10k", n_test, seed + 1)):
        images, labels = synthetic_images(n, s)
        write_idx(folder / f"{prefix}-images-idx3-ubyte", images)
        write_idx(folder / f"{prefix}-labels-idx1-ubyte", labels)
    return folder


MLP = """\
import tinyc as tc
from tinyc.models import Linear, accuracy, softmax_cross_entropy


def model():
    image = tc.input("image", ("B", 28, 28))
    label = tc.input("label", ("B",), dtype="i64")
    x = tc.relu(Linear("fc1", 784, {hidden})(image.reshape("B", 784)))
    logits = Linear("fc2", {hidden}, 10)(x)
    loss = softmax_cross_entropy(logits, label)
    return tc.Train(loss, outputs={{"accuracy": accuracy(logits, label), "logits": logits}},
                    optimizer={optimizer}, epochs={epochs}, batch_size={batch_size}, {extra})
"""

# exp on line 9 overflows once the learning rate jumps by 1e6 in epoch 2 (a step schedule, gamma 1e6)
EXPLODING = """\
import tinyc as tc
from tinyc.models import Linear, accuracy, softmax_cross_entropy


def model():
    image = tc.input("image", ("B", 28, 28))
    label = tc.input("label", ("B",), dtype="i64")
    h = Linear("fc1", 784, 16)(image.reshape("B", 784))
    h = tc.exp(h)
    logits = Linear("fc2", 16, 10)(h)
    loss = softmax_cross_entropy(logits, label)
    return tc.Train(loss, outputs={"accuracy": accuracy(logits, label), "logits": logits},
                    optimizer=tc.optim.SGD(lr=0.01), epochs=3, batch_size=50,
                    schedule="step", gamma=1e6, step_size=1)
"""
EXPLODING_LINE = 9


def write_model(
    folder: Path,
    name: str = "mlp.py",
    hidden: int = 32,
    optimizer: str = "tc.optim.SGD(lr=0.1, momentum=0.9)",
    epochs: int = 2,
    batch_size: int = 32,
    extra: str = "",
) -> Path:
    """A small MLP model file (or any source given as `name`'s text via MLP's fields)."""
    path = folder / name
    path.write_text(MLP.format(hidden=hidden, optimizer=optimizer, epochs=epochs, batch_size=batch_size, extra=extra))
    return path


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    folder = write_synthetic_idx(tmp_path_factory.mktemp("idx"))
    return load_dataset(f"idx:{folder}")


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    folder = tmp_path_factory.mktemp("models")
    programs = {
        "sgd": compile_file(str(write_model(folder, "sgd.py")))[0],
        "adam": compile_file(
            str(
                write_model(folder, "adam.py", optimizer="tc.optim.Adam(lr=0.003)", extra='schedule="cosine", warmup=5')
            )
        )[0],
    }
    (folder / "exploding.py").write_text(EXPLODING)
    programs["exploding"] = compile_file(str(folder / "exploding.py"))[0]
    return programs


def trainer(program, data, **overrides) -> Trainer:
    return Trainer(program, data["train"], data["test"], RunConfig.from_program(program, **overrides))


def untimed(history: list[dict]) -> list[dict]:
    return [{k: v for k, v in r.items() if k not in TIMING_KEYS} for r in history]


# ---------------------------------------------------------------- tests


def test_learns_far_above_chance(models, data):
    t = trainer(models["sgd"], data, epochs=3)
    summary = t.fit()
    history = summary["history"]
    assert [r["epoch"] for r in history] == [1, 2, 3]
    assert history[-1]["train_loss"] < history[0]["train_loss"]
    assert history[-1]["test_accuracy"] > 0.75  # chance is 0.1; about 0.1 of the labels are noise
    assert history[-1]["train_accuracy"] > 0.75
    ev = summary["eval"]
    assert ev.examples == len(data["test"]) and ev.confusion.sum() == ev.examples
    assert ev.accuracy == history[-1]["test_accuracy"]
    assert sum(correct for _, _, correct, _ in ev.per_class()) == np.trace(ev.confusion)


class StopAfter(Reporter):
    """Ctrl-C at the start of an epoch: what an interrupted run leaves behind."""

    def __init__(self, epoch: int) -> None:
        self.epoch = epoch

    def start_epoch(self, epoch, epochs, steps):
        if epoch == self.epoch:
            raise KeyboardInterrupt


@pytest.mark.parametrize("kind", ["sgd", "adam"])
def test_resume_equals_uninterrupted(models, data, tmp_path, kind):
    program = models[kind]
    straight = trainer(program, data, epochs=2, limit=320)
    straight.fit()

    ckpt = str(tmp_path / "c.safetensors")
    first = Trainer(
        program,
        data["train"],
        data["test"],
        RunConfig.from_program(program, epochs=2, limit=320, checkpoint=ckpt),
        StopAfter(2),
    )
    with pytest.raises(KeyboardInterrupt):
        first.fit()
    assert load_checkpoint(ckpt)[1]["epoch"] == 1

    resumed = trainer(program, data, epochs=2, limit=320, checkpoint=ckpt, resume=True)
    resumed.fit()
    want, got = straight.executor.state_dict(), resumed.executor.state_dict()
    assert sorted(want) == sorted(got)
    if kind == "adam":
        assert any(p.kind == "state" for p in program.entry("train_step").graph.params)
    for name in want:
        assert np.array_equal(want[name], got[name]), name  # bit for bit, optimizer state included
    assert untimed(resumed.state.history) == untimed(straight.state.history)
    assert resumed.state.step == straight.state.step


def test_resume_refuses_other_data(models, data, tmp_path):
    ckpt = str(tmp_path / "c.safetensors")
    trainer(models["sgd"], data, epochs=1, limit=100, checkpoint=ckpt).fit()
    with pytest.raises(CheckpointError, match="100 examples"):
        trainer(models["sgd"], data, epochs=2, limit=200, checkpoint=ckpt, resume=True).fit()
    with pytest.raises(CheckpointError):  # another model's checkpoint
        trainer(models["exploding"], data, epochs=2, limit=100, checkpoint=ckpt, resume=True).fit()


def test_non_finite_names_node_and_keeps_checkpoint(models, data, tmp_path):
    ckpt = tmp_path / "c.safetensors"
    t = trainer(models["exploding"], data, checkpoint=str(ckpt), limit=300)
    with pytest.raises(NumericsError) as info:
        t.fit()
    err = info.value
    assert err.loc == f"exploding.py:{EXPLODING_LINE}"
    assert "exp" in err.message and "epoch 2" in err.message and "is kept" in err.message
    tensors, meta = load_checkpoint(str(ckpt))  # the last good one: after epoch 1, finite
    assert meta["epoch"] == 1 and len(meta["history"]) == 1
    assert all(np.isfinite(a).all() for a in tensors.values())


def test_check_numerics_flag_stops_at_the_first_bad_node(models, data):
    t = trainer(models["exploding"], data, limit=300, check_numerics=True)
    with pytest.raises(NumericsError) as info:
        t.fit()
    assert info.value.loc == f"exploding.py:{EXPLODING_LINE}" and "exp" in info.value.message


class Rates(Reporter):
    def __init__(self) -> None:
        self.lrs = []

    def step(self, step, loss, examples_per_s, lr, accuracy=None):
        self.lrs.append(lr)


def test_lr_schedule_shapes_training(models, data):
    program = models["adam"]  # cosine, warmup 5 (from the model file)
    rates = Rates()
    t = Trainer(program, data["train"], None, RunConfig.from_program(program, epochs=2, limit=320), rates)
    t.fit()
    base = program.meta["train"]["lr"]
    lrs = np.array(rates.lrs)
    assert len(lrs) == 20
    assert lrs[0] == pytest.approx(base / 5) and np.all(np.diff(lrs[:5]) > 0)  # warmup starts low
    assert lrs.max() <= base and np.all(np.diff(lrs[5:]) < 0) and lrs[-1] < 0.05 * base  # cosine decays

    # behaviour, not just bookkeeping: plain SGD's first update is lr * grad, so warmup shrinks it 10x
    sgd = models["sgd"]
    deltas = {}
    for schedule, warmup in (("constant", 0), ("cosine", 10)):
        t = trainer(sgd, data, epochs=1, limit=32, schedule=schedule, warmup=warmup, shuffle=False)
        before = t.executor.state_dict()["fc1.w"]
        t.fit()
        deltas[schedule] = np.abs(t.executor.state_dict()["fc1.w"] - before).sum()
    assert deltas["cosine"] == pytest.approx(deltas["constant"] / 10, rel=1e-3)


def test_data_must_fit_the_inputs(models, data):
    bad = {"img": data["train"]["image"], "label": data["train"]["label"]}
    with pytest.raises(DataError, match="'image'"):
        Trainer(models["sgd"], bad, None, RunConfig.from_program(models["sgd"]))


def test_metrics_file_has_one_epoch_row_per_epoch(models, data, tmp_path):
    import json

    out = tmp_path / "m.jsonl"
    trainer(models["sgd"], data, epochs=2, limit=64, metrics_out=str(out)).fit()
    lines = [json.loads(line) for line in out.read_text().splitlines()]
    epochs = [r for r in lines if r["kind"] == "epoch"]
    assert [r["epoch"] for r in epochs] == [1, 2]
    assert {"epoch", "train_loss", "train_accuracy", "test_accuracy", "epoch_seconds"} <= set(epochs[0])
    assert not any(os.path.basename(p).startswith("m.jsonl.") for p in os.listdir(tmp_path))  # no temp files left


def test_run_settings_default_to_and_are_checked_like_tc_train():
    import tinyc as tc
    from tinyc.ir.errors import IRError, TinycError

    # a program that stores no settings runs with what tc.Train would have stored
    with tc.graph():
        loss = tc.sum(tc.param("w", (2,)))
    stored = tc.Train(loss).defaults()
    assert {k: getattr(RunConfig(), k) for k in stored} == stored
    # the same rule refuses a bad value, naming the flag here and tc.Train there
    for key, bad in [("epochs", -1), ("batch_size", 0), ("lr", float("inf")), ("schedule", "warp"), ("step_size", 0)]:
        with pytest.raises(TinycError) as flag:
            RunConfig(**{key: bad}).validate()
        with pytest.raises(IRError) as train:
            tc.Train(loss, **{key: bad}).defaults()
        assert str(flag.value) == "--" + key.replace("_", "-") + str(train.value).removeprefix("tc.Train: " + key)
