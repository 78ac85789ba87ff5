"""The train-step benchmark runs end to end (tinyc only, two steps) and reports sane numbers."""

from __future__ import annotations

import json
import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
KEYS = ("tinyc_ms", "tinyc_examples_s", "tinyc_rss_mib", "limit_ms", "compile_s", "matmul_gflop", "matmul_gflops_rate")


def test_seed_benchmark_json():
    cmd = [sys.executable, os.path.join(ROOT, "benchmarks", "train_step.py"), "--config", "seed", "--steps", "2",
           "--warmup", "0", "--rounds", "1", "--no-torch", "--json"]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120, cwd=ROOT, check=False)
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert result["config"] == "seed"
    for key in ("config", "tinyc_ms", "torch_ms", "ratio", "tinyc_rss_mib", "torch_rss_mib", "limit_ms"):
        assert key in result
    for key in KEYS:
        assert isinstance(result[key], (int, float)) and result[key] > 0, key
    assert 0 < result["tinyc_loss0"] < 10  # a 10-class cross-entropy near log(10) at init
    assert result["torch_ms"] is None and result["ratio"] is None  # --no-torch
