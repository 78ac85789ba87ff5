"""The IDX format of MNIST and Fashion-MNIST: a big-endian header, then raw uint8 records."""

from __future__ import annotations

import os
import struct
import zlib

import numpy as np

from tinyc.ir.errors import DataError

# magic number -> (what the file holds, rank); type code 0x08 = unsigned byte.
MAGICS: dict[int, tuple[str, int]] = {
    0x00000803: ("images", 3),
    0x00000801: ("labels", 1),
}
IMAGE_SHAPE = (28, 28)
NUM_CLASSES = 10

# split -> (images file, labels file), the standard names; each may also end in ".gz".
IDX_FILES: dict[str, tuple[str, str]] = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}


# deflate produces at most about 1032 bytes per input byte: a header claiming more lies
_MAX_DEFLATE_RATIO = 1032


def _read_bytes(path: str) -> bytes:
    """The file's content, decompressed when it is gzip (decided by its magic bytes, not its name).
    Decompression stops one byte past what the IDX header says the file holds, so a small `.gz`
    that inflates far past its header's size costs no memory (read_idx then reports the excess)."""
    try:
        with open(path, "rb") as f:
            data = f.read()
        if data[:2] != b"\x1f\x8b":
            return data
        inflate = zlib.decompressobj(16 + zlib.MAX_WBITS)  # gzip framing
        out = inflate.decompress(data, _HEADER_MAX)
        need = _claimed_size(out)
        if need is None:  # no IDX header: read_idx says what is wrong with these bytes
            return out
        if need > _MAX_DEFLATE_RATIO * len(data) + _HEADER_MAX:
            raise DataError(f"{path}: IDX header claims {need:,} bytes, more than a {len(data):,}-byte .gz can hold")
        while len(out) <= need and inflate.unconsumed_tail:
            out += inflate.decompress(inflate.unconsumed_tail, need + 1 - len(out))
        if len(out) < need and not inflate.eof:
            raise EOFError("compressed file ended before the end-of-stream marker was reached")
        return out
    except (OSError, EOFError, zlib.error) as e:
        raise DataError(f"{path}: cannot read IDX file: {e}") from None


_HEADER_MAX = 4 + 4 * max(rank for _, rank in MAGICS.values())


def _claimed_size(head: bytes) -> int | None:
    """Header plus records, as the IDX header of these first bytes says; None without a header."""
    if len(head) < 4:
        return None
    (magic,) = struct.unpack(">I", head[:4])
    if magic not in MAGICS:
        return None
    header = 4 + 4 * MAGICS[magic][1]
    if len(head) < header:
        return None
    return header + int(np.prod(struct.unpack(f">{MAGICS[magic][1]}I", head[4:header]), dtype=np.int64))


def read_idx(path: str, kind: str) -> np.ndarray:
    """Read one IDX file of `kind` ("images" or "labels") as a uint8 array; DataError naming the file."""
    data = _read_bytes(path)
    if len(data) < 4:
        raise DataError(f"{path}: not an IDX file: only {len(data)} bytes")
    (magic,) = struct.unpack(">I", data[:4])
    if MAGICS.get(magic, (None,))[0] != kind:
        expected = next(m for m, (k, _) in MAGICS.items() if k == kind)
        raise DataError(f"{path}: wrong magic number 0x{magic:08x} for IDX {kind} (expected 0x{expected:08x})")
    rank = MAGICS[magic][1]
    header = 4 + 4 * rank
    if len(data) < header:
        raise DataError(f"{path}: truncated IDX header ({len(data)} bytes, need {header})")
    dims = struct.unpack(f">{rank}I", data[4:header])
    expected_len = header + int(np.prod(dims, dtype=np.int64))
    if len(data) != expected_len:
        what = "truncated" if len(data) < expected_len else "has trailing bytes"
        raise DataError(f"{path}: {what}: {len(data)} bytes, dims {dims} need exactly {expected_len}")
    return np.frombuffer(data, dtype=np.uint8, offset=header).reshape(dims)


def find_idx_file(folder: str, name: str) -> str | None:
    """The path of `name` or `name.gz` in folder, or None."""
    for candidate in (name, name + ".gz"):
        path = os.path.join(folder, candidate)
        if os.path.isfile(path):
            return path
    return None


def idx_files_present(folder: str) -> dict[str, str | None]:
    """Standard IDX file name -> its path in folder (None where absent)."""
    names = [n for pair in IDX_FILES.values() for n in pair]
    return {n: find_idx_file(folder, n) for n in names}


def read_idx_split(images_path: str, labels_path: str) -> tuple[np.ndarray, np.ndarray]:
    """One split: images uint8 (N, 28, 28) and labels int64 (N,), checked against each other."""
    images = read_idx(images_path, "images")
    labels = read_idx(labels_path, "labels")
    if images.shape[1:] != IMAGE_SHAPE:
        raise DataError(f"{images_path}: images are {images.shape[1]}x{images.shape[2]}, expected 28x28")
    if len(images) != len(labels):
        raise DataError(f"{images_path} has {len(images)} images but {labels_path} has {len(labels)} labels")
    if len(labels) and labels.max() >= NUM_CLASSES:
        bad = int(np.argmax(labels >= NUM_CLASSES))
        raise DataError(f"{labels_path}: label {labels[bad]} at record {bad} is outside 0..{NUM_CLASSES - 1}")
    return images, labels.astype(np.int64)


def read_idx_folder(folder: str) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Both splits from a folder holding the four standard IDX files; DataError naming any missing one."""
    present = idx_files_present(folder)
    missing = [n for n, p in present.items() if p is None]
    if missing:
        try:  # a folder this user may not read hides its files: say that, not that they are missing
            os.listdir(folder)
        except OSError as e:
            raise DataError(f"{folder}: cannot read the folder ({e.strerror})") from None
        raise DataError(f"{folder}: missing IDX file(s) {', '.join(n + '[.gz]' for n in missing)}")
    return {split: read_idx_split(present[img], present[lab]) for split, (img, lab) in IDX_FILES.items()}
