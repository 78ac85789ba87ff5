"""Real MPI: `mpiexec -n 2 tinyc run` (MPICH from the `mpi` extra) on a tiny synthetic data set.

Every job runs under `timeout` with one BLAS thread per rank (2 ranks on 2 cores). What is held:
2 ranks == LocalComm bit for bit (and so run to run); 1 rank vs 2 ranks within the tolerances of
the README; uneven batches; rank-0-only outputs; resume on 2 and on 1 rank; an exception on one
rank and a SIGKILLed rank end the job non-zero without a hang; mismatched programs refused.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from tests.runtime.test_trainer import write_model, write_synthetic_idx
from tinyc.runtime import load
from tinyc.runtime.checkpoint import load_checkpoint
from tinyc.runtime.comm import LocalComm, run_ranks
from tinyc.runtime.datasets import load_dataset
from tinyc.runtime.threads import available_cores
from tinyc.runtime.trainer import RunConfig, Trainer

MPIEXEC = str(Path(sys.executable).parent / "mpiexec")  # installed by `pip install mpich` (the mpi extra)
TINYC = [sys.executable, "-m", "tinyc"]
LIMIT_S = 120  # a hung job is killed by `timeout`; generous, as a loaded shared machine can be slow to start ranks
BATCH = ["--batch-size", "33"]  # 250 = 7 x 33 + 19: every batch splits unevenly (17/16, last 10/9)


def env(threads: bool = True) -> dict[str, str]:
    e = {k: v for k, v in os.environ.items() if not k.startswith(("PMI_", "OMPI_", "MV2_", "TINYC_NUM_THREADS"))}
    e.update(OPENBLAS_NUM_THREADS="1", **({"TINYC_NUM_THREADS": "1"} if threads else {}))
    return e


def mpi(*args, n: int = 2, cwd: Path, timeout: int = LIMIT_S, extra: list[str] | None = None, threads: bool = True):
    """`mpiexec -n N python -m tinyc ARGS` (plus an MPMD part `extra`) under `timeout`."""
    cmd = ["timeout", "-k", "5", str(timeout), MPIEXEC, "-n", str(n), *TINYC, *map(str, args), *(extra or [])]
    return subprocess.run(cmd, cwd=cwd, env=env(threads), capture_output=True, text=True, check=False)


def one(*args, cwd: Path):
    cmd = ["timeout", "-k", "5", str(LIMIT_S), *TINYC, *map(str, args)]
    return subprocess.run(cmd, cwd=cwd, env=env(), capture_output=True, text=True, check=False)


@pytest.fixture(scope="module")
def work(tmp_path_factory):
    d = tmp_path_factory.mktemp("mpi")
    write_synthetic_idx(d / "data", n_train=250, n_test=101)
    for name, hidden in (("mlp.py", 16), ("other.py", 8)):
        write_model(d, name, hidden=hidden)
        r = one("compile", name, "-o", name.replace(".py", ".ir"), cwd=d)
        assert r.returncode == 0, r.stderr
    return d


@pytest.fixture(scope="module")
def two_epochs(work):
    """The reference job: 2 ranks, 2 epochs, checkpoint and metrics."""
    r = mpi("run", "mlp.ir", "--data", "idx:data", "--epochs", 2, *BATCH, "--log-every", 1, "--threads", 1,
            "--checkpoint", "two.safetensors", "--metrics-out", "two.jsonl", cwd=work)
    assert r.returncode == 0, r.stderr
    return r


def rows(path: Path, kind: str) -> list[dict]:
    return [row for row in map(json.loads, path.read_text().splitlines()) if row["kind"] == kind]


def test_two_ranks_equal_local_comm_bit_for_bit_and_only_rank_zero_writes(work, two_epochs):
    out = two_epochs.stdout
    assert out.count("training mlp.py") == 1 and out.count("done: 2 epochs") == 1  # rank 0 alone prints
    assert "on 2 ranks x 1 threads" in out
    assert len(rows(work / "two.jsonl", "epoch")) == 2 and len(rows(work / "two.jsonl", "step")) == 16
    tensors, meta = load_checkpoint(str(work / "two.safetensors"))
    assert meta["world_size"] == 2
    assert not [p for p in os.listdir(work) if p.startswith(".") and not p.endswith(".lock")]  # no temporaries
    program, data = load(str(work / "mlp.ir")), load_dataset(f"idx:{work / 'data'}")

    def rank(comm):
        config = RunConfig.from_program(program, rank=comm.rank, epochs=2, batch_size=33, threads=1)
        t = Trainer(program, data["train"], data["test"], config, comm=comm)
        return t.fit(), t.executor.state_dict()

    (summary, state), _ = run_ranks(LocalComm.world(2), rank)
    for k, a in state.items():
        np.testing.assert_array_equal(tensors[k], a, err_msg=k)
    assert [r["train_loss"] for r in summary["history"]] == [r["train_loss"] for r in rows(work / "two.jsonl", "epoch")]


def test_one_rank_and_two_ranks_train_the_same_model(work, two_epochs):
    r = one("run", "mlp.ir", "--data", "idx:data", "--epochs", 2, *BATCH, "--log-every", 1, "--threads", 1,
            "--metrics-out", "one.jsonl", cwd=work)
    assert r.returncode == 0, r.stderr
    a, b = rows(work / "one.jsonl", "step"), rows(work / "two.jsonl", "step")
    assert len(a) == len(b) == 16
    assert b[0]["loss"] == pytest.approx(a[0]["loss"], rel=1e-6)  # the first step: the same gradient
    for x, y in zip(a, b):
        assert y["loss"] == pytest.approx(x["loss"], rel=1e-4), x["step"]
    ea, eb = rows(work / "one.jsonl", "epoch")[-1], rows(work / "two.jsonl", "epoch")[-1]
    assert abs(ea["test_accuracy"] - eb["test_accuracy"]) <= 0.005


def test_resume_on_two_ranks_is_bitwise_and_on_one_rank_continues(work, two_epochs):
    r = mpi("run", "mlp.ir", "--data", "idx:data", "--epochs", 1, *BATCH, "--threads", 1,
            "--checkpoint", "half.safetensors", cwd=work)
    assert r.returncode == 0, r.stderr
    shutil.copy(work / "half.safetensors", work / "half1.safetensors")
    r = mpi("run", "mlp.ir", "--data", "idx:data", "--epochs", 2, *BATCH, "--threads", 1,
            "--checkpoint", "half.safetensors", "--resume", cwd=work)
    assert r.returncode == 0, r.stderr
    assert "resumed from half.safetensors after epoch 1" in r.stdout
    want, got = load_checkpoint(str(work / "two.safetensors"))[0], load_checkpoint(str(work / "half.safetensors"))[0]
    for k in want:
        np.testing.assert_array_equal(got[k], want[k], err_msg=k)
    r = one("run", "mlp.ir", "--data", "idx:data", "--epochs", 2, *BATCH, "--threads", 1,
            "--checkpoint", "half1.safetensors", "--resume", cwd=work)
    assert r.returncode == 0, r.stderr
    loss = load_checkpoint(str(work / "half1.safetensors"))[1]["history"][-1]["train_loss"]
    assert loss == pytest.approx(rows(work / "two.jsonl", "epoch")[-1]["train_loss"], rel=1e-4)


def test_procs_starts_mpiexec_itself(work, two_epochs):
    r = one("run", "mlp.ir", "--data", "idx:data", "--epochs", 2, *BATCH, "--threads", 1, "--procs", 2,
            "--checkpoint", "procs.safetensors", cwd=work)
    assert r.returncode == 0, r.stderr
    want, got = load_checkpoint(str(work / "two.safetensors"))[0], load_checkpoint(str(work / "procs.safetensors"))[0]
    for k in want:
        np.testing.assert_array_equal(got[k], want[k], err_msg=k)


def test_an_error_on_one_rank_ends_the_job(work):
    # rank 0 alone writes the metrics; /dev/full fails at the end of epoch 1 while rank 1 trains on.
    # A job that hung would be ended by `timeout` (124/137): no clock is read here, the machine is shared
    r = mpi("run", "mlp.ir", "--data", "idx:data", "--epochs", 50, "--metrics-out", "/dev/full", cwd=work,
            threads=False)
    assert r.returncode not in (0, 124, 137), r.stderr
    # by default the ranks on one machine share its cores: never more BLAS threads than cores
    assert f"on 2 ranks x {max(1, available_cores() // 2)} threads" in r.stdout
    # rank 0's line; mpiexec forwards each rank's stderr by itself, so no order between ranks is assumed
    errors = [line for line in r.stderr.splitlines() if "error:" in line]
    assert any(e.startswith("[rank 0] error:") and "No space left on device" in e for e in errors), r.stderr


def test_a_killed_rank_ends_the_job_and_the_checkpoint_resumes(work):
    ckpt = work / "killed.safetensors"
    cmd = ["timeout", "-k", "5", str(LIMIT_S), MPIEXEC, "-n", "2", *TINYC, "run", "mlp.ir", "--data", "idx:data",
           "--epochs", "1000", "--checkpoint", ckpt.name]
    # its own process group, so that a failure below ends mpiexec and its ranks too (not only `timeout`)
    job = subprocess.Popen(cmd, cwd=work, env=env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                           start_new_session=True)
    try:
        while not ckpt.exists() and job.poll() is None:  # `timeout` ends a job that never writes one
            time.sleep(0.05)
        assert ckpt.exists(), "no checkpoint was written"
        os.kill(_rank_pid(1, job.pid), signal.SIGKILL)
        job.wait(timeout=2 * LIMIT_S)  # a hang: `timeout` ends the job (124/137) long before this
        assert job.returncode not in (0, 124, 137)
    finally:
        if job.poll() is None:
            os.killpg(job.pid, signal.SIGKILL)
            job.wait()
    epoch = load_checkpoint(str(ckpt))[1]["epoch"]
    r = mpi("run", "mlp.ir", "--data", "idx:data", "--epochs", epoch + 1, "--checkpoint", ckpt.name, "--resume",
            cwd=work)
    assert r.returncode == 0, r.stderr
    assert load_checkpoint(str(ckpt))[1]["epoch"] == epoch + 1


def _rank_pid(rank: int, root: int) -> int:
    """The pid of the process of `rank` among the descendants of `root` (by its PMI_RANK)."""
    for pid in (int(p) for p in os.listdir("/proc") if p.isdigit()):
        try:
            environ = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
        except OSError:
            continue
        if f"PMI_RANK={rank}".encode() in environ and _descends(pid, root):
            return pid
    raise AssertionError(f"no process of rank {rank} under {root}")


def _descends(pid: int, root: int) -> bool:
    while pid > 1:
        if pid == root:
            return True
        try:
            pid = int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError, IndexError):
            return False
    return False


def test_ranks_running_different_programs_are_refused(work):
    r = mpi("run", "mlp.ir", "--data", "idx:data", n=1, cwd=work,
            extra=[":", "-n", "1", *TINYC, "run", "other.ir", "--data", "idx:data"])
    assert r.returncode == 2
    errors = [line for line in r.stderr.splitlines() if "error:" in line]
    assert sorted(e.split("]")[0] for e in errors) == ["[rank 0", "[rank 1"]  # one clear line on every rank
    assert all("the ranks disagree on the program" in e for e in errors), r.stderr


def test_eval_on_two_ranks_counts_every_example_once(work, two_epochs):
    args = ("eval", "mlp.ir", "--weights", "two.safetensors", "--data", "idx:data", "--batch-size", 16)
    alone, ranks = one(*args, cwd=work), mpi(*args, cwd=work)
    assert alone.returncode == 0 and ranks.returncode == 0, alone.stderr + ranks.stderr
    assert "test accuracy" in ranks.stdout and ranks.stdout == alone.stdout  # each rank its part, counts summed
