"""The op registry: every op declared once, with its attributes and its type rule.

A schema is data: name, input names, typed attributes with defaults, op-set version (`since`),
whether it is differentiable, a FLOP estimate and a pure type rule
`(TensorType..., **attrs) -> TensorType`. Gradient rules live in `tinyc.compiler.vjp`, kernels in
`tinyc.runtime.kernels`; a test checks the three tables agree.

`schema.py` holds the registry itself (`defop`, `Attr`, `OPS`) and the helpers the families
share; each family imports it alone and registers into `OPS`: the primitives (`primitive.py`),
the composites (`composite.py`), the fused ops of the `fuse` pass (`fused.py`) and the ops of
data parallelism (`parallel.py`). This package assembles them, in that order.
"""

# each family registers its ops into OPS on import; this order is the table's order
from . import primitive  # noqa: F401, I001
from . import composite, fused, parallel  # noqa: F401
from .primitive import (
    COMMUTATIVE, COMPARISONS, ELEMENTWISE, ELEMENTWISE_BINARY, FORMER_NAMES, REDUCTIONS, UNARY, resolve_reshape,
)
from .schema import OPS, OPSET_VERSION, Attr, OpSchema, canonical_attrs, defop, infer_type, schema

COMPOSITE = tuple(name for name, s in OPS.items() if s.composite)
FUSED = tuple(name for name, s in OPS.items() if s.family == "fused")
EFFECTFUL = frozenset(name for name, s in OPS.items() if s.effectful)

__all__ = [
    "COMMUTATIVE", "COMPARISONS", "COMPOSITE", "EFFECTFUL", "ELEMENTWISE", "ELEMENTWISE_BINARY", "FORMER_NAMES", "FUSED", "OPS",
    "OPSET_VERSION", "REDUCTIONS", "UNARY", "Attr", "OpSchema", "canonical_attrs", "defop", "infer_type",
    "resolve_reshape", "schema",
]
