"""--val-split holds out a deterministic part of the training set; --keep-best keeps its best epoch."""

from __future__ import annotations

import numpy as np
import pytest

from tests.runtime.test_trainer import data, models, trainer  # noqa: F401 (fixtures)
from tinyc.ir.errors import CheckpointError, OutputError, TinycError
from tinyc.runtime.checkpoint import load_checkpoint
from tinyc.runtime.evaluation import accuracy_on
from tinyc.runtime.executor import Executor
from tinyc.runtime.validation import best_path, holdout


def test_holdout_is_a_partition_drawn_from_the_seed():
    keep, held = holdout(1000, 0.1, seed=3)
    assert len(held) == 100 and len(keep) == 900
    assert np.array_equal(np.sort(np.concatenate([keep, held])), np.arange(1000))
    assert np.all(np.diff(keep) > 0) and np.all(np.diff(held) > 0)  # each part in the data's order
    again, other = holdout(1000, 0.1, seed=3)[1], holdout(1000, 0.1, seed=4)[1]
    assert np.array_equal(held, again) and not np.array_equal(held, other)


def test_a_split_that_leaves_a_part_empty_is_refused():
    with pytest.raises(TinycError, match="leaves no example to validate on"):
        holdout(10, 0.01, 0)
    with pytest.raises(TinycError, match="none to train on"):
        holdout(10, 0.99, 0)


def test_best_path_sits_beside_the_checkpoint():
    assert best_path("runs/vit.safetensors") == "runs/vit.best.safetensors"
    assert best_path("ckpt") == "ckpt.best"


def test_held_out_examples_are_not_trained_on_and_reported_each_epoch(models, data):  # noqa: F811
    t = trainer(models["sgd"], data, epochs=2, limit=200, val_split=0.25)
    assert t.n == 150 and len(t.val_data["label"]) == 50
    rows = lambda d: {(d["image"][i].tobytes(), int(d["label"][i])) for i in range(len(d["label"]))}
    full = trainer(models["sgd"], data, epochs=2, limit=200).train_data
    assert rows(t.train_data) | rows(t.val_data) == rows(full)
    assert not rows(t.train_data) & rows(t.val_data)
    history = t.fit()["history"]
    assert all(0 <= r["val_accuracy"] <= 1 for r in history) and len(history) == 2


def test_keep_best_holds_the_state_of_the_best_epoch(models, data, tmp_path):  # noqa: F811
    # a high lr: validation accuracy goes up and down (0.88, 0.96, 0.76, 0.86 here), the best is not the latest
    settings = {"limit": 200, "val_split": 0.25, "seed": 3, "lr": 0.3}
    ckpt = tmp_path / "run.safetensors"
    run = trainer(models["sgd"], data, epochs=4, checkpoint=str(ckpt), keep_best=True, **settings)
    history = run.fit()["history"]
    accuracies = [r["val_accuracy"] for r in history]
    best_epoch = accuracies.index(max(accuracies)) + 1  # the first epoch that reached the best
    tensors, meta = load_checkpoint(best_path(str(ckpt)))
    assert meta["epoch"] == best_epoch
    # its weights, evaluated afresh on the held-out examples, give the best accuracy; the latest's do not
    for path, want in ((best_path(str(ckpt)), max(accuracies)), (str(ckpt), accuracies[-1])):
        fresh = Executor(models["sgd"], seed=99)
        fresh.load_weights(path)
        assert accuracy_on(fresh, models["sgd"], run.val_data, 1000).accuracy == want
    # the same run stopped at that epoch (constant lr: the schedule does not depend on the length)
    # ends in exactly the saved state
    short = tmp_path / "short.safetensors"
    trainer(models["sgd"], data, epochs=best_epoch, checkpoint=str(short), **settings).fit()
    want, _ = load_checkpoint(str(short))
    assert sorted(want) == sorted(tensors) and all(np.array_equal(want[k], tensors[k]) for k in want)


def test_keep_best_needs_a_checkpoint_and_a_validation_set(models, data):  # noqa: F811
    with pytest.raises(TinycError, match="--keep-best needs --checkpoint PATH and --val-split F"):
        trainer(models["sgd"], data, keep_best=True, val_split=0.1)
    with pytest.raises(TinycError, match="--val-split must lie between 0 and 1"):
        trainer(models["sgd"], data, val_split=1.5)


@pytest.mark.parametrize("stop", [1, 3])  # before the best epoch (2), and after it
def test_keep_best_across_a_resume_is_the_unbroken_runs(models, data, tmp_path, stop):  # noqa: F811
    settings = {"limit": 200, "val_split": 0.25, "seed": 3, "lr": 0.3, "keep_best": True}  # best: epoch 2 of 4
    whole = tmp_path / "whole.safetensors"
    trainer(models["sgd"], data, epochs=4, checkpoint=str(whole), **settings).fit()
    broken = tmp_path / "broken.safetensors"
    trainer(models["sgd"], data, epochs=stop, checkpoint=str(broken), **settings).fit()
    trainer(models["sgd"], data, epochs=4, checkpoint=str(broken), resume=True, **settings).fit()
    (want, want_meta), (got, got_meta) = load_checkpoint(best_path(str(whole))), load_checkpoint(best_path(str(broken)))
    assert got_meta["epoch"] == want_meta["epoch"] == 2
    assert sorted(got) == sorted(want) and all(np.array_equal(got[k], want[k]) for k in want)


def test_a_resume_with_another_split_is_refused_naming_it(models, data, tmp_path):  # noqa: F811
    ckpt = tmp_path / "run.safetensors"
    trainer(models["sgd"], data, epochs=1, limit=200, checkpoint=str(ckpt)).fit()
    before = ckpt.read_bytes()
    with pytest.raises(CheckpointError) as e:
        trainer(models["sgd"], data, epochs=2, limit=200, checkpoint=str(ckpt), resume=True, val_split=0.25).fit()
    assert "saved for a training set of 200 examples, this run has 150" in e.value.message
    assert "--val-split" in e.value.hint and ckpt.read_bytes() == before


def test_an_earlier_runs_best_checkpoint_is_never_replaced_silently(models, data, tmp_path):  # noqa: F811
    ckpt, best = tmp_path / "run.safetensors", tmp_path / "run.best.safetensors"
    best.write_bytes(b"an earlier run's best epoch")  # its latest checkpoint was deleted, say
    settings = {"epochs": 1, "limit": 200, "val_split": 0.25, "checkpoint": str(ckpt), "keep_best": True}
    with pytest.raises(OutputError, match="--keep-best would replace .*run.best.safetensors, an earlier run's best"):
        trainer(models["sgd"], data, **settings)
    assert best.read_bytes() == b"an earlier run's best epoch" and not ckpt.exists()
    trainer(models["sgd"], data, overwrite=True, **settings).fit()  # --overwrite: replaced by this run's
    assert load_checkpoint(str(best))[1]["epoch"] == 1
