"""`tinyc plot METRICS.jsonl [MORE.jsonl ...] -o curves.png`: training curves from metrics files.

Three panels: the training loss per step (each logged step faint, an exponential moving average
bold), accuracy per epoch (test solid, validation dashed where present), and the learning rate per
step. Several files are overlaid, one colour per run, labelled by file name. PNG or SVG by the
output's suffix.

matplotlib is an optional extra (`pip install "tinyc[plot]"`), imported only here and only when a
plot is drawn, with the Agg backend (no display needed). `tinyc run --plot` redraws after each epoch.
"""

from __future__ import annotations

import io
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Annotated, Any

import typer

from ..ir.errors import DataError, TinycError
from ..runtime.metrics import read_rows
from ..runtime.trainer import Reporter
from .errors import DebugOption, fail, handles_errors
from .output import wrote

FORMATS = {".png": "png", ".svg": "svg"}
SIZE_IN, DPI = (13.5, 4.0), 100  # 1350 x 400 pixels as PNG
SMOOTHING = 0.9  # weight of the past in the loss's moving average (TensorBoard's slider)
# (field, row kind, x field) of every series the plot draws: a file with none of them is not a metrics file
PLOTTED = (("loss", "step", "step"), ("train_loss", "epoch", "steps"), ("test_accuracy", "epoch", "epoch"),
           ("val_accuracy", "epoch", "epoch"), ("lr", "step", "step"), ("lr", "epoch", "steps"))


@handles_errors
def plot(
    metrics: Annotated[list[Path], typer.Argument(
        help="Metrics files written by `tinyc run --metrics-out` (several: overlaid).", metavar="METRICS.jsonl",
        show_default=False)],
    output: Annotated[Path, typer.Option(
        "-o", "--output", help="Image to write: .png or .svg.", metavar="OUT", show_default=False)],
    debug: DebugOption = False,
) -> None:
    """Plot training loss per step, accuracy per epoch and the learning rate of one or more runs."""
    check_plot_path(output)
    from ..ir.fileio import check_outputs

    check_outputs([("-o", output)], inputs=metrics)
    runs = {}
    for path in metrics:
        runs[_label(path, runs)] = load_run(path)
    write_plot(runs, output)
    wrote(output, f"wrote {output}: {len(runs)} run{'s' if len(runs) > 1 else ''}")


def check_plot_path(path: Path) -> str:
    """The plot's format by the path's suffix (PNG into a device or pipe without one, such as
    /dev/stdout); a one-line error for a suffix we cannot write (before any training or loading)."""
    from ..ir.fileio import is_stream

    suffix = path.suffix.lower()
    if suffix not in FORMATS and not (not suffix and is_stream(path)):
        raise fail(f"{path}: the plot's format comes from its suffix: .png or .svg")
    return FORMATS.get(suffix, "png")


def load_run(path: Path) -> list[dict[str, Any]]:
    """The rows of a metrics file, refused with one line when it holds none."""
    if not path.exists():
        raise FileNotFoundError(2, "No such file or directory", str(path))
    rows = read_rows(str(path))
    if not any(series(rows, key, kind, x)[0] for key, kind, x in PLOTTED):  # JSON, but not ours
        raise DataError(f"{path}: no metrics rows (is it a file of `tinyc run --metrics-out`?)")
    return rows


def _label(path: Path, taken: Mapping[str, Any]) -> str:
    label = path.stem
    return label if label not in taken else str(path)


def series(rows: Sequence[Mapping[str, Any]], key: str, kind: str, x: str) -> tuple[list[float], list[float]]:
    """(xs, ys) of `key` over the rows of `kind`, skipping rows without it and non-finite values."""
    xs, ys = [], []
    for r in rows:
        value, at = r.get(key), r.get(x)
        if r.get("kind") == kind and isinstance(value, (int, float)) and isinstance(at, (int, float)) \
                and math.isfinite(value):
            xs.append(at)
            ys.append(value)
    return xs, ys


def smooth(values: Sequence[float], weight: float = SMOOTHING) -> list[float]:
    """Exponential moving average, debiased (as TensorBoard's), so the first points are not pulled to 0."""
    out, avg = [], 0.0
    for i, v in enumerate(values, 1):
        avg = weight * avg + (1 - weight) * v
        out.append(avg / (1 - weight**i))
    return out


def loss_curve(rows: Sequence[Mapping[str, Any]]) -> tuple[list[float], list[float]]:
    """Loss per logged step; a file without step rows falls back to each epoch's mean loss."""
    xs, ys = series(rows, "loss", "step", "step")
    return (xs, ys) if xs else series(rows, "train_loss", "epoch", "steps")


def write_plot(runs: Mapping[str, Sequence[Mapping[str, Any]]], output: Path) -> None:
    """Draw every run into one figure and write it atomically (PNG or SVG by suffix)."""
    fmt = check_plot_path(output)
    from ..ir.fileio import atomic_write

    fig = draw(runs)
    try:
        buffer = io.BytesIO()
        fig.savefig(buffer, format=fmt, dpi=DPI)
    finally:
        fig.clear()
    atomic_write(output, buffer.getvalue())


def matplotlib_or_fail() -> Any:
    """matplotlib with its file-only backend, or the one-line error that says how to install it
    (`tinyc run --plot` asks before training, not after its first epoch)."""
    try:
        import matplotlib
    except ImportError:
        raise TinycError("tinyc plot needs matplotlib", hint='pip install "tinyc[plot]"') from None
    matplotlib.use("Agg")  # files only: no display, no GUI toolkit
    return matplotlib


def draw(runs: Mapping[str, Sequence[Mapping[str, Any]]]) -> Any:
    """The figure of the runs: three panels (loss, accuracy, learning rate), one colour per run."""
    matplotlib = matplotlib_or_fail()
    from matplotlib.figure import Figure  # not pyplot: no global figure registry to close or leak

    fig = Figure(figsize=SIZE_IN, dpi=DPI)
    ax_loss, ax_acc, ax_lr = fig.subplots(1, 3)
    _draw(runs, ax_loss, ax_acc, ax_lr, matplotlib.colormaps["tab10"])
    fig.tight_layout()
    return fig


def _draw(runs, ax_loss, ax_acc, ax_lr, colours) -> None:
    positive = True
    for i, (label, rows) in enumerate(runs.items()):
        colour = colours(i % 10)
        xs, ys = loss_curve(rows)
        if xs:
            positive &= min(ys) > 0
            ax_loss.plot(xs, ys, color=colour, alpha=0.25, linewidth=0.8)
            ax_loss.plot(xs, smooth(ys), color=colour, linewidth=1.8, label=label)
        for key, style, name in (("test_accuracy", "-", "test"), ("val_accuracy", "--", "val")):
            ex, ey = series(rows, key, "epoch", "epoch")
            if ex:
                ax_acc.plot(ex, [100 * y for y in ey], style, color=colour, marker="o", markersize=4,
                            label=f"{label} {name}")
        lx, ly = series(rows, "lr", "step", "step")
        if not lx:
            lx, ly = series(rows, "lr", "epoch", "steps")
        if lx:
            ax_lr.plot(lx, ly, color=colour, linewidth=1.5, label=label)
    if positive:
        ax_loss.set_yscale("log")
    lrs = [y for line in ax_lr.get_lines() for y in line.get_ydata()]
    if lrs and min(lrs) > 0 and max(lrs) / min(lrs) > 20:  # a warmup from near 0, or runs of other scales
        ax_lr.set_yscale("log")
    _style(ax_loss, "training loss (faint: each logged step; bold: smoothed)", "step", "loss")
    _style(ax_acc, "accuracy per epoch", "epoch", "accuracy (%)")
    ax_acc.xaxis.get_major_locator().set_params(integer=True)
    _style(ax_lr, "learning rate", "step", "lr")
    if ax_lr.get_yscale() == "linear":
        ax_lr.ticklabel_format(axis="y", style="sci", scilimits=(-3, 3))


def _style(ax, title: str, xlabel: str, ylabel: str) -> None:
    ax.set_title(title, fontsize=10)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.grid(True, alpha=0.3)
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=8)


class PlotEachEpoch(Reporter):
    """A reporter that also redraws the plot from the metrics file after each epoch (`tinyc run --plot`)."""

    def __init__(self, inner: Reporter, metrics: Path, output: Path) -> None:
        self.inner, self.metrics, self.output = inner, metrics, output

    def start_epoch(self, epoch: int, epochs: int, steps: int) -> None:
        self.inner.start_epoch(epoch, epochs, steps)

    def step(self, step: int, loss: float, examples_per_s: float, lr: float, accuracy: float | None = None) -> None:
        self.inner.step(step, loss, examples_per_s, lr, accuracy)

    def end_epoch(self, record: Mapping[str, Any]) -> None:
        self.inner.end_epoch(record)
        write_plot({self.metrics.stem: read_rows(str(self.metrics))}, self.output)

    def message(self, text: str) -> None:
        self.inner.message(text)

    def close(self) -> None:
        self.inner.close()


def register(app: typer.Typer) -> None:
    app.command("plot")(plot)
