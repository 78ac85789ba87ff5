"""Both cores in one step: large instructions cut into row blocks, run by a small thread pool.

An instruction whose result splits along its first axis (an element-wise op, a row op over a
later axis, a product whose rows come from rows of its left operand, a weight gradient whose
rows come from columns of its left operand) and that is large enough is cut, once per binding,
into `blocks` sub-instructions over disjoint row ranges: kernel calls on views, no copies.
A step runs them on the calling thread and the pool's workers; NumPy and BLAS release the GIL.

Determinism: how an instruction is cut depends on its shapes only, never on the thread count,
and BLAS runs single-threaded inside a step. So every block is the same kernel call on the same
data whichever thread runs it and however many there are: results are the same bits at every
thread count, run to run. (A BLAS thread count, or a different cut, may change the last bits.)

Contention: a worker claims blocks as it gets to them and the caller runs whatever is left, so a
worker that the OS does not schedule (another process on its core) slows the step down to the
caller's own speed, no further; nothing spins.
"""

from __future__ import annotations

import itertools
import threading
from collections.abc import Callable, Sequence
from functools import partial
from queue import SimpleQueue
from typing import Any

import numpy as np

from .kernels import ALONG_AXIS, PRODUCTS, ROWWISE, WEIGHT_GRADS

BLOCKS = 4  # blocks per split instruction: a function of nothing but this constant and the shapes
# An instruction is split only into blocks of at least MIN_WORK units, about 50-100 us of one
# core (a block costs ~5-10 us to hand over): a unit is 2 result elements of an element-wise op,
# 1/4 of a row op's (several passes over each row), 32 multiply-adds (+1 per result element) of
# a product. Measured on the benchmark models' shapes; blocks of ~20 us gained nothing.
MIN_WORK = 1 << 16


def _cuts(n: int, work_per_row: int) -> list[tuple[int, int]] | None:
    """Row ranges of a split into up to BLOCKS near-equal blocks of >= MIN_WORK, or None."""
    blocks = min(BLOCKS, n, n * work_per_row // MIN_WORK)
    if blocks < 2:
        return None
    edges = [n * i // blocks for i in range(blocks + 1)]
    return list(itertools.pairwise(edges))


def _row_inputs(ins: Sequence[np.ndarray], out: np.ndarray) -> list[bool]:
    """Which inputs are cut with the result: those of its rank and first dim (others broadcast)."""
    return [x.ndim == out.ndim and x.shape[0] == out.shape[0] for x in ins]


def split_plan(op: str, ins: Sequence[np.ndarray], out: np.ndarray, attrs: dict[str, Any]):
    """(ranges, how to cut each input, how to cut out) or None: 'row' cuts the first axis, 'col'
    the last, None passes the whole array to every block."""
    if out.ndim == 0 or out.dtype.kind not in "fiub" or out.shape[0] < 2:
        return None
    if any(np.may_share_memory(out, x) and not _same_view(out, x) for x in ins):
        return None  # the result overlaps an input other than row for row: keep it whole
    row_elements = out.size // out.shape[0]
    if op in ROWWISE or op == "concat":
        cuts = _cuts(out.shape[0], row_elements // 2)
        return cuts and (cuts, ["row" if r else None for r in _row_inputs(ins, out)], "row")
    if op in ALONG_AXIS and attrs.get("axis", 0) % out.ndim != 0:
        cuts = _cuts(out.shape[0], row_elements * 4)
        return cuts and (cuts, ["row" if r else None for r in _row_inputs(ins, out)], "row")
    if op in PRODUCTS and not attrs.get("ta", False):
        a, b = ins[0], ins[1]
        if a.ndim != out.ndim or a.shape[0] != out.shape[0]:
            return None
        batched_b = b.ndim == out.ndim > 2 and b.shape[0] == out.shape[0]
        how = ["row", "row" if batched_b else None] + ["row" if r else None for r in _row_inputs(ins[2:], out)]
        return (cuts := _cuts(out.shape[0], row_elements * (a.shape[-1] // 32 + 1))) and (cuts, how, "row")
    if op in WEIGHT_GRADS and attrs.get("ta") and not attrs.get("tb") and out.ndim == 2:
        # out[k, n] = sum over rows r of a[r, k] * b[r, n]: cut the longer of out's two dims
        # (k from columns of a, n from columns of b), so each block's GEMM stays wide
        reduced = ins[0].size // ins[0].shape[-1]
        by_rows = out.shape[0] >= out.shape[1]
        cuts = _cuts(out.shape[0 if by_rows else 1], out.size // out.shape[0 if by_rows else 1] * (reduced // 32 + 1))
        return cuts and (cuts, ["col", None] if by_rows else [None, "col"], "row" if by_rows else "col")
    return None


def _same_view(a: np.ndarray, b: np.ndarray) -> bool:
    return a.shape == b.shape and a.strides == b.strides and a.ctypes.data == b.ctypes.data


def _cut(x: np.ndarray, how: str | None, lo: int, hi: int) -> np.ndarray:
    if how == "row":
        return x[lo:hi]
    if how == "col":
        return x[..., lo:hi]
    return x


def split(kernel: Callable[..., Any], op: str, ins: Sequence[np.ndarray], out: np.ndarray,
          attrs: dict[str, Any]) -> list[Callable[[], None]] | None:
    """The instruction `kernel(*ins, out=out, **attrs)` as blocks (calls writing disjoint rows of
    `out`), or None when it stays whole."""
    plan = split_plan(op, ins, out, attrs)
    if not plan:
        return None
    cuts, how, out_how = plan
    return [_block(kernel, [_cut(x, h, lo, hi) for x, h in zip(ins, how)], _cut(out, out_how, lo, hi), attrs)
            for lo, hi in cuts]


def _block(kernel: Callable[..., Any], ins: list[np.ndarray], out: np.ndarray, attrs: dict[str, Any]):
    def run() -> None:
        r = kernel(*ins, out=out, **attrs)
        if r is not out:
            np.copyto(out, r)

    return run


def call_of(kernel: Callable[..., Any], op: str, ins: Sequence[np.ndarray], out: np.ndarray,
            attrs: dict[str, Any], pool: Pool) -> Callable[..., Any]:
    """The call of an instruction: its blocks run on `pool`, or the kernel with `out` bound."""
    blocks = split(kernel, op, ins, out, attrs)
    return Blocks(blocks, out, pool) if blocks else partial(kernel, out=out, **attrs)


class Blocks:
    """An instruction's call that runs its blocks on `pool` (the Executor's `call` slot)."""

    __slots__ = ("blocks", "out", "pool")

    def __init__(self, blocks: list[Callable[[], None]], out: np.ndarray, pool: Pool) -> None:
        self.blocks, self.out, self.pool = blocks, out, pool

    def __call__(self, *ins: np.ndarray) -> np.ndarray:
        self.pool.run(self.blocks)
        return self.out


class _Task:
    """Blocks handed to the pool: whoever calls `work` claims the next unclaimed block."""

    __slots__ = ("blocks", "claims", "done", "error", "finished")

    def __init__(self, blocks: list[Callable[[], None]]) -> None:
        self.blocks = blocks
        self.claims = itertools.count()  # next() on a count is atomic under the GIL
        self.finished = itertools.count()
        self.done = threading.Lock()
        self.done.acquire()  # released by whoever finishes the last block
        self.error: BaseException | None = None

    def work(self) -> None:
        n = len(self.blocks)
        while (i := next(self.claims)) < n:
            try:
                self.blocks[i]()
            except BaseException as e:  # noqa: BLE001 (re-raised on the calling thread)
                self.error = self.error or e
            if next(self.finished) == n - 1:
                self.done.release()


class Pool:
    """`threads - 1` daemon workers beside the calling thread; they sleep on a queue between tasks."""

    def __init__(self, threads: int) -> None:
        self.threads = threads
        self.queues: list[SimpleQueue] = []
        for i in range(threads - 1):
            q: SimpleQueue = SimpleQueue()
            threading.Thread(target=_serve, args=(q,), name=f"tinyc-worker-{i}", daemon=True).start()
            self.queues.append(q)

    def run(self, blocks: list[Callable[[], None]]) -> None:
        """Run every block (the caller too), return when all are done; re-raise a block's error."""
        if not self.queues:
            for block in blocks:
                block()
            return
        task = _Task(blocks)
        for q in self.queues[: len(blocks) - 1]:
            q.put(task)
        task.work()
        task.done.acquire()  # the blocks a worker claimed and still runs
        if task.error is not None:
            raise task.error


def _serve(q: SimpleQueue) -> None:
    while True:
        q.get().work()  # a task already finished by others is a no-op


_POOLS: dict[int, Pool] = {}
_POOLS_LOCK = threading.Lock()


def pool(threads: int) -> Pool:
    """The process's pool of `threads` threads (made on first use, shared by every executor)."""
    with _POOLS_LOCK:
        if threads not in _POOLS:
            _POOLS[threads] = Pool(threads)
        return _POOLS[threads]
