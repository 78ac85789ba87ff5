"""Scaled dot-product attention: softmax(Q Kᵀ / sqrt(d_head)) V, then an output projection."""

from __future__ import annotations

import math

import tinyc as tc
from tinyc.ir.builder import user_location
from tinyc.ir.errors import ShapeError

from .layers import Layer, Linear, join


class MultiHeadAttention(Layer):
    """Self-attention over x[..., T, d] with `heads` heads of size d // heads.

    fused_qkv=True keeps Q, K and V in one parameter `qkv.w` [d, 3d] (+ `qkv.b` [3d]), the
    layout of a single Linear(d, 3d), applied as ONE GEMM whose output [..., T, 3d] is split
    into Q, K and V: the slices (and the head reshapes and transposes after them) are views
    of that output under the memory plan, and the backward joins their gradients with one
    concat (fuse pass), so the weight gradient is one GEMM too. Else three Linears `wq`, `wk`, `wv`.
    """

    def __init__(self, name: str, d: int, heads: int = 1, fused_qkv: bool = True, dtype: str = "f32") -> None:
        if heads < 1 or d % heads:
            raise ShapeError(f"attention: d={d} does not divide into {heads} heads", loc=user_location(2))
        self.name = name
        self.d, self.heads, self.d_head = d, heads, d // heads
        self.fused_qkv = fused_qkv
        if fused_qkv:
            self.qkv = Linear(join(name, "qkv"), d, 3 * d, dtype=dtype)
        else:
            self.wq, self.wk, self.wv = (Linear(join(name, n), d, d, dtype=dtype) for n in ("wq", "wk", "wv"))
        self.out = Linear(join(name, "out"), d, d, dtype=dtype)

    def project(self, x: tc.Tensor) -> list[tc.Tensor]:
        """Q, K and V of x[..., T, d], each [..., T, d]."""
        if not self.fused_qkv:
            return [self.wq(x), self.wk(x), self.wv(x)]
        return tc.split(self.qkv(x), 3, axis=-1)

    def __call__(self, x: tc.Tensor) -> tc.Tensor:
        q, k, v = self.project(x)
        lead, t = x.shape[:-2], x.shape[-2]  # lead: the batch dims, e.g. ("B",)
        n = len(lead)
        keep = tuple(range(n))
        to_heads = keep + (n + 1, n, n + 2)  # [..., T, H, Dh] <-> [..., H, T, Dh] (its own inverse)
        if self.heads == 1:
            kt = k.transpose(keep + (n + 1, n))
        else:
            shape = lead + (t, self.heads, self.d_head)
            q = q.reshape(shape).transpose(to_heads)
            v = v.reshape(shape).transpose(to_heads)
            kt = k.reshape(shape).transpose(keep + (n + 1, n + 2, n))  # straight to [..., H, Dh, T]
        scores = (q @ kt) * (1.0 / math.sqrt(self.d_head))  # [..., (H,) T, T]
        y = tc.softmax(scores, axis=-1) @ v
        if self.heads > 1:
            y = y.transpose(to_heads).reshape(lead + (t, self.d))
        return self.out(y)


class SingleHeadAttention(MultiHeadAttention):
    """Attention with one head of size d: softmax(Q Kᵀ / sqrt(d)) V, then the output projection."""

    def __init__(self, name: str, d: int, fused_qkv: bool = True, dtype: str = "f32") -> None:
        super().__init__(name, d, heads=1, fused_qkv=fused_qkv, dtype=dtype)

