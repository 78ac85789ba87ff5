"""The NumPy runtime: load a compiled `.ir` program and train or predict with it.

Imports only `tinyc.ir` and runtime modules: never the compiler, the models, the CLI or networkx.
The names below load on first use, so the compiler can read the kernel tables
(`tinyc.runtime.kernels`) without importing the executor.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ..ir.codec import load_program as load
    from ..ir.program import Program
    from .executor import Executor

__all__ = ["Executor", "Program", "load"]


def __getattr__(name: str) -> Any:
    if name == "Program":
        from ..ir.program import Program

        return Program
    if name == "load":  # reading a `.ir` file is the codec's: validated, never executes code
        from ..ir.codec import load_program

        return load_program
    if name == "Executor":
        from .executor import Executor

        return Executor
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
