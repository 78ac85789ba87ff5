"""Transformer encoder layers and an image classifier built from them."""

from __future__ import annotations

from collections.abc import Sequence

import tinyc as tc
from tinyc.ir.builder import user_location
from tinyc.ir.errors import ShapeError

from .attention import MultiHeadAttention
from .layers import FeedForward, Layer, LayerNorm, Linear, check_choice, join

NORMS = ("pre", "post")
TOKENS = ("rows", "patches")


class EncoderLayer(Layer):
    """Attention then feed-forward, each with a LayerNorm, with or without residual connections.

    pre-norm:  x = x + attn(ln1(x)); x = x + ff(ln2(x))
    post-norm: x = ln1(x + attn(x)); x = ln2(x + ff(x))
    residual=False drops the `x +` terms.
    """

    def __init__(self, name: str, d: int, heads: int, d_ff: int, residual: bool = True, norm: str = "pre",
                 fused_qkv: bool = True, dtype: str = "f32") -> None:
        self.name = name
        self.residual = residual
        self.norm = check_choice("norm", norm, NORMS)
        self.attn = MultiHeadAttention(join(name, "attn"), d, heads, fused_qkv=fused_qkv, dtype=dtype)
        self.ln1 = LayerNorm(join(name, "ln1"), d, dtype=dtype)
        self.ff = FeedForward(join(name, "ff"), d, d_ff, dtype=dtype)
        self.ln2 = LayerNorm(join(name, "ln2"), d, dtype=dtype)

    def __call__(self, x: tc.Tensor) -> tc.Tensor:
        for block, ln in ((self.attn, self.ln1), (self.ff, self.ln2)):
            if self.norm == "pre":
                y = block(ln(x))
                x = x + y if self.residual else y
            else:
                y = block(x)
                x = ln(x + y if self.residual else y)
        return x


class TransformerClassifier(Layer):
    """image [..., H, W] -> tokens (rows, or p x p patches) -> Linear embed (+ learned position
    embedding) -> encoder layers -> (final LayerNorm) -> mean over tokens -> Linear -> logits."""

    def __init__(self, name: str = "", image: Sequence[int] = (28, 28), tokens: str = "rows", patch: int = 7,
                 d_model: int = 64, heads: int = 4, layers: int = 2, d_ff: int = 256, residual: bool = True,
                 norm: str = "pre", pos_embedding: bool = True, final_norm: bool = True, classes: int = 10,
                 fused_qkv: bool = True, dtype: str = "f32") -> None:
        self.name = name
        self.image = tuple(image)
        self.tokens = check_choice("tokens", tokens, TOKENS)
        self.patch = patch
        h, w = self.image
        if tokens == "rows":
            self.seq, d_token = h, w
        else:
            if h % patch or w % patch:
                raise ShapeError(f"image {h}x{w} does not divide into {patch}x{patch} patches", loc=user_location(2))
            self.seq, d_token = (h // patch) * (w // patch), patch * patch
        self.embed = Linear(join(name, "embed"), d_token, d_model, dtype=dtype)
        self.pos = (tc.param(join(name, "pos"), (self.seq, d_model), tc.init.normal(0.02), dtype=dtype)
                    if pos_embedding else None)
        self.layers = [EncoderLayer(join(name, f"enc{i}"), d_model, heads, d_ff, residual=residual, norm=norm,
                                    fused_qkv=fused_qkv, dtype=dtype) for i in range(layers)]
        self.final_norm = LayerNorm(join(name, "ln_f"), d_model, dtype=dtype) if final_norm else None
        self.head = Linear(join(name, "head"), d_model, classes, dtype=dtype)

    def to_tokens(self, image: tc.Tensor) -> tc.Tensor:
        """[..., H, W] -> [..., T, d_token]: the rows as they are, or patches in row-major order."""
        if self.tokens == "rows":
            return image
        lead, p = image.shape[:-2], self.patch
        (h, w), n = self.image, len(lead)
        keep = tuple(range(n))
        grid = image.reshape(lead + (h // p, p, w // p, p))  # [..., gh, p, gw, p]
        patches = grid.transpose(keep + (n, n + 2, n + 1, n + 3))  # [..., gh, gw, p, p]
        return patches.reshape(lead + (self.seq, p * p))

    def __call__(self, image: tc.Tensor) -> tc.Tensor:
        x = self.embed(self.to_tokens(image))
        if self.pos is not None:
            x = x + self.pos
        for layer in self.layers:
            x = layer(x)
        if self.final_norm is not None:
            x = self.final_norm(x)
        return self.head(x.mean(axis=-2))
