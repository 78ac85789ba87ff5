"""Communicators for data-parallel training: MPI through mpi4py, or `LocalComm` in one process.

The runtime needs few collectives: the in-place sum of a buffer (the `allreduce` kernel), and
for start-up and bookkeeping the object collectives `bcast`, `allgather`, `allreduce` (sum).
An mpi4py communicator has them all; `LocalComm` provides the same methods for N ranks
simulated by N threads of one process (tests without MPI, notebooks). mpi4py is imported only
when a real MPI job is detected (`mpi_world`): one-process runs never load it.

Bits: `LocalComm` sums in rank order, r0 + r1 + ... For two ranks that is what any MPI does
(float addition is commutative), so a 2-rank LocalComm run equals a 2-rank `mpiexec` run bit
for bit; for more ranks MPI's summation order depends on its algorithm and message size.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable
from typing import Any

import numpy as np

# Environment variables by which launchers tell a process the size of its job (MPICH/hydra and
# PMI-2 under srun: PMI_SIZE; Open MPI: OMPI_COMM_WORLD_SIZE; MVAPICH: MV2_COMM_WORLD_SIZE).
WORLD_SIZE_VARS = ("PMI_SIZE", "OMPI_COMM_WORLD_SIZE", "MV2_COMM_WORLD_SIZE")


# A PMIx launcher (`srun --mpi=pmix`, Open MPI 5's `prterun`) gives a rank but no size: MPI tells it,
# unless SLURM says the size of the step it started (so a one-task srun needs no mpi4py).
PMIX_RANK_VAR = "PMIX_RANK"
SLURM_STEP_SIZE_VAR = "SLURM_STEP_NUM_TASKS"


def launched_size(environ: dict[str, str] | None = None) -> int | None:
    """The job size an MPI launcher (mpiexec, srun) announced to this process: 1 if none started
    it, None if one did without saying how many it started (PMIx)."""
    env = os.environ if environ is None else environ
    for var in WORLD_SIZE_VARS:
        value = env.get(var, "")
        if value.isdecimal():
            return int(value)
    if PMIX_RANK_VAR not in env:
        return 1
    step = env.get(SLURM_STEP_SIZE_VAR, "")
    return int(step) if step.isdecimal() else None


def mpi_world() -> Any | None:
    """MPI's COMM_WORLD when this process runs in a job of more than one rank, else None."""
    size = launched_size()
    if size == 1:
        return None
    import warnings

    from ..ir.errors import TinycError

    try:
        with warnings.catch_warnings():  # mpi4py's multi-line warning of a foreign launcher: the error below says it
            warnings.simplefilter("ignore", RuntimeWarning)
            from mpi4py import MPI
    except ImportError as e:
        raise TinycError(f"this process was started by an MPI launcher, but mpi4py cannot be used ({e})",
                         hint='pip install "tinyc[mpi]" (or mpi4py built against your MPI)') from None
    world = MPI.COMM_WORLD
    if size is None:  # a PMIx launcher: MPI says how many
        return world if world.Get_size() > 1 else None
    if world.Get_size() != size:
        # each process would train alone as "rank 0 of 1", all writing the same outputs
        library = " ".join(MPI.Get_library_version().splitlines()[0].split())
        raise TinycError(
            f"the launcher started a job of {size} processes, but MPI sees {world.Get_size()}: mpi4py uses another "
            f"MPI library ({library}) than the mpiexec that started this job",
            hint="start the job with the mpiexec of the MPI that mpi4py loads, or point mpi4py at the launcher's "
                 "library (MPI4PY_LIBMPI=/path/to/libmpi.so)")
    return world


def in_place_sum(comm: Any | None) -> Callable[[np.ndarray], None] | None:
    """The function summing a buffer over the ranks of `comm` in place; None on one rank."""
    if comm is None or comm.Get_size() == 1:
        return None
    if isinstance(comm, LocalComm):
        return comm.sum_in_place
    from mpi4py import MPI  # a real communicator: mpi4py is loaded already

    def reduce(buf: np.ndarray) -> None:
        comm.Allreduce(MPI.IN_PLACE, buf, op=MPI.SUM)

    return reduce


class _World:
    """What the ranks of one LocalComm share: a barrier and one slot per rank."""

    def __init__(self, size: int) -> None:
        self.size = size
        self.barrier = threading.Barrier(size)
        self.slots: list[Any] = [None] * size


class LocalComm:
    """Rank `rank` of `size` ranks simulated in one process, one thread per rank.

    `LocalComm.world(n)` makes the n communicators; run each rank's work in its own thread
    (`run_ranks`). Collectives meet at a barrier; sums are taken in rank order.
    """

    def __init__(self, world: _World, rank: int) -> None:
        self._world, self.rank, self.size = world, rank, world.size

    @classmethod
    def world(cls, size: int) -> list[LocalComm]:
        """The communicators of `size` simulated ranks, rank 0 first."""
        if size < 1:
            raise ValueError(f"a world needs at least one rank, got {size}")
        w = _World(size)
        return [cls(w, r) for r in range(size)]

    def Get_rank(self) -> int:  # mpi4py's names
        return self.rank

    def Get_size(self) -> int:
        return self.size

    def _exchange(self, value: Any) -> list[Any]:
        """Every rank's `value`, by rank (a collective: all ranks must call it)."""
        w = self._world
        w.slots[self.rank] = value
        w.barrier.wait()
        values = list(w.slots)
        w.barrier.wait()  # no rank overwrites its slot before all have read
        return values

    def sum_in_place(self, buf: np.ndarray) -> None:
        """buf = buf_0 + buf_1 + ... over the ranks, in rank order (the allreduce kernel's sum)."""
        parts = self._exchange(buf.copy())
        total = parts[0].copy()
        for p in parts[1:]:
            total += p
        np.copyto(buf, total)

    def Barrier(self) -> None:
        self._exchange(None)

    def bcast(self, obj: Any, root: int = 0) -> Any:
        return self._exchange(obj if self.rank == root else None)[root]

    def allgather(self, obj: Any) -> list[Any]:
        return self._exchange(obj)

    def allreduce(self, obj: Any) -> Any:
        """The sum of `obj` (numbers or arrays) over the ranks, in rank order."""
        parts = self._exchange(obj)
        total = parts[0]
        for p in parts[1:]:
            total = total + p
        return total

    def Abort(self, errorcode: int = 1) -> None:
        """Break every other rank out of its collective (they raise BrokenBarrierError)."""
        self._world.barrier.abort()


def run_ranks(comms: list[LocalComm], fn: Callable[[LocalComm], Any]) -> list[Any]:
    """Run `fn(comm)` for every rank in its own thread; results by rank. An exception on any
    rank aborts the others' collectives and is raised here (the lowest rank's first)."""
    results: list[Any] = [None] * len(comms)
    errors: list[BaseException | None] = [None] * len(comms)

    def work(comm: LocalComm) -> None:
        try:
            results[comm.rank] = fn(comm)
        except BaseException as e:  # noqa: BLE001  (re-raised below, in the caller's thread)
            errors[comm.rank] = e
            comm.Abort()

    threads = [threading.Thread(target=work, args=(c,), name=f"rank{c.rank}") for c in comms]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    first = next((e for e in errors if e is not None and not _aborted(e)), None)
    first = first or next((e for e in errors if e is not None), None)
    if first is not None:
        raise first
    return results


def _aborted(e: BaseException | None) -> bool:
    """Whether `e` is (or was caused by) another rank's abort: the executor wraps a kernel's
    BrokenBarrierError in the node's error, so follow the chain."""
    while e is not None:
        if isinstance(e, threading.BrokenBarrierError):
            return True
        e = e.__cause__
    return False
