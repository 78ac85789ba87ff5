"""The training loop on N simulated ranks (LocalComm): the run of one process with the same global
batch, uneven last batches, rank-0-only outputs, start-up refusals, resume on another world size."""

from __future__ import annotations

import numpy as np
import pytest

from tests.runtime.test_trainer import untimed, write_model, write_synthetic_idx
from tinyc.compiler.driver import compile_file
from tinyc.ir.errors import TinycError
from tinyc.runtime.checkpoint import load_checkpoint
from tinyc.runtime.comm import LocalComm, run_ranks
from tinyc.runtime.datasets import load_dataset
from tinyc.runtime.trainer import RunConfig, Trainer


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    # 250 examples at batch 32: a last batch of 26, split 9/9/8 on three ranks
    return load_dataset(f"idx:{write_synthetic_idx(tmp_path_factory.mktemp('idx'), n_train=250, n_test=101)}")


@pytest.fixture(scope="module")
def program(tmp_path_factory):
    return compile_file(str(write_model(tmp_path_factory.mktemp("m"), hidden=16)))[0]


def train(program, data, world: int, **overrides):
    """fit() on `world` LocalComm ranks; (summary, executor state) of every rank."""
    def rank(comm):
        config = RunConfig.from_program(program, rank=comm.rank, **overrides)
        t = Trainer(program, data["train"], data["test"], config, comm=comm)
        return t.fit(), t.executor.state_dict()

    if world == 1:
        config = RunConfig.from_program(program, **overrides)
        t = Trainer(program, data["train"], data["test"], config)
        return [(t.fit(), t.executor.state_dict())]
    return run_ranks(LocalComm.world(world), rank)


def test_ranks_follow_the_one_process_run(program, data):
    one = train(program, data, 1, epochs=2)[0]
    three = train(program, data, 3, epochs=2)
    for summary, state in three[1:]:  # every rank holds the same global metrics and weights
        assert untimed(summary["history"]) == untimed(three[0][0]["history"])
        for k in state:
            np.testing.assert_array_equal(state[k], three[0][1][k])
    got, want = three[0][0]["history"], one[0]["history"]
    for g, w in zip(got, want):
        assert g["train_loss"] == pytest.approx(w["train_loss"], rel=1e-4)
        assert abs(g["test_accuracy"] - w["test_accuracy"]) <= 0.005
    ev, ev1 = three[0][0]["eval"], one[0]["eval"]
    assert ev.examples == ev1.examples == len(data["test"])  # sharded 34/34/33 and summed
    assert abs(int(np.trace(ev.confusion)) - int(np.trace(ev1.confusion))) <= 1


def test_two_local_ranks_are_bitwise_reproducible(program, data):
    a, b = train(program, data, 2, epochs=1), train(program, data, 2, epochs=1)
    assert untimed(a[0][0]["history"]) == untimed(b[0][0]["history"])
    for k in a[0][1]:
        np.testing.assert_array_equal(a[0][1][k], b[0][1][k])


def test_only_rank_zero_writes(program, data, tmp_path):
    ckpt, metrics = tmp_path / "c.safetensors", tmp_path / "m.jsonl"
    seen = []

    def rank(comm):
        config = RunConfig.from_program(program, rank=comm.rank, epochs=1, checkpoint=str(ckpt),
                                        metrics_out=str(metrics))
        t = Trainer(program, data["train"], data["test"], config, comm=comm)
        seen.append((comm.rank, t.metrics is not None))
        return t.fit()

    run_ranks(LocalComm.world(2), rank)
    assert sorted(seen) == [(0, True), (1, False)]
    assert load_checkpoint(str(ckpt))[1]["world_size"] == 2
    assert metrics.read_text().count('"epoch": 1') >= 1


def test_resume_on_another_world_size(program, data, tmp_path):
    ckpt = tmp_path / "c.safetensors"
    full = train(program, data, 2, epochs=2)
    train(program, data, 2, epochs=1, checkpoint=str(ckpt))
    # resumed on the same world size: the uninterrupted run bit for bit; on another: the same run up to rounding
    again = train(program, data, 2, epochs=2, checkpoint=str(ckpt), resume=True)
    assert untimed(again[0][0]["history"]) == untimed(full[0][0]["history"])
    for k in full[0][1]:
        np.testing.assert_array_equal(again[0][1][k], full[0][1][k])
    train(program, data, 2, epochs=1, checkpoint=str(tmp_path / "d.safetensors"))
    one = train(program, data, 1, epochs=2, checkpoint=str(tmp_path / "d.safetensors"), resume=True)
    assert one[0][0]["history"][1]["train_loss"] == pytest.approx(full[0][0]["history"][1]["train_loss"], rel=1e-4)


def test_a_rank_left_without_examples_is_refused_at_start(program, data, tmp_path):
    ckpt = tmp_path / "c.safetensors"

    def rank(comm):  # the Trainer alone, no fit(): the refusal comes before any step
        config = RunConfig.from_program(program, rank=comm.rank, epochs=1, limit=65, checkpoint=str(ckpt))
        return Trainer(program, data["train"], data["test"], config, comm=comm)

    with pytest.raises(TinycError, match=r"3 ranks need at least 3 examples in every batch, but the last batch \(1 example\)") as info:
        run_ranks(LocalComm.world(3), rank)  # batches of 32, 32 and 1
    assert getattr(info.value, "every_rank", False)
    assert not ckpt.exists()


def test_ranks_with_other_settings_are_refused(program, data):
    def rank(comm):
        config = RunConfig.from_program(program, rank=comm.rank, epochs=1, lr=0.1 if comm.rank == 0 else 0.2)
        return Trainer(program, data["train"], data["test"], config, comm=comm)

    with pytest.raises(TinycError, match="the ranks disagree on the settings: rank 0 has .*'lr': 0.1.* rank 1 has"):
        run_ranks(LocalComm.world(2), rank)


def test_ranks_with_other_data_are_refused(program, data, tmp_path):
    smaller = load_dataset(f"idx:{write_synthetic_idx(tmp_path, n_train=200, n_test=101)}")

    def rank(comm):
        config = RunConfig.from_program(program, rank=comm.rank, epochs=1)
        train = data["train"] if comm.rank == 0 else smaller["train"]
        return Trainer(program, train, data["test"], config, comm=comm)

    with pytest.raises(TinycError, match="the ranks disagree on the training set size: rank 0 has 250, rank 1 has 200") as info:
        run_ranks(LocalComm.world(2), rank)
    assert getattr(info.value, "every_rank", False)


def test_a_checkpoint_that_does_not_fit_is_refused_on_every_rank(program, data, tmp_path):
    other = compile_file(str(write_model(tmp_path, "other.py", hidden=8)))[0]
    ckpt = str(tmp_path / "c.safetensors")
    train(other, data, 1, epochs=1, checkpoint=ckpt)
    failures = []

    def rank(comm):
        config = RunConfig.from_program(program, rank=comm.rank, epochs=2, checkpoint=ckpt, resume=True)
        try:
            Trainer(program, data["train"], data["test"], config, comm=comm).fit()
        except TinycError as e:
            failures.append((comm.rank, type(e).__name__, getattr(e, "every_rank", False)))

    run_ranks(LocalComm.world(2), rank)  # no rank waits for another: each refuses the checkpoint itself
    assert sorted(failures) == [(0, "CheckpointError", True), (1, "CheckpointError", True)]


def test_a_non_finite_step_is_replayed_on_every_rank_and_names_the_rank(tmp_path, data):
    from tests.runtime.test_trainer import EXPLODING, EXPLODING_LINE
    from tinyc.ir.errors import NumericsError

    (tmp_path / "exploding.py").write_text(EXPLODING)
    program = compile_file(str(tmp_path / "exploding.py"))[0]
    with pytest.raises(NumericsError) as info:
        train(program, data, 2, epochs=3)
    message = str(info.value)
    assert "epoch 2" in message and "the first non-finite value (seen on rank " in message and "exp" in message
    assert info.value.loc == f"exploding.py:{EXPLODING_LINE}"


def test_the_failing_rank_s_error_is_raised_not_the_abort_it_caused_elsewhere():
    # rank 0 waits in a collective that rank 1's failure breaks; like the executor, rank 0 wraps
    # the BrokenBarrierError in an error of its own: that wrapped abort must not hide the cause
    def fn(comm):
        if comm.rank == 1:
            raise ValueError("the real failure")
        try:
            comm.Barrier()
        except Exception as e:
            raise TinycError("allreduce failed") from e

    with pytest.raises(ValueError, match="the real failure"):
        run_ranks(LocalComm.world(2), fn)
