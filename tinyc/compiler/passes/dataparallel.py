"""The `dataparallel` pass: one allreduce of every gradient and metric, so N ranks train as one.

Each rank runs the same program on its slice of the global batch. Its loss and metrics are means
over its local examples; weighted by its share `s = local / global` (the input `batch_share`,
fed every step) and summed over the ranks they are means over the global batch, exactly:
sum_r s_r mean_r(x) = sum_r sum_{i in r} x_i / global. Gradients are linear in the loss, so the
same weighting makes them the gradients of the global mean. The pass packs every weighted
`grad.<param>` and every scalar float output into one flat buffer per dtype (`flat_concat`),
reduces it with one `allreduce` and hands the optimizer and the outputs `slice`/`reshape` views
of the result. Other outputs (logits) stay per rank. A buffer holds at most PACK_LIMIT elements
(the size rule of every tensor): a model whose gradients total more gets several buffers, each
reduced by its own `allreduce`, never a size error about a buffer the user did not write.

The gradients are weighted for free: gradients are linear in the loss's cotangent seed
(d loss/d loss = 1, which autodiff records as `meta["grad_seed"]`), so the seed becomes `s`
itself and the backward pass computes s_r * gradient directly. Only the scalar outputs are
multiplied. On one rank `s = 1` and the allreduce is the identity, so the step computes the
same bits as without the pass; `memplan` places every gradient straight into its part of the
flat buffer and the allreduce sums it in place, so packing copies nothing either.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from ...ir.builder import Builder, Tensor
from ...ir.errors import IRError
from ...ir.graph import Graph
from ...ir.program import SHARE_INPUT, loss_output
from ...ir.types import MAX_ELEMENTS
from . import register_pass
from .autodiff import GRAD_PREFIX, GRAD_SEED

NOTE = "dataparallel"
PACK_LIMIT = MAX_ELEMENTS  # elements per flat buffer: no tensor may be larger


def reduced_outputs(graph: Graph) -> list[str]:
    """The outputs the pass reduces: parameter gradients and scalar float outputs (means), in order."""
    types = graph.types
    return [name for name, v in graph.outputs
            if name.startswith(GRAD_PREFIX) or (types[v].shape == () and types[v].is_float)]


def _seed_is_share(b: Builder, graph: Graph, share: Tensor) -> bool:
    """Make the loss's cotangent seed (ones_like(loss), recorded by autodiff) this rank's share,
    so the backward pass computes s_r * gradient at no extra cost; False if there is no seed."""
    seed = graph.producers.get(graph.meta.get(GRAD_SEED, ""))
    if seed is None or seed.op != "ones_like" or seed.type.shape != () or not seed.type.is_float:
        return False
    nodes = []
    for n in b.nodes:
        if n.out == seed.out:
            if seed.type.dtype != share.dtype:  # an f64 loss: its seed is the share in f64
                nodes.append(replace(n, op="cast", inputs=(share.name,), attrs={"dtype": seed.type.dtype}))
            continue
        nodes.append(replace(n, inputs=tuple(share.name if v == seed.out else v for v in n.inputs))
                     if seed.type.dtype == share.dtype else n)
    b.nodes = nodes
    return True


def _packs(values: list[tuple[str, Tensor, tuple]]) -> list[list[tuple[str, Tensor, tuple]]]:
    """`values` cut, in order, into runs of at most PACK_LIMIT elements (one flat buffer each);
    each value fits alone, since every tensor obeys the same limit."""
    packs: list[list[tuple[str, Tensor, tuple]]] = [[]]
    size = 0
    for value in values:
        n = value[1].type.numel()
        if packs[-1] and size + n > PACK_LIMIT:
            packs.append([])
            size = 0
        packs[-1].append(value)
        size += n
    return packs


@register_pass("dataparallel")
def dataparallel(graph: Graph) -> Graph:
    """Sum the gradients and metrics over ranks with one allreduce, weighted by batch_share."""
    names = reduced_outputs(graph)
    if not any(name.startswith(GRAD_PREFIX) for name in names):
        return graph  # nothing to train: a forward graph
    b = Builder.from_graph(graph)
    if SHARE_INPUT in b.types:
        raise IRError(f"dataparallel: the graph already has a value named {SHARE_INPUT!r}",
                      hint=f"rename the input: {SHARE_INPUT!r} is this rank's share of the batch")
    share = b.input(SHARE_INPUT, (), "f32")
    seeded = _seed_is_share(b, graph, share)
    outputs: dict[str, Any] = dict(graph.outputs)
    producers = graph.producers
    by_dtype: dict[str, list[tuple[str, Tensor, tuple]]] = {}
    for name in names:
        # a gradient's nodes belong to its parameter's layer (as its optimizer step does),
        # a metric's to the node computing it
        if name.startswith(GRAD_PREFIX):
            param = graph.param_map[name[len(GRAD_PREFIX):]]
            where = (param.loc, NOTE, param.name.rpartition(".")[0])
        else:
            node = producers.get(outputs[name])
            where = (node.loc, NOTE, node.scope) if node else ("", NOTE, "")
        with b.at(*where):
            x = b.tensor(outputs[name])
            if not (seeded and name.startswith(GRAD_PREFIX)):  # s_r x_r, summed over r: the global value
                x = x * (share if x.dtype == share.dtype else b.apply("cast", [share], dtype=x.dtype))
            by_dtype.setdefault(x.dtype, []).append((name, x, where))
    loss = producers.get(outputs.get(loss_output(graph.meta), ""))
    for weighted in (part for values in by_dtype.values() for part in _packs(values)):
        with b.at(loss.loc if loss else "", NOTE):
            total = b.apply("allreduce", [b.apply("flat_concat", [x for _, x, _ in weighted])])
        start = 0
        for name, x, where in weighted:
            n = x.type.numel()
            with b.at(*where):
                part = b.apply("slice", [total], axis=0, start=start, stop=start + n)
                outputs[name] = b.apply("reshape", [part], shape=x.shape)
            start += n
    result = {name: v if isinstance(v, Tensor) else b.tensor(v) for name, v in outputs.items()}
    meta = {k: v for k, v in graph.meta.items() if k != GRAD_SEED}  # the seed is gone
    return b.graph(result, {name: b.tensor(v) for name, v in graph.updates}, meta=meta)
