"""The data-parallel benchmark runs end to end (seed, two steps, no torch) and reports sane numbers."""

from __future__ import annotations

import json
import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def test_data_parallel_benchmark_json():
    cmd = [sys.executable, os.path.join(ROOT, "benchmarks", "data_parallel.py"), "--config", "seed", "--steps", "2",
           "--warmup", "0", "--rounds", "1", "--no-torch", "--json"]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300, cwd=ROOT, check=False)
    assert proc.returncode == 0, proc.stderr
    (row,) = json.loads(proc.stdout.strip().splitlines()[-1])
    systems = row["systems"]
    assert set(systems) == {"1 proc x 2 thr", "1 proc, no dp pass", "2 ranks x 1 thr"}
    for s in systems.values():
        assert s["ms"] > 0 and s["examples_s"] > 0
    # the same model, weights and global batch: the same first loss on one process and on two ranks
    assert abs(systems["2 ranks x 1 thr"]["loss0"] - systems["1 proc x 2 thr"]["loss0"]) < 1e-5
    assert systems["1 proc, no dp pass"]["loss0"] == systems["1 proc x 2 thr"]["loss0"]
    assert systems["2 ranks x 1 thr"]["allreduce_ms"] > 0 and row["grad_bytes"] > 0
    assert [r["ranks"] for r in row["scaling"]] == [1, 2, 4, 8, 16, 32, 64]
