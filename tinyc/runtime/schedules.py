"""Learning-rate schedules: the rate for each step, fed to a program's `lr` input.

Warmup (linear from base_lr/warmup to base_lr over `warmup` steps) applies to every schedule.
- constant: base_lr.
- cosine: half a cosine from base_lr after warmup down to 0 at `total_steps`.
- step: base_lr * gamma ** (epoch // step_size).
"""

from __future__ import annotations

import math

from ..ir.errors import IRError
from ..ir.train import SCHEDULES


def _constant(step: int, steps_per_epoch: int, total_steps: int, gamma: float, step_size: int, warmup: int) -> float:
    return 1.0


def _cosine(step: int, steps_per_epoch: int, total_steps: int, gamma: float, step_size: int, warmup: int) -> float:
    span = max(1, total_steps - warmup)
    progress = min(1.0, max(0.0, (step - warmup) / span))
    return 0.5 * (1.0 + math.cos(math.pi * progress))


def _step(step: int, steps_per_epoch: int, total_steps: int, gamma: float, step_size: int, warmup: int) -> float:
    epoch = step // max(1, steps_per_epoch)
    return gamma ** (epoch // max(1, step_size))


# schedule name (one of `tinyc.ir.train.SCHEDULES`, where the names live) -> factor of base_lr
# at a step (after warmup); a test checks the two agree
FACTORS = {"constant": _constant, "cosine": _cosine, "step": _step}


def lr_at(step: int, steps_per_epoch: int, total_steps: int, base_lr: float, schedule: str = "constant",
          warmup: int = 0, gamma: float = 0.1, step_size: int = 1) -> float:
    """The learning rate of (0-based) `step`."""
    if schedule not in FACTORS:
        raise IRError(f"unknown lr schedule {schedule!r}; known: {', '.join(SCHEDULES)}")
    factor = FACTORS[schedule](step, steps_per_epoch, total_steps, gamma, step_size, warmup)
    if warmup and step < warmup:
        factor *= (step + 1) / warmup
    return float(base_lr * factor)
