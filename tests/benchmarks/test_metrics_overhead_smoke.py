"""The metrics-overhead benchmark runs end to end (one small round) and reports each way as a ratio."""

from __future__ import annotations

import os
import re
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def test_three_ways_each_with_a_ratio_to_the_run_without_metrics():
    cmd = [sys.executable, os.path.join(ROOT, "benchmarks", "metrics_overhead.py"), "--rounds", "1",
           "--examples", "256", "--threads", "1"]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120, cwd=ROOT, check=False)
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert lines[0] == "mlp: 256 examples, 4 steps per epoch, 1 rounds (median), 1 thread"
    rows = {m.group(1).strip(): [float(x) for x in m.groups()[1:]]
            for m in (re.match(r"(.{28})\s*([\d.]+)\s+([\d.]+)\s+([\d.]+)$", line) for line in lines[2:]) if m}
    assert list(rows) == ["no metrics file", "default rows (~100/epoch)", "a row every step"]
    assert rows["no metrics file"][2] == 1.0
    assert all(seconds > 0 and ms_per_step > 0 and ratio > 0 for seconds, ms_per_step, ratio in rows.values())
