"""The executor's arena: one aligned byte array per binding of an entry's symbols, laid out by
the memory plan (`tinyc.ir.arena`, the same arithmetic the `memplan` pass reports)."""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from ..ir.arena import ALIGN, layout
from ..ir.plan import MemoryPlan
from ..ir.types import TensorType


def arena_layout(plan: MemoryPlan, types: Mapping[str, TensorType],
                 bindings: Mapping[str, int]) -> tuple[list[int], np.ndarray]:
    """(byte offset of each planned buffer, the arena holding them all) at `bindings`
    (the plan checked against the entry: `tinyc.ir.plan.check_plan`)."""
    def nbytes(v: str) -> int:
        t = types[v]
        return int(np.prod(t.concrete(bindings), dtype=np.int64)) * t.np_dtype.itemsize

    offsets, total = layout(plan, nbytes)
    raw = np.empty(total + ALIGN, np.uint8)
    skip = -raw.ctypes.data % ALIGN  # the arena's first byte on an ALIGN boundary
    return offsets, raw[skip:skip + total]
