"""The command line, end to end through typer's CliRunner (and once through `python -m tinyc`)."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

import tinyc
from tinyc.cli.dot import COLOURS
from tinyc.cli.main import app

TINY_MODEL = '''\
import tinyc as tc


def model():
    image = tc.input("image", ("B", 4, 4))
    label = tc.input("label", ("B",), dtype="i64")
    w = tc.param("w", (16, 3), init=tc.init.normal(std=0.1))
    b = tc.param("b", (3,))
    logits = image.reshape("B", 16) @ w + b
    loss = tc.softmax_cross_entropy(logits, label)
    accuracy = tc.mean(tc.cast(tc.equal(tc.argmax(logits, axis=-1), label), "f32"))
    return tc.Train(loss, outputs={"accuracy": accuracy, "logits": logits}, optimizer=tc.optim.SGD(lr=0.1))
'''

# The matmul on line 7 has mismatched inner dims (16 vs 15).
BAD_MODEL = '''\
import tinyc as tc


def model():
    image = tc.input("image", ("B", 16))
    w = tc.param("w", (15, 3))
    logits = image @ w
    return tc.Train(tc.mean(logits))
'''


def invoke(*args: str):
    return CliRunner().invoke(app, [str(a) for a in args])


def error_lines(result) -> list[str]:
    return [line for line in result.stderr.splitlines() if line.strip()]


@pytest.fixture(scope="module")
def workdir(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("cli")
    (d / "tiny.py").write_text(TINY_MODEL)
    (d / "bad.py").write_text(BAD_MODEL)
    return d


@pytest.fixture(scope="module")
def program_file(workdir) -> Path:
    out = workdir / "tiny.ir"
    result = invoke("compile", workdir / "tiny.py", "-o", out)
    assert result.exit_code == 0, result.output
    return out


# ------------------------------------------------------------------ basics


def test_version():
    result = invoke("--version")
    assert result.exit_code == 0
    assert result.stdout.strip() == f"tinyc {tinyc.__version__}"


@pytest.mark.parametrize("command", [[], ["compile"], ["inspect"], ["run"], ["eval"], ["data"]])
def test_help(command):
    result = invoke(*command, "--help")
    assert result.exit_code == 0, result.output
    assert "Usage" in result.stdout
    assert len(result.stdout.splitlines()) > 3


def test_python_dash_m():
    proc = subprocess.run([sys.executable, "-m", "tinyc", "--version"], capture_output=True, text=True, timeout=60,
                          check=False)
    assert proc.returncode == 0
    assert proc.stdout.strip() == f"tinyc {tinyc.__version__}"


# ------------------------------------------------------------------ compile


def test_compile_writes_a_program_that_inspect_reads(program_file):
    assert program_file.stat().st_size > 0
    result = invoke("inspect", program_file)
    assert result.exit_code == 0, result.output
    out = result.stdout
    for entry in ("train_step", "predict"):
        assert f"entry {entry}" in out
    assert re.search(r"params: 2 tensors, 51 values", out)  # w 16x3 + b 3
    assert "image f32[B,4,4]" in out and "label i64[B]" in out
    assert "graph " in out and "matmul" in out  # the IR text follows the summary


def test_compile_summary_line(workdir):
    result = invoke("compile", workdir / "tiny.py", "-o", workdir / "again.ir")
    assert result.exit_code == 0, result.output
    line = result.stdout.strip()
    assert line.startswith("wrote ") and "train_step" in line and "predict" in line and "51 params" in line


def test_compile_is_deterministic(workdir, program_file):
    other = workdir / "tiny2.ir"
    assert invoke("compile", workdir / "tiny.py", "-o", other).exit_code == 0
    assert other.read_bytes() == program_file.read_bytes()


def test_compile_default_output_name(workdir, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    result = invoke("compile", workdir / "tiny.py")
    assert result.exit_code == 0, result.output
    assert (tmp_path / "tiny.ir").exists()


def test_dump_dir_writes_numbered_files(workdir, tmp_path):
    dump = tmp_path / "dump"
    result = invoke("compile", workdir / "tiny.py", "-o", tmp_path / "t.ir", "--dump-dir", dump)
    assert result.exit_code == 0, result.output
    for entry in ("train_step", "predict"):
        names = sorted(p.name for p in (dump / entry).iterdir())
        assert names[0] == "00-trace.txt"
        assert [int(n[:2]) for n in names] == list(range(len(names)))
        assert all((dump / entry / n).read_text().startswith("graph ") for n in names)
    train_names = [n[3:-4] for n in sorted(p.name for p in (dump / "train_step").iterdir())]
    assert train_names[:3] == ["trace", "verify", "autodiff"]


def test_list_passes():
    from tinyc.compiler.passes import load_all

    result = invoke("compile", "--list-passes")
    assert result.exit_code == 0, result.output
    for name, p in load_all().items():
        assert re.search(rf"^{name}\s+{re.escape(p.description)}", result.stdout, re.MULTILINE)


def test_compile_refuses_a_program_file_and_a_missing_folder(workdir, program_file, tmp_path):
    result = invoke("compile", program_file)
    assert result.exit_code == 2 and "not a model file" in error_lines(result)[0]
    result = invoke("compile", workdir / "tiny.py", "-o", tmp_path / "no" / "such" / "x.ir")
    assert result.exit_code == 2
    folder = tmp_path / "no" / "such"
    assert error_lines(result) == [f"error: cannot write {folder / 'x.ir'}: no folder {folder}"]


def test_compile_without_model_is_an_error():
    result = invoke("compile")
    assert result.exit_code == 2
    assert error_lines(result)[0].startswith("error: missing MODEL")


# ------------------------------------------------------------------ inspect


def test_inspect_passes_has_a_row_per_pass(workdir):
    from tinyc.cli.session import compile_model

    stats = compile_model(workdir / "tiny.py").stats
    result = invoke("inspect", workdir / "tiny.py", "--passes")
    assert result.exit_code == 0, result.output
    rows = [line.split()[0] for line in result.stdout.splitlines() if re.match(r"^\w+\s+\d+ -> \d+", line)]
    assert rows == [s.name for entry in stats.values() for s in entry]


def test_inspect_after_and_diff(workdir):
    after = invoke("inspect", workdir / "tiny.py", "--after", "cse", "--graph", "train_step")
    assert after.exit_code == 0, after.output
    assert after.stdout.startswith("graph ") and "output loss" in after.stdout
    verify = invoke("inspect", workdir / "tiny.py", "--after", "autodiff", "--graph", "train_step")
    assert verify.stdout != after.stdout
    diff = invoke("inspect", workdir / "tiny.py", "--diff", "autodiff", "--graph", "train_step")
    assert diff.exit_code == 0, diff.output
    lines = diff.stdout.splitlines()
    # autodiff only adds: backward nodes and one gradient output per parameter, nothing removed
    assert lines[0] == "# entry train_step: autodiff" and all(line.startswith("+ ") for line in lines[1:])
    outputs = {line.split(" = ")[0] for line in lines if " output " in line}
    assert outputs == {"+ output grad.w", "+ output grad.b"}
    assert all("grad " in line for line in lines[1:] if line.startswith("+ %"))


def test_inspect_diff_of_a_training_pass_skips_predict(workdir):
    # the README's `tinyc inspect mlp.py --diff autodiff`: predict never runs autodiff
    result = invoke("inspect", workdir / "tiny.py", "--diff", "autodiff")
    assert result.exit_code == 0, result.output
    assert "# entry train_step: autodiff" in result.stdout and "grad of" in result.stdout
    assert "# entry predict" not in result.stdout
    after = invoke("inspect", workdir / "tiny.py", "--after", "optimizer")
    assert after.exit_code == 0, after.output
    assert after.stdout.count("graph ") == 1 and "update w = " in after.stdout


def test_inspect_shows_the_allreduce_and_its_bytes(workdir):
    # the tiny model's gradients (w 16x3, b 3) and its two means (loss, accuracy): 53 floats, 212 bytes
    tiny, sent = workdir / "tiny.py", 16 * 3 + 3 + 2
    passes = invoke("inspect", tiny, "--passes", "--graph", "train_step")
    assert passes.exit_code == 0, passes.output
    names = [line.split()[0] for line in passes.stdout.splitlines() if re.match(r"^\w+\s+\d+ -> \d+", line)]
    assert names.index("autodiff") < names.index("dataparallel") < names.index("optimizer")
    diff = invoke("inspect", tiny, "--diff", "dataparallel", "--graph", "train_step")
    assert diff.exit_code == 0, diff.output
    added = [line for line in diff.stdout.splitlines() if line.startswith("+ %")]
    assert [line.split(" = ")[0][2:].split(": ")[1] for line in added if " = allreduce " in line] == [f"f32[{sent}]"]
    assert "+ input %batch_share: f32[]" in diff.stdout
    text = invoke("inspect", tiny, "--graph", "train_step")
    assert sum(" = allreduce %" in line for line in text.stdout.splitlines()) == 1
    memory = invoke("inspect", tiny, "--memory", "--graph", "train_step")
    assert re.search(rf"allreduce +{4 * sent} B per step, %\d+: f32\[{sent}\]", memory.stdout), memory.stdout
    assert "allreduce" not in invoke("inspect", tiny, "--memory", "--graph", "predict").stdout


def test_inspect_pass_missing_from_the_chosen_entry(workdir):
    result = invoke("inspect", workdir / "tiny.py", "--diff", "autodiff", "--graph", "predict")
    assert result.exit_code == 2
    assert "entry predict did not run a pass named 'autodiff'" in result.stderr


def test_inspect_unknown_pass(workdir):
    result = invoke("inspect", workdir / "tiny.py", "--after", "nosuchpass")
    assert result.exit_code == 2
    assert error_lines(result)[0].startswith("error: ") and "nosuchpass" in result.stderr


def test_inspect_passes_needs_a_model_file(program_file):
    result = invoke("inspect", program_file, "--passes")
    assert result.exit_code == 2 and "model file" in result.stderr


def test_inspect_dot(program_file):
    result = invoke("inspect", program_file, "--format", "dot")
    assert result.exit_code == 0, result.output
    out = result.stdout
    assert out.startswith("digraph")
    assert out.count("{") == out.count("}")
    assert COLOURS["forward"] in out and COLOURS["backward"] in out and COLOURS["optimizer"] in out


def test_inspect_json(workdir, program_file):
    result = invoke("inspect", program_file, "--format", "json")
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    train = data["entries"]["train_step"]
    assert {"inputs", "outputs", "params", "param_count", "ops", "nodes"} <= train.keys()
    assert train["param_count"] == 51 and sum(train["ops"].values()) == train["nodes"]
    from_model = json.loads(invoke("inspect", workdir / "tiny.py", "--format", "json").stdout)
    assert from_model["entries"]["train_step"]["stats"][0]["name"] == "verify"


def test_inspect_memory(program_file):
    result = invoke("inspect", program_file, "--memory")
    assert result.exit_code == 0, result.output
    assert "# entry train_step" in result.stdout and "# entry predict" in result.stdout
    assert "planned peak" in result.stdout
    data = json.loads(invoke("inspect", program_file, "--memory", "--format", "json", "--batch", "8").stdout)
    memory = data["entries"]["train_step"]["memory"]
    assert memory["batch"] == 8 and memory["peak_bytes"] > 0


def test_inspect_unknown_entry(program_file):
    result = invoke("inspect", program_file, "--graph", "nope")
    assert result.exit_code == 2 and "train_step" in result.stderr


# ------------------------------------------------------------------ errors


def test_truncated_ir_is_one_line(workdir, program_file):
    cut = workdir / "cut.ir"
    data = program_file.read_bytes()
    cut.write_bytes(data[: len(data) // 2])
    result = invoke("inspect", cut)
    assert result.exit_code == 2
    lines = error_lines(result)
    assert lines[0].startswith("error: ")
    assert len([line for line in lines if not line.startswith("hint: ")]) == 1
    assert "Traceback" not in result.output


def test_shape_error_names_the_model_line(workdir, tmp_path):
    result = invoke("compile", workdir / "bad.py", "-o", tmp_path / "bad.ir")
    assert result.exit_code == 2
    lines = error_lines(result)
    assert lines[0].startswith("error: bad.py:7: "), lines
    assert "Traceback" not in result.output
    assert not (tmp_path / "bad.ir").exists()


@pytest.mark.parametrize("where", ["global", "command"])
def test_debug_shows_the_traceback(workdir, tmp_path, where):
    args = ["compile", workdir / "bad.py", "-o", tmp_path / "bad.ir"]
    args = ["--debug", *args] if where == "global" else [*args, "--debug"]
    result = invoke(*args)
    assert result.exit_code == 2
    assert "Traceback" in result.stderr and "bad.py:7" in result.stderr


def test_missing_file(tmp_path):
    for args in (["compile", tmp_path / "nope.py"], ["inspect", tmp_path / "nope.ir"]):
        result = invoke(*args)
        assert result.exit_code == 2
        lines = error_lines(result)
        assert len(lines) == 1 and lines[0].startswith("error: ") and "nope" in lines[0]
        assert "No such file" in lines[0]


def test_ctrl_c_is_one_line_and_exit_130(workdir, monkeypatch):
    from tinyc.cli import inspect_cmd

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(inspect_cmd, "load_or_compile", interrupted)
    result = invoke("inspect", workdir / "tiny.py")
    assert result.exit_code == 130 and error_lines(result) == ["error: interrupted"]


def test_internal_error_is_one_line_and_exit_1(workdir, monkeypatch):
    from tinyc.cli import inspect_cmd

    def boom(*args, **kwargs):
        raise RuntimeError("kaboom")

    monkeypatch.setattr(inspect_cmd, "load_or_compile", boom)
    result = invoke("inspect", workdir / "tiny.py")
    assert result.exit_code == 1
    assert error_lines(result) == ["internal error: RuntimeError: kaboom", "run with --debug for the traceback"]
    debug = invoke("--debug", "inspect", workdir / "tiny.py")
    assert debug.exit_code == 1 and "Traceback" in debug.stderr


@pytest.mark.parametrize("args,words", [
    (["run", "m.ir", "--epochs", "-1"], "'--epochs'"),
    (["run", "m.ir", "--batch-size", "0"], "'--batch-size'"),
    (["run", "m.ir", "--lr", "nan"], "'--lr'"),
    (["eval", "m.ir", "--data", "mnist"], "Missing option '--weights'"),
    (["inspect", "m.ir", "--depth", "-1"], "'--depth'"),
    (["run", "m.ir", "--no-such-flag"], "--no-such-flag"),
    (["frobnicate"], "No such command 'frobnicate'"),
], ids=["epochs", "batch", "lr-nan", "missing-option", "depth", "unknown-option", "unknown-command"])
def test_usage_mistakes_are_one_line_errors(args, words):
    """A value the option's type refuses is a user error like any other: one line, the help as a
    hint, exit 2 (not click's multi-line usage box)."""
    result = invoke(*args)
    lines = error_lines(result)
    assert result.exit_code == 2, result.output
    assert len(lines) == 2 and lines[0].startswith("error: ") and words in lines[0], lines
    assert lines[1] == f"hint: tinyc{' ' + args[0] if args[0] != 'frobnicate' else ''} --help"
    assert "Usage" not in result.output and "Traceback" not in result.output
