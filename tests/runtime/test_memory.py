"""A run's memory is counted before anything is allocated, and refused when the machine lacks it."""

from __future__ import annotations

import tracemalloc

import numpy as np
import pytest

from tests.runtime.test_trainer import synthetic_images, write_model
from tinyc.compiler.driver import compile_file
from tinyc.ir.errors import ResourceError
from tinyc.ir.numfmt import human_bytes
from tinyc.runtime import memory
from tinyc.runtime.executor import Executor
from tinyc.runtime.trainer import RunConfig, Trainer


@pytest.fixture(scope="module")
def program(tmp_path_factory):
    folder = tmp_path_factory.mktemp("memory")
    return compile_file(str(write_model(folder, hidden=64, optimizer="tc.optim.Adam()")))[0]


def test_the_count_covers_what_a_step_allocates(program):
    need = memory.run_memory(program, batch_size=32, eval_batch_size=50)
    executor = Executor(program)
    params = sum(a.nbytes for k, a in executor.state_dict().items() if k in executor.weight_names)
    state = sum(a.nbytes for k, a in executor.state_dict().items() if k not in executor.weight_names)
    assert (need["parameters"], need["optimizer state"]) == (params, state) and state >= 2 * params  # Adam: m, v
    images, labels = synthetic_images(32, 0)
    feeds = {"image": images.astype(np.float32) / 255, "label": labels}
    tracemalloc.start()
    executor.train_step(feeds, lr=1e-3)
    allocated = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    counted = need["train_step buffers at batch 32"]
    # a lower bound (a run is refused only when it surely cannot fit), within 2x of the real peak:
    # kernels' temporaries come on top of the arena, the inputs and the unplanned values counted
    assert counted <= allocated <= 2 * counted


def test_a_run_that_does_not_fit_is_refused_before_allocating(program, monkeypatch):
    images, labels = synthetic_images(64, 0)
    train = {"image": images.astype(np.float32) / 255, "label": labels}
    monkeypatch.setattr(memory, "available_memory", lambda: 1 << 20)
    monkeypatch.setattr(Executor, "__init__", lambda *a, **k: pytest.fail("allocated"))
    with pytest.raises(ResourceError) as err:
        Trainer(program, train, None, RunConfig(batch_size=32))
    text = err.value.message
    assert text.startswith("this run needs ") and "the machine has 1.0 MiB available" in text
    need = memory.run_memory(program, 32, RunConfig().eval_batch_size)
    for what, n in need.items():
        assert f"{what} {human_bytes(n)}" in text, (what, text)
