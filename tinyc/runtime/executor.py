"""The executor: runs a Program's entries with preallocated buffers and in-place updates.

Per entry and per binding of the symbolic dims (the batch size), it builds once a flat list of
instructions `(kernel bound to its attributes and output buffer, input arrays, output array,
node)`. Buffers follow the entry's memory plan (`Entry.plan`, `tinyc.ir.plan`): one raw byte
arena per binding, each planned buffer placed at a byte offset (`tinyc.runtime.arena`) and
viewed as each value's dtype and shape. A step then is: bind the feeds (`binding.bind_feeds`)
and copy them into the input buffers, call every kernel, copy outputs out and write updates
into the parameter arrays. No graph walking, shape arithmetic or allocation of planned values happens per step.

Imports only `tinyc.ir` and the runtime (never the compiler, models, cli or networkx).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from functools import partial
from typing import Any

import numpy as np

from ..ir.errors import CheckpointError, IRError, NumericsError, TinycError
from ..ir.graph import Graph, Node
from ..ir.plan import check_plan
from ..ir.program import LR_INPUT, PREDICT_ENTRY, SHARE_INPUT, TRAIN_ENTRY, Entry, Program
from ..ir.train import STORED_DEFAULTS
from ..ir.types import format_shape
from .arena import arena_layout
from .binding import bind_feeds, resolve_attrs
from .checkpoint import read_weights, save_weights
from .comm import in_place_sum
from .init import init_param
from .kernels import KERNELS, VIEW_OPS
from .parallel import call_of, pool
from .parallel_kernels import COLLECTIVES, PACKING, copy_parts
from .threads import blas_threads, resolve_threads


@dataclass
class _Compiled:
    """An entry ready to run at one binding of its symbols."""

    input_bufs: list[np.ndarray]
    instrs: list[tuple]  # (call, inputs, out, node)
    outputs: list[tuple[str, np.ndarray]]
    snapshots: list[tuple[np.ndarray, np.ndarray]]  # (temp, src): params read by updates, saved first
    writes: list[tuple[np.ndarray, np.ndarray]]  # (param array, new value)


class _EntryRunner:
    """One entry: its inputs, plan and the instruction lists built so far (keyed by bindings)."""

    def __init__(self, entry: Entry) -> None:
        self.entry = entry
        self.graph: Graph = entry.graph
        self.inputs = [(i.name, i.type) for i in self.graph.inputs]
        self.takes_lr = any(name == LR_INPUT for name, _ in self.inputs)
        self.takes_share = any(name == SHARE_INPUT for name, _ in self.inputs)
        self.cache: dict[tuple, _Compiled] = {}
        missing = sorted({n.op for n in self.graph.nodes} - set(KERNELS))
        if missing:
            raise IRError(f"entry {entry.name!r}: no kernel for op(s) {', '.join(missing)}")
        if entry.plan is not None:
            check_plan(entry.plan, self.graph)

    def bind(self, feeds: Mapping[str, Any]) -> tuple[list[np.ndarray], tuple]:
        """The feed arrays in input order, and the symbol bindings they imply (checked)."""
        arrays, bindings = bind_feeds(self.graph.inputs, feeds, entry=self.entry.name)
        return [arrays[name] for name, _ in self.inputs], tuple(sorted(bindings.items()))


class Executor:
    """Holds parameters and optimizer state of a Program and runs its entries.

    Parameter arrays are created once and only ever written into (instruction lists hold them).
    Updates may be computed straight into them, so a step that fails part way (a kernel error,
    a NumericsError) can leave them partly updated: reload a checkpoint after such an error.

    `threads`: how many threads a step uses (see `threads.resolve_threads`: default
    $TINYC_NUM_THREADS, else the cores this process may use); applied to BLAS only while a step runs.

    `comm` (an mpi4py communicator or a `LocalComm`; None: one process) is what the program's
    `allreduce` sums over. Every rank must then run the same steps: each `train_step` is a
    collective.
    """

    def __init__(self, program: Program, seed: int = 0, check_numerics: bool = False,
                 threads: int | None = None, comm: Any = None) -> None:
        self.program = program
        self.seed = seed
        self.check_numerics = check_numerics
        self.threads = resolve_threads(threads)
        self.comm = comm
        self._reduce = in_place_sum(comm)
        self._pool = pool(self.threads)  # large instructions run as row blocks on it (parallel.py)
        self._runners = {name: _EntryRunner(e) for name, e in program.entries.items()}
        self.params: dict[str, np.ndarray] = {}
        self._specs = {}
        for e in program.entries.values():
            for p in e.graph.params:
                if p.name in self._specs:
                    if self._specs[p.name].type != p.type:
                        raise IRError(f"parameter {p.name!r} is {self._specs[p.name].type} in one entry "
                                      f"and {p.type} in another")
                    continue
                self._specs[p.name] = p
                # arrays are never replaced, only written into: instruction lists hold them
                self.params[p.name] = np.array(init_param(p, seed), order="C")

    # ------------------------------------------------------------------ running
    def train_step(self, feeds: Mapping[str, Any], lr: float | None = None, share: float | None = None) -> dict[str, Any]:
        """One optimizer step on a batch; returns "loss" and the declared outputs.

        With a `comm`, the batch is this rank's part of a global batch and `share` its part of
        the examples (default: its batch size over the sum of all ranks' batch sizes).
        """
        runner = self._runner(TRAIN_ENTRY)
        if runner.takes_lr:
            if lr is None:
                lr = float(self.program.meta.get("train", {}).get("lr", STORED_DEFAULTS["lr"]))
            feeds = {**feeds, LR_INPUT: lr}
        if runner.takes_share:
            if share is None:
                share = self._share(feeds, runner)
            feeds = {**feeds, SHARE_INPUT: share}
        return self.run(TRAIN_ENTRY, feeds)

    def _share(self, feeds: Mapping[str, Any], runner: _EntryRunner) -> float:
        if self._reduce is None:
            return 1.0
        data = next(name for name, t in runner.inputs if name not in (LR_INPUT, SHARE_INPUT) and t.rank)
        local = len(feeds[data])
        return local / self.comm.allreduce(local)

    def predict(self, feeds: Mapping[str, Any]) -> dict[str, Any]:
        """The forward outputs of a batch (no parameter change)."""
        return self.run(PREDICT_ENTRY, feeds)

    def run(self, entry: str, feeds: Mapping[str, Any]) -> dict[str, Any]:
        """Run `entry` on `feeds`; results are copies (0-d results as Python scalars)."""
        runner = self._runner(entry)
        arrays, key = runner.bind(feeds)
        compiled = runner.cache.get(key)
        if compiled is None:
            compiled = runner.cache[key] = self._compile(runner, dict(key))
        for buf, a in zip(compiled.input_bufs, arrays):
            np.copyto(buf, a, casting="unsafe")  # bind_feeds admitted the data's kind (FEEDABLE_KINDS)
        with blas_threads(1):  # the pool's threads run BLAS calls side by side: one thread each
            if self.check_numerics:
                self._execute_checked(compiled.instrs)
            else:
                self._execute(compiled.instrs)
        results = {name: (a.item() if a.ndim == 0 else a.copy()) for name, a in compiled.outputs}
        for tmp, src in compiled.snapshots:
            np.copyto(tmp, src)
        for dst, src in compiled.writes:
            np.copyto(dst, src)
        return results

    @staticmethod
    def _execute(instrs: list[tuple]) -> None:
        copyto = np.copyto
        try:
            for call, ins, out, node in instrs:
                r = call(*ins)
                if r is not out:
                    copyto(out, r)
        except Exception as e:
            raise _node_error(node, e) from e  # `node`: the failing instruction (loop variable)

    @staticmethod
    def _execute_checked(instrs: list[tuple]) -> None:
        for call, ins, out, node in instrs:
            _execute_one(call, ins, out, node)
            if out.dtype.kind == "f" and not np.isfinite(out).all():
                bad = "NaN" if np.isnan(out).any() else "Inf"
                raise NumericsError(f"{node.op} %{node.out} produced {bad} ({node.type})"
                                    + _origin(node), loc=node.loc,
                                    hint="lower the learning rate, or look at this op's inputs")

    def _runner(self, entry: str) -> _EntryRunner:
        if entry not in self._runners:
            raise IRError(f"program has no entry {entry!r}; it has {', '.join(self._runners) or 'none'}")
        return self._runners[entry]

    # ------------------------------------------------------------------ building
    def _compile(self, runner: _EntryRunner, bindings: dict[str, int]) -> _Compiled:
        """The instruction list of an entry at `bindings`, with every buffer allocated."""
        graph, plan = runner.graph, runner.entry.plan
        types = graph.types
        env: dict[str, np.ndarray] = {}
        input_bufs = []
        for name, t in runner.inputs:
            env[name] = np.empty(t.concrete(bindings), t.np_dtype)
            input_bufs.append(env[name])
        for p in graph.params:
            env[p.name] = self.params[p.name]
        if plan is None:  # unplanned: every value gets its own array
            slots, inplace, static, alias, offsets, arena = {}, {}, set(), {}, [], None
            placed = {}
        else:
            slots, inplace, static, alias = plan.slots, plan.inplace, set(plan.static), plan.alias
            offsets, arena = arena_layout(plan, types, bindings)
            placed = _placements(graph, plan.placed, slots, offsets, arena, bindings)
        instrs = []
        for node in graph.nodes:
            t = node.type
            shape = t.concrete(bindings)
            attrs = resolve_attrs(node, graph, bindings)
            if node.out in alias:
                view = _view(node, alias[node.out], env, attrs)
                if view is not None:
                    env[node.out] = view  # no instruction: it reads its input's buffer
                    continue
            if node.out in inplace:
                out = self.params[inplace[node.out]]
            elif node.out in placed:
                out = placed[node.out]  # its part of a packing node's buffer
            elif node.out in slots:
                start = offsets[slots[node.out]]
                nbytes = int(np.prod(shape, dtype=np.int64)) * t.np_dtype.itemsize
                out = arena[start:start + nbytes].view(t.np_dtype).reshape(shape)
            else:
                out = np.empty(shape, t.np_dtype)
            if node.op in COLLECTIVES and self._reduce is not None:
                attrs["reduce"] = self._reduce
            ins = tuple(env[u] for u in node.inputs)
            call = call_of(KERNELS[node.op], node.op, ins, out, attrs, self._pool)
            env[node.out] = out
            if node.op in PACKING and placed:
                # copy only the inputs not computed in their place already (each at its first position)
                parts = [(x, dst) for k, (v, x, dst) in enumerate(zip(node.inputs, ins, _parts(out, ins)))
                         if not (plan.placed.get(v) == node.out and node.inputs.index(v) == k)]
                if not parts:
                    continue  # every input was computed in place: nothing to copy
                ins = tuple(x for x, _ in parts)
                call = partial(copy_parts, dsts=tuple(dst for _, dst in parts), out=out)
            if node.out in static and not node.inputs:
                _execute_one(call, ins, out, node)  # inputs-free: computed once per binding
            else:
                instrs.append((call, ins, out, node))
        outputs = [(name, env[v]) for name, v in graph.outputs]
        snapshots, writes = [], []
        for p, v in graph.updates:
            src = env[v]
            if src is self.params[p]:
                continue  # computed in place
            if v in self.params or any(np.may_share_memory(src, a) for a in self.params.values()):
                # an update that reads a parameter (or a view of one): save it before any write
                tmp = np.empty_like(src)
                snapshots.append((tmp, src))
                src = tmp
            writes.append((self.params[p], src))
        return _Compiled(input_bufs, instrs, outputs, snapshots, writes)

    # ------------------------------------------------------------------ state
    @property
    def weight_names(self) -> list[str]:
        """The trained parameters (not optimizer state), in declaration order."""
        return [name for name, p in self._specs.items() if p.kind == "param"]

    def save_weights(self, path: str) -> None:
        """Write the trained parameters only (safetensors, names as in the program), atomically."""
        save_weights(path, {name: self.params[name] for name in self.weight_names}, self.program.meta.get("model", ""))

    def load_weights(self, path: str) -> dict[str, Any]:
        """Load the trained parameters from a checkpoint (its optimizer state is ignored) or a
        weights file; returns the file's metadata. Nothing is written unless every parameter fits."""
        names = self.weight_names
        state = set(self.params) - set(names)
        tensors, meta = read_weights(path, {n: (self.params[n].shape, self.params[n].dtype) for n in names}, state)
        self.load_state_dict(tensors, strict=False)
        return meta

    def state_dict(self) -> dict[str, np.ndarray]:
        """Copies of every parameter and optimizer-state array, by name."""
        return {name: a.copy() for name, a in self.params.items()}

    def load_state_dict(self, state: Mapping[str, Any], strict: bool = True) -> None:
        """Write arrays into the parameters (and state); names, shapes and dtypes must match."""
        unknown = sorted(set(state) - set(self.params))
        if unknown:
            raise CheckpointError(f"checkpoint has tensor(s) the program does not: {', '.join(unknown)}")
        missing = sorted(set(self.params) - set(state))
        if strict and missing:
            raise CheckpointError(f"checkpoint lacks tensor(s): {', '.join(missing)}")
        checked = {}
        for name, value in state.items():
            a, want = np.asarray(value), self.params[name]
            if a.shape != want.shape:
                raise CheckpointError(f"parameter {name!r}: checkpoint has shape {format_shape(a.shape)}, "
                                      f"the program expects {format_shape(want.shape)}", loc=self._specs[name].loc)
            if a.dtype != want.dtype:
                raise CheckpointError(f"parameter {name!r}: checkpoint has dtype {a.dtype}, "
                                      f"the program expects {want.dtype}", loc=self._specs[name].loc)
            checked[name] = a
        for name, a in checked.items():  # all checked before any is written
            np.copyto(self.params[name], a)


def _view(node: Node, base: str, env: Mapping[str, np.ndarray], attrs: Mapping[str, Any]) -> np.ndarray | None:
    """The node's result as a view of its input's array (memory plan `alias`), or None when
    NumPy would copy (the node then gets its own buffer and runs as usual)."""
    if node.inputs[:1] != (base,) or node.op not in VIEW_OPS:
        raise IRError(f"memory plan makes %{node.out} ({node.op}) a view of %{base}, which it cannot be")
    src = env[base]
    view = KERNELS[node.op](src, **attrs)
    return view if view.size and np.shares_memory(view, src) else None


def _parts(flat: np.ndarray, ins: tuple[np.ndarray, ...]) -> list[np.ndarray]:
    """The views of a packing node's output that hold each of its inputs, in order."""
    views, start = [], 0
    for x in ins:
        views.append(flat[start:start + x.size].reshape(x.shape))
        start += x.size
    return views


def _placements(graph: Graph, placed, slots, offsets, arena, bindings) -> dict[str, np.ndarray]:
    """value -> the view of its packing node's buffer it is computed into (memory plan `placed`)."""
    producers, views = graph.producers, {}
    for packer in sorted(set(placed.values())):
        node = producers[packer]
        if node.op not in PACKING:
            raise IRError(f"memory plan places values inside %{packer} ({node.op}), which packs nothing")
        t = node.type
        start = offsets[slots[packer]]
        flat = arena[start:start + t.numel(bindings) * t.np_dtype.itemsize].view(t.np_dtype)
        start = 0
        for v in node.inputs:
            shape = graph.types[v].concrete(bindings)
            n = int(np.prod(shape, dtype=np.int64))
            if placed.get(v) == packer and v not in views:
                views[v] = flat[start:start + n].reshape(shape)
            start += n
    return views


def _execute_one(call, ins, out, node: Node) -> None:
    try:
        r = call(*ins)
        if r is not out:
            np.copyto(out, r)
    except Exception as e:
        raise _node_error(node, e) from e


def _origin(node: Node) -> str:
    """` [enc0.attn, grad of softmax]`: the node's layer and provenance, when it has them."""
    tags = ", ".join(t for t in (node.scope, node.note) if t)
    return f" [{tags}]" if tags else ""


def _node_error(node: Node, e: Exception) -> TinycError:
    """A kernel failure naming the node and the user's line."""
    where = _origin(node)
    if isinstance(e, TinycError):
        return type(e)(f"{node.op} %{node.out}{where}: {e.message}", loc=e.loc or node.loc, hint=e.hint)
    return TinycError(f"{node.op} %{node.out}{where} failed: {type(e).__name__}: {e}", loc=node.loc)
