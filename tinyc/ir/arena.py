"""The byte layout of a memory plan's buffers: one arena, each buffer at an aligned offset.

Pure arithmetic on the plan (no arrays): the `memplan` pass reports the arena it implies and
the executor (`tinyc.runtime.arena`) allocates exactly that, from this one function.
"""

from __future__ import annotations

from bisect import insort
from collections.abc import Callable, Mapping
from typing import Any

from .errors import IRError

ALIGN = 64  # bytes: every buffer starts on a cache line (and any dtype's itemsize)


def buffer_sizes(plan: Mapping[str, Any], nbytes: Callable[[str], int]) -> list[int]:
    """Bytes of each planned buffer: the largest of its values, `nbytes(value)` each."""
    lives, slots = plan.get("buffers"), plan.get("slots", {})
    count = len(lives) if lives is not None else 1 + max((s for s in slots.values() if isinstance(s, int)), default=-1)
    sizes = [0] * count
    for v, s in slots.items():
        if not isinstance(s, int) or not 0 <= s < len(sizes):
            raise IRError(f"memory plan places %{v} in buffer {s!r}, but the plan has no such buffer")
        sizes[s] = max(sizes[s], nbytes(v))
    return sizes


def pack(sizes: list[int], lives: list[tuple[int, int]] | None, align: int = ALIGN) -> tuple[list[int], int]:
    """(byte offset of each buffer, arena bytes): buffers whose live intervals [first, last]
    overlap get disjoint byte ranges. Greedy by size (largest first), each at the start of the
    smallest gap between already placed overlapping buffers that fits it, else above them all.
    Without `lives` every buffer is alive throughout (each its own range)."""
    n = len(sizes)
    lives = lives if lives is not None else [(0, 1 << 62)] * n
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


def layout(plan: Mapping[str, Any], nbytes: Callable[[str], int]) -> tuple[list[int], int]:
    """(byte offset of each planned buffer, arena bytes) when value `v` takes `nbytes(v)`."""
    lives = plan.get("buffers")
    return pack(buffer_sizes(plan, nbytes), [tuple(x) for x in lives] if lives is not None else None)
