"""The optimization passes: each preserves what the graph computes, is idempotent, and does its job."""

from __future__ import annotations

import re
from collections import Counter

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import tinyc as tc
from tinyc.compiler.graphutil import peak_live_bytes, topological_order
from tinyc.compiler.passes import load_all
from tinyc.compiler.passes.schedule import greedy_order
from tinyc.compiler.passes.simplify import RULES
from tinyc.ir.errors import IRError
from tinyc.ir.graph import Graph, Node
from tinyc.ir.plan import DEFAULT_BATCH
from tinyc.ir.printer import format_graph
from tinyc.ir.types import TensorType
from tinyc.ir.verify import verify
from tinyc.runtime.reference import run_graph

RULES_BEFORE = dict(RULES)

PASSES = load_all()
OPT_PASSES = ("simplify", "fold", "cse", "dce", "schedule")


def apply(graph: Graph, *names: str) -> Graph:
    for name in names:
        graph = PASSES[name].fn(graph)
        verify(graph, where=f"after {name}")
    return graph


def random_feeds(graph: Graph, batch: int = 3, seed: int = 0, ints: tuple[int, int] = (-5, 5)) -> dict[str, np.ndarray]:
    """Random values for every input, symbols taken as `batch`; integers drawn from [ints)."""
    rng = np.random.default_rng(seed)
    feeds = {}
    for i in graph.inputs:
        shape = i.type.concrete({s: batch for s in i.type.symbols})
        if i.type.dtype == "i64":
            feeds[i.name] = rng.integers(*ints, shape)
        elif i.type.dtype == "bool":
            feeds[i.name] = rng.random(shape) < 0.5
        else:
            # a learning rate of unit size would throw a training step's updates far off
            feeds[i.name] = rng.standard_normal(shape).astype(i.type.np_dtype) * (0.01 if i.name == "lr" else 1)
    return feeds


def assert_same_values(before: Graph, after: Graph, seed: int = 0, rtol: float = 1e-5, atol: float = 1e-6,
                       ints: tuple[int, int] = (-5, 5)) -> None:
    """Both graphs give the same outputs and updates (keys, dtypes, shapes, values) on random feeds."""
    feeds = random_feeds(before, seed=seed, ints=ints)
    want, got = run_graph(before, feeds), run_graph(after, feeds)
    assert want.keys() == got.keys()
    for k in want:
        assert got[k].dtype == want[k].dtype and got[k].shape == want[k].shape, k
        np.testing.assert_allclose(got[k], want[k], rtol=rtol, atol=atol, err_msg=k)


def ops(graph: Graph) -> Counter:
    return Counter(n.op for n in graph.nodes)


def build(fn, **outputs_kw) -> Graph:
    with tc.graph() as b:
        outs = fn()
        return b.graph(outs if isinstance(outs, dict) else {"y": outs})


def squash(text: str) -> str:
    """Printed IR with the comment-column padding collapsed, so expected text can be hand-written."""
    return "\n".join(re.sub(r"\s+", " ", line).strip() for line in text.strip().splitlines())


# --------------------------------------------------------------------------- simplify


def x3():
    return tc.input("x", ["B", 3])


def xi():
    return tc.input("i", ["B", 3], "i64")


def self_sub(x):
    return x - x


# (name, graph body, ops left after simplify + dce); each rule of RULES fires in at least one row
SIMPLIFY_CASES = [
    ("mul_one", lambda: x3() * 1.0, {}),
    ("one_mul", lambda: 1.0 * x3(), {}),
    ("add_zero", lambda: x3() + 0.0, {}),
    ("zero_add", lambda: 0.0 + x3(), {}),
    ("sub_zero", lambda: x3() - 0.0, {}),
    ("div_one", lambda: x3() / 1.0, {}),
    ("uniform_constant", lambda: x3() * tc.constant(np.ones(3)), {}),
    ("mul_one_broadcasts", lambda: x3() * tc.fill([2, "B", 3], 1.0), {"broadcast_to": 1}),
    ("sub_self_int", lambda: self_sub(xi()), {"fill": 1}),
    ("sub_self_float_kept", lambda: self_sub(x3()), {"sub": 1}),
    ("mul_zero_int", lambda: xi() * 0, {"fill": 1}),
    ("mul_zero_float_kept", lambda: x3() * 0.0, {"mul": 1, "fill": 1}),
    ("neg_neg", lambda: tc.neg(tc.neg(x3())), {}),
    ("neg_neg_neg", lambda: tc.neg(tc.neg(tc.neg(x3()))), {"neg": 1}),
    ("transpose_identity", lambda: tc.transpose(x3(), (0, 1)), {}),
    ("transpose_inverse", lambda: tc.transpose(tc.transpose(tc.input("x", [2, 3, 4]), (1, 2, 0)), (2, 0, 1)), {}),
    ("transpose_compose", lambda: tc.transpose(tc.transpose(tc.input("x", [2, 3, 4]), (1, 0, 2)), (0, 2, 1)),
     {"transpose": 1}),
    ("reshape_same", lambda: tc.reshape(x3(), ("B", 3)), {}),
    ("reshape_reshape", lambda: tc.reshape(tc.reshape(tc.input("x", ["B", 6]), ("B", 2, 3)), ("B", 3, 2)),
     {"reshape": 1}),
    ("reshape_roundtrip", lambda: tc.reshape(tc.reshape(tc.input("x", ["B", 6]), ("B", 2, 3)), ("B", 6)), {}),
    ("broadcast_same", lambda: tc.broadcast_to(x3(), ("B", 3)), {}),
    ("broadcast_broadcast", lambda: tc.broadcast_to(tc.broadcast_to(tc.input("x", [3]), (2, 3)), (4, 2, 3)),
     {"broadcast_to": 1}),
    ("cast_same", lambda: tc.cast(x3(), "f32"), {}),
    ("sum_no_axes", lambda: tc.sum(x3(), axis=()), {}),
    ("mean_size_one_keepdims", lambda: tc.mean(tc.input("x", ["B", 1]), axis=1, keepdims=True), {}),
    ("max_size_one_keepdims", lambda: tc.max(tc.input("x", ["B", 1]), axis=1, keepdims=True), {}),
    ("sum_kept", lambda: tc.sum(x3(), axis=1), {"sum": 1}),
    ("squeeze_expand", lambda: tc.squeeze(tc.expand_dims(x3(), 1), 1), {}),
    ("squeeze_nothing", lambda: tc.squeeze(x3(), ()), {}),
    ("expand_squeeze", lambda: tc.expand_dims(tc.squeeze(tc.input("x", ["B", 1, 3]), 1), 1), {}),
    ("pow_one", lambda: x3() ** 1.0, {}),
    ("pow_two", lambda: x3() ** 2.0, {"mul": 1}),
    ("pow_zero", lambda: x3() ** 0.0, {"fill": 1}),
    ("chain", lambda: tc.transpose(tc.transpose((tc.neg(tc.neg(x3())) * 1.0 + 0.0) ** 1.0)) / 1.0, {}),
]


@pytest.mark.parametrize("name, body, expected", SIMPLIFY_CASES, ids=[c[0] for c in SIMPLIFY_CASES])
def test_simplify_rule(name, body, expected):
    g = build(body)
    out = apply(g, "simplify", "dce")
    assert ops(out) == Counter(expected), format_graph(out)
    assert_same_values(g, out)
    assert apply(out, "simplify") == out


def test_every_simplify_rule_fires_in_some_case(monkeypatch):
    fired: set[str] = set()

    def counting(rule):
        def wrapped(s, n):
            result = rule(s, n)
            if result is not None:
                fired.add(rule.__name__)
            return result

        return wrapped

    for op, rules in list(RULES.items()):
        monkeypatch.setitem(RULES, op, tuple(counting(r) for r in rules))
    for _, body, _ in SIMPLIFY_CASES:
        apply(build(body), "simplify")
    names = {r.__name__ for op in RULES for r in RULES_BEFORE[op]}
    assert names - fired == set()


def test_simplify_keeps_location_and_text():
    with tc.graph() as b:
        x = tc.input("x", [2, 3, 4])
        with b.at("m.py:7", ""):
            y = tc.transpose(tc.transpose(x, (1, 0, 2)), (0, 2, 1))
            z = y ** 2.0
        g = b.graph({"y": z})
    out = apply(g, "simplify", "dce")
    # transpose(transpose(x, p), q) -> transpose(x, p[q]) with p=[1,0,2], q=[0,2,1]: perm [1,2,0],
    # shape [x1, x2, x0] = [3,4,2]; pow(y, 2) -> mul(y, y) keeps the name %3 of the pow.
    assert squash(format_graph(out)) == squash("""
        graph main {
          input %x: f32[2,3,4]
          %1: f32[3,4,2] = transpose %x {perm=[1,2,0]}  # m.py:7
          %3: f32[3,4,2] = mul %1, %1  # m.py:7
          output y = %3
        }
    """)


# --------------------------------------------------------------------------- fold


def test_fold_constants_to_constant_and_fill():
    c = np.array([1.0, 2.0, 3.0], np.float32)

    def body():
        x = x3()
        k = tc.constant(c) * 2.0 + 1.0  # [3, 5, 7]
        s = tc.fill([], 2.0) * tc.fill([], 3.0)  # 6
        wide = tc.broadcast_to(tc.fill([], 4.0), ("B", 3))  # symbolic, stays a fill
        return {"y": x * k + s + wide, "z": tc.zeros_like(x)}

    g = build(body)
    out = apply(g, "fold", "dce")
    assert ops(out) == Counter({"constant": 1, "fill": 3, "mul": 1, "add": 2})
    (name,) = out.constants
    np.testing.assert_array_equal(out.constants[name], [3.0, 5.0, 7.0])
    fills = sorted((n.attrs["value"], n.type.shape) for n in out.nodes if n.op == "fill")
    assert fills == [(0.0, ("B", 3)), (4.0, ("B", 3)), (6.0, ())]
    assert_same_values(g, out)
    assert apply(out, "fold") == out


def test_fold_text():
    with tc.graph() as b:
        with b.at("m.py:3", ""):
            y = tc.fill([], 2.0) * tc.fill([], 3.0) - tc.fill([], 1.0)
        g = b.graph({"y": y})
    # mul(2, 3) -> 6 ; sub(6, 1) -> 5, each folded node keeping its name and line
    assert squash(format_graph(apply(g, "fold", "dce"))) == squash("""
        graph main {
          %4: f32[] = fill {dtype=f32, shape=[], value=5.0}  # m.py:3
          output y = %4
        }
    """)


def test_fold_leaves_nan_and_symbolic_values():
    def body():
        x = x3()
        bad = tc.log(tc.fill([], -1.0))  # NaN: left for the runtime's check to report
        c = tc.constant(np.arange(3.0)) + tc.fill(["B", 3], 1.0)  # symbolic and not uniform
        return {"y": x + bad, "z": c}

    g = build(body)
    out = apply(g, "fold")
    assert ops(out)["log"] == 1 and ops(out)["add"] == 2


def test_fold_canonicalises_uniform_constants():
    g = build(lambda: x3() + tc.constant(np.full(3, 2.5)))
    out = apply(g, "fold", "dce")
    assert ops(out) == Counter({"fill": 1, "add": 1}) and not out.constants
    assert_same_values(g, out)


def test_fold_does_not_materialise_broadcasts():
    g = build(lambda: tc.broadcast_to(tc.constant(np.arange(3.0)), (1000, 3)))
    assert ops(apply(g, "fold")) == ops(g)


# --------------------------------------------------------------------------- cse and dce


def test_cse_merges_duplicates():
    def body():
        x, y = x3(), tc.input("y", [3])
        a = x * y
        b = y * x  # commutative duplicate
        c = tc.exp(x * y)
        d = tc.exp(x * y)
        return {"u": a + b, "v": c - d, "w": tc.transpose(x) + tc.transpose(x)}

    g = build(body)
    out = apply(g, "cse")
    assert ops(g) == Counter({"mul": 4, "exp": 2, "add": 2, "sub": 1, "transpose": 2})
    assert ops(out) == Counter({"mul": 1, "exp": 1, "add": 2, "sub": 1, "transpose": 1})
    assert_same_values(g, out)
    assert apply(out, "cse") == out


def test_cse_merges_equal_constants_and_keeps_first_location():
    x = Node("0", "constant", (), {"name": "a", "dtype": "f32", "shape": (2,)}, TensorType("f32", (2,)), "m.py:1")
    y = Node("1", "constant", (), {"name": "b", "dtype": "f32", "shape": (2,)}, TensorType("f32", (2,)), "m.py:2")
    z = Node("2", "add", ("0", "1"), {}, TensorType("f32", (2,)), "m.py:3")
    arr = np.array([1.0, 2.0], np.float32)
    g = Graph("g", nodes=(x, y, z), outputs=(("y", "2"),), constants={"a": arr, "b": arr.copy()})
    out = apply(g, "cse", "dce")
    assert squash(format_graph(out)) == squash("""
        graph g {
          const a: f32[2]
          %0: f32[2] = constant {dtype=f32, name=a, shape=[2]}  # m.py:1
          %2: f32[2] = add %0, %0  # m.py:3
          output y = %2
        }
    """)
    assert_same_values(g, out)


def test_dce_removes_dead_nodes_and_constants_keeps_params():
    def body():
        x = x3()
        w = tc.param("w", [3, 3])
        tc.param("unused", [2])
        tc.exp(x) * tc.constant(np.arange(3.0))  # dead
        return x @ w

    g = build(body)
    out = apply(g, "dce")
    assert ops(out) == Counter({"matmul": 1}) and not out.constants
    assert [p.name for p in out.params] == ["w", "unused"] and [i.name for i in out.inputs] == ["x"]
    assert_same_values(g, out)
    assert apply(out, "dce") is out


# --------------------------------------------------------------------------- schedule


def branches(n: int = 4) -> Graph:
    """n independent branches traced breadth-first: every big intermediate is alive at once."""
    with tc.graph() as b:
        x = tc.input("x", ["B", 64])
        first = [tc.exp(x * float(i + 1)) for i in range(n)]
        second = [tc.relu(f) for f in first]
        sums = [tc.sum(s, axis=1) for s in second]
        total = sums[0]
        for s in sums[1:]:
            total = total + s
        return b.graph({"y": total})


def is_topological(graph: Graph) -> bool:
    defined = {i.name for i in graph.inputs} | {p.name for p in graph.params}
    for n in graph.nodes:
        if not all(v in defined for v in n.inputs):
            return False
        defined.add(n.out)
    return True


def test_schedule_lowers_peak_on_independent_branches():
    g = branches()
    out = apply(g, "schedule")
    assert is_topological(out) and ops(out) == ops(g)
    before = peak_live_bytes(g, batch=DEFAULT_BATCH)
    after = peak_live_bytes(out, batch=DEFAULT_BATCH)
    assert after < before
    assert apply(g, "schedule") == out  # deterministic
    assert apply(out, "schedule") == out  # idempotent
    assert_same_values(g, out)


def test_greedy_order_is_topological_on_a_deep_graph():
    with tc.graph() as b:
        x = tc.input("x", ["B", 4])
        y = x
        for i in range(3000):  # deep enough to break recursive traversals
            y = y + x if i % 2 else tc.relu(y)
        g = b.graph({"y": y})
    order = greedy_order(g)
    assert [n.out for n in order] == [n.out for n in g.nodes]
    assert [n.out for n in topological_order(g)] == [n.out for n in g.nodes]


# --------------------------------------------------------------------------- random graphs


@st.composite
def random_graphs(draw) -> Graph:
    """Small programs over f32[B,3] and f32[3] values, with the constants the rules look for."""
    with tc.graph() as b:
        pool = [tc.input("x", ["B", 3]), tc.input("y", [3])]
        for _ in range(draw(st.integers(1, 12))):
            a = pool[draw(st.integers(0, len(pool) - 1))]
            c = pool[draw(st.integers(0, len(pool) - 1))]
            k = draw(st.sampled_from([0.0, 1.0, 2.0, -1.0]))
            kind = draw(st.sampled_from(["add", "sub", "mul", "addk", "mulk", "divk", "powk", "neg", "relu",
                                         "tt", "rr", "fillk", "sumk", "dup"]))
            if kind in ("add", "sub", "mul"):
                v = b.apply(kind, [a, c])
            elif kind == "addk":
                v = a + k
            elif kind == "mulk":
                v = k * a
            elif kind == "divk":
                v = a / (k if k else 1.0)
            elif kind == "powk":
                v = a ** abs(k)
            elif kind == "neg":
                v = -a
            elif kind == "relu":
                v = tc.relu(a)
            elif kind == "tt":
                v = tc.transpose(tc.transpose(a))
            elif kind == "rr":
                v = tc.reshape(tc.reshape(a, (1,) + a.shape), a.shape)
            elif kind == "fillk":
                v = a * (tc.fill([3], k) + tc.fill([], 1.0))
            elif kind == "sumk":
                v = tc.sum(a, axis=-1, keepdims=True) + a
            else:
                v = b.apply(draw(st.sampled_from(["add", "mul"])), [a, c]) + b.apply("add", [c, a])
            pool.append(v)
        outs = {f"o{i}": pool[j] for i, j in enumerate(sorted(set(draw(st.lists(st.integers(2, len(pool) - 1),
                                                                                  min_size=1, max_size=3)))))}
        return b.graph(outs)


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(random_graphs(), st.sampled_from(OPT_PASSES + ("all",)))
def test_random_graphs_keep_values_and_passes_are_idempotent(g, name):
    names = OPT_PASSES if name == "all" else (name,)
    out = apply(g, *names)
    assert_same_values(g, out)
    if name == "all":  # the pipeline may find more on a second round; each pass alone may not
        assert len(out.nodes) <= len(g.nodes)
    else:
        assert apply(out, name) == out


def test_schedule_names_a_cycle():
    t = TensorType("f32", (3,))
    g = Graph("g", inputs=(), nodes=(Node("0", "neg", ("1",), {}, t), Node("1", "neg", ("0",), {}, t),
                                     Node("2", "exp", ("1",), {}, t)), outputs=(("y", "2"),))
    with pytest.raises(IRError, match="cycle: %0 -> %1|cycle: %1 -> %0"):
        PASSES["schedule"].fn(g)


def test_topological_order_repairs_a_shuffled_graph():
    from tinyc.compiler.graphutil import live_values

    g = branches(2)
    shuffled = g.with_nodes(reversed(g.nodes))  # every use before its definition
    order = topological_order(shuffled)
    verify(shuffled.with_nodes(order), where="topological_order")  # defined before used
    assert sorted(n.out for n in order) == sorted(n.out for n in g.nodes)
    assert live_values(g) == {"x"} | {n.out for n in g.nodes}  # every node feeds y
