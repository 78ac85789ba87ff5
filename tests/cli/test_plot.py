"""`tinyc plot`: a real image from synthetic metrics files, and the errors around it."""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path

import numpy as np
import pytest

from tests.cli.test_cli import error_lines, invoke
from tests.cli.test_run import work  # noqa: F401 (fixture)
from tinyc.cli.plot_cmd import DPI, SIZE_IN, draw, smooth
from tinyc.runtime.metrics import read_rows

pytest.importorskip("matplotlib")  # the `plot` extra; CI installs it


def write_metrics(path: Path, epochs: int = 3, steps: int = 50, scale: float = 1.0, seed: int = 0) -> Path:
    rng = np.random.default_rng(seed)
    rows = []
    for e in range(1, epochs + 1):
        for s in range((e - 1) * steps + 1, e * steps + 1):
            loss = scale * 2.3 * math.exp(-s / 40) + 0.05 * rng.random()
            rows.append({"kind": "step", "epoch": e, "step": s, "loss": loss, "lr": 0.01 * (1 - s / (epochs * steps)),
                         "examples_per_s": 5000.0})
        rows.append({"kind": "epoch", "epoch": e, "steps": e * steps, "train_loss": 0.3 / e,
                     "test_accuracy": 0.9 + 0.02 * e, "val_accuracy": 0.88 + 0.02 * e})
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def test_png_of_the_expected_size_and_not_blank(tmp_path):
    a = write_metrics(tmp_path / "a.jsonl")
    b = write_metrics(tmp_path / "b.jsonl", scale=0.5, seed=1)
    out = tmp_path / "curves.png"
    result = invoke("plot", a, b, "-o", out)
    assert result.exit_code == 0, result.output
    assert result.stdout.strip() == f"wrote {out}: 2 runs"
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    from matplotlib.image import imread

    pixels = imread(out)
    assert pixels.shape[:2] == (round(SIZE_IN[1] * DPI), round(SIZE_IN[0] * DPI))
    rgb = pixels[..., :3]
    assert rgb.std() > 0.05  # not one flat colour
    # both runs are drawn: tab10's first two colours (blue, orange) both appear
    for colour in ((0.12, 0.47, 0.71), (1.0, 0.5, 0.05)):
        assert (np.abs(rgb - colour).max(axis=-1) < 0.05).sum() > 100, colour


def test_svg_by_suffix(tmp_path):
    out = tmp_path / "curves.svg"
    assert invoke("plot", write_metrics(tmp_path / "a.jsonl"), "-o", out).exit_code == 0
    text = out.read_text()
    assert text.lstrip().startswith("<?xml") and "<svg" in text and "learning rate" in text


def test_bad_suffix_and_bad_file_are_one_line_errors(tmp_path):
    metrics = write_metrics(tmp_path / "a.jsonl")
    result = invoke("plot", metrics, "-o", tmp_path / "c.jpg")
    assert result.exit_code == 2 and error_lines(result)[0] == f"error: {tmp_path / 'c.jpg'}: the plot's format comes from its suffix: .png or .svg"
    empty = tmp_path / "empty.jsonl"
    empty.write_text("not json\n")
    result = invoke("plot", empty, "-o", tmp_path / "c.png")
    assert result.exit_code == 2 and "no metrics rows" in error_lines(result)[0]
    assert "Traceback" not in result.output and not (tmp_path / "c.png").exists()


def test_the_panels_hold_the_files_series(tmp_path):
    a, b = write_metrics(tmp_path / "a.jsonl"), write_metrics(tmp_path / "b.jsonl", epochs=2, scale=0.5, seed=1)
    rows = {p.stem: [json.loads(line) for line in p.read_text().splitlines()] for p in (a, b)}
    ax_loss, ax_acc, ax_lr = draw({name: read_rows(str(tmp_path / f"{name}.jsonl")) for name in rows}).axes
    for i, (name, got) in enumerate(rows.items()):
        steps = [r for r in got if r["kind"] == "step"]
        epochs = [r for r in got if r["kind"] == "epoch"]
        raw, smoothed = ax_loss.get_lines()[2 * i: 2 * i + 2]
        assert list(raw.get_xdata()) == [r["step"] for r in steps] and list(raw.get_ydata()) == [r["loss"] for r in steps]
        assert smoothed.get_label() == name and list(smoothed.get_ydata()) == smooth([r["loss"] for r in steps])
        test, val = ax_acc.get_lines()[2 * i: 2 * i + 2]
        assert (test.get_label(), val.get_label(), val.get_linestyle()) == (f"{name} test", f"{name} val", "--")
        assert list(test.get_xdata()) == [r["epoch"] for r in epochs]
        assert list(test.get_ydata()) == pytest.approx([100 * r["test_accuracy"] for r in epochs])
        assert list(val.get_ydata()) == pytest.approx([100 * r["val_accuracy"] for r in epochs])
        lr = ax_lr.get_lines()[i]
        assert lr.get_label() == name and list(lr.get_ydata()) == [r["lr"] for r in steps]
    assert ax_loss.get_yscale() == "log"  # every loss > 0


def test_a_torn_last_line_is_left_out(tmp_path):
    whole = write_metrics(tmp_path / "a.jsonl")
    (tmp_path / "torn").mkdir()
    torn = tmp_path / "torn" / "a.jsonl"  # the same name: the same label in the legend
    torn.write_text(whole.read_text() + '{"kind": "step", "epoch": 4, "st')  # a crash in mid-write
    assert invoke("plot", torn, "-o", tmp_path / "torn.png").exit_code == 0
    assert invoke("plot", whole, "-o", tmp_path / "whole.png").exit_code == 0
    assert (tmp_path / "torn.png").read_bytes() == (tmp_path / "whole.png").read_bytes()


@pytest.mark.parametrize("content", [
    b'{"name": "other tool", "value": 3}\n{"epoch": 1, "loss": 0.5}\n',  # JSON lines, but no field tinyc plots
    b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR\xff\xfe",  # an image, not text
    b"",
])
def test_a_file_that_is_not_a_metrics_file_is_one_line(tmp_path, content):
    other = tmp_path / "other.jsonl"
    other.write_bytes(content)
    result = invoke("plot", other, "-o", tmp_path / "c.png")
    assert result.exit_code == 2 and "Traceback" not in result.output
    assert error_lines(result) == [f"error: {other}: no metrics rows (is it a file of `tinyc run --metrics-out`?)"]
    assert not (tmp_path / "c.png").exists() and other.read_bytes() == content


def test_the_input_is_never_the_output(tmp_path):
    metrics = write_metrics(tmp_path / "a.jsonl")
    shown_as_png = tmp_path / "a.png"
    shown_as_png.write_bytes(metrics.read_bytes())
    for out in (shown_as_png, tmp_path / "." / "a.png"):
        result = invoke("plot", shown_as_png, "-o", out)
        assert result.exit_code == 2 and "is the input" in error_lines(result)[0]
    assert shown_as_png.read_bytes() == metrics.read_bytes()
    result = invoke("plot", tmp_path / "missing.jsonl", "-o", tmp_path / "c.png")
    assert result.exit_code == 2 and error_lines(result) == [f"error: {tmp_path / 'missing.jsonl'}: No such file or directory"]


def test_without_matplotlib_says_how_to_get_it(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # import matplotlib -> ImportError
    result = invoke("plot", write_metrics(tmp_path / "a.jsonl"), "-o", tmp_path / "c.png")
    assert result.exit_code == 2
    assert error_lines(result) == ["error: tinyc plot needs matplotlib", 'hint: pip install "tinyc[plot]"']


def test_run_plot_without_matplotlib_fails_before_training(work, tmp_path, monkeypatch):  # noqa: F811
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    metrics, ckpt = tmp_path / "m.jsonl", tmp_path / "c.safetensors"
    result = invoke("run", work / "mlp.ir", "--data", f"idx:{work / 'data'}", "--limit", 96, "--metrics-out", metrics,
                    "--checkpoint", ckpt, "--plot", tmp_path / "c.png")
    assert result.exit_code == 2 and "epoch 1" not in result.output
    assert error_lines(result) == ["error: tinyc plot needs matplotlib", 'hint: pip install "tinyc[plot]"']
    assert not metrics.exists() and not ckpt.exists()


def test_smoothing_is_debiased_and_follows_the_data():
    assert smooth([4.0, 4.0, 4.0]) == pytest.approx([4.0, 4.0, 4.0])  # a constant stays put (no pull to 0)
    s = smooth([1.0] * 10 + [0.0] * 200)
    assert s[9] == pytest.approx(1.0) and s[-1] < 0.01


def test_run_redraws_the_plot_each_epoch(work, tmp_path):  # noqa: F811
    metrics, out = tmp_path / "m.jsonl", tmp_path / "curves.png"
    result = invoke("run", work / "mlp.ir", "--data", f"idx:{work / 'data'}", "--limit", 96, "--epochs", 2,
                    "--metrics-out", metrics, "--plot", out)
    assert result.exit_code == 0, result.output
    from matplotlib.image import imread

    assert imread(out)[..., :3].std() > 0.05


def test_run_plot_needs_the_metrics_file(work, tmp_path):  # noqa: F811
    result = invoke("run", work / "mlp.ir", "--data", f"idx:{work / 'data'}", "--plot", tmp_path / "c.png")
    assert result.exit_code == 2
    assert error_lines(result)[0] == "error: --plot draws from the metrics file: add --metrics-out FILE"
    # it reads the file back after each epoch: a device or pipe cannot be read back
    result = invoke("run", work / "mlp.ir", "--data", f"idx:{work / 'data'}", "--plot", tmp_path / "c.png",
                    "--metrics-out", "/dev/null")
    assert result.exit_code == 2 and error_lines(result) == [
        "error: --plot draws from the metrics file, and --metrics-out /dev/null is a device or pipe",
        "hint: give --metrics-out a regular file"], result.output
    assert not (tmp_path / "c.png").exists()


def test_the_docs_image_is_a_small_png_of_the_plot_size():
    # docs/curves.png is `tinyc plot`'s output (reduced to a palette for the README): its size is the plot's
    from matplotlib.image import imread

    docs = Path(__file__).resolve().parents[2] / "docs" / "curves.png"
    assert docs.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and docs.stat().st_size < 64 * 1024
    assert imread(docs).shape[:2] == (round(SIZE_IN[1] * DPI), round(SIZE_IN[0] * DPI))
