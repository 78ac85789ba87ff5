"""What a training run will hold in memory, checked against what the machine has before any
parameter is allocated: a model that cannot fit is one line at start-up, not a MemoryError
(or the kernel's OOM killer) minutes later."""

from __future__ import annotations

import os

from ..ir.arena import layout
from ..ir.errors import ResourceError
from ..ir.numfmt import human_bytes
from ..ir.program import PREDICT_ENTRY, TRAIN_ENTRY, Program


def run_memory(program: Program, batch_size: int, eval_batch_size: int) -> dict[str, int]:
    """Bytes by what holds them: parameters, optimizer state, and each entry's buffers (the
    planned arena, inputs and unplanned values) at the batch size it runs at."""
    params: dict[str, tuple[str, int]] = {}
    need = {"parameters": 0, "optimizer state": 0}
    for entry in program.entries.values():
        for p in entry.graph.params:
            params[p.name] = (p.kind, p.type.nbytes())
    for kind, nbytes in params.values():
        need["parameters" if kind == "param" else "optimizer state"] += nbytes
    for name, batch in ((TRAIN_ENTRY, batch_size), (PREDICT_ENTRY, eval_batch_size)):
        if name in program.entries:
            need[f"{name} buffers at batch {batch}"] = entry_bytes(program.entry(name), batch)
    return need


def entry_bytes(entry, batch: int) -> int:
    """The bytes one entry allocates at batch `batch`: its arena, its inputs and unplanned values."""
    graph, plan = entry.graph, entry.plan
    types = graph.types

    def nbytes(v: str) -> int:
        return types[v].nbytes(default=batch)  # every symbol taken as the batch, as the plan's figures are

    arena = layout(plan, nbytes)[1] if plan is not None and plan.slots else 0
    placed = set(plan.slots) | set(plan.alias) | set(plan.inplace) if plan is not None else set()
    loose = sum(nbytes(n.out) for n in graph.nodes if n.out not in placed)
    return arena + loose + sum(nbytes(i.name) for i in graph.inputs)


def available_memory() -> int | None:
    """Bytes the machine can still give (MemAvailable), or None where it cannot say."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, AttributeError):
        return None


def check_memory(need: dict[str, int], available: int | None = None) -> None:
    """ResourceError, itemising `need`, when it exceeds the available memory."""
    available = available_memory() if available is None else available
    total = sum(need.values())
    if available is None or total <= available:
        return
    parts = ", ".join(f"{what} {human_bytes(n)}" for what, n in need.items() if n)
    raise ResourceError(f"this run needs {human_bytes(total)} of memory ({parts}); "
                        f"the machine has {human_bytes(available)} available",
                        hint="lower --batch-size, or make the model smaller")
