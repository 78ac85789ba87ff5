"""Joining an MPI job: the launcher's variables, a launcher from another MPI than mpi4py's, and how
many threads a rank takes when the ranks of a node share or split its cores."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from tinyc.runtime.comm import WORLD_SIZE_VARS, launched_size
from tinyc.runtime.threads import sharing


def test_the_job_size_comes_from_any_launcher_s_variable():
    assert launched_size({}) == 1
    for var in WORLD_SIZE_VARS:
        assert launched_size({var: "4"}) == 4
    assert launched_size({"PMI_SIZE": "", "OMPI_COMM_WORLD_SIZE": "3"}) == 3
    assert launched_size({"PMI_SIZE": "two"}) == 1  # not a count: no job
    assert launched_size({"PMIX_RANK": "0"}) is None  # srun --mpi=pmix: MPI tells the size
    # ... unless SLURM says the step's size: a one-task srun trains without mpi4py
    assert launched_size({"PMIX_RANK": "0", "SLURM_STEP_NUM_TASKS": "1"}) == 1
    assert launched_size({"PMIX_RANK": "3", "SLURM_STEP_NUM_TASKS": "4"}) == 4
    assert launched_size({"PMIX_RANK": "0", "OMPI_COMM_WORLD_SIZE": "2"}) == 2  # Open MPI's mpirun says both


def test_ranks_sharing_cores_divide_them_and_bound_ranks_keep_their_own():
    both = frozenset({0, 1})
    assert sharing(both, [both, both]) == 2  # MPICH's mpiexec: every rank may run on every core
    assert sharing(frozenset({0}), [frozenset({0}), frozenset({1})]) == 1  # bound to a core each (Open MPI)
    socket0, socket1 = frozenset(range(8)), frozenset(range(8, 16))
    assert sharing(socket0, [socket0, socket0, socket1, socket1]) == 2  # bound to a socket, two ranks on each
    assert sharing(None, [None, None, None]) == 3  # no affinity known (macOS): all the node's ranks share


def _without_launcher() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith(("PMI_", "OMPI_", "MV2_", "PMIX_"))}


@pytest.mark.parametrize("var", ["OMPI_COMM_WORLD_SIZE", "PMI_SIZE"])
def test_a_launcher_of_another_mpi_is_one_clear_error(tmp_path, var):
    # an Open MPI mpirun starting a process whose mpi4py loads MPICH: MPI sees a job of one, and each
    # process would train alone as rank 0, all writing the same outputs
    env = {**_without_launcher(), var: "2"}
    r = subprocess.run([sys.executable, "-m", "tinyc", "run", "nothing.ir"], cwd=tmp_path, env=env,
                       capture_output=True, text=True, timeout=120, check=False)
    assert r.returncode == 2, r.stderr
    lines = r.stderr.splitlines()
    assert lines[0].startswith("error: the launcher started a job of 2 processes, but MPI sees 1"), r.stderr
    assert [line.split(":")[0] for line in lines] == ["error", "hint"]  # mpi4py's own warning is not shown



def test_an_abort_that_hangs_still_ends_the_process():
    # MPI_Abort should end the job; if it never returns, the watchdog ends this process anyway
    script = (
        "import time\n"
        "import tinyc.cli.launch as launch\n"
        "launch.ABORT_GRACE_S = 0.2\n"
        "class Hangs:\n"
        "    def Abort(self, code):\n"
        "        time.sleep(600)\n"
        "launch.abort(Hangs(), 3)\n"
    )
    r = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120, check=False)
    assert r.returncode == 3, r.stderr
