"""Writing outputs: never replaces what is not a regular file, follows symlinks, never hits an
input, says what is wrong before any work, and leaves a live writer's temporary file alone."""

from __future__ import annotations

import fcntl
import os
import stat
import threading

import pytest

from tinyc.ir.errors import OutputError
from tinyc.ir.fileio import atomic_write, check_output, check_outputs, hold_lock, remove_stale_temps


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


def test_a_fifo_is_written_into_not_replaced(tmp_path):
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    got = []
    reader = threading.Thread(target=lambda: got.append(fifo.read_bytes()))
    reader.start()
    check_output(fifo)
    atomic_write(fifo, b"through the pipe")
    reader.join(10)
    assert got == [b"through the pipe"]
    assert stat.S_ISFIFO(os.lstat(fifo).st_mode)
    assert os.listdir(tmp_path) == ["pipe"]  # no temporary file left beside it


def test_a_symlink_keeps_its_link_and_its_target_is_replaced_atomically(tmp_path):
    (tmp_path / "real").mkdir()
    target = tmp_path / "real" / "model.ir"
    target.write_bytes(b"old")
    link = tmp_path / "link.ir"
    link.symlink_to(target)
    check_output(link)
    atomic_write(link, b"new")
    assert link.is_symlink() and os.readlink(link) == str(target)
    assert target.read_bytes() == b"new"
    # a dangling link creates its target, as a shell's redirection does
    dangling = tmp_path / "dangling.ir"
    dangling.symlink_to(tmp_path / "real" / "later.ir")
    atomic_write(dangling, b"made")
    assert dangling.is_symlink() and (tmp_path / "real" / "later.ir").read_bytes() == b"made"


def test_a_folder_is_refused_naming_the_users_path(tmp_path):
    with pytest.raises(OutputError) as err:
        check_output(tmp_path, what="--checkpoint")
    assert err.value.message == f"cannot write --checkpoint {tmp_path}: it is a folder"
    with pytest.raises(IsADirectoryError) as err:
        atomic_write(tmp_path, b"x")
    assert err.value.filename == str(tmp_path)


def test_an_unwritable_folder_is_refused_up_front_naming_the_users_path():
    # /proc takes no new files, not even root's (os.access would say yes to root)
    with pytest.raises(OutputError) as err:
        check_output("/proc/tinyc-out.ir", what="--metrics-out")
    assert err.value.message.startswith("cannot write --metrics-out /proc/tinyc-out.ir: folder /proc does not take new files")
    with pytest.raises(OSError) as err:
        atomic_write("/proc/tinyc-out.ir", b"x")
    assert err.value.filename == "/proc/tinyc-out.ir"  # never tinyc's temporary file


def test_a_missing_folder_is_refused(tmp_path):
    with pytest.raises(OutputError, match="no folder"):
        check_output(tmp_path / "no" / "x.ir")


def test_an_input_is_refused_however_it_is_named(tmp_path):
    source = tmp_path / "model.py"
    source.write_text("x = 1\n")
    (tmp_path / "sub").mkdir()
    (tmp_path / "hard.py").hardlink_to(source)
    (tmp_path / "soft.py").symlink_to(source)
    for alias in (source, tmp_path / "sub" / ".." / "model.py", tmp_path / "hard.py", tmp_path / "soft.py"):
        with pytest.raises(OutputError, match=f"refusing to write {alias}: it is the input {source}"):
            check_output(alias, inputs=[source])
    check_output(tmp_path / "other.py", inputs=[source])  # a new file is fine


def test_two_outputs_may_not_be_one_file_but_may_share_a_device(tmp_path):
    with pytest.raises(OutputError, match="--metrics-out .*a.out is also --checkpoint .*a.out"):
        check_outputs([("--checkpoint", tmp_path / "a.out"), ("--metrics-out", tmp_path / "." / "a.out")])
    check_outputs([("--checkpoint", tmp_path / "a.out"), ("--metrics-out", tmp_path / "b.out"), ("--x", None)])
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    check_outputs([("--checkpoint", fifo), ("--metrics-out", fifo)])


def test_stale_temps_go_a_live_writers_stays(tmp_path):
    path = tmp_path / "ckpt.safetensors"
    dead = tmp_path / ".ckpt.safetensors.abc123.tmp"
    live = tmp_path / ".ckpt.safetensors.def456.tmp"
    dead.write_bytes(b"left by a killed run")
    live.write_bytes(b"being written")
    with open(live, "rb") as f:
        fcntl.flock(f.fileno(), fcntl.LOCK_EX)  # as atomic_write holds it while writing
        remove_stale_temps(path)
        assert live.exists() and not dead.exists()
    remove_stale_temps(path)
    assert not live.exists()


def test_one_run_per_checkpoint(tmp_path):
    path = tmp_path / "ckpt.safetensors"
    with hold_lock(path, "--checkpoint"):
        # another process's lock: flock locks are per open file, so a second open conflicts too
        with pytest.raises(OutputError) as err, hold_lock(path, "--checkpoint"):
            pass
        assert err.value.message == f"--checkpoint {path} is in use by another run (pid {os.getpid()})"
    with hold_lock(path):  # released when the run ends
        pass
