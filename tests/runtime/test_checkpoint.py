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


def _edit_metadata(data: bytes, edit) -> bytes:
    """The checkpoint re-written by another tool with its metadata edited and its old seal kept."""
    import json
    import struct

    from safetensors.numpy import load, save

    n = struct.unpack("<Q", data[:8])[0]
    metadata = json.loads(data[8:8 + n])["__metadata__"]
    edit(metadata)
    return save(load(data), metadata=metadata)


def _set_meta(key, value):
    def edit(metadata):
        import json

        meta = json.loads(metadata["meta"])
        meta[key] = value
        metadata["meta"] = json.dumps(meta, sort_keys=True)
    return edit


@pytest.mark.parametrize("edit", [
    _set_meta("epoch", 7), _set_meta("step", 0), _set_meta("rng", {"state": 6}), _set_meta("history", []),
    lambda m: m.update(note="added"), lambda m: m.update(format="tinyc.checkpoint ")])
def test_edited_metadata_is_refused(tmp_path, edit):
    """The seal covers every byte that matters: metadata (epoch, step, RNG state, history) too."""
    data = ck.encode_checkpoint(_tensors(), {"epoch": 1, "step": 9, "rng": {"state": 5}, "history": [{"epoch": 1}]})
    path = tmp_path / "c.safetensors"
    path.write_bytes(_edit_metadata(data, lambda m: None))
    assert ck.load_checkpoint(str(path))[1]["epoch"] == 1  # rewriting alone keeps it valid
    path.write_bytes(_edit_metadata(data, edit))
    with pytest.raises(CheckpointError) as info:
        ck.load_checkpoint(str(path))
    assert len(str(info.value).splitlines()) <= 2 and str(path) in str(info.value)


def test_a_checkpoint_sealed_only_over_its_tensors_is_refused(tmp_path):
    data = _edit_metadata(ck.encode_checkpoint(_tensors(), {"epoch": 1}), lambda m: m.update(version="1"))
    path = tmp_path / "c.safetensors"
    path.write_bytes(data)
    with pytest.raises(CheckpointError, match="version 1 is not sealed whole"):
        ck.load_checkpoint(str(path))


def test_is_checkpoint_reads_the_header_as_loading_does(tmp_path):
    # `is_checkpoint` (does --checkpoint hold a run?) and loading judge a file by one reading of its header
    from safetensors.numpy import save_file

    good = tmp_path / "good.st"
    ck.save_checkpoint(str(good), {"w": np.zeros(3)}, {"epoch": 1})
    save_file({"w": np.zeros(3)}, str(tmp_path / "foreign.st"))  # safetensors without tinyc's metadata
    (tmp_path / "text").write_text("hello, not a checkpoint at all")
    (tmp_path / "empty").write_bytes(b"")
    (tmp_path / "cut.st").write_bytes(good.read_bytes()[:20])  # its header cut short
    (tmp_path / "big.st").write_bytes((1 << 40).to_bytes(8, "little") + b"{}")  # a header length past the file
    for name in ["good.st", "foreign.st", "text", "empty", "cut.st", "big.st"]:
        path = str(tmp_path / name)
        try:
            ck.load_checkpoint(path)
            loads = True
        except CheckpointError:
            loads = False
        assert ck.is_checkpoint(path) == loads == (name == "good.st"), name
    assert not ck.is_checkpoint(str(tmp_path)) and not ck.is_checkpoint(str(tmp_path / "none"))
