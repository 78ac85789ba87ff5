"""Every kind of bad input the issue lists, through the command line: one short line naming the
user's file (and line, where there is one), exit 2, no traceback, and nothing written."""

from __future__ import annotations

import msgpack
import numpy as np
import pytest
from typer.testing import CliRunner

from tests.cli.test_cli import TINY_MODEL
from tinyc.cli.main import app
from tinyc.runtime.checkpoint import save_checkpoint


def invoke(*args):
    return CliRunner().invoke(app, [str(a) for a in args])


def one_line_error(result) -> str:
    """The error line of a failed command, after checking its shape."""
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert result.exit_code == 2, (result.stdout, result.stderr)
    assert "Traceback" not in result.output
    assert lines and lines[0].startswith("error: "), lines
    assert all(line.startswith("hint: ") for line in lines[1:]) and len(lines) <= 2, lines
    return lines[0]


HEAD = "import tinyc as tc\n\n\ndef model():\n"  # the body starts on line 5

# (name, model source, expected line, words the message must contain)
MODEL_ERRORS = [
    ("syntax", HEAD + "    x = tc.input('x', (3,)\n    return x\n", 5, ["syntax error"]),
    ("import", "import tinyc as tc\nimport no_such_module_xyz\n", 2, ["ModuleNotFoundError", "no_such_module_xyz"]),
    ("no_entry", "import tinyc as tc\n\n\ndef modle():\n    pass\n", 1, ["defines no function 'model'"]),
    ("not_train", HEAD + "    x = tc.input('x', (3,))\n    return x.sum()\n", 4, ["returned Tensor, not tc.Train"]),
    ("matmul_shapes", HEAD + "    x = tc.input('x', ('B', 784))\n    w = tc.param('w', (128, 10))\n"
     "    return tc.Train((x @ w).sum())\n", 7, ["matmul", "f32[B,784]", "f32[128,10]", "784 != 128"]),
    ("broadcast_shapes", HEAD + "    a = tc.input('a', ('B', 3))\n    b = tc.param('b', (4,))\n"
     "    return tc.Train((a + b).sum())\n", 7, ["add", "[B,3]", "[4]", "dim -1 is 3", "4"]),
    ("dtype", HEAD + "    x = tc.input('x', (3,))\n    i = tc.input('i', (3,), dtype='i64')\n"
     "    return tc.Train((x * i).sum())\n", 7, ["mul", "dtypes differ", "f32[3]", "i64[3]"]),
    ("non_tensor", HEAD + "    x = tc.input('x', (3,))\n    y = tc.relu([1.0, 2.0])\n"
     "    return tc.Train(y.sum())\n", 6, ["relu", "expected a Tensor, got list"]),
    ("raises", HEAD + "    raise ValueError('bad config')\n", 5, ["ValueError: bad config"]),
    ("huge_param", HEAD + "    x = tc.input('x', ('B', 4))\n    w = tc.param('w', (10**6, 10**6))\n", 6,
     ["shape [1000000,1000000] has 1,000,000,000,000 elements", "at most 2,147,483,648"]),
    ("huge_node", HEAD + "    a = tc.input('a', ('B', 50000, 1))\n    b = tc.input('b', (50000,))\n"
     "    return tc.Train((a * b).sum())\n", 7, ["mul", "shape [B,50000,50000] has 2,500,000,000 elements"]),
    ("exits", HEAD + "    import sys\n    sys.exit(3)\n", 6, ["calling model()", "sys.exit(3)"]),
    ("exits_on_import", "import sys\n\nsys.exit()\n", 3, ["importing the model file", "sys.exit(None)"]),
]


@pytest.mark.parametrize("name,source,line,words", MODEL_ERRORS, ids=[c[0] for c in MODEL_ERRORS])
def test_model_file_errors(tmp_path, name, source, line, words):
    model = tmp_path / "bad_model.py"
    model.write_text(source)
    out = tmp_path / "out.ir"
    message = one_line_error(invoke("compile", model, "-o", out))
    assert message.startswith(f"error: bad_model.py:{line}: "), message
    for word in words:
        assert word in message, (word, message)
    assert not out.exists() and sorted(p.name for p in tmp_path.iterdir()) == ["bad_model.py"]


@pytest.fixture(scope="module")
def program(tmp_path_factory):
    d = tmp_path_factory.mktemp("bad")
    (d / "tiny.py").write_text(TINY_MODEL)
    assert invoke("compile", d / "tiny.py", "-o", d / "tiny.ir").exit_code == 0
    return d / "tiny.ir"


def _newer(data: bytes) -> bytes:
    doc = msgpack.unpackb(data, raw=False)
    doc["version"] += 1
    return msgpack.packb(doc, use_bin_type=True)


def _flip(data: bytes) -> bytes:
    out = bytearray(data)
    out[len(out) // 3] ^= 0xFF
    return bytes(out)


DAMAGE = {
    "truncated": lambda d: d[: len(d) * 2 // 3],
    "flipped": _flip,
    "not_msgpack": lambda d: b"\xc1" + d,
    "foreign": lambda d: msgpack.packb({"format": "onnx", "version": 1}),
    "newer": _newer,
    "empty": lambda d: b"",
}


@pytest.mark.parametrize("kind", sorted(DAMAGE))
@pytest.mark.parametrize("command", ["inspect", "run"])
def test_damaged_program_files(program, tmp_path, kind, command):
    bad = tmp_path / "bad.ir"
    bad.write_bytes(DAMAGE[kind](program.read_bytes()))
    args = ["inspect", bad] if command == "inspect" else ["run", bad, "--data", f"idx:{tmp_path}"]
    message = one_line_error(invoke(*args))
    assert "bad.ir" in message
    if kind == "newer":
        assert "newer" in message and "upgrade" in message


def test_checkpoint_that_does_not_fit_names_parameter_and_shapes(program, tmp_path):
    ckpt = tmp_path / "other.safetensors"
    save_checkpoint(str(ckpt), {"w": np.zeros((15, 3), np.float32), "b": np.zeros(3, np.float32)}, {"epoch": 1})
    message = one_line_error(invoke("eval", program, "--weights", ckpt, "--data", f"idx:{tmp_path}"))
    assert "other.safetensors" in message and "'w'" in message and "[15, 3]" in message and "[16, 3]" in message


def test_parameters_totalling_more_than_one_tensor_may_hold_compile(tmp_path):
    """Each parameter is within the size rule, together they are past it: the data-parallel pass
    packs their gradients into several buffers instead of failing on one it made itself."""
    from tinyc.ir.types import MAX_ELEMENTS
    from tinyc.runtime import load

    model = tmp_path / "wide.py"
    model.write_text(HEAD + "    x = tc.input('x', ('B', 4))\n    w1 = tc.param('w1', (40000, 40000))\n"
                     "    w2 = tc.param('w2', (40000, 40000))\n    return tc.Train(x.sum() * w1.sum() * w2.sum())\n")
    result = invoke("compile", model, "-o", tmp_path / "wide.ir")
    assert result.exit_code == 0, result.output
    graph = load(str(tmp_path / "wide.ir")).entries["train_step"].graph
    packed = [n.type.numel() for n in graph.nodes if n.op == "flat_concat"]
    assert len(packed) == 2 and max(packed) <= MAX_ELEMENTS and sum(packed) == 2 * 40000**2 + 1


def test_a_model_file_is_python_whatever_its_suffix(tmp_path):
    model = tmp_path / "tiny.model"
    model.write_text(TINY_MODEL)
    result = invoke("compile", model, "-o", tmp_path / "tiny.ir")
    assert result.exit_code == 0, result.output
    assert (tmp_path / "tiny.ir").exists()


def test_more_procs_than_cores_is_refused_before_mpiexec_starts(program, tmp_path, monkeypatch):
    from tinyc.cli import launch
    from tinyc.runtime.threads import available_cores

    def started(*args):
        raise AssertionError(f"mpiexec was started: {args}")

    monkeypatch.setattr(launch.os, "execv", started)
    most = max(8, 4 * available_cores())
    message = one_line_error(invoke("run", program, "--procs", most + 1, "--data", f"idx:{tmp_path}"))
    assert message.startswith(f"error: --procs {most + 1} is more than {most} (4 per core of the {available_cores()} ")


def test_a_negative_seed_is_a_usage_error(program, tmp_path):
    result = invoke("run", program, "--seed", "-1", "--data", f"idx:{tmp_path}")
    assert result.exit_code == 2 and "--seed" in result.output and "internal error" not in result.output


def _with_meta(data: bytes, edit) -> bytes:
    doc = msgpack.unpackb(data, raw=False)
    edit(doc["program"]["meta"])
    return msgpack.packb(doc, use_bin_type=True)


@pytest.mark.parametrize("edit,words", [
    (lambda m: m.update(train=None), "meta.train must be a dict, got NoneType"),
    (lambda m: m.update(label_inputs="label"), "meta.label_inputs must be a list"),
    (lambda m: m["train"].update(lr=-1.0), "meta.train.lr must be a finite number >= 0, got -1.0"),
    (lambda m: m["train"].update(schedule="warp"), "meta.train.schedule must be one of constant, cosine, step"),
    (lambda m: m["train"].update(batch_size="64"), "meta.train.batch_size must be an int >= 1"),
])
@pytest.mark.parametrize("command", ["inspect", "run"])
def test_program_metadata_of_the_wrong_type_is_refused_at_load(program, tmp_path, edit, words, command):
    """Not blamed on --lr or --schedule, which the user did not give: the file is named."""
    bad = tmp_path / "bad.ir"
    bad.write_bytes(_with_meta(program.read_bytes(), edit))
    args = ["inspect", bad] if command == "inspect" else ["run", bad, "--data", f"idx:{tmp_path}"]
    message = one_line_error(invoke(*args))
    assert "bad.ir" in message and words in message and "--" not in message


def test_a_gz_that_inflates_past_its_header_is_refused_without_inflating_it(tmp_path):
    import gzip
    import struct
    import tracemalloc

    from tinyc.ir.errors import DataError
    from tinyc.runtime.datasets.idx import read_idx

    path = tmp_path / "train-labels-idx1-ubyte.gz"
    # a header for 10 labels, then 200 MB of zeros: 200 KB compressed
    path.write_bytes(gzip.compress(struct.pack(">II", 0x801, 10) + bytes(10) + bytes(200 << 20), 1))
    tracemalloc.start()
    with pytest.raises(DataError, match="trailing bytes"):
        read_idx(str(path), "labels")
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert peak < 8 << 20, f"{peak:,} bytes allocated"
    # a header that claims more than deflate can make of the file is refused up front
    path.write_bytes(gzip.compress(struct.pack(">IIII", 0x803, 10**8, 28, 28)))
    with pytest.raises(DataError, match="more than a .*-byte .gz can hold"):
        read_idx(str(path), "images")
