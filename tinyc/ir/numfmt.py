"""How tinyc writes numbers for people: one home, so every command says a size the same way.

- sizes in binary units (`1.5 KiB`, `8.0 MiB`, `1.2 GiB`; 1 KiB = 1024 bytes);
- counts with a decimal suffix (`658.53M` FLOPs);
- attribute floats without binary noise (`0.1`, not `0.09999999999999998`, the value of `1 - 0.9`);
- metrics (losses, accuracies as plain numbers) readable at any size: `0.2113`, `1.3e+28`, `nan`.

It lives in `ir` (the bottom layer) because the IR printer, the compiler's reports, the runtime's
messages and the CLI all print numbers.
"""

from __future__ import annotations

import math

_BINARY = ("B", "KiB", "MiB", "GiB", "TiB", "PiB", "EiB")
ATTR_DIGITS = 12  # float attributes: rounding at 12 significant digits removes `1 - 0.9`-style noise


def human_bytes(n: float) -> str:
    """1536 -> '1.5 KiB'; 8388608 -> '8.0 MiB'; 100 -> '100 B' (binary units, 1 KiB = 1024 B)."""
    for unit in _BINARY:
        if abs(n) < 1024 or unit == _BINARY[-1]:
            if abs(n) >= 1024:  # past the last unit (`--batch-size 10**30`): three digits, not thirty
                return f"{n:.3g} {unit}"
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    raise AssertionError("unreachable")


def human_count(n: float) -> str:
    """1234567 -> '1.23M'; 950 -> '950' (FLOPs, values: decimal suffixes k, M, G)."""
    for unit, scale in (("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if abs(n) >= scale:
            return f"{n / scale:.2f}{unit}"
    return str(int(n))


def short_float(v: float) -> str:
    """The shortest text of `v` rounded to 12 significant digits: 0.09999999999999998 -> '0.1'."""
    if not math.isfinite(v):
        return repr(v)  # 'nan', 'inf', '-inf'
    return repr(float(f"{v:.{ATTR_DIGITS}g}"))


def metric(v: float, digits: int = 4) -> str:
    """A loss or similar value: fixed point when moderate, else scientific; 'nan' and 'inf' as such.

    0.21134 -> '0.2113'; 1.3e28 -> '1.3e+28'; 1.234e28 -> '1.23e+28'; 3e-7 -> '3e-07'; nan -> 'nan'.
    """
    if not math.isfinite(v):
        return repr(float(v))
    if v == 0 or 10 ** -(digits - 1) <= abs(v) < 1e5:
        return f"{v:.{digits}f}"
    return f"{v:.3g}"


def human_duration(seconds: float) -> str:
    """42.4 -> '42s'; 192 -> '3m12s'; 3900 -> '1h05m' (remaining-time estimates)."""
    s = max(0, round(seconds))
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    return f"{s // 3600}h{s % 3600 // 60:02d}m"
