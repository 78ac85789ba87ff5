"""Checks for the fields of a decoded `.ir` document: each failure is an IRFormatError saying where.

Shared by the codec and the parts of the format that decode themselves (the memory plan).
"""

from __future__ import annotations

import re
from typing import Any, NoReturn

import msgpack

from .errors import IRFormatError

MAX_DEPTH = 32  # nesting of free-form dicts (meta, plan)
_SYMBOL_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,63}$")


def fail(where: str, message: str) -> NoReturn:
    raise IRFormatError(f"{where}: {message}")


def short_repr(v: Any) -> str:
    text = repr(v)
    return text if len(text) <= 60 else text[:57] + "..."


def kind_of(v: Any) -> str:
    if isinstance(v, (msgpack.ExtType, msgpack.Timestamp)):
        return "a msgpack extension type"
    return {dict: "a map", list: "a list", str: "a string", bytes: "bytes", bool: "a bool", int: "an int",
            float: "a float", type(None): "nil"}.get(type(v), type(v).__name__)


def check_fields(d: Any, where: str, fields: tuple[str, ...]) -> None:
    if not isinstance(d, dict):
        fail(where, f"expected a map, got {kind_of(d)}")
    missing = [f for f in fields if f not in d]
    if missing:
        fail(where, f"missing field {missing[0]!r}")
    if len(d) != len(fields):
        fail(where, f"unknown field {short_repr(next(k for k in d if k not in fields))}")


def check_str(v: Any, where: str, what: str, nonempty: bool = False) -> str:
    if not isinstance(v, str):
        fail(where, f"{what} must be a string, got {kind_of(v)}")
    if nonempty and not v:
        fail(where, f"{what} is empty")
    return v


def check_int(v: Any, where: str, what: str, lo: int, hi: int) -> int:
    if isinstance(v, bool) or not isinstance(v, int):
        fail(where, f"{what} must be an int, got {kind_of(v)}")
    if not lo <= v <= hi:
        fail(where, f"{what} {v} is out of range [{lo}, {hi}]")
    return v


def check_symbol(v: str, where: str, what: str) -> str:
    if not _SYMBOL_RE.match(v):
        fail(where, f"{what} has an invalid symbolic dim {short_repr(v)}")
    return v


def check_list(v: Any, where: str, what: str) -> list:
    if not isinstance(v, list):
        fail(where, f"{what} must be a list, got {kind_of(v)}")
    return v


def check_dict(v: Any, where: str, what: str) -> dict:
    if not isinstance(v, dict):
        fail(where, f"{what} must be a map, got {kind_of(v)}")
    return v


def check_plain_dict(v: Any, where: str, what: str) -> dict:
    check_dict(v, where, what)
    _check_plain(v, where, what, 0)
    return v


def _check_plain(v: Any, where: str, what: str, depth: int) -> None:
    """Free-form data may hold only nil, bools, numbers, strings, lists and str-keyed maps."""
    if depth > MAX_DEPTH:
        fail(where, f"{what} is nested more than {MAX_DEPTH} deep")
    if isinstance(v, dict):
        for k, x in v.items():
            if not isinstance(k, str):
                fail(where, f"{what} has a key that is not a string: {kind_of(k)}")
            _check_plain(x, where, f"{what}.{k}", depth + 1)
    elif isinstance(v, list):
        for i, x in enumerate(v):
            _check_plain(x, where, f"{what}[{i}]", depth + 1)
    elif not (v is None or isinstance(v, (bool, int, float, str))):
        fail(where, f"{what} holds {kind_of(v)}, which .ir files do not allow")
