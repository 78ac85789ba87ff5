"""Checkpoints: round trip (including non-contiguous arrays), atomic writes, damage refused."""

import os

import numpy as np
import pytest

from tinyc.ir import fileio
from tinyc.ir.errors import CheckpointError
from tinyc.runtime import checkpoint as ck


def _tensors():
    rng = np.random.default_rng(0)
    w = rng.standard_normal((3, 5)).astype(np.float32)
    return {"w_t": w.T, "b": np.arange(4, dtype=np.float32), "step": np.array(7.0, np.float32),
            "order": rng.permutation(10).astype(np.int64)}


def test_round_trip_keeps_values_of_transposed_arrays(tmp_path):
    path = tmp_path / "c.safetensors"
    tensors = _tensors()
    assert not tensors["w_t"].flags.c_contiguous
    ck.save_checkpoint(str(path), tensors, {"epoch": 2, "rng": {"state": 5}})
    loaded, meta = ck.load_checkpoint(str(path))
    assert meta == {"epoch": 2, "rng": {"state": 5}}
    for name, arr in tensors.items():
        np.testing.assert_array_equal(loaded[name], arr)
        assert loaded[name].dtype == arr.dtype


def test_write_replaces_atomically_and_leaves_no_temp_files(tmp_path, monkeypatch):
    path = tmp_path / "c.safetensors"
    ck.save_checkpoint(str(path), {"a": np.zeros(3, np.float32)}, {"epoch": 0})

    def broken_fsync(fd):
        raise OSError("disk full")

    monkeypatch.setattr(fileio.os, "fsync", broken_fsync)
    with pytest.raises(OSError):
        ck.save_checkpoint(str(path), {"a": np.ones(3, np.float32)}, {"epoch": 1})
    monkeypatch.undo()
    tensors, meta = ck.load_checkpoint(str(path))  # the old checkpoint is intact
    assert meta == {"epoch": 0} and tensors["a"].sum() == 0
    assert os.listdir(tmp_path) == ["c.safetensors"]


@pytest.mark.parametrize("damage", ["truncate", "flip", "empty", "foreign", "garbage"])
def test_damaged_checkpoints_are_refused(tmp_path, damage):
    data = ck.encode_checkpoint(_tensors(), {"epoch": 1})
    if damage == "truncate":
        data = data[: len(data) - 9]
    elif damage == "flip":
        data = bytearray(data)
        data[-5] ^= 0x40  # a bit inside the tensor bytes
        data = bytes(data)
    elif damage == "empty":
        data = b""
    elif damage == "foreign":
        from safetensors.numpy import save

        data = save({"w": np.zeros(2, np.float32)})
    else:
        data = b"\x10\x00\x00\x00\x00\x00\x00\x00not json at all!"
    path = tmp_path / "bad.safetensors"
    path.write_bytes(data)
    with pytest.raises(CheckpointError) as info:
        ck.load_checkpoint(str(path))
    assert str(path) in str(info.value)


def test_mismatched_parameters_are_named_with_both_shapes():
    expected = {"w": ((3, 5), np.dtype(np.float32)), "b": ((5,), np.dtype(np.float32))}
    with pytest.raises(CheckpointError, match=r"'w' is float32\[5, 3\] in the checkpoint but float32\[3, 5\]"):
        ck.check_compatible({"w": np.zeros((5, 3), np.float32), "b": np.zeros(5, np.float32)}, expected)
    with pytest.raises(CheckpointError, match="no tensor for parameter 'b'"):
        ck.check_compatible({"w": np.zeros((3, 5), np.float32)}, expected)
