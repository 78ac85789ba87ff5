"""Data-parallel benchmark: examples/s at the same global batch, side by side in one run.

    python benchmarks/data_parallel.py [--config seed,vit] [--steps N] [--warmup N] [--rounds N] [--json] [--no-torch]

Systems, taking turns round after round (so load from elsewhere on a shared machine falls on all):

- `1 proc x 2 thr`: tinyc in one process, 2 BLAS threads;
- `2 ranks x 1 thr`: `mpiexec -n 2`, each rank 1 BLAS thread and its half of the global batch;
- `torch x 2 thr`: PyTorch eager, 2 threads (same model, weights and batch);
- `1 proc, no dp pass`: the same process also runs the program compiled without the
  `dataparallel` pass (what one process paid before the pass), its steps alternating with the
  first system's so that both see the same load: the pass must cost nothing here.

Reported per system: the median ms per step over all rounds, examples/s, and for 2 ranks the
allreduce time (the median of in-place `Allreduce`s of the step's flat gradient buffer, timed
after a barrier); then the ratios the README quotes, and `--scaling`: the step time on paper up
to 64 ranks (ring allreduce: 2(N-1)/N x bytes / bandwidth + 2(N-1) x latency) from the measured
per-example compute and the gradient bytes.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
THREADS = os.environ.get("TINYC_BENCH_THREADS", "2")
for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "TINYC_NUM_THREADS"):
    os.environ[_var] = THREADS  # before NumPy loads its BLAS (each worker is started with its count)

import numpy as np  # after the thread counts above

sys.path.insert(0, HERE)
from models_tinyc import CONFIGS, ENTRIES
from train_step import _time_steps as _time  # first result, then timed steps

SYSTEMS = ("1 proc x 2 thr", "2 ranks x 1 thr", "torch x 2 thr")  # and "1 proc, no dp pass" from the first
NETWORKS = {"10 Gb/s Ethernet": (1.25e9, 20e-6), "100 Gb/s InfiniBand": (12.5e9, 2e-6)}  # bytes/s, latency s
RANKS = (1, 2, 4, 8, 16, 32, 64)


def _feeds(config: str) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(1234)
    batch = CONFIGS[config]["batch"]
    return {"image": rng.random((batch, 28, 28), dtype=np.float32), "label": rng.integers(0, 10, batch).astype(np.int64)}


def _compile(config: str, dp_pass: bool = True):
    from tinyc.compiler import manager
    from tinyc.compiler.driver import compile_graph, trace_model_file

    pipeline = manager.DEFAULT_PIPELINE
    if not dp_pass:
        manager.DEFAULT_PIPELINE = tuple(p for p in pipeline if p != "dataparallel")
    try:
        graph, _ = trace_model_file(os.path.join(HERE, "models_tinyc.py"), entry=ENTRIES[config])
        return compile_graph(graph)[0]
    finally:
        manager.DEFAULT_PIPELINE = pipeline


def worker_tinyc(config: str, folder: str, steps: int, warmup: int) -> dict | None:
    from tinyc.runtime.comm import mpi_world
    from tinyc.runtime.executor import Executor
    from tinyc.runtime.ranks import World

    program = _compile(config)
    comm = mpi_world()
    world = World(comm)
    ex = Executor(program, seed=0, threads=int(THREADS), comm=comm)
    feeds = _feeds(config)
    if comm is None:  # the weights and batch the torch worker reads
        kinds = {p.name: p.kind for p in program.entries["train_step"].graph.params}
        np.savez(os.path.join(folder, "weights.npz"), **{k: a for k, a in ex.params.items() if kinds.get(k) == "param"})
        np.savez(os.path.join(folder, "batch.npz"), **feeds)
    start, stop = world.part(len(feeds["label"]))
    local = {k: v[start:stop] for k, v in feeds.items()}
    share = (stop - start) / len(feeds["label"])
    lr = CONFIGS[config]["lr"]
    if comm is None:  # one process: steps of the program with and without the pass take turns
        plain = Executor(_compile(config, dp_pass=False), seed=0, threads=int(THREADS))
        both = {"with": ex, "without": plain}
        firsts = {k: e.train_step(local, lr)["loss"] for k, e in both.items()}
        timed = {k: [] for k in both}
        for i in range(warmup + steps):
            for k, e in (both.items() if i % 2 else reversed(both.items())):
                t = time.perf_counter()
                e.train_step(local, lr)
                if i >= warmup:
                    timed[k].append(time.perf_counter() - t)
        return {"loss0": float(firsts["with"]), "times": timed["with"], "allreduce_ms": None,
                "grad_bytes": _flat_bytes(program), "without_pass": {"loss0": float(firsts["without"]),
                                                                     "times": timed["without"], "allreduce_ms": None}}
    first, times = _time(lambda: ex.train_step(local, lr, share)["loss"], steps, warmup)
    result = {"loss0": float(first), "times": times, "allreduce_ms": None, "grad_bytes": _flat_bytes(program)}
    if comm is not None:
        from mpi4py import MPI

        buf = np.zeros(result["grad_bytes"] // 4, np.float32)
        ms = []
        for _ in range(50):
            comm.Barrier()
            t = time.perf_counter()
            comm.Allreduce(MPI.IN_PLACE, buf, op=MPI.SUM)
            ms.append((time.perf_counter() - t) * 1e3)
        result["allreduce_ms"] = float(np.median(ms))
    return result if world.root else None


def _flat_bytes(program) -> int:
    g = program.entries["train_step"].graph
    return sum(n.type.nbytes() for n in g.nodes if n.op == "flat_concat") or \
        sum(p.type.nbytes() for p in g.params if p.kind == "param")


def worker_torch(config: str, folder: str, steps: int, warmup: int) -> dict:
    import torch
    from models_torch import build, train_step

    torch.set_num_threads(int(THREADS))
    weights = np.load(os.path.join(folder, "weights.npz"))
    data = np.load(os.path.join(folder, "batch.npz"))
    model, opt = build(config, {k: weights[k].shape for k in weights.files}, "mha")  # nn.MultiheadAttention
    model.load_weights(weights)
    image, label = torch.from_numpy(data["image"]), torch.from_numpy(data["label"])
    first, times = _time(lambda: train_step(model, opt, image, label), steps, warmup)
    return {"loss0": float(first), "times": times, "allreduce_ms": None}


def _run(system: str, config: str, args, folder: str) -> dict:
    me = [sys.executable, os.path.abspath(__file__), "--config", config, "--steps", str(args.steps),
          "--warmup", str(args.warmup), "--dir", folder]
    env = dict(os.environ, TINYC_BENCH_THREADS="1" if system.startswith("2 ranks") else "2")
    if system.startswith("2 ranks"):
        mpiexec = os.path.join(os.path.dirname(sys.executable), "mpiexec")
        cmd = [mpiexec, "-n", "2", *me, "--worker", "tinyc"]
    elif system.startswith("torch"):
        cmd = [*me, "--worker", "torch"]
    else:
        cmd = [*me, "--worker", "tinyc"]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, check=False, timeout=600)
    if proc.returncode != 0:
        raise SystemExit(f"{system} worker failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def scaling(step_ms: float, allreduce_ms: float, batch: int, ranks: int, grad_bytes: int) -> list[dict]:
    """Step time on paper for 1..64 ranks: compute per example from the measured ranks' step (less
    its allreduce), times the examples per rank, plus a ring allreduce of the gradient bytes."""
    per_example = max(step_ms - allreduce_ms, 1e-9) / (batch / ranks)
    rows = []
    for n in RANKS:
        row = {"ranks": n}
        for net, (bw, lat) in NETWORKS.items():
            ring = 0.0 if n == 1 else (2 * (n - 1) / n * grad_bytes / bw + 2 * (n - 1) * lat) * 1e3
            strong = per_example * batch / n + ring  # the global batch of the config, split n ways
            weak = per_example * (batch / ranks) + ring  # each rank keeps the measured per-rank batch
            row[net] = {"ring_ms": ring, "strong_ms": strong, "weak_ms": weak,
                        "weak_efficiency": per_example * (batch / ranks) / weak}
        rows.append(row)
    return rows


def run(args) -> list[dict]:
    import importlib.util

    systems = [s for s in SYSTEMS if not (s.startswith("torch") and (args.no_torch or not importlib.util.find_spec("torch")))]
    results = []
    for config in args.config.split(","):
        runs: dict[str, dict] = {}
        with tempfile.TemporaryDirectory(prefix="tinyc_dp_") as folder:
            for _ in range(args.rounds):
                for system in systems:
                    r = _run(system, config, args, folder)
                    for name, res in ((system, r), ("1 proc, no dp pass", r.pop("without_pass", None))):
                        if res is None:
                            continue
                        old = runs.get(name)
                        if old:
                            res = {**res, "times": old["times"] + res["times"],
                                   "allreduce_ms": old["allreduce_ms"] if res["allreduce_ms"] is None else
                                   min(old["allreduce_ms"], res["allreduce_ms"])}
                        runs[name] = res
        batch = CONFIGS[config]["batch"]
        row = {"config": config, "batch": batch, "rounds": args.rounds, "steps": args.steps, "systems": {}}
        for system, r in runs.items():
            ms = float(np.median(r["times"])) * 1e3
            row["systems"][system] = {"ms": ms, "examples_s": batch / ms * 1e3, "loss0": r["loss0"],
                                      "allreduce_ms": r["allreduce_ms"]}
        s = row["systems"]
        one, two = s["1 proc x 2 thr"], s["2 ranks x 1 thr"]
        row["speedup_2ranks_vs_1proc"] = two["examples_s"] / one["examples_s"]
        row["pass_cost"] = one["ms"] / s["1 proc, no dp pass"]["ms"]
        if "torch x 2 thr" in s:
            row["speedup_2ranks_vs_torch"] = two["examples_s"] / s["torch x 2 thr"]["examples_s"]
        row["grad_bytes"] = runs["2 ranks x 1 thr"]["grad_bytes"]
        row["scaling"] = scaling(two["ms"], two["allreduce_ms"], batch, 2, row["grad_bytes"])
        results.append(row)
    return results


def _report(rows: list[dict], with_scaling: bool) -> str:
    lines = []
    for r in rows:
        lines.append(f"config {r['config']}  global batch {r['batch']}  {r['rounds']} x {r['steps']} timed steps")
        lines.append(f"  {'system':<20}{'ms/step':>9}{'examples/s':>12}{'allreduce ms':>14}{'loss0':>9}")
        for name, s in r["systems"].items():
            ar = "-" if s["allreduce_ms"] is None else f"{s['allreduce_ms']:.3f}"
            lines.append(f"  {name:<20}{s['ms']:>9.2f}{s['examples_s']:>12.0f}{ar:>14}{s['loss0']:>9.4f}")
        lines.append(f"  2 ranks / 1 proc: {r['speedup_2ranks_vs_1proc']:.2f}x examples/s"
                     + (f"; 2 ranks / torch: {r['speedup_2ranks_vs_torch']:.2f}x" if "speedup_2ranks_vs_torch" in r else "")
                     + f"; one process with / without the dp pass: {r['pass_cost']:.3f}x step time")
        if with_scaling:
            b, per = r["batch"], r["batch"] // 2
            lines.append(f"  on paper: ring allreduce of {r['grad_bytes'] / 2**20:.2f} MiB; strong = global batch {b} "
                         f"split over the ranks, weak = {per} examples per rank")
            for net in NETWORKS:
                lines.append(f"  {net}:")
                lines.append(f"  {'ranks':>7}{'allreduce ms':>14}{'strong ms':>11}{'strong ex/s':>13}"
                             f"{'weak ms':>9}{'weak ex/s':>11}{'weak eff.':>11}")
                for row in r["scaling"]:
                    x, n = row[net], row["ranks"]
                    lines.append(f"  {n:>7}{x['ring_ms']:>14.3f}{x['strong_ms']:>11.2f}{b / x['strong_ms'] * 1e3:>13.0f}"
                                 f"{x['weak_ms']:>9.2f}{n * per / x['weak_ms'] * 1e3:>11.0f}{x['weak_efficiency']:>11.0%}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--config", default="seed,vit", help="comma-separated configs of models_tinyc.py")
    p.add_argument("--steps", type=int, default=30, help="timed steps after warm-up")
    p.add_argument("--warmup", type=int, default=5)
    p.add_argument("--rounds", type=int, default=3, help="turns of every system (median over all steps)")
    p.add_argument("--json", action="store_true", help="print one JSON list")
    p.add_argument("--no-torch", action="store_true", help="leave PyTorch out")
    p.add_argument("--scaling", action="store_true", help="add the on-paper scaling table to 64 ranks")
    p.add_argument("--worker", choices=("tinyc", "torch"), help=argparse.SUPPRESS)
    p.add_argument("--dir", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.worker:
        if args.worker == "torch":
            result = worker_torch(args.config, args.dir, args.steps, args.warmup)
        else:
            result = worker_tinyc(args.config, args.dir, args.steps, args.warmup)
        if result is not None:
            print(json.dumps(result))
        return
    rows = run(args)
    print(json.dumps(rows) if args.json else _report(rows, args.scaling))


if __name__ == "__main__":
    main()
