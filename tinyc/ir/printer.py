"""The IR text form: one node per line, shapes always shown, the user's line at the end.

```
graph mlp {
  input %x: f32[B,784]
  param %w1: f32[784,128] = xavier_uniform(gain=1.0)
  %0: f32[B,128] = matmul %x, %w1              # mlp_mnist.py:14
  %7: f32[B,128] = mul %6, %5                  # grad of relu @ mlp_mnist.py:15
  %9: f32[B,16,64] = add %8, %enc0.ff.fc1.b    # vit_mnist.py:24 enc0.ff.fc1
  output loss = %3
  update w1 = %9
}
```
Stable and diffable: the same graph always prints the same text.
"""

from __future__ import annotations

from typing import Any

from .graph import Graph, Node, Param
from .numfmt import human_bytes, short_float
from .preprocess import describe
from .program import Program
from .types import dtype_of_numpy, format_shape

_COMMENT_COLUMN = 56


def format_value(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, float):
        return short_float(v)  # 0.1, not 0.09999999999999998 (1 - 0.9)
    if isinstance(v, (tuple, list)):
        return "[" + ",".join(format_value(x) for x in v) + "]"
    if v is None:
        return "none"
    return str(v)


def format_attrs(attrs) -> str:
    if not attrs:
        return ""
    return " {" + ", ".join(f"{k}={format_value(attrs[k])}" for k in sorted(attrs)) + "}"


def format_node(node: Node) -> str:
    """`%12: f32[B,16,64] = matmul %10, %11 {..}    # grad of softmax @ file.py:23 enc0.attn`."""
    args = ", ".join(f"%{v}" for v in node.inputs)
    text = f"%{node.out}: {node.type} = {node.op}{' ' + args if args else ''}{format_attrs(node.attrs)}"
    where = node.where()
    if where:
        text = f"{text.ljust(_COMMENT_COLUMN)}  # {where}"
    return text


def format_param(p: Param) -> str:
    rule = dict(p.init)
    name = rule.pop("rule")
    args = ", ".join(f"{k}={format_value(v)}" for k, v in sorted(rule.items()))
    return f"{p.kind} %{p.name}: {p.type} = {name}({args})"


def format_graph(g: Graph, indent: str = "  ") -> str:
    lines = [f"graph {g.name} {{"]
    lines += [f"{indent}input %{i.name}: {i.type}" + (f"  # preprocess {describe(i.preprocess)}" if i.preprocess else "")
              for i in g.inputs]
    lines += [f"{indent}{format_param(p)}" for p in g.params]
    lines += [f"{indent}const {k}: {_array_type(a)}" for k, a in sorted(g.constants.items())]
    lines += [f"{indent}{format_node(n)}" for n in g.nodes]
    lines += [f"{indent}output {name} = %{v}" for name, v in g.outputs]
    lines += [f"{indent}update {name} = %{v}" for name, v in g.updates]
    lines.append("}")
    return "\n".join(lines) + "\n"


def format_program(p: Program) -> str:
    parts = []
    for entry in p.entries.values():
        text = format_graph(entry.graph)
        plan = entry.plan
        header = f"# entry {entry.name}" + (f" (planned peak {human_bytes(plan.peak_bytes)} at batch {plan.batch})"
                                             if plan and plan.peak_bytes else "")
        parts.append(header + "\n" + text)
    return "\n".join(parts)


def _array_type(a) -> str:
    return f"{dtype_of_numpy(a.dtype)}{format_shape(a.shape)}"
