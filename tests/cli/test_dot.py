"""`inspect --format dot`: layer clusters, collapsed boxes with op counts, a legend; checked as text
(no Graphviz needed)."""

from __future__ import annotations

import re
import shutil
import struct
import subprocess
from pathlib import Path

import pytest

from tinyc.cli.dot import BOX_SHAPE, COLOURS, to_dot
from tinyc.cli.session import load_or_compile

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
NODE = re.compile(r'^\s*("[^"]+") \[label="((?:[^"\\]|\\.)*)"(.*)\];$', re.MULTILINE)
EDGE = re.compile(r'^\s*("[^"]+") -> ("[^"]+");$', re.MULTILINE)


@pytest.fixture(scope="module")
def vit():
    return load_or_compile(EXAMPLES / "vit_mnist.py").program


def nodes(dot: str) -> dict[str, tuple[str, str]]:
    return {m.group(1): (m.group(2), m.group(3)) for m in NODE.finditer(dot)}


def clusters(dot: str) -> list[str]:
    return re.findall(r'subgraph "cluster_train_step/([^"]+)"', dot)


def test_default_depth_clusters_top_layers_and_collapses_sub_layers(vit):
    dot = to_dot(vit, ["train_step"])
    assert sorted(clusters(dot)) == ["embed", "enc0", "enc1", "head", "ln_f"]
    drawn = nodes(dot)
    boxes = {label.split("\\n")[0]: label for label, attrs in drawn.values() if f'shape="{BOX_SHAPE}"' in attrs}
    attn = boxes["enc0.attn (forward)"]
    assert re.search(r"\\n\d+ ops, [\d.]+[kMG]? FLOPs\\n16,640 params$", attn)
    assert "enc0 (backward)" in boxes and "enc1 (optimizer)" in boxes
    assert not any("enc0.attn.qkv" in label and "ops" not in label for label, _ in drawn.values())
    graph = vit.entries["train_step"].graph
    # every node is drawn once: on its own or counted in exactly one box
    singles = sum(1 for label, attrs in drawn.values() if re.match(r"%\d+ ", label))
    counted = sum(int(re.search(r"\\n(\d+) ops", label).group(1)) for label in boxes.values() if " ops, " in label)
    assert singles + counted == len(graph.nodes)


def test_every_edge_joins_declared_nodes_and_none_repeats(vit):
    dot = to_dot(vit, ["train_step", "predict"])
    declared = set(nodes(dot))
    edges = EDGE.findall(dot)
    assert edges and all(a in declared and b in declared for a, b in edges)
    assert len(edges) == len(set(edges)) and all(a != b for a, b in edges)
    assert dot.count("{") == dot.count("}")


def test_depth_draws_deeper_clusters_until_nothing_is_collapsed(vit):
    deep = to_dot(vit, ["train_step"], depth=9)
    assert "enc0.attn.qkv" in clusters(deep) and "enc0.attn" in clusters(deep)
    assert not re.search(r"\(forward\)\\n\d+ ops", deep)  # forward nodes all drawn one by one
    flat = to_dot(vit, ["train_step"], depth=0)
    assert clusters(flat) == [] and "enc0 (forward)" in flat


def test_legend_names_every_colour():
    dot = to_dot(load_or_compile(EXAMPLES / "mlp_mnist.py").program, ["train_step"])
    legend = dot[dot.index('subgraph "cluster_legend"'):]
    for colour in COLOURS.values():
        assert f'fillcolor="{colour}"' in legend
    assert "backward (and grad seed)" in legend and "collapsed layer" in legend


def test_grad_seed_is_coloured_as_backward():
    program = load_or_compile(EXAMPLES / "mlp_mnist.py").program
    drawn = nodes(to_dot(program, ["train_step"], depth=9))
    seeds = [attrs for label, attrs in drawn.values() if "grad seed" in label]
    assert seeds and all(f'fillcolor="{COLOURS["backward"]}"' in attrs for attrs in seeds)


@pytest.mark.skipif(shutil.which("dot") is None, reason="Graphviz's `dot` is not installed (apt install graphviz)")
def test_graphviz_draws_the_vit_step_at_most_4000_px(vit, tmp_path):
    # the bound: the whole vit training step at the default depth fits ~4,000 px on its longer side
    (tmp_path / "vit.dot").write_text(to_dot(vit, ["train_step"]))
    subprocess.run(["dot", "-Tpng", "vit.dot", "-o", "vit.png"], cwd=tmp_path, check=True, timeout=120)
    png = (tmp_path / "vit.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    width, height = struct.unpack(">II", png[16:24])  # the IHDR chunk
    assert 1000 < max(width, height) <= 4000, (width, height)
