"""The local cache of a data set: one .npz of uint8 images and int64 labels, written atomically."""

from __future__ import annotations

import hashlib
import io
import os
import zipfile

import numpy as np

from tinyc.ir.errors import DataError
from tinyc.ir.fileio import atomic_write

from .idx import IMAGE_SHAPE, NUM_CLASSES

CACHE_VERSION = 1
SPLITS = ("train", "test")


def cache_dir(override: str | None = None) -> str:
    """The cache folder: `override`, else $TINYC_CACHE, else ~/.cache/tinyc."""
    return override or os.environ.get("TINYC_CACHE") or os.path.join(os.path.expanduser("~"), ".cache", "tinyc")


def content_sha256(arrays: dict[str, np.ndarray]) -> str:
    """A digest of the arrays' names, dtypes, shapes and bytes, independent of the file's layout."""
    h = hashlib.sha256()
    for key in sorted(arrays):
        a = np.ascontiguousarray(arrays[key])
        h.update(f"{key}:{a.dtype.str}:{a.shape};".encode())
        h.update(memoryview(a).cast("B"))
    return h.hexdigest()


def _arrays(splits: dict[str, tuple[np.ndarray, np.ndarray]]) -> dict[str, np.ndarray]:
    return {f"{s}_{f}": a for s, pair in splits.items() for f, a in zip(("image", "label"), pair)}


def write_cache(path: str, splits: dict[str, tuple[np.ndarray, np.ndarray]]) -> None:
    """Write split -> (images uint8, labels int64) to path: temp file, fsync, rename (never half-written)."""
    arrays = _arrays(splits)
    buffer = io.BytesIO()
    # Uncompressed, so loading is a plain read: the cached load must stay well under a second.
    np.savez(buffer, version=np.array(CACHE_VERSION), sha256=np.array(content_sha256(arrays)), **arrays)
    atomic_write(path, buffer.getvalue())


def read_cache(path: str) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Read and validate a cache file; DataError saying what is wrong with it."""
    try:
        with np.load(path, allow_pickle=False) as z:
            arrays = {k: z[k] for k in z.files}
    except (OSError, ValueError, EOFError, zipfile.BadZipFile, KeyError) as e:
        raise DataError(f"{path}: damaged cache file: {e}") from None
    version = arrays.pop("version", None)
    stored = arrays.pop("sha256", None)
    if version is None or version.shape != () or int(version) != CACHE_VERSION:
        raise DataError(f"{path}: cache version {version} is not {CACHE_VERSION}")
    expected_keys = set(_arrays({s: (None, None) for s in SPLITS}))
    if set(arrays) != expected_keys:
        raise DataError(f"{path}: cache holds {sorted(arrays)}, expected {sorted(expected_keys)}")
    splits = {}
    for s in SPLITS:
        images, labels = arrays[f"{s}_image"], arrays[f"{s}_label"]
        if images.dtype != np.uint8 or images.ndim != 3 or images.shape[1:] != IMAGE_SHAPE:
            raise DataError(f"{path}: {s} images are {images.dtype}{images.shape}, expected uint8 (N, 28, 28)")
        if labels.dtype != np.int64 or labels.shape != images.shape[:1]:
            raise DataError(f"{path}: {s} labels are {labels.dtype}{labels.shape}, expected int64 ({len(images)},)")
        if len(labels) and (labels.min() < 0 or labels.max() >= NUM_CLASSES):
            raise DataError(f"{path}: {s} labels outside 0..{NUM_CLASSES - 1}")
        splits[s] = (images, labels)
    if stored is None or stored.shape != () or str(stored) != content_sha256(arrays):
        raise DataError(f"{path}: content does not match its stored sha256")
    return splits
