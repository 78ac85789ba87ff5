"""The metrics file of `tinyc run --metrics-out`: JSON lines, step rows and epoch rows.

```
{"kind": "step", "epoch": 1, "step": 9, "loss": 2.1032, "lr": 0.0003, "examples_per_s": 5012.4, "accuracy": 0.25}
{"kind": "epoch", "epoch": 1, "steps": 938, "train_loss": 0.41, "train_accuracy": 0.87, "test_accuracy": 0.95, ...}
```

A step row every `log_every` steps (`step` is the global step, 1-based; `examples_per_s` over the
steps since the row before); an epoch row after each epoch, with the fields of the run's history.

Cheap on the step: a step row is a tuple of floats appended to a list; rows are turned into text
and written only at a flush (the end of each epoch, or every FLUSH_ROWS rows), so the training
loop never formats a float or touches the file per step.

A character device or FIFO (`--metrics-out /dev/null`, `>(cat)`) is opened once for the run and
written into: never replaced, never synced, and a reader sees one stream, not an end of file per
flush.

Crash-safe without duplicates: the trainer flushes an epoch's rows *before* it writes that
epoch's checkpoint. A resumed run keeps the rows of the epochs its checkpoint holds and drops the
rest (the epoch in progress when the run died, which it trains again): every row once, in order.
"""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import numpy as np

from ..ir.fileio import atomic_write, is_stream, open_into

FLUSH_ROWS = 1000  # a long epoch still reaches the disk in pieces
STEP_FIELDS = ("epoch", "step", "loss", "lr", "examples_per_s")
ROWS_PER_EPOCH = 100  # the default --log-every aims at about this many step rows per epoch


def default_log_every(steps_per_epoch: int) -> int:
    """Steps between two step rows: about ROWS_PER_EPOCH rows per epoch."""
    return max(1, steps_per_epoch // ROWS_PER_EPOCH)


class MetricsLog:
    """Buffered JSON-lines writer for one run."""

    def __init__(self, path: str, has_accuracy: bool = False) -> None:
        self.path = path
        self.fields = STEP_FIELDS + (("accuracy",) if has_accuracy else ())
        self.pending: list[tuple] = []  # step rows as tuples, epoch rows as dicts
        self.stream: Any = None  # the open device or FIFO, when the path is one

    def start(self, history: Sequence[Mapping[str, Any]]) -> None:
        """Begin the file: the rows of the epochs in `history` (a resumed run's) are kept, others dropped.

        Epoch rows are rewritten from the history (it is what the checkpoint holds); step rows of
        those epochs are kept from the file when it has them (a device or FIFO is never read back).
        """
        done = len(history)
        stream = is_stream(self.path)  # never read: a FIFO or a terminal would wait for a writer
        kept: dict[int, list[str]] = {}
        for row in read_rows(self.path) if done and not stream and os.path.exists(self.path) else []:
            if row.get("kind") == "step" and isinstance(row.get("epoch"), int) and row["epoch"] <= done:
                kept.setdefault(row["epoch"], []).append(json.dumps(row, sort_keys=True))
        lines = []
        for epoch, record in enumerate(history, 1):
            lines += kept.get(epoch, [])
            lines.append(_epoch_line(record))
        text = "".join(line + "\n" for line in lines)
        if stream:
            with self._naming_the_path():
                self.stream = open_into(self.path, "a")  # kept open for every row; close()
                self.stream.write(text)
                self.stream.flush()
        elif not done:  # a fresh run: an empty file, nothing in it to keep safe, so no fsync (up to 0.7 s here)
            with self._naming_the_path():
                open(self.path, "w", encoding="utf-8").close()
        else:
            atomic_write(self.path, text.encode())

    def step(self, *values: float) -> None:
        """One step row: values in the order of `self.fields` (no formatting here)."""
        self.pending.append(values)
        if len(self.pending) >= FLUSH_ROWS:
            self.flush(sync=False)

    def epoch(self, record: Mapping[str, Any], sync: bool = True) -> None:
        """The epoch's row; flushes, and with `sync` fsyncs (call before the epoch's checkpoint is
        written). Without a checkpoint nothing depends on the rows being durable, and an fsync can
        cost a busy disk a second."""
        self.pending.append(dict(record))
        self.flush(sync=sync)

    def flush(self, sync: bool = False) -> None:
        if not self.pending:
            return
        text = "".join((_epoch_line(r) if isinstance(r, dict) else self._step_line(r)) + "\n" for r in self.pending)
        self.pending.clear()
        with self._naming_the_path():
            if self.stream is not None:
                self.stream.write(text)
                self.stream.flush()
                return
            with open(self.path, "a", encoding="utf-8") as f:
                f.write(text)
                if sync:
                    f.flush()
                    os.fsync(f.fileno())

    def close(self) -> None:
        """Write what is pending and close the stream, if the path is one."""
        self.flush()
        if self.stream is not None:
            stream, self.stream = self.stream, None
            with self._naming_the_path():
                stream.close()

    @contextlib.contextmanager
    def _naming_the_path(self) -> Iterator[None]:
        """An OSError names the metrics file (`/dev/full: No space left on device`)."""
        try:
            yield
        except OSError as e:
            if e.filename is not None or e.errno is None:
                raise
            raise type(e)(e.errno, e.strerror, self.path) from None

    def _step_line(self, values: tuple) -> str:
        row = {"kind": "step", **{k: _plain(v) for k, v in zip(self.fields, values)}}
        return json.dumps(row, sort_keys=True)


def read_rows(path: str) -> list[dict[str, Any]]:
    """The rows of a metrics file; a row without `kind` (files of earlier versions) is an epoch row.

    A torn last line (a crash mid-write) is skipped, and so is a line that is not UTF-8 JSON (a file
    of another tool reads as no rows, not as a crash).
    """
    rows = []
    with open(path, encoding="utf-8", errors="replace") as f:
        for line in f:
            try:
                row = json.loads(line)
            except json.JSONDecodeError:
                continue
            if isinstance(row, dict):
                row.setdefault("kind", "epoch")
                rows.append(row)
    return rows


def only_first_epoch_steps(path: str) -> bool:
    """Whether the file holds step rows of epoch 1 and nothing else: the rows of a run that ended
    (Ctrl-C, an error, a kill after a flush) before its first checkpoint, which a resume drops."""
    rows = read_rows(path)
    return bool(rows) and all(r["kind"] == "step" and r.get("epoch") == 1 for r in rows)


def _epoch_line(record: Mapping[str, Any]) -> str:
    return json.dumps({"kind": "epoch", **{k: _plain(v) for k, v in record.items() if k != "kind"}}, sort_keys=True)


def _plain(v: Any) -> Any:
    return v.item() if isinstance(v, (np.floating, np.integer)) else v
