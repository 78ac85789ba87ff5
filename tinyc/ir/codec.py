"""The `.ir` file: a Program (or one Graph) as one deterministic msgpack document.

```
{"format": "tinyc.ir", "version": 1, "producer": "tinyc 0.1.0",
 "program": {"entries": [{"name", "graph", "plan"}], "meta": {...}}}      # or "graph": {...}
graph: {"name", "inputs": [{"name", "type", ["preprocess"]}], "params": [{"name", "type", "init", "seed", "kind", "loc"}],
        "constants": {name: {"dtype", "shape", "data"}}, "nodes": [{"out", "op", "inputs", "attrs", "type",
        "loc", "note", "scope"}], "outputs": [[name, value]], "updates": [[param, value]], "meta": {...}}
type:  {"dtype": "f32", "shape": [..., "B"]}      data: raw little-endian bytes, C order
```
Maps are written in this fixed field order, free-form dicts (attrs, init, meta) and the memory
plan (`tinyc.ir.plan`, {} when unplanned) with sorted keys, so the same program always gives the same bytes. Tuples are written as lists; attributes
come back as tuples through the op schema, free-form dicts keep lists.

Loading trusts nothing: msgpack is unpacked with lengths bounded by the file size and no
extension types, every field is checked for presence and type, shapes are bounded before any
array is built, and the graphs are verified. Every failure is an IRFormatError saying where.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping
from typing import Any, NoReturn

import msgpack
import numpy as np

from .docfields import (
    check_dict,
    check_fields,
    check_int,
    check_list,
    check_plain_dict,
    check_str,
    check_symbol,
    fail,
    kind_of,
    short_repr,
)
from .errors import IRError, IRFormatError
from .fileio import atomic_write
from .graph import Graph, Input, Node, Param
from .ops import FORMER_NAMES, OPS
from .plan import decode_plan, plan_doc
from .preprocess import check_rule
from .program import Entry, Program
from .train import program_meta_problem
from .types import DTYPES, MAX_ELEMENTS, MAX_RANK, TensorType, size_problem
from .verify import verify
from .version import __version__

FORMAT = "tinyc.ir"
FORMAT_VERSION = 1
_HEADER = ("format", "version", "producer")
_GRAPH = ("name", "inputs", "params", "constants", "nodes", "outputs", "updates", "meta")
_INPUT = ("name", "type", "preprocess")  # preprocess only when declared: files without it stay as they were
_PARAM = ("name", "type", "init", "seed", "kind", "loc")
_NODE = ("out", "op", "inputs", "attrs", "type", "loc", "note", "scope")
_ARRAY = ("dtype", "shape", "data")
_SEQ_KINDS = ("axes", "perm", "shape")


# --------------------------------------------------------------------------- encoding


def encode_graph(graph: Graph) -> bytes:
    """One graph as a `.ir` document."""
    return _pack({**_header(), "graph": _graph_doc(graph)})


def encode_program(program: Program) -> bytes:
    """A program as a `.ir` document (deterministic bytes)."""
    entries = [{"name": e.name, "graph": _graph_doc(e.graph), "plan": _plain_out(plan_doc(e.plan), "plan")}
               for e in program.entries.values()]
    return _pack({**_header(), "program": {"entries": entries, "meta": _plain_out(dict(program.meta), "meta")}})


def save_program(program: Program, path: str | os.PathLike) -> None:
    """Write atomically: encoded first, then a temp file in the same folder, fsync'd, renamed over `path`."""
    atomic_write(path, encode_program(program))


def _header() -> dict:
    return {"format": FORMAT, "version": FORMAT_VERSION, "producer": f"tinyc {__version__}"}


def _pack(doc: dict) -> bytes:
    try:
        return msgpack.packb(doc, use_bin_type=True)
    except (TypeError, ValueError, OverflowError) as e:
        raise IRFormatError(f"cannot encode the program: {e}") from None


def _input_doc(i: Input) -> dict:
    doc = {"name": i.name, "type": _type_doc(i.type)}
    if i.preprocess:
        doc["preprocess"] = {k: i.preprocess[k] for k in sorted(i.preprocess)}
    return doc


def _type_doc(t: TensorType) -> dict:
    return {"dtype": t.dtype, "shape": list(t.shape)}


def _graph_doc(g: Graph) -> dict:
    return {
        "name": g.name,
        "inputs": [_input_doc(i) for i in g.inputs],
        "params": [{"name": p.name, "type": _type_doc(p.type), "init": _plain_out(dict(p.init), f"param {p.name}"),
                    "seed": p.seed, "kind": p.kind, "loc": p.loc} for p in g.params],
        "constants": {k: _array_doc(g.constants[k]) for k in sorted(g.constants)},
        "nodes": [{"out": n.out, "op": n.op, "inputs": list(n.inputs), "attrs": _plain_out(dict(n.attrs), f"node %{n.out}"),
                   "type": _type_doc(n.type), "loc": n.loc, "note": n.note, "scope": n.scope} for n in g.nodes],
        "outputs": [[k, v] for k, v in g.outputs],
        "updates": [[k, v] for k, v in g.updates],
        "meta": _plain_out(dict(g.meta), "meta"),
    }


def _array_doc(a: np.ndarray) -> dict:
    native = a.dtype.newbyteorder("=")
    dtype = next((k for k, v in DTYPES.items() if v == native), None)
    if dtype is None:
        raise IRFormatError(f"cannot encode a constant of dtype {a.dtype}")
    data = np.ascontiguousarray(a, dtype=a.dtype.newbyteorder("<")).tobytes()
    return {"dtype": dtype, "shape": list(a.shape), "data": data}


def _plain_out(v: Any, where: str) -> Any:
    """`v` as plain msgpack data: dicts with sorted str keys, tuples as lists, NumPy scalars as Python."""
    if isinstance(v, Mapping):
        if not all(isinstance(k, str) for k in v):
            raise IRFormatError(f"cannot encode {where}: dict keys must be strings, got {list(v)!r}")
        return {k: _plain_out(v[k], where) for k in sorted(v)}
    if isinstance(v, (list, tuple)):
        return [_plain_out(x, where) for x in v]
    if isinstance(v, np.generic):
        return v.item()
    if v is None or isinstance(v, (bool, int, float, str)):
        return v
    raise IRFormatError(f"cannot encode {where}: {type(v).__name__} {v!r} is not plain data")


# --------------------------------------------------------------------------- decoding


def decode_graph(data: bytes) -> Graph:
    """Parse and verify a document written by `encode_graph`."""
    return _guarded(lambda: _decode_graph(_body(data, "graph"), "graph", len(data)))


def decode_program(data: bytes) -> Program:
    """Parse and verify a document written by `encode_program`."""
    return _guarded(lambda: _decode_program(_body(data, "program"), len(data)))


def load_program(path: str | os.PathLike) -> Program:
    """Read a `.ir` file; IRFormatError (naming the file) if it cannot be used."""
    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError as e:
        raise IRFormatError(f"cannot read {os.fspath(path)}: {e.strerror or e}") from None
    try:
        return decode_program(data)
    except IRFormatError as e:
        raise IRFormatError(f"{os.fspath(path)}: {e.message}", loc=e.loc, hint=e.hint) from None


def _guarded(decode):
    """Run a decoder so that nothing but IRFormatError escapes."""
    try:
        return decode()
    except IRFormatError:
        raise
    except (RecursionError, MemoryError) as e:
        raise IRFormatError(f"file is too large or too deeply nested to load ({type(e).__name__})") from None
    except Exception as e:  # noqa: BLE001 - a gap in the checks; the fuzz test looks for this message
        raise IRFormatError(f"internal error while loading (a tinyc bug, please report): {type(e).__name__}: {e}") from None


class _ExtensionType(Exception):
    pass


def _refuse_ext(code: int, data: bytes) -> NoReturn:
    raise _ExtensionType(code)


def _unpack(data: bytes) -> Any:
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise IRFormatError(f"expected bytes, got {type(data).__name__}")
    data = bytes(data)
    n = len(data)
    if n == 0:
        raise IRFormatError("this is not a tinyc IR file: it is empty")
    try:
        # every element takes at least one byte, so no length may exceed the input's size
        doc = msgpack.unpackb(data, raw=False, strict_map_key=True, use_list=True, ext_hook=_refuse_ext,
                              max_str_len=n, max_bin_len=n, max_array_len=n, max_map_len=n // 2, max_ext_len=n)
    except Exception as e:  # noqa: BLE001 - msgpack raises several kinds; each becomes IRFormatError
        _not_json(data)
        raise _unpack_error(e) from None
    if not isinstance(doc, dict):
        _not_json(data)
    return doc


def _not_json(data: bytes) -> None:
    if data.lstrip()[:1] in (b"{", b"["):
        raise IRFormatError("this is not a tinyc IR file: it looks like JSON, not msgpack")


def _unpack_error(e: Exception) -> IRFormatError:
    if isinstance(e, _ExtensionType):
        return IRFormatError(f"msgpack extension type {e.args[0]} found: .ir files never contain extension types")
    if isinstance(e, msgpack.ExtraData):
        if not isinstance(e.unpacked, dict) or e.unpacked.get("format") != FORMAT:
            return IRFormatError("this is not a tinyc IR file: not a msgpack document")
        return IRFormatError(f"trailing garbage: {len(e.extra)} byte(s) after the end of the document")
    if isinstance(e, msgpack.StackError):
        return IRFormatError("msgpack data is nested too deeply")
    if isinstance(e, UnicodeDecodeError):
        return IRFormatError(f"a string is not valid UTF-8 ({e.reason})")
    if "for map key" in str(e):
        return IRFormatError("damaged file: a map key is not a string")
    if "incomplete" in str(e):
        return IRFormatError("file is truncated: the msgpack data ends early")
    if "exceeds max" in str(e):
        return IRFormatError(f"damaged file: a length field claims more than the file holds ({e})")
    return IRFormatError(f"this is not a tinyc IR file: not valid msgpack ({type(e).__name__}: {e})")


def _body(data: bytes, kind: str) -> Any:
    """Unpack, check the header, and return the `program` or `graph` body."""
    doc = _unpack(data)
    if not isinstance(doc, dict) or doc.get("format") != FORMAT:
        got = f"format {short_repr(doc.get('format'))}" if isinstance(doc, dict) else f"top level is {kind_of(doc)}"
        raise IRFormatError(f"this is not a tinyc IR file ({got}, expected format {FORMAT!r})")
    version = doc.get("version")
    if isinstance(version, bool) or not isinstance(version, int):
        fail("header", f"version must be an int, got {kind_of(version)}")
    if version > FORMAT_VERSION:
        raise IRFormatError(f"file version {version} is newer than this tinyc (reads up to {FORMAT_VERSION}): upgrade tinyc")
    if version < 1:
        fail("header", f"unknown file version {version}")
    other = "graph" if kind == "program" else "program"
    if other in doc and kind not in doc:
        fail("header", f"this file holds a {other}, not a {kind} (use decode_{other})")
    check_fields(doc, "header", _HEADER + (kind,))
    check_str(doc["producer"], "header", "producer")
    return doc[kind]


def _decode_program(doc: Any, size: int) -> Program:
    check_fields(doc, "program", ("entries", "meta"))
    entries: dict[str, Entry] = {}
    for i, e in enumerate(check_list(doc["entries"], "program", "entries")):
        check_fields(e, f"program: entry #{i}", ("name", "graph", "plan"))
        name = check_str(e["name"], f"program: entry #{i}", "name", nonempty=True)
        if name in entries:
            fail("program", f"entry {short_repr(name)} appears twice")
        graph = _decode_graph(e["graph"], f"entry {name}", size)
        entries[name] = Entry(name, graph, decode_plan(e["plan"], graph, f"entry {name}"))
    meta = check_plain_dict(doc["meta"], "program", "meta")
    problem = program_meta_problem(meta)
    if problem:
        fail("program", problem)
    return Program(entries, meta)


def _decode_graph(doc: Any, where: str, size: int) -> Graph:
    check_fields(doc, where, _GRAPH)
    name = check_str(doc["name"], where, "name")
    inputs = []
    for i, d in enumerate(check_list(doc["inputs"], where, "inputs")):
        check_fields(d, f"{where}: input #{i}", _INPUT if isinstance(d, dict) and "preprocess" in d else _INPUT[:2])
        iname = check_str(d["name"], f"{where}: input #{i}", "name", nonempty=True)
        rule = {}
        if "preprocess" in d:
            try:
                rule = check_rule(d["preprocess"], f"input {iname}: preprocess")
            except IRError as e:
                fail(where, e.message)
        inputs.append(Input(iname, _type(d["type"], f"{where}: input {iname}"), rule))
    params = [_param(d, where, i) for i, d in enumerate(check_list(doc["params"], where, "params"))]
    constants = _constants(doc["constants"], where, size)
    nodes = [_node(d, where, i) for i, d in enumerate(check_list(doc["nodes"], where, "nodes"))]
    outputs, updates = (tuple(_pair(p, f"{where}: {key} #{i}") for i, p in enumerate(check_list(doc[key], where, key)))
                        for key in ("outputs", "updates"))
    graph = Graph(name, tuple(inputs), tuple(params), tuple(nodes), outputs, updates, constants,
                  check_plain_dict(doc["meta"], where, "meta"))
    try:
        verify(graph, where=where)
    except IRError as e:
        raise IRFormatError(e.message, loc=e.loc, hint=e.hint) from None
    return graph


def _param(d: Any, graph_where: str, index: int) -> Param:
    where = f"{graph_where}: param #{index}"
    check_fields(d, where, _PARAM)
    name = check_str(d["name"], where, "name", nonempty=True)
    where = f"{graph_where}: param {name}"
    init = check_plain_dict(d["init"], where, "init")
    seed = check_int(d["seed"], where, "seed", 0, 2**63 - 1)
    kind = check_str(d["kind"], where, "kind")
    return Param(name, _type(d["type"], where), init, seed, kind, check_str(d["loc"], where, "loc"))


def _node(d: Any, graph_where: str, index: int) -> Node:
    where = f"{graph_where}: node #{index}"
    check_fields(d, where, _NODE)
    out = check_str(d["out"], where, "out", nonempty=True)
    where = f"{graph_where}: node %{out}"
    op = check_str(d["op"], where, "op")
    op = FORMER_NAMES.get(op, op)
    if op not in OPS:
        fail(where, f"unknown op {short_repr(op)} (the file may come from a newer tinyc)")
    inputs = tuple(check_str(v, where, "inputs", nonempty=True) for v in check_list(d["inputs"], where, "inputs"))
    attrs = check_dict(d["attrs"], where, "attrs")
    spec = OPS[op].attrs
    for key, value in attrs.items():
        if key not in spec:
            fail(where, f"{op} has no attribute {short_repr(key)}")
        attrs[key] = _attr(value, spec[key].kind, where, f"attrs.{key}")
    node_type = _type(d["type"], where)
    return Node(out, op, inputs, attrs, node_type, check_str(d["loc"], where, "loc"), check_str(d["note"], where, "note"),
                check_str(d["scope"], where, "scope"))


def _attr(v: Any, kind: str, where: str, what: str) -> Any:
    """An attribute in its in-memory form: sequences as tuples; the verifier checks the rest."""
    if kind in _SEQ_KINDS:
        items = check_list(v, where, what)
        if len(items) > MAX_RANK:
            fail(where, f"{what} has {len(items)} entries (at most {MAX_RANK})")
        for x in items:
            if kind == "shape" and isinstance(x, str):
                check_symbol(x, where, what)
            else:
                check_int(x, where, what, -1 if kind == "shape" else -MAX_RANK, MAX_ELEMENTS)
        return tuple(items)
    if kind == "float" and isinstance(v, int) and not isinstance(v, bool):
        return float(v)
    if v is None or isinstance(v, (dict, list)) or not isinstance(v, (bool, int, float, str)):
        fail(where, f"{what} must be a scalar, got {kind_of(v)}")
    return v


def _type(d: Any, where: str) -> TensorType:
    check_fields(d, f"{where}: type", ("dtype", "shape"))
    return TensorType(_dtype(d["dtype"], where, "type.dtype"), _shape(d["shape"], where, symbols=True))


def _dtype(v: Any, where: str, what: str) -> str:
    dtype = check_str(v, where, what)
    if dtype not in DTYPES:
        fail(where, f"bad dtype {short_repr(dtype)} (expected one of {', '.join(DTYPES)})")
    return dtype


def _shape(v: Any, where: str, symbols: bool) -> tuple:
    dims = check_list(v, where, "shape")
    if len(dims) > MAX_RANK:
        fail(where, f"shape has rank {len(dims)} (at most {MAX_RANK})")
    for x in dims:
        if symbols and isinstance(x, str):
            check_symbol(x, where, "shape")
        else:
            check_int(x, where, "shape", 0, MAX_ELEMENTS)
    problem = size_problem(dims)  # the rule the compiler applied: a larger shape is damage
    if problem:
        fail(where, f"absurd {problem}")
    return tuple(dims)


def _constants(d: Any, where: str, size: int) -> dict[str, np.ndarray]:
    table = check_dict(d, where, "constants")
    for name in table:
        check_str(name, where, "constant name", nonempty=True)
    # check every declared size before allocating any array
    total = 0
    for name, a in table.items():
        w = f"{where}: constant {name}"
        check_fields(a, w, _ARRAY)
        dtype = _dtype(a["dtype"], w, "dtype")
        shape = _shape(a["shape"], w, symbols=False)
        data = a["data"]
        if not isinstance(data, bytes):
            fail(w, f"data must be bytes, got {kind_of(data)}")
        need = math.prod(shape) * DTYPES[dtype].itemsize
        if len(data) != need:
            fail(w, f"data has {len(data)} bytes, but {dtype}{list(shape)} needs {need}")
        if dtype == "bool" and data.translate(None, b"\x00\x01"):
            fail(w, "bool data holds bytes other than 0 and 1")
        total += need
    if total > size:
        fail(where, f"constants declare {total} bytes, more than the file's {size}")
    return {name: np.frombuffer(a["data"], DTYPES[a["dtype"]].newbyteorder("<")).astype(DTYPES[a["dtype"]])
            .reshape(tuple(a["shape"])) for name, a in table.items()}


def _pair(v: Any, where: str) -> tuple[str, str]:
    items = check_list(v, where, "entry")
    if len(items) != 2:
        fail(where, f"expected [name, value], got {len(items)} items")
    return check_str(items[0], where, "name", nonempty=True), check_str(items[1], where, "value", nonempty=True)
