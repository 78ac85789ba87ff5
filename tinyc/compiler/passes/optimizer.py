"""The `optimizer` pass: turn `grad.<param>` outputs into parameter updates written as IR ops.

Semantics follow torch.optim exactly (SGD with momentum/Nesterov/L2, Adam with L2, AdamW with
decoupled decay), so a step can be checked against a few lines of NumPy. The learning rate is an
input (`lr`, f32[]) fed every step, so schedules need no recompilation.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from ...ir import init as init_rules
from ...ir.builder import Builder, Tensor
from ...ir.errors import IRError
from ...ir.graph import OPTIMIZER_NOTE, Graph, Param
from ...ir.program import LR_INPUT  # the executor feeds it: one name for both
from . import register_pass
from .autodiff import GRAD_PREFIX

STEP_STATE = "optim.step"


def _state(b: Builder, p: Param, suffix: str) -> Tensor:
    """A zero-initialised optimizer-state slot shaped like `p`."""
    name = f"{p.name}.{suffix}"
    if name in b.types:
        raise IRError(f"optimizer state {name!r} collides with an existing value", loc=p.loc,
                      hint="rename the parameter")
    return b.param(name, p.type.shape, init_rules.zeros(), dtype=p.type.dtype, kind="state")


def _as(x: Tensor, like: Tensor) -> Tensor:
    """`x` (an f32 scalar) cast to `like`'s dtype when they differ (f64 parameters)."""
    return x if x.dtype == like.dtype else x.builder.apply("cast", [x], dtype=like.dtype)


def _sgd(b: Builder, p: Tensor, g: Tensor, param: Param, lr: Tensor, spec: Mapping[str, Any], ups: dict,
         t: Tensor | None) -> None:
    mu, wd = float(spec["momentum"]), float(spec["weight_decay"])
    lr = _as(lr, p)
    if wd:
        g = g + wd * p  # g' = g + wd p
    if mu:
        buf = _state(b, param, "momentum")
        buf_new = mu * buf + g  # buf = mu buf + g'   (dampening 0; zero init == torch's first step)
        ups[buf.name] = buf_new
        step = g + mu * buf_new if spec["nesterov"] else buf_new
    else:
        step = g
    ups[param.name] = p - lr * step


def _adam(b: Builder, p: Tensor, g: Tensor, param: Param, lr: Tensor, spec: Mapping[str, Any], ups: dict,
          t: Tensor | None) -> None:
    b1, b2, eps, wd = (float(spec[k]) for k in ("beta1", "beta2", "eps", "weight_decay"))
    decoupled = spec["kind"] == "adamw"
    if wd and not decoupled:
        g = g + wd * p  # Adam: L2 added to the gradient
    m, v = _state(b, param, "m"), _state(b, param, "v")
    m_new = b1 * m + (1.0 - b1) * g  # m = b1 m + (1-b1) g
    v_new = b2 * v + (1.0 - b2) * (g * g)  # v = b2 v + (1-b2) g^2
    ups[m.name], ups[v.name] = m_new, v_new
    # scalar bias corrections on t: step_size = lr / (1 - b1^t), denom = sqrt(v) / sqrt(1 - b2^t) + eps
    one = b.apply("fill", [], shape=(), dtype="f32", value=1.0)
    step_size = _as(lr / (one - b1 ** t), p)
    bc2_sqrt = _as(b.apply("sqrt", [one - b2 ** t]), p)
    base = p
    if wd and decoupled:
        base = p * _as(one - lr * wd, p)  # AdamW: p = p (1 - lr wd) first
    denom = b.apply("sqrt", [v_new]) / bc2_sqrt + eps
    ups[param.name] = base - step_size * (m_new / denom)


# optimizer kind -> rule(builder, param, grad, Param, lr, spec, updates, step t) adding the param's updates
RULES: dict[str, Callable] = {"sgd": _sgd, "adam": _adam, "adamw": _adam}
STEP_COUNTED = tuple(kind for kind, rule in RULES.items() if rule is _adam)  # rules that need the step count t


@register_pass("optimizer")
def optimizer(graph: Graph) -> Graph:
    """Append the optimizer update (SGD, Adam, AdamW) for every grad.<param> output; add input lr."""
    spec = graph.meta.get("optimizer")
    if not spec:
        return graph
    kind = spec.get("kind")
    if kind not in RULES:
        raise IRError(f"optimizer: unknown optimizer kind {kind!r}; known: {', '.join(RULES)}")
    grads = {name[len(GRAD_PREFIX):]: value for name, value in graph.outputs if name.startswith(GRAD_PREFIX)}
    b = Builder.from_graph(graph)
    if LR_INPUT in b.types:
        raise IRError(f"optimizer: the graph already has a value named {LR_INPUT!r}",
                      hint=f"rename the input: {LR_INPUT!r} is the learning rate the optimizer adds")
    lr = b.input(LR_INPUT, (), "f32")
    ups: dict[str, Tensor] = {}
    t = None
    if kind in STEP_COUNTED and grads:
        first = graph.param_map[next(iter(grads))]
        with b.at(first.loc, f"{OPTIMIZER_NOTE} {kind}"):
            step = b.param(STEP_STATE, (), init_rules.zeros(), kind="state")
            t = step + 1.0  # t = step + 1
            ups[STEP_STATE] = t
    for pname, gvalue in grads.items():
        param = graph.param_map.get(pname)
        if param is None or param.kind != "param":
            raise IRError(f"optimizer: output grad.{pname} names no trainable parameter")
        # the update belongs to the parameter's layer: enc0.attn.qkv.w -> scope enc0.attn.qkv
        with b.at(param.loc, f"{OPTIMIZER_NOTE} {kind}", pname.rpartition(".")[0]):
            RULES[kind](b, b.tensor(pname), b.tensor(gvalue), param, lr, spec, ups, t)
    outputs = {name: b.tensor(v) for name, v in graph.outputs if not name.startswith(GRAD_PREFIX)}
    updates = {name: b.tensor(v) for name, v in graph.updates}
    updates.update(ups)
    return b.graph(outputs, updates, meta=dict(graph.meta))
