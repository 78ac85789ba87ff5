"""Thread control: which count wins (argument > $TINYC_NUM_THREADS > affinity // share), bad
values refused in one line, and the count really reaching BLAS while a step runs."""

from __future__ import annotations

import threading

import pytest
from threadpoolctl import threadpool_info

from tests.runtime.test_executor import _batch, _classifier
from tinyc.ir.errors import TinycError
from tinyc.runtime import Executor, threads
from tinyc.runtime.kernels import KERNELS
from tinyc.runtime.threads import ENV_VAR, available_cores, blas_thread_count, blas_threads, resolve_threads


@pytest.fixture
def cores(monkeypatch):
    """Pretend the process may run on 6 cores, with no $TINYC_NUM_THREADS."""
    monkeypatch.setattr(threads.os, "sched_getaffinity", lambda pid: {0, 1, 2, 3, 4, 5}, raising=False)
    monkeypatch.delenv(ENV_VAR, raising=False)
    return monkeypatch


def test_default_is_the_affinity_split_among_sharers(cores):
    assert available_cores() == 6
    assert resolve_threads() == 6
    assert resolve_threads(share=2) == 3
    assert resolve_threads(share=4) == 1
    assert resolve_threads(share=12) == 1  # never below one thread


def test_environment_beats_affinity_and_argument_beats_environment(cores):
    cores.setenv(ENV_VAR, " 3 ")
    assert resolve_threads() == 3
    assert resolve_threads(share=2) == 3  # an explicit setting is per process: not split
    assert resolve_threads(5) == 5
    cores.setenv(ENV_VAR, "")
    assert resolve_threads() == 6  # empty: unset


@pytest.mark.parametrize("value", ["0", "-1", "two", "1.5", "2x", "\u00b2"])  # "²" is a digit to str.isdigit, not to int()
def test_bad_environment_value_is_one_line(cores, value):
    cores.setenv(ENV_VAR, value)
    with pytest.raises(TinycError) as err:
        resolve_threads()
    assert err.value.message == f"{ENV_VAR}={value!r} is not a whole number >= 1"
    assert resolve_threads(2) == 2  # an explicit count does not read the variable


@pytest.mark.parametrize("value", [0, -2, 1.5, True, "2"])
def test_bad_argument_is_refused(cores, value):
    with pytest.raises(TinycError, match=f"threads must be a whole number >= 1, got {value!r}"):
        resolve_threads(value)


def test_a_count_past_four_per_core_is_refused_before_any_thread_starts(cores):
    """--threads 1000000 used to start threads until the system refused one (an internal error)."""
    assert resolve_threads(64) == 64 and resolve_threads(24) == 24  # 6 cores: at most max(64, 24)
    before = threading.active_count()
    with pytest.raises(TinycError) as err:
        resolve_threads(10**6)
    assert err.value.message == "threads 1000000 is more than 64 (4 per core of the 6 this process may use, at least 64)"
    cores.setenv(ENV_VAR, "65")
    with pytest.raises(TinycError, match=f"{ENV_VAR} 65 is more than 64"):
        resolve_threads()
    assert threading.active_count() == before


def _blas_counts() -> list[int]:
    return [lib["num_threads"] for lib in threadpool_info() if lib["user_api"] == "blas"]


def test_blas_threads_applies_and_restores():
    before = _blas_counts()
    assert before, "NumPy's BLAS is not visible to threadpoolctl"
    with blas_threads(1):
        assert _blas_counts() == [1] * len(before)
        assert blas_thread_count() == 1
    assert _blas_counts() == before


@pytest.fixture(scope="module")
def program():
    return _classifier()


@pytest.mark.parametrize("n", [1, 2])
def test_executor_steps_run_blas_single_threaded(monkeypatch, program, n):
    """Inside a step BLAS has one thread whatever the executor's count (its pool runs BLAS calls
    side by side, parallel.py); after the step the process's own setting is back."""
    seen = []
    real = KERNELS["relu"]

    def spy(*args, **kwargs):
        seen.append(_blas_counts())
        return real(*args, **kwargs)

    monkeypatch.setitem(KERNELS, "relu", spy)  # read when the instruction list is built
    before = _blas_counts()
    ex = Executor(program, threads=n)
    assert ex.threads == n
    ex.train_step(_batch(8))
    assert seen and all(counts == [1] * len(before) for counts in seen)
    assert _blas_counts() == before


def test_executor_default_follows_the_environment(monkeypatch, program):
    monkeypatch.setenv(ENV_VAR, "1")
    assert Executor(program).threads == 1
    monkeypatch.setenv(ENV_VAR, "zero")
    with pytest.raises(TinycError, match=ENV_VAR):
        Executor(program)


def test_overlapping_steps_in_threads_restore_the_setting_once_all_end():
    before = _blas_counts()
    with blas_threads(1):
        with blas_threads(1):  # a second executor's step, in another thread, overlapping
            assert _blas_counts() == [1] * len(before)
        assert _blas_counts() == [1] * len(before)  # the first is still running
    assert _blas_counts() == before
