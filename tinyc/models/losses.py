"""Classification losses and metrics over logits[..., C] and integer labels[...]."""

from __future__ import annotations

import tinyc as tc


def softmax_cross_entropy(logits: tc.Tensor, labels: tc.Tensor) -> tc.Tensor:
    """Mean cross-entropy of softmax(logits) against labels, as one fused op."""
    return tc.softmax_cross_entropy(logits, labels, reduction="mean")


def softmax_loss(logits: tc.Tensor, labels: tc.Tensor) -> tc.Tensor:
    """The same loss written out: -mean(sum(one_hot(labels) * log_softmax(logits)))."""
    onehot = tc.one_hot(labels, logits.shape[-1], dtype=logits.dtype)
    return -(onehot * tc.log_softmax(logits, axis=-1)).sum(axis=-1).mean()


def accuracy(logits: tc.Tensor, labels: tc.Tensor) -> tc.Tensor:
    """Fraction of rows whose largest logit is the label, as f32."""
    return tc.mean(tc.cast(tc.equal(tc.argmax(logits, axis=-1), labels), "f32"))
