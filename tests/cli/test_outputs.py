"""Output paths on the command line: checked before any work, never an input, never an earlier
run's checkpoint without --resume or --overwrite, a FIFO written into, one run per checkpoint."""

from __future__ import annotations

import os
import threading
from pathlib import Path

import pytest

from tests.cli.test_crash_safety import untimed
from tests.cli.test_run import assert_one_line_error, invoke
from tests.runtime.test_trainer import write_model, write_synthetic_idx
from tinyc.ir.fileio import hold_lock
from tinyc.runtime.checkpoint import load_checkpoint


@pytest.fixture(scope="module")
def work(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("outputs")
    write_synthetic_idx(d / "data", n_train=64, n_test=32)
    write_model(d, "mlp.py", hidden=8, epochs=1, batch_size=32)
    result = invoke("compile", d / "mlp.py", "-o", d / "mlp.ir")
    assert result.exit_code == 0, result.output
    return d


def run(work: Path, *args):
    return invoke("run", work / "mlp.ir", "--data", f"idx:{work / 'data'}", *args)


def test_compile_never_overwrites_its_model_file(work, tmp_path):
    source = (work / "mlp.py").read_bytes()
    (tmp_path / "alias.py").symlink_to(work / "mlp.py")
    for out in (work / "mlp.py", tmp_path / "alias.py"):
        assert_one_line_error(invoke("compile", work / "mlp.py", "-o", out), f"refusing to write {out}: it is the input")
    assert (work / "mlp.py").read_bytes() == source


@pytest.mark.parametrize("flag", ["--checkpoint", "--metrics-out"])
def test_run_never_overwrites_its_program(work, flag):
    program = (work / "mlp.ir").read_bytes()
    result = run(work, flag, work / "mlp.ir")
    assert_one_line_error(result, f"refusing to write {flag} {work / 'mlp.ir'}: it is the input")
    assert (work / "mlp.ir").read_bytes() == program


@pytest.mark.parametrize("where", ["folder", "read-only", "same as metrics"])
def test_bad_output_locations_are_reported_before_any_work(work, tmp_path, where):
    ckpt = {"folder": tmp_path, "read-only": Path("/proc/c.safetensors"), "same as metrics": tmp_path / "m"}[where]
    result = run(work, "--checkpoint", ckpt, "--metrics-out", tmp_path / "m")
    line = assert_one_line_error(result, f"--checkpoint {ckpt}")
    assert ".tmp" not in line and result.stdout == ""  # nothing trained, no temporary file named


def test_an_earlier_runs_checkpoint_needs_resume_or_overwrite(work, tmp_path):
    ckpt = tmp_path / "c.safetensors"
    assert run(work, "--checkpoint", ckpt, "--epochs", 2).exit_code == 0
    before = ckpt.read_bytes()
    result = run(work, "--checkpoint", ckpt, "--epochs", 1)
    assert_one_line_error(result, f"--checkpoint {ckpt} already holds a run")
    assert "--resume" in result.stderr and "--overwrite" in result.stderr
    assert ckpt.read_bytes() == before
    assert run(work, "--checkpoint", ckpt, "--epochs", 3, "--resume").exit_code == 0
    assert load_checkpoint(str(ckpt))[1]["epoch"] == 3
    assert run(work, "--checkpoint", ckpt, "--epochs", 1, "--overwrite").exit_code == 0
    assert load_checkpoint(str(ckpt))[1]["epoch"] == 1
    assert_one_line_error(run(work, "--checkpoint", ckpt, "--resume", "--overwrite"), "contradict")


def test_an_existing_file_that_is_no_checkpoint_is_named_as_such(work, tmp_path):
    notes = tmp_path / "notes.txt"
    notes.write_text("my notes\n")
    result = run(work, "--checkpoint", notes)
    assert_one_line_error(result, f"--checkpoint {notes} exists and is not a tinyc checkpoint")
    assert "--overwrite" in result.stderr and "--resume" not in result.stderr
    assert notes.read_text() == "my notes\n"


def test_a_second_run_on_a_checkpoint_is_refused(work, tmp_path):
    ckpt = tmp_path / "c.safetensors"
    with hold_lock(ckpt):  # a run in progress
        result = run(work, "--checkpoint", ckpt)
    assert_one_line_error(result, f"--checkpoint {ckpt} is in use by another run (pid {os.getpid()})")
    assert not ckpt.exists()


def test_compile_writes_into_a_fifo(work, tmp_path):
    fifo = tmp_path / "out.ir"
    os.mkfifo(fifo)
    got = []
    reader = threading.Thread(target=lambda: got.append(fifo.read_bytes()))
    reader.start()
    result = invoke("compile", work / "mlp.py", "-o", fifo)
    reader.join(10)
    assert result.exit_code == 0, result.output
    assert got == [(work / "mlp.ir").read_bytes()] and fifo.is_fifo()


def test_a_dump_dir_that_is_a_file_is_refused_before_compiling(work, tmp_path):
    (tmp_path / "dumps").write_text("not a folder")
    result = invoke("compile", work / "mlp.py", "-o", tmp_path / "m.ir", "--dump-dir", tmp_path / "dumps" / "x")
    assert_one_line_error(result, f"cannot write into --dump-dir {tmp_path / 'dumps' / 'x'}")
    assert not (tmp_path / "m.ir").exists() and (tmp_path / "dumps").read_text() == "not a folder"


@pytest.mark.parametrize("flag", ["--checkpoint", "--metrics-out"])
def test_run_never_overwrites_its_data_set(work, tmp_path, flag):
    """The data set's files are inputs too, whether named by folder (idx:), file (npz:) or found
    in the data dir; --overwrite replaces an earlier run, never an input."""
    import numpy as np

    labels = work / "data" / "train-labels-idx1-ubyte"
    original = labels.read_bytes()
    result = run(work, flag, labels, "--overwrite")
    assert_one_line_error(result, f"refusing to write {flag} {labels}: it is the input")
    assert labels.read_bytes() == original
    npz = tmp_path / "set.npz"
    np.savez(npz, train_image=np.zeros((4, 28, 28), np.uint8), train_label=np.zeros(4, np.int64),
             test_image=np.zeros((2, 28, 28), np.uint8), test_label=np.zeros(2, np.int64))
    before = npz.read_bytes()
    result = invoke("run", work / "mlp.ir", "--data", f"npz:{npz}", flag, npz, "--overwrite")
    assert_one_line_error(result, f"refusing to write {flag} {npz}: it is the input")
    assert npz.read_bytes() == before
    result = invoke("run", work / "mlp.ir", "--data", "mnist", "--data-dir", work / "data", flag, labels, "--overwrite")
    assert_one_line_error(result, f"refusing to write {flag} {labels}: it is the input")
    assert labels.read_bytes() == original


def test_keep_best_never_overwrites_the_model_or_the_data_set(work, tmp_path):
    """--keep-best writes X.best.EXT beside --checkpoint X.EXT: an output like the others, which
    --overwrite lets replace an earlier run's file but never an input."""
    import numpy as np

    model = tmp_path / "m.best.ir"
    model.write_bytes((work / "mlp.ir").read_bytes())
    result = invoke("run", model, "--data", f"idx:{work / 'data'}", "--checkpoint", tmp_path / "m.ir",
                    "--val-split", "0.25", "--keep-best", "--overwrite")
    assert_one_line_error(result, f"refusing to write --keep-best {model}: it is the input")
    assert model.read_bytes() == (work / "mlp.ir").read_bytes()
    npz = tmp_path / "set.best.npz"
    np.savez(npz, train_image=np.zeros((8, 28, 28), np.uint8), train_label=np.zeros(8, np.int64),
             test_image=np.zeros((2, 28, 28), np.uint8), test_label=np.zeros(2, np.int64))
    before = npz.read_bytes()
    result = invoke("run", work / "mlp.ir", "--data", f"npz:{npz}", "--checkpoint", tmp_path / "set.npz",
                    "--val-split", "0.25", "--keep-best", "--overwrite")
    assert_one_line_error(result, f"refusing to write --keep-best {npz}: it is the input")
    assert npz.read_bytes() == before and not (tmp_path / "set.npz").exists()


def test_metrics_into_dev_null_dev_full_and_a_fifo(work, tmp_path):
    """The metrics file may be a device or a FIFO: /dev/null takes the rows (never synced), a
    full device is one line naming it, and a FIFO's reader sees one stream holding every row."""
    assert run(work, "--metrics-out", "/dev/null").exit_code == 0
    assert_one_line_error(run(work, "--metrics-out", "/dev/full"), "/dev/full: No space left on device")
    import subprocess
    import sys

    args = ["run", work / "mlp.ir", "--data", f"idx:{work / 'data'}", "--epochs", "3", "--seed", "5"]
    assert invoke(*args, "--metrics-out", tmp_path / "m.jsonl").exit_code == 0
    fifo = tmp_path / "m.fifo"
    os.mkfifo(fifo)
    got = []
    reader = threading.Thread(target=lambda: got.append(fifo.read_bytes()))  # one open, read to its end
    reader.start()
    proc = subprocess.run([sys.executable, "-m", "tinyc", *map(str, args), "--metrics-out", str(fifo)],
                          capture_output=True, text=True, timeout=120, check=False)
    reader.join(10)
    assert proc.returncode == 0, proc.stderr
    (tmp_path / "from_fifo.jsonl").write_bytes(got[0])
    want = untimed(tmp_path / "m.jsonl")
    assert untimed(tmp_path / "from_fifo.jsonl") == want and len(want) >= 3
    assert fifo.is_fifo()


def test_metrics_onto_stdout_redirected_to_a_file_keep_every_row_beside_the_progress(work, tmp_path):
    """`--metrics-out /dev/stdout > log`: a second opening of the log would have its own offset, and
    the progress lines printed through stdout overwrote rows written through it (half were lost)."""
    import subprocess
    import sys

    args = ["run", work / "mlp.ir", "--data", f"idx:{work / 'data'}", "--epochs", "3", "--seed", "5"]
    assert invoke(*args, "--metrics-out", tmp_path / "m.jsonl").exit_code == 0
    log = tmp_path / "log"
    with open(log, "wb") as out:  # `> log`: not opened for appending
        done = subprocess.run([sys.executable, "-m", "tinyc", *map(str, args), "--metrics-out", "/dev/stdout"],
                              stdout=out, stderr=subprocess.PIPE, timeout=120, check=False)
    assert done.returncode == 0, done.stderr
    lines = log.read_text().splitlines()
    (tmp_path / "from_log.jsonl").write_text("".join(line + "\n" for line in lines if line.startswith("{")))
    want = untimed(tmp_path / "m.jsonl")
    assert untimed(tmp_path / "from_log.jsonl") == want and len(want) >= 3
    assert lines[0].startswith("training ") and any(line.startswith("done: 3 epochs") for line in lines)


def test_output_onto_stdout_is_written_into_whatever_stdout_is(work, tmp_path):
    """`-o /dev/stdout` (a link to `pipe:[...]`, which has no folder to write a temporary file in)
    writes into the pipe; onto `>> log` it appends, never replacing or truncating the log; the
    `wrote ...` line goes to stderr, so the file's bytes are alone on stdout."""
    import subprocess
    import sys

    tinyc = [sys.executable, "-m", "tinyc"]
    for argv, suffix in ((["compile", work / "mlp.py"], ".ir"), (["plot", tmp_path / "m.jsonl"], ".png")):
        if suffix == ".png":
            pytest.importorskip("matplotlib")
            assert invoke("run", work / "mlp.ir", "--data", f"idx:{work / 'data'}", "--metrics-out",
                          tmp_path / "m.jsonl").exit_code == 0
        want = tmp_path / f"want{suffix}"
        assert invoke(*argv, "-o", want).exit_code == 0
        piped = subprocess.run([*tinyc, *map(str, argv), "-o", "/dev/stdout"], capture_output=True, timeout=120,
                               check=False)
        assert piped.returncode == 0, piped.stderr
        assert piped.stdout == want.read_bytes()
        assert piped.stderr.decode().startswith("wrote /dev/stdout: ")
    log = tmp_path / "log"
    log.write_bytes(b"earlier lines\n")
    with open(log, "ab") as out:
        done = subprocess.run([*tinyc, "compile", str(work / "mlp.py"), "-o", "/dev/stdout"], stdout=out,
                              stderr=subprocess.PIPE, timeout=120, check=False)
    assert done.returncode == 0, done.stderr
    assert log.read_bytes() == b"earlier lines\n" + (work / "mlp.ir").read_bytes()


def test_a_descriptor_that_is_not_open_is_named_as_such(work, tmp_path):
    fd = next(n for n in range(999, 100, -1) if not _is_open(n))  # far above what the process opens
    result = invoke("compile", work / "mlp.py", "-o", f"/dev/fd/{fd}")
    assert_one_line_error(result, f"cannot write /dev/fd/{fd}: no such descriptor is open")
    assert sorted(tmp_path.iterdir()) == []


def _is_open(fd: int) -> bool:
    try:
        os.fstat(fd)
    except OSError:
        return False
    return True
