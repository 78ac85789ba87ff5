"""The IR graph: inputs, parameters, constants, SSA nodes and named outputs, all immutable.

Every value is named by a string: inputs and parameters by their user-given names
(`x`, `enc0.attn.wq`), node outputs by a number (`"12"`, printed `%12`). A pass builds a new
Graph with `dataclasses.replace`; nothing here is mutated after construction.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from functools import cached_property
from typing import Any

import numpy as np

from .types import TensorType

NAME_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_.]*$")


@dataclass(frozen=True, eq=True)
class Node:
    """One op application. `out` names its single output value; `loc` is the user's `file:line`
    that created it; `note` records provenance such as `grad of softmax` for backward nodes;
    `scope` is the layer that made it (`enc0.attn`, like JAX's name stack), "" outside any."""

    out: str
    op: str
    inputs: tuple[str, ...]
    attrs: Mapping[str, Any]
    type: TensorType
    loc: str = ""
    note: str = ""
    scope: str = ""

    __hash__ = None  # attrs is a dict; key nodes by `out`, or by `key()` for CSE

    def key(self) -> tuple:
        """What makes two nodes compute the same value (op, inputs, attrs)."""
        return (self.op, self.inputs, tuple(sorted((k, _hashable(v)) for k, v in self.attrs.items())))

    def where(self) -> str:
        """`model.py:12 enc0.attn`, or `grad of softmax @ model.py:12 enc0.attn` for a backward node."""
        return format_where(self.loc, self.note, self.scope)


# Provenance notes: the words that begin the note of a node autodiff adds (`grad of softmax`) and
# of one the optimizer pass adds (`optimizer adam`); reports and colourings match on them.
GRAD_NOTE, OPTIMIZER_NOTE = "grad of", "optimizer"
GRAD_SEED_NOTE = "grad seed"  # the ones that start the backward pass (d loss / d loss)


def format_where(loc: str, note: str = "", scope: str = "") -> str:
    """`note @ loc scope`, leaving out the empty parts (how a node's origin is shown everywhere)."""
    where = f"{loc} {scope}" if loc and scope else loc or scope
    if note:
        return f"{note} @ {where}" if where else note
    return where


def _hashable(v):
    return tuple(v) if isinstance(v, list) else v


@dataclass(frozen=True)
class Input:
    """A value fed at run time (data, labels, learning rate). `preprocess` is the declared rule
    mapping raw data to it ({} when none; see `tinyc.ir.preprocess`)."""

    name: str
    type: TensorType
    preprocess: Mapping[str, Any] = field(default_factory=dict)

    __hash__ = None


@dataclass(frozen=True)
class Param:
    """A trainable parameter or optimizer-state slot: a type and an init rule, never an array.

    `init` is a dict such as `{"rule": "normal", "std": 0.02}` (see `tinyc.ir.init`);
    `kind` is "param" (trained) or "state" (optimizer state: moments, step count).
    """

    name: str
    type: TensorType
    init: Mapping[str, Any]
    seed: int = 0
    kind: str = "param"
    loc: str = ""

    __hash__ = None


@dataclass(frozen=True)
class Graph:
    """A static dataflow graph in SSA form.

    `outputs` maps result names to values; `updates` maps parameter/state names to the values
    that replace them after a training step (empty for pure functions); `meta` holds
    msgpack-able facts about the graph (training defaults, optimizer settings).
    """

    name: str
    inputs: tuple[Input, ...] = ()
    params: tuple[Param, ...] = ()
    nodes: tuple[Node, ...] = ()
    outputs: tuple[tuple[str, str], ...] = ()
    updates: tuple[tuple[str, str], ...] = ()
    constants: Mapping[str, np.ndarray] = field(default_factory=dict)
    meta: Mapping[str, Any] = field(default_factory=dict)

    __hash__ = None

    # Derived lookups; cached because a Graph never changes.
    @cached_property
    def types(self) -> dict[str, TensorType]:
        """value name -> TensorType for every input, parameter and node output."""
        types = {i.name: i.type for i in self.inputs}
        types.update((p.name, p.type) for p in self.params)
        types.update((n.out, n.type) for n in self.nodes)
        return types

    @cached_property
    def producers(self) -> dict[str, Node]:
        """value name -> the node that defines it."""
        return {n.out: n for n in self.nodes}

    @cached_property
    def consumers(self) -> dict[str, list[Node]]:
        """value name -> the nodes that read it (in node order)."""
        uses: dict[str, list[Node]] = {}
        for n in self.nodes:
            for v in n.inputs:
                uses.setdefault(v, []).append(n)
        return uses

    @cached_property
    def param_map(self) -> dict[str, Param]:
        return {p.name: p for p in self.params}

    @property
    def output_values(self) -> tuple[str, ...]:
        return tuple(v for _, v in self.outputs) + tuple(v for _, v in self.updates)

    def next_id(self) -> int:
        """The smallest node number not used yet (for passes that add nodes)."""
        return 1 + max((int(n.out) for n in self.nodes if n.out.isdecimal()), default=-1)

    def with_nodes(self, nodes, outputs=None, updates=None, **changes) -> Graph:
        """A copy with new nodes (and optionally renamed outputs/updates)."""
        return replace(
            self,
            nodes=tuple(nodes),
            outputs=self.outputs if outputs is None else tuple(outputs),
            updates=self.updates if updates is None else tuple(updates),
            **changes,
        )

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Graph):
            return NotImplemented
        same = (self.name, self.inputs, self.params, self.nodes, self.outputs, self.updates, dict(self.meta)) == (
            other.name, other.inputs, other.params, other.nodes, other.outputs, other.updates, dict(other.meta))
        if not same or self.constants.keys() != other.constants.keys():
            return False
        return all(  # equal_nan: a graph with a NaN constant must still equal itself
            self.constants[k].dtype == other.constants[k].dtype and np.array_equal(self.constants[k], other.constants[k], equal_nan=True)
            for k in self.constants
        )


def live_values(graph: Graph, roots: Iterable[str] | None = None) -> set[str]:
    """Every value that `roots` (default: outputs and updates) depend on, roots included."""
    roots = graph.output_values if roots is None else tuple(roots)
    producers = graph.producers
    seen: set[str] = set()
    stack = list(roots)
    while stack:  # an explicit DFS: linear, and no recursion limit on 10k-node chains
        v = stack.pop()
        if v in seen:
            continue
        seen.add(v)
        node = producers.get(v)
        if node is not None:
            stack.extend(node.inputs)
    return seen
