"""Shape and dtype inference: a table of (op, input types, attrs, expected type or error)."""

import pytest

from tinyc.ir.errors import IRError, ShapeError
from tinyc.ir.ops import COMPOSITE, FUSED, OPS, canonical_attrs, infer_type
from tinyc.ir.types import TensorType, broadcast_shapes, parse_type


def T(text: str) -> TensorType:
    return parse_type(text)


# (op, input types, attrs, expected output type) -- expectations worked out by hand from NumPy rules
VALID = [
    ("add", ["f32[B,3]", "f32[3]"], {}, "f32[B,3]"),
    ("add", ["f32[4,1]", "f32[1,5]"], {}, "f32[4,5]"),
    ("sub", ["f64[2,3]", "f64[]"], {}, "f64[2,3]"),
    ("mul", ["i64[B]", "i64[B]"], {}, "i64[B]"),
    ("div", ["f32[B,1,4]", "f32[3,1]"], {}, "f32[B,3,4]"),
    ("pow", ["f32[2]", "f32[]"], {}, "f32[2]"),
    ("maximum", ["f32[B,7]", "f32[1,7]"], {}, "f32[B,7]"),
    ("equal", ["i64[B]", "i64[B]"], {}, "bool[B]"),
    ("not_equal", ["f32[2]", "f32[2]"], {}, "bool[2]"),
    ("less", ["f32[2,1]", "f32[3]"], {}, "bool[2,3]"),
    ("less_equal", ["f32[]", "f32[]"], {}, "bool[]"),
    ("greater", ["f32[B,3]", "f32[]"], {}, "bool[B,3]"),
    ("greater_equal", ["i64[4]", "i64[4]"], {}, "bool[4]"),
    ("neg", ["i64[3]"], {}, "i64[3]"),
    ("sqrt", ["f32[B]"], {}, "f32[B]"),
    ("exp", ["f64[2,2]"], {}, "f64[2,2]"),
    ("log", ["f32[]"], {}, "f32[]"),
    ("relu", ["f32[B,16]"], {}, "f32[B,16]"),
    ("where", ["bool[B,1]", "f32[3]", "f32[]"], {}, "f32[B,3]"),
    ("cast", ["bool[B]"], {"dtype": "f32"}, "f32[B]"),
    ("sum", ["f32[B,3,4]"], {"axes": (1,)}, "f32[B,4]"),
    ("sum", ["f32[B,3,4]"], {"axes": -1, "keepdims": True}, "f32[B,3,1]"),
    ("sum", ["f32[B,3]"], {}, "f32[]"),
    ("mean", ["f32[B,3,4]"], {"axes": (0, 2)}, "f32[3]"),
    ("max", ["i64[5,6]"], {"axes": (0,), "keepdims": True}, "i64[1,6]"),
    ("reshape", ["f32[B,28,28]"], {"shape": ("B", 784)}, "f32[B,784]"),
    ("reshape", ["f32[B,28,28]"], {"shape": ("B", -1)}, "f32[B,784]"),
    ("reshape", ["f32[B,16,64]"], {"shape": (-1, 16, 4, 16)}, "f32[B,16,4,16]"),
    ("reshape", ["f32[6]"], {"shape": (2, -1)}, "f32[2,3]"),
    ("transpose", ["f32[B,16,4,16]"], {"perm": (0, 2, 1, 3)}, "f32[B,4,16,16]"),
    ("transpose", ["f32[2,3,5]"], {}, "f32[5,3,2]"),
    ("broadcast_to", ["f32[3]"], {"shape": ("B", 3)}, "f32[B,3]"),
    ("expand_dims", ["f32[B,3]"], {"axis": -1}, "f32[B,3,1]"),
    ("expand_dims", ["f32[B,3]"], {"axis": 0}, "f32[1,B,3]"),
    ("squeeze", ["f32[B,1,3,1]"], {}, "f32[B,3]"),
    ("squeeze", ["f32[B,1,3,1]"], {"axes": (1,)}, "f32[B,3,1]"),
    ("slice", ["f32[B,28,384]"], {"axis": -1, "start": 128, "stop": 256}, "f32[B,28,128]"),
    ("pad", ["f32[B,4]"], {"axis": 1, "before": 2, "after": 3}, "f32[B,9]"),
    ("matmul", ["f32[B,28,128]", "f32[128,384]"], {}, "f32[B,28,384]"),
    ("matmul", ["f32[B,4,16,16]", "f32[B,4,16,16]"], {}, "f32[B,4,16,16]"),
    ("matmul", ["f64[2,1,3,5]", "f64[7,5,2]"], {}, "f64[2,7,3,2]"),
    # fused ops of the `fuse` pass
    ("matmul_t", ["f32[B,16,64]", "f32[256,64]"], {"tb": True}, "f32[B,16,256]"),
    ("matmul_t", ["f32[B,16,64]", "f32[B,16,32]"], {"ta": True, "alpha": 0.5}, "f32[B,64,32]"),
    ("matmul_t_sum", ["f32[B,16,64]", "f32[B,16,256]"], {"ta": True}, "f32[64,256]"),
    ("matmul_bias", ["f32[B,16,64]", "f32[64,256]", "f32[256]"], {}, "f32[B,16,256]"),
    ("relu_grad", ["f32[B,8]", "f32[B,8]"], {}, "f32[B,8]"),
    ("affine", ["f32[B,16,64]", "f32[64]", "f32[64]"], {}, "f32[B,16,64]"),
    ("layer_norm_grad_scaled", ["f32[B,16,64]", "f32[B,16,64]", "f32[64]"], {}, "f32[B,16,64]"),
    ("layer_norm_affine", ["f32[B,16,64]", "f32[64]", "f32[64]"], {"eps": 1e-6}, "f32[B,16,64]"),
    ("layer_norm_gain_grad", ["f32[B,16,64]", "f32[B,16,64]"], {}, "f32[64]"),
    ("layer_norm_gain_grad", ["f64[B,5,3]", "f64[B,5,3]"], {"axis": 1}, "f64[5]"),
    ("axpby", ["f32[64,256]", "f32[64,256]"], {"a": 0.9, "b": 0.1}, "f32[64,256]"),
    ("adam_param", ["f32[64]", "f32[64]", "f32[64]", "f32[]", "f32[]"], {"eps": 1e-8}, "f32[64]"),
    ("concat", ["f32[B,16,64]", "f32[B,16,128]"], {}, "f32[B,16,192]"),
    ("concat", ["f64[2,3]", "f64[5,3]"], {"axis": 0}, "f64[7,3]"),
    ("allreduce", ["f32[2,3]"], {}, "f32[2,3]"),
    ("flat_concat", ["f32[2,3]", "f32[]", "f32[4]"], {}, "f32[11]"),
    ("flat_concat", ["f64[5]"], {}, "f64[5]"),
    ("one_hot", ["i64[B]"], {"depth": 10}, "f32[B,10]"),
    ("argmax", ["f32[B,10]"], {}, "i64[B]"),
    ("argmax", ["f32[B,10]"], {"axis": 0, "keepdims": True}, "i64[1,10]"),
    ("fill", [], {"shape": ("B", 3), "value": 0.5}, "f32[B,3]"),
    ("zeros_like", ["i64[B]"], {}, "i64[B]"),
    ("ones_like", ["f32[2]"], {}, "f32[2]"),
    ("constant", [], {"name": "c0", "dtype": "f64", "shape": (2, 3)}, "f64[2,3]"),
    ("softmax", ["f32[B,4,16,16]"], {}, "f32[B,4,16,16]"),
    ("log_softmax", ["f64[B,10]"], {"axis": 1}, "f64[B,10]"),
    ("layer_norm", ["f32[B,16,64]"], {"eps": 1e-6}, "f32[B,16,64]"),
    ("softmax_cross_entropy", ["f32[B,10]", "i64[B]"], {}, "f32[]"),
    ("softmax_cross_entropy", ["f32[B,7,10]", "i64[B,7]"], {"reduction": "none"}, "f32[B,7]"),
    ("softmax_grad", ["f32[B,10]", "f32[B,10]"], {}, "f32[B,10]"),
    ("log_softmax_grad", ["f32[B,10]", "f32[B,10]"], {}, "f32[B,10]"),
    ("layer_norm_grad", ["f32[B,64]", "f32[B,64]"], {}, "f32[B,64]"),
    ("softmax_cross_entropy_grad", ["f32[B,10]", "i64[B]", "f32[]"], {}, "f32[B,10]"),
]

# (op, input types, attrs, error class, fragments the message must contain)
INVALID = [
    ("allreduce", ["bool[3]"], {}, IRError, ["allreduce", "numeric"]),
    ("flat_concat", [], {}, IRError, ["flat_concat", "1 or more"]),
    ("flat_concat", ["f32[B,3]"], {}, ShapeError, ["flat_concat", "f32[B,3]", "symbolic"]),
    ("flat_concat", ["f32[3]", "f64[3]"], {}, IRError, ["flat_concat", "dtypes differ"]),
    ("concat", ["f32[2,3]", "f32[2,4]"], {"axis": 0}, ShapeError, ["concat", "[2,3]", "[2,4]"]),
    ("add", ["f32[B,3]", "f32[4]"], {}, ShapeError, ["add", "cannot broadcast", "[B,3]", "[4]"]),
    ("add", ["f32[B]", "f32[N]"], {}, ShapeError, ["B", "N"]),
    ("add", ["f32[3]", "i64[3]"], {}, IRError, ["dtypes differ", "f32[3]", "i64[3]", "tc.cast"]),
    ("div", ["i64[3]", "i64[3]"], {}, IRError, ["div", "float"]),
    ("sqrt", ["i64[3]"], {}, IRError, ["sqrt", "float"]),
    ("where", ["f32[3]", "f32[3]", "f32[3]"], {}, IRError, ["condition must be bool"]),
    ("sum", ["f32[B,3]"], {"axes": (2,)}, ShapeError, ["axis 2", "rank 2"]),
    ("sum", ["f32[B,3]"], {"axes": (1, -1)}, ShapeError, ["repeated axis"]),
    ("reshape", ["f32[B,28,28]"], {"shape": ("B", 700)}, ShapeError, ["cannot reshape", "[B,28,28]", "[B,700]"]),
    ("reshape", ["f32[6]"], {"shape": (-1, -1)}, ShapeError, ["only one dim may be -1"]),
    ("reshape", ["f32[B,4]"], {"shape": (-1,)}, ShapeError, ["-1"]),
    ("transpose", ["f32[2,3]"], {"perm": (0, 0)}, ShapeError, ["not a permutation"]),
    ("broadcast_to", ["f32[3]"], {"shape": (4,)}, ShapeError, ["broadcast"]),
    ("squeeze", ["f32[B,3]"], {"axes": (1,)}, ShapeError, ["dim 1", "not 1"]),
    ("matmul", ["f32[B,784]", "f32[128,10]"], {}, ShapeError, ["inner dims differ", "f32[B,784]", "f32[128,10]", "784 != 128"]),
    ("matmul", ["f32[3]", "f32[3,4]"], {}, ShapeError, ["rank >= 2"]),
    ("slice", ["f32[B,4]"], {"axis": 0, "start": 0, "stop": 2}, ShapeError, ["symbolic"]),
    ("slice", ["f32[4]"], {"axis": 0, "start": 3, "stop": 5}, ShapeError, ["[3:5]", "dim 0"]),
    ("pad", ["f32[4]"], {"axis": 0, "before": -1, "after": 0}, ShapeError, ["cannot pad"]),
    ("matmul", ["i64[3,3]", "i64[3,3]"], {}, IRError, ["float"]),
    ("matmul", ["f32[2,3,4]", "f32[5,4,6]"], {}, ShapeError, ["batch dims"]),
    ("one_hot", ["f32[B]"], {"depth": 10}, IRError, ["i64"]),
    ("softmax_cross_entropy", ["f32[B,10]", "i64[C]"], {}, ShapeError, ["labels of shape [B]"]),
    ("softmax_cross_entropy", ["f32[B,10]", "f32[B]"], {}, IRError, ["i64 class indices"]),
    ("softmax_cross_entropy", ["f32[B,10]", "i64[B]"], {"reduction": "avg"}, IRError, ["mean, sum or none"]),
    ("softmax_grad", ["f32[B,10]", "f32[B,9]"], {}, ShapeError, ["cotangent"]),
    ("cast", ["f32[3]"], {"dtype": "f16"}, IRError, ["attribute dtype"]),
    ("fill", [], {"shape": (3,)}, IRError, ["missing attribute value"]),
    ("relu", ["f32[3]"], {"alpha": 0.1}, IRError, ["unknown attribute", "alpha"]),
    ("add", ["f32[3]"], {}, IRError, ["takes 2 input(s)"]),
    ("no_such_op", ["f32[3]"], {}, IRError, ["unknown op"]),
]


def _infer(op, types, attrs):
    in_types = [T(t) for t in types]
    return infer_type(op, in_types, canonical_attrs(op, in_types, attrs))


@pytest.mark.parametrize("op,types,attrs,expected", VALID, ids=[f"{c[0]}-{i}" for i, c in enumerate(VALID)])
def test_inference(op, types, attrs, expected):
    assert _infer(op, types, attrs) == T(expected)


@pytest.mark.parametrize("op,types,attrs,err,fragments", INVALID, ids=[f"{c[0]}-{i}" for i, c in enumerate(INVALID)])
def test_inference_errors(op, types, attrs, err, fragments):
    with pytest.raises(err) as info:
        _infer(op, types, attrs)
    for fragment in fragments:
        assert fragment in str(info.value)


def test_every_op_has_a_valid_case():
    assert {c[0] for c in VALID} == set(OPS)


def test_canonical_attrs_normalise_axes():
    x = [T("f32[B,3,4]")]
    assert canonical_attrs("sum", x, {"axes": -1}) == {"axes": (2,), "keepdims": False}
    assert canonical_attrs("sum", x, {"axes": None}) == {"axes": (0, 1, 2), "keepdims": False}
    assert canonical_attrs("transpose", x, {}) == {"perm": (2, 1, 0)}
    assert canonical_attrs("softmax", x, {}) == {"axis": 2}
    # op-specific defaults declared in the schemas: squeeze drops the unit dims, expand_dims
    # counts the result's dims
    assert canonical_attrs("squeeze", [T("f32[1,B,1]")], {}) == {"axes": (0, 2)}
    assert canonical_attrs("expand_dims", x, {"axis": -1}) == {"axis": 3}
    with pytest.raises(ShapeError, match="axis 4 is out of range for rank 4"):
        canonical_attrs("expand_dims", x, {"axis": 4})


def test_op_families_partition_the_registry():
    families = {name: s.family for name, s in OPS.items()}
    assert set(families.values()) == {"primitive", "composite", "fused", "parallel"}
    assert set(COMPOSITE) == {n for n, f in families.items() if f == "composite"}
    assert set(FUSED) == {n for n, f in families.items() if f == "fused"}
    assert not any(OPS[n].differentiable for n in FUSED)  # fuse runs after autodiff


@pytest.mark.parametrize(
    "shapes,expected",
    [((("B", 1), (3,)), ("B", 3)), (((1,), ()), (1,)), (((2, 1, 4), (3, 1)), (2, 3, 4)), ((("B",), ("B",)), ("B",))],
)
def test_broadcast_shapes(shapes, expected):
    assert broadcast_shapes(*shapes) == expected


def test_every_schema_is_documented_and_costed():
    for name, s in OPS.items():
        assert s.doc, name
        ins = [(2, 3)] * len(s.inputs)
        assert s.flops(ins, (2, 3), {}) >= 0


def test_matmul_flops_counts_multiply_adds():
    # [4,5] @ [5,6]: 4*6 outputs, each 5 multiplies and 5 adds
    assert OPS["matmul"].flops([(4, 5), (5, 6)], (4, 6), {}) == 2 * 4 * 6 * 5
