"""`tinyc predict` and `tinyc export` from the command line: tables, JSON lines, data-set examples,
and every refusal as one line naming the file (sizes, colour, missing extras, raw data without a rule)."""

from __future__ import annotations

import json
import sys

import numpy as np
import pytest

from tests.cli.test_bad_input import invoke, one_line_error
from tests.runtime.test_trainer import write_model, write_synthetic_idx
from tinyc.compiler.driver import compile_file
from tinyc.ir.codec import save_program
from tinyc.runtime.executor import Executor

Image = pytest.importorskip("PIL.Image")


@pytest.fixture(scope="module")
def work(tmp_path_factory):
    """A small MLP that declares no preprocessing, its weights, a data set and some images."""
    d = tmp_path_factory.mktemp("predict")
    program = compile_file(str(write_model(d)), "model")[0]
    save_program(program, d / "mlp.ir")
    Executor(program, seed=3).save_weights(str(d / "w.safetensors"))
    write_synthetic_idx(d / "data", 60, 20)
    x = np.random.default_rng(0).integers(0, 256, (2, 28, 28), dtype=np.uint8)
    Image.fromarray(x[0]).save(d / "a.png")
    Image.fromarray(x[0]).resize((40, 30)).save(d / "wide.png")
    Image.fromarray(x[0]).convert("RGB").save(d / "rgb.png")
    np.save(d / "raw.npy", x)
    np.save(d / "scaled.npy", x[:1].astype(np.float32) / np.float32(255))  # batch 1, as the PNG: same GEMM
    return d


def _json(result) -> list[dict]:
    assert result.exit_code == 0, result.stderr
    return [json.loads(line) for line in result.stdout.splitlines()]


def test_images_without_a_declared_rule_are_pixels_and_raw_arrays_are_refused(work):
    png = _json(invoke("predict", work / "mlp.ir", "--weights", work / "w.safetensors", work / "a.png", "--json"))
    scaled = _json(invoke("predict", work / "mlp.ir", "--weights", work / "w.safetensors", work / "scaled.npy", "--json"))
    assert png[0]["logits"] == scaled[0]["logits"]  # an image file's pixels are x / 255, as a data set's
    line = one_line_error(invoke("predict", work / "mlp.ir", "--weights", work / "w.safetensors", work / "raw.npy"))
    assert line == "error: input 'image' is f32[B,28,28] and declares no preprocessing, but got uint8 data"


def test_table_of_data_set_examples_with_labels(work):
    result = invoke("predict", work / "mlp.ir", "--weights", work / "w.safetensors", "--data", f"idx:{work / 'data'}",
                    "--index", "2:5", "--top", "2")
    assert result.exit_code == 0, result.stderr
    header, _rule, *rows = result.stdout.splitlines()
    assert header.split() == ["input", "label", "#1", "#2"] and len(rows) == 3
    assert rows[0].startswith(f"idx:{work / 'data'} test #2")
    records = _json(invoke("predict", work / "mlp.ir", "--weights", work / "w.safetensors", "--data",
                           f"idx:{work / 'data'}", "--index", "4", "--json", "--top", "10"))
    assert len(records) == 1 and isinstance(records[0]["label"], int)
    assert abs(sum(t["probability"] for t in records[0]["top"]) - 1) < 1e-9
    assert np.argmax(records[0]["logits"]) == records[0]["top"][0]["class"]


@pytest.mark.parametrize("args,words", [
    (["wide.png"], "wide.png: the image is 40x30 pixels, but the input takes 28x28"),
    (["rgb.png"], "rgb.png: a RGB image, but the input takes greyscale images"),
    (["nothing.txt"], "nothing.txt: not an image"),
    (["--data", "idx:{data}", "--index", "99"], "--index 99: not N or A:B within the 20 examples"),
    ([], "nothing to predict"),
])
def test_refusals_are_one_line(work, args, words):
    (work / "nothing.txt").write_text("x")
    args = [a.format(data=work / "data") if a.startswith("idx:") else (work / a if a.endswith((".png", ".txt")) else a)
            for a in args]
    line = one_line_error(invoke("predict", work / "mlp.ir", "--weights", work / "w.safetensors", *args))
    assert words in line, line


def test_resize_and_grey_convert_when_asked(work):
    records = _json(invoke("predict", work / "mlp.ir", "--weights", work / "w.safetensors", work / "wide.png",
                           work / "rgb.png", "--resize", "--grey", "--json"))
    assert [r["input"] for r in records] == [str(work / "wide.png"), str(work / "rgb.png")]


def test_missing_extras_say_which_to_install(work, monkeypatch):
    monkeypatch.setitem(sys.modules, "PIL", None)  # import PIL now fails
    line = one_line_error(invoke("predict", work / "mlp.ir", "--weights", work / "w.safetensors", work / "a.png"))
    assert line == "error: reading image files needs Pillow"
    monkeypatch.setitem(sys.modules, "onnx", None)
    result = invoke("export", work / "mlp.ir", "--weights", work / "w.safetensors", "-o", work / "m.onnx")
    assert one_line_error(result) == "error: exporting to ONNX needs the onnx package"
    assert "pip install 'tinyc[onnx]'" in result.stderr and not (work / "m.onnx").exists()


def test_export_refuses_weights_of_another_model(work, tmp_path):
    other = compile_file(str(write_model(tmp_path, hidden=16)), "model")[0]
    Executor(other).save_weights(str(tmp_path / "other.safetensors"))
    line = one_line_error(invoke("export", work / "mlp.ir", "--weights", tmp_path / "other.safetensors",
                                 "-o", tmp_path / "out.onnx"))
    assert "parameter 'fc1.w' is float32[784, 16] in the checkpoint but float32[784, 32] in the program" in line
    assert not (tmp_path / "out.onnx").exists()
