"""The pass registry: a pass is a pure `Graph -> Graph` function registered under a name.

`@register_pass("fold")` on a function whose docstring's first line describes it. Passes never
mutate their input and never print; `tinyc.compiler.manager` runs pipelines of them.
Configuration a pass needs travels in `graph.meta` (e.g. `meta["loss"]`, `meta["optimizer"]`).
The planning pass (`memplan`, `makes_plan=True`) is `Graph -> MemoryPlan` instead: it leaves the
graph as it is and the manager puts its plan on the Entry.
"""

from __future__ import annotations

import importlib
import pkgutil
from collections.abc import Callable
from dataclasses import dataclass

from ...ir.graph import Graph
from ...ir.plan import MemoryPlan


@dataclass(frozen=True)
class Pass:
    name: str
    fn: Callable[[Graph], Graph] | Callable[[Graph], MemoryPlan]
    description: str
    makes_plan: bool = False


PASSES: dict[str, Pass] = {}


def register_pass(name: str, makes_plan: bool = False):
    """Register `fn` as the pass `name`; its docstring's first line is its description."""

    def register(fn):
        if name in PASSES:
            raise ValueError(f"pass {name!r} registered twice")
        doc = (fn.__doc__ or "").strip().splitlines()
        PASSES[name] = Pass(name, fn, doc[0] if doc else "", makes_plan)
        return fn

    return register


def load_all() -> dict[str, Pass]:
    """Import every pass module in this package (one pass per file) and return the registry."""
    for mod in pkgutil.iter_modules(__path__):
        importlib.import_module(f"{__name__}.{mod.name}")
    return PASSES
