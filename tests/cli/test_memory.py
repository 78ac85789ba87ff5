"""`tinyc inspect --memory` is a view of the entry's memory plan: its figures are the plan's own."""

from __future__ import annotations

import tinyc as tc
from tests.compiler.test_memplan import _mlp
from tinyc.cli.memory import format_memory_report, memory_report
from tinyc.compiler.driver import compile_graph
from tinyc.compiler.passes.memplan import make_plan


def test_the_report_shows_the_plans_figures():
    program, _ = compile_graph(_mlp(5, tc.optim.Adam()))
    entry = program.entries["train_step"]
    plan = entry.plan
    for batch, want in ((None, plan), (plan.batch, plan), (64, make_plan(entry.graph, 64))):
        report = memory_report(entry, batch)
        assert report["batch"] == want.batch
        for key in ("peak_bytes", "arena_bytes", "no_reuse_bytes", "no_inplace_peak_bytes", "resident_bytes"):
            assert report[key] == getattr(want, key), key
        assert report["peak_at"]["value"] == want.peak_at
        assert sorted(r["value"] for r in report["live_at_peak"]) == sorted(want.live_at_peak)
    report = memory_report(entry, 64)
    # what is alive at the peak adds up to it (values in a parameter's array count zero)
    assert sum(r["bytes"] for r in report["live_at_peak"]) >= report["peak_bytes"] > plan.peak_bytes
    assert any(r["saved_for_backward"] for r in report["live_at_peak"])
    text = format_memory_report(report)
    assert "planned peak" in text and "arena (packed)" in text and "saved for backward" in text


def test_an_unplanned_entry_is_planned_for_the_report():
    program, _ = compile_graph(_mlp(2, tc.optim.SGD()))
    entry = program.entries["train_step"]
    bare = type(entry)(entry.name, entry.graph)
    assert memory_report(bare)["peak_bytes"] == entry.plan.peak_bytes
