"""The NumPy runtime: load a compiled `.ir` program and train or predict with it.

Imports only `tinyc.ir` and runtime modules: never the compiler, the models, the CLI or networkx.
"""

from ..ir.program import Program
from .executor import Executor, load

__all__ = ["Executor", "Program", "load"]
