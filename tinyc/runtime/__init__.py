"""The NumPy runtime: load a compiled `.ir` program and train or predict with it.

Imports only `tinyc.ir` and runtime modules: never the compiler, the models, the CLI or networkx.
The names below load on first use, so the compiler can read the kernel tables
(`tinyc.runtime.kernels`) without importing the executor.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ..ir.program import Program
    from .executor import Executor, load

__all__ = ["Executor", "Program", "load"]


def __getattr__(name: str) -> Any:
    if name == "Program":
        from ..ir.program import Program

        return Program
    if name in ("Executor", "load"):
        from . import executor

        return getattr(executor, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
