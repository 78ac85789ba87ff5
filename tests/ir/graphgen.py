"""Random, valid graphs built with tinyc's own front-end, for codec and fuzz tests.

`build_graph(choose)` takes a chooser `choose(options) -> option` and `pick_int(lo, hi)`, so one
generator serves both hypothesis (`hypothesis_chooser(data)`) and plain `random.Random`.
"""

from __future__ import annotations

import random
from typing import Any

import numpy as np

import tinyc as tc
from tinyc.compiler.passes.memplan import make_plan
from tinyc.ir.builder import new_graph
from tinyc.ir.graph import Graph
from tinyc.ir.program import Entry, Program

INITS = [tc.init.zeros(), tc.init.normal(0.02), tc.init.uniform(-0.5, 0.5), tc.init.xavier_uniform(), tc.init.lecun_uniform()]
LOCS = ["", "model.py:12", "модель.py:3", "a b/c.py:99"]
NOTES = ["", "grad of softmax", "fused ✓"]
SCOPES = ["", "enc0", "enc0.attn.qkv", "_x9.y"]


class Chooser:
    """Draws from a `random.Random`; hypothesis substitutes `HypothesisChooser`."""

    def __init__(self, rng: random.Random) -> None:
        self.rng = rng

    def choice(self, options: list) -> Any:
        return options[self.rng.randrange(len(options))]

    def int(self, lo: int, hi: int) -> int:
        return self.rng.randint(lo, hi)

    def floats(self, n: int) -> np.ndarray:
        return np.array([self.rng.uniform(-3, 3) for _ in range(n)])


class HypothesisChooser(Chooser):
    def __init__(self, data) -> None:
        from hypothesis import strategies as st

        self.data, self.st = data, st

    def choice(self, options: list) -> Any:
        return self.data.draw(self.st.sampled_from(options))

    def int(self, lo: int, hi: int) -> int:
        return self.data.draw(self.st.integers(lo, hi))

    def floats(self, n: int) -> np.ndarray:
        xs = self.st.floats(-1e6, 1e6, allow_nan=False, width=32)
        return np.array(self.data.draw(self.st.lists(xs, min_size=n, max_size=n)))


def build_graph(c: Chooser, steps: int, name: str = "g") -> Graph:
    """A chain of random ops over a float input with a symbolic or fixed batch dim."""
    with new_graph(name) as b:
        batch = c.choice(["B", 1, 3])
        dtype = c.choice(["f32", "f64"])
        x = tc.input("x", (batch, c.int(1, 4), c.int(1, 4)), dtype)
        pool = [x]
        params = []
        for step in range(steps):
            with b.at(c.choice(LOCS), c.choice(NOTES), c.choice(SCOPES)):
                t = _step(c, b, c.choice(pool), params, step, dtype)
            if t.dtype == dtype:
                pool.append(t)
        outputs = {f"y{i}": c.choice(pool) for i in range(c.int(1, 3))}
        updates = {p.name: p - 0.1 * p for p in params[: c.int(0, len(params))]}
        meta = {"seed": c.int(0, 2**40), "tags": ["a", c.choice(["b", "ü"])], "lr": 0.5, "nested": {"k": [1, {"z": None}]}}
        return b.graph(outputs, updates, meta)


def _step(c: Chooser, b, t, params: list, step: int, dtype: str):
    kind = c.choice(["unary", "binary", "matmul", "reduce", "reshape", "transpose", "where", "cast", "composite",
                     "expand", "one_hot"])
    if kind == "unary":
        return getattr(tc, c.choice(["neg", "exp", "relu", "sqrt", "log"]))(t)
    if kind == "binary":
        concrete = [k for k in range(t.ndim + 1) if all(isinstance(d, int) for d in t.shape[k:])]
        shape = t.shape[c.choice(concrete):]
        other = c.choice(["self", "scalar", "const"])
        rhs = t if other == "self" else float(c.int(-5, 5)) / 2 if other == "scalar" else \
            tc.constant(c.floats(int(np.prod(shape))).reshape(shape), dtype)
        return getattr(tc, c.choice(["add", "sub", "mul", "div", "maximum", "pow"]))(t, rhs)
    if kind == "matmul" and t.ndim >= 2 and isinstance(t.shape[-1], int):
        w = tc.param(f"w{step}", (t.shape[-1], c.int(1, 4)), c.choice(INITS), dtype)
        params.append(w)
        return t @ w
    if kind == "reduce" and t.ndim >= 1:
        axes = tuple(i for i in range(t.ndim) if c.int(0, 1)) or None
        return getattr(tc, c.choice(["sum", "mean", "max"]))(t, axes, bool(c.int(0, 1)))
    if kind == "reshape" and t.ndim >= 1 and (t.shape[0] == "B" or "B" not in t.shape):
        return t.reshape(("B", -1) if t.shape[0] == "B" else (-1,))
    if kind == "transpose":
        perm = list(range(t.ndim))
        c_perm = [perm.pop(c.int(0, len(perm) - 1)) for _ in range(t.ndim)]
        return t.transpose(c_perm)
    if kind == "where":
        cond = tc.constant(c.floats(int(np.prod(t.shape[-1:]))).reshape(t.shape[-1:]) > 0) if t.ndim and \
            isinstance(t.shape[-1], int) else t > 0
        return tc.where(cond, t, tc.zeros_like(t))
    if kind == "cast":
        return tc.cast(tc.cast(t, c.choice(["f32", "f64", "i64"])), dtype)
    if kind == "composite" and t.ndim >= 1:
        return getattr(tc, c.choice(["softmax", "log_softmax", "layer_norm"]))(t)
    if kind == "expand":
        return tc.squeeze(tc.expand_dims(t, c.int(0, t.ndim)))
    if kind == "one_hot":
        labels = tc.constant(np.array([c.int(0, 3) for _ in range(3)], np.int64))
        return t * tc.one_hot(labels, 4, dtype).sum()
    return tc.ones_like(t) + t


def build_program(c: Chooser, steps: int) -> Program:
    train = build_graph(c, steps, "train")
    predict = build_graph(c, max(1, steps // 2), "predict")
    return Program({"train_step": Entry("train_step", train, make_plan(train)), "predict": Entry("predict", predict)},
                   {"epochs": 3, "optimizer": {"kind": "adam", "lr": 1e-3}, "schedule": "cosine"})


def random_program(seed: int, steps: int = 20) -> Program:
    return build_program(Chooser(random.Random(seed)), steps)

