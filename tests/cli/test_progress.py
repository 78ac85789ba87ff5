"""Progress: the whole run's remaining time and the running train accuracy, on log lines and the bar."""

from __future__ import annotations

import pytest

from tinyc.cli import progress
from tinyc.cli.progress import PlainReporter, RichReporter, RunClock, epoch_line


class FakeTime:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock(monkeypatch) -> FakeTime:
    fake = FakeTime()
    monkeypatch.setattr(progress.time, "perf_counter", fake)
    return fake


def test_eta_covers_the_whole_run_not_the_epoch(clock):
    run = RunClock()
    run.start_epoch(1, 3, 100)  # 300 steps in all
    assert run.eta(0) == "-"
    clock.now += 10.0  # 50 steps in 10 s: 0.2 s a step
    assert run.eta(50) == "50s"  # 250 steps left in the run (not 50 in the epoch)
    clock.now += 12.0  # the rest of epoch 1 and its evaluation
    run.start_epoch(2, 3, 100)
    clock.now += 8.0
    assert run.eta(50) == "30s"  # 150 steps in 30 s (evaluation included), 150 left


def test_a_resumed_run_measures_from_where_it_started(clock):
    run = RunClock()
    run.start_epoch(3, 4, 10)  # epochs 1-2 came from a checkpoint: not timed here
    clock.now += 5.0
    assert run.eta(5) == "15s"  # 5 steps in 5 s, 15 left


def test_plain_lines_show_running_accuracy_and_run_eta(clock, capsys):
    r = PlainReporter()
    r.start_epoch(1, 2, 10)
    for step in range(1, 11):
        clock.now += 1.0
        r.step(step, 0.5, 64.0, 0.01, accuracy=step / 20)
    r.end_epoch({"epoch": 1, "train_loss": 1.3e28, "train_accuracy": 0.5, "epoch_seconds": 10.0,
                 "examples_per_s": 64.0})
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == ("epoch 1/2  step 1/10 (10%)  loss 0.5000  accuracy 5.00%  lr 0.01  64 ex/s  run ETA 19s")
    assert all("run ETA" in line for line in lines)
    assert lines[-1].endswith("train loss 1.3e+28, train accuracy 50.00%, 10.0 s (64 ex/s), run ETA 10s")


def test_last_epoch_line_has_no_eta():
    record = {"epoch": 2, "train_loss": float("nan"), "epoch_seconds": 1.0, "examples_per_s": 10.0}
    assert epoch_line(record, 2, "5s") == "epoch 2/2: train loss nan, 1.0 s (10 ex/s)"


def test_the_bar_shows_run_eta_and_accuracy(clock):
    r = RichReporter()
    assert any("run ETA" in getattr(c, "text_format", "") for c in r.progress.columns)
    r.start_epoch(1, 2, 10)
    clock.now += 2.0
    r.step(4, 0.25, 128.0, 0.1, accuracy=0.75)
    fields = r.progress.tasks[0].fields
    r.close()
    assert fields["acc"] == "  acc 75.00%" and fields["loss"] == "0.2500" and fields["eta"] == "8s"  # 0.5 s a step, 16 left
