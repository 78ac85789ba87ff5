"""The ops of data parallelism: one flat buffer of many values, and its sum across ranks.

The `dataparallel` pass packs every weighted gradient and metric of a rank into one
`flat_concat` and reduces it with one `allreduce`; the optimizer reads `slice`/`reshape` views
of the result. `allreduce` is *effectful*: its result depends on the other ranks, not only on
its input, so no pass folds it, merges two of them or evaluates it at compile time.
"""

from __future__ import annotations

import math

from ..errors import IRError, ShapeError
from ..types import TensorType
from .schema import defop, same_dtype


def _copy_flops(ins, out, attrs):
    return math.prod(out)


@defop("allreduce", inputs=("x",), differentiable=False, effectful=True, flops=_copy_flops)
def allreduce(x: TensorType) -> TensorType:
    """The elementwise sum of x over every rank (the identity on one rank)."""
    if not x.is_numeric:
        raise IRError(f"allreduce: needs a numeric input, got {x}")
    return x


@defop("flat_concat", inputs=("x",), differentiable=False, variadic=True, flops=_copy_flops)
def flat_concat(*xs: TensorType) -> TensorType:
    """The inputs flattened and joined, in order, into one vector (concrete shapes)."""
    dtype = same_dtype("flat_concat", *xs)
    for x in xs:
        if x.symbols:
            raise ShapeError(f"flat_concat: input {x} has a symbolic dim; only concrete shapes can be packed")
    return TensorType(dtype, (sum(x.numel() for x in xs),))

