"""Graph diffs between passes: matched by name, then by content; deterministic text."""

from __future__ import annotations

import re

import numpy as np

import tinyc as tc
from tinyc.compiler.diff import diff_graphs, format_diff
from tinyc.compiler.passes import load_all
from tinyc.ir.graph import Graph

PASSES = load_all()


def squash(text: str) -> str:
    return "\n".join(re.sub(r"\s+", " ", line).strip() for line in text.strip().splitlines())


def traced(body) -> Graph:
    with tc.graph() as b:
        with b.at("m.py:1", ""):
            outs = body()
        return b.graph(outs)


def test_identical_graphs_have_an_empty_diff():
    g = traced(lambda: {"y": tc.exp(tc.input("x", [3]))})
    d = diff_graphs(g, g)
    assert not d and format_diff(d) == ""


def test_cse_shows_a_replacement():
    def body():
        x = tc.input("x", [3])
        return {"y": tc.exp(x) + tc.exp(x)}

    g = traced(body)
    after = PASSES["cse"].fn(g)
    # %1 = exp %x duplicates %0 = exp %x: its reader now reads %0
    assert format_diff(diff_graphs(g, after)) == "~ %1 -> %0\n"


def test_dce_shows_removed_nodes_and_constants():
    def body():
        x = tc.input("x", [3])
        tc.exp(x) * tc.constant(np.arange(3.0))
        return {"y": tc.relu(x)}

    g = traced(body)
    text = format_diff(diff_graphs(g, PASSES["dce"].fn(g)))
    assert squash(text) == squash("""
        - %0: f32[3] = exp %x  # m.py:1
        - %1: f32[3] = constant {dtype=f32, name=c0, shape=[3]}  # m.py:1
        - %2: f32[3] = mul %0, %1  # m.py:1
        - const c0: f32[3]
    """)


def test_simplify_and_fold_show_changes_in_place_and_additions():
    def body():
        x = tc.input("x", [3])
        k = tc.constant(np.arange(3.0)) + 1.0
        return {"y": x ** 2.0, "z": x * k}

    g = traced(body)
    text = format_diff(diff_graphs(g, PASSES["fold"].fn(PASSES["simplify"].fn(g))))
    # traced: %0 = c0, %1 = 1.0, %2 = add, %3 = 2.0, %4 = pow, %5 = mul.
    # add(c0, 1) is folded into the constant fold2; pow(x, 2) -> mul(x, x), both under their names
    assert squash(text) == squash("""
        - %2: f32[3] = add %0, %1  # m.py:1
        + %2: f32[3] = constant {dtype=f32, name=fold2, shape=[3]}  # m.py:1
        - %4: f32[3] = pow %x, %3  # m.py:1
        + %4: f32[3] = mul %x, %x  # m.py:1
        + const fold2: f32[3]
    """)


def test_new_nodes_and_outputs_are_added():
    g = traced(lambda: {"y": tc.exp(tc.input("x", [3]))})
    with tc.graph() as b:
        b2 = tc.ir.builder.Builder.from_graph(g)
        with b2.at("m.py:2", "grad of exp"):
            z = tc.neg(b2.tensor("0"))
        after = b2.graph({"y": b2.tensor("0"), "z": z})
    del b
    assert squash(format_diff(diff_graphs(g, after))) == squash("""
        + %1: f32[3] = neg %0  # grad of exp @ m.py:2
        + output z = %1
    """)


def test_diff_text_is_deterministic():
    def body():
        x = tc.input("x", ["B", 4])
        y = tc.transpose(tc.transpose(x)) * 1.0
        return {"a": tc.sum(y * y, axis=1), "b": tc.sum(x * x, axis=1)}

    g = traced(body)
    after = g
    for name in ("simplify", "fold", "cse", "dce"):
        after = PASSES[name].fn(after)
    first = format_diff(diff_graphs(g, after))
    assert first == format_diff(diff_graphs(g, after)) and first
    # y*y became x*x, which cse merges with the later x*x and its sum
    assert "~ %6 -> %4\n~ %7 -> %5\n~ output b: %7 -> %5\n" in first
