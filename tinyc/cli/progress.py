"""Training progress for `tinyc run`: a rich progress bar on a terminal, plain log lines otherwise.

Plain mode writes one line about every tenth of an epoch and one line per finished epoch, so a
log file or CI output stays short and greppable.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from ..ir.numfmt import metric
from ..runtime.trainer import Reporter
from .output import echo, is_terminal

LOG_EVERY = 0.1  # plain mode: a progress line every tenth of an epoch


def epoch_line(record: Mapping[str, Any], epochs: int) -> str:
    """`epoch 2/3: train loss 0.2113, train accuracy 93.80%, test accuracy 95.10%, 12.3 s (4,870 ex/s)`."""
    parts = [f"train loss {metric(record['train_loss'])}"]
    if "train_accuracy" in record:
        parts.append(f"train accuracy {record['train_accuracy']:.2%}")
    if "test_accuracy" in record:
        parts.append(f"test accuracy {record['test_accuracy']:.2%}")
    parts.append(f"{record['epoch_seconds']:.1f} s ({record['examples_per_s']:,.0f} ex/s)")
    return f"epoch {record['epoch']}/{epochs}: " + ", ".join(parts)


class PlainReporter(Reporter):
    """Log lines: progress every ~10% of an epoch, then the epoch's results."""

    def __init__(self) -> None:
        self.epoch = self.epochs = self.steps = 0
        self.marks: set[int] = set()

    def start_epoch(self, epoch: int, epochs: int, steps: int) -> None:
        self.epoch, self.epochs, self.steps = epoch, epochs, steps
        self.marks = {math.ceil(steps * k * LOG_EVERY) for k in range(1, round(1 / LOG_EVERY))} - {0, steps}

    def step(self, step: int, loss: float, examples_per_s: float, lr: float) -> None:
        if step in self.marks:
            echo(
                f"epoch {self.epoch}/{self.epochs}  step {step}/{self.steps} ({step / self.steps:.0%})  "
                f"loss {metric(loss)}  lr {lr:.3g}  {examples_per_s:,.0f} ex/s"
            )

    def end_epoch(self, record: Mapping[str, Any]) -> None:
        echo(epoch_line(record, self.epochs))

    def message(self, text: str) -> None:
        echo(text)

    def close(self) -> None:
        pass


class RichReporter(Reporter):
    """A live progress bar per epoch (loss, lr, throughput); finished epochs stay as one line each."""

    def __init__(self) -> None:
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            TextColumn,
            TimeElapsedColumn,
            TimeRemainingColumn,
        )

        self.progress = Progress(
            TextColumn("epoch {task.fields[epoch]}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("loss {task.fields[loss]}  lr {task.fields[lr]:.3g}  {task.fields[rate]:,.0f} ex/s"),
            TimeElapsedColumn(),
            TimeRemainingColumn(),
            transient=True,
        )
        self.task = None
        self.epochs = 0
        self.started = False

    def start_epoch(self, epoch: int, epochs: int, steps: int) -> None:
        if not self.started:
            self.progress.start()
            self.started = True
        self.epochs = epochs
        self.task = self.progress.add_task(
            "", total=steps, epoch=f"{epoch}/{epochs}", loss="-", lr=0.0, rate=0.0
        )

    def step(self, step: int, loss: float, examples_per_s: float, lr: float) -> None:
        self.progress.update(self.task, completed=step, loss=metric(loss), lr=lr, rate=examples_per_s)

    def end_epoch(self, record: Mapping[str, Any]) -> None:
        self.progress.remove_task(self.task)
        self.message(epoch_line(record, self.epochs))

    def message(self, text: str) -> None:
        from rich.text import Text  # Text, not str: never read our lines as markup

        self.progress.console.print(Text(text), highlight=False)

    def close(self) -> None:
        if self.started:
            self.progress.stop()
            self.started = False


def make_reporter() -> PlainReporter | RichReporter:
    """The progress bar on a terminal, log lines when stdout is piped or redirected."""
    return RichReporter() if is_terminal() else PlainReporter()
