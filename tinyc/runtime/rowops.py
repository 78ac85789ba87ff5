"""Fast row kernels: softmax and LayerNorm (and their backwards) over the last axis.

NumPy's reductions along a short, contiguous last axis (16 to 256 elements: attention scores,
LayerNorm features) run far below memory speed, so row sums here are GEMVs (`x2 @ w`) and row
dot products are `einsum`, and elementwise steps write through `out=` into the result buffer.
Every function takes 2-D `[rows, n]` arrays (views of C-contiguous data), writes its result
into `out` and never writes its inputs. `rows` gives such a view or None (callers then take
their general path, `normalize` for LayerNorm). Imports nothing of tinyc.
"""

from __future__ import annotations

import numpy as np


def rows(x: np.ndarray, axis: int) -> np.ndarray | None:
    """x as a 2-D [rows, n] view with `axis` (the last) as n, or None when that needs a copy."""
    if x.ndim == 0 or axis != x.ndim - 1 or not x.flags.c_contiguous:
        return None
    return x.reshape(-1, x.shape[-1]) if x.ndim != 2 else x


def _weights(n: int, dtype: np.dtype, value: float) -> np.ndarray:
    return np.full(n, value, dtype)


def row_sum(x2: np.ndarray) -> np.ndarray:
    """Sum of each row, [rows] (a GEMV: ~10x np.sum(axis=-1) on short rows)."""
    return x2 @ _weights(x2.shape[1], x2.dtype, 1.0)


def row_dot(a2: np.ndarray, b2: np.ndarray) -> np.ndarray:
    """Dot product of matching rows, [rows]."""
    return np.einsum("ij,ij->i", a2, b2)


def softmax(x2: np.ndarray, out: np.ndarray) -> np.ndarray:
    """exp(x - c) / sum(exp(x - c)) per row, c the row mean (one GEMV; np.max is slow on short rows).

    With c <= max every row sum is >= 1; only when some x - c overflows exp (a row spread wider
    than ~88) is the softmax redone with c the row maximum, which never overflows.
    """
    c = x2 @ _weights(x2.shape[1], x2.dtype, 1.0 / x2.shape[1])
    np.subtract(x2, c[:, None], out=out)
    with np.errstate(over="ignore"):  # an overflow is detected below and the row redone
        np.exp(out, out=out)
        s = row_sum(out)
    if not np.isfinite(s).all():
        np.subtract(x2, np.max(x2, axis=1, keepdims=True), out=out)
        np.exp(out, out=out)
        s = row_sum(out)
    out /= s[:, None]
    return out


def softmax_grad(y2: np.ndarray, g2: np.ndarray, out: np.ndarray) -> np.ndarray:
    """y * (gy - sum(gy * y)) per row."""
    np.subtract(g2, row_dot(g2, y2)[:, None], out=out)
    out *= y2
    return out


def layer_norm(x2: np.ndarray, eps: float, out: np.ndarray) -> np.ndarray:
    """(x - mean) / sqrt(var + eps) per row."""
    n = x2.shape[1]
    np.subtract(x2, (x2 @ _weights(n, x2.dtype, 1.0 / n))[:, None], out=out)
    out *= _inv_std(out, eps)[:, None]
    return out


def _inv_std(centered: np.ndarray, eps: float) -> np.ndarray:
    """1 / sqrt(mean(centered²) + eps) per row."""
    var = row_dot(centered, centered)
    var *= var.dtype.type(1.0 / centered.shape[1])
    var += var.dtype.type(eps)
    np.sqrt(var, out=var)
    return np.reciprocal(var, out=var)


def layer_norm_grad(x2: np.ndarray, g2: np.ndarray, eps: float) -> np.ndarray:
    """In place on g2 (the cotangent, already scaled): (g - mean(g) - xhat * mean(g * xhat)) / std."""
    n = x2.shape[1]
    mean_w = _weights(n, x2.dtype, 1.0 / n)
    centered = np.subtract(x2, (x2 @ mean_w)[:, None])
    inv_std = _inv_std(centered, eps)
    mean_g = g2 @ mean_w
    # xhat * mean(g * xhat) = centered * (inv_std² mean(g * centered)): one pass over centered, not two
    k = row_dot(g2, centered)
    k *= inv_std * inv_std * k.dtype.type(1.0 / n)
    xhat = centered
    xhat *= k[:, None]
    g2 -= mean_g[:, None]
    g2 -= xhat
    g2 *= inv_std[:, None]
    return g2


def layer_norm_gain_grad(x2: np.ndarray, g2: np.ndarray, eps: float, out: np.ndarray | None = None) -> np.ndarray:
    """sum over rows of g * (x - mean) / std, [n]: the 1/std scaling rides in the GEMV's weights."""
    n = x2.shape[1]
    centered = np.subtract(x2, (x2 @ _weights(n, x2.dtype, 1.0 / n))[:, None])
    inv_std = _inv_std(centered, eps)
    centered *= g2
    return np.matmul(inv_std, centered, out=out)


def normalize(x: np.ndarray, axis: int, eps: float) -> tuple[np.ndarray, np.ndarray]:
    """((x - mean) / sqrt(var + eps), 1 / sqrt(var + eps)) along any axis: the general path."""
    centered = x - np.mean(x, axis=axis, keepdims=True)
    inv_std = 1.0 / np.sqrt(np.mean(centered * centered, axis=axis, keepdims=True) + eps)
    return centered * inv_std, inv_std
