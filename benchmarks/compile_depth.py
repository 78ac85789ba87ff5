"""Compile time against model depth: transformer-like training graphs of 1..N blocks.

Each block is pre-norm self-attention plus a ReLU MLP with residuals, written with tc ops; the
loss is softmax cross-entropy over a vocabulary. The default pipeline (whichever passes are
registered) runs on each, and the table shows seconds per pass and the time per block, which
should stay about flat (compile time linear in depth).

    python benchmarks/compile_depth.py [--max-depth 24]
"""

from __future__ import annotations

import argparse
import math
import time

import tinyc as tc
from tinyc.compiler.manager import DEFAULT_PIPELINE, available, run_pipeline
from tinyc.ir.graph import Graph

DEPTHS = (1, 2, 4, 8, 16, 24)
SEQ, DIM, HEADS, VOCAB, BATCH = 16, 64, 4, 32, 32


def norm(x, name: str):
    g = tc.param(f"{name}.g", [DIM], init=tc.init.ones())
    b = tc.param(f"{name}.b", [DIM])
    return tc.layer_norm(x) * g + b


def attention(x):
    dh = DIM // HEADS
    init = tc.init.xavier_uniform()

    def heads(name):
        w = tc.param(name, [DIM, DIM], init=init)
        return tc.transpose(tc.reshape(x @ w, ("B", SEQ, HEADS, dh)), (0, 2, 1, 3))  # [B,H,T,dh]

    q, k, v = heads("wq"), heads("wk"), heads("wv")
    scores = (q @ tc.transpose(k, (0, 1, 3, 2))) * (1.0 / math.sqrt(dh))
    ctx = tc.softmax(scores) @ v
    ctx = tc.reshape(tc.transpose(ctx, (0, 2, 1, 3)), ("B", SEQ, DIM))
    return ctx @ tc.param("wo", [DIM, DIM], init=init)


def mlp(x):
    w1 = tc.param("w1", [DIM, 4 * DIM], init=tc.init.kaiming_uniform())
    b1 = tc.param("b1", [4 * DIM])
    w2 = tc.param("w2", [4 * DIM, DIM], init=tc.init.xavier_uniform())
    return tc.relu(x @ w1 + b1) @ w2


def transformer(depth: int) -> Graph:
    with tc.graph(f"depth{depth}") as b:
        tokens = tc.input("tokens", ["B", SEQ], "i64")
        labels = tc.input("labels", ["B", SEQ], "i64")
        h = tc.one_hot(tokens, VOCAB) @ tc.param("embed", [VOCAB, DIM], init=tc.init.normal(0.02))
        for i in range(depth):
            with tc.scope(f"block{i}"):
                with tc.scope("attn"):
                    h = h + attention(norm(h, "norm"))
                with tc.scope("mlp"):
                    h = h + mlp(norm(h, "norm"))
        logits = norm(h, "final") @ tc.param("head", [DIM, VOCAB], init=tc.init.xavier_uniform())
        loss = tc.softmax_cross_entropy(logits, labels)
        spec = tc.optim.optimizer_spec(tc.optim.AdamW(lr=1e-3))
        return b.graph({"loss": loss}, meta={"loss": "loss", "optimizer": spec, "train": {"batch_size": BATCH}})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--max-depth", type=int, default=24)
    parser.add_argument("--repeat", type=int, default=2, help="runs per depth; the fastest is shown")
    args = parser.parse_args()
    names = available(DEFAULT_PIPELINE)
    depths = [d for d in DEPTHS if d <= args.max_depth] or [args.max_depth]
    print(f"pipeline: {' '.join(names)}  (seconds per pass)")
    header = f"{'depth':>5} {'nodes':>16} " + " ".join(f"{n[:8]:>8}" for n in names) + f" {'total':>7} {'ms/blk':>7} {'ratio':>6}"
    print(header)
    base = None
    for depth in depths:
        start = time.perf_counter()
        graph = transformer(depth)
        trace_s = time.perf_counter() - start
        runs = [run_pipeline(graph, names, batch=BATCH) for _ in range(max(1, args.repeat))]
        out, stats = min(runs, key=lambda r: sum(s.ms for s in r[1]))
        total = sum(s.ms for s in stats) / 1e3
        per_block = total / depth * 1e3
        base = base or per_block
        peak = {s.name: s.peak_bytes / 2**20 for s in stats}
        widest = max(s.nodes_after for s in stats)  # after autodiff and optimizer
        nodes = f"{len(graph.nodes)}->{widest}->{len(out.nodes)}"
        cols = " ".join(f"{s.ms / 1e3:>8.3f}" for s in stats)
        sched = f", peak {peak['dce']:.1f} -> {peak['schedule']:.1f} MiB by schedule" if "schedule" in peak else ""
        print(f"{depth:>5} {nodes:>16} {cols} {total:>7.3f} {per_block:>7.1f} {per_block / base:>6.2f}"
              f"   (trace {trace_s:.3f}s{sched}, B={BATCH})")


if __name__ == "__main__":
    main()
