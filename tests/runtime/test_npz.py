"""`--data npz:FILE`: a user's arrays, named after the program's inputs, checked like IDX files."""

from __future__ import annotations

import numpy as np
import pytest

from tests.runtime.test_trainer import models, synthetic_images  # noqa: F401 (fixture)
from tinyc.ir.errors import DataError
from tinyc.runtime.datasets import load_dataset
from tinyc.runtime.trainer import RunConfig, Trainer


def arrays(n_train: int = 64, n_test: int = 32) -> dict[str, np.ndarray]:
    train_x, train_y = synthetic_images(n_train, 0)
    test_x, test_y = synthetic_images(n_test, 1)
    return {"train_image": train_x, "train_label": train_y.astype(np.int64),
            "test_image": test_x, "test_label": test_y.astype(np.int64)}


def write(tmp_path, **named) -> str:
    path = tmp_path / "data.npz"
    np.savez(path, **named)
    return f"npz:{path}"


def test_arrays_come_back_by_split_and_field(tmp_path):
    a = arrays()
    data = load_dataset(write(tmp_path, **a))
    assert set(data.train.fields) == {"image", "label"} and len(data.train) == 64 and len(data.test) == 32
    assert np.array_equal(data.train["image"], a["train_image"]) and np.array_equal(data.test["label"], a["test_label"])


def test_uint8_images_train_as_pixels_scaled_to_one(models, tmp_path):  # noqa: F811
    data = load_dataset(write(tmp_path, **arrays()))
    trainer = Trainer(models["sgd"], data.train, data.test, RunConfig.from_program(models["sgd"]))
    image = trainer.train_data["image"]
    assert image.dtype == np.float32 and 0 <= image.min() and image.max() <= 1 and image.max() > 0.5


def _bad(tmp_path, **changes):
    a = {**arrays(), **changes}
    return write(tmp_path, **{k: v for k, v in a.items() if v is not None})


@pytest.mark.parametrize("changes, message", [
    ({"test_image": None, "test_label": None}, "no test_* arrays (it has train_image, train_label)"),
    ({"image": np.zeros((4, 28, 28))}, "array 'image' is neither train_<input> nor test_<input>"),
    ({"train_name": np.array(["a", "b"])}, "array 'train_name' has dtype <U1; only numbers"),
    ({"train_extra": np.zeros(64)}, "train has fields extra, image, label but test has image, label"),
    ({"train_obj": np.array([{}, 1], dtype=object)}, "array 'train_obj' holds Python objects"),
])
def test_malformed_files_are_one_line_errors(tmp_path, changes, message):
    with pytest.raises(DataError) as e:
        load_dataset(_bad(tmp_path, **changes))
    assert message in e.value.message and "\n" not in e.value.message


def test_not_an_npz_and_no_file(tmp_path):
    (tmp_path / "x.npz").write_bytes(b"not a zip")
    with pytest.raises(DataError, match=r"x.npz: not a NumPy .npz file"):
        load_dataset(f"npz:{tmp_path / 'x.npz'}")
    with pytest.raises(DataError, match=r"npz:.*nope.npz: no such file"):
        load_dataset(f"npz:{tmp_path / 'nope.npz'}")


def test_a_folder_or_an_npy_is_not_an_npz(tmp_path):
    (tmp_path / "folder.npz").mkdir()
    with pytest.raises(DataError, match=r"folder.npz: a folder, not a .npz file"):
        load_dataset(f"npz:{tmp_path / 'folder.npz'}")
    np.save(tmp_path / "one.npy", np.zeros((4, 28, 28)))
    with pytest.raises(DataError, match=r"one.npy: one array \(a .npy file\), not a .npz of named arrays"):
        load_dataset(f"npz:{tmp_path / 'one.npy'}")


def test_record_counts_of_a_split_must_agree(tmp_path):
    with pytest.raises(DataError, match=r"train: fields have different record counts"):
        load_dataset(_bad(tmp_path, train_label=np.zeros(10, np.int64)))


def test_shapes_and_labels_are_checked_against_the_program(models, tmp_path):  # noqa: F811
    program, config = models["sgd"], RunConfig.from_program(models["sgd"])
    small = load_dataset(_bad(tmp_path, train_image=np.zeros((64, 27, 27), np.uint8),
                              test_image=np.zeros((32, 27, 27), np.uint8)))
    with pytest.raises(DataError, match=r"input 'image' is f32\[B,28,28\] but was fed shape \[N,27,27\]"):
        Trainer(program, small.train, small.test, config)
    labels = arrays()["train_label"].copy()
    labels[5] = 10
    wrong = load_dataset(_bad(tmp_path, train_label=labels))
    with pytest.raises(DataError, match=r"training labels run from 0 to 10, but the model has 10 classes"):
        Trainer(program, wrong.train, wrong.test, config)
