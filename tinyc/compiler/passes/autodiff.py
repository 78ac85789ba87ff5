"""The autodiff pass: append the loss gradient of every trainable parameter as outputs."""

from __future__ import annotations

from ...ir.errors import IRError
from ...ir.graph import Graph
from ...ir.program import loss_output
from ..autodiff import gradients
from . import register_pass

GRAD_PREFIX = "grad."  # output grad.<param>: the loss gradient of <param> (the optimizer and dataparallel read it)
GRAD_SEED = "grad_seed"  # meta key: the value of the loss's cotangent seed (ones_like(loss))


@register_pass("autodiff")
def autodiff(graph: Graph) -> Graph:
    """Append grad.<param> outputs: reverse-mode gradients of the loss for every trainable parameter."""
    loss = loss_output(graph.meta)
    outputs = dict(graph.outputs)
    if loss not in outputs:
        raise IRError(f"autodiff: graph {graph.name} has no output {loss!r} to differentiate",
                      hint="name the loss output 'loss' or set graph.meta['loss']")
    params = [p.name for p in graph.params if p.kind == "param"]
    clash = [p for p in params if GRAD_PREFIX + p in outputs]
    if clash:
        raise IRError(f"autodiff: graph {graph.name} already has output grad.{clash[0]} (pass run twice?)")
    new, grads = gradients(graph, outputs[loss], params)
    # A parameter the loss does not depend on gets a zero gradient rather than none, so the
    # optimizer sees every parameter (weight decay still applies to it); integer parameters
    # have no gradient and are left out.
    added = tuple((GRAD_PREFIX + p, grads[p]) for p in params if grads[p] is not None)
    # the cotangent seed d(loss)/d(loss) = 1: every gradient is linear in it (dataparallel scales it)
    seed = next((n.out for n in new.nodes[len(graph.nodes):] if n.op == "ones_like" and n.inputs == (outputs[loss],)), None)
    meta = {**graph.meta, GRAD_SEED: seed} if seed is not None else graph.meta
    return new.with_nodes(new.nodes, outputs=graph.outputs + added, meta=meta)
