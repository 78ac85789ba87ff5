"""`tinyc inspect FILE`: what a program (or a model file, compiled in memory) contains."""

from __future__ import annotations

from enum import Enum
from pathlib import Path
from typing import Annotated

import typer

from ..ir.graph import Graph
from ..ir.plan import reference_batch
from .dot import DEFAULT_DEPTH, to_dot
from .errors import DebugOption, EntryOption, fail, handles_errors, opt
from .memory import format_memory_report, memory_report
from .output import echo, human_bytes, human_count, table
from .session import TRACE, Compiled, load_or_compile
from .views import print_summary, summary_json


class Format(str, Enum):
    text = "text"
    dot = "dot"
    json = "json"


@handles_errors
def inspect(
    file: Annotated[Path, typer.Argument(
        help="A program file (.ir) or a model file (.py, compiled in memory).", metavar="FILE", show_default=False)],
    passes: Annotated[bool, opt("--passes", "Per-pass table: nodes before -> after, FLOPs, bytes, live peak, ms.")] = False,
    after: Annotated[str | None, opt("--after", "Show the graph after PASS (model files; 'trace': before any).",
                                      metavar="PASS")] = None,
    diff: Annotated[str | None, opt("--diff", "Show what PASS changed (model files).", metavar="PASS")] = None,
    fmt: Annotated[Format, typer.Option("--format", help="Output format.")] = Format.text,
    depth: Annotated[int, opt("--depth", "With --format dot: draw layer scopes K levels deep as clusters; deeper "
                                          "ones collapse into one box each (op count, FLOPs).", min=0,
                              metavar="K")] = DEFAULT_DEPTH,
    summary: Annotated[bool, opt("--summary", "Only the summary: per-layer table (output, params, forward and "
                                               "backward FLOPs, bytes saved for backward), optimizer, ops.")] = False,
    memory: Annotated[bool, opt("--memory", "Memory report per entry: planned peak, what is alive there, reuse "
                                             "(with --format json: a 'memory' key).")] = False,
    entry: Annotated[str | None, opt("--graph", "Only this program entry (train_step or predict).",
                                      metavar="NAME")] = None,
    model_fn: EntryOption = "model",
    batch: Annotated[int | None, opt("--batch", "Batch size for --memory (default: the plan's).", min=1)] = None,
    debug: DebugOption = False,
) -> None:
    """Show a program: summary and IR text, pass statistics, one pass's effect, DOT or JSON."""
    compiled = load_or_compile(file, model_fn)
    program = compiled.program
    if entry is not None:
        program.entry(entry)  # raises IRError naming the entries there are
    entries = [entry] if entry is not None else list(program.entries)
    if (passes or after or diff) and not compiled.from_model:
        raise fail(f"{file}: --passes, --after and --diff need a model file (.py)",
                   hint="a .ir file holds only the final graphs; run `tinyc inspect MODEL.py --passes`")

    if fmt is Format.json:
        reports = None
        if memory:
            reports = {name: memory_report(program.entries[name], batch) for name in entries}
        echo(summary_json(program, str(file), entries, compiled.stats, reports))
    elif fmt is Format.dot:
        if after or diff:
            raise fail("--format dot shows the final program; drop --after/--diff")
        echo(to_dot(program, entries, depth))
    elif passes:
        print_pass_table(compiled, entries)
    elif after:
        from ..ir.printer import format_graph

        found = _pass_steps(compiled, entries, after, first=TRACE)
        for name, (_, graph) in found:
            if len(found) > 1:  # both entries' graphs share the model's name
                echo(f"# entry {name}")
            echo(format_graph(graph).rstrip("\n"))
    elif diff:
        from ..compiler.diff import diff_graphs, format_diff

        for name, (before, changed) in _pass_steps(compiled, entries, diff):
            text = format_diff(diff_graphs(before, changed)).rstrip("\n")
            echo(f"# entry {name}: {diff}")
            echo(text or "(no change)")
    elif memory:
        print_memory(compiled, entries, batch)
    else:
        from ..ir.printer import format_graph

        print_summary(program, str(file), entries)
        for name in entries if not summary else ():
            echo("")
            echo(f"# entry {name}")
            echo(format_graph(program.entries[name].graph).rstrip("\n"))


def print_pass_table(compiled: Compiled, entries: list[str]) -> None:
    """Per entry: pass, nodes before -> after, estimated FLOPs, bytes and live peak, ms; then the planned peak.

    "live peak" is every node output held from its node to its last reader, in the graph's order at
    that pass (no buffer reuse, in-place update or view); the planned peak below the table is
    memplan's figure, the one `compile` and `--memory` print.
    """
    for i, name in enumerate(entries):
        if i:
            echo("")
        rows = [(s.name, f"{s.nodes_before} -> {s.nodes_after}", human_count(s.flops), human_bytes(s.bytes),
                 human_bytes(s.peak_bytes), f"{s.ms:.2f}") for s in compiled.stats.get(name, [])]
        title = f"entry {name} (estimates at batch {reference_batch(compiled.program.meta)})"
        table(["pass", "nodes", "FLOPs", "bytes", "live peak", "ms"], rows, title=title, right=(1, 2, 3, 4, 5))
        plan = compiled.program.entries[name].plan
        if plan:
            echo(f"planned peak {human_bytes(plan.peak_bytes)} at batch {plan.batch} "
                 "(memplan: with buffer reuse, in-place updates and views; as in `compile` and `--memory`)")


def print_memory(compiled: Compiled, entries: list[str], batch: int | None) -> None:
    for i, name in enumerate(entries):
        if i:
            echo("")
        echo(f"# entry {name}")
        echo(format_memory_report(memory_report(compiled.program.entries[name], batch)))


def _pass_steps(compiled: Compiled, entries: list[str], pass_name: str,
                first: str = "") -> list[tuple[str, tuple[Graph, Graph]]]:
    """(entry, (graph before `pass_name`, graph after it)) for each entry that ran it.

    An entry that did not run it is skipped (predict runs no autodiff); none at all is an error.
    `first` also accepts that name for the graph before any pass (`--after trace`).
    """
    found = []
    for entry in entries:
        steps = compiled.history.get(entry, [])
        for i, (name, graph) in enumerate(steps):
            if name == pass_name and (i > 0 or name == first):
                found.append((entry, (steps[i - 1][1] if i else graph, graph)))
                break
    if not found:
        names = dict.fromkeys(n for e in entries for n, _ in compiled.history.get(e, []) if first or n != TRACE)
        what = f"entry {entries[0]} did not run" if len(entries) == 1 else "no entry ran"
        raise fail(f"{what} a pass named {pass_name!r}", hint=f"the passes: {', '.join(names)}")
    return found


def register(app: typer.Typer) -> None:
    app.command("inspect")(inspect)
