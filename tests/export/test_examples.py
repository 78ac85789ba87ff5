"""The three example models after a few training steps: `tinyc export --format onnx` run by ONNX
Runtime gives the logits of `tinyc predict`; a PNG predicts as its array does; raw uint8 pixels
through the Python API give what the declared scaling of them gives; weights-only files round trip.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from safetensors.numpy import load_file
from typer.testing import CliRunner

from tinyc.cli.main import app
from tinyc.compiler.driver import compile_file
from tinyc.ir.codec import save_program
from tinyc.ir.errors import DataError
from tinyc.runtime.checkpoint import save_checkpoint
from tinyc.runtime.executor import Executor

ort = pytest.importorskip("onnxruntime")
Image = pytest.importorskip("PIL.Image")

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
NAMES = ("mlp_mnist", "seed_transformer", "vit_mnist")


def invoke(*args):
    result = CliRunner().invoke(app, [str(a) for a in args])
    assert result.exit_code == 0, (result.stdout, result.stderr)
    return result


def pixels(n: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (n, 28, 28), dtype=np.uint8)


@pytest.fixture(scope="module", params=NAMES)
def trained(request, tmp_path_factory):
    """(folder, program path, checkpoint path, executor) of an example after 3 steps on raw uint8 data."""
    d = tmp_path_factory.mktemp(request.param)
    program = compile_file(str(EXAMPLES / f"{request.param}.py"), "model")[0]
    save_program(program, d / "m.ir")
    ex = Executor(program, seed=0)
    labels = np.random.default_rng(1).integers(0, 10, 16)
    for step in range(3):
        ex.train_step({"image": pixels(16, step), "label": labels}, lr=0.01)
    save_checkpoint(str(d / "ckpt.safetensors"), ex.state_dict(), {"epoch": 1, "weights": ex.weight_names})
    return d, d / "m.ir", d / "ckpt.safetensors", ex


def _predict_json(ir: Path, ckpt: Path, *inputs) -> list[dict]:
    out = invoke("predict", ir, "--weights", ckpt, *inputs, "--json", "--top", "3").stdout
    return [json.loads(line) for line in out.splitlines()]


def test_onnx_runtime_gives_the_logits_of_tinyc_predict(trained):
    d, ir, ckpt, _ = trained
    invoke("export", ir, "--weights", ckpt, "--format", "onnx", "-o", d / "m.onnx")
    session = ort.InferenceSession(str(d / "m.onnx"), providers=["CPUExecutionProvider"])
    (onnx_input,) = session.get_inputs()
    assert onnx_input.name == "image" and onnx_input.type == "tensor(uint8)" and onnx_input.shape[0] == "B"
    for batch in (1, 7):
        x = pixels(batch, 10 + batch)
        np.save(d / f"x{batch}.npy", x)
        ours = np.array([r["logits"] for r in _predict_json(ir, ckpt, d / f"x{batch}.npy")], np.float32)
        theirs = session.run(None, {"image": x})[0]
        assert theirs.shape == ours.shape == (batch, 10)
        assert np.abs(theirs - ours).max() <= 1e-5 * np.abs(ours).max()
        assert np.ptp(ours) > 1e-3  # trained weights, not a constant answer


def test_a_png_predicts_as_its_array(trained):
    d, ir, ckpt, _ = trained
    x = pixels(1, 5)
    Image.fromarray(x[0]).save(d / "digit.png")
    np.save(d / "digit.npy", x[0])  # one example, no batch dim
    png, npy = _predict_json(ir, ckpt, d / "digit.png"), _predict_json(ir, ckpt, d / "digit.npy")
    assert [r["input"] for r in png + npy] == [str(d / "digit.png"), str(d / "digit.npy")]
    assert png[0]["logits"] == npy[0]["logits"] and png[0]["top"] == npy[0]["top"]
    probabilities = [t["probability"] for t in png[0]["top"]]
    assert probabilities == sorted(probabilities, reverse=True) and 0 < sum(probabilities) <= 1 + 1e-9


def test_raw_pixels_through_the_python_api_are_scaled_by_the_declared_rule(trained):
    _, _, _, ex = trained
    x = pixels(5, 3)
    raw = ex.predict({"image": x})["logits"]
    scaled = ex.predict({"image": x.astype(np.float32) / np.float32(255)})["logits"]
    np.testing.assert_array_equal(raw, scaled)
    as_f64 = ex.predict({"image": x.astype(np.float64) / 255})["logits"]  # float64 is cast
    np.testing.assert_allclose(as_f64, scaled, rtol=1e-6, atol=1e-6)
    with pytest.raises(DataError) as e:  # pixels as floats but not scaled: the trap
        ex.predict({"image": x.astype(np.float32)})
    assert e.value.message.startswith("input 'image': float32 values from ") and "x / 255" in e.value.message


def test_weights_only_export_round_trips(trained):
    d, ir, ckpt, ex = trained
    result = invoke("export", ir, "--weights", ckpt, "-o", d / "w.safetensors")
    assert result.stdout.startswith(f"wrote {d / 'w.safetensors'}: {len(ex.weight_names)} weight tensors")
    saved = load_file(str(d / "w.safetensors"))
    assert sorted(saved) == sorted(ex.weight_names)  # no optimizer state
    fresh = Executor(ex.program, seed=5)
    fresh.load_weights(str(d / "w.safetensors"))
    x = pixels(3, 9)
    np.testing.assert_array_equal(fresh.predict({"image": x})["logits"], ex.predict({"image": x})["logits"])
