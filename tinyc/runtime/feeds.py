"""One feed made ready for its input: converted by the input's declared preprocessing, or refused.

The single place where raw data meets a program: the executors call `prepare` for every feed,
and the data-set binding for every field (once per data set, so a training step only checks).
Integer data (raw pixels) for a float input is converted by the declared rule
(`tinyc.ir.preprocess`); without one it is refused, never used as if it were scaled. Float data
for an input with a rule must already lie in the rule's range (an unscaled image is refused);
float64 for a float32 input is cast when copied into the input buffer.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from ..ir import preprocess
from ..ir.errors import DataError
from ..ir.types import TensorType

# a float feed may overshoot the declared range by this share of it (rounding in the user's own scaling)
RANGE_SLACK = 1e-3


def prepare(name: str, value: Any, t: TensorType, rule: Mapping[str, Any],
            fallback: Mapping[str, Any] | None = None) -> np.ndarray:
    """`value` as an array fit for input `name` of type `t` with preprocessing `rule` ({} for none).

    `fallback` is what a data source's raw integers mean (image files and data sets: pixels,
    x / 255), used only for integer data and only when the input declares no rule.
    """
    a = np.asarray(value)
    if not t.is_float or a.size == 0:
        return a
    kind = a.dtype.kind
    if kind in "ui":
        rule = rule or fallback or {}
        if not rule:
            raise DataError(f"input {name!r} is {t} and declares no preprocessing, but got {a.dtype} data",
                            hint="scale it yourself (e.g. x / 255), or declare the rule: "
                                 f"tc.input({name!r}, ..., scale=1/255)")
        info = np.iinfo(preprocess.RAW_DTYPES[rule["raw"]])
        lo, hi = a.min(), a.max()
        if lo < info.min or hi > info.max:
            raise DataError(f"input {name!r} takes raw {rule['raw']} data ({info.min} to {info.max}); "
                            f"got {a.dtype} values from {lo} to {hi}")
        return preprocess.apply(rule, a, t.np_dtype)
    if kind == "f" and rule:
        lo, hi = preprocess.value_range(rule)
        slack = RANGE_SLACK * (hi - lo)
        amin, amax = float(a.min()) + 0.0, float(a.max()) + 0.0  # + 0.0: no "-0" in messages
        if amin < lo - slack or amax > hi + slack:
            raise DataError(
                f"input {name!r}: {a.dtype} values from {amin:g} to {amax:g}, but its preprocessing "
                f"({preprocess.describe(rule)}) gives {lo:g} to {hi:g}",
                hint=f"feed the raw {rule['raw']} data, or floats already preprocessed")
    return a
