"""`tinyc inspect --summary`: the per-layer table adds up, and optimizer state is one line."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from tests.cli.test_cli import invoke
from tinyc.cli.session import load_or_compile
from tinyc.cli.summary import TOP, layer_rows
from tinyc.cli.views import param_count
from tinyc.compiler.manager import estimate_flops

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


@pytest.fixture(scope="module")
def vit():
    return load_or_compile(EXAMPLES / "vit_mnist.py").program


def test_rows_account_for_every_node_and_parameter(vit):
    graph = vit.entries["train_step"].graph
    rows, optimizer = layer_rows(graph, 64)
    assert sum(r.params for r in rows) == param_count(graph)[1] == 104_970
    # each node is forward, backward or optimizer: the three sums are the whole step's estimate
    assert sum(r.forward_flops + r.backward_flops for r in rows) + optimizer == estimate_flops(graph, 64)
    names = [r.layer for r in rows]
    assert len(names) == len(set(names)) and names.index("embed") < names.index("enc0.attn.qkv") < names.index("head")
    head = next(r for r in rows if r.layer == "head")
    assert head.params == 64 * 10 + 10 and head.output == "f32[B,10]"
    assert head.forward_flops >= 2 * 64 * 64 * 10  # its GEMM at batch 64, at least
    assert next(r for r in rows if r.layer == TOP).output == "f32[]"  # the loss


def test_backward_costs_about_twice_the_forward_for_gemm_layers(vit):
    rows = {r.layer: r for r in layer_rows(vit.entries["train_step"].graph, 64)[0]}
    fc1 = rows["enc0.ff.fc1"]  # dW and dX: two GEMMs of the forward one's size
    assert 1.9 < fc1.backward_flops / fc1.forward_flops < 2.1


def test_predict_has_no_backward(vit):
    rows, optimizer = layer_rows(vit.entries["predict"].graph, 64)
    assert optimizer == 0 and all(r.backward_flops == 0 and r.saved_bytes == 0 for r in rows)


def test_summary_prints_one_optimizer_line_not_state_rows(tmp_path):
    out = tmp_path / "vit.ir"
    assert invoke("compile", EXAMPLES / "vit_mnist.py", "-o", out).exit_code == 0
    text = invoke("inspect", out, "--summary").stdout
    assert "%0" not in text  # no IR text with --summary
    lines = [line for line in text.splitlines() if line.startswith("optimizer adam")]
    assert len(lines) == 1 and "63 state tensors (step 1, m 31, v 31), 209,941 values, 820.1 KiB" in lines[0]
    assert not re.search(r"^\S+\.m\s", text, re.MULTILINE)  # no row per optimizer state tensor
    total = re.search(r"^total\s+([\d,]+)\s", text, re.MULTILINE)
    assert total and total.group(1) == "104,970"
    default = invoke("inspect", out).stdout
    assert "layers (FLOPs and bytes at batch 64)" in default and "%0" in default
