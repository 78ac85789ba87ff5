"""The executor's arena: one aligned byte array per binding of an entry's symbols, laid out by
the memory plan (`tinyc.ir.arena`, the same arithmetic the `memplan` pass reports)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from ..ir.arena import ALIGN, layout
from ..ir.errors import IRError


def arena_layout(plan: Mapping[str, Any], types, bindings: Mapping[str, int]) -> tuple[list[int], np.ndarray]:
    """(byte offset of each planned buffer, the arena holding them all) at `bindings`."""
    def nbytes(v: str) -> int:
        t = types.get(v)
        if t is None:
            raise IRError(f"memory plan places %{v} in a buffer, but the entry has no such value")
        return int(np.prod(t.concrete(bindings), dtype=np.int64)) * t.np_dtype.itemsize

    offsets, total = layout(plan, nbytes)
    raw = np.empty(total + ALIGN, np.uint8)
    skip = -raw.ctypes.data % ALIGN  # the arena's first byte on an ALIGN boundary
    return offsets, raw[skip:skip + total]
