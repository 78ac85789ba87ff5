"""Kernels of the data-parallel ops (`tinyc.ir.ops.parallel`): the flat buffer and its sum.

`allreduce` takes the communicator's in-place sum as `reduce` (bound by the Executor from its
`comm`, see `tinyc.runtime.comm`); without one, it is the identity of one rank. Both stay pure
functions of their arguments, as every kernel.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np


def allreduce(x: np.ndarray, out: np.ndarray | None = None,
              reduce: Callable[[np.ndarray], None] | None = None) -> np.ndarray:
    if out is None:
        out = np.array(x)
    elif out.__array_interface__["data"] != x.__array_interface__["data"]:  # not planned in place
        np.copyto(out, x)
    if reduce is not None:
        reduce(out)  # sums `out` over the ranks, in place
    return out


def flat_concat(*xs: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
    if out is None:
        return np.concatenate([np.ravel(x) for x in xs])
    start = 0
    for x in xs:
        n = x.size
        np.copyto(out[start:start + n].reshape(x.shape), x)
        start += n
    return out


def copy_parts(*xs: np.ndarray, dsts: tuple[np.ndarray, ...], out: np.ndarray) -> np.ndarray:
    """flat_concat when the memory plan placed some inputs in `out` already: copy the others."""
    for x, dst in zip(xs, dsts):
        np.copyto(dst, x)
    return out


PARALLEL_KERNELS = {"allreduce": allreduce, "flat_concat": flat_concat}
# Ops whose output is their inputs flattened one after another: the memory plan may place an
# input straight into its part of the output (`placed`), so no copy is made.
PACKING = frozenset(("flat_concat",))
# Kernels that take the communicator's in-place sum as `reduce=` (the Executor binds it).
COLLECTIVES = frozenset(("allreduce",))
