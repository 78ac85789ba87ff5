"""`tinyc inspect FILE --format dot [--depth K]`: a Graphviz drawing a person can read.

Layer scopes (the IR records one on every node, `enc0.attn.qkv`) become nested clusters, down to
`depth` levels; a scope deeper than that is collapsed into one box per role (its forward, backward
and optimizer parts), labelled with its op count and FLOPs, and with its parameters' values in the
forward box. The backward and optimizer parts of each top-level layer are always one box each
(`SUMMED`), beside the clusters: the clusters show the forward structure, the boxes the cost of the
rest. Nodes outside every layer (the loss, its gradient seed) are drawn one by one. Colours say the role of a node (`views.role_of`): forward, backward (the grad seed
included), optimizer; inputs, parameters and optimizer state are ellipses. A legend explains them.
Edges between two members of one box are dropped and parallel edges merged, so a collapsed layer
is one box with its inputs and outputs.
"""

from __future__ import annotations

from collections import defaultdict

from ..compiler.manager import node_flops
from ..ir.graph import Graph
from ..ir.numfmt import human_count
from ..ir.plan import reference_batch
from ..ir.program import Program
from .views import role_of

COLOURS = {"forward": "#cfe2ff", "backward": "#f8d7da", "optimizer": "#d1e7dd"}
SOURCE_COLOURS = {"input": "#e9ecef", "param": "#fff3cd", "state": "#fde2c8"}
DEFAULT_DEPTH = 1  # clusters for the top-level layers (enc0, head, ...), their sub-layers as boxes
BOX_SHAPE = "box3d"  # a collapsed scope
# roles drawn as one box per top-level layer at every depth: the backward pass mirrors the forward
# one, and the optimizer repeats the same few ops per parameter; drawn out inside the layer
# clusters they would triple the picture's width (the vit step: 6,500 px instead of under 4,000)
SUMMED = ("backward", "optimizer")


def to_dot(program: Program, entries: list[str], depth: int = DEFAULT_DEPTH) -> str:
    """The DOT text of `entries`: one cluster per entry (when several), nested layer clusters, a legend."""
    lines = ["digraph tinyc {", "  rankdir=TB;", "  compound=true;",
             '  node [shape=box, style="rounded,filled", fontname="monospace", fontsize=10];',
             '  edge [color="#6c757d"];']
    batch = reference_batch(program.meta)
    for entry in entries:
        body = _entry_lines(program.entries[entry].graph, entry, depth, batch)
        if len(entries) > 1:
            lines += [f"  subgraph {_q('cluster_' + entry)} {{", f"    label={_q(entry)};", *body, "  }"]
        else:
            lines += body
    lines += _legend()
    lines.append("}")
    return "\n".join(lines) + "\n"


def _entry_lines(g: Graph, entry: str, depth: int, batch: int) -> list[str]:
    roles = role_of(g)
    params = {p.name: p for p in g.params}

    def scope_of_param(name: str) -> str:
        p = params[name]
        owner = name.rsplit(".", 1)[0] if p.kind == "state" and "." in name else name
        if p.kind == "state" and owner not in params:
            return ""  # e.g. optim.step: the optimizer's own, no layer's
        return owner.rsplit(".", 1)[0] if "." in owner else ""

    members: dict[str, list[str]] = defaultdict(list)  # cluster scope -> node statements
    home: dict[str, str] = {}  # value -> the DOT id that draws it (a node or a box)
    boxes: dict[str, dict] = {}  # box id -> {"scope", "role", "ops", "flops", "params", "cluster"}

    def nid(key: str) -> str:
        return _q(f"{entry}/{key}")

    def place(value: str, scope: str, role: str, statement: str, ops: int = 0, flops: int = 0, values: int = 0) -> None:
        parts = scope.split(".") if scope else []
        if role in SUMMED and parts:  # one box per top-level layer, outside the forward clusters
            collapsed, cluster = parts[0], ""
        elif len(parts) <= depth:
            members[scope].append(statement)
            home[value] = nid(value)
            return
        else:  # deeper than `depth`: one box per role, in the cluster of its level-`depth` parent
            collapsed, cluster = ".".join(parts[: depth + 1]), ".".join(parts[:depth])
        key = f"box:{collapsed}:{role}"
        box = boxes.setdefault(key, {"scope": collapsed or "model", "role": role, "ops": 0, "flops": 0, "params": 0,
                                     "cluster": cluster})
        box["ops"] += ops
        box["flops"] += flops
        box["params"] += values
        home[value] = nid(key)

    for i in g.inputs:
        place(i.name, "", "input", _node(nid(i.name), [i.name, str(i.type)], shape="ellipse",
                                           fillcolor=SOURCE_COLOURS["input"]))
    for p in g.params:
        role = "forward" if p.kind == "param" else "optimizer"
        place(p.name, scope_of_param(p.name), role,
              _node(nid(p.name), [p.name, str(p.type)], shape="ellipse", fillcolor=SOURCE_COLOURS[p.kind]),
              values=p.type.numel() if p.kind == "param" else 0)
    for c in sorted(g.constants):
        place(c, "", "input", _node(nid(c), [c], shape="note", fillcolor=SOURCE_COLOURS["input"]))
    types = g.types
    for n in g.nodes:
        label = [f"%{n.out} {n.op}", str(n.type)] + ([n.where()] if n.where() else [])
        place(n.out, n.scope, roles[n.out], _node(nid(n.out), label, fillcolor=COLOURS[roles[n.out]]),
              ops=1, flops=node_flops(n, types, batch))
    for key, box in boxes.items():
        colour = COLOURS.get(box["role"], SOURCE_COLOURS["param"])
        label = [f"{box['scope']} ({box['role']})", f"{box['ops']} ops, {human_count(box['flops'])} FLOPs"]
        if box["params"]:
            label.append(f"{box['params']:,} params")
        members[box["cluster"]].append(_node(nid(key), label, shape=BOX_SHAPE, style="filled", fillcolor=colour))

    edges: dict[tuple[str, str], None] = {}
    for n in g.nodes:
        for v in n.inputs:
            a, b = home[v], home[n.out]
            if a != b:
                edges[(a, b)] = None
    sinks = []
    for kind, pairs in (("output", g.outputs), ("update", g.updates)):
        for name, v in pairs:
            if kind == "update" and home[v] != nid(v):
                continue  # a collapsed optimizer box stands for its updates
            sink = nid(f"{kind}:{name}")
            sinks.append(_node(sink, [f"{kind} {name}"], shape="plaintext", style=""))
            edges[(home[v], sink)] = None
    return _clusters(members, entry) + [f"    {s}" for s in sinks] + [f"    {a} -> {b};" for a, b in edges]


def _clusters(members: dict[str, list[str]], entry: str) -> list[str]:
    """Nested `subgraph cluster_...` blocks, one per layer scope that has members (or sub-scopes)."""
    scopes = set(members)
    for s in list(scopes):
        parts = s.split(".") if s else []
        scopes.update(".".join(parts[:k]) for k in range(len(parts)))
    children: dict[str, list[str]] = defaultdict(list)
    for s in sorted(scopes - {""}):
        children[s.rsplit(".", 1)[0] if "." in s else ""].append(s)

    def emit(scope: str, indent: str) -> list[str]:
        out = [f"{indent}{m}" for m in members.get(scope, [])]
        for child in children.get(scope, []):
            out += [f"{indent}subgraph {_q(f'cluster_{entry}/{child}')} {{",
                    f'{indent}  label={_q(child)}; style="rounded"; color="#adb5bd";',
                    *emit(child, indent + "  "), f"{indent}}}"]
        return out

    return emit("", "    ")


def _legend() -> list[str]:
    items = [("forward", "box", COLOURS["forward"]), ("backward (and grad seed)", "box", COLOURS["backward"]),
             ("optimizer update", "box", COLOURS["optimizer"]), ("input / constant", "ellipse", SOURCE_COLOURS["input"]),
             ("parameter", "ellipse", SOURCE_COLOURS["param"]), ("optimizer state", "ellipse", SOURCE_COLOURS["state"]),
             ("collapsed layer (ops, FLOPs)", BOX_SHAPE, "#ffffff")]
    lines = ['  subgraph "cluster_legend" {', '    label="legend"; style="rounded"; color="#adb5bd";']
    ids = []
    for i, (text, shape, colour) in enumerate(items):
        ids.append(_q(f"legend/{i}"))
        style = "filled" if shape == BOX_SHAPE else "rounded,filled" if shape == "box" else "filled"
        lines.append(f"    {_node(ids[-1], [text], shape=shape, style=style, fillcolor=colour)}")
    lines.append("    " + " -> ".join(ids) + " [style=invis];")  # one column, in this order
    lines.append("  }")
    return lines


def _node(node_id: str, label: list[str], **attrs: str) -> str:
    fields = {"label": _q("\\n".join(label)), **{k: _q(a) for k, a in attrs.items()}}
    return f"{node_id} [{', '.join(f'{k}={a}' for k, a in fields.items())}];"


def _q(s: str) -> str:
    """A DOT quoted string (the `\\n` in labels stays a DOT line break)."""
    return '"' + s.replace('"', '\\"') + '"'
