"""What a model file returns: `tc.Train(loss, outputs=..., optimizer=...)`, plus optimizer specs.

These are plain data. The compiler's `optimizer` pass turns a spec into IR update ops; the
training defaults (epochs, batch size, learning rate, schedule) are stored in the program so
that `tinyc run model.ir` alone trains well.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

from .errors import IRError


@dataclass(frozen=True)
class SGD:
    """SGD with optional momentum (heavy-ball or Nesterov) and L2 weight decay."""

    lr: float = 0.01
    momentum: float = 0.0
    weight_decay: float = 0.0
    nesterov: bool = False
    kind: str = field(default="sgd", init=False)


@dataclass(frozen=True)
class Adam:
    """Adam; weight_decay adds L2 to the gradient (as torch.optim.Adam does)."""

    lr: float = 1e-3
    beta1: float = 0.9
    beta2: float = 0.999
    eps: float = 1e-8
    weight_decay: float = 0.0
    kind: str = field(default="adam", init=False)


@dataclass(frozen=True)
class AdamW:
    """Adam with decoupled weight decay."""

    lr: float = 1e-3
    beta1: float = 0.9
    beta2: float = 0.999
    eps: float = 1e-8
    weight_decay: float = 0.01
    kind: str = field(default="adamw", init=False)


OPTIMIZERS = {"sgd": SGD, "adam": Adam, "adamw": AdamW}
SCHEDULES = ("constant", "cosine", "step")


def optimizer_spec(opt: Any) -> dict[str, Any]:
    """The msgpack-able dict of an optimizer spec."""
    if not isinstance(opt, tuple(OPTIMIZERS.values())):
        raise IRError(f"optimizer must be tc.optim.SGD, Adam or AdamW, got {type(opt).__name__}")
    return asdict(opt)


@dataclass
class Train:
    """A training objective: the scalar `loss`, named `outputs` (metrics, logits), the optimizer,
    and training defaults stored in the compiled program.

    `schedule` is "constant", "cosine" (with `warmup` steps, decaying to 0) or "step"
    (multiply by `gamma` every `step_size` epochs).
    """

    loss: Any
    outputs: Mapping[str, Any] = field(default_factory=dict)
    optimizer: Any = field(default_factory=SGD)
    epochs: int = 1
    batch_size: int = 64
    lr: float | None = None
    schedule: str = "constant"
    warmup: int = 0
    gamma: float = 0.1
    step_size: int = 1

    def defaults(self) -> dict[str, Any]:
        """Training defaults as stored in the program's meta."""
        if self.schedule not in SCHEDULES:
            raise IRError(f"tc.Train: schedule must be one of {', '.join(SCHEDULES)}, got {self.schedule!r}")
        for key, low in (("epochs", 0), ("batch_size", 1), ("warmup", 0), ("step_size", 1)):
            value = getattr(self, key)
            if isinstance(value, bool) or not isinstance(value, int) or value < low:
                raise IRError(f"tc.Train: {key} must be an int >= {low}, got {value!r}")
        return {
            "epochs": int(self.epochs),
            "batch_size": int(self.batch_size),
            "lr": float(self.lr if self.lr is not None else self.optimizer.lr),
            "schedule": self.schedule,
            "warmup": int(self.warmup),
            "gamma": float(self.gamma),
            "step_size": int(self.step_size),
        }
