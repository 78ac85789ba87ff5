"""Killing `tinyc run` at any moment loses at most the epoch in progress.

A real `python -m tinyc run` process (a tiny model, many short epochs, so that checkpoints are
written all the time) is SIGKILLed at seeded random moments. After every kill the checkpoint on
disk, if there is one, must load; `--resume` must carry on; and the final parameters and metrics
must equal an uninterrupted run's, bit for bit. Ctrl-C (SIGINT) must exit 130 with one line.
"""

from __future__ import annotations

import json
import os
import random
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from tests.runtime.test_trainer import TIMING_KEYS, write_model, write_synthetic_idx
from tinyc.runtime.checkpoint import load_checkpoint

EPOCHS = 60
KILLS = 5
ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def setup(tmp_path_factory) -> dict:
    d = tmp_path_factory.mktemp("crash")
    data = write_synthetic_idx(d / "data", n_train=200, n_test=50)
    write_model(
        d,
        "tiny.py",
        hidden=8,
        epochs=EPOCHS,
        batch_size=32,
        optimizer="tc.optim.Adam(lr=0.01)",
        extra='schedule="cosine", warmup=4',
    )
    subprocess.run(
        [sys.executable, "-m", "tinyc", "compile", str(d / "tiny.py"), "-o", str(d / "tiny.ir")],
        check=True,
        capture_output=True,
        cwd=ROOT,
        timeout=60,
    )
    return {"dir": d, "program": d / "tiny.ir", "data": f"idx:{data}"}


def start(setup: dict, ckpt: Path, metrics: Path, *extra: str) -> subprocess.Popen:
    cmd = [
        sys.executable,
        "-m",
        "tinyc",
        "run",
        str(setup["program"]),
        "--data",
        setup["data"],
        "--limit",
        "64",
        "--checkpoint",
        str(ckpt),
        "--metrics-out",
        str(metrics),
        *extra,
    ]
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    # A shell without job control starts background jobs with SIGINT ignored, and children inherit
    # that: give the child the default disposition, so that Python turns SIGINT into Ctrl-C.
    return subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))  # noqa: PLW1509  (no lock taken in the child)


def untimed(path: Path) -> list[dict]:
    return [
        {k: v for k, v in json.loads(line).items() if k not in TIMING_KEYS} for line in path.read_text().splitlines()
    ]


def test_sigkill_at_random_moments_then_resume_is_exact(setup):
    d = setup["dir"]
    ref_ckpt, ref_metrics = d / "ref.safetensors", d / "ref.jsonl"
    ref = start(setup, ref_ckpt, ref_metrics)
    assert ref.stdout.readline().startswith("training ")  # start-up done: the header comes just before epoch 1
    t0 = time.monotonic()
    _, err = ref.communicate(timeout=120)
    assert ref.returncode == 0, err
    span = time.monotonic() - t0  # how long the training itself takes on this machine

    ckpt, metrics = d / "c.safetensors", d / "c.jsonl"
    rng = random.Random(1234)
    per_epoch = span / EPOCHS
    epochs_seen = [0]
    for target in sorted(rng.sample(range(1, EPOCHS - 2), KILLS)):
        proc = start(setup, ckpt, metrics, "--resume")
        # wait for the end of epoch `target` (or a later one), then kill within the next epoch and a
        # half: at a random phase of training, evaluating or writing the checkpoint and the metrics
        target = max(target, epochs_seen[-1] + 1)
        for line in proc.stdout:
            done = re.match(r"epoch (\d+)/\d+:", line)
            if done and int(done.group(1)) >= target:
                break
        time.sleep(rng.uniform(0.0, 1.5) * per_epoch)
        proc.send_signal(signal.SIGKILL)
        proc.communicate(timeout=60)
        _, meta = load_checkpoint(str(ckpt))  # never half-written: loads after every kill
        epochs_seen.append(meta["epoch"])
    assert epochs_seen == sorted(epochs_seen)  # a kill never sets progress back
    assert epochs_seen[-1] < EPOCHS  # the kills came during the run, not after it

    final = start(setup, ckpt, metrics, "--resume")
    _out, err = final.communicate(timeout=120)
    assert final.returncode == 0, err
    want, want_meta = load_checkpoint(str(ref_ckpt))
    got, got_meta = load_checkpoint(str(ckpt))
    assert got_meta["epoch"] == want_meta["epoch"] == EPOCHS
    assert sorted(got) == sorted(want)
    for name in want:
        assert np.array_equal(got[name], want[name]), name  # bit for bit, optimizer state included
    assert untimed(metrics) == untimed(ref_metrics)  # every epoch once, same numbers
    assert not [name for name in os.listdir(d) if name.endswith(".tmp")]  # killed writes were cleaned up


def test_ctrl_c_keeps_the_last_checkpoint(setup, tmp_path):
    ckpt, metrics = tmp_path / "c.safetensors", tmp_path / "m.jsonl"
    proc = start(setup, ckpt, metrics, "--epochs", "100000")  # still running when the signal comes
    try:
        deadline = time.monotonic() + 60
        while not ckpt.exists() and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.02)
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=60)
    finally:
        proc.kill()
    assert proc.returncode == 130, (out, err)
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith(f"interrupted; last checkpoint {ckpt} (epoch ")
    assert "Traceback" not in err
    epoch = load_checkpoint(str(ckpt))[1]["epoch"]
    assert lines[0].startswith(f"interrupted; last checkpoint {ckpt} (epoch {epoch}) kept")
