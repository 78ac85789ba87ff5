"""tinyc: a small deep-learning graph compiler. `import tinyc as tc` is the model front-end.

Model code emits a static IR graph with these functions; `tinyc compile` differentiates and
optimises it into one msgpack file; `tinyc.runtime` trains with it using NumPy alone.
"""

from . import ir
from .frontend import (
    add, argmax, broadcast_to, cast, constant, div, equal, exp, expand_dims, fill, function, grad,
    greater, greater_equal, input, layer_norm, less, less_equal, log, log_softmax, matmul, max,
    maximum, mean, mul, neg, not_equal, one_hot, ones_like, pad, param, pow, relu, reshape, slice, softmax,
    softmax_cross_entropy, split, sqrt, squeeze, sub, sum, transpose, where, zeros_like,
)
from .ir import init
from .ir import train as optim
from .ir.builder import Tensor, current as current_graph, new_graph as graph, reset_default
from .ir.errors import (
    CheckpointError, DataError, IRError, IRFormatError, ModelFileError, NumericsError, ShapeError, TinycError,
)
from .ir.graph import Graph
from .ir.train import Train
from .ir.types import TensorType
from .ir.version import __version__ as __version__  # tc.__version__


# the public front-end; everything else is reached through its module (tinyc.models, tinyc.runtime, ...)
__all__ = [
    "CheckpointError",
    "DataError",
    "Graph",
    "IRError",
    "IRFormatError",
    "ModelFileError",
    "NumericsError",
    "ShapeError",
    "Tensor",
    "TensorType",
    "TinycError",
    "Train",
    "add",
    "argmax",
    "broadcast_to",
    "cast",
    "constant",
    "current_graph",
    "div",
    "equal",
    "exp",
    "expand_dims",
    "fill",
    "function",
    "grad",
    "graph",
    "greater",
    "greater_equal",
    "init",
    "input",
    "ir",
    "layer_norm",
    "less",
    "less_equal",
    "log",
    "log_softmax",
    "matmul",
    "max",
    "maximum",
    "mean",
    "mul",
    "name_scope",
    "neg",
    "not_equal",
    "one_hot",
    "ones_like",
    "optim",
    "pad",
    "param",
    "pow",
    "relu",
    "reset_default",
    "reshape",
    "scope",
    "slice",
    "softmax",
    "softmax_cross_entropy",
    "split",
    "sqrt",
    "squeeze",
    "sub",
    "sum",
    "transpose",
    "where",
    "zeros_like",
]


def scope(prefix: str):
    """Name parameters created inside the block `prefix.name` (scopes nest)."""
    return current_graph().scope(prefix)


def name_scope(name: str):
    """Record the layer scope `name` on the nodes created inside the block (scopes nest with ".")."""
    return current_graph().name_scope(name)
