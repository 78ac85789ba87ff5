"""A predict output may be a gradient (a saliency map: `tc.grad` of the model's answer with respect
to its input), so a predict entry holds backward ops; `tinyc export --format onnx` exports them and
ONNX Runtime gives both outputs as tinyc does, at batch 1 and 7."""

from __future__ import annotations

import numpy as np
import pytest

from tests.cli.test_bad_input import invoke
from tinyc.compiler.driver import compile_file
from tinyc.ir.codec import save_program
from tinyc.runtime.executor import Executor

ort = pytest.importorskip("onnxruntime")

# smooth everywhere (no ReLU, no max): rounding cannot flip which branch a gradient takes
MODEL = """\
import tinyc as tc
from tinyc.models import LayerNorm, Linear, softmax_cross_entropy


def model():
    image = tc.input("image", ("B", 28, 28), scale=1 / 255)
    label = tc.input("label", ("B",), dtype="i64")
    h = LayerNorm("norm", 16)(Linear("fc1", 784, 16)(image.reshape("B", 784)))
    logits = Linear("fc2", 16, 10)(tc.layer_norm(h))
    entropy = -tc.sum(tc.softmax(logits) * tc.log_softmax(logits))
    (saliency,) = tc.grad(entropy, [image])
    return tc.Train(softmax_cross_entropy(logits, label), outputs={"logits": logits, "saliency": saliency},
                    optimizer=tc.optim.SGD(lr=0.1))
"""


def test_a_gradient_output_exports_and_runs_the_same_in_onnx_runtime(tmp_path):
    (tmp_path / "saliency.py").write_text(MODEL)
    program = compile_file(str(tmp_path / "saliency.py"), "model")[0]
    ops = {n.op for n in program.entry("predict").graph.nodes}
    assert {"softmax_grad", "log_softmax_grad", "layer_norm_grad", "layer_norm_grad_scaled"} <= ops, ops
    save_program(program, tmp_path / "s.ir")
    ex = Executor(program, seed=0)
    rng = np.random.default_rng(0)
    for _ in range(2):
        ex.train_step({"image": rng.integers(0, 256, (8, 28, 28), dtype=np.uint8), "label": rng.integers(0, 10, 8)},
                      lr=0.1)
    ex.save_weights(str(tmp_path / "w.safetensors"))
    result = invoke("export", tmp_path / "s.ir", "--weights", tmp_path / "w.safetensors", "-o", tmp_path / "s.onnx")
    assert result.exit_code == 0, result.stderr
    session = ort.InferenceSession(str(tmp_path / "s.onnx"), providers=["CPUExecutionProvider"])
    names = [o.name for o in session.get_outputs()]
    for batch in (1, 7):
        x = rng.integers(0, 256, (batch, 28, 28), dtype=np.uint8)
        ours = ex.predict({"image": x})
        theirs = dict(zip(names, session.run(None, {"image": x})))
        for name in ("logits", "saliency"):
            assert theirs[name].shape == ours[name].shape
            scale = np.abs(ours[name]).max()
            assert scale > 0 and np.abs(theirs[name] - ours[name]).max() <= 1e-5 * scale, name
