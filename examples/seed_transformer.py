"""The classic assignment transformer: each image is 28 tokens (its rows) of 28 pixels.

Linear 28->128; one encoder layer: single-head attention (fused QKV 128->3*128 with bias,
softmax(QK^T/sqrt(128))V, output projection 128->128), LayerNorm, FFN 128->128 ReLU ->128,
LayerNorm, with NO residual connections; mean pool over tokens; Linear 128->10.
Plain SGD, lr 0.02, batch 50.

    tinyc compile examples/seed_transformer.py -o seed.ir && tinyc run seed.ir --data mnist
"""

import tinyc as tc
from tinyc.models import EncoderLayer, Linear, accuracy, softmax_cross_entropy


def model() -> tc.Train:
    image = tc.input("image", ("B", 28, 28), scale=1 / 255)  # [B, tokens, features]
    label = tc.input("label", ("B",), dtype="i64")

    x = Linear("embed", 28, 128)(image)
    # post-norm without residuals: x = LN(attn(x)); x = LN(ffn(x))
    x = EncoderLayer("enc0", 128, heads=1, d_ff=128, residual=False, norm="post")(x)
    logits = Linear("head", 128, 10)(x.mean(axis=1))

    loss = softmax_cross_entropy(logits, label)
    return tc.Train(
        loss,
        outputs={"accuracy": accuracy(logits, label), "logits": logits},
        optimizer=tc.optim.SGD(lr=0.02),
        epochs=3,
        batch_size=50,
        lr=0.02,
    )
