"""What a rank of a data-parallel run needs beyond the allreduce: its slice of every global batch,
the start-up agreement, and decisions taken by rank 0 for everyone.

Semantics (see README, "Data parallelism"): `--batch-size` is the global batch. Every rank draws
the same permutation and takes a contiguous part of each global batch, the first `B % N` ranks
one example more (`np.array_split`'s rule); its share `local / global` weights its gradients and
metrics, so uneven parts are exact. A run that would leave a rank without an example is refused.

Errors raised identically on every rank (a refused start-up, a checkpoint rank 0 cannot read)
carry `every_rank = True`: the ranks then exit together with exit code 2, where any other
exception on one rank must end the whole job (`MPI.Abort`), as the others would wait for it.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Mapping
from typing import Any, TypeVar

import numpy as np

from ..ir.errors import TinycError

T = TypeVar("T")


def on_every_rank(exc: BaseException) -> BaseException:
    """Mark `exc` as raised identically on every rank (the CLI then exits without an abort)."""
    exc.every_rank = True  # type: ignore[attr-defined]
    return exc


class World:
    """This process's place among the ranks of `comm` (None: one process, rank 0 of 1)."""

    def __init__(self, comm: Any | None = None) -> None:
        self.comm = comm
        self.rank = comm.Get_rank() if comm is not None else 0
        self.size = comm.Get_size() if comm is not None else 1

    @property
    def root(self) -> bool:
        """Rank 0: the one that reads checkpoints and writes every output."""
        return self.rank == 0

    def part(self, n: int) -> tuple[int, int]:
        """[start, stop) of this rank's contiguous part of n items (the first n % size get one more)."""
        base, extra = divmod(n, self.size)
        start = self.rank * base + min(self.rank, extra)
        return start, start + base + (self.rank < extra)

    def check_batches(self, n: int, batch_size: int) -> None:
        """Refuse a run in which some global batch has fewer examples than there are ranks."""
        if self.size == 1:
            return
        smallest = min(batch_size, n % batch_size or batch_size, n)
        if smallest < self.size:
            which = "the batch size" if smallest == min(batch_size, n) else f"the last batch ({smallest} example{'s' * (smallest != 1)})"
            raise on_every_rank(TinycError(
                f"{self.size} ranks need at least {self.size} examples in every batch, but {which} leaves "
                f"some rank none ({n} examples, --batch-size {batch_size})",
                hint="use a larger --batch-size, another --limit, or fewer ranks"))

    def from_root(self, fn: Callable[[], T]) -> T:
        """`fn()` run on rank 0 only, its result (or its TinycError/OSError) given to every rank."""
        if self.size == 1:
            return fn()
        result, error = None, None
        if self.root:
            try:
                result = fn()
            except (TinycError, OSError) as e:
                error = e
        if error is not None:
            shared = ("error", type(error), _error_args(error))
        else:
            shared = ("ok", result, None)
        kind, value, args = self.comm.bcast(shared if self.root else None, root=0)
        if kind == "error":
            raise on_every_rank(error if self.root else _rebuild(value, args))
        return value

    def agree(self, facts: Mapping[str, Any]) -> None:
        """Every rank must hold the same `facts` (program hash, settings, data set size): else one
        error naming the first that differs, on every rank."""
        if self.size == 1:
            return
        everyone = self.comm.allgather(dict(facts))
        for key in facts:
            values = [f.get(key) for f in everyone]
            odd = next((r for r, v in enumerate(values) if v != values[0]), None)
            if odd is not None:
                raise on_every_rank(TinycError(
                    f"the ranks disagree on the {key}: rank 0 has {_short(values[0])}, rank {odd} has "
                    f"{_short(values[odd])}",
                    hint="start every rank with the same program, data and flags"))

    def broadcast_state(self, state: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Rank 0's arrays, on every rank."""
        return dict(state) if self.size == 1 else self.comm.bcast(dict(state) if self.root else None, root=0)

    def sum(self, value: T) -> T:
        """The sum over the ranks of a number or an (integer) array: exact for integers."""
        return value if self.size == 1 else self.comm.allreduce(value)


def program_digest(program: Any) -> str:
    """A hash of the program's bytes as `tinyc compile` writes them (the same .ir on every rank)."""
    from ..ir.codec import encode_program

    return hashlib.sha256(encode_program(program)).hexdigest()[:16]


def _error_args(e: BaseException) -> tuple:
    if isinstance(e, TinycError):
        return (e.message, e.loc, e.hint)
    return (e.errno, e.strerror, e.filename) if isinstance(e, OSError) else (str(e),)


def _rebuild(cls: type, args: tuple) -> BaseException:
    if issubclass(cls, TinycError):
        message, loc, hint = args
        return cls(message, loc=loc, hint=hint)
    return cls(*args)


def _short(value: Any) -> str:
    text = repr(value) if not isinstance(value, str) else value
    return text if len(text) <= 80 else text[:77] + "..."
