"""Getting a Program for a command: compile a model file (keeping every pass's graph) or load a `.ir`."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..ir.graph import Graph
from ..ir.program import Program

TRACE = "trace"  # the name of the graph before any pass, in histories and dumps


@dataclass
class Compiled:
    """A program plus, when it came from a model file, how each entry got there."""

    program: Program
    source: Path
    # entry -> [PassStats...]; empty for a loaded .ir file
    stats: dict[str, list[Any]] = field(default_factory=dict)
    # entry -> [(pass name, graph after it)...], starting with (TRACE, graph before any pass)
    history: dict[str, list[tuple[str, Graph]]] = field(default_factory=dict)

    @property
    def from_model(self) -> bool:
        return bool(self.stats)


def is_model_file(path: Path) -> bool:
    return path.suffix == ".py"


def compile_model(path: Path, entry: str = "model") -> Compiled:
    """Trace and compile a model file, recording the graph after every pass of every entry."""
    from ..compiler import driver

    path = _existing(path)
    runs: list[list[tuple[str, Graph]]] = []

    def on_pass(index: int, name: str, graph: Graph, stats: Any) -> None:
        if index == 0:  # the driver restarts the index with each entry, in driver.ENTRIES order
            runs.append([])
        runs[-1].append((name, graph))

    program, stats = driver.compile_file(str(path), entry, on_pass=on_pass)
    history = {}
    for entry_name, steps in zip(stats, runs):
        if [n for n, _ in steps] != [s.name for s in stats[entry_name]]:
            raise RuntimeError(f"the pass hook saw other passes than the stats of entry {entry_name!r}")
        history[entry_name] = [(TRACE, _trace_of(entry_name, steps))] + steps
    return Compiled(program, path, {k: list(v) for k, v in stats.items()}, history)


def _trace_of(entry_name: str, steps: list[tuple[str, Graph]]) -> Graph:
    """The graph an entry's pipeline started from.

    The pass hook only sees graphs after a pass; the first pass, verify, returns its input
    unchanged, so the graph after it is the one the pipeline started from.
    """
    if steps and steps[0][0] == "verify":
        return steps[0][1]
    raise RuntimeError(f"cannot recover the starting graph of entry {entry_name!r}: "
                       "its pipeline does not start with verify")


def load_or_compile(path: Path, entry: str = "model") -> Compiled:
    """A `.ir` file is loaded (never executed); a `.py` model file is compiled in memory."""
    if is_model_file(path):
        return compile_model(path, entry)
    from ..ir import codec

    return Compiled(codec.load_program(str(_existing(path))), path)


def _existing(path: Path) -> Path:
    if not path.exists():
        raise FileNotFoundError(2, "No such file or directory", str(path))
    if path.is_dir():
        raise IsADirectoryError(21, "Is a directory", str(path))
    return path
