"""One way to say numbers: binary sizes, counts, attribute floats without noise, readable metrics."""

import math

import pytest

from tinyc.ir.graph import Node
from tinyc.ir.numfmt import human_bytes, human_count, metric, short_float
from tinyc.ir.printer import format_node
from tinyc.ir.types import TensorType


@pytest.mark.parametrize("n, text", [
    (0, "0 B"), (1023, "1023 B"), (1024, "1.0 KiB"), (1536, "1.5 KiB"),
    (8 * 2**20, "8.0 MiB"), (3 * 2**30 // 2, "1.5 GiB"), (5 * 2**40, "5.0 TiB"),
    (3 * 2**50, "3.0 PiB"), (2**60, "1.0 EiB"), (2.5e30 * 2**60, "2.5e+30 EiB"),
])
def test_sizes_in_binary_units(n, text):
    assert human_bytes(n) == text


@pytest.mark.parametrize("n, text", [(950, "950"), (1500, "1.50k"), (658_530_000, "658.53M"), (2.5e9, "2.50G")])
def test_counts(n, text):
    assert human_count(n) == text


@pytest.mark.parametrize("v, text", [
    (1 - 0.9, "0.1"), (1 - 0.999, "0.001"), (0.1 + 0.2, "0.3"), (1e-8, "1e-08"), (2.5, "2.5"),
    (1e28, "1e+28"), (float("nan"), "nan"), (float("-inf"), "-inf"),
])
def test_attribute_floats_without_noise(v, text):
    assert short_float(v) == text
    if math.isfinite(v):  # still the same number to 12 digits
        assert math.isclose(float(short_float(v)), v, rel_tol=1e-12)


@pytest.mark.parametrize("v, text", [
    (0.21134, "0.2113"), (0.0, "0.0000"), (12.5, "12.5000"), (1.3e28, "1.3e+28"), (1.234e28, "1.23e+28"),
    (3e-7, "3e-07"), (float("nan"), "nan"), (float("inf"), "inf"), (-2e6, "-2e+06"),
])
def test_metrics_readable_at_any_size(v, text):
    assert metric(v) == text


def test_printed_attribute_has_no_float_noise():
    node = Node("3", "axpby", ("1", "2"), {"a": 0.9, "b": 1 - 0.9, "square": False}, TensorType("f32", (4,)))
    assert "{a=0.9, b=0.1, square=false}" in format_node(node)
