"""A deep model (24 Transformer blocks) goes through the whole pipeline and still trains."""

import numpy as np

import tinyc as tc
from tinyc.compiler.driver import compile_graph
from tinyc.models import TransformerClassifier, softmax_cross_entropy
from tinyc.runtime.executor import Executor

DEPTH = 24


def test_24_block_transformer_compiles_and_steps():
    with tc.graph("deep") as b:
        image = tc.input("image", ("B", 28, 28))
        label = tc.input("label", ("B",), dtype="i64")
        net = TransformerClassifier("net", tokens="patches", d_model=16, heads=2, layers=DEPTH, d_ff=32)
        logits = net(image)
        loss = softmax_cross_entropy(logits, label)
    train = tc.Train(loss, outputs={"logits": logits}, optimizer=tc.optim.Adam(lr=1e-3), batch_size=4)
    graph = b.graph({"loss": loss, "logits": logits},
                    meta={"loss": "loss", "optimizer": tc.optim.optimizer_spec(train.optimizer),
                          "train": train.defaults()})
    program, stats = compile_graph(graph)

    # every block's parameters are trained: one update per parameter and per Adam moment
    params = [p for p in graph.params if p.kind == "param"]
    step = program.entry("train_step").graph
    updated = {name for name, _ in step.updates}
    assert {p.name for p in params} <= updated
    assert len([n for n in updated if n.endswith(".m")]) == len(params)
    # the pipeline ran end to end on a graph of thousands of nodes
    assert stats["train_step"][-1].name == "memplan" and stats["train_step"][1].nodes_after > 100 * DEPTH

    rng = np.random.default_rng(0)
    feeds = {"image": rng.random((4, 28, 28), dtype=np.float32), "label": rng.integers(0, 10, 4)}
    ex = Executor(program)
    losses = [float(ex.train_step(feeds, 1e-3)["loss"]) for _ in range(3)]
    assert all(np.isfinite(losses)) and losses[-1] < losses[0]
