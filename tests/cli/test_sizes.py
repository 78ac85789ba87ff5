"""Sizes read the same in every command: one planned peak, binary units, no float noise, honest JSON."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from tests.cli.test_cli import invoke

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
SIZE = r"\d+(?:\.\d)? (?:B|KiB|MiB|GiB)"


@pytest.fixture(scope="module")
def vit(tmp_path_factory) -> tuple[Path, str]:
    out = tmp_path_factory.mktemp("sizes") / "vit.ir"
    result = invoke("compile", EXAMPLES / "vit_mnist.py", "-o", out)
    assert result.exit_code == 0, result.output
    return out, result.stdout


def test_compile_passes_and_memory_print_one_planned_peak(vit):
    out, compiled = vit
    from_compile = re.search(rf"planned peak ({SIZE}) \(train_step at batch (\d+)\)", compiled)
    assert from_compile, compiled
    passes = invoke("inspect", EXAMPLES / "vit_mnist.py", "--passes", "--graph", "train_step").stdout
    from_passes = re.search(rf"^planned peak ({SIZE}) at batch (\d+)", passes, re.MULTILINE)
    memory = invoke("inspect", out, "--memory", "--graph", "train_step").stdout
    from_memory = re.search(rf"planned peak +({SIZE}) at %", memory)
    summary = invoke("inspect", out, "--graph", "train_step").stdout
    from_summary = re.search(rf"planned peak: ({SIZE}) at batch (\d+)", summary)
    assert from_passes and from_memory and from_summary
    assert from_compile.group(1) == from_passes.group(1) == from_memory.group(1) == from_summary.group(1)
    assert from_compile.group(2) == from_passes.group(2) == from_summary.group(2)
    # the per-pass column is a different quantity and says so
    assert "live peak" in passes.splitlines()[1]


def test_no_decimal_megabytes_anywhere(vit):
    out, compiled = vit
    texts = [compiled, invoke("inspect", out).stdout, invoke("inspect", out, "--memory").stdout]
    for text in texts:
        assert not re.search(r"\d (?:KB|MB|GB)\b", text)
        assert re.search(SIZE, text)


def test_attributes_print_without_float_noise(vit):
    text = invoke("inspect", vit[0]).stdout
    assert "b=0.1," in text  # Adam's 1 - beta1
    assert not re.search(r"\d\.\d*(?:0000000|9999999)\d", text), "float noise in the IR text"


def test_json_of_a_program_file_promises_no_pass_stats(vit, tmp_path):
    data = json.loads(invoke("inspect", vit[0], "--format", "json").stdout)
    train = data["entries"]["train_step"]
    assert "stats" not in train and train["plan"]["peak_bytes"] > 0
    model = json.loads(invoke("inspect", EXAMPLES / "mlp_mnist.py", "--format", "json").stdout)
    stats = model["entries"]["train_step"]["stats"]
    assert [s["name"] for s in stats][:2] == ["verify", "autodiff"] and stats[-1]["name"] == "memplan"
