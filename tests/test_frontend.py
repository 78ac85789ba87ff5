"""The tracing front-end: operators, lifting of Python values, names, and errors at the user's line."""

import inspect

import numpy as np
import pytest

import tinyc as tc
from tinyc.runtime.init import init_param


def _line() -> int:
    """The caller's line number."""
    return inspect.currentframe().f_back.f_lineno


def test_operators_record_the_expected_ops():
    with tc.graph() as b:
        x = tc.input("x", ("B", 3))
        w = tc.param("w", (3, 2), tc.init.normal(0.1))
        y = (x @ w + 1.0) * 2 - x.sum(axis=1, keepdims=True) / 3.0
        z = -(y ** 2.0)
        m = (x > 0.0)
        t = x.T
    g = b.graph()
    ops = [n.op for n in g.nodes]
    assert ops[:2] == ["matmul", "fill"] and "add" in ops and "div" in ops and "pow" in ops
    assert z.type == tc.TensorType("f32", ("B", 2))
    assert m.dtype == "bool" and t.shape == (3, "B")
    assert g.types[y.name] == y.type


@pytest.mark.parametrize("fn,operator", [
    (tc.equal, "__eq__"), (tc.not_equal, "__ne__"), (tc.less, "__lt__"), (tc.less_equal, "__le__"),
    (tc.greater, "__gt__"), (tc.greater_equal, "__ge__"),
])
def test_a_comparison_records_the_op_of_its_name(fn, operator):
    # one name per op: tc.equal records `equal`, the kernel and the schema are `equal`
    with tc.graph() as b:
        x = tc.input("x", (2,))
        by_fn, by_operator = fn(x, 1.0), getattr(x, operator)(1.0)
    g = b.graph()
    assert g.producers[by_fn.name].op == g.producers[by_operator.name].op == fn.__name__


def test_reflected_operators_keep_operand_order():
    with tc.graph() as b:
        x = tc.input("x", (2,))
        y = 1.0 - x
    g = b.graph()
    node = g.producers[y.name]
    assert node.op == "sub" and node.inputs[1] == "x"
    assert g.producers[node.inputs[0]].op == "fill"


def test_location_is_the_users_line():
    with tc.graph() as b:
        x = tc.input("x", ("B", 4))
        line = _line(); y = tc.relu(x)
    assert b.graph().producers[y.name].loc == f"test_frontend.py:{line}"


def test_shape_error_names_user_line_and_both_shapes():
    with tc.graph():
        x = tc.input("x", ("B", 784))
        w = tc.param("w", (128, 10))
        with pytest.raises(tc.ShapeError) as info:
            line = _line(); x @ w
    text = str(info.value)
    assert text.startswith(f"test_frontend.py:{line}: matmul: inner dims differ")
    assert "f32[B,784]" in text and "f32[128,10]" in text and "hint:" in text


def test_op_on_non_tensor_is_a_clear_error():
    with tc.graph(), pytest.raises(tc.IRError) as info:
        line = _line(); tc.relu([1, 2])
    assert str(info.value).startswith(f"test_frontend.py:{line}: relu: expected a Tensor, got list")


def test_numpy_arrays_and_scalars_are_lifted_to_constants():
    with tc.graph() as b:
        x = tc.input("x", (3,))
        y = x * np.array([1.0, 2.0, 3.0]) + 0.5
    g = b.graph()
    assert y.dtype == "f32"
    (key,) = g.constants
    np.testing.assert_array_equal(g.constants[key], np.array([1, 2, 3], np.float32))


def test_same_constant_is_stored_once():
    with tc.graph() as b:
        tc.constant(np.arange(4.0))
        tc.constant(np.arange(4.0))
    assert len(b.constants) == 1


def test_names_must_be_valid_and_unique():
    with tc.graph():
        tc.input("x", (3,))
        with pytest.raises(tc.IRError, match="defined twice"):
            tc.param("x", (3,))
        with pytest.raises(tc.IRError, match="not valid"):
            tc.input("12", (3,))


def test_scopes_name_parameters_hierarchically():
    with tc.graph() as b, tc.scope("enc0"), tc.scope("attn"):
        tc.param("wq", (4, 4))
    assert [p.name for p in b.graph().params] == ["enc0.attn.wq"]


def test_truth_value_of_a_tensor_is_refused():
    with tc.graph():
        x = tc.input("x", (3,))
        with pytest.raises(tc.IRError, match="tc.where"):
            bool(x > 0)


def test_tensors_of_two_graphs_do_not_mix():
    with tc.graph():
        a = tc.input("a", (2,))
    with tc.graph():
        b = tc.input("b", (2,))
        with pytest.raises(tc.IRError, match="another graph"):
            a + b


def test_int_tensor_with_fractional_float_is_refused():
    with tc.graph():
        i = tc.input("i", (2,), dtype="i64")
        with pytest.raises(tc.IRError, match="tc.cast"):
            i * 0.5


def test_params_record_init_rule_and_a_name_derived_seed():
    with tc.graph() as b1:
        tc.param("w", (2, 2), tc.init.xavier_uniform(gain=2.0))
    with tc.graph() as b2:
        tc.param("other", (1,))
        tc.param("w", (2, 2), tc.init.xavier_uniform(gain=2.0))
    (w1,) = b1.graph().params
    w2 = b2.graph().param_map["w"]
    assert w1.init == {"rule": "xavier_uniform", "gain": 2.0}
    assert w1.seed == w2.seed  # adding a parameter does not change another's init


def test_unknown_init_rule_is_refused():
    with pytest.raises(tc.IRError, match="unknown init rule"):
        tc.init.make("glorot")


def test_a_hand_written_init_dict_is_stored_canonical_and_runs():
    with tc.graph() as b:
        x = tc.input("x", (2,))
        w = tc.param("w", (2,), init={"rule": "normal", "std": 1})
        f = tc.function(x * w, [x])
    param = b.graph().param_map["w"]
    assert param.init == {"rule": "normal", "std": 1.0, "mean": 0.0}
    np.testing.assert_array_equal(f(np.ones(2, np.float32)), init_param(param, 0))  # 1 * w: w's seed-0 init


@pytest.mark.parametrize("init,words", [
    ({"rule": "normal", "sd": 1.0}, "unknown argument(s) sd"),
    ({"std": 1.0}, "init must be"),
    ("zeros", "init must be"),
])
def test_a_bad_init_names_the_users_line(init, words):
    with tc.graph(), pytest.raises(tc.IRError) as info:
        line = _line(); tc.param("w", (2,), init=init)
    assert str(info.value).startswith(f"test_frontend.py:{line}: "), str(info.value)
    assert words in str(info.value)


def test_split_cuts_equal_slices():
    with tc.graph():
        x = tc.input("x", ("B", 6))
        parts = tc.split(x, 3)
        f = tc.function(parts, [x])
    data = np.arange(12.0).reshape(2, 6)
    assert [p.shape for p in parts] == [("B", 2)] * 3
    for got, want in zip(f(data), np.split(data, 3, axis=-1)):
        np.testing.assert_array_equal(got, want)


@pytest.mark.parametrize("parts,axis,words", [
    (4, -1, "does not divide into 4 parts"),
    (0, -1, "parts must be a positive int"),
    (2, 5, "axis 5 is out of range"),
    (2, 0, "symbolic"),
])
def test_split_errors_name_the_users_line(parts, axis, words):
    with tc.graph():
        x = tc.input("x", ("B", 6))
        with pytest.raises(tc.ShapeError) as info:
            line = _line(); tc.split(x, parts, axis=axis)
    assert str(info.value).startswith(f"test_frontend.py:{line}: split: "), str(info.value)
    assert words in str(info.value)


def test_op_without_any_tensor_is_a_clear_error():
    with tc.graph(), pytest.raises(tc.IRError) as info:
        line = _line(); tc.add(1.0, np.ones(2))
    assert str(info.value).startswith(f"test_frontend.py:{line}: add: needs at least one Tensor argument, got float, ndarray")


def test_nary_op_records_into_the_graph_of_its_tensor():
    with tc.graph() as first:
        x = tc.input("x", (2,))
    with tc.graph() as second:
        y = tc.maximum(0.0, x)  # built while another graph is current: goes to x's graph
    assert second.graph().nodes == () and first.graph().producers[y.name].op == "maximum"


def test_front_end_defaults_are_the_op_schemas():
    # an attribute's default is the op schema's fact; the front-end's signatures show it, never another value
    from tinyc import frontend
    from tinyc.ir.ops import OPS
    from tinyc.ir.ops.schema import Attr
    from tinyc.models import LayerNorm

    none = Attr("int").default  # what an attribute without a default holds
    checked = []
    for name, fn in inspect.getmembers(frontend, inspect.isfunction):
        if fn.__module__ != frontend.__name__ or name not in OPS:
            continue
        for p in inspect.signature(fn).parameters.values():
            default = OPS[name].attrs[p.name].default if p.name in OPS[name].attrs else none
            if p.default is not inspect.Parameter.empty and default is not none:
                assert p.default == default, (name, p.name, p.default, default)
                checked.append((name, p.name))
    assert len(checked) >= 10 and ("layer_norm", "eps") in checked
    eps = inspect.signature(LayerNorm).parameters["eps"].default
    assert eps == OPS["layer_norm"].attrs["eps"].default
