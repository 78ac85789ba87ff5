"""A reusable finite-difference gradient checker: `from tests.gradcheck import check_grad`.

`check_grad(build, inputs, wrt)` traces `build(*tensors)` in float64, differentiates it with
`tc.grad`, and compares every checked coordinate with a central difference. A non-scalar result
y is reduced as sum(y * r) for a fixed random r (fed as an input, so symbolic dims work): a plain
sum would hide errors, e.g. the gradient of sum(softmax(x)) is zero whatever the rule says.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

import numpy as np

import tinyc as tc
from tinyc.ir.types import dtype_of_numpy


def numeric_grad(f: Callable[[np.ndarray], float], x: np.ndarray, coords: Sequence[tuple], eps: float) -> np.ndarray:
    """df/dx at `coords` by the 5-point central stencil (error O(eps^4), so eps=1e-6 leaves only
    rounding noise, ~1e-10 * |f|), x float64."""
    out = np.zeros(len(coords))
    for k, idx in enumerate(coords):
        h = eps * max(1.0, abs(float(x[idx])))
        vals = []
        for step in (2, 1, -1, -2):
            xp = x.copy()
            xp[idx] += step * h
            vals.append(f(xp))
        out[k] = (-vals[0] + 8 * vals[1] - 8 * vals[2] + vals[3]) / (12 * h)
    return out


def rel_error(analytic: np.ndarray, numeric: np.ndarray, scale: float) -> np.ndarray:
    """|a - n| / max(|a|, |n|, floor): relative, but absolute below `scale` (tiny gradients are
    dominated by rounding noise of the function value, which no relative metric survives)."""
    floor = 1e-2 * max(1.0, scale)
    return np.abs(analytic - numeric) / np.maximum(np.maximum(np.abs(analytic), np.abs(numeric)), floor)


def check_grad(
    build: Callable[..., tc.Tensor] | tc.Tensor,
    inputs: Mapping[str, np.ndarray] | Sequence[tc.Tensor],
    wrt: Sequence[str] | Sequence[np.ndarray],
    rtol: float = 1e-6,
    *,
    shapes: Mapping[str, Sequence] | None = None,
    params: Mapping[str, np.ndarray] | None = None,
    eps: float = 1e-6,
    max_coords: int = 48,
    seed: int = 0,
) -> float:
    """Assert tc.grad of `build` matches finite differences for each name in `wrt`; return the
    worst relative error. `inputs` become tc.input values (shape overridable by `shapes`, e.g.
    ("B", 3)) passed to build in order; `params` feeds parameters that build creates itself.
    At most `max_coords` coordinates of each wrt value are checked (a random sample).

    Also `check_grad(loss, tensors, arrays)`: an already traced f64 scalar `loss`, checked
    w.r.t. `tensors` (inputs or parameters) at `arrays` (which must feed everything loss needs).
    """
    rng = np.random.default_rng(seed)
    if isinstance(build, tc.Tensor):
        loss, tensors, values = build, list(inputs), [np.asarray(v) for v in wrt]
        assert loss.dtype == "f64" and loss.shape == (), f"check_grad needs an f64 scalar, got {loss.type}"
        f = tc.function(loss, tensors)
        g = tc.function(tc.grad(loss, tensors), tensors)
        names = [t.name for t in tensors]
        return _compare(f, g, values, names, names, rtol, eps, max_coords, rng)

    shapes = dict(shapes or {})
    params = {k: np.asarray(v) for k, v in (params or {}).items()}
    inputs = {k: np.asarray(v) for k, v in inputs.items()}
    with tc.graph() as b:
        tensors = {name: tc.input(name, shapes.get(name, arr.shape), dtype_of_numpy(arr.dtype))
                   for name, arr in inputs.items()}
        y = build(*tensors.values())
        assert y.dtype == "f64", f"check_grad needs a float64 function, got {y.type}"
        tensors.update((name, b.tensor(name)) for name in params)
        feeds = {**inputs, **params}
        if y.shape != ():
            # fixed random cotangent r, shaped like one evaluation of y
            y_value = tc.function(y, list(tensors.values()))(*feeds.values())
            feeds["__r"] = rng.normal(size=np.shape(y_value))
            r = tc.input("__r", y.shape, "f64")
            tensors["__r"] = r
            y = tc.sum(y * r)
        order = list(tensors)
        f = tc.function(y, [tensors[n] for n in order])  # the forward graph only
        g = tc.function(tc.grad(y, [tensors[n] for n in wrt]), [tensors[n] for n in order])
    return _compare(f, g, [feeds[n] for n in order], order, list(wrt), rtol, eps, max_coords, rng)


def _compare(f, g, args, order, wrt, rtol, eps, max_coords, rng) -> float:
    """Check g's gradients of the wrt arguments against finite differences of f at args."""
    f0 = float(f(*args))
    analytic = g(*args)
    worst = 0.0
    for name, a in zip(wrt, analytic):
        pos = order.index(name)
        x = args[pos]
        assert a.shape == x.shape, f"gradient of {name} has shape {a.shape}, value {x.shape}"
        coords = list(np.ndindex(x.shape))
        if len(coords) > max_coords:
            coords = [coords[i] for i in rng.choice(len(coords), max_coords, replace=False)]

        def f_at(xv: np.ndarray, pos=pos) -> float:
            return float(f(*(xv if i == pos else v for i, v in enumerate(args))))

        numeric = numeric_grad(f_at, x, coords, eps)
        got = np.array([a[c] for c in coords])
        err = rel_error(got, numeric, abs(f0))
        if err.size and err.max() > rtol:
            k = int(err.argmax())
            raise AssertionError(
                f"d/d{name}{list(coords[k])}: tc.grad {got[k]!r} vs finite difference {numeric[k]!r}"
                f" (relative error {err[k]:.2e} > {rtol:.0e})"
            )
        worst = max(worst, float(err.max(initial=0.0)))
    return worst
