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


# Independent counts, from the architectures the example files describe (not from the code under test):
# a Linear of i -> o over T rows holds i*o + o parameters; its forward is one GEMM, 2*T*i*o FLOPs (plus at
# most T*o for the bias); its backward is dW (2*T*i*o) and db (T*o), plus dX (2*T*i*o) when the layer's
# input needs a gradient (not for the first layer, whose input is the image).
def _check_linear(row, i: int, o: int, rows: int, needs_dx: bool = True) -> None:
    gemm = 2 * rows * i * o
    assert row.params == i * o + o, row
    assert gemm <= row.forward_flops <= gemm + rows * o, row
    backward = gemm * (2 if needs_dx else 1) + rows * o
    assert backward <= row.backward_flops <= backward + rows * o, row


def test_mlp_rows_match_a_count_by_hand():
    program = load_or_compile(EXAMPLES / "mlp_mnist.py").program
    rows, optimizer = layer_rows(program.entries["train_step"].graph, 64)
    by = {r.layer: r for r in rows}
    _check_linear(by["fc1"], 784, 128, 64, needs_dx=False)
    _check_linear(by["fc2"], 128, 10, 64)
    assert sum(r.params for r in rows) == 784 * 128 + 128 + 128 * 10 + 10
    # backprop through x -> fc1 -> relu -> fc2 -> cross-entropy keeps the input of each GEMM whose weight
    # gradient is taken (the image as f32 [64,784], the ReLU's output [64,128]) and the logits [64,10]
    assert sum(r.saved_bytes for r in rows) == 4 * 64 * (784 + 128 + 10)
    # SGD with momentum: per value, v = m*v + g and w -= lr*v, at least two FLOPs each
    assert optimizer >= 2 * sum(r.params for r in rows)


def test_vit_rows_match_a_count_by_hand(vit):
    rows = {r.layer: r for r in layer_rows(vit.entries["train_step"].graph, 64)[0]}
    tokens = 64 * 16  # batch 64, 16 patches of 7x7
    _check_linear(rows["embed"], 49, 64, tokens, needs_dx=False)
    for block in ("enc0", "enc1"):
        _check_linear(rows[f"{block}.attn.qkv"], 64, 3 * 64, tokens)
        _check_linear(rows[f"{block}.attn.out"], 64, 64, tokens)
        _check_linear(rows[f"{block}.ff.fc1"], 64, 256, tokens)
        _check_linear(rows[f"{block}.ff.fc2"], 256, 64, tokens)
        assert rows[f"{block}.ln1"].params == rows[f"{block}.ln2"].params == 2 * 64  # scale and shift
        # attention proper: Q K^T and A V, 4 heads of 16 over 16 tokens, two GEMMs of 2*16*16*16 per head
        assert rows[f"{block}.attn"].forward_flops >= 64 * 4 * 2 * (2 * 16 * 16 * 16)
    _check_linear(rows["head"], 64, 10, 64)
    assert rows["ln_f"].params == 2 * 64 and rows[TOP].params == 16 * 64  # the position embedding
    per_block = 2 * (2 * 64) + (64 * 192 + 192) + (64 * 64 + 64) + (64 * 256 + 256) + (256 * 64 + 64)
    assert sum(r.params for r in rows.values()) == (49 * 64 + 64) + 16 * 64 + 2 * per_block + 2 * 64 + (64 * 10 + 10)


@pytest.mark.parametrize("damage", [
    lambda b: b[: len(b) // 2],  # torn by a crash
    lambda b: b"",
    lambda b: b"\x00" * len(b),
    lambda b: b[:100] + bytes([b[100] ^ 0xFF]) + b[101:],  # one byte flipped in the header
    lambda b: b.replace(b"fc1", b"\xff\xfe\xfd"),  # names that are no longer UTF-8
])
def test_summary_of_a_damaged_file_is_one_line(tmp_path, damage):
    good = tmp_path / "mlp.ir"
    assert invoke("compile", EXAMPLES / "mlp_mnist.py", "-o", good).exit_code == 0
    bad = tmp_path / "bad.ir"
    bad.write_bytes(damage(good.read_bytes()))
    before = bad.read_bytes()
    result = invoke("inspect", bad, "--summary")
    assert result.exit_code == 2 and "Traceback" not in result.output and "layers" not in result.stdout
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert lines[0].startswith(f"error: {bad}: ") and all(line.startswith("hint: ") for line in lines[1:])
    assert bad.read_bytes() == before and sorted(p.name for p in tmp_path.iterdir()) == ["bad.ir", "mlp.ir"]
