"""The training loop behind `tinyc run`: epochs of shuffled batches, lr schedule, evaluation,
crash-safe checkpoints with exact resume, and a non-finite guard that names the culprit node.

It drives an Executor and knows nothing of the compiler or the CLI. Progress goes to a
`Reporter` (the CLI draws a progress bar or plain log lines); results go to the metrics file
as JSON lines (`metrics.py`: a step row every `log_every` steps, an epoch row per epoch).

Exact resume: a checkpoint is written only at the end of an epoch and holds the parameters,
the optimizer state, the shuffling generator's state and the history. Everything else a step
depends on (the batch order, the learning rate) is a pure function of those and the step
number, so a resumed run repeats an uninterrupted one bit for bit.
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from typing import Any

import numpy as np

from ..ir.errors import CheckpointError, DataError, NumericsError, OutputError, TinycError
from ..ir.fileio import check_outputs, hold_lock, remove_stale_temps
from ..ir.program import LOSS_OUTPUT, PREDICT_ENTRY, TRAIN_ENTRY, Program
from ..ir.train import EVAL_BATCH, STORED_DEFAULTS, TRAIN_DEFAULTS, train_defaults_problem
from .checkpoint import check_compatible, is_checkpoint, load_checkpoint, save_checkpoint
from .datasets import bind, epoch_order
from .evaluation import (  # noqa: F401 (accuracy_on, eval_data, logits_output: also imported from here)
    EvalResult,
    accuracy_on,
    check_split_labels,
    data_inputs,
    eval_data,
    eval_fields,
    input_rules,
    label_name,
    logits_output,
)
from .executor import Executor
from .memory import check_memory, run_memory
from .metrics import MetricsLog, default_log_every, only_first_epoch_steps
from .ranks import World, on_every_rank, program_digest
from .schedules import lr_at
from .validation import best_path, best_so_far, holdout

TIMING_KEYS = ("epoch_seconds", "examples_per_s")  # the history fields that differ between identical runs
SNAPSHOTS_PER_EPOCH = 10  # in-memory states kept to replay a non-finite step from


@dataclass
class RunConfig:
    """Training settings: the program's stored defaults, overridden by command-line flags."""

    # the settings a program stores (tc.Train's, checked by the same rule); these defaults are its defaults
    epochs: int = STORED_DEFAULTS["epochs"]
    batch_size: int = STORED_DEFAULTS["batch_size"]
    lr: float = STORED_DEFAULTS["lr"]
    schedule: str = STORED_DEFAULTS["schedule"]
    warmup: int = STORED_DEFAULTS["warmup"]
    gamma: float = STORED_DEFAULTS["gamma"]
    step_size: int = STORED_DEFAULTS["step_size"]
    seed: int = 0
    limit: int | None = None
    shuffle: bool = True
    checkpoint: str | None = None
    resume: bool = False
    overwrite: bool = False  # start over although --checkpoint holds an earlier run
    metrics_out: str | None = None
    log_every: int | None = None  # steps between step rows of the metrics file; None: ~100 per epoch
    val_split: float | None = None  # the share of the training set held out for validation
    keep_best: bool = False  # also keep the checkpoint of the best validation accuracy (validation.best_path)
    check_numerics: bool = False
    eval_batch_size: int = EVAL_BATCH
    threads: int | None = None  # None: $TINYC_NUM_THREADS, else the available cores
    rank: int = 0  # this process's rank in a data-parallel run: only rank 0 checks and writes outputs

    @classmethod
    def from_program(cls, program: Program, **overrides: Any) -> RunConfig:
        """Defaults stored by `tc.Train(...)` in the program, then every override that is not None."""
        known = {f.name for f in fields(cls)}
        stored = dict(program.meta.get("train", {}))
        problem = train_defaults_problem(stored)  # blame the program, not a flag the user did not give
        if problem:
            raise TinycError(f"the program's stored training settings: {problem}", hint="compile the model file again")
        values = {k: v for k, v in stored.items() if k in known and v is not None}
        values.update({k: v for k, v in overrides.items() if v is not None and k in known})
        config = cls(**values)
        config.validate()
        return config

    def validate(self) -> None:
        """Refuse settings no run can use, naming the flag."""
        problem = train_defaults_problem({key: getattr(self, key) for key in TRAIN_DEFAULTS})  # tc.Train's rule
        if problem:
            key, _, rest = problem.partition(" ")
            raise TinycError(f"--{key.replace('_', '-')} {rest}")
        checks = [
            (self.limit is None or self.limit >= 1, "--limit must be >= 1"),
            (self.log_every is None or self.log_every >= 1, "--log-every must be >= 1"),
            (isinstance(self.seed, int) and self.seed >= 0, "--seed must be an integer >= 0"),
            (not self.resume or bool(self.checkpoint), "--resume needs --checkpoint PATH"),
            (not (self.resume and self.overwrite), "--resume and --overwrite contradict each other"),
            (self.val_split is None or 0 < self.val_split < 1, "--val-split must lie between 0 and 1"),
            (not self.keep_best or bool(self.checkpoint and self.val_split),
             "--keep-best needs --checkpoint PATH and --val-split F (the best is the best on validation)"),
        ]
        for ok, message in checks:
            if not ok:
                raise TinycError(message)
        if self.rank == 0:
            best = best_path(self.checkpoint) if self.keep_best and self.checkpoint else None
            check_outputs([("--checkpoint", self.checkpoint), ("--metrics-out", self.metrics_out), ("--keep-best", best)])
            self.check_earlier_run()

    def check_earlier_run(self) -> None:
        """An existing checkpoint, metrics file or best checkpoint is an earlier run's work:
        continued with --resume, replaced only with --overwrite, never silently."""
        if self.checkpoint and not (self.resume or self.overwrite) and os.path.isfile(self.checkpoint):
            if not is_checkpoint(self.checkpoint):  # a file of something else: nothing to resume
                raise OutputError(f"--checkpoint {self.checkpoint} exists and is not a tinyc checkpoint",
                                  hint="--overwrite to replace it, or another path")
            raise OutputError(
                f"--checkpoint {self.checkpoint} already holds a run",
                hint="--resume to continue it, --overwrite to start over, or another path",
            )
        # the rows of an earlier run are kept unless a resume continues them (its checkpoint exists,
        # or the rows are only of a first epoch that ended before its checkpoint: a resume drops those)
        resuming = self.resume and bool(self.checkpoint) and os.path.isfile(self.checkpoint)
        metrics = self.metrics_out
        if (metrics and not (resuming or self.overwrite) and os.path.isfile(metrics) and os.path.getsize(metrics)
                and not (self.resume and self.checkpoint and only_first_epoch_steps(metrics))):
            raise OutputError(
                f"--metrics-out {metrics} already holds a run's rows",
                hint=EARLIER_RUN_HINT,
            )
        best = best_path(self.checkpoint) if self.keep_best and self.checkpoint else None
        if best and not (resuming or self.overwrite) and os.path.isfile(best):  # an earlier run's best epoch
            raise OutputError(
                f"--keep-best would replace {best}, an earlier run's best checkpoint",
                hint=EARLIER_RUN_HINT,
            )

    def run_settings(self) -> dict[str, Any]:
        """The settings that decide the result, compared on resume."""
        keys = ("batch_size", "lr", "schedule", "warmup", "gamma", "step_size", "seed", "limit", "shuffle", "epochs",
                "val_split")
        return {k: getattr(self, k) for k in keys}


EARLIER_RUN_HINT = "--resume (with that run's --checkpoint) to continue it, --overwrite to start over, or another path"


class Reporter:
    """Receives progress; this one is silent. The CLI subclasses it."""

    def start_epoch(self, epoch: int, epochs: int, steps: int) -> None: ...
    def step(self, step: int, loss: float, examples_per_s: float, lr: float,
             accuracy: float | None = None) -> None: ...
    def end_epoch(self, record: Mapping[str, Any]) -> None: ...
    def message(self, text: str) -> None: ...
    def close(self) -> None: ...


@dataclass
class RunState:
    epoch: int = 0  # epochs completed
    step: int = 0  # training steps completed
    history: list = field(default_factory=list)


class Trainer:
    """Trains a program's `train_step` on a data set's train split, evaluating `predict` on test.

    With `comm` (see `tinyc.runtime.comm`) it is one rank of a data-parallel run: it trains on
    its part of every global batch (`tinyc.runtime.ranks`); rank 0 reads the checkpoint for all
    and alone writes the checkpoint and the metrics. The reporter should be silent elsewhere.
    """

    def __init__(
        self,
        program: Program,
        train: Mapping[str, np.ndarray],
        test: Mapping[str, np.ndarray] | None,
        config: RunConfig,
        reporter: Reporter | None = None,
        comm: Any = None,
    ) -> None:
        self.program = program
        self.config = config
        self.reporter = reporter or Reporter()
        # before any parameter is allocated: a run that cannot fit is one line, not an OOM kill
        check_memory(run_memory(program, config.batch_size, config.eval_batch_size))
        self.world = World(comm)
        self.executor = Executor(program, seed=config.seed, check_numerics=config.check_numerics, threads=config.threads,
                                 comm=comm)
        self.has_accuracy = "accuracy" in dict(program.entry(TRAIN_ENTRY).graph.outputs)
        self.train_data = bind(train, data_inputs(program), input_rules(program))
        if config.limit is not None:
            self.train_data = {k: v[: config.limit] for k, v in self.train_data.items()}
        self.test_data = eval_data(program, test) if test is not None and PREDICT_ENTRY in program.entries else None
        # every label now, the held-out ones and the test set's too, not after an epoch of training
        for split, bound, what in ((train, self.train_data, "training"), (test, self.test_data, "test")):
            if PREDICT_ENTRY in program.entries and bound is not None and label_name(program) in bound:
                check_split_labels(program, split, bound[label_name(program)], what)
        self.val_data = None
        if config.val_split and self.train_data:
            keep, held = holdout(len(next(iter(self.train_data.values()))), config.val_split, config.seed)
            self.val_data = {k: self.train_data[k][held] for k in eval_fields(program)}
            self.train_data = {k: v[keep] for k, v in self.train_data.items()}
        self.n = len(next(iter(self.train_data.values()))) if self.train_data else 0
        if self.n == 0:
            raise DataError("the training set is empty")
        self.steps_per_epoch = math.ceil(self.n / config.batch_size)
        self._start_together()
        self.shuffle_rng = np.random.default_rng(config.seed)
        self.state = RunState()
        self.metrics = MetricsLog(config.metrics_out, self.has_accuracy) if config.metrics_out and self.world.root else None
        self.log_every = config.log_every or default_log_every(self.steps_per_epoch)
        self.last_eval: EvalResult | None = None

    def _start_together(self) -> None:
        """Ranks check that they run the same program on the same data with the same settings,
        and take rank 0's parameters (a no-op for one process)."""
        w = self.world
        if w.size == 1:
            return
        w.check_batches(self.n, self.config.batch_size)
        test = len(next(iter(self.test_data.values()))) if self.test_data else 0
        w.agree({"program": program_digest(self.program), "settings": _jsonable(self.config.run_settings()),
                 "training set size": self.n, "test set size": test})
        self.executor.load_state_dict(w.broadcast_state(self.executor.state_dict()))

    # ------------------------------------------------------------------ checkpoints
    def save(self, path: str) -> None:
        """Write the full training state (atomic: a crash leaves the old file or the new one)."""
        meta = {
            "epoch": self.state.epoch,
            "step": self.state.step,
            "history": _jsonable(self.state.history),
            "rng": self.shuffle_rng.bit_generator.state,
            "config": _jsonable(self.config.run_settings()),
            "n": self.n,
            "model": self.program.meta.get("model", ""),
            "weights": self.executor.weight_names,  # the rest is optimizer state (see Executor.load_weights)
            "world_size": self.world.size,
        }
        save_checkpoint(path, self.executor.state_dict(), meta)

    def restore(self, path: str, loaded: tuple | None = None) -> None:
        """Continue from a checkpoint written by `save` for this program and data (`loaded`: its
        (tensors, meta) as rank 0 read them, or None to read it here)."""
        tensors, meta = loaded or load_checkpoint(path)
        expected = {name: (a.shape, a.dtype) for name, a in self.executor.params.items()}
        check_compatible(tensors, expected, source=path)
        if meta.get("n") != self.n:
            raise CheckpointError(
                f"{path}: saved for a training set of {meta.get('n')} examples, this run has {self.n}",
                hint="resume with the same --data, --limit and --val-split",
            )
        try:
            state = RunState(int(meta["epoch"]), int(meta["step"]), list(meta.get("history", [])))
            self.shuffle_rng.bit_generator.state = meta["rng"]
        except (KeyError, TypeError, ValueError) as e:
            raise CheckpointError(
                f"{path}: no training progress in the checkpoint ({e})",
                hint="was it written by `tinyc run --checkpoint`?",
            ) from None
        self.executor.load_state_dict(tensors)
        self.state = state
        saved = meta.get("config", {})
        changed = [
            f"{k} {v} (checkpoint: {saved[k]})"
            for k, v in self.config.run_settings().items()
            if k in saved and saved[k] != _jsonable(v)
        ]
        if changed:
            self.reporter.message("note: resuming with other settings than the checkpoint's: " + ", ".join(changed))

    # ------------------------------------------------------------------ the loop
    def lr(self, step: int) -> float:
        """The learning rate of (0-based) global `step`."""
        c = self.config
        total = self.steps_per_epoch * c.epochs
        return lr_at(step, self.steps_per_epoch, total, c.lr, c.schedule, c.warmup, c.gamma, c.step_size)

    def _batch(self, order: np.ndarray, i: int) -> tuple[dict[str, np.ndarray], float, int]:
        """This rank's part of global batch i, its share of the batch's examples, the batch's size."""
        idx = order[i * self.config.batch_size : (i + 1) * self.config.batch_size]
        start, stop = self.world.part(len(idx))
        return {name: arr[idx[start:stop]] for name, arr in self.train_data.items()}, (stop - start) / len(idx), len(idx)

    def fit(self) -> dict[str, Any]:
        """Train for the configured epochs (resuming if asked); returns the summary. The checkpoint
        is locked for the whole run: a second run onto it is refused."""
        if not self.config.checkpoint or not self.world.root:
            return self._fit()
        with hold_lock(self.config.checkpoint, "--checkpoint"):
            self.config.check_earlier_run()  # again, now that no other run can write it
            return self._fit()

    def _fit(self) -> dict[str, Any]:
        cfg = self.config
        best = best_path(cfg.checkpoint) if cfg.keep_best else None
        for path in (cfg.checkpoint, cfg.metrics_out, best) if self.world.root else ():
            if path:
                remove_stale_temps(path)
        if cfg.resume:
            # rank 0 reads the checkpoint and gives it to every rank: no shared file system needed
            found = self.world.from_root(lambda: load_checkpoint(cfg.checkpoint) if os.path.exists(cfg.checkpoint) else None)
            if found is not None:
                try:
                    self.restore(cfg.checkpoint, found)
                except TinycError as e:  # every rank checks the same checkpoint against the same program and data
                    raise on_every_rank(e) if self.world.size > 1 else e
                self.reporter.message(f"resumed from {cfg.checkpoint} after epoch {self.state.epoch}")
            else:
                self.reporter.message(f"no checkpoint at {cfg.checkpoint} yet: starting from scratch")
        if self.metrics is not None:  # a resumed run keeps the rows of the epochs it holds, drops the rest
            self.metrics.start(self.state.history)
        # overflow is expected on the way to a NaN loss, which is caught and explained: no NumPy warnings
        try:
            with np.errstate(over="ignore", invalid="ignore", divide="ignore", under="ignore"):
                while self.state.epoch < cfg.epochs:
                    self._epoch()
        finally:  # the steps before a failure are worth seeing (a resume drops them)
            if self.metrics is not None:
                self.metrics.close()
        if self.last_eval is None and self.test_data is not None:
            self.last_eval = self.evaluate()
        return {
            "epochs": self.state.epoch,
            "steps": self.state.step,
            "history": self.state.history,
            "eval": self.last_eval,
        }

    def _epoch(self) -> None:
        cfg = self.config
        epoch = self.state.epoch + 1
        order = epoch_order(self.n, self.shuffle_rng if cfg.shuffle else None)
        every = max(1, self.steps_per_epoch // SNAPSHOTS_PER_EPOCH)
        snapshots: list[tuple[int, dict]] = []  # (step in epoch, state before it)
        self.reporter.start_epoch(epoch, cfg.epochs, self.steps_per_epoch)
        t0 = time.perf_counter()
        loss_sum = acc_sum = 0.0
        seen = 0
        mark, mark_seen = t0, 0  # the last step row: its time and examples seen
        lr = cfg.lr
        for i in range(self.steps_per_epoch):
            if i % every == 0:
                snapshots.append((i, self.executor.state_dict()))
            feeds, share, b = self._batch(order, i)
            lr = self.lr(self.state.step)
            try:
                out = self.executor.train_step(feeds, lr, share)
            except NumericsError as e:  # --check-numerics caught it in this very step
                raise self._non_finite(epoch, i, f"a non-finite value appeared: {e.message}", e.loc) from None
            loss = float(out[LOSS_OUTPUT])
            if not math.isfinite(loss):
                self._explain_non_finite(epoch, order, snapshots, i, f"loss became {loss}")
            self.state.step += 1
            loss_sum += loss * b
            if self.has_accuracy:
                acc_sum += float(out["accuracy"]) * b
            seen += b
            now = time.perf_counter()
            accuracy = acc_sum / seen if self.has_accuracy else None
            self.reporter.step(i + 1, loss, seen / max(now - t0, 1e-9), lr, accuracy)
            if self.metrics is not None and self.state.step % self.log_every == 0:
                rate = (seen - mark_seen) / max(now - mark, 1e-9)
                self.metrics.step(epoch, self.state.step, loss, lr, rate, *(() if accuracy is None else (accuracy,)))
                mark, mark_seen = now, seen
        if not _finite(self.executor.params):
            # the last update went non-finite after a finite loss: never checkpoint such a state
            self._explain_non_finite(epoch, order, snapshots, self.steps_per_epoch, "parameters became non-finite")
        seconds = time.perf_counter() - t0
        record = {
            "epoch": epoch,
            "train_loss": loss_sum / seen,
            "steps": self.state.step,
            "lr": lr,
            "epoch_seconds": seconds,
            "examples_per_s": seen / max(seconds, 1e-9),
        }
        if self.has_accuracy:
            record["train_accuracy"] = acc_sum / seen
        if self.test_data is not None:
            self.last_eval = self.evaluate()
            record["test_accuracy"] = self.last_eval.accuracy
        if self.val_data is not None:
            record["val_accuracy"] = accuracy_on(self.executor, self.program, self.val_data, cfg.eval_batch_size).accuracy
        improved = record.get("val_accuracy", -1.0) > best_so_far(self.state.history)
        self.state.epoch = epoch
        self.state.history.append(record)
        if self.metrics is not None:  # before the checkpoint: a resume then never misses this epoch's rows
            self.metrics.epoch(record, sync=bool(cfg.checkpoint))
        if cfg.keep_best and improved and self.world.root:  # before the latest: once the latest holds this
            self.save(best_path(cfg.checkpoint))              # epoch, so does the best (a resume that redoes it saves it again)
        if cfg.checkpoint and self.world.root:
            self.save(cfg.checkpoint)
        self.reporter.end_epoch(record)

    def _explain_non_finite(self, epoch: int, order: np.ndarray, snapshots: list, failed: int, what: str) -> None:
        """Replay from the last finite snapshot with every node checked, to name the first bad node."""
        start, state = next(((i, s) for i, s in reversed(snapshots) if _finite(s)), (None, None))
        if start is None:
            raise self._non_finite(epoch, failed, what, "")
        checker = Executor(self.program, seed=self.config.seed, check_numerics=True, threads=self.config.threads,
                           comm=self.world.comm)
        checker.load_state_dict(state)
        step0 = self.state.step - failed  # the global step at the epoch's first batch
        for i in range(start, min(failed + 1, self.steps_per_epoch)):
            try:
                feeds, share, _ = self._batch(order, i)
                checker.train_step(feeds, self.lr(step0 + i), share)
            except NumericsError as e:
                seen = f" (seen on rank {self.world.rank})" if self.world.size > 1 else ""
                raise self._non_finite(epoch, i, f"{what}; the first non-finite value{seen}: {e.message}", e.loc) from None
        raise self._non_finite(epoch, failed, f"{what} (a checked replay did not find the node)", "")

    def _non_finite(self, epoch: int, step: int, what: str, loc: str) -> NumericsError:
        cfg = self.config
        kept = ""
        if cfg.checkpoint and os.path.exists(cfg.checkpoint):
            kept = f"; the last good checkpoint {cfg.checkpoint} (epoch {self.state.epoch}) is kept"
        return NumericsError(
            f"epoch {epoch}, step {step + 1}: {what}{kept}",
            loc=loc,
            hint="lower the learning rate (--lr) or warm it up (--warmup N)",
        )

    # ------------------------------------------------------------------ evaluation
    def evaluate(self) -> EvalResult:
        """Accuracy and confusion matrix on the test split."""
        if self.test_data is None:
            raise DataError("no test data to evaluate on")
        return accuracy_on(self.executor, self.program, self.test_data, self.config.eval_batch_size)


def _finite(state: Mapping[str, np.ndarray]) -> bool:
    return all(np.isfinite(a).all() for a in state.values() if a.dtype.kind == "f")


def _jsonable(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, (np.floating, np.integer)):
        return value.item()
    return value
