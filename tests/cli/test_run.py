"""`tinyc run`, `tinyc eval` and `tinyc data` end to end on a small synthetic IDX data set (no network)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from tests.runtime.test_trainer import (
    EXPLODING,
    EXPLODING_LINE,
    MLP,
    synthetic_images,
    write_model,
    write_synthetic_idx,
)
from tinyc.cli.main import app
from tinyc.runtime.checkpoint import load_checkpoint

REQUIRED = {"epoch", "train_loss", "train_accuracy", "test_accuracy", "epoch_seconds"}


def invoke(*args):
    return CliRunner().invoke(app, [str(a) for a in args])


def error_lines(result) -> list[str]:
    return [line for line in result.stderr.splitlines() if line.strip()]


def assert_one_line_error(result, *needles: str) -> str:
    """Exit 2, `error: ...` (plus at most a `hint:` line), no traceback; returns the error line."""
    assert result.exit_code == 2, (result.stdout, result.stderr)
    lines = error_lines(result)
    assert "Traceback" not in result.stderr
    assert lines[0].startswith("error: ") and all(line.startswith("hint: ") for line in lines[1:2]), lines
    assert len(lines) <= 2, lines
    for needle in needles:
        assert needle in lines[0], (needle, lines[0])
    return lines[0]


@pytest.fixture(scope="module")
def work(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("run")
    write_synthetic_idx(d / "data", n_train=600, n_test=200)
    write_model(d, "mlp.py", hidden=24, epochs=2, batch_size=32)  # exploding.py has 16: other shapes
    (d / "exploding.py").write_text(EXPLODING)
    for name in ("mlp", "exploding"):
        result = invoke("compile", d / f"{name}.py", "-o", d / f"{name}.ir")
        assert result.exit_code == 0, result.output
    return d


@pytest.fixture(scope="module")
def trained(work) -> dict:
    """One `tinyc run` with checkpoint and metrics, shared by the tests that read its results."""
    ckpt, metrics = work / "c.safetensors", work / "m.jsonl"
    result = invoke(
        "run",
        work / "mlp.ir",
        "--data",
        f"idx:{work / 'data'}",
        "--epochs",
        2,
        "--checkpoint",
        ckpt,
        "--metrics-out",
        metrics,
    )
    return {"result": result, "ckpt": ckpt, "metrics": metrics}


def test_run_trains_and_writes_metrics_and_checkpoint(trained):
    result = trained["result"]
    assert result.exit_code == 0, (result.stdout, result.stderr)
    records = [r for r in map(json.loads, trained["metrics"].read_text().splitlines()) if r["kind"] == "epoch"]
    assert [r["epoch"] for r in records] == [1, 2]
    assert all(REQUIRED <= set(r) for r in records)
    assert records[-1]["test_accuracy"] > 0.5  # chance is 0.1
    tensors, meta = load_checkpoint(str(trained["ckpt"]))
    assert meta["epoch"] == 2 and {"fc1.w", "fc2.b"} <= set(tensors)
    out = result.stdout
    # plain log (stdout is not a terminal): per-epoch lines, progress lines every ~10%, summary, per-class table
    for epoch in (1, 2):
        assert re.search(
            rf"^epoch {epoch}/2: train loss [0-9.]+, train accuracy [0-9.]+%, test accuracy "
            rf"{records[epoch - 1]['test_accuracy']:.2%}, [0-9.]+ s",
            out,
            re.MULTILINE,
        )
        progress = re.findall(rf"^epoch {epoch}/2  step \d+/19 ", out, re.MULTILINE)
        assert 5 <= len(progress) <= 9
    assert "done: 2 epochs, 38 steps" in out and "test set, per class" in out
    table_rows = re.findall(r"^\s*(\d)\s+(\d+)\s+(\d+)\s+[0-9.]+%$", out, re.MULTILINE)
    assert len(table_rows) == 10 and sum(int(n) for _, n, _ in table_rows) == 200


def test_eval_matches_the_last_epoch(work, trained):
    last = json.loads(trained["metrics"].read_text().splitlines()[-1])
    result = invoke("eval", work / "mlp.ir", "--weights", trained["ckpt"], "--data", f"idx:{work / 'data'}")
    assert result.exit_code == 0, (result.stdout, result.stderr)
    assert f"test accuracy: {last['test_accuracy']:.2%}" in result.stdout
    assert "confusion matrix" in result.stdout
    rows = [line.split() for line in result.stdout.splitlines() if re.match(r"^\s+\d\s+\d", line)]
    assert len(rows) == 10 and all(len(r) == 12 for r in rows)
    confusion = np.array([[int(v) for v in r[1:11]] for r in rows])
    labels = synthetic_images(200, 1)[1]  # the test split's labels (seed 0 + 1)
    assert np.array_equal(confusion.sum(axis=1), np.bincount(labels, minlength=10))
    assert np.trace(confusion) / 200 == pytest.approx(last["test_accuracy"])


def test_resume_continues_and_metrics_hold_each_epoch_once(work, tmp_path):
    ckpt, metrics = tmp_path / "c.safetensors", tmp_path / "m.jsonl"
    args = (
        "run",
        work / "mlp.ir",
        "--data",
        f"idx:{work / 'data'}",
        "--limit",
        96,
        "--checkpoint",
        ckpt,
        "--metrics-out",
        metrics,
    )
    assert invoke(*args, "--epochs", 1).exit_code == 0
    result = invoke(*args, "--epochs", 2, "--resume")
    assert result.exit_code == 0, result.stderr
    assert "resumed from" in result.stdout and "after epoch 1" in result.stdout
    rows = [json.loads(line) for line in metrics.read_text().splitlines()]
    assert [r["epoch"] for r in rows if r["kind"] == "epoch"] == [1, 2]
    steps = [r["step"] for r in rows if r["kind"] == "step"]
    assert steps == sorted(set(steps)) and steps[-1] == 6  # 2 epochs of 3 steps (96 / 32), each row once
    assert load_checkpoint(str(ckpt))[1]["epoch"] == 2


def _compile(work: Path, name: str, source: str) -> Path:
    (work / f"{name}.py").write_text(source)
    assert invoke("compile", work / f"{name}.py", "-o", work / f"{name}.ir").exit_code == 0
    return work / f"{name}.ir"


def test_missing_field_names_the_input(work):
    source = MLP.format(hidden=8, optimizer="tc.optim.SGD()", epochs=1, batch_size=32, extra="").replace(
        '"image"', '"pixels"'
    )
    program = _compile(work, "pixels", source)
    result = invoke("run", program, "--data", f"idx:{work / 'data'}")
    assert_one_line_error(result, "'pixels'", "image, label")


def test_wrong_shape_names_the_input(work):
    source = MLP.format(hidden=8, optimizer="tc.optim.SGD()", epochs=1, batch_size=32, extra="")
    source = source.replace('("B", 28, 28)', '("B", 784)').replace('image.reshape("B", 784)', "image")
    program = _compile(work, "flat", source)
    result = invoke("run", program, "--data", f"idx:{work / 'data'}")
    assert_one_line_error(result, "'image'", "f32[B,784]", "[N,28,28]")


def test_corrupt_checkpoint_is_one_line(work, trained, tmp_path):
    bad = tmp_path / "bad.safetensors"
    data = trained["ckpt"].read_bytes()
    bad.write_bytes(data[: len(data) // 2])
    result = invoke("eval", work / "mlp.ir", "--weights", bad, "--data", f"idx:{work / 'data'}")
    assert_one_line_error(result, str(bad), "damaged")
    result = invoke("run", work / "mlp.ir", "--data", f"idx:{work / 'data'}", "--checkpoint", bad, "--resume")
    assert_one_line_error(result, str(bad))
    assert bad.read_bytes() == data[: len(data) // 2]  # refused, not overwritten
    result = invoke("eval", work / "exploding.ir", "--weights", trained["ckpt"], "--data", f"idx:{work / 'data'}")
    assert_one_line_error(result, "fc1.w")  # another model's weights: names the parameter


def test_nan_run_names_the_line_and_keeps_the_checkpoint(work, tmp_path):
    ckpt = tmp_path / "c.safetensors"
    result = invoke(
        "run", work / "exploding.ir", "--data", f"idx:{work / 'data'}", "--limit", 300, "--checkpoint", ckpt
    )
    line = assert_one_line_error(result, f"exploding.py:{EXPLODING_LINE}", "exp", "is kept")
    assert line.startswith(f"error: exploding.py:{EXPLODING_LINE}: epoch 2")
    assert load_checkpoint(str(ckpt))[1]["epoch"] == 1
    assert "RuntimeWarning" not in result.stderr


def test_debug_shows_the_traceback(work, tmp_path):
    result = invoke("--debug", "run", work / "mlp.ir", "--data", f"idx:{tmp_path / 'nowhere'}")
    assert result.exit_code == 2 and "Traceback" in result.stderr


def test_flags_are_checked(work):
    result = invoke("run", work / "mlp.ir", "--data", f"idx:{work / 'data'}", "--resume")
    assert_one_line_error(result, "--checkpoint")
    assert invoke("run", work / "mlp.ir", "--schedule", "linear").exit_code == 2  # click's usage error


def test_data_idx_folder(work):
    result = invoke("data", f"idx:{work / 'data'}")
    assert result.exit_code == 0, result.stderr
    assert "train 600 images, test 200 images, 10 classes" in result.stdout


def test_data_mnist_fetches_once_then_uses_the_cache(tmp_path, monkeypatch):
    from tinyc.runtime.datasets import load as load_module

    monkeypatch.setenv("TINYC_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv("TINYC_DATA_DIR", raising=False)
    calls = []

    def fake_fetch():
        calls.append(1)
        return {
            split: (images, labels.astype(np.int64))
            for split, (images, labels) in (("train", synthetic_images(50, 0)), ("test", synthetic_images(20, 1)))
        }

    monkeypatch.setattr(load_module.mnist_pkl, "fetch_mnist", fake_fetch)
    first = invoke("data", "mnist")
    assert first.exit_code == 0, first.stderr
    lines = first.stdout.splitlines()
    assert lines[0].startswith("fetching MNIST (17 MB)") and len(calls) == 1
    assert str(tmp_path / "cache" / "mnist.npz") in first.stdout and "train 50 images, test 20 images" in first.stdout
    second = invoke("data", "mnist")
    assert second.exit_code == 0 and "fetching" not in second.stdout and len(calls) == 1


def fake_mnist_fetch(monkeypatch, cache: Path, n: int) -> np.ndarray:
    """`mnist` not cached (in `cache`) and its fetch giving n synthetic images as both splits; their labels."""
    from tinyc.runtime.datasets import load as load_module

    monkeypatch.setenv("TINYC_CACHE", str(cache))
    monkeypatch.delenv("TINYC_DATA_DIR", raising=False)
    images, labels = synthetic_images(n, 0)
    monkeypatch.setattr(load_module.mnist_pkl, "fetch_mnist",
                        lambda: {"train": (images, labels.astype(np.int64)), "test": (images, labels.astype(np.int64))})
    return labels


def test_run_says_so_before_it_fetches(work, tmp_path, monkeypatch):
    fake_mnist_fetch(monkeypatch, tmp_path / "cache", 40)
    result = invoke("run", work / "mlp.ir", "--data", "mnist", "--epochs", "1")
    assert result.exit_code == 0, result.stderr
    assert result.stdout.splitlines()[0].startswith("fetching MNIST")


def test_a_missing_data_set_says_what_was_tried_without_debug(tmp_path, monkeypatch):
    monkeypatch.delenv("TINYC_DATA_DIR", raising=False)
    result = invoke("data", "fashion-mnist", "--data-dir", tmp_path / "nowhere")
    assert result.exit_code == 2
    first = result.stderr.splitlines()[0]
    assert first.startswith("error: data set fashion-mnist") and f"{tmp_path / 'nowhere'}: no such folder" in first
