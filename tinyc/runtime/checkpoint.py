"""Crash-safe checkpoints in safetensors: parameters, optimizer state and training progress.

A weights file is the same format holding only the trained parameters (no optimizer state, no
progress), named as in the program, with metadata naming the program they belong to; any
safetensors reader opens it.

A checkpoint is written to a temporary file in the same folder, flushed, fsynced and renamed
over the old one, so a reader sees either the old file or the new one, never a mix. It is sealed
whole: a SHA-256 over every metadata entry (epoch, step, RNG state, history, settings, ...) and
every tensor's name, dtype, shape and bytes is stored beside them, so a damaged or edited file is
refused rather than used (version 1 sealed only the tensors, and is refused too).
"""

from __future__ import annotations

import hashlib
import json
import os
import struct
from collections.abc import Collection, Mapping
from typing import Any

import numpy as np

from ..ir.errors import CheckpointError
from ..ir.fileio import atomic_write

FORMAT = "tinyc.checkpoint"
VERSION = 2  # 2: the seal covers the metadata too
SEAL = "sha256"  # the metadata entry holding the seal
_MAX_HEADER = 64 << 20  # a larger JSON header is damage, not a checkpoint


def _seal(metadata: Mapping[str, str], tensors: Mapping[str, np.ndarray]) -> str:
    """SHA-256 of every metadata entry but the seal itself, then of every tensor."""
    h = hashlib.sha256()
    fields = {k: v for k, v in metadata.items() if k != SEAL}
    h.update(json.dumps(fields, sort_keys=True).encode())
    for name in sorted(tensors):
        arr = tensors[name]
        h.update(f"{name}:{arr.dtype.str}:{arr.shape}".encode())
        h.update(arr.tobytes())
    return h.hexdigest()


def encode_checkpoint(tensors: Mapping[str, np.ndarray], meta: Mapping[str, Any]) -> bytes:
    """safetensors bytes of `tensors` with `meta` (JSON-able) and a content digest."""
    from safetensors.numpy import save

    # safetensors' NumPy writer has saved non-contiguous arrays with the wrong layout in some
    # versions: always hand it contiguous copies (reshaped back: ascontiguousarray makes 0-d arrays 1-d).
    arrays = {name: np.ascontiguousarray(a).reshape(np.shape(a)) for name, a in tensors.items()}
    metadata = {
        "format": FORMAT,
        "version": str(VERSION),
        "meta": json.dumps(meta, sort_keys=True),
    }
    metadata[SEAL] = _seal(metadata, arrays)
    return save(arrays, metadata=metadata)


def save_checkpoint(path: str, tensors: Mapping[str, np.ndarray], meta: Mapping[str, Any]) -> None:
    atomic_write(path, encode_checkpoint(tensors, meta))


def is_checkpoint(path: str) -> bool:
    """Whether `path` holds a tinyc checkpoint by its header (its tensors are not read)."""
    try:
        with open(path, "rb") as f:
            head = f.read(8)
            _metadata(head + f.read(_header_len(head, os.fstat(f.fileno()).st_size, path)), path)
        return True
    except (OSError, CheckpointError):
        return False


def _header_len(head: bytes, size: int, source: str) -> int:
    """The JSON header's length from a safetensors file's first 8 bytes (`size`: the file's)."""
    if len(head) < 8:
        raise CheckpointError(f"{source}: not a checkpoint (file is {len(head)} bytes)")
    (header_len,) = struct.unpack("<Q", head[:8])
    if header_len > min(_MAX_HEADER, size - 8):
        raise CheckpointError(f"{source}: damaged or truncated checkpoint (bad header length)")
    return header_len


def _metadata(data: bytes, source: str) -> dict[str, Any]:
    """The tinyc metadata in the header of safetensors bytes `data` (the header at least);
    CheckpointError if damaged or foreign."""
    try:
        header = json.loads(data[8 : 8 + _header_len(data, len(data), source)])
        metadata = header.get("__metadata__") or {}
    except (ValueError, AttributeError):
        raise CheckpointError(f"{source}: damaged checkpoint (header is not valid JSON)") from None
    if not isinstance(metadata, dict) or metadata.get("format") != FORMAT:
        raise CheckpointError(f"{source}: not a tinyc checkpoint (safetensors file without tinyc metadata)")
    return metadata


def decode_checkpoint(data: bytes, source: str = "checkpoint") -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """(tensors, meta) from safetensors bytes; CheckpointError if damaged or foreign."""
    from safetensors.numpy import load

    metadata = _metadata(data, source)
    version = str(metadata.get("version", ""))
    if not version.isdecimal() or int(version) > VERSION:
        raise CheckpointError(f"{source}: checkpoint version {metadata.get('version')} is newer than this tinyc reads")
    if int(version) < VERSION:
        raise CheckpointError(f"{source}: checkpoint version {version} is not sealed whole (its metadata could be "
                              "edited unnoticed)", hint="train again to write a version 2 checkpoint")
    try:
        tensors = load(bytes(data))
    except Exception as e:  # noqa: BLE001 - safetensors raises its own error types for damaged files
        raise CheckpointError(f"{source}: damaged or truncated checkpoint ({str(e).splitlines()[0][:120]})") from None
    if not all(isinstance(v, str) for v in metadata.values()) or _seal(metadata, tensors) != metadata.get(SEAL):
        raise CheckpointError(f"{source}: checkpoint contents or metadata do not match their seal (damaged or edited file)")
    try:
        meta = json.loads(metadata.get("meta", "{}"))
    except ValueError:
        raise CheckpointError(f"{source}: damaged checkpoint metadata") from None
    return tensors, meta


def load_checkpoint(path: str) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError as e:
        raise CheckpointError(f"{path}: cannot read checkpoint: {e.strerror}") from None
    return decode_checkpoint(data, source=path)


def check_compatible(tensors: Mapping[str, np.ndarray], expected: Mapping[str, tuple[tuple[int, ...], np.dtype]],
                     source: str = "checkpoint") -> None:
    """Refuse a checkpoint whose tensors do not match the program: name the parameter and both shapes."""
    # a shape that differs says most about what went wrong: report it before missing or extra names
    for name, (shape, dtype) in expected.items():
        arr = tensors.get(name)
        if arr is not None and (tuple(arr.shape) != tuple(shape) or arr.dtype != dtype):
            raise CheckpointError(
                f"{source}: parameter {name!r} is {arr.dtype}{list(arr.shape)} in the checkpoint"
                f" but {np.dtype(dtype)}{list(shape)} in the program"
            )
    missing = sorted(set(expected) - set(tensors))
    if missing:
        raise CheckpointError(f"{source}: no tensor for parameter {missing[0]!r}"
                              + (f" (and {len(missing) - 1} more)" if len(missing) > 1 else ""),
                              hint="was it saved from another model?")
    extra = sorted(set(tensors) - set(expected))
    if extra:
        raise CheckpointError(f"{source}: tensor {extra[0]!r} is not a parameter of this program",
                              hint="was it saved from another model?")


WEIGHTS_KIND = "weights"  # meta["kind"] of a weights-only file


def weights_signature(expected: Mapping[str, tuple[tuple[int, ...], np.dtype]]) -> str:
    """A short digest of the parameters' names, dtypes and shapes: which programs weights fit."""
    h = hashlib.sha256()
    for name in sorted(expected):
        shape, dtype = expected[name]
        h.update(f"{name}:{np.dtype(dtype).str}:{list(shape)};".encode())
    return h.hexdigest()[:16]


def save_weights(path: str, weights: Mapping[str, np.ndarray], model: str = "") -> None:
    """Write trained parameters only, with metadata naming the program (its model and parameter signature)."""
    signature = weights_signature({k: (a.shape, a.dtype) for k, a in weights.items()})
    save_checkpoint(path, weights, {"kind": WEIGHTS_KIND, "model": model, "params": signature,
                                    "count": len(weights)})


def read_weights(path: str, expected: Mapping[str, tuple[tuple[int, ...], np.dtype]],
                 ignore: Collection[str] = ()) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """The tensors of `expected` from a checkpoint or weights file, checked against it (the names in
    `ignore`, the optimizer state, are skipped); a misfit names the parameter and both shapes."""
    tensors, meta = load_checkpoint(path)
    if isinstance(meta.get("weights"), list):  # a training checkpoint says which of its tensors are weights
        ignore = set(ignore) | (set(tensors) - set(meta["weights"]))
    tensors = {k: v for k, v in tensors.items() if k not in ignore}
    check_compatible(tensors, expected, source=path)
    return tensors, meta
