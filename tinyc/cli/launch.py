"""Data-parallel runs from the command line: joining an MPI job, `--procs N`, ending a job on a fault.

`mpiexec -n N tinyc run ...` (or `srun`) starts N processes; each finds its launcher's variables
(`tinyc.runtime.comm.launched_size`) and joins MPI's COMM_WORLD. `tinyc run --procs N ...` is the
one-machine shortcut: it replaces itself by `mpiexec -n N <this python> -m tinyc run ...`, with
the mpiexec installed beside this Python (the `mpi` extra) or else the one on PATH.

An error on one rank prints `[rank R] error: ...` and aborts the whole job (`MPI_Abort`): the
other ranks would otherwise wait for it in the next allreduce. A watchdog makes sure the process
exits even if the abort itself hangs.
"""

from __future__ import annotations

import os
import shutil
import sys
import threading
import time
from typing import Any, NoReturn

from ..ir.errors import TinycError
from .errors import set_rank

MIN_MAX_PROCS = 8  # --procs may oversubscribe a small machine this far (tests run 2 ranks on 1 core)
ABORT_GRACE_S = 5.0  # after this long in MPI_Abort the process ends itself
FORWARD_S = 0.5  # before MPI_Abort: time for the launcher to forward this rank's last lines


def find_mpiexec() -> str:
    """The mpiexec of this Python's environment (pip's `mpich` puts one in its bin), else PATH's."""
    beside = os.path.join(os.path.dirname(sys.executable), "mpiexec")
    found = beside if os.access(beside, os.X_OK) else shutil.which("mpiexec")
    if not found:
        raise TinycError("--procs needs mpiexec, which is not installed",
                         hint='pip install "tinyc[mpi]" (mpi4py and MPICH), or a system MPI with mpi4py')
    return found


def without_procs(argv: list[str]) -> list[str]:
    """The command line minus `--procs N` / `--procs=N`."""
    out, skip = [], False
    for a in argv:
        if skip:
            skip = False
        elif a == "--procs":
            skip = True
        elif not a.startswith("--procs="):
            out.append(a)
    return out


def relaunch(procs: int) -> NoReturn:
    """Become `mpiexec -n procs python -m tinyc <the same arguments>` (one machine)."""
    from ..runtime.comm import launched_size
    from ..runtime.threads import available_cores, check_per_core

    if launched_size() != 1:
        raise TinycError("--procs starts its own MPI job; this process already runs in one",
                         hint="drop --procs when you start tinyc with mpiexec or srun")
    # each rank imports NumPy and holds a model: --procs 1000 would exhaust the machine
    check_per_core(procs, "--procs", MIN_MAX_PROCS,
                   f"a rank per core is fastest: --procs {available_cores()} (mpiexec -n N starts more if you must)")
    mpiexec = find_mpiexec()
    sys.stdout.flush()
    os.execv(mpiexec, [mpiexec, "-n", str(procs), sys.executable, "-m", "tinyc", *without_procs(sys.argv[1:])])


def join() -> tuple[Any | None, int]:
    """(COMM_WORLD, ranks of this node sharing this one's cores) in an MPI job of more than one
    rank, else (None, 1). Errors are from then on prefixed with the rank and end the whole job."""
    from ..runtime.comm import mpi_world
    from ..runtime.threads import cpu_set, sharing

    comm = mpi_world()
    if comm is None:
        return None, 1
    from mpi4py import MPI

    set_rank(f"[rank {comm.Get_rank()}] ", lambda code: abort(comm, code))
    mine = cpu_set()
    return comm, sharing(mine, comm.Split_type(MPI.COMM_TYPE_SHARED).allgather(mine))


def abort(comm: Any, code: int) -> NoReturn:
    """End every rank of the job with `code`; this process within ABORT_GRACE_S whatever happens."""
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):
            pass
    # MPICH's mpiexec forwards a rank's output from a pipe and tears the job down on an abort:
    # without a pause, the error line just flushed was lost in about 1 run in 6 (seen here)
    time.sleep(FORWARD_S)
    timer = threading.Timer(ABORT_GRACE_S, os._exit, (code,))
    timer.daemon = True
    timer.start()
    comm.Abort(code)
    os._exit(code)
