"""The benchmark models in tinyc (see models_torch.py for the same models in PyTorch).

Each entry returns a tc.Train and is traced with `trace_model_file(this file, entry=NAME)`.
Parameter names are the tinyc layer names (`enc0.attn.qkv.w`, weights [d_in, d_out]); the
PyTorch definitions use the same names and layouts so weights copy 1:1.
"""

from __future__ import annotations

import tinyc as tc
from tinyc.models import EncoderLayer, Linear, TransformerClassifier, softmax_cross_entropy

# config -> (batch, optimizer kind, lr) and the architecture; models_torch.py reads this table too.
CONFIGS = {
    "seed": {"batch": 50, "optimizer": "sgd", "lr": 0.02},
    "vit": {"batch": 128, "optimizer": "adam", "lr": 1e-3, "d": 64, "heads": 4, "layers": 2, "d_ff": 256},
    "vit-wide": {"batch": 256, "optimizer": "adam", "lr": 1e-3, "d": 256, "heads": 8, "layers": 4, "d_ff": 1024},
}
ENTRIES = {"seed": "seed", "vit": "vit", "vit-wide": "vit_wide"}


def _inputs():
    return tc.input("image", ("B", 28, 28)), tc.input("label", ("B",), dtype="i64")


def seed() -> tc.Train:
    """28 row tokens -> Linear 28->128 -> post-norm encoder layer without residuals -> mean -> 10."""
    cfg = CONFIGS["seed"]
    image, label = _inputs()
    x = Linear("embed", 28, 128)(image)
    x = EncoderLayer("enc0", 128, heads=1, d_ff=128, residual=False, norm="post")(x)
    logits = Linear("head", 128, 10)(x.mean(axis=1))
    loss = softmax_cross_entropy(logits, label)
    return tc.Train(loss, optimizer=tc.optim.SGD(lr=cfg["lr"]), batch_size=cfg["batch"], lr=cfg["lr"])


def _vit(name: str) -> tc.Train:
    cfg = CONFIGS[name]
    image, label = _inputs()
    vit = TransformerClassifier(image=(28, 28), tokens="patches", patch=7, d_model=cfg["d"], heads=cfg["heads"],
                                layers=cfg["layers"], d_ff=cfg["d_ff"], residual=True, norm="pre",
                                pos_embedding=True, final_norm=True, classes=10)
    loss = softmax_cross_entropy(vit(image), label)
    return tc.Train(loss, optimizer=tc.optim.Adam(lr=cfg["lr"]), batch_size=cfg["batch"], lr=cfg["lr"])


def vit() -> tc.Train:
    """ViT: 16 patches of 7x7, d 64, 4 heads, 2 pre-norm blocks, FFN 256, Adam."""
    return _vit("vit")


def vit_wide() -> tc.Train:
    """vit with d 256, 8 heads, 4 blocks, FFN 1024, batch 256."""
    return _vit("vit-wide")
