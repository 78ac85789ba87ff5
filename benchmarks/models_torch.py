"""The benchmark models in PyTorch eager, the same math and parameter names as models_tinyc.py.

Parameters are kept in tinyc's layout (Linear weight [d_in, d_out], applied as F.linear(x, w.T,
b), which PyTorch runs as one addmm) under tinyc's names, so `load_weights` copies them 1:1.

Attention comes in two variants (`ATTENTION`), the two ways a PyTorch user writes it:
- "mha": `nn.MultiheadAttention` modules (batch_first, need_weights=False), holding the
  `attn.qkv` / `attn.out` weights as their in_proj / out_proj (transposed on load);
- "manual": hand-written, softmax(q kᵀ / sqrt(d_head)) v with matmuls and F.softmax.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from models_tinyc import CONFIGS
from torch import nn

ATTENTION = ("mha", "manual")
_MHA = {"qkv.w": "in_proj_weight", "qkv.b": "in_proj_bias", "out.w": "out_proj.weight", "out.b": "out_proj.bias"}


class Model(nn.Module):
    """Parameters by tinyc name ('.' is not allowed in a module's parameter names: kept in a dict)."""

    def __init__(self, shapes: dict[str, tuple[int, ...]], attention: str, heads: int) -> None:
        super().__init__()
        self.attention_kind = attention
        self.mha = nn.ModuleDict()
        if attention == "mha":  # one nn.MultiheadAttention per tinyc attention layer; it owns those weights
            for n in shapes:
                if n.endswith(".attn.qkv.w"):
                    layer = n[: -len(".qkv.w")]
                    self.mha[layer.replace(".", "__")] = nn.MultiheadAttention(shapes[n][0], heads, batch_first=True)
            shapes = {n: s for n, s in shapes.items() if self._mha_target(n) is None}
        self.names = list(shapes)
        self.store = nn.ParameterDict({n.replace(".", "__"): nn.Parameter(torch.zeros(s)) for n, s in shapes.items()})

    def _mha_target(self, name: str) -> tuple[nn.Module, str] | None:
        """(module, its parameter name) holding tinyc parameter `name`, when an MHA module does."""
        for suffix, target in _MHA.items():
            layer = name[: -len(suffix) - 1]
            if name.endswith("." + suffix) and layer.replace(".", "__") in self.mha:
                return self.mha[layer.replace(".", "__")], target
        return None

    def p(self, name: str) -> torch.Tensor:
        return self.store[name.replace(".", "__")]

    def linear(self, name: str, x: torch.Tensor) -> torch.Tensor:
        return F.linear(x, self.p(f"{name}.w").T, self.p(f"{name}.b"))

    def layer_norm(self, name: str, x: torch.Tensor) -> torch.Tensor:
        return F.layer_norm(x, x.shape[-1:], self.p(f"{name}.gain"), self.p(f"{name}.bias"), eps=1e-5)

    def attention(self, name: str, x: torch.Tensor, heads: int) -> torch.Tensor:
        if self.attention_kind == "mha":
            return self.mha[name.replace(".", "__")](x, x, x, need_weights=False)[0]
        b, t, d = x.shape
        q, k, v = self.linear(f"{name}.qkv", x).chunk(3, dim=-1)  # tinyc splits qkv.w's columns the same way
        q, k, v = (z.view(b, t, heads, d // heads).transpose(1, 2) for z in (q, k, v))
        scores = (q @ k.transpose(-2, -1)) * (d // heads) ** -0.5
        y = F.softmax(scores, dim=-1) @ v
        return self.linear(f"{name}.out", y.transpose(1, 2).reshape(b, t, d))

    def load_weights(self, arrays) -> None:
        with torch.no_grad():
            for n in arrays.files if hasattr(arrays, "files") else arrays:
                target = self._mha_target(n)
                value = torch.from_numpy(arrays[n])
                if target is None:
                    self.p(n).copy_(value)
                else:  # tinyc's [d_in, d_out] is the transpose of PyTorch's [d_out, d_in]
                    module, attr = target
                    module.get_parameter(attr).copy_(value.T if value.ndim == 2 else value)


class Seed(Model):
    def forward(self, image: torch.Tensor) -> torch.Tensor:
        x = self.linear("embed", image)
        x = self.layer_norm("enc0.ln1", self.attention("enc0.attn", x, 1))  # no residuals, post-norm
        x = self.layer_norm("enc0.ln2", self.linear("enc0.ff.fc2", F.relu(self.linear("enc0.ff.fc1", x))))
        return self.linear("head", x.mean(dim=1))


class ViT(Model):
    def __init__(self, shapes, attention: str, heads: int, layers: int) -> None:
        super().__init__(shapes, attention, heads)
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


def build(config: str, shapes: dict[str, tuple[int, ...]], attention: str) -> tuple[nn.Module, torch.optim.Optimizer]:
    """The model of `config` with parameters of `shapes` (from the tinyc program), `attention` one
    of ATTENTION, and its optimizer."""
    cfg = CONFIGS[config]
    model = Seed(shapes, attention, 1) if config == "seed" else ViT(shapes, attention, cfg["heads"], cfg["layers"])
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


