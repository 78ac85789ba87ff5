"""`tinyc predict` and `tinyc export` from the command line: tables, JSON lines, data-set examples,
folders, and every refusal as one line naming the file (sizes, colour, hostile files, missing
extras, raw data without a rule, an output path that is an input)."""

from __future__ import annotations

import json
import sys

import numpy as np
import pytest

from tests.cli.test_bad_input import invoke, one_line_error
from tests.runtime.test_images import png_header
from tests.runtime.test_trainer import write_model, write_synthetic_idx
from tinyc.compiler.driver import compile_file
from tinyc.ir.codec import save_program
from tinyc.ir.numfmt import human_bytes
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
    colour = np.random.default_rng(1).integers(0, 256, (28, 28, 3), dtype=np.uint8)
    Image.fromarray(colour).save(d / "rgb.png")
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
    (["rgb.png"], "rgb.png: a colour image (Pillow mode RGB), but the input takes greyscale images"),
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


def test_a_folder_predicts_its_files_in_name_order(work, tmp_path):
    folder = tmp_path / "digits"
    folder.mkdir()
    (folder / "b.png").write_bytes((work / "a.png").read_bytes())
    (folder / "a.npy").write_bytes((work / "scaled.npy").read_bytes())
    Image.open(work / "a.png").save(folder / "c.jpg")
    (folder / ".DS_Store").write_bytes(b"\0\1")  # hidden files are not inputs
    files = [folder / "a.npy", folder / "b.png", folder / "c.jpg"]
    one_by_one = _json(invoke("predict", work / "mlp.ir", "--weights", work / "w.safetensors", *files, "--json"))
    together = _json(invoke("predict", work / "mlp.ir", "--weights", work / "w.safetensors", folder, "--json"))
    assert [r["input"] for r in together] == [f"{folder / 'a.npy'}[0]", str(folder / "b.png"), str(folder / "c.jpg")]
    assert together == one_by_one


def test_a_folder_with_other_files_is_refused_naming_one(work, tmp_path):
    (tmp_path / "a.png").write_bytes((work / "a.png").read_bytes())
    (tmp_path / "notes.txt").write_text("labels")
    result = invoke("predict", work / "mlp.ir", "--weights", work / "w.safetensors", tmp_path)
    assert one_line_error(result).startswith(f"error: {tmp_path / 'notes.txt'}: not an image (.png, ")
    assert f"hint: predict reads the files directly in {tmp_path}" in result.stderr
    (tmp_path / "notes.txt").unlink()
    (tmp_path / "sub").mkdir()
    line = one_line_error(invoke("predict", work / "mlp.ir", "--weights", work / "w.safetensors", tmp_path))
    assert line == f"error: {tmp_path / 'sub'}: a folder"
    line = one_line_error(invoke("predict", work / "mlp.ir", "--weights", work / "w.safetensors", tmp_path / "sub"))
    assert line == f"error: {tmp_path / 'sub'}: an empty folder"


def _hostile(path, kind):
    x = np.random.default_rng(4).integers(0, 256, (28, 28), dtype=np.uint8)
    if kind == "16-bit":
        Image.fromarray(x.astype(np.uint16) * 257).save(path)
    elif kind == "alpha":
        Image.fromarray(np.dstack([x, x, x, np.where(x > 9, 255, 0).astype(np.uint8)])).save(path)
    elif kind == "1x1":
        Image.fromarray(x[:1, :1]).save(path)
    elif kind == "huge":
        png_header(path, 7000, 6000)  # 42 megapixels, its pixel data a few bytes: decoding it would fail
    elif kind == "truncated":
        Image.fromarray(x).save(path)
        path.write_bytes(path.read_bytes()[:300])
    else:
        path.write_text("hello\n")


@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_an_array_with_nan_or_inf_is_refused_not_classified(work, tmp_path, bad):
    array = np.full((2, 28, 28), 0.5, np.float32)
    array[1, 3, 4] = bad
    np.save(tmp_path / "x.npy", array)
    result = invoke("predict", work / "mlp.ir", "--weights", work / "w.safetensors", tmp_path / "x.npy")
    assert one_line_error(result) == f"error: {tmp_path / 'x.npy'}: the array holds NaN or infinite values"
    assert "nan" not in result.stdout


@pytest.mark.parametrize("kind,words", [
    ("truncated", "cannot read the image (image file is truncated"),
    ("1x1", "the image is 1x1 pixels, but the input takes 28x28"),
    ("16-bit", "the image has 16-bit pixels"),
    ("alpha", "the image has transparent pixels"),
    ("huge", "the image is 7000x6000 pixels, more than the 40,000,000 pixels tinyc decodes"),
    ("text", "cannot read the image (cannot identify image file"),
])
def test_hostile_image_files_are_one_line_errors(work, tmp_path, kind, words):
    path = tmp_path / "x.png"
    _hostile(path, kind)
    before = sorted(p.name for p in work.iterdir())
    line = one_line_error(invoke("predict", work / "mlp.ir", "--weights", work / "w.safetensors", path,
                                 *(["--resize"] if kind == "huge" else [])))
    assert line.startswith(f"error: {path}: {words}"), line
    assert sorted(p.name for p in work.iterdir()) == before and sorted(tmp_path.iterdir()) == [path]


@pytest.mark.parametrize("fmt", ["onnx", "safetensors"])
def test_export_never_overwrites_its_inputs(work, tmp_path, fmt):
    (tmp_path / "alias.ir").symlink_to(work / "mlp.ir")
    kept = {p: p.read_bytes() for p in (work / "mlp.ir", work / "w.safetensors")}
    for out in (work / "mlp.ir", tmp_path / "alias.ir", work / "w.safetensors"):
        result = invoke("export", work / "mlp.ir", "--weights", work / "w.safetensors", "--format", fmt, "-o", out)
        assert one_line_error(result).startswith(f"error: refusing to write -o {out}: it is the input")
    assert {p: p.read_bytes() for p in kept} == kept
    assert sorted(p.name for p in tmp_path.iterdir()) == ["alias.ir"]  # no temporary file left


RGB_MODEL = """\
import tinyc as tc
from tinyc.models import Linear, softmax_cross_entropy


def model():
    image = tc.input("image", ("B", 8, 8, 3), scale=1 / 255)
    label = tc.input("label", ("B",), dtype="i64")
    logits = Linear("fc", 192, 4)(image.reshape("B", 192))
    return tc.Train(softmax_cross_entropy(logits, label), outputs={"logits": logits})
"""


def test_an_rgb_input_reads_colour_files_and_grey_ones_in_every_channel(tmp_path):
    (tmp_path / "rgb.py").write_text(RGB_MODEL)
    program = compile_file(str(tmp_path / "rgb.py"), "model")[0]
    save_program(program, tmp_path / "rgb.ir")
    Executor(program, seed=1).save_weights(str(tmp_path / "w.safetensors"))
    rng = np.random.default_rng(6)
    colour, grey = rng.integers(0, 256, (8, 8, 3), dtype=np.uint8), rng.integers(0, 256, (8, 8), dtype=np.uint8)
    Image.fromarray(colour).save(tmp_path / "colour.png")
    Image.fromarray(grey).save(tmp_path / "grey.png")
    np.save(tmp_path / "arrays.npy", np.stack([colour, np.repeat(grey[..., None], 3, axis=-1)]))
    args = ("predict", tmp_path / "rgb.ir", "--weights", tmp_path / "w.safetensors", "--json", "--batch-size", 1)
    files = _json(invoke(*args, tmp_path / "colour.png", tmp_path / "grey.png"))
    arrays = _json(invoke(*args, tmp_path / "arrays.npy"))
    assert [r["logits"] for r in files] == [r["logits"] for r in arrays]
    assert files[0]["logits"] != files[1]["logits"]


def test_export_into_a_device_claims_no_size_it_cannot_know(work, tmp_path):
    # a device's or pipe's st_size is 0 (onto `>> log`: the whole log's), not what was written into it
    result = invoke("export", work / "mlp.ir", "--weights", work / "w.safetensors", "-o", "/dev/null")
    assert result.exit_code == 0, result.stderr
    assert result.stdout.strip() == "wrote /dev/null: 4 weight tensors of mlp.py"
    result = invoke("export", work / "mlp.ir", "--weights", work / "w.safetensors", "-o", tmp_path / "w.safetensors")
    size = (tmp_path / "w.safetensors").stat().st_size
    assert result.exit_code == 0 and result.stdout.strip().endswith(f"({human_bytes(size)})"), result.stdout


def test_an_npz_data_set_is_read_by_the_input_s_name_as_run_reads_it(work, tmp_path):
    # its arrays are named by the user: the input's field is bound by name (as `tinyc run` binds
    # it), and a missing one is one line naming the fields, not an internal KeyError
    x = np.load(work / "raw.npy")  # a.png's pixels are x[0]
    labels = np.array([3, 4], np.int64)
    np.savez(tmp_path / "ok.npz", train_image=x, train_label=labels, test_image=x, test_label=labels)
    got = _json(invoke("predict", work / "mlp.ir", "--weights", work / "w.safetensors", "--data",
                       f"npz:{tmp_path / 'ok.npz'}", "--index", "0", "--json"))
    png = _json(invoke("predict", work / "mlp.ir", "--weights", work / "w.safetensors", work / "a.png", "--json"))
    assert got[0]["logits"] == png[0]["logits"] and got[0]["label"] == 3
    np.savez(tmp_path / "other.npz", train_pixels=x, train_label=labels, test_pixels=x, test_label=labels)
    result = invoke("predict", work / "mlp.ir", "--weights", work / "w.safetensors", "--data",
                    f"npz:{tmp_path / 'other.npz'}")
    assert one_line_error(result) == (f"error: program input 'image' has no field in data set "
                                      f"npz:{tmp_path / 'other.npz'} (fields: pixels, label)")


def test_a_data_set_fetched_first_leaves_stdout_to_the_predictions(work, tmp_path, monkeypatch):
    # `tinyc predict --data mnist --json | jq`: the notice before a fetch goes to stderr
    from tests.cli.test_run import fake_mnist_fetch

    labels = fake_mnist_fetch(monkeypatch, tmp_path / "cache", 20)
    result = invoke("predict", work / "mlp.ir", "--weights", work / "w.safetensors", "--data", "mnist",
                    "--index", "0:3", "--json")
    assert [r["label"] for r in _json(result)] == labels[:3].tolist()
    assert result.stderr.startswith("fetching MNIST")


def test_export_takes_the_format_from_the_suffix_in_any_case(work, tmp_path):
    onnx = pytest.importorskip("onnx")
    result = invoke("export", work / "mlp.ir", "--weights", work / "w.safetensors", "-o", tmp_path / "m.ONNX")
    assert result.exit_code == 0, result.stderr
    assert [o.name for o in onnx.load(str(tmp_path / "m.ONNX")).graph.output] == ["logits"]
