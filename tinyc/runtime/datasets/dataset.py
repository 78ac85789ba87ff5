"""A data set in memory: named splits of named arrays, bound by name to a program's inputs."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass

import numpy as np

from tinyc.ir.errors import DataError
from tinyc.ir.preprocess import make_rule
from tinyc.ir.types import TensorType

from ..binding import check_feed
from ..feeds import prepare


class Split(Mapping):
    """One split (train or test): field name -> array, every array with the same number of records."""

    def __init__(self, dataset: str, name: str, arrays: dict[str, np.ndarray],
                 raw_rules: Mapping[str, Mapping] | None = None, origins: Mapping[str, str] | None = None) -> None:
        counts = {k: len(a) for k, a in arrays.items()}
        if len(set(counts.values())) > 1:
            raise DataError(f"data set {dataset} {name}: fields have different record counts {counts}")
        self.dataset = dataset
        self.name = name
        self._arrays = dict(arrays)
        # field -> what its raw integers mean (PIXELS for images), for programs that declare no preprocessing
        self.raw_rules = dict(raw_rules or {})
        # field -> where the user wrote it (`mine.npz: array 'train_image'`), named by errors about it
        self.origins = dict(origins or {})

    def __getitem__(self, field: str) -> np.ndarray:
        return self._arrays[field]

    def __iter__(self) -> Iterator[str]:
        return iter(self._arrays)

    def __len__(self) -> int:
        """The number of records."""
        return len(next(iter(self._arrays.values()))) if self._arrays else 0

    @property
    def fields(self) -> tuple[str, ...]:
        return tuple(self._arrays)

    def __repr__(self) -> str:
        fields = ", ".join(f"{k}: {a.dtype}{a.shape}" for k, a in self._arrays.items())
        return f"Split({self.dataset}/{self.name}, {len(self)} records, {fields})"


@dataclass(frozen=True)
class Dataset:
    """A named data set with `train` and `test` splits; `source` says where the arrays came from."""

    name: str
    source: str
    train: Split
    test: Split

    def __getitem__(self, split: str) -> Split:
        if split not in ("train", "test"):
            raise KeyError(split)
        return getattr(self, split)

    @property
    def fields(self) -> tuple[str, ...]:
        return self.train.fields


# What the raw uint8 pixels of an image data set mean: x / 255, in [0, 1]. A program that declares
# its own preprocessing on `tc.input` gets that instead; one that declares none gets this, as before.
PIXELS = make_rule(scale=1 / 255)


def pixel_split(dataset: str, name: str, images: np.ndarray, labels: np.ndarray) -> Split:
    """Raw uint8 images (converted when bound to a program's input) and int64 labels."""
    return Split(dataset, name, {"image": np.asarray(images, dtype=np.uint8), "label": labels.astype(np.int64, copy=False)},
                 raw_rules={"image": PIXELS})


def bind(split: Split, input_types: Mapping[str, TensorType],
         rules: Mapping[str, Mapping] | None = None) -> dict[str, np.ndarray]:
    """Fields bound by name to the program's inputs, checked, and converted (by each input's
    declared preprocessing `rules`, else the data set's own `raw_rules`) or cast to its dtype.

    The leading dim of every input is the batch (the data's record axis); the others are checked
    as any feed is (`tinyc.runtime.binding.check_feed`).
    """
    dataset = getattr(split, "dataset", "?")
    bindings: dict[str, int] = {}
    bound_by: dict[str, str] = {}
    bound = {}
    for name, ttype in input_types.items():
        if name not in split:
            raise DataError(
                f"program input {name!r} has no field in data set {dataset} (fields: {', '.join(split)})",
                hint="name the model's inputs after the data set's fields",
            )
        array = np.asarray(split[name])
        origin = getattr(split, "origins", {}).get(name)  # where the user wrote it, when the split knows
        check_feed(name, ttype, array, bindings, bound_by, f"{origin or f'data set {dataset}'}: ", records=True)
        try:
            array = prepare(name, array, ttype, (rules or {}).get(name, {}), getattr(split, "raw_rules", {}).get(name))
        except DataError as e:
            raise at_origin(e, split, name) from None
        bound[name] = array.astype(ttype.np_dtype, copy=False)
    return bound


def at_origin(error: DataError, split: Mapping, field: str) -> DataError:
    """`error`, led by where the user wrote `field` when the split knows it (an npz file's array)."""
    origin = getattr(split, "origins", {}).get(field)
    return DataError(f"{origin}: {error.message}", error.loc, error.hint) if origin else error


def epoch_order(n: int, rng: np.random.Generator | None = None) -> np.ndarray:
    """The record order of one epoch: a permutation of range(n) drawn from rng, or in order without one."""
    if rng is None:
        return np.arange(n, dtype=np.int64)
    return rng.permutation(n).astype(np.int64, copy=False)


def batches(
    arrays: Mapping[str, np.ndarray],
    batch_size: int,
    shuffle: bool = False,
    rng: np.random.Generator | None = None,
    drop_last: bool = False,
) -> Iterator[dict[str, np.ndarray]]:
    """One epoch of batches (name -> array slice), shuffled with rng when `shuffle`."""
    if batch_size < 1:
        raise DataError(f"batch size must be positive, got {batch_size}")
    n = len(next(iter(arrays.values()))) if arrays else 0
    if shuffle:
        order = epoch_order(n, rng if rng is not None else np.random.default_rng())
    else:
        order = None
    stop = n - n % batch_size if drop_last else n
    for start in range(0, stop, batch_size):
        if order is None:
            yield {k: a[start : start + batch_size] for k, a in arrays.items()}
        else:
            idx = order[start : start + batch_size]
            yield {k: a[idx] for k, a in arrays.items()}
