"""Parameter init rules, declared as data: `tc.init.normal(0.02)` -> {"rule": "normal", "std": 0.02}.

The runtime implements each rule (`tinyc.runtime.init`); a test checks both tables agree. For a
weight of shape [..., fan_in, fan_out] (the `x @ w` convention) fan_in is shape[-2].
"""

from __future__ import annotations

from typing import Any

from .errors import IRError

# rule name -> its arguments with defaults
RULES: dict[str, dict[str, float]] = {
    "zeros": {},
    "ones": {},
    "constant": {"value": 0.0},
    "normal": {"std": 1.0, "mean": 0.0},
    "uniform": {"low": -1.0, "high": 1.0},
    "xavier_uniform": {"gain": 1.0},
    "xavier_normal": {"gain": 1.0},
    "kaiming_uniform": {"gain": 1.0},
    "kaiming_normal": {"gain": 1.0},
    "lecun_uniform": {},
}


def make(rule: str, **args: Any) -> dict[str, Any]:
    """Check a rule and its args; return the canonical dict stored in the IR."""
    if rule not in RULES:
        raise IRError(f"unknown init rule {rule!r}; known: {', '.join(RULES)}")
    unknown = set(args) - set(RULES[rule])
    if unknown:
        raise IRError(f"init {rule}: unknown argument(s) {', '.join(sorted(unknown))}")
    out: dict[str, Any] = {"rule": rule}
    for key, default in RULES[rule].items():
        value = args.get(key, default)
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise IRError(f"init {rule}: {key} must be a number, got {value!r}")
        out[key] = float(value)
    return out


def zeros() -> dict:
    return make("zeros")


def ones() -> dict:
    return make("ones")


def constant(value: float) -> dict:
    return make("constant", value=value)


def normal(std: float = 1.0, mean: float = 0.0) -> dict:
    return make("normal", std=std, mean=mean)


def uniform(low: float = -1.0, high: float = 1.0) -> dict:
    return make("uniform", low=low, high=high)


def xavier_uniform(gain: float = 1.0) -> dict:
    return make("xavier_uniform", gain=gain)


def xavier_normal(gain: float = 1.0) -> dict:
    return make("xavier_normal", gain=gain)


def kaiming_uniform(gain: float = 1.0) -> dict:
    return make("kaiming_uniform", gain=gain)


def kaiming_normal(gain: float = 1.0) -> dict:
    return make("kaiming_normal", gain=gain)


def lecun_uniform() -> dict:
    """uniform(-1/sqrt(fan_in), 1/sqrt(fan_in)): PyTorch's default for nn.Linear."""
    return make("lecun_uniform")
