"""How raw data maps to a program input: declared on `tc.input`, recorded in the `.ir`, applied once.

A rule says what raw data looks like (`raw`: its dtype, e.g. "u8" pixels) and the affine map to
the input's float values, `y = ((x * scale + offset) - mean) / std`; for instance
`tc.input("image", ("B", 28, 28), scale=1/255)` or `mean=33.3, std=78.6` (in pixel units). The
rule is data (a msgpack-able dict); this module is its one home: validation (front-end and
codec), the arithmetic steps (the runtime's binding and the ONNX exporter both follow
`steps`), the range of values the rule produces, and how it reads in messages.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import numpy as np

from .errors import IRError

RAW_DTYPES = {"u8": np.uint8, "u16": np.uint16}  # raw data a rule converts from (pixels)
KEYS = ("raw", "scale", "offset", "mean", "std")
_IDENTITY = {"scale": 1.0, "offset": 0.0, "mean": 0.0, "std": 1.0}


def make_rule(raw: str = "u8", scale: float | None = None, offset: float | None = None,
              mean: float | None = None, std: float | None = None) -> dict[str, Any]:
    """The canonical rule of what `tc.input` was given ({} when nothing was)."""
    given = {"scale": scale, "offset": offset, "mean": mean, "std": std}
    if all(v is None for v in given.values()):
        return {}
    rule = {"raw": raw, **{k: (_IDENTITY[k] if v is None else v) for k, v in given.items()}}
    return check_rule(rule)


def check_rule(rule: Any, where: str = "preprocess") -> dict[str, Any]:
    """`rule` validated (IRError naming `where` and the field otherwise), numbers as floats."""
    if not isinstance(rule, Mapping):
        raise IRError(f"{where}: must be a map of {', '.join(KEYS)}, got {type(rule).__name__}")
    if not rule:
        return {}
    if set(rule) != set(KEYS):
        raise IRError(f"{where}: needs exactly the fields {', '.join(KEYS)}, got {', '.join(map(str, rule)) or 'none'}")
    if rule["raw"] not in RAW_DTYPES:
        raise IRError(f"{where}: raw must be one of {', '.join(RAW_DTYPES)}, got {rule['raw']!r}")
    out: dict[str, Any] = {"raw": rule["raw"]}
    for key in KEYS[1:]:
        v = rule[key]
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
            raise IRError(f"{where}: {key} must be a finite number, got {v!r}")
        out[key] = float(v)
    if out["scale"] == 0 or out["std"] == 0:
        raise IRError(f"{where}: scale and std must not be 0 (every input would map to one value)")
    return out


def steps(rule: Mapping[str, Any]) -> list[tuple[str, float]]:
    """The arithmetic of a rule as (op, constant) pairs in order, identities left out.

    A scale whose reciprocal is a whole number (1/255) is a division by that number: x / 255 is
    correctly rounded where x * (1/255) is not, and it is what the data loaders always computed.
    """
    if not rule:
        return []
    out: list[tuple[str, float]] = []
    scale = rule["scale"]
    if scale != 1.0:
        inverse = 1.0 / scale
        whole = round(inverse)
        out.append(("div", float(whole)) if whole != 0 and abs(inverse - whole) <= 1e-9 * abs(inverse) else ("mul", scale))
    if rule["offset"] != 0.0:
        out.append(("add", rule["offset"]))
    if rule["mean"] != 0.0:
        out.append(("sub", rule["mean"]))
    if rule["std"] != 1.0:
        out.append(("div", rule["std"]))
    return out


_NUMPY = {"mul": np.multiply, "div": np.divide, "add": np.add, "sub": np.subtract}


def apply(rule: Mapping[str, Any], raw: np.ndarray, dtype: np.dtype) -> np.ndarray:
    """Raw data converted by the rule into a new array of the input's float `dtype`."""
    y = np.asarray(raw).astype(dtype)
    for op, c in steps(rule):
        _NUMPY[op](y, y.dtype.type(c), out=y)
    return y


def value_range(rule: Mapping[str, Any]) -> tuple[float, float]:
    """(lowest, highest) value the rule gives over every raw value (the map is affine, so the ends)."""
    info = np.iinfo(RAW_DTYPES[rule["raw"]])
    ends = apply(rule, np.array([info.min, info.max]), np.dtype(np.float64))
    return float(ends.min()), float(ends.max())


def describe(rule: Mapping[str, Any]) -> str:
    """How the rule reads in a message: `u8 x -> x / 255`."""
    text = "x"
    for op, c in steps(rule):
        text = f"{text} {dict(mul='*', div='/', add='+', sub='-')[op]} {c:g}"
        if op in ("add", "sub"):
            text = f"({text})"
    return f"{rule['raw']} x -> {text}" if rule else "none"
