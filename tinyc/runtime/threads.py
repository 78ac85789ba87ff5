"""How many threads tinyc runs on, and applying that number to BLAS and to tinyc's own pool.

One rule decides the count: an explicit request (`Executor(threads=N)`, `tinyc run --threads N`),
else `$TINYC_NUM_THREADS`, else the cores this process may run on (`os.sched_getaffinity`: a
container's or `taskset`'s limit, not the machine's core count) divided among the processes that
share them (data-parallel ranks on one node whose CPU sets overlap: `sharing`, passed as `share`).

BLAS threads are set at run time through threadpoolctl (whichever BLAS NumPy loaded), only for
the duration of a step (`blas_threads`), so NumPy code around tinyc keeps its own setting.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager

import numpy as np  # loads NumPy's BLAS before threadpoolctl looks for it
from threadpoolctl import ThreadpoolController

from ..ir.errors import TinycError

ENV_VAR = "TINYC_NUM_THREADS"


def available_cores() -> int:
    """The cores this process may run on (its CPU affinity), at least 1."""
    cpus = cpu_set()
    return max(1, len(cpus)) if cpus is not None else max(1, os.cpu_count() or 1)


def cpu_set() -> frozenset[int] | None:
    """The CPUs this process may run on (its affinity); None where the platform has none (macOS, Windows)."""
    try:
        return frozenset(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return None


def sharing(mine: frozenset[int] | None, everyone: list[frozenset[int] | None]) -> int:
    """How many of the processes with CPU sets `everyone` (this one's included) compete for this
    one's CPUs: all of them when nothing is known, else those whose CPUs overlap this one's. A
    launcher that binds each rank to its own cores (Open MPI, `srun --cpu-bind`) leaves each rank
    its own; an unbound launcher (MPICH's mpiexec) leaves all the node's ranks on the same cores."""
    if mine is None or any(c is None for c in everyone):
        return max(1, len(everyone))
    return max(1, sum(1 for c in everyone if c & mine))


def resolve_threads(requested: int | None = None, share: int = 1) -> int:
    """The thread count to use: `requested`, else $TINYC_NUM_THREADS, else available cores // share."""
    if requested is not None:
        if not _is_count(requested):
            raise TinycError(f"threads must be a whole number >= 1, got {requested!r}", hint=HINT)
        return _at_most_max(int(requested), "threads")
    text = os.environ.get(ENV_VAR, "").strip()
    if text:
        if not (text.isdecimal() and int(text) >= 1):
            raise TinycError(f"{ENV_VAR}={text!r} is not a whole number >= 1", hint=HINT)
        return _at_most_max(int(text), ENV_VAR)
    if not _is_count(share):
        raise TinycError(f"share must be a whole number >= 1, got {share!r}")
    return max(1, available_cores() // int(share))


HINT = "set a thread count of 1 or more (1 suits a machine that other work keeps busy)"


PER_CORE = 4  # threads or ranks per core past which a run only slows down
MIN_MAX_THREADS = 64


def check_per_core(count: int, what: str, at_least: int, hint: str) -> int:
    """`count` (threads, ranks) unless it is past PER_CORE per core this process may use (and
    past `at_least`): then a TinycError before any thread or process starts, since a count such
    as 10**6 would exhaust the machine first."""
    cores = available_cores()
    most = max(at_least, PER_CORE * cores)
    if count > most:
        raise TinycError(f"{what} {count} is more than {most} ({PER_CORE} per core of the {cores} this process "
                         f"may use, at least {at_least})", hint=hint)
    return count


def _at_most_max(count: int, what: str) -> int:
    return check_per_core(count, what, MIN_MAX_THREADS, "one thread per core is usually fastest")


def _is_count(value: object) -> bool:
    return not isinstance(value, bool) and isinstance(value, int | np.integer) and value >= 1


_CONTROLLER: list[ThreadpoolController] = []  # made once, on first use (it scans the loaded libraries)


def _blas() -> ThreadpoolController:
    if not _CONTROLLER:
        _CONTROLLER.append(ThreadpoolController().select(user_api="blas"))
    return _CONTROLLER[0]


def blas_thread_count() -> int | None:
    """The BLAS thread count NumPy's BLAS uses now (None when no BLAS is known to threadpoolctl)."""
    counts = [lib.num_threads for lib in _blas().lib_controllers]
    return max(counts) if counts else None


_ACTIVE = {"depth": 0, "limiter": None}  # steps running now (several threads may run executors)
_ACTIVE_LOCK = threading.Lock()


@contextmanager
def blas_threads(n: int) -> Iterator[None]:
    """Run the block with BLAS limited to `n` threads; the previous setting is restored when the
    last block running in any thread ends (steps of several executors may overlap in threads:
    the first sets the limit, the last restores it). Costs a few microseconds per step."""
    with _ACTIVE_LOCK:
        if _ACTIVE["depth"] == 0:
            _ACTIVE["limiter"] = _blas().limit(limits=n)
        _ACTIVE["depth"] += 1
    try:
        yield
    finally:
        with _ACTIVE_LOCK:
            _ACTIVE["depth"] -= 1
            if _ACTIVE["depth"] == 0:
                _ACTIVE["limiter"].restore_original_limits()
                _ACTIVE["limiter"] = None
