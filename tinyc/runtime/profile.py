"""Where a step's time goes: every instruction of an executor's entry timed, summed by op.

`profile_train_steps` runs real training steps through the executor's own instruction list
(parameters change as in training), timing each instruction with `perf_counter`; an
instruction split into row blocks (parallel.py) counts as one, blocks included. GEMMs are the
ops of `kernels.GEMMS`; everything else is the non-GEMM share.
"""

from __future__ import annotations

import time
from collections import defaultdict
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .executor import Executor
from .kernels import GEMMS


@dataclass
class Profile:
    steps: int
    seconds: dict[str, float] = field(default_factory=dict)  # op -> seconds per step
    counts: dict[str, int] = field(default_factory=dict)  # op -> instructions per step

    @property
    def total(self) -> float:
        return sum(self.seconds.values())

    @property
    def gemm(self) -> float:
        return sum(s for op, s in self.seconds.items() if op in GEMMS)

    def rows(self) -> list[tuple[str, int, float, float]]:
        """(op, instructions per step, ms per step, share of the step), slowest first."""
        total = self.total or 1.0
        return [(op, self.counts[op], s * 1e3, s / total)
                for op, s in sorted(self.seconds.items(), key=lambda kv: -kv[1])]


def profile_train_steps(executor: Executor, feeds: Mapping[str, Any], lr: float | None, steps: int) -> Profile:
    """Time every instruction of `steps` training steps (after the caller's warm-up)."""
    seconds: dict[str, float] = defaultdict(float)
    counts: dict[str, int] = defaultdict(int)
    clock, copyto = time.perf_counter, np.copyto

    def timed(instrs: list[tuple]) -> None:
        for call, ins, out, node in instrs:
            start = clock()
            r = call(*ins)
            if r is not out:
                copyto(out, r)
            seconds[node.op] += clock() - start
            counts[node.op] += 1

    executor._execute = timed  # this instance only: the executor's own loop, with a clock around each call
    try:
        for _ in range(steps):
            executor.train_step(feeds, lr)
    finally:
        del executor._execute
    return Profile(steps, {op: s / steps for op, s in seconds.items()}, {op: n // steps for op, n in counts.items()})
