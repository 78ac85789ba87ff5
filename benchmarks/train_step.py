"""Train-step benchmark: tinyc against PyTorch eager on the same model, weights and batch.

    python benchmarks/train_step.py --config {seed,vit,vit-wide} [--threads N] [--rounds N]
        [--steps N] [--warmup N] [--contention N] [--profile] [--json] [--no-torch]

Each system runs in its own subprocess (so peak RSS is per system), on `--threads` threads
(default 2): tinyc, and PyTorch eager twice, with `nn.MultiheadAttention` and with hand-written
attention (models_torch.py). tinyc initialises the weights and writes them and a fixed random
batch to a temp dir; the PyTorch processes load both, so the first-step losses must agree. The
systems take turns, round after round. Reported: median ms per training step (forward +
backward + update), examples/s, peak RSS, the ratios tinyc/torch, and the matmul-only limit: the
step's matmul FLOPs (3x the forward matmuls) over this machine's measured float32 matmul rate on
the model's own matmul shapes (NumPy's BLAS at `--threads` threads).

`--contention N` keeps N busy-loop processes running for the whole benchmark (a shared machine);
`--profile` adds tinyc's time per op and the GEMM / non-GEMM split of a step.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from contextlib import contextmanager

THREADS = int(os.environ.get("TINYC_BENCH_THREADS", "2"))  # --threads sets it for the workers
for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ[_var] = str(THREADS)  # before NumPy loads its BLAS

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
from models_tinyc import CONFIGS, ENTRIES

LOSS_TOL = 1e-4
TORCH_VARIANTS = {"torch-mha": "mha", "torch-manual": "manual"}  # system -> models_torch attention
SYSTEMS = ("tinyc", *TORCH_VARIANTS)
BASELINE = "tinyc-blas"  # --baseline: tinyc with whole kernels and BLAS threads (what did not win)


def _rss_mib() -> float:
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def _time_steps(step, steps: int, warmup: int) -> tuple[float, list[float]]:
    """(first-step loss, per-step seconds of the timed steps)."""
    first = step()
    for _ in range(warmup):
        step()
    times = []
    for _ in range(steps):
        t = time.perf_counter()
        step()
        times.append(time.perf_counter() - t)
    return first, times


def _forward_matmuls(graph, batch: int) -> list[tuple[tuple[int, ...], tuple[int, ...]]]:
    """Concrete (a, b) shapes of the forward graph's matmul nodes at `batch`."""
    types = graph.types
    shapes = []
    for n in graph.nodes:
        if n.op == "matmul":
            a, b = (types[v].concrete({"B": batch}) for v in n.inputs)
            shapes.append((tuple(a), tuple(b)))
    return shapes


def _matmul_flops(a: tuple[int, ...], b: tuple[int, ...]) -> int:
    batch = np.broadcast_shapes(a[:-2], b[:-2])
    return 2 * int(np.prod(batch, dtype=np.int64)) * a[-2] * a[-1] * b[-1]


def _blas_threaded() -> None:
    """tinyc as it ran before row blocks: whole kernels, BLAS at THREADS threads (`tinyc-blas`)."""
    from tinyc.runtime import executor, parallel, threads

    parallel.split = lambda *args, **kwargs: None
    executor.blas_threads = lambda n: threads.blas_threads(THREADS)


def worker_tinyc(config: str, folder: str, steps: int, warmup: int, profile: bool, blas: bool = False) -> dict:
    from tinyc.compiler.driver import compile_graph, trace_model_file
    from tinyc.runtime.executor import Executor
    from tinyc.runtime.profile import profile_train_steps

    if blas:
        _blas_threaded()

    cfg = CONFIGS[config]
    start = time.perf_counter()
    graph, _ = trace_model_file(os.path.join(HERE, "models_tinyc.py"), entry=ENTRIES[config])
    program, _ = compile_graph(graph)
    compile_s = time.perf_counter() - start
    ex = Executor(program, seed=0, threads=THREADS)
    kinds = {p.name: p.kind for p in program.entries["train_step"].graph.params}
    np.savez(os.path.join(folder, "weights.npz"), **{k: a for k, a in ex.params.items() if kinds.get(k) == "param"})
    rng = np.random.default_rng(1234)
    batch = cfg["batch"]
    feeds = {"image": rng.random((batch, 28, 28), dtype=np.float32),
             "label": rng.integers(0, 10, batch).astype(np.int64)}
    np.savez(os.path.join(folder, "batch.npz"), **feeds)
    lr = cfg["lr"]
    first, times = _time_steps(lambda: ex.train_step(feeds, lr)["loss"], steps, warmup)
    shapes = _forward_matmuls(graph, batch)
    result = {"loss0": float(first), "times": times, "rss_mib": _rss_mib(), "compile_s": compile_s,
              "matmul_shapes": shapes, "flops": 3 * sum(_matmul_flops(a, b) for a, b in shapes),
              "nodes": len(program.entries["train_step"].graph.nodes)}
    if profile:
        prof = profile_train_steps(ex, feeds, lr, steps)
        result["profile"] = {"rows": prof.rows(), "total_ms": prof.total * 1e3, "gemm_ms": prof.gemm * 1e3}
    return result


def worker_torch(config: str, folder: str, steps: int, warmup: int, attention: str) -> dict:
    import torch
    from models_torch import build, train_step

    torch.set_num_threads(THREADS)
    weights = np.load(os.path.join(folder, "weights.npz"))
    data = np.load(os.path.join(folder, "batch.npz"))
    model, opt = build(config, {k: weights[k].shape for k in weights.files}, attention)
    model.load_weights(weights)
    image, label = torch.from_numpy(data["image"]), torch.from_numpy(data["label"])
    first, times = _time_steps(lambda: train_step(model, opt, image, label), steps, warmup)
    return {"loss0": float(first), "times": times, "rss_mib": _rss_mib(), "version": torch.__version__}


def _run_worker(system: str, args, folder: str) -> dict:
    cmd = [sys.executable, os.path.abspath(__file__), "--config", args.config, "--steps", str(args.steps),
           "--warmup", str(args.warmup), "--worker", system, "--dir", folder] + (["--profile"] if args.profile and system == "tinyc" else [])
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise SystemExit(f"{system} worker failed:\n{proc.stderr}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


@contextmanager
def busy_loops(n: int):
    """`n` processes spinning on a core each for the duration (other users of a shared machine)."""
    procs = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(n)]
    try:
        yield
    finally:
        for p in procs:
            p.kill()
        for p in procs:
            p.wait()


def matmul_rate(shapes, repeats: int = 5) -> float:
    """float32 FLOP/s of np.matmul on `shapes` (a 3-D @ 2-D product run as one 2-D GEMM)."""
    rng = np.random.default_rng(0)
    total_flops, total_s = 0, 0.0
    for a_shape, b_shape in shapes:
        if len(b_shape) == 2:
            a_shape = (int(np.prod(a_shape[:-1])), a_shape[-1])
        a = rng.random(a_shape, dtype=np.float32)
        b = rng.random(b_shape, dtype=np.float32)
        out = np.matmul(a, b)
        best = float("inf")
        for _ in range(repeats):
            t = time.perf_counter()
            np.matmul(a, b, out=out)
            best = min(best, time.perf_counter() - t)
        total_flops += _matmul_flops(a_shape, b_shape)
        total_s += best
    return total_flops / total_s


def _torch_available() -> bool:
    import importlib.util

    return importlib.util.find_spec("torch") is not None


def _merge(total: dict | None, new: dict) -> dict:
    """One round's result added to the earlier rounds': all step times, the largest RSS."""
    if total is None:
        return new
    return {**total, "times": total["times"] + new["times"], "rss_mib": max(total["rss_mib"], new["rss_mib"])}


def run(args) -> dict:
    batch = CONFIGS[args.config]["batch"]
    systems = SYSTEMS if not args.no_torch and _torch_available() else ("tinyc",)
    systems += (BASELINE,) if args.baseline else ()
    res: dict[str, dict | None] = dict.fromkeys(systems)
    # The systems take turns, round after round, so that load from elsewhere on a shared machine
    # falls on all of them; the median is taken over the steps of all rounds.
    with tempfile.TemporaryDirectory(prefix="tinyc_bench_") as folder, busy_loops(args.contention):
        for _ in range(args.rounds):
            for system in systems:
                res[system] = _merge(res[system], _run_worker(system, args, folder))
        tiny = res["tinyc"]
        rate = matmul_rate(tiny["matmul_shapes"])
    limit_ms = tiny["flops"] / rate * 1e3
    tinyc_ms = float(np.median(tiny["times"])) * 1e3
    result = {
        "config": args.config, "batch": batch, "steps": args.steps, "rounds": args.rounds, "threads": THREADS,
        "contention": args.contention,
        "tinyc_ms": tinyc_ms, "tinyc_examples_s": batch / tinyc_ms * 1e3, "tinyc_rss_mib": tiny["rss_mib"],
        "tinyc_loss0": tiny["loss0"], "compile_s": tiny["compile_s"], "tinyc_nodes": tiny["nodes"],
        "matmul_gflop": tiny["flops"] / 1e9, "matmul_gflops_rate": rate / 1e9, "limit_ms": limit_ms,
        "tinyc_vs_limit": tinyc_ms / limit_ms, "profile": tiny.get("profile"),
        "torch_ms": None, "torch_examples_s": None, "torch_rss_mib": None, "torch_loss0": None, "ratio": None,
        "rss_ratio": None, "loss_diff": None, "loss_ok": None, "torch": {},
    }
    if args.baseline:
        base = res[BASELINE]
        base_ms = float(np.median(base["times"])) * 1e3
        result["baseline"] = {"ms": base_ms, "ratio": tinyc_ms / base_ms, "loss0": base["loss0"]}
    for system in (s for s in systems[1:] if s != BASELINE):
        r = res[system]
        ms = float(np.median(r["times"])) * 1e3
        diff = abs(tiny["loss0"] - r["loss0"])
        result["torch"][system] = {"ms": ms, "examples_s": batch / ms * 1e3, "rss_mib": r["rss_mib"],
                                   "loss0": r["loss0"], "ratio": tinyc_ms / ms, "rss_ratio": tiny["rss_mib"] / r["rss_mib"],
                                   "vs_limit": ms / limit_ms, "loss_diff": diff, "loss_ok": diff <= LOSS_TOL,
                                   "version": r["version"]}
    if result["torch"]:  # the summary fields: the faster PyTorch variant
        best = min(result["torch"].values(), key=lambda t: t["ms"])
        result.update(torch_ms=best["ms"], torch_examples_s=best["examples_s"], torch_rss_mib=best["rss_mib"],
                      torch_loss0=best["loss0"], ratio=best["ratio"], rss_ratio=best["rss_ratio"],
                      loss_diff=max(t["loss_diff"] for t in result["torch"].values()),
                      loss_ok=all(t["loss_ok"] for t in result["torch"].values()), torch_version=best["version"])
    return result


def _report(r: dict) -> str:
    lines = [f"config {r['config']}  batch {r['batch']}  {r['rounds']} x {r['steps']} timed steps  "
             f"{r['threads']} threads" + (f"  {r['contention']} busy loops beside" if r["contention"] else ""),
             f"{'':14}{'ms/step':>10}{'examples/s':>12}{'peak RSS MiB':>14}{'x limit':>9}{'tinyc/this':>12}",
             (f"{'tinyc':14}{r['tinyc_ms']:>10.2f}{r['tinyc_examples_s']:>12.0f}{r['tinyc_rss_mib']:>14.1f}"
              f"{r['tinyc_vs_limit']:>9.2f}")]
    for system, t in r["torch"].items():
        lines.append(f"{system:14}{t['ms']:>10.2f}{t['examples_s']:>12.0f}{t['rss_mib']:>14.1f}{t['vs_limit']:>9.2f}"
                     f"{t['ratio']:>11.2f}x")
    if r.get("baseline"):
        b = r["baseline"]
        lines.append(f"{BASELINE:14}{b['ms']:>10.2f}{'':35}{b['ratio']:>11.2f}x  (whole kernels, BLAS threads)")
    if r["torch"]:
        lines.append(f"ratio tinyc / faster PyTorch: time {r['ratio']:.2f}x, peak RSS {r['rss_ratio']:.2f}x")
        verdict = "ok" if r["loss_ok"] else f"MISMATCH (> {LOSS_TOL})"
        losses = ", ".join(f"{s} {t['loss0']:.6f}" for s, t in r["torch"].items())
        lines.append(f"first-step loss: tinyc {r['tinyc_loss0']:.6f}, {losses}; max |diff| {r['loss_diff']:.2e}: {verdict}")
    lines.append(f"matmul-only limit: {r['matmul_gflop']:.3f} GFLOP / {r['matmul_gflops_rate']:.1f} GFLOP/s "
                 f"= {r['limit_ms']:.2f} ms")
    lines.append(f"compile: {r['compile_s']:.2f} s ({r['tinyc_nodes']} nodes in train_step)")
    prof = r.get("profile")
    if prof:
        gemm, total = prof["gemm_ms"], prof["total_ms"]
        lines.append(f"tinyc profile (one step, instructions timed one by one): {total:.2f} ms; "
                     f"GEMM {gemm:.2f} ms ({gemm / total:.0%}), the rest {total - gemm:.2f} ms ({1 - gemm / total:.0%})")
        lines.append(f"  {'op':28}{'count':>6}{'ms':>9}{'share':>8}")
        lines.extend(f"  {op:28}{n:>6}{ms:>9.3f}{share:>8.1%}" for op, n, ms, share in prof["rows"])
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--config", choices=sorted(CONFIGS), default="seed")
    p.add_argument("--steps", type=int, default=30, help="timed steps after warm-up")
    p.add_argument("--warmup", type=int, default=5)
    p.add_argument("--rounds", type=int, default=3, help="alternating runs of each system (median over all)")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.add_argument("--no-torch", action="store_true", help="run tinyc only")
    p.add_argument("--threads", type=int, default=THREADS, help="threads of each system (default 2)")
    p.add_argument("--contention", type=int, default=0, metavar="N", help="busy-loop processes running beside")
    p.add_argument("--profile", action="store_true", help="time tinyc's step op by op")
    p.add_argument("--baseline", action="store_true",
                   help=f"also run {BASELINE}: tinyc with whole kernels and BLAS at --threads threads")
    p.add_argument("--worker", choices=(*SYSTEMS, BASELINE), help=argparse.SUPPRESS)
    p.add_argument("--dir", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.threads != THREADS:  # re-exec so NumPy's BLAS starts with the requested thread count
        os.environ["TINYC_BENCH_THREADS"] = str(args.threads)
        os.execv(sys.executable, [sys.executable, os.path.abspath(__file__), *(argv if argv is not None else sys.argv[1:])])
    if args.worker in ("tinyc", BASELINE):
        print(json.dumps(worker_tinyc(args.config, args.dir, args.steps, args.warmup, args.profile,
                                      blas=args.worker == BASELINE)))
        return
    if args.worker:
        print(json.dumps(worker_torch(args.config, args.dir, args.steps, args.warmup, TORCH_VARIANTS[args.worker])))
        return
    result = run(args)
    print(json.dumps(result) if args.json else _report(result))


if __name__ == "__main__":
    main()
