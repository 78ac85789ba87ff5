"""Training progress for `tinyc run`: a rich progress bar on a terminal, plain log lines otherwise.

Plain mode writes one line about every tenth of an epoch and one line per finished epoch, so a
log file or CI output stays short and greppable.
"""

from __future__ import annotations

import math
import time
from collections.abc import Mapping
from typing import Any

from ..ir.numfmt import human_duration, metric
from ..runtime.trainer import Reporter
from .output import echo, is_terminal

LOG_EVERY = 0.1  # plain mode: a progress line every tenth of an epoch
REFRESH_S = 0.1  # terminal mode: the bar's fields are updated at most this often


class RunClock:
    """The whole run's remaining time: seconds per step so far in this process (evaluation and
    checkpoints included, as they recur each epoch) times the steps left in the run."""

    def __init__(self) -> None:
        self.t0: float | None = None
        self.first = self.base = self.total = 0

    def start_epoch(self, epoch: int, epochs: int, steps: int) -> None:
        self.base, self.total = (epoch - 1) * steps, epochs * steps
        if self.t0 is None:  # a resumed run starts counting at its first epoch
            self.t0, self.first = time.perf_counter(), self.base

    def eta(self, step: int) -> str:
        """`3m12s` after `step` steps of the current epoch; `-` before anything was measured."""
        done = self.base + step - self.first
        if self.t0 is None or done <= 0:
            return "-"
        return human_duration((time.perf_counter() - self.t0) / done * (self.total - self.base - step))


def epoch_line(record: Mapping[str, Any], epochs: int, eta: str = "") -> str:
    """`epoch 2/3: train loss 0.2113, train accuracy 93.80%, test accuracy 95.10%, 12.3 s (4,870 ex/s), run ETA 12s`."""
    parts = [f"train loss {metric(record['train_loss'])}"]
    if "train_accuracy" in record:
        parts.append(f"train accuracy {record['train_accuracy']:.2%}")
    if "val_accuracy" in record:
        parts.append(f"val accuracy {record['val_accuracy']:.2%}")
    if "test_accuracy" in record:
        parts.append(f"test accuracy {record['test_accuracy']:.2%}")
    parts.append(f"{record['epoch_seconds']:.1f} s ({record['examples_per_s']:,.0f} ex/s)")
    if eta and record["epoch"] < epochs:
        parts.append(f"run ETA {eta}")
    return f"epoch {record['epoch']}/{epochs}: " + ", ".join(parts)


class PlainReporter(Reporter):
    """Log lines: progress every ~10% of an epoch with the whole run's ETA, then the epoch's results."""

    def __init__(self) -> None:
        self.epoch = self.epochs = self.steps = 0
        self.marks: set[int] = set()
        self.clock = RunClock()

    def start_epoch(self, epoch: int, epochs: int, steps: int) -> None:
        self.epoch, self.epochs, self.steps = epoch, epochs, steps
        self.marks = {math.ceil(steps * k * LOG_EVERY) for k in range(1, round(1 / LOG_EVERY))} - {0, steps}
        self.clock.start_epoch(epoch, epochs, steps)

    def step(self, step: int, loss: float, examples_per_s: float, lr: float, accuracy: float | None = None) -> None:
        if step in self.marks:
            acc = f"  accuracy {accuracy:.2%}" if accuracy is not None else ""
            echo(
                f"epoch {self.epoch}/{self.epochs}  step {step}/{self.steps} ({step / self.steps:.0%})  "
                f"loss {metric(loss)}{acc}  lr {lr:.3g}  {examples_per_s:,.0f} ex/s  run ETA {self.clock.eta(step)}"
            )

    def end_epoch(self, record: Mapping[str, Any]) -> None:
        echo(epoch_line(record, self.epochs, self.clock.eta(self.steps)))

    def message(self, text: str) -> None:
        echo(text)

    def close(self) -> None:
        pass


class RichReporter(Reporter):
    """A live bar per epoch (loss, running accuracy, lr, throughput, the whole run's ETA); finished
    epochs stay as one line each."""

    def __init__(self) -> None:
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

        self.progress = Progress(
            TextColumn("epoch {task.fields[epoch]}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("loss {task.fields[loss]}{task.fields[acc]}  lr {task.fields[lr]:.3g}  "
                       "{task.fields[rate]:,.0f} ex/s"),
            TimeElapsedColumn(),
            TextColumn("run ETA {task.fields[eta]}"),
            transient=True,
        )
        self.task = None
        self.epochs = self.steps = 0
        self.started = False
        self.clock = RunClock()
        self.shown = 0.0  # when the fields were last updated

    def start_epoch(self, epoch: int, epochs: int, steps: int) -> None:
        if not self.started:
            self.progress.start()
            self.started = True
        self.epochs, self.steps = epochs, steps
        self.clock.start_epoch(epoch, epochs, steps)
        self.task = self.progress.add_task(
            "", total=steps, epoch=f"{epoch}/{epochs}", loss="-", acc="", lr=0.0, rate=0.0, eta=self.clock.eta(0)
        )

    def step(self, step: int, loss: float, examples_per_s: float, lr: float, accuracy: float | None = None) -> None:
        now = time.perf_counter()
        if now - self.shown < REFRESH_S and step != self.steps:
            return  # the bar redraws ~10 times a second: format nothing for the steps in between
        self.shown = now
        acc = f"  acc {accuracy:.2%}" if accuracy is not None else ""
        self.progress.update(self.task, completed=step, loss=metric(loss), acc=acc, lr=lr, rate=examples_per_s,
                             eta=self.clock.eta(step))

    def end_epoch(self, record: Mapping[str, Any]) -> None:
        self.progress.remove_task(self.task)
        self.message(epoch_line(record, self.epochs, self.clock.eta(self.steps)))

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
