"""Layer scopes (the name stack): recorded by tc.name_scope and the model layers, kept by
autodiff, the optimizer and every pass, shown in the IR text, and saved in the .ir file."""

from __future__ import annotations

from pathlib import Path

import pytest

import tinyc as tc
from tinyc.compiler.decompose import decompose_graph
from tinyc.compiler.driver import compile_file, trace_model_file
from tinyc.ir.codec import decode_program, encode_program
from tinyc.ir.errors import IRError
from tinyc.ir.graph import Graph, Node
from tinyc.ir.printer import format_graph, format_node
from tinyc.models import FeedForward, Layer, Linear

VIT = str(Path(__file__).resolve().parents[2] / "examples" / "vit_mnist.py")


def _layer_of_params(graph: Graph) -> set[str]:
    """The layers that own parameters: enc0.attn.qkv.w -> enc0.attn.qkv (top-level ones excluded)."""
    return {p.name.rpartition(".")[0] for p in graph.params if p.kind == "param" and "." in p.name}


def _check_scopes_follow_params(graph: Graph, where: str) -> None:
    """A node reading a layer's parameter (or its optimizer state) lies in that layer or one enclosing it."""
    layer = {p.name: p.name.rpartition(".")[0] for p in graph.params if p.kind == "param" and "." in p.name}
    layer.update((s.name, layer[s.name.rpartition(".")[0]]) for s in graph.params
                 if s.kind == "state" and s.name.rpartition(".")[0] in layer)  # Adam's moments enc0.ff.fc1.w.m
    for n in graph.nodes:
        for v in n.inputs:
            if v in layer:
                assert n.scope and (layer[v] == n.scope or layer[v].startswith(n.scope + ".")), \
                    f"{where}: %{n.out} {n.op} reads {v}: {n.where()}"


@pytest.fixture(scope="module")
def vit():
    seen: list[tuple[str, Graph]] = []
    program, _ = compile_file(VIT, on_pass=lambda i, name, g, stats: seen.append((name, g)))
    return program, seen


def test_vit_nodes_name_their_layers(vit):
    program, _ = vit
    train = program.entries["train_step"].graph
    forward = [n for n in train.nodes if not n.note]
    assert any(n.scope == "enc0.attn" and n.op in ("matmul", "matmul_t", "softmax") for n in forward)
    assert any(n.scope == "enc0.attn.qkv" and n.op.startswith("matmul") for n in forward)
    backward = [n for n in train.nodes if n.note.startswith("grad of") and n.scope == "enc1.ff.fc1"]
    assert {n.op for n in backward} >= {"matmul_t", "matmul_t_sum"}  # dx and dW of the layer's GEMM
    adam = [n for n in train.nodes if n.op == "adam_param" and n.inputs[0] == "enc1.ff.fc1.w"]
    assert len(adam) == 1 and adam[0].scope == "enc1.ff.fc1" and adam[0].note == "optimizer adam"
    # every layer that owns parameters shows up, in both entries
    for entry in program.entries.values():
        assert _layer_of_params(entry.graph) <= {n.scope for n in entry.graph.nodes}


def test_vit_dump_shows_file_line_and_layer(vit):
    text = format_graph(vit[0].entries["train_step"].graph)
    assert "# vit_mnist.py:24 enc0.attn\n" in text
    assert "# grad of softmax @ vit_mnist.py:24 enc0.attn\n" in text or "@ vit_mnist.py:24 enc0.attn\n" in text
    assert "# vit_mnist.py:24 enc0.attn.enc0" not in text  # nested layers are not doubled


def test_scopes_survive_every_pass(vit):
    _, seen = vit
    assert {"autodiff", "optimizer", "fuse", "cse", "dce", "simplify", "fold"} <= {name for name, _ in seen}
    for name, g in seen:
        _check_scopes_follow_params(g, name)
    # unscoped nodes are only the model's own ops outside any layer (the nameless classifier's
    # patches, position add and pooling; the loss, the accuracy), their gradients and optimizer steps
    final = vit[0].entries["train_step"].graph
    unscoped = [n for n in final.nodes if not n.scope]
    assert all(n.loc in ("vit_mnist.py:19", "vit_mnist.py:24", "vit_mnist.py:26", "vit_mnist.py:29") for n in unscoped)
    assert all(n.note.startswith(("optimizer", "dataparallel")) for n in unscoped if n.loc == "vit_mnist.py:19")
    assert len(unscoped) < len(final.nodes) // 8


def test_decompose_keeps_scopes():
    graph, _ = trace_model_file(VIT)
    composite = {n.scope for n in graph.nodes if n.op in ("softmax", "layer_norm")}
    flat = decompose_graph(graph)
    assert "enc0.attn" in composite and composite <= {n.scope for n in flat.nodes if n.op == "exp" or n.op == "sqrt"}
    _check_scopes_follow_params(flat, "decompose")


def test_codec_keeps_scopes(vit):
    program = vit[0]
    back = decode_program(encode_program(program))
    for name, entry in program.entries.items():
        assert [n.scope for n in back.entries[name].graph.nodes] == [n.scope for n in entry.graph.nodes]


def test_name_scope_nests_and_layers_do_not_double():
    class Block(Layer):
        def __init__(self, name):
            self.name = name
            self.ff = FeedForward(f"{name}.ff", 4, 8)

        def __call__(self, x):
            return tc.relu(self.ff(x)) * 2.0

    with tc.graph() as b:
        x = tc.input("x", ("B", 4))
        with tc.name_scope("model"):
            y = tc.exp(x)
            with tc.name_scope("inner"):
                y = y + 1.0
        block = Block("blk")
        z = block(y)
        with tc.name_scope("outer"):
            w = block(z)  # a layer called inside a user's scope nests under it
        tc.neg(w)
    scopes = [n.scope for n in b.nodes if n.op != "fill"]
    assert scopes[:2] == ["model", "model.inner"]
    assert {"blk.ff.fc1", "blk.ff.fc2", "blk.ff", "blk"} <= set(scopes)
    assert "blk.blk" not in " ".join(scopes) and "blk.ff.blk" not in " ".join(scopes)
    assert {"outer.blk", "outer.blk.ff.fc1"} <= set(scopes)
    assert scopes[-1] == ""


def test_parameter_scopes_are_node_scopes_too():
    with tc.graph() as b:
        x = tc.input("x", ("B", 4))
        with tc.scope("m"):
            fc = Linear("fc", 4, 2)
            fc(x)
    (w,) = [p for p in b.graph().params if p.name.endswith(".w")]
    matmul = next(n for n in b.nodes if n.op == "matmul")
    assert w.name == "m.fc.w" and matmul.scope == "m.fc"


def test_name_scope_rejects_bad_names():
    with tc.graph(), pytest.raises(IRError, match="scope name 'a b'") as err:
        tc.name_scope("a b")
    assert err.value.loc.startswith("test_scopes.py:")


def test_where_and_printer():
    t = tc.TensorType("f32", ("B", 4))
    node = Node("3", "relu", ("2",), {}, t, "m.py:7", "", "enc0.ff")
    assert node.where() == "m.py:7 enc0.ff"
    assert Node("3", "relu", ("2",), {}, t, "m.py:7", "grad of relu", "enc0.ff").where() == "grad of relu @ m.py:7 enc0.ff"
    assert Node("3", "relu", ("2",), {}, t, "", "", "enc0.ff").where() == "enc0.ff"
    assert Node("3", "relu", ("2",), {}, t, "m.py:7").where() == "m.py:7"
    assert format_node(node).endswith("  # m.py:7 enc0.ff")
