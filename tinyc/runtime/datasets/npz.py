"""`--data npz:FILE`: a user's own data set as one NumPy `.npz` file.

Arrays are named after the program's inputs with a split prefix: `train_image`, `train_label`,
`test_image`, `test_label`. Both splits must hold the same fields, every array of a split the
same number of records, and only numbers (no pickled objects: the file is read with
`allow_pickle=False`, so loading it never runs code). Binding to the program then checks names,
shapes and dtypes, and labels against the model's classes, as for IDX files. Integer images
(uint8 pixels) are raw pixels, scaled by x / 255 unless the input declares its own rule.
"""

from __future__ import annotations

import os
import zipfile

import numpy as np

from tinyc.ir.errors import DataError

from .dataset import PIXELS, Dataset, Split

SPEC_PREFIX = "npz:"
SPLITS = ("train", "test")
NUMERIC = "biuf"  # bool, signed and unsigned integers, floats


def read_npz(spec: str) -> Dataset:
    """The data set in `npz:FILE`; a DataError naming the file and the array for anything amiss."""
    path = os.path.expanduser(spec[len(SPEC_PREFIX):])
    example = "train_image, train_label, test_image, test_label"
    if not os.path.isfile(path):
        what = "a folder, not a .npz file" if os.path.isdir(path) else "no such file"
        raise DataError(f"{spec}: {what}", hint=f"a .npz written by numpy.savez with arrays such as {example}")
    try:
        loaded = np.load(path, allow_pickle=False)
        if not isinstance(loaded, np.lib.npyio.NpzFile):  # a .npy: one array, no names to bind
            raise DataError(f"{path}: one array (a .npy file), not a .npz of named arrays",
                            hint=f"np.savez(path, {example.replace(', ', '=..., ')}=...)")
        with loaded as f:
            arrays = {name: _array(f, name, path) for name in f.files}
    except (OSError, ValueError, zipfile.BadZipFile, EOFError) as e:
        if isinstance(e, DataError):
            raise
        raise DataError(f"{path}: not a NumPy .npz file ({e})") from None
    splits: dict[str, dict[str, np.ndarray]] = {s: {} for s in SPLITS}
    for name, array in arrays.items():
        prefix, _, field = name.partition("_")
        if prefix not in splits or not field:
            raise DataError(f"{path}: array {name!r} is neither train_<input> nor test_<input>",
                            hint=f"name the arrays after the program's inputs: {example}")
        splits[prefix][field] = array
    for s in SPLITS:
        if not splits[s]:
            raise DataError(f"{path}: no {s}_* arrays (it has {', '.join(arrays) or 'none'})",
                            hint=f"both splits are needed: {example}")
    if set(splits["train"]) != set(splits["test"]):
        raise DataError(f"{path}: train has fields {', '.join(sorted(splits['train']))} "
                        f"but test has {', '.join(sorted(splits['test']))}")
    rules = {k: PIXELS for k, a in splits["train"].items() if a.dtype == np.uint8}
    parts = [Split(f"npz:{path}", s, splits[s], raw_rules=rules,
                   origins={k: f"{path}: array '{s}_{k}'" for k in splits[s]}) for s in SPLITS]
    for part in parts:
        if not len(part):
            raise DataError(f"{path}: the {part.name}_* arrays hold no records")
    return Dataset(spec, f"arrays in {path}", *parts)


def _array(f: np.lib.npyio.NpzFile, name: str, path: str) -> np.ndarray:
    try:
        a = f[name]
    except ValueError:  # an object array: reading it would unpickle
        raise DataError(f"{path}: array {name!r} holds Python objects; only numeric arrays are read") from None
    if a.dtype.kind not in NUMERIC:
        raise DataError(f"{path}: array {name!r} has dtype {a.dtype}; only numbers (bool, int, float) are read")
    if a.ndim == 0:
        raise DataError(f"{path}: array {name!r} is a scalar; each array needs one record per row")
    if a.dtype.kind == "f" and not np.isfinite(a).all():  # training on it would only say `loss nan`
        raise DataError(f"{path}: array {name!r} holds NaN or infinite values")
    return a
