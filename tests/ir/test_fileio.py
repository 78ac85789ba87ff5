"""Crash-safe writing: the old file or the new one, never a temporary file left or named."""

from __future__ import annotations

import os

import pytest

from tinyc.ir.fileio import atomic_write, remove_stale_temps


def test_atomic_write_replaces_and_leaves_no_temporary(tmp_path):
    path = tmp_path / "out.bin"
    atomic_write(path, b"old")
    atomic_write(path, b"new")
    assert path.read_bytes() == b"new" and os.listdir(tmp_path) == ["out.bin"]


def test_writing_over_a_folder_names_the_folder(tmp_path):
    folder = tmp_path / "model.ir"
    folder.mkdir()
    with pytest.raises(IsADirectoryError) as err:
        atomic_write(folder, b"data")
    assert err.value.filename == str(folder)
    assert os.listdir(tmp_path) == ["model.ir"]  # no temporary file left behind


def test_remove_stale_temps_removes_only_the_files_temporaries(tmp_path):
    (tmp_path / ".out.bin.abc123.tmp").write_bytes(b"half")
    (tmp_path / ".other.bin.abc123.tmp").write_bytes(b"half")
    remove_stale_temps(tmp_path / "out.bin")
    assert os.listdir(tmp_path) == [".other.bin.abc123.tmp"]
