"""The IR text form against a golden file written by hand, and its stability."""

from pathlib import Path

import tinyc as tc
from tinyc.ir.graph import Node
from tinyc.ir.printer import format_graph, format_node
from tinyc.ir.types import TensorType

GOLDEN = Path(__file__).parent / "golden"

MODEL = '''import tinyc as tc
def build(x, w, b):
    h = x @ w + b
    h = tc.relu(h)
    return h.sum()
'''


def _mlp_graph(tmp_path):
    # trace from a real file so locations are a user's file:line
    path = tmp_path / "mlp_model.py"
    path.write_text(MODEL)
    namespace: dict = {}
    exec(compile(MODEL, str(path), "exec"), namespace)  # noqa: S102 - our own source, compiled under a file name
    with tc.graph("mlp") as b:
        x = tc.input("x", ("B", 4))
        w = tc.param("w", (4, 3), tc.init.normal(0.1))
        bias = tc.param("b", (3,))
        loss = namespace["build"](x, w, bias)
    return b.graph({"loss": loss})


def test_graph_text_matches_golden(tmp_path):
    assert format_graph(_mlp_graph(tmp_path)) == (GOLDEN / "mlp.txt").read_text()


def test_printing_is_stable(tmp_path):
    g = _mlp_graph(tmp_path)
    assert format_graph(g) == format_graph(_mlp_graph(tmp_path))


def test_backward_nodes_show_their_provenance():
    node = Node("7", "mul", ("6", "5"), {}, TensorType("f32", ("B", 3)), "mlp.py:15", "grad of relu")
    assert format_node(node).endswith("# grad of relu @ mlp.py:15")
    assert format_node(node).startswith("%7: f32[B,3] = mul %6, %5")


def test_attributes_are_sorted():
    node = Node("1", "fill", (), {"value": 1.0, "dtype": "f32", "shape": ("B",)}, TensorType("f32", ("B",)))
    assert format_node(node) == "%1: f32[B] = fill {dtype=f32, shape=[B], value=1.0}"
