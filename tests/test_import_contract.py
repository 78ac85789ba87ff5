"""The dependency direction: runtime -> ir only; ir -> nothing else of tinyc; neither uses networkx;
compiler -> ir and the runtime's kernel tables (to fold constants and know which kernels may
run in place), never the executor, models, cli or tinyc/__init__ (the front-end).

Checked twice: dynamically (a subprocess that makes the forbidden modules unimportable, then
imports every module of the layer and runs a graph) and statically (every import statement, lazy
ones inside functions included, of every file under tinyc/runtime, tinyc/ir and tinyc/compiler).
Across the whole package: no import circle, and the optional extras (mpi4py, onnx, PIL,
matplotlib) imported only inside the functions that use them.
"""

from __future__ import annotations

import ast
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

import tinyc

PACKAGE = Path(tinyc.__file__).parent
FORBIDDEN = ("tinyc.compiler", "tinyc.models", "tinyc.cli", "tinyc.export", "networkx", "onnx", "PIL")
# the runtime modules the compiler may use: the kernel table and what it is built from
KERNEL_TABLES = ("tinyc.runtime.kernels", "tinyc.runtime.fused_kernels", "tinyc.runtime.parallel_kernels",
                 "tinyc.runtime.rowops")
RUNTIME_MODULES = sorted(f"tinyc.runtime.{p.stem}" for p in (PACKAGE / "runtime").glob("*.py") if p.stem != "__init__")
COMPILER_FORBIDDEN = ("tinyc.models", "tinyc.cli", "tinyc.frontend",
                      *(m for m in RUNTIME_MODULES if m not in KERNEL_TABLES), "tinyc.runtime.datasets")
# optional extras (MPI, ONNX, images, plots): every module imports them only inside the functions that use them
LAZY = ("mpi4py", "onnx", "onnxruntime", "PIL", "matplotlib")

# the head of every script that runs a layer alone: a finder that makes BLOCKED unimportable
BLOCKER = textwrap.dedent(
    """
    import importlib, importlib.abc, pkgutil, sys
    import numpy as np

    BLOCKED = {blocked!r}

    class Block(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path=None, target=None):
            if any(name == b or name.startswith(b + ".") for b in BLOCKED):
                raise ImportError(f"forbidden import of {{name}} (the {layer} may not use it)")
            return None

    sys.meta_path.insert(0, Block())
    """
)
LEAKS = textwrap.dedent(
    """
    leaked = sorted(m for m in sys.modules if any(m == b or m.startswith(b + ".") for b in BLOCKED))
    assert not leaked, leaked
    print("imported", len(names), "modules")
    """
)

RUNTIME_ALONE = textwrap.dedent(
    """
    import tinyc as tc
    import tinyc.runtime
    names = sorted({"tinyc.runtime.kernels", "tinyc.runtime.init", "tinyc.runtime.reference"}
                   | {m.name for m in pkgutil.walk_packages(tinyc.runtime.__path__, "tinyc.runtime.")})
    for name in names:
        importlib.import_module(name)

    with tc.graph():
        x = tc.input("x", ("B", 3))
        w = tc.param("w", (3, 2), init=tc.init.ones())
        f = tc.function(tc.softmax(x @ w), [x])
    assert np.allclose(f(np.zeros((4, 3))), 0.5)
    """
)

COMPILER_ALONE = textwrap.dedent(
    """
    sys.modules["tinyc"] = type(sys)("tinyc")  # an empty parent package: tinyc/__init__ never runs
    sys.modules["tinyc"].__path__ = [PACKAGE]

    import tinyc.compiler
    names = sorted({m.name for m in pkgutil.walk_packages(tinyc.compiler.__path__, "tinyc.compiler.")})
    for name in names:
        importlib.import_module(name)

    from tinyc.compiler.driver import compile_graph
    from tinyc.ir.builder import new_graph
    from tinyc.ir import init
    from tinyc.ir.train import SGD, optimizer_spec
    with new_graph("g") as b:
        x = b.input("x", ("B", 3))
        w = b.param("w", (3, 2), init.ones())
        graph = b.graph({"loss": (x @ w).sum()})
    graph = graph.with_nodes(graph.nodes, meta={**graph.meta, "loss": "loss", "optimizer": optimizer_spec(SGD(0.1))})
    program, _ = compile_graph(graph)
    assert set(program.entries) == {"train_step"}
    """
)


def run_alone(layer: str, body: str, blocked: tuple[str, ...]) -> subprocess.CompletedProcess:
    """Run `body` in a fresh interpreter where `blocked` cannot be imported."""
    script = BLOCKER.format(blocked=blocked, layer=layer) + f"PACKAGE = {str(PACKAGE)!r}\n" + body + LEAKS
    return subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120, check=False)


def test_runtime_imports_and_runs_without_compiler_models_cli_networkx():
    proc = run_alone("runtime", RUNTIME_ALONE, FORBIDDEN + LAZY)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "imported" in proc.stdout


def test_compiler_imports_and_compiles_without_executor_models_cli_frontend():
    proc = run_alone("compiler", COMPILER_ALONE, COMPILER_FORBIDDEN)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "imported" in proc.stdout


def test_blocker_catches_a_forbidden_import():
    # the harness itself: a module importing networkx must fail under the finder
    proc = run_alone("runtime", RUNTIME_ALONE.replace("import tinyc as tc\n", "import networkx\n", 1), FORBIDDEN)
    assert proc.returncode != 0 and "forbidden import of networkx" in proc.stderr


# --------------------------------------------------------------------------- static scan


def imported_modules(path: Path, package: str) -> list[tuple[int, str]]:
    """(line, absolute module name) for every import in the file, relative ones resolved.

    `from pkg import name` yields both `pkg` and `pkg.name`, since `name` may be a submodule.
    """
    return _imports(ast.walk(ast.parse(path.read_text(), str(path))), package)


def _imports(nodes, package: str) -> list[tuple[int, str]]:
    found: list[tuple[int, str]] = []
    for node in nodes:
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                parts = package.split(".")
                base = ".".join(parts[: len(parts) - node.level + 1])
                module = f"{base}.{node.module}" if node.module else base
            else:
                module = node.module or ""
            if module != "tinyc":  # `from tinyc import x`: only x says what is used (a submodule or not)
                found.append((node.lineno, module))
            found += [(node.lineno, f"{module}.{alias.name}") for alias in node.names]
    return found


def _package_of(path: Path) -> str:
    """The package a file's relative imports start from (`tinyc/runtime/x.py` -> tinyc.runtime)."""
    return ".".join(path.relative_to(PACKAGE.parent).parts[:-1])


def _is_under(module: str, prefix: str) -> bool:
    return module == prefix or module.startswith(prefix + ".")


# which parts of tinyc each layer may import (never `tinyc` itself: that is the front-end), and
# which outside packages it may not
ALLOWED = {"runtime": ("tinyc.ir", "tinyc.runtime"), "ir": ("tinyc.ir",),
           "compiler": ("tinyc.ir", "tinyc.compiler", *KERNEL_TABLES),
           "export": ("tinyc.ir", "tinyc.export")}  # the exporter needs the IR, NumPy and onnx only
OUTSIDE = {"runtime": ("networkx",), "ir": ("networkx",), "compiler": (), "export": ("networkx",)}
FILES = [(layer, p) for layer in ALLOWED for p in sorted((PACKAGE / layer).glob("**/*.py"))]


def violations(path: Path, package: str, allowed: tuple[str, ...], outside: tuple[str, ...] = ("networkx",)) -> list[str]:
    bad = []
    for line, module in imported_modules(path, package):
        where = f"{package}/{path.name}:{line}"
        if any(_is_under(module, f) for f in outside):
            bad.append(f"{where} imports {module}")
        elif _is_under(module, "tinyc") and not any(_is_under(module, a) for a in allowed):
            bad.append(f"{where} imports {module} (only {', '.join(allowed)} allowed here)")
    return bad


@pytest.mark.parametrize("layer,path", FILES, ids=[str(p.relative_to(PACKAGE)) for _, p in FILES])
def test_no_forbidden_imports(layer, path):
    assert not violations(path, _package_of(path), ALLOWED[layer], OUTSIDE[layer])


def top_level_imports(path: Path, package: str) -> list[str]:
    """The modules a file imports when it is imported (module level, not inside functions)."""
    return [m for _, m in _imports(ast.parse(path.read_text(), str(path)).body, package)]


# every file of the package: the command line too (`tinyc run` joins an MPI job, mpi4py, only when a
# launcher started it; `tinyc plot` loads matplotlib when it draws), the models and the front-end
LAZY_FILES = [(p.relative_to(PACKAGE).parts[0], p) for p in sorted(PACKAGE.glob("**/*.py"))]


@pytest.mark.parametrize("layer,path", LAZY_FILES, ids=[str(p.relative_to(PACKAGE)) for _, p in LAZY_FILES])
def test_optional_extras_are_imported_lazily(layer, path):
    eager = [m for m in top_level_imports(path, _package_of(path)) if any(_is_under(m, x) for x in LAZY)]
    assert not eager, f"{path.name} imports {eager} at module level"


def test_scanner_resolves_relative_and_lazy_imports(tmp_path):
    pkg = tmp_path / "tinyc" / "runtime"
    pkg.mkdir(parents=True)
    src = pkg / "bad.py"
    src.write_text(
        "from ..compiler import autodiff\n\ndef f():\n    import networkx as nx\n    from . import kernels\n"
    )
    found = [m for _, m in imported_modules(src, "tinyc.runtime")]
    assert "tinyc.compiler.autodiff" in found and "networkx" in found and "tinyc.runtime.kernels" in found
    assert len(violations(src, "tinyc.runtime", ALLOWED["runtime"])) == 3  # compiler, compiler.autodiff, networkx
    src.write_text("from .. import frontend\nfrom ..ir import graph\n")
    assert [v.split(" imports ")[1] for v in violations(src, "tinyc.runtime", ALLOWED["runtime"])] == [
        "tinyc.frontend (only tinyc.ir, tinyc.runtime allowed here)"
    ]
    assert len(violations(src, "tinyc.ir", ALLOWED["ir"])) == 1  # the ir layer may not use the front-end either
    src.write_text("import tinyc\nfrom .. import __version__\nfrom ..runtime.kernels import KERNELS\n"
                   "from ..runtime.executor import pack\nimport networkx\n")
    bad = [v.split(" imports ")[1].split(" ")[0] for v in violations(src, "tinyc.compiler", ALLOWED["compiler"], ())]
    assert bad == ["tinyc", "tinyc.__version__", "tinyc.runtime.executor", "tinyc.runtime.executor.pack"]


# --------------------------------------------------------------------------- no import circle


def _module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def import_cycle(layer: str) -> list[str]:
    """One cycle among the top-level imports of the layer's modules, or []."""
    files = {_module_name(p): p for p in (PACKAGE / layer).glob("**/*.py")}
    # a module's own packages are already being imported when it runs (`from . import x` names one)
    edges = {m: sorted(n for n in set(top_level_imports(p, _package_of(p))) & set(files) if not _is_under(m, n))
             for m, p in files.items()}
    state: dict[str, int] = {}  # 1: on the current path, 2: done

    def visit(m: str, path: list[str]) -> list[str]:
        state[m] = 1
        for n in edges[m]:
            if state.get(n) == 1:
                return path[path.index(n):] + [m, n] if n in path else [m, n]
            if n not in state:
                cycle = visit(n, path + [m])
                if cycle:
                    return cycle
        state[m] = 2
        return []

    for m in sorted(files):
        if m not in state:
            cycle = visit(m, [])
            if cycle:
                return cycle
    return []


@pytest.mark.parametrize("layer", ["ir", "runtime", "compiler", ""], ids=["ir", "runtime", "compiler", "tinyc"])
def test_no_import_circle(layer):
    # "" is the whole package: no circle across layers either (cli, export, models, front-end)
    assert import_cycle(layer) == []


def test_cycle_finder_sees_a_circle(tmp_path, monkeypatch):
    pkg = tmp_path / "tinyc" / "ir"
    pkg.mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "a.py").write_text("from .b import x\n")
    (pkg / "b.py").write_text("def f():\n    from .a import y\n")  # lazy: no circle
    monkeypatch.setattr(sys.modules[__name__], "PACKAGE", tmp_path / "tinyc")
    assert import_cycle("ir") == []
    (pkg / "b.py").write_text("x = 1\nfrom .a import y\n")  # at the bottom, as ops.py once did
    assert sorted(import_cycle("ir")[:2]) == ["tinyc.ir.a", "tinyc.ir.b"]


def test_the_command_line_starts_without_matplotlib():
    # `tinyc plot` and `run --plot` import it when they draw, never at start-up (it is an optional extra)
    script = "import sys, tinyc.cli.main, tinyc.cli.plot_cmd; assert 'matplotlib' not in sys.modules; print('ok')"
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120, check=False)
    assert proc.returncode == 0 and proc.stdout.strip() == "ok", proc.stderr[-3000:]


def test_a_one_process_run_never_imports_mpi4py(tmp_path):
    # mpi4py (the `mpi` extra) is imported only in a job of more than one rank: a one-process
    # `tinyc run` and `tinyc eval`, started by no launcher, work where it cannot be imported
    from tests.runtime.test_trainer import write_model, write_synthetic_idx

    write_synthetic_idx(tmp_path / "data", n_train=64, n_test=32)
    write_model(tmp_path, hidden=8)
    body = textwrap.dedent(
        """
        from tinyc.cli.main import app
        for args in (["run", "mlp.py", "--data", "idx:data", "--epochs", "1", "--checkpoint", "c.safetensors"],
                     ["eval", "mlp.py", "--weights", "c.safetensors", "--data", "idx:data"]):
            try:
                app(args)
            except SystemExit as e:
                assert not e.code, (args, e.code)
        names = ["tinyc.cli.main"]
        """
    )
    script = BLOCKER.format(blocked=("mpi4py",), layer="one-process run") + body + LEAKS
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PMI_", "OMPI_", "MV2_"))}
    proc = subprocess.run([sys.executable, "-c", script], cwd=tmp_path, env=env, capture_output=True, text=True,
                          timeout=120, check=False)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "test accuracy" in proc.stdout and "imported" in proc.stdout
