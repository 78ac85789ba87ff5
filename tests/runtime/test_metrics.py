"""The metrics file: step rows every --log-every steps, epoch rows, buffered writes, resume without duplicates."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest

from tests.runtime.test_trainer import data, models, trainer  # noqa: F401 (fixtures)
from tinyc.ir.errors import OutputError
from tinyc.runtime.metrics import MetricsLog, default_log_every, read_rows
from tinyc.runtime.trainer import TIMING_KEYS


def rows(path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def untimed(path) -> list[dict]:
    return [{k: v for k, v in r.items() if k not in TIMING_KEYS} for r in rows(path)]


def test_step_rows_every_n_steps_then_the_epoch_row(models, data, tmp_path):  # noqa: F811
    out = tmp_path / "m.jsonl"
    # 96 examples in batches of 32: 3 steps per epoch; a row every 2 steps -> global steps 2, 4, 6
    summary = trainer(models["sgd"], data, epochs=2, limit=96, metrics_out=str(out), log_every=2).fit()
    got = rows(out)
    assert [(r["kind"], r["epoch"], r.get("step", r.get("steps"))) for r in got] == [
        ("step", 1, 2), ("epoch", 1, 3), ("step", 2, 4), ("step", 2, 6), ("epoch", 2, 6)]
    step = got[0]
    assert set(step) == {"kind", "epoch", "step", "loss", "lr", "examples_per_s", "accuracy"}
    assert step["lr"] == 0.1 and step["examples_per_s"] > 0 and 0 <= step["accuracy"] <= 1
    assert [r for r in got if r["kind"] == "epoch"][-1]["train_loss"] == summary["history"][-1]["train_loss"]


def test_step_losses_are_the_steps_losses(models, data, tmp_path):  # noqa: F811
    # every step logged, batches of equal size: the epoch's train loss is the mean of its step rows
    out = tmp_path / "m.jsonl"
    trainer(models["sgd"], data, epochs=1, limit=128, metrics_out=str(out), log_every=1).fit()
    got = rows(out)
    losses = [r["loss"] for r in got if r["kind"] == "step"]
    assert len(losses) == 4 and len(set(losses)) == 4
    assert np.isclose(np.mean(losses), got[-1]["train_loss"], rtol=1e-12)


def test_step_rows_hold_what_the_executor_returned(models, data, tmp_path):  # noqa: F811
    # every loss the executor returns, as it returned it, recorded beside the trainer
    out = tmp_path / "m.jsonl"
    t = trainer(models["adam"], data, epochs=2, limit=160, batch_size=32, metrics_out=str(out), log_every=3)
    returned = []  # (loss, accuracy, lr) of each step, in order
    real_step = t.executor.train_step

    def recording_step(feeds, lr, *args):
        result = real_step(feeds, lr, *args)
        returned.append((float(result["loss"]), float(result["accuracy"]), lr))
        return result

    t.executor.train_step = recording_step
    t.fit()
    steps = [r for r in rows(out) if r["kind"] == "step"]
    assert len(returned) == 10 and [r["step"] for r in steps] == [3, 6, 9]  # 5 steps per epoch, a row every 3
    for r in steps:
        loss, _, lr = returned[r["step"] - 1]
        assert r["loss"] == loss and r["lr"] == lr  # bit for bit, through the JSON text
        first = (r["epoch"] - 1) * 5  # accuracy: the epoch's running mean so far (equal batches of 32)
        assert r["accuracy"] == pytest.approx(np.mean([a for _, a, _ in returned[first:r["step"]]]), rel=1e-12)
    assert len({r["lr"] for r in steps}) == 3  # warmup and cosine: each row's lr is its own step's, not a neighbour's


def test_default_is_about_a_hundred_rows_per_epoch():
    assert default_log_every(938) == 9 and default_log_every(50) == 1 and default_log_every(100_000) == 1000


def test_rows_are_buffered_until_the_epoch_ends(tmp_path):
    out = tmp_path / "m.jsonl"
    log = MetricsLog(str(out))
    log.start([])
    for i in range(50):
        log.step(1, i + 1, 0.5, 0.1, 1000.0)
    assert out.read_text() == ""  # nothing formatted or written per step
    log.epoch({"epoch": 1, "train_loss": 0.5})
    assert [r["kind"] for r in rows(out)] == ["step"] * 50 + ["epoch"]


def test_rows_are_fsynced_before_each_checkpoint_and_only_then(models, data, tmp_path, monkeypatch):  # noqa: F811
    # an fsync can cost a busy disk most of a second: one per epoch, and only where a resume depends on it
    synced = []  # what each fsync was for, in order: "metrics" or another file (the checkpoint's, its folder)
    real = os.fsync

    def spy(fd):
        synced.append("metrics" if os.fstat(fd).st_ino == metrics_inode() else "other")
        return real(fd)

    monkeypatch.setattr(os, "fsync", spy)
    out = tmp_path / "m.jsonl"
    metrics_inode = lambda: out.stat().st_ino if out.exists() else -1
    trainer(models["sgd"], data, epochs=2, limit=64, metrics_out=str(out)).fit()
    assert synced == [] and len(rows(out)) > 2  # no checkpoint: written, never synced
    out = tmp_path / "m2.jsonl"
    trainer(models["sgd"], data, epochs=2, limit=64, metrics_out=str(out), checkpoint=str(tmp_path / "c.st")).fit()
    assert synced.count("metrics") == 2 and synced[0] == "metrics"  # each epoch's rows, then its checkpoint
    assert synced[synced.index("metrics", 1) - 1] == "other"


def test_resume_appends_without_duplicates_even_after_a_torn_epoch(models, data, tmp_path):  # noqa: F811
    settings = {"limit": 96, "log_every": 1}
    ref = tmp_path / "ref.jsonl"
    trainer(models["sgd"], data, epochs=3, metrics_out=str(ref), **settings).fit()

    out, ckpt = tmp_path / "m.jsonl", tmp_path / "c.safetensors"
    trainer(models["sgd"], data, epochs=2, metrics_out=str(out), checkpoint=str(ckpt), **settings).fit()
    # a run that died in epoch 3 after writing some of its rows, the last one torn
    with open(out, "a") as f:
        f.write(json.dumps({"kind": "step", "epoch": 3, "step": 7, "loss": 9.9}) + "\n" + '{"kind": "st')
    trainer(models["sgd"], data, epochs=3, metrics_out=str(out), checkpoint=str(ckpt), resume=True, **settings).fit()
    assert untimed(out) == untimed(ref)
    assert [r["step"] for r in read_rows(str(out)) if r["kind"] == "step"] == list(range(1, 10))


def test_an_earlier_runs_rows_need_resume_or_overwrite(models, data, tmp_path):  # noqa: F811
    out = tmp_path / "m.jsonl"
    out.write_text('{"kind": "epoch", "epoch": 7}\n')
    with pytest.raises(OutputError, match=f"--metrics-out {out} already holds a run's rows"):
        trainer(models["sgd"], data, epochs=1, limit=64, metrics_out=str(out))
    # --resume without a checkpoint to continue starts from scratch: it would drop the rows too
    with pytest.raises(OutputError, match="already holds"):
        trainer(models["sgd"], data, epochs=1, limit=64, metrics_out=str(out), resume=True,
                checkpoint=str(tmp_path / "none.safetensors"))
    assert out.read_text() == '{"kind": "epoch", "epoch": 7}\n'
    trainer(models["sgd"], data, epochs=1, limit=64, metrics_out=str(out), overwrite=True).fit()
    assert [r["epoch"] for r in rows(out) if r["kind"] == "epoch"] == [1]


def test_a_run_interrupted_in_its_first_epoch_is_resumed(models, data, tmp_path):  # noqa: F811
    # Ctrl-C before the first checkpoint: the rows written so far are of an epoch no checkpoint
    # holds, and `--resume` of that run's checkpoint continues it (it was refused as another run's rows)
    settings = {"limit": 96, "log_every": 1, "epochs": 2}
    ref = tmp_path / "ref.jsonl"
    trainer(models["sgd"], data, metrics_out=str(ref), **settings).fit()

    out, ckpt = tmp_path / "m.jsonl", tmp_path / "c.safetensors"
    t = trainer(models["sgd"], data, metrics_out=str(out), checkpoint=str(ckpt), **settings)
    real_step, calls = t.executor.train_step, []

    def interrupted(*args, **kwargs):
        calls.append(1)
        if len(calls) == 3:
            raise KeyboardInterrupt
        return real_step(*args, **kwargs)

    t.executor.train_step = interrupted
    with pytest.raises(KeyboardInterrupt):
        t.fit()
    assert not ckpt.exists() and [r["step"] for r in rows(out)] == [1, 2]  # the rows before the interrupt
    trainer(models["sgd"], data, metrics_out=str(out), checkpoint=str(ckpt), resume=True, **settings).fit()
    assert untimed(out) == untimed(ref)


def test_a_resumed_run_writes_into_a_fifo_without_reading_it(models, data, tmp_path):  # noqa: F811
    # a FIFO (`--metrics-out >(jq -c .)`) or a terminal has no earlier rows to keep: reading one
    # waited for a writer that never came (the run itself), and the run hung before its first step
    import threading

    settings = {"limit": 96, "log_every": 1}
    ref = tmp_path / "ref.jsonl"
    trainer(models["sgd"], data, epochs=2, metrics_out=str(ref), **settings).fit()
    ckpt = tmp_path / "c.safetensors"
    trainer(models["sgd"], data, epochs=1, checkpoint=str(ckpt), **settings).fit()
    fifo = tmp_path / "m.fifo"
    os.mkfifo(fifo)
    got: list[bytes] = []
    reader = threading.Thread(target=lambda: got.append(fifo.read_bytes()), daemon=True)  # jq's part
    reader.start()
    resumed = trainer(models["sgd"], data, epochs=2, metrics_out=str(fifo), checkpoint=str(ckpt), resume=True,
                      **settings)
    run = threading.Thread(target=resumed.fit, daemon=True)
    run.start()
    run.join(timeout=120)
    hung = run.is_alive()
    if hung:  # let both threads go: a writer's open and close ends every read of the FIFO
        os.close(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK))
    assert not hung, "the resumed run hung on its metrics FIFO"
    reader.join(timeout=60)
    (tmp_path / "got.jsonl").write_bytes(got[0])
    # the epoch rows from the checkpoint's history, then the new epoch's rows as an unbroken run wrote them
    want = [r for r in untimed(ref) if not (r["kind"] == "step" and r["epoch"] == 1)]
    assert untimed(tmp_path / "got.jsonl") == want and len(want) >= 3
