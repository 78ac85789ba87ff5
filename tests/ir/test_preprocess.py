"""Preprocessing rules: declared on tc.input, kept by the codec, refused when malformed, and the
arithmetic the runtime and the ONNX exporter share."""

from __future__ import annotations

import msgpack
import numpy as np
import pytest

import tinyc as tc
from tinyc.compiler.driver import compile_graph
from tinyc.ir import preprocess
from tinyc.ir.builder import new_graph
from tinyc.ir.codec import decode_program, encode_program
from tinyc.ir.errors import IRError, IRFormatError
from tinyc.ir.printer import format_graph
from tinyc.ir.program import Entry, Program


def _program(**rule) -> Program:
    with new_graph("g") as b:
        x = tc.input("x", ("B", 4), **rule)
        graph = b.graph({"y": x * 2.0})
    return Program({"predict": Entry("predict", graph)})


def test_a_declared_rule_survives_the_codec_and_shows_in_the_ir_text():
    program = _program(scale=1 / 255, mean=0.5, std=0.25)
    back = decode_program(encode_program(program))
    (inp,) = back.entries["predict"].graph.inputs
    assert inp.preprocess == {"raw": "u8", "scale": 1 / 255, "offset": 0.0, "mean": 0.5, "std": 0.25}
    assert "input %x: f32[B,4]  # preprocess u8 x -> (x / 255 - 0.5) / 0.25" in format_graph(back.entries["predict"].graph)
    # no rule, no field: files of programs without one keep their bytes
    plain = encode_program(_program())
    assert list(msgpack.unpackb(plain, raw=False)["program"]["entries"][0]["graph"]["inputs"][0]) == ["name", "type"]
    assert decode_program(plain).entries["predict"].graph.inputs[0].preprocess == {}


@pytest.mark.parametrize("edit,words", [
    (lambda r: r.update(scale=0.0), "scale and std must not be 0"),
    (lambda r: r.update(raw="f32"), "raw must be one of u8, u16"),
    (lambda r: r.pop("std"), "needs exactly the fields raw, scale, offset, mean, std"),
    (lambda r: r.update(mean="a"), "mean must be a finite number"),
])
def test_a_malformed_rule_in_a_file_is_refused_naming_the_input(edit, words):
    doc = msgpack.unpackb(encode_program(_program(scale=0.5)), raw=False)
    edit(doc["program"]["entries"][0]["graph"]["inputs"][0]["preprocess"])
    with pytest.raises(IRFormatError) as e:
        decode_program(msgpack.packb(doc, use_bin_type=True))
    assert "input x: preprocess" in e.value.message and words in e.value.message


def test_front_end_refuses_a_rule_that_maps_everything_to_one_value_at_the_users_line():
    with new_graph("g"), pytest.raises(IRError) as e:
        tc.input("x", ("B", 4), scale=0)
    assert e.value.loc.endswith(f"test_preprocess.py:{e.traceback[0].lineno + 1}")
    assert e.value.message == "input 'x': preprocess: scale and std must not be 0 (every input would map to one value)"


def test_steps_divide_by_whole_reciprocals_exactly():
    x = np.arange(256, dtype=np.uint8)
    rule = preprocess.make_rule(scale=1 / 255)
    assert preprocess.steps(rule) == [("div", 255.0)]
    np.testing.assert_array_equal(preprocess.apply(rule, x, np.dtype(np.float32)), x.astype(np.float32) / np.float32(255))
    assert preprocess.value_range(rule) == (0.0, 1.0)
    rule = preprocess.make_rule(scale=0.3, offset=1.0, mean=2.0, std=4.0)
    want = ((x.astype(np.float64) * 0.3 + 1.0) - 2.0) / 4.0
    np.testing.assert_allclose(preprocess.apply(rule, x, np.dtype(np.float64)), want, rtol=1e-15)
    assert preprocess.value_range(rule) == pytest.approx((want.min(), want.max()))
    assert preprocess.make_rule() == {} and preprocess.steps({}) == []


def test_a_rule_is_kept_through_compilation_into_both_entries():
    from tinyc.ir.train import SGD, optimizer_spec

    with new_graph("g") as b:
        x = tc.input("image", ("B", 3), scale=1 / 255)
        w = b.param("w", (3, 2), tc.init.ones())
        loss = (x @ w).sum()
        graph = b.graph({"loss": loss, "y": x @ w})
    graph = graph.with_nodes(graph.nodes, meta={**graph.meta, "loss": "loss", "optimizer": optimizer_spec(SGD(0.1))})
    program, _ = compile_graph(graph)
    for entry in program.entries.values():
        assert [i.preprocess.get("scale") for i in entry.graph.inputs if i.name == "image"] == [1 / 255]
