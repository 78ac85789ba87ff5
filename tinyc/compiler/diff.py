"""What a pass changed: nodes removed, added, changed in place, and values replaced by others.

Nodes are matched by their output name first (passes keep names where they can), then by what
they compute (op, inputs, attributes, type) with the inputs read through the replacements found
so far. A removed value whose readers now read another value at the same position is reported
as replaced (`~ %7 -> %3`), as cse and simplify produce. The text is deterministic:

```
- %12: f32[3] = mul %3, %4                 # model.py:9
~ %7 -> %3
+ %15: f32[3] = transpose %2 {perm=[1,0]}  # model.py:4
```
"""

from __future__ import annotations

from dataclasses import dataclass

from ..ir.graph import Graph, Node
from ..ir.printer import format_node
from ..ir.types import TensorType, dtype_of_numpy


@dataclass(frozen=True)
class GraphDiff:
    removed: tuple[Node, ...] = ()
    added: tuple[Node, ...] = ()
    changed: tuple[tuple[Node, Node], ...] = ()  # (before, after) under one output name
    replaced: tuple[tuple[str, str], ...] = ()  # (value before, value standing for it after)
    interface: tuple[str, ...] = ()  # lines for inputs, params, constants, outputs, updates

    def __bool__(self) -> bool:
        return bool(self.removed or self.added or self.changed or self.replaced or self.interface)


def _content(node: Node, rename: dict[str, str]) -> tuple:
    inputs = tuple(rename.get(v, v) for v in node.inputs)
    return node.op, inputs, node.key()[2], node.type


def _interface(before: Graph, after: Graph) -> list[str]:
    """Lines for inputs, params, constants, outputs and updates that appeared, vanished or changed."""
    lines: list[str] = []

    def compare(kind: str, old: dict, new: dict, name: str, value) -> None:
        # name: how the key is written ("%{}" or "{}"); value: how a value is written after it
        for k, v in old.items():
            if k not in new:
                lines.append(f"- {kind} {name.format(k)}{value(v)}")
            elif v != new[k]:
                lines.append(f"~ {kind} {name.format(k)}:{value(v)[2:]} ->{value(new[k])[2:]}")
        lines.extend(f"+ {kind} {name.format(k)}{value(new[k])}" for k in new if k not in old)

    def const_types(g: Graph) -> dict:
        return {k: TensorType(dtype_of_numpy(a.dtype), a.shape) for k, a in g.constants.items()}

    typed = lambda t: f": {t}"
    compare("input", {i.name: i.type for i in before.inputs}, {i.name: i.type for i in after.inputs}, "%{}", typed)
    compare("param", {p.name: p.type for p in before.params}, {p.name: p.type for p in after.params}, "%{}", typed)
    compare("const", const_types(before), const_types(after), "{}", typed)
    for kind, old, new in (("output", before.outputs, after.outputs), ("update", before.updates, after.updates)):
        compare(kind, dict(old), dict(new), "{}", lambda v: f" = %{v}")
    return lines


def diff_graphs(before: Graph, after: Graph) -> GraphDiff:
    """The differences between two versions of a graph (see the module docstring)."""
    after_by_out = after.producers
    after_values = set(after.types)
    rename: dict[str, str] = {}  # removed value of `before` -> the value standing for it
    # 1. Readers kept under their name and op tell what their vanished inputs became.
    for node in before.nodes:
        new = after_by_out.get(node.out)
        if new is not None and (new.op, new.key()[2]) == (node.op, node.key()[2]):
            for old_v, new_v in zip(node.inputs, new.inputs):
                if old_v != new_v and old_v not in after_values:
                    rename.setdefault(old_v, new_v)
    for table_before, table_after in ((before.outputs, after.outputs), (before.updates, after.updates)):
        now = dict(table_after)
        for name, v in table_before:
            if v not in after_values and name in now:
                rename.setdefault(v, now[name])
    # 2. Vanished nodes computing what an `after` node computes were merged into it.
    by_content: dict[tuple, str] = {}
    for n in after.nodes:
        by_content.setdefault(_content(n, {}), n.out)
    removed, changed = [], []
    for node in before.nodes:
        new = after_by_out.get(node.out)
        if new is not None:
            if _content(node, rename) != _content(new, {}):
                changed.append((node, new))
            continue
        if node.out not in rename:
            match = by_content.get(_content(node, rename))
            if match is not None:
                rename[node.out] = match
                continue
            removed.append(node)
    replaced = tuple((n.out, rename[n.out]) for n in before.nodes if n.out in rename and n.out not in after_values)
    added = tuple(n for n in after.nodes if n.out not in before.producers)
    return GraphDiff(tuple(removed), added, tuple(changed), replaced, tuple(_interface(before, after)))


def format_diff(d: GraphDiff) -> str:
    """The diff as text: `-` removed, `+` added, `~` replaced; empty when nothing changed."""
    lines = [f"- {format_node(n)}" for n in d.removed]
    lines += [f"~ %{old} -> %{new}" for old, new in d.replaced]
    for old, new in d.changed:
        lines += [f"- {format_node(old)}", f"+ {format_node(new)}"]
    lines += [f"+ {format_node(n)}" for n in d.added]
    lines += list(d.interface)
    return "\n".join(lines) + ("\n" if lines else "")
