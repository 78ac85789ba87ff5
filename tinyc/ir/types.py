"""Tensor types: a dtype and a shape whose dims are ints or named symbols such as "B"."""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

from .errors import ShapeError

Dim = int | str  # an int, or a symbol such as "B"
Shape = tuple[Dim, ...]

# dtype name -> NumPy dtype; the four dtypes of the IR.
DTYPES: dict[str, np.dtype] = {
    "f32": np.dtype(np.float32),
    "f64": np.dtype(np.float64),
    "i64": np.dtype(np.int64),
    "bool": np.dtype(np.bool_),
}
# dtype families, for type rules and rewrites to test membership in (never a literal list elsewhere)
FLOAT_DTYPES = ("f32", "f64")
NUMERIC_DTYPES = FLOAT_DTYPES + ("i64",)  # arithmetic applies (not bool)
EXACT_DTYPES = ("i64", "bool")  # no rounding, no NaN or Inf: x*0 == 0 holds

# The size limit of every tensor, one rule for the front-end, the compiler and the `.ir` loader:
# what compiles also loads, and a damaged file cannot make the runtime allocate terabytes.
MAX_RANK = 32
MAX_ELEMENTS = 2**31  # per tensor, symbols (the batch) counted as 1


def format_shape(shape) -> str:
    """`[B,16,64]`: how a shape is written everywhere (types, errors, reports)."""
    return "[" + ",".join(map(str, shape)) + "]"


def size_problem(shape: Shape) -> str:
    """Why a shape is past the limit (`shape [..]: 10^12 elements ...`), or "" if it is not."""
    if len(shape) > MAX_RANK:
        return f"shape has rank {len(shape)} (at most {MAX_RANK})"
    numel = math.prod(d for d in shape if isinstance(d, int))
    if numel > MAX_ELEMENTS:
        return f"shape {format_shape(shape)} has {numel:,} elements at batch 1 (at most {MAX_ELEMENTS:,} per tensor)"
    return ""
NUMPY_TO_DTYPE = {v: k for k, v in DTYPES.items()}


def dtype_of_numpy(dtype: np.dtype) -> str:
    """The IR dtype name of a NumPy dtype (float64 -> "f64"); ShapeError if there is none."""
    dtype = np.dtype(dtype)
    if dtype in NUMPY_TO_DTYPE:
        return NUMPY_TO_DTYPE[dtype]
    if dtype.kind in "iu":
        return "i64"
    raise ShapeError(f"dtype {dtype} has no tinyc equivalent (use one of {', '.join(DTYPES)})")


@dataclass(frozen=True)
class TensorType:
    """The type of one IR value: `f32[B,16,64]`."""

    dtype: str
    shape: Shape

    def __post_init__(self) -> None:
        if self.dtype not in DTYPES:
            raise ShapeError(f"unknown dtype {self.dtype!r} (expected one of {', '.join(DTYPES)})")
        for d in self.shape:
            if isinstance(d, bool) or not isinstance(d, (int, str)) or (isinstance(d, int) and d < 0):
                raise ShapeError(f"bad dim {d!r} in shape {self.shape!r}")
        problem = size_problem(self.shape)
        if problem:
            raise ShapeError(problem, hint="tinyc keeps every tensor under 2^31 elements; is a dim too large?")

    def __str__(self) -> str:
        return f"{self.dtype}{format_shape(self.shape)}"

    __repr__ = __str__

    @property
    def rank(self) -> int:
        return len(self.shape)

    @property
    def is_float(self) -> bool:
        return self.dtype in FLOAT_DTYPES

    @property
    def is_numeric(self) -> bool:
        return self.dtype in NUMERIC_DTYPES

    @property
    def is_exact(self) -> bool:
        return self.dtype in EXACT_DTYPES

    @property
    def np_dtype(self) -> np.dtype:
        return DTYPES[self.dtype]

    @property
    def symbols(self) -> tuple[str, ...]:
        return tuple(d for d in self.shape if isinstance(d, str))

    def with_dtype(self, dtype: str) -> TensorType:
        return TensorType(dtype, self.shape)

    def with_shape(self, shape: Shape) -> TensorType:
        return TensorType(self.dtype, tuple(shape))

    def concrete(self, bindings: Mapping[str, int]) -> tuple[int, ...]:
        """The shape with every symbol replaced by its binding (KeyError if one is unbound)."""
        return resolve_shape(self.shape, bindings)

    def numel(self, bindings: Mapping[str, int] | None = None, default: int = 1) -> int:
        """Element count, symbols taken from `bindings` or else `default`."""
        bindings = bindings or {}
        return math.prod(d if isinstance(d, int) else bindings.get(d, default) for d in self.shape)

    def nbytes(self, bindings: Mapping[str, int] | None = None, default: int = 1) -> int:
        return self.numel(bindings, default) * self.np_dtype.itemsize


def resolve_shape(shape: Shape, bindings: Mapping[str, int]) -> tuple[int, ...]:
    return tuple(d if isinstance(d, int) else bindings[d] for d in shape)


def symbolic_numel(shape: Shape) -> tuple[int, Counter]:
    """A shape's size as (product of the int dims, multiset of the symbols)."""
    known = math.prod(d for d in shape if isinstance(d, int))
    return known, Counter(d for d in shape if isinstance(d, str))


def broadcast_shapes(*shapes: Shape) -> Shape:
    """NumPy broadcasting over symbolic shapes; ShapeError names the dims that disagree."""
    rank = max((len(s) for s in shapes), default=0)
    out: list[Dim] = []
    for i in range(rank):
        dims = [s[len(s) - rank + i] for s in shapes if len(s) - rank + i >= 0]
        chosen: Dim = 1
        for d in dims:
            if d == 1 or d == chosen:
                continue
            if chosen == 1:
                chosen = d
            else:
                raise ShapeError(
                    "cannot broadcast "
                    + " with ".join(format_shape(s) for s in shapes)
                    + f": dim {i - rank} is {chosen} in one and {d} in another"
                )
        out.append(chosen)
    return tuple(out)


def parse_type(text: str) -> TensorType:
    """Parse the printed form `f32[B,16]` back into a TensorType."""
    text = text.strip()
    if not text.endswith("]") or "[" not in text:
        raise ShapeError(f"cannot parse type {text!r}: expected e.g. f32[B,16]")
    dtype, dims = text[:-1].split("[", 1)
    shape = tuple(int(d) if d.strip().lstrip("-").isdecimal() else d.strip() for d in dims.split(",") if d.strip())
    return TensorType(dtype, shape)
