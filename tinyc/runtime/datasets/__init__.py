"""Data sets for the runtime: MNIST, Fashion-MNIST and any IDX folder, bound by name to program inputs."""

from .dataset import Dataset, Split, batches, bind, epoch_order
from .load import DATASETS, cache_path, load_dataset

__all__ = ["DATASETS", "Dataset", "Split", "batches", "bind", "cache_path", "epoch_order", "load_dataset"]
