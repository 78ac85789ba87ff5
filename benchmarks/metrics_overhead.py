"""What `--metrics-out` costs a training step: the same short run with and without it, side by side.

Each round trains the example model for one epoch on the same synthetic data three ways, in turn:
no metrics file, the default step rows (~100 per epoch), and a row every step (`--log-every 1`,
the worst case). The three take turns within each round, so load from elsewhere on a shared
machine falls on all of them; the table shows the median seconds per epoch and its ratio to the
run without metrics.

    python benchmarks/metrics_overhead.py [--model mlp|vit] [--rounds 7] [--examples 6400] [--threads N]
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np

from tinyc.compiler.driver import compile_file
from tinyc.runtime.threads import resolve_threads
from tinyc.runtime.trainer import RunConfig, Trainer

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
MODELS = {"mlp": "mlp_mnist.py", "vit": "vit_mnist.py"}


def data(n: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    return {"image": rng.integers(0, 256, (n, 28, 28), dtype=np.uint8), "label": rng.integers(0, 10, n)}


def epoch_seconds(program, train, folder: str, log_every: int | None, metrics: bool, threads: int | None) -> float:
    path = os.path.join(folder, "m.jsonl") if metrics else None
    config = RunConfig.from_program(program, epochs=1, metrics_out=path, log_every=log_every, threads=threads,
                                    overwrite=True)  # each round replaces the last round's file
    trainer = Trainer(program, train, None, config)
    start = time.perf_counter()
    trainer.fit()
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", choices=MODELS, default="mlp")
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--examples", type=int, default=6400)
    parser.add_argument("--threads", type=int, default=None, help="threads a step uses (its row blocks and BLAS; default: as tinyc run)")
    args = parser.parse_args()
    program = compile_file(str(EXAMPLES / MODELS[args.model]))[0]
    train = data(args.examples)
    ways = {"no metrics file": (None, False), "default rows (~100/epoch)": (None, True), "a row every step": (1, True)}
    times: dict[str, list[float]] = {name: [] for name in ways}
    with tempfile.TemporaryDirectory() as folder:
        epoch_seconds(program, train, folder, None, False, args.threads)  # warm-up: caches, BLAS threads
        for _ in range(args.rounds):
            for name, (every, metrics) in ways.items():
                times[name].append(epoch_seconds(program, train, folder, every, metrics, args.threads))
    steps = -(-args.examples // RunConfig.from_program(program).batch_size)
    base = statistics.median(times["no metrics file"])
    threads = resolve_threads(args.threads)
    print(f"{args.model}: {args.examples} examples, {steps} steps per epoch, {args.rounds} rounds (median), "
          f"{threads} thread{'s' if threads > 1 else ''}")
    print(f"{'run':<28}{'s/epoch':>9}{'ms/step':>9}{'ratio':>8}")
    for name, values in times.items():
        med = statistics.median(values)
        print(f"{name:<28}{med:>9.3f}{1e3 * med / steps:>9.3f}{med / base:>8.3f}")


if __name__ == "__main__":
    main()
