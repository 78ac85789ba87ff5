"""The main job in miniature: compile the real ViT example, train it with `tinyc run` on a few
thousand synthetic images, evaluate the checkpoint with `tinyc eval` (no network, no MNIST)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
from typer.testing import CliRunner

from tests.runtime.test_trainer import write_idx
from tinyc.cli.main import app

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


def glyph_images(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Class c is a 7x7 glyph (one of ten fixed random ones) stamped into 4 random cells of the
    4x4 patch grid, on noise: what a patch-based, mean-pooled classifier can learn quickly."""
    glyphs = np.random.default_rng(1234).random((10, 7, 7)) > 0.5
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 10, n)
    images = rng.integers(0, 60, (n, 28, 28))
    for i, c in enumerate(labels):
        for cell in rng.choice(16, 4, replace=False):
            r, k = 7 * (cell // 4), 7 * (cell % 4)
            images[i, r:r + 7, k:k + 7] += 190 * glyphs[c]
    return images.astype(np.uint8), labels.astype(np.uint8)


def invoke(*args):
    result = CliRunner().invoke(app, [str(a) for a in args])
    assert result.exit_code == 0, (result.stdout, result.stderr)
    return result


def test_vit_example_learns_far_above_chance(tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    for prefix, n, seed in (("train", 2000, 0), ("t10k", 500, 1)):
        images, labels = glyph_images(n, seed)
        write_idx(data / f"{prefix}-images-idx3-ubyte", images)
        write_idx(data / f"{prefix}-labels-idx1-ubyte", labels)
    program, ckpt, metrics = tmp_path / "vit.ir", tmp_path / "vit.safetensors", tmp_path / "m.jsonl"
    invoke("compile", EXAMPLES / "vit_mnist.py", "-o", program)
    # the example's own optimizer (Adam) and schedule (cosine); warmup shortened to the tiny run
    invoke("run", program, "--data", f"idx:{data}", "--epochs", "2", "--warmup", "10",
           "--checkpoint", ckpt, "--metrics-out", metrics)
    records = [r for r in map(json.loads, metrics.read_text().splitlines()) if r["kind"] == "epoch"]
    assert [r["epoch"] for r in records] == [1, 2]
    assert records[-1]["test_accuracy"] > 0.6, records  # chance is 10%
    assert records[-1]["train_loss"] < records[0]["train_loss"]

    evaluated = invoke("eval", program, "--weights", ckpt, "--data", f"idx:{data}")
    shown = float(re.search(r"accuracy\D*([0-9.]+)\s*%", evaluated.stdout).group(1)) / 100
    assert abs(shown - records[-1]["test_accuracy"]) < 1e-3
