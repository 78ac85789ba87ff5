"""`tinyc run --data npz:FILE --val-split F --keep-best` from the command line."""

from __future__ import annotations

import re

import numpy as np
import pytest

from tests.cli.test_cli import error_lines, invoke
from tests.cli.test_run import work  # noqa: F401 (fixture)
from tests.runtime.test_npz import arrays


def test_run_on_npz_with_validation_and_best_checkpoint(work, tmp_path):  # noqa: F811
    np.savez(tmp_path / "mine.npz", **arrays(200, 50))
    ckpt = tmp_path / "run.safetensors"
    result = invoke("run", work / "mlp.ir", "--data", f"npz:{tmp_path / 'mine.npz'}", "--epochs", 2,
                    "--val-split", 0.2, "--checkpoint", ckpt, "--keep-best")
    assert result.exit_code == 0, result.output
    assert "160 train / 40 validation / 50 test examples" in result.stdout
    assert len(re.findall(r"^epoch \d/2: .*val accuracy \d+\.\d\d%, test accuracy", result.stdout, re.MULTILINE)) == 2
    assert f"best {tmp_path / 'run.best.safetensors'} (epoch " in result.stdout
    assert (tmp_path / "run.best.safetensors").exists()


def test_a_bad_npz_is_one_line_and_exit_2(work, tmp_path):  # noqa: F811
    np.savez(tmp_path / "bad.npz", images=np.zeros((3, 28, 28)))
    result = invoke("run", work / "mlp.ir", "--data", f"npz:{tmp_path / 'bad.npz'}")
    assert result.exit_code == 2 and "Traceback" not in result.output
    assert error_lines(result)[0] == (f"error: {tmp_path / 'bad.npz'}: array 'images' is neither train_<input> "
                                      "nor test_<input>")


@pytest.mark.parametrize("flags, message", [
    (["--log-every", "0"], "--log-every must be >= 1"),
    (["--log-every", "-3"], "--log-every must be >= 1"),
    (["--val-split", "1.0"], "--val-split must lie between 0 and 1"),
    (["--val-split", "0"], "--val-split must lie between 0 and 1"),
    (["--val-split", "-0.1"], "--val-split must lie between 0 and 1"),
    (["--val-split", "nan"], "--val-split must lie between 0 and 1"),
    (["--val-split", "0.001"], "--val-split 0.001 of 200 training examples leaves no example to validate on"),
])
def test_bad_flags_are_one_line_before_any_output(work, tmp_path, flags, message):  # noqa: F811
    np.savez(tmp_path / "mine.npz", **arrays(200, 50))
    metrics, ckpt = tmp_path / "m.jsonl", tmp_path / "c.safetensors"
    result = invoke("run", work / "mlp.ir", "--data", f"npz:{tmp_path / 'mine.npz'}", "--metrics-out", metrics,
                    "--checkpoint", ckpt, *flags)
    assert result.exit_code == 2 and "Traceback" not in result.output
    assert error_lines(result) == [f"error: {message}"]
    assert not metrics.exists() and not ckpt.exists()


def _bad_npz(path, **changes):
    a = {**arrays(200, 50), **changes}
    np.savez(path, **{k: v for k, v in a.items() if v is not None})
    return path


@pytest.mark.parametrize("changes, message", [
    # the file and the array come first, then what is wrong
    ({"train_label": arrays(200, 50)["train_label"].astype(np.float32)},
     "array 'train_label': input 'label' is i64[B] but was fed float32 data"),
    ({"test_image": np.zeros((50, 784), np.uint8)},
     "array 'test_image': input 'image' is f32[B,28,28] (rank 3) but was fed an array of shape [N,784] (rank 2)"),
    ({"train_image": np.full((200, 28, 28), 300, np.int64)},
     "array 'train_image': input 'image' is f32[B,28,28] and declares no preprocessing, but got int64 data"),
    ({"train_image": np.full((200, 28, 28), np.nan, np.float32)}, "array 'train_image' holds NaN or infinite values"),
    ({"train_image": np.zeros((0, 28, 28), np.uint8), "train_label": np.zeros(0, np.int64)},
     "the train_* arrays hold no records"),
    ({"test_label": np.full(50, 10, np.int64)},
     "array 'test_label': test labels run from 10 to 10, but the model has 10 classes (0 to 9)"),
    ({"train_label": np.r_[np.zeros(199, np.int64), -1]},  # the last record: drawn into the held-out part
     "array 'train_label': training labels run from -1 to 0, but the model has 10 classes (0 to 9)"),
])
def test_bad_arrays_name_the_file_and_array_before_training(work, tmp_path, changes, message):  # noqa: F811
    bad = _bad_npz(tmp_path / "bad.npz", **changes)
    metrics, ckpt = tmp_path / "m.jsonl", tmp_path / "c.safetensors"
    result = invoke("run", work / "mlp.ir", "--data", f"npz:{bad}", "--metrics-out", metrics, "--checkpoint", ckpt,
                    "--val-split", "0.2")
    assert result.exit_code == 2 and "Traceback" not in result.output and "epoch 1" not in result.output
    assert error_lines(result)[0] == f"error: {bad}: {message}"
    assert not ckpt.exists() and not (metrics.exists() and metrics.read_text())  # no epoch was trained
