"""The compile driver: model files to Programs, deterministic bytes, and errors at the user's line."""

from __future__ import annotations

import os
import textwrap

import numpy as np
import pytest

from tinyc.compiler.driver import compile_file, trace_model_file
from tinyc.ir import codec
from tinyc.ir.errors import ModelFileError, ShapeError
from tinyc.runtime import Executor

MODEL = textwrap.dedent("""
    import tinyc as tc
    import helper_layers

    def model():
        x = tc.input("x", ("B", 4))
        y = tc.input("y", ("B",), "i64")
        h = helper_layers.dense("l1", x, 8)
        logits = h @ tc.param("out", (8, 3), tc.init.xavier_uniform())
        loss = tc.softmax_cross_entropy(logits, y)
        acc = tc.cast(tc.equal(tc.argmax(logits), y), "f32").mean()
        return tc.Train(loss, outputs={"logits": logits, "acc": acc},
                        optimizer=tc.optim.AdamW(lr=0.01), batch_size=16, schedule="cosine", warmup=2)
""")
HELPER = textwrap.dedent("""
    import tinyc as tc

    def dense(name, x, n):
        with tc.scope(name):
            w = tc.param("w", (x.shape[-1], n), tc.init.xavier_uniform())
            return tc.relu(x @ w + tc.param("b", (n,)))
""")


@pytest.fixture
def model_file(tmp_path):
    (tmp_path / "helper_layers.py").write_text(HELPER)
    path = tmp_path / "mymodel.py"
    path.write_text(MODEL)
    return str(path)


def test_model_file_compiles_and_trains(model_file):
    program, stats = compile_file(model_file)
    assert set(program.entries) == {"train_step", "predict"} and set(stats) == {"train_step", "predict"}
    train = program.entries["train_step"]
    predict = program.entries["predict"]
    assert [name for name, _ in train.graph.outputs] == ["loss", "logits", "acc"]
    assert [name for name, _ in predict.graph.outputs] == ["logits"]  # acc needs the labels
    assert [i.name for i in predict.graph.inputs] == ["x"]
    assert train.plan.peak_bytes > 0 and "memplan" not in train.graph.meta
    assert program.meta["data_inputs"] == ["x"] and program.meta["label_inputs"] == ["y"]
    assert program.meta["model"] == "mymodel.py" and program.meta["optimizer"]["kind"] == "adamw"
    assert program.meta["train"]["schedule"] == "cosine" and program.meta["train"]["batch_size"] == 16
    assert any(n.loc.startswith("mymodel.py:") for n in train.graph.nodes)
    assert any(n.loc.startswith("helper_layers.py:") for n in train.graph.nodes)
    ex = Executor(program)
    rng = np.random.default_rng(0)
    feeds = {"x": rng.normal(size=(16, 4)).astype(np.float32), "y": rng.integers(0, 3, 16)}
    losses = [ex.train_step(feeds, lr=0.05)["loss"] for _ in range(30)]
    assert losses[-1] < losses[0]
    assert ex.predict({"x": feeds["x"]})["logits"].shape == (16, 3)


def test_compiling_twice_gives_identical_bytes(model_file):
    first = codec.encode_program(compile_file(model_file)[0])
    second = codec.encode_program(compile_file(model_file)[0])
    assert first == second
    assert codec.encode_program(codec.decode_program(first)) == first


def test_regression_labels_are_float_inputs(tmp_path):
    path = tmp_path / "reg.py"
    path.write_text(textwrap.dedent("""
        import tinyc as tc

        def model():
            x, y = tc.input("x", ("B", 3)), tc.input("y", ("B", 1))
            pred = x @ tc.param("w", (3, 1))
            return tc.Train(((pred - y) * (pred - y)).mean(), outputs={"pred": pred})
    """))
    program, _ = compile_file(str(path))
    assert program.meta["label_inputs"] == ["y"]
    assert [i.name for i in program.entries["predict"].graph.inputs] == ["x"]


def _error(tmp_path, source: str, entry: str = "model") -> str:
    path = tmp_path / "bad_model.py"
    path.write_text(textwrap.dedent(source))
    with pytest.raises(ModelFileError) as err:
        trace_model_file(str(path), entry)
    return str(err.value)


@pytest.mark.parametrize("source,line,words", [
    ("import tinyc as tc\n\ndef model(:\n    pass\n", 3, "syntax error"),
    ("import tinyc as tc\nimport no_such_module_xyz\n", 2, "no_such_module_xyz"),
    ("import tinyc as tc\n\ndef model():\n    x = tc.input('x', (2,))\n    return 1 / 0\n", 5, "ZeroDivisionError"),
    ("import tinyc as tc\n\ndef model():\n    return 42\n", 3, "not tc.Train"),
    ("import tinyc as tc\n\ndef other():\n    pass\n", 1, "no function 'model'"),
])
def test_model_file_errors_name_file_and_line(tmp_path, source, line, words):
    message = _error(tmp_path, source)
    assert message.startswith(f"bad_model.py:{line}: "), message
    assert words in message


def test_error_in_a_helper_points_at_the_model_file(tmp_path):
    (tmp_path / "helper_boom.py").write_text("def boom():\n    raise ValueError('bad size')\n")
    message = _error(tmp_path, "import helper_boom\n\ndef model():\n    helper_boom.boom()\n")
    assert message.startswith("bad_model.py:4: ") and "bad size" in message


def test_tinyc_errors_propagate_unchanged(tmp_path):
    path = tmp_path / "shapes.py"
    path.write_text("import tinyc as tc\n\ndef model():\n    x = tc.input('x', (2, 3))\n    return x @ x\n")
    with pytest.raises(ShapeError) as err:
        trace_model_file(str(path))
    assert str(err.value).startswith("shapes.py:5: matmul")


def test_errors_inside_library_layers_name_the_users_line(tmp_path):
    path = tmp_path / "layers_model.py"
    path.write_text(textwrap.dedent("""
        import tinyc as tc
        from tinyc.models import Linear

        def model():
            x = tc.input("x", ("B", 4))
            h = Linear("fc1", 4, 8)(x)
            return tc.Train(Linear("fc2", 7, 2)(h).mean())
    """))
    with pytest.raises(ShapeError) as err:
        trace_model_file(str(path))
    # the loc stays exactly the user's line; the layer that failed comes first in the message
    assert err.value.loc == "layers_model.py:8"
    assert str(err.value).startswith("layers_model.py:8: [fc2] matmul"), str(err.value)


def test_nodes_of_library_layers_carry_the_users_line(model_file, tmp_path):
    path = tmp_path / "mlp_model.py"
    path.write_text(textwrap.dedent("""
        import tinyc as tc
        from tinyc.models import Linear, softmax_cross_entropy

        def model():
            x, y = tc.input("x", ("B", 4)), tc.input("y", ("B",), "i64")
            logits = Linear("fc", 4, 3)(x)
            return tc.Train(softmax_cross_entropy(logits, y))
    """))
    graph, _ = trace_model_file(str(path))
    assert [n.loc for n in graph.nodes] == ["mlp_model.py:7"] * 2 + ["mlp_model.py:8"]


@pytest.mark.parametrize("train,words", [
    ("optimizer='adam'", "optimizer must be tc.optim.SGD"),
    ("batch_size=0", "batch_size must be"),
    ("epochs=-1", "epochs must be"),
    ("schedule='linear'", "schedule must be one of"),
])
def test_bad_training_settings_name_the_model_function(tmp_path, train, words):
    source = f"import tinyc as tc\n\ndef model():\n    return tc.Train(tc.param('w', (2,)).sum(), {train})\n"
    message = _error(tmp_path, source)
    assert message.startswith("bad_model.py:3: "), message
    assert words in message


def test_entry_option(tmp_path):
    message = _error(tmp_path, "import tinyc as tc\n\ndef model():\n    pass\n", entry="build")
    assert "no function 'build'" in message


def test_bytes_do_not_depend_on_the_hash_seed(model_file):
    import os
    import subprocess
    import sys

    code = ("import sys, hashlib; from tinyc.compiler.driver import compile_file; from tinyc.ir import codec; "
            "print(hashlib.sha256(codec.encode_program(compile_file(sys.argv[1])[0])).hexdigest())")
    digests = {subprocess.run([sys.executable, "-c", code, model_file], capture_output=True, text=True, check=True,
                              env={**os.environ, "PYTHONHASHSEED": seed}).stdout for seed in ("1", "2")}
    assert len(digests) == 1


def test_a_model_file_name_that_is_not_utf8_compiles_and_is_shown_readably(tmp_path):
    from tests.cli.test_cli import TINY_MODEL
    from tinyc.ir.codec import decode_program, encode_program

    path = os.fsdecode(bytes(tmp_path) + b"/mod\xff.py")  # a Latin-1 name on a UTF-8 system
    with open(path, "w") as f:
        f.write(TINY_MODEL)
    program = decode_program(encode_program(compile_file(path)[0]))
    assert program.meta["model"] == "mod\ufffd.py"
    assert {n.loc.split(":")[0] for e in program.entries.values() for n in e.graph.nodes if n.loc} == {"mod\ufffd.py"}
