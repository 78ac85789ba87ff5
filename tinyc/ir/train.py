"""What a model file returns: `tc.Train(loss, outputs=..., optimizer=...)`, plus optimizer specs.

These are plain data. The compiler's `optimizer` pass turns a spec into IR update ops; the
training defaults (epochs, batch size, learning rate, schedule) are stored in the program so
that `tinyc run model.ir` alone trains well.
"""

from __future__ import annotations

import math
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
class AdamW(Adam):
    """Adam with decoupled weight decay: p = p (1 - lr wd) before the Adam step."""

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
        values = {key: getattr(self, key) for key in TRAIN_DEFAULTS}
        values["lr"] = self.lr if self.lr is not None else self.optimizer.lr
        problem = train_defaults_problem(values)
        if problem:
            raise IRError(f"tc.Train: {problem}")
        return {key: (float(v) if TRAIN_DEFAULTS[key][0] is float else v) for key, v in values.items()}


# The training defaults a program stores (meta["train"]): type and lowest value (None: any
# finite number, a tuple: the allowed names). One rule for tc.Train, the `.ir` loader and `tinyc run`.
TRAIN_DEFAULTS: dict[str, tuple[type, Any]] = {
    "epochs": (int, 0),
    "batch_size": (int, 1),
    "lr": (float, 0.0),
    "schedule": (str, SCHEDULES),
    "warmup": (int, 0),
    "gamma": (float, None),
    "step_size": (int, 1),
}


def train_defaults_problem(values: Mapping[str, Any]) -> str:
    """What is wrong with stored training defaults (`key must be ..., got ...`), or "" if nothing."""
    for key, value in values.items():
        if key not in TRAIN_DEFAULTS:
            continue  # a newer tinyc's setting: ignored, as unknown meta is
        kind, low = TRAIN_DEFAULTS[key]
        if kind is str:
            if value not in low:
                return f"{key} must be one of {', '.join(low)}, got {value!r}"
            continue
        number = not isinstance(value, bool) and isinstance(value, (int, float) if kind is float else int)
        if not number or (kind is float and not math.isfinite(value)) or (low is not None and value < low):
            what = "an int" if kind is int else "a finite number"
            return f"{key} must be {what}" + (f" >= {low:g}" if low is not None else "") + f", got {value!r}"
    return ""


# The stored settings where a program stores none (a hand-built Program, `RunConfig()`): tc.Train's
# defaults, the learning rate that of its default optimizer. Their one home is the Train dataclass.
STORED_DEFAULTS: dict[str, Any] = Train(loss=None).defaults()
EVAL_BATCH = 1000  # examples per predict call when a run or `tinyc eval` measures accuracy


# The program meta entries tinyc reads, with their types (other entries are kept and ignored).
PROGRAM_META: dict[str, type] = {
    "train": dict, "optimizer": dict, "model": str, "tinyc": str, "data_inputs": list, "label_inputs": list,
}


def program_meta_problem(meta: Mapping[str, Any]) -> str:
    """What is wrong with a program's meta (`meta.train: ...`), or "" if nothing."""
    for key, kind in PROGRAM_META.items():
        if key in meta and not isinstance(meta[key], kind):
            return f"meta.{key} must be a {kind.__name__}, got {type(meta[key]).__name__}"
    for key in ("data_inputs", "label_inputs"):
        if not all(isinstance(n, str) for n in meta.get(key, [])):
            return f"meta.{key} must list input names"
    problem = train_defaults_problem(meta.get("train", {}))
    return f"meta.train.{problem}" if problem else ""
