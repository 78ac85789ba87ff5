"""A Program: what `tinyc compile` writes and the runtime loads.

It holds named entries (`train_step`, `predict`), each a scheduled Graph (its node order is the
schedule) with its memory plan, plus program-wide meta (training defaults, optimizer spec).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from .errors import IRError
from .graph import Graph
from .plan import MemoryPlan

# The entries `tinyc compile` makes and the runtime runs, and the learning-rate input the
# `optimizer` pass adds to the training step (the executor feeds it each step).
TRAIN_ENTRY, PREDICT_ENTRY, LR_INPUT = "train_step", "predict", "lr"
# The output holding the loss: what the traced graph's meta["loss"] names (by default "loss");
# in a compiled train_step it is always "loss".
LOSS_OUTPUT = "loss"


def loss_output(meta: Mapping[str, Any]) -> str:
    """The name of the output the loss is (meta["loss"], else LOSS_OUTPUT)."""
    return meta.get("loss", LOSS_OUTPUT)

# The input the `dataparallel` pass adds and the Executor feeds every step: this rank's share of
# the global batch (local examples / global examples; 1.0 on one rank).
SHARE_INPUT = "batch_share"


@dataclass(frozen=True)
class Entry:
    """One runnable function of a program: its scheduled graph and the memory plan the
    `memplan` pass made for it (None when not planned: every value then gets its own array)."""

    name: str
    graph: Graph
    plan: MemoryPlan | None = None

    __hash__ = None


@dataclass(frozen=True)
class Program:
    entries: Mapping[str, Entry]
    meta: Mapping[str, Any] = field(default_factory=dict)

    __hash__ = None

    def entry(self, name: str) -> Entry:
        if name not in self.entries:
            raise IRError(f"program has no entry {name!r}; it has {', '.join(self.entries) or 'none'}")
        return self.entries[name]
