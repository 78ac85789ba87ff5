"""`feeds.prepare`, the one place raw data meets a program input: converted by the declared rule or refused."""

from __future__ import annotations

import numpy as np
import pytest

from tinyc.ir.errors import DataError
from tinyc.ir.preprocess import make_rule
from tinyc.ir.types import TensorType
from tinyc.runtime.feeds import prepare

F32 = TensorType("f32", ("B", 3))
PIXELS = make_rule(scale=1 / 255)
RAW = np.array([[0, 128, 255]], np.uint8)


def test_raw_integers_are_converted_by_the_declared_rule_once():
    out = prepare("x", RAW, F32, PIXELS)
    assert out.dtype == np.float32
    np.testing.assert_array_equal(out, RAW.astype(np.float32) / np.float32(255))
    again = prepare("x", out, F32, PIXELS)  # already preprocessed floats pass unchanged
    assert again is out
    np.testing.assert_array_equal(prepare("x", RAW.astype(np.int64), F32, PIXELS), out)  # any integer dtype in range


def test_raw_integers_without_a_rule_are_refused_unless_the_source_says_what_they_are():
    with pytest.raises(DataError) as e:
        prepare("x", RAW, F32, {})
    assert e.value.message == "input 'x' is f32[B,3] and declares no preprocessing, but got uint8 data"
    np.testing.assert_array_equal(prepare("x", RAW, F32, {}, fallback=PIXELS), RAW / np.float32(255))
    floats = np.array([[0.0, 7.0, 300.0]], np.float32)
    assert prepare("x", floats, F32, {}, fallback=PIXELS) is floats  # the fallback is for integers only


@pytest.mark.parametrize("value,words", [
    (np.array([[0, 300, 5]]), "takes raw u8 data (0 to 255); got int64 values from 0 to 300"),
    (np.array([[-1, 3, 5]]), "got int64 values from -1 to 5"),
    (RAW.astype(np.float32), "float32 values from 0 to 255, but its preprocessing (u8 x -> x / 255) gives 0 to 1"),
    (-RAW.astype(np.float64) / 255, "float64 values from -1 to 0"),
])
def test_data_outside_the_rule_is_refused(value, words):
    with pytest.raises(DataError) as e:
        prepare("x", value, F32, PIXELS)
    assert words in e.value.message


def test_integer_inputs_and_rounding_slack_pass():
    labels = np.array([1, 2], np.int64)
    assert prepare("y", labels, TensorType("i64", ("B",)), {}) is labels
    nearly = np.array([[0.0, 0.5, 1.0005]], np.float64)  # a user's own scaling may round past the end a little
    assert prepare("x", nearly, F32, PIXELS) is nearly
