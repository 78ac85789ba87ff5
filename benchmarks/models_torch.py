"""The benchmark models in PyTorch eager, the same math and parameter names as models_tinyc.py.

Parameters are kept in tinyc's layout (Linear weight [d_in, d_out], applied as F.linear(x, w.T,
b), which PyTorch runs as one addmm) under tinyc's names, so `load_weights` copies them 1:1.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from models_tinyc import CONFIGS
from torch import nn


class Model(nn.Module):
    """Parameters by tinyc name ('.' is not allowed in a module's parameter names: kept in a dict)."""

    def __init__(self, shapes: dict[str, tuple[int, ...]]) -> None:
        super().__init__()
        self.names = list(shapes)
        self.store = nn.ParameterDict({n.replace(".", "__"): nn.Parameter(torch.zeros(s)) for n, s in shapes.items()})

    def p(self, name: str) -> torch.Tensor:
        return self.store[name.replace(".", "__")]

    def linear(self, name: str, x: torch.Tensor) -> torch.Tensor:
        return F.linear(x, self.p(f"{name}.w").T, self.p(f"{name}.b"))

    def layer_norm(self, name: str, x: torch.Tensor) -> torch.Tensor:
        return F.layer_norm(x, x.shape[-1:], self.p(f"{name}.gain"), self.p(f"{name}.bias"), eps=1e-5)

    def attention(self, name: str, x: torch.Tensor, heads: int) -> torch.Tensor:
        b, t, d = x.shape
        q, k, v = self.linear(f"{name}.qkv", x).chunk(3, dim=-1)  # tinyc splits qkv.w's columns the same way
        q, k, v = (z.view(b, t, heads, d // heads).transpose(1, 2) for z in (q, k, v))
        y = F.scaled_dot_product_attention(q, k, v)  # softmax(q kᵀ / sqrt(d_head)) v
        return self.linear(f"{name}.out", y.transpose(1, 2).reshape(b, t, d))

    def load_weights(self, arrays) -> None:
        with torch.no_grad():
            for n in self.names:
                self.p(n).copy_(torch.from_numpy(arrays[n]))


class Seed(Model):
    def forward(self, image: torch.Tensor) -> torch.Tensor:
        x = self.linear("embed", image)
        x = self.layer_norm("enc0.ln1", self.attention("enc0.attn", x, 1))  # no residuals, post-norm
        x = self.layer_norm("enc0.ln2", self.linear("enc0.ff.fc2", F.relu(self.linear("enc0.ff.fc1", x))))
        return self.linear("head", x.mean(dim=1))


class ViT(Model):
    def __init__(self, shapes, heads: int, layers: int) -> None:
        super().__init__(shapes)
        self.heads, self.layers = heads, layers

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        b = image.shape[0]
        patches = image.reshape(b, 4, 7, 4, 7).permute(0, 1, 3, 2, 4).reshape(b, 16, 49)
        x = self.linear("embed", patches) + self.p("pos")
        for i in range(self.layers):
            e = f"enc{i}"
            x = x + self.attention(f"{e}.attn", self.layer_norm(f"{e}.ln1", x), self.heads)
            x = x + self.linear(f"{e}.ff.fc2", F.relu(self.linear(f"{e}.ff.fc1", self.layer_norm(f"{e}.ln2", x))))
        return self.linear("head", self.layer_norm("ln_f", x).mean(dim=1))


def build(config: str, shapes: dict[str, tuple[int, ...]]) -> tuple[nn.Module, torch.optim.Optimizer]:
    """The model of `config` with parameters of `shapes` (from the tinyc program) and its optimizer."""
    cfg = CONFIGS[config]
    model = Seed(shapes) if config == "seed" else ViT(shapes, cfg["heads"], cfg["layers"])
    if cfg["optimizer"] == "sgd":
        opt = torch.optim.SGD(model.parameters(), lr=cfg["lr"])
    else:
        opt = torch.optim.Adam(model.parameters(), lr=cfg["lr"])
    return model, opt


def train_step(model: nn.Module, opt: torch.optim.Optimizer, image: torch.Tensor, label: torch.Tensor) -> float:
    """Forward, backward, update; returns the loss."""
    opt.zero_grad(set_to_none=True)
    loss = F.cross_entropy(model(image), label)
    loss.backward()
    opt.step()
    return loss.item()


