"""The `.ir` codec: exact round trips, deterministic bytes, and a clear IRFormatError for every
kind of damaged or foreign file."""

from __future__ import annotations

import json
import os
import tracemalloc
from dataclasses import replace

import msgpack
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import tinyc as tc
from tinyc.compiler.passes.memplan import make_plan
from tinyc.ir.codec import (
    FORMAT_VERSION,
    decode_graph,
    decode_program,
    encode_graph,
    encode_program,
    load_program,
    save_program,
)
from tinyc.ir.errors import IRFormatError
from tinyc.ir.plan import MemoryPlan
from tinyc.ir.program import Entry, Program

from .graphgen import HypothesisChooser, build_graph, build_program, random_program


def _assert_round_trip(value, encode, decode) -> None:
    """`value` comes back equal (for a Program: entries in the same order) and re-encodes to the same bytes."""
    blob = encode(value)
    back = decode(blob)
    assert back == value
    if isinstance(value, Program):
        assert list(back.entries) == list(value.entries)
    assert encode(back) == blob


# --------------------------------------------------------------------------- round trips


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.data())
def test_graph_round_trip(data):
    _assert_round_trip(build_graph(HypothesisChooser(data), steps=data.draw(st.integers(1, 25))),
                       encode_graph, decode_graph)


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.data())
def test_program_round_trip(data):
    p = build_program(HypothesisChooser(data), steps=data.draw(st.integers(1, 15)))
    assert list(p.entries) == ["train_step", "predict"]  # not the sorted order, so order is really kept
    _assert_round_trip(p, encode_program, decode_program)


def test_same_model_gives_identical_bytes():
    # two independent traces of the same model, meta dicts in different key orders
    a, b = random_program(7), random_program(7)
    b = Program(b.entries, dict(reversed(list(b.meta.items()))))
    assert encode_program(a) == encode_program(b)


def test_constants_keep_exact_bits_and_dtype():
    with tc.graph("c") as b:
        x = tc.input("x", (3,), "f64")
        special = np.array([np.nan, -0.0, np.inf], np.float64)
        y = x + tc.constant(special, "f64")
        z = tc.where(tc.constant(np.array([True, False, True])), tc.cast(tc.constant(np.array([2**62, -1, 0])), "f64"), y)
        g = b.graph({"y": y, "z": z})
    back = decode_graph(encode_graph(g))
    assert back == g  # equality holds with a NaN constant
    for k, arr in g.constants.items():
        assert back.constants[k].dtype == arr.dtype
        assert back.constants[k].tobytes() == arr.tobytes()
        assert back.constants[k].flags.writeable


def test_header_fields():
    doc = msgpack.unpackb(encode_program(random_program(1, 5)))
    assert list(doc) == ["format", "version", "producer", "program"]
    assert doc["format"] == "tinyc.ir" and doc["version"] == FORMAT_VERSION == 1
    assert doc["producer"] == f"tinyc {tc.__version__}"


def test_save_and_load_are_atomic(tmp_path):
    path = tmp_path / "model.ir"
    p = random_program(3, 10)
    save_program(p, path)
    assert load_program(path) == p
    bad = Program(p.entries, {"oops": object()})
    with pytest.raises(IRFormatError, match="cannot encode meta"):
        save_program(bad, path)
    assert load_program(str(path)) == p  # the old file is untouched
    assert os.listdir(tmp_path) == ["model.ir"]  # no temp files left behind


def test_load_missing_file(tmp_path):
    with pytest.raises(IRFormatError, match="cannot read"):
        load_program(tmp_path / "nope.ir")


def test_load_names_the_file(tmp_path):
    path = tmp_path / "bad.ir"
    path.write_bytes(b"\xc1")
    with pytest.raises(IRFormatError, match="bad.ir: this is not a tinyc IR file"):
        load_program(path)


# --------------------------------------------------------------------------- damaged files


def _known_program() -> Program:
    """A small program holding every feature the damage tests edit: fill, add, constant, param, update."""
    with tc.graph("train") as b:
        x = tc.input("x", ("B", 4))
        w = tc.param("w", (4, 3), tc.init.normal(0.1))
        h = tc.relu(x @ w + np.arange(3, dtype=np.float32)) * 2.0
        loss = h.mean()
        g = b.graph({"loss": loss}, {"w": w - 0.1 * w}, meta={"loss": "loss"})
    return Program({"train_step": Entry("train_step", g, make_plan(g))}, {"epochs": 1})


VALID = encode_program(_known_program())


def _edit(fn) -> bytes:
    """VALID unpacked, changed by `fn(doc)`, packed again."""
    doc = msgpack.unpackb(VALID, raw=False)
    fn(doc)
    return msgpack.packb(doc, use_bin_type=True)


def _train(doc):
    return doc["program"]["entries"][0]["graph"]


def _first(doc, op):
    return next(n for n in _train(doc)["nodes"] if n["op"] == op)


def _refused(data: bytes, fragment: str) -> IRFormatError:
    with pytest.raises(IRFormatError) as info:
        decode_program(data)
    assert fragment in str(info.value), str(info.value)
    return info.value


def test_truncated_at_every_offset():
    for end in range(0, len(VALID), max(1, len(VALID) // 400)):
        with pytest.raises(IRFormatError):
            decode_program(VALID[:end])
    _refused(VALID[: len(VALID) // 2], "truncated")


def test_trailing_garbage():
    _refused(VALID + b"\x00", "trailing garbage")


def test_flipped_first_byte_and_bits():
    _refused(b"\x80" + VALID[1:], "not a tinyc IR file")
    for pos in range(0, len(VALID), 97):
        damaged = bytearray(VALID)
        damaged[pos] ^= 0xFF
        try:
            decode_program(bytes(damaged))  # a flip inside a string or float may still be valid
        except IRFormatError as e:
            assert "internal error" not in str(e)


@pytest.mark.parametrize("blob, fragment", [
    (b"", "empty"),
    (b"\xc1\x00", "not a tinyc IR file"),
    (b"hello, world", "not a tinyc IR file"),
    (b"\x93\x01\x02\x03", "not a tinyc IR file"),
    (json.dumps({"format": "tinyc.ir", "version": 1}).encode(), "looks like JSON"),
    (msgpack.packb({"format": "onnx", "version": 1}), "this is not a tinyc IR file"),
    (msgpack.packb({"version": 1}), "this is not a tinyc IR file"),
])
def test_foreign_files(blob, fragment):
    _refused(blob, fragment)


def test_newer_version():
    blob = _edit(lambda d: d.update(version=3))
    err = _refused(blob, "file version 3 is newer than this tinyc (reads up to 1): upgrade tinyc")
    assert "entry" not in str(err)


def test_version_must_be_int():
    _refused(_edit(lambda d: d.update(version="1")), "version must be an int")


def test_graph_file_is_not_a_program():
    _refused(encode_graph(random_program(2, 3).entries["predict"].graph), "holds a graph, not a program")


def test_unknown_op():
    _refused(_edit(lambda d: _first(d, "fill").update(op="frobnicate")), "unknown op 'frobnicate'")


def test_bad_dtype():
    _refused(_edit(lambda d: _train(d)["inputs"][0]["type"].update(dtype="f16")), "input x: bad dtype 'f16'")
    _refused(_edit(lambda d: _train(d)["constants"]["c0"].update(dtype="f16")), "constant c0: bad dtype 'f16'")


def test_dangling_reference():
    _refused(_edit(lambda d: _train(d)["nodes"][-1]["inputs"].__setitem__(0, "999")), "dangling")


def test_dangling_output():
    _refused(_edit(lambda d: _train(d)["outputs"][0].__setitem__(1, "nowhere")), "dangling")


def test_cycle():
    def edit(d):
        nodes = _train(d)["nodes"]
        a = next(n for n in nodes if n["inputs"])
        a["inputs"][0] = nodes[-1]["out"]  # reads a value defined after it
    _refused(_edit(edit), "before it is defined")


def test_type_contradicting_inference():
    def edit(d):
        node = next(n for n in _train(d)["nodes"] if n["op"] == "add")
        node["type"]["shape"] = node["type"]["shape"] + [7]
    err = _refused(_edit(edit), "contradicts add's inference")
    assert "entry train_step: node %" in str(err)


def test_non_canonical_attribute():
    _refused(_edit(lambda d: _first(d, "fill")["attrs"].update(shape=[1])), "contradicts")
    _refused(_edit(lambda d: _first(d, "fill")["attrs"].update(bogus=1)), "fill has no attribute 'bogus'")


def test_absurd_shape_refused_before_allocating():
    tracemalloc.start()
    try:
        _refused(_edit(lambda d: _train(d)["inputs"][0]["type"].update(shape=["B", 2**20, 2**20])),
                 f"{2**40:,} elements at batch 1 (at most {2**31:,} per tensor)")
        with pytest.raises(IRFormatError) as at_limit:  # exactly the limit passes the bound (and fails later)
            decode_program(_edit(lambda d: _train(d)["inputs"][0]["type"].update(shape=["B", 2**16, 2**15])))
        assert "absurd" not in str(at_limit.value)
        _refused(_edit(lambda d: _train(d)["inputs"][0]["type"].update(shape=[2**40])), "out of range")

        def huge_constant(d):
            _train(d)["constants"]["c0"].update(shape=[2**16, 2**16], dtype="f64")
        _refused(_edit(huge_constant), "absurd shape")
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 20 * 2**20


def test_wrong_constant_data_length():
    def edit(d):
        c = next(iter(_train(d)["constants"].values()))
        c["data"] = c["data"][:-1]
    _refused(_edit(edit), "bytes, but")


def test_constant_of_wrong_type_for_its_node():
    _refused(_edit(lambda d: _train(d)["constants"]["c0"].update(dtype="i64", data=b"\0" * 8, shape=[1])),
             "constant 'c0' holds i64[1], but the node says f32[3]")


def test_extension_types():
    _refused(_edit(lambda d: d["program"]["meta"].update(x=msgpack.ExtType(42, b"payload"))), "extension type 42")
    _refused(_edit(lambda d: d["program"]["meta"].update(x=msgpack.Timestamp(1))), "extension type")


def test_missing_and_unknown_fields():
    _refused(_edit(lambda d: _first(d, "fill").pop("loc")), "missing field 'loc'")
    _refused(_edit(lambda d: _first(d, "fill").pop("scope")), "missing field 'scope'")
    _refused(_edit(lambda d: _first(d, "fill").update(extra=1)), "unknown field 'extra'")
    _refused(_edit(lambda d: d.update(extra=1)), "unknown field 'extra'")


def test_wrong_field_types():
    _refused(_edit(lambda d: _train(d)["params"][0].update(seed="7")), "seed must be an int, got a string")
    _refused(_edit(lambda d: _train(d)["inputs"][0].update(name=7)), "name must be a string, got an int")
    _refused(_edit(lambda d: _train(d).update(nodes={})), "nodes must be a list")
    _refused(_edit(lambda d: _first(d, "fill").update(inputs=[1])), "inputs must be a string")
    _refused(_edit(lambda d: _first(d, "fill").update(scope=7)), "scope must be")


def test_bad_init_rule():
    def edit(d):
        _train(d)["params"].append({"name": "q", "type": {"dtype": "f32", "shape": [2]}, "init": {"rule": "magic"},
                                    "seed": 1, "kind": "param", "loc": ""})
    _refused(_edit(edit), "unknown init rule 'magic'")


def test_deep_nesting():
    deep: list = []
    for _ in range(100):
        deep = [deep]
    _refused(_edit(lambda d: d["program"]["meta"].update(x=deep)), "nested")
    _refused(b"\x91" * 5000 + b"\xc0", "nested too deeply")


def test_invalid_utf8():
    blob = VALID.replace(b"tinyc.ir", b"tinyc.\xff\xfe", 1)
    _refused(blob, "UTF-8")


def test_non_string_map_key():
    _refused(_edit(lambda d: d["program"]["meta"].update({"x": {b"raw": 1}})), "not a string")


def test_huge_length_header_is_cheap():
    # a list header claiming 4 billion entries must not allocate them
    _refused(b"\x84\xa6format\xa8tinyc.ir\xa7version\x01" + b"\xdd\xff\xff\xff\xff", "length field")


def test_duplicate_entry():
    _refused(_edit(lambda d: d["program"]["entries"].append(d["program"]["entries"][0])), "appears twice")


def test_decode_rejects_non_bytes():
    with pytest.raises(IRFormatError, match="expected bytes"):
        decode_program("not bytes")  # type: ignore[arg-type]


def test_encoding_unencodable_meta():
    p = random_program(1, 3)
    with pytest.raises(IRFormatError, match="keys must be strings"):
        encode_program(Program(p.entries, {1: "x"}))
    with pytest.raises(IRFormatError, match="cannot encode"):
        encode_program(Program(p.entries, {"x": 2**70}))


def test_a_file_with_the_former_comparison_names_loads():
    with tc.graph("cmp") as b:
        x = tc.input("x", (3,))
        g = b.graph({"y": tc.cast(tc.greater(x, 0.0) == tc.less(x, 1.0), "f32")})
    doc = msgpack.unpackb(encode_graph(g), raw=False)
    ops = {"greater": "gt", "less": "lt", "equal": "eq"}
    for node in doc["graph"]["nodes"]:
        node["op"] = ops.get(node["op"], node["op"])  # as tinyc wrote them before the rename
    assert {n["op"] for n in doc["graph"]["nodes"]} >= {"gt", "lt", "eq"}
    assert decode_graph(msgpack.packb(doc, use_bin_type=True)) == g


def test_plan_round_trips_typed():
    p = random_program(4, 12)
    entry = p.entries["train_step"]
    plan = replace(entry.plan, peak_bytes=np.int64(entry.plan.peak_bytes))  # NumPy scalars are written plainly
    back = decode_program(encode_program(Program({"train_step": Entry("train_step", entry.graph, plan)})))
    got = back.entries["train_step"].plan
    assert isinstance(got, MemoryPlan) and got == entry.plan and type(got.peak_bytes) is int
    assert isinstance(got.buffers, tuple) and all(isinstance(b, tuple) for b in got.buffers)
    assert got.slots and got.peak_bytes > 0  # a real plan, not an empty one
    assert decode_program(encode_program(Program({"f": Entry("f", entry.graph)}))).entries["f"].plan is None


@pytest.mark.parametrize("edit,message", [
    (lambda d: d.pop("slots"), "missing field 'slots'"),
    (lambda d: d.update(extra=1), "unknown field 'extra'"),
    (lambda d: d.update(batch=0), "batch 0 is out of range"),
    (lambda d: d.update(slots={"nope": 0}), "slots names %nope, which no node of the entry defines"),
    (lambda d: d.update(slots={k: 10**6 for k in d["slots"]}), "but the plan has no such buffer"),
    (lambda d: d.update(buffers=[[3, 1]] * len(d["buffers"])), "lives [3, 1], outside"),
    (lambda d: d.update(inplace={next(iter(d["slots"])): "w"}), "into parameter 'w', which it may not"),
    (lambda d: d.update(alias={next(iter(d["slots"])): "ghost"}), "a view of %ghost"),
    (lambda d: d.update(static="x"), "static must be a list"),
])
def test_a_bad_plan_is_refused_saying_what(edit, message):
    doc = msgpack.unpackb(VALID, raw=False)
    plan = doc["program"]["entries"][0]["plan"]
    edit(plan)
    with pytest.raises(IRFormatError, match="entry train_step: memory plan") as e:
        decode_program(msgpack.packb(doc, use_bin_type=True))
    assert message in e.value.message


def test_foreign_byte_order_and_layout_are_normalised():
    with tc.graph("c") as b:
        x = tc.input("x", (2, 3), "f64")
        y = x + tc.constant(np.arange(6.0).reshape(2, 3), "f64")
        g = b.graph({"y": y})
    (name, arr), = g.constants.items()
    odd = replace(g, constants={name: np.asfortranarray(arr).astype(">f8")})
    back = decode_graph(encode_graph(odd))
    assert back == g and back.constants[name].dtype == np.dtype("<f8")
    assert encode_graph(odd) == encode_graph(g)
