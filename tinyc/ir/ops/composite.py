"""The composite ops and their backward ops: each has a fused kernel (tinyc.runtime.kernels), a
decomposition into primitives (tinyc.compiler.decompose) and a hand-written VJP (the composites)
or a decomposition-derived one (their backward ops). Assembled into `OPS` by `tinyc.ir.ops`.
"""

from __future__ import annotations

from ..errors import IRError, ShapeError
from ..types import TensorType, format_shape
from .schema import Attr, defop, require_float, scaled_flops


def _normalizing_rule(name: str):
    def rule(x: TensorType, axis: int, **_) -> TensorType:
        require_float(name, x)
        return x

    rule.__doc__ = f"{name} along axis (composite: has a decomposition into primitives)."
    return rule


defop("softmax", inputs=("x",), attrs={"axis": Attr("axis", -1)}, composite=True, flops=scaled_flops(5))(_normalizing_rule("softmax"))
defop("log_softmax", inputs=("x",), attrs={"axis": Attr("axis", -1)}, composite=True, flops=scaled_flops(5))(
    _normalizing_rule("log_softmax")
)
defop("layer_norm", inputs=("x",), attrs={"axis": Attr("axis", -1), "eps": Attr("float", 1e-5)}, composite=True,
      flops=scaled_flops(8))(_normalizing_rule("layer_norm"))


@defop("softmax_cross_entropy", inputs=("logits", "labels"), attrs={"reduction": Attr("str", "mean")}, composite=True,
       flops=scaled_flops(6))
def softmax_cross_entropy(logits: TensorType, labels: TensorType, reduction: str) -> TensorType:
    """Cross-entropy of softmax(logits[..., C]) against integer labels[...]; mean, sum or none."""
    require_float("softmax_cross_entropy", logits)
    if labels.dtype != "i64":
        raise IRError(f"softmax_cross_entropy: labels must be i64 class indices, got {labels}")
    if logits.rank < 1 or tuple(logits.shape[:-1]) != tuple(labels.shape):
        raise ShapeError(
            f"softmax_cross_entropy: logits {logits} need labels of shape {format_shape(logits.shape[:-1])},"
            f" got {labels}"
        )
    if reduction not in ("mean", "sum", "none"):
        raise IRError(f"softmax_cross_entropy: reduction must be mean, sum or none, got {reduction!r}")
    return TensorType(logits.dtype, () if reduction != "none" else tuple(labels.shape))




# --------------------------------------------------------------------------- grad ops of composites
# The hand-written VJPs of the composites emit these; each has a fused kernel and a decomposition
# into primitives (tinyc.compiler.decompose), which is also how they are differentiated again.


def _grad_rule(name: str):
    def rule(y: TensorType, gy: TensorType, **_) -> TensorType:
        require_float(name, y)
        if y != gy:
            raise ShapeError(f"{name}: value {y} and cotangent {gy} differ")
        return y

    rule.__doc__ = f"Backward of {name[:-5]} (composite)."
    return rule


# softmax_grad(y, gy) = y * (gy - sum(gy * y, axis, keepdims)), y = softmax(x)
defop("softmax_grad", inputs=("y", "gy"), attrs={"axis": Attr("axis", -1)}, composite=True, flops=scaled_flops(4))(
    _grad_rule("softmax_grad")
)
# log_softmax_grad(y, gy) = gy - exp(y) * sum(gy, axis, keepdims), y = log_softmax(x)
defop("log_softmax_grad", inputs=("y", "gy"), attrs={"axis": Attr("axis", -1)}, composite=True, flops=scaled_flops(4))(
    _grad_rule("log_softmax_grad")
)
# layer_norm_grad(x, gy) = (gy - mean(gy) - xhat * mean(gy * xhat)) / sqrt(var(x) + eps)
defop("layer_norm_grad", inputs=("x", "gy"), attrs={"axis": Attr("axis", -1), "eps": Attr("float", 1e-5)},
      composite=True, flops=scaled_flops(10))(_grad_rule("layer_norm_grad"))


@defop("softmax_cross_entropy_grad", inputs=("logits", "labels", "gy"), attrs={"reduction": Attr("str", "mean")},
       composite=True, flops=scaled_flops(4))
def softmax_cross_entropy_grad(logits: TensorType, labels: TensorType, gy: TensorType, reduction: str) -> TensorType:
    """d loss / d logits = (softmax(logits) - one_hot(labels)) * gy (/ N for mean)."""
    expected = softmax_cross_entropy(logits, labels, reduction)
    if gy != expected:
        raise ShapeError(f"softmax_cross_entropy_grad: cotangent {gy} does not match the loss {expected}")
    return logits
