"""The verifier: each check fires on a graph broken in exactly one way, naming the node, its
user location and the pass, with the IR lines around it."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

import tinyc as tc
from tinyc.ir.errors import IRError
from tinyc.ir.graph import Graph, Input, Node, Param
from tinyc.ir.printer import format_node
from tinyc.ir.program import Entry, Program
from tinyc.ir.types import TensorType
from tinyc.ir.verify import verify, verify_program


def _graph() -> Graph:
    with tc.graph("net") as b:
        x = tc.input("x", ("B", 4))
        w = tc.param("w", (4, 3), tc.init.normal(0.1))
        h = x @ w                                     # %0
        h = h + np.ones(3, np.float32)                # %1 constant, %2 add
        s = h.sum(axis=1)                             # %3
        g = b.graph({"s": s}, {"w": w * 0.5})         # %4 fill, %5 mul
    return g


def _node(g: Graph, op: str) -> tuple[int, Node]:
    return next((i, n) for i, n in enumerate(g.nodes) if n.op == op)


def _with_node(g: Graph, which: str, /, **changes) -> tuple[Graph, Node]:
    i, n = _node(g, which)
    bad = replace(n, **changes)
    return g.with_nodes(g.nodes[:i] + (bad,) + g.nodes[i + 1:]), bad


def _fails(g: Graph, fragment: str, where: str = "after pass cse") -> IRError:
    with pytest.raises(IRError) as info:
        verify(g, where=where)
    text = str(info.value)
    assert fragment in text, text
    assert text.count(where) == 1, text
    return info.value


def _names_node(err: IRError, node: Node) -> None:
    text = str(err)
    assert text.startswith(node.loc + ":"), text  # the user's line first
    assert f"node %{node.out} ({node.op})" in text
    assert "  --> " + format_node(node) in text  # the IR around it, the bad line marked


def test_valid_graph_passes():
    verify(_graph())
    verify(_graph(), where="after pass fold")


def test_type_contradicting_inference():
    g, bad = _with_node(_graph(), "matmul", type=TensorType("f32", ("B", 4)), loc="model.py:7")
    err = _fails(g, "type f32[B,4] contradicts matmul's inference f32[B,3]")
    _names_node(err, bad)


def test_use_before_definition():
    g = _graph()
    i, add = _node(g, "add")
    nodes = list(g.nodes)
    nodes[0], nodes[i] = nodes[i], nodes[0]  # add now runs before the matmul it reads
    err = _fails(g.with_nodes(nodes), "uses %0 before it is defined")
    _names_node(err, add)


def test_dangling_input():
    g, bad = _with_node(_graph(), "add", inputs=("0", "77"))
    _names_node(_fails(g, "input %77 is dangling"), bad)


def test_unknown_op():
    g, bad = _with_node(_graph(), "add", op="frobnicate")
    _names_node(_fails(g, "unknown op 'frobnicate'"), bad)


def test_ssa_node_redefines_a_value():
    g, bad = _with_node(_graph(), "add", out="x")
    _names_node(_fails(g, "redefines %x"), bad)


def test_ssa_duplicate_input_or_param():
    g = _graph()
    _fails(replace(g, inputs=g.inputs + (Input("w", TensorType("f32", (1,))),)), "parameter %w is defined twice")


def test_non_canonical_attrs():
    g, bad = _with_node(_graph(), "sum", attrs={"axes": (-1,), "keepdims": False})
    _names_node(_fails(g, "not canonical"), bad)
    g, _ = _with_node(_graph(), "sum", attrs={"axes": [1], "keepdims": False})
    _fails(g, "not canonical")
    g, _ = _with_node(_graph(), "fill", attrs={"shape": (), "dtype": "f32", "value": 1})  # int, not float
    _fails(g, "not canonical")


def test_invalid_attrs():
    g, bad = _with_node(_graph(), "sum", attrs={"axes": (5,), "keepdims": False})
    _names_node(_fails(g, "axis 5 is out of range"), bad)
    g, _ = _with_node(_graph(), "sum", attrs={"axes": (1,), "keepdims": False, "bogus": 1})
    _fails(g, "unknown attribute(s) bogus")
    g, _ = _with_node(_graph(), "sum", attrs={"axes": (1,), "keepdims": "yes"})
    _fails(g, "is not a bool")


def test_wrong_number_of_inputs():
    g, _ = _with_node(_graph(), "add", inputs=("0",))
    _fails(g, "takes 2 input(s)")


def test_constant_missing_from_table():
    g = _graph()
    _fails(replace(g, constants={}), "not in the graph's constant table")


def test_constant_with_wrong_dtype_or_shape():
    g = _graph()
    (name, arr), = g.constants.items()
    _fails(replace(g, constants={name: arr.astype(np.float64)}), f"constant {name!r} holds f64[3]")
    _fails(replace(g, constants={name: np.ones(4, np.float32)}), "holds f32[4]")


def test_dangling_output_and_duplicate_output():
    g = _graph()
    _fails(replace(g, outputs=(("s", "99"),)), "output s = %99 is dangling")
    _fails(replace(g, outputs=(("s", "3"), ("s", "2"))), "output 's' is listed twice")


def test_update_of_unknown_param():
    g = _graph()
    _fails(replace(g, updates=(("v", "5"),)), "update targets 'v', which is not a parameter")


def test_update_type_must_match_param_exactly():
    g = _graph()
    with pytest.raises(IRError) as info:
        verify(replace(g, updates=(("w", "2"),)), where="after pass optimizer")
    text = str(info.value)
    assert "update w = %2 has type f32[B,3], but parameter w is f32[4,3]" in text
    assert text.startswith(g.params[0].loc)  # the param's user line
    assert "after pass optimizer" in text


def test_param_rules():
    g = _graph()
    p = g.params[0]
    _fails(replace(g, params=(replace(p, init={"rule": "magic"}),)), "unknown init rule 'magic'")
    _fails(replace(g, params=(replace(p, init={"rule": "normal", "sdt": 1.0}),)), "unknown argument(s) sdt")
    _fails(replace(g, params=(replace(p, init={"std": 1.0}),)), "expected a dict with a 'rule'")
    _fails(replace(g, params=(replace(p, kind="buffer"),)), "kind 'buffer'")
    _fails(replace(g, params=(replace(p, seed=-1),)), "seed -1")
    sym = replace(p, type=TensorType("f32", ("B", 3)))
    _fails(replace(g, params=(sym,), updates=()), "symbolic dim")


def test_context_is_bounded_to_nearby_lines():
    with tc.graph("long") as b:
        x = tc.input("x", (2,))
        for _ in range(40):
            x = tc.relu(x)
        g = b.graph({"y": x})
    i = 20
    bad = replace(g.nodes[i], type=TensorType("f64", (2,)))
    err = _fails(g.with_nodes(g.nodes[:i] + (bad,) + g.nodes[i + 1:]), "contradicts relu's inference")
    lines = str(err).splitlines()
    assert sum(line.startswith("      %") for line in lines) == 6  # three on each side
    assert "      ..." in lines


def test_without_where_message_has_no_prefix():
    g, _ = _with_node(_graph(), "add", op="frobnicate")
    with pytest.raises(IRError) as info:
        verify(g)
    assert "pass" not in str(info.value)


def test_backward_node_location_includes_note():
    g, _ = _with_node(_graph(), "add", type=TensorType("f32", (1,)), loc="m.py:3", note="grad of softmax")
    err = _fails(g, "contradicts")
    assert str(err).startswith("grad of softmax @ m.py:3:")


def test_verify_program():
    g = _graph()
    verify_program(Program({"train_step": Entry("train_step", g)}))
    with pytest.raises(IRError, match="named 'predict'"):
        verify_program(Program({"train_step": Entry("predict", g)}))
    bad = replace(g, outputs=(("s", "99"),))
    with pytest.raises(IRError, match="entry train_step: output s"):
        verify_program(Program({"train_step": Entry("train_step", bad)}))


def test_big_graph_verifies():
    # a transformer-sized graph (thousands of nodes) goes through the linear-time checks
    with tc.graph("big") as b:
        x = tc.input("x", ("B", 8, 16))
        for i in range(200):
            w = tc.param(f"w{i}", (16, 16))
            x = tc.layer_norm(tc.relu(x @ w) + x * 0.5)
        g = b.graph({"y": x.sum()})
    assert len(g.nodes) > 1000
    verify(g)
    assert all(isinstance(p, Param) for p in g.params)
