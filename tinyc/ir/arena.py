"""The byte layout of a memory plan's buffers: one arena, each buffer at an aligned offset.

Pure arithmetic on the plan (no arrays): the `memplan` pass reports the arena it implies and
the executor (`tinyc.runtime.arena`) allocates exactly that, from this one function.
"""

from __future__ import annotations

from bisect import insort
from collections.abc import Callable, Mapping, Sequence

from .plan import MemoryPlan

ALIGN = 64  # bytes: every buffer starts on a cache line (and any dtype's itemsize)


def buffer_sizes(slots: Mapping[str, int], count: int, nbytes: Callable[[str], int]) -> list[int]:
    """Bytes of each of `count` buffers: the largest of the values `slots` puts there, `nbytes(value)` each."""
    sizes = [0] * count
    for v, s in slots.items():
        sizes[s] = max(sizes[s], nbytes(v))
    return sizes


def pack(sizes: Sequence[int], lives: Sequence[tuple[int, int]], align: int = ALIGN) -> tuple[list[int], int]:
    """(byte offset of each buffer, arena bytes): buffers whose live intervals [first, last]
    overlap get disjoint byte ranges. Greedy by size (largest first), each at the start of the
    smallest gap between already placed overlapping buffers that fits it, else above them all."""
    n = len(sizes)
    rounded = [-(-max(size, 1) // align) * align for size in sizes]
    order = sorted(range(n), key=lambda b: (-rounded[b], lives[b][0], b))
    offsets = [0] * n
    placed: list[tuple[int, int, int, int]] = []  # (offset, end, first, last), kept sorted by offset
    top = 0
    for b in order:
        first, last = lives[b]
        size = rounded[b]
        best, best_gap, end = None, None, 0
        for start, stop, f, l in placed:
            if f > last or l < first:
                continue  # never alive together: may share bytes
            gap = start - end
            if gap >= size and (best_gap is None or gap < best_gap):
                best, best_gap = end, gap
            end = max(end, stop)
        offsets[b] = end if best is None else best
        insort(placed, (offsets[b], offsets[b] + size, first, last))
        top = max(top, offsets[b] + size)
    return offsets, top


def layout(plan: MemoryPlan, nbytes: Callable[[str], int]) -> tuple[list[int], int]:
    """(byte offset of each planned buffer, arena bytes) when value `v` takes `nbytes(v)`."""
    return pack(buffer_sizes(plan.slots, len(plan.buffers), nbytes), plan.buffers)
