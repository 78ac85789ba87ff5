"""Layers built only from tinyc ops; each names its parameters `<layer name>.<param>`."""

from .attention import MultiHeadAttention, SingleHeadAttention
from .layers import FeedForward, Layer, LayerNorm, Linear
from .losses import accuracy, softmax_cross_entropy, softmax_loss
from .transformer import EncoderLayer, TransformerClassifier

__all__ = [
    "EncoderLayer",
    "FeedForward",
    "Layer",
    "LayerNorm",
    "Linear",
    "MultiHeadAttention",
    "SingleHeadAttention",
    "TransformerClassifier",
    "accuracy",
    "softmax_cross_entropy",
    "softmax_loss",
]
