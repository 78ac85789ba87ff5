"""A two-layer perceptron on MNIST: 784 -> 128 ReLU -> 10, SGD with momentum.

    tinyc compile examples/mlp_mnist.py -o mlp.ir && tinyc run mlp.ir --data mnist
"""

import tinyc as tc
from tinyc.models import Linear, accuracy, softmax_cross_entropy


def model() -> tc.Train:
    image = tc.input("image", ("B", 28, 28), scale=1 / 255)
    label = tc.input("label", ("B",), dtype="i64")

    x = image.reshape("B", 28 * 28)
    x = tc.relu(Linear("fc1", 784, 128)(x))
    logits = Linear("fc2", 128, 10)(x)

    loss = softmax_cross_entropy(logits, label)
    return tc.Train(
        loss,
        outputs={"accuracy": accuracy(logits, label), "logits": logits},
        optimizer=tc.optim.SGD(lr=0.05, momentum=0.9),
        epochs=3,
        batch_size=64,
    )
