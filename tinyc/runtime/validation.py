"""A validation set held out of the training set (`--val-split F`) and the best checkpoint (`--keep-best`).

The held-out examples are drawn once from the seed, from a random stream of their own (so the
shuffling of the training batches is the same draw with or without a split), and both parts keep
the data set's order. The best checkpoint is the full training state of the epoch with the highest
validation accuracy so far, beside the latest: `vit.safetensors` -> `vit.best.safetensors`.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from ..ir.errors import TinycError

VAL_STREAM = 0x7A1  # the second word of the seed of the hold-out draw: a stream apart from the shuffling


def holdout(n: int, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(training indices, validation indices) of `n` examples, each part in the original order."""
    held = round(fraction * n)
    if not 1 <= held < n:
        raise TinycError(f"--val-split {fraction:g} of {n:,} training examples leaves "
                         + ("no example to validate on" if held < 1 else "none to train on"))
    order = np.random.default_rng([seed, VAL_STREAM]).permutation(n)
    return np.sort(order[held:]), np.sort(order[:held])


def best_path(checkpoint: str) -> str:
    """`vit.safetensors` -> `vit.best.safetensors` (`run.ckpt` -> `run.best.ckpt`; no suffix: `run.best`)."""
    root, ext = os.path.splitext(checkpoint)
    return f"{root}.best{ext}"


def best_so_far(history: Sequence[Mapping[str, Any]]) -> float:
    """The highest validation accuracy of the epochs done (-1 before any)."""
    return max((r["val_accuracy"] for r in history if "val_accuracy" in r), default=-1.0)
