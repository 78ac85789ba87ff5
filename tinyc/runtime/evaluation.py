"""Evaluation: accuracy and confusion matrix of a program's `predict` entry on labelled data.

Shared by `tinyc run` (test and validation sets each epoch) and `tinyc eval`; also how data-set
fields are bound to an entry's inputs and which input holds the labels.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

from ..ir.errors import DataError
from ..ir.program import LR_INPUT, PREDICT_ENTRY, SHARE_INPUT, TRAIN_ENTRY, Program
from ..ir.train import EVAL_BATCH
from .datasets import bind
from .datasets.dataset import at_origin
from .executor import Executor
from .ranks import World


@dataclass
class EvalResult:
    accuracy: float
    confusion: np.ndarray  # [true class, predicted class] counts
    examples: int

    def per_class(self) -> list[tuple[int, int, int, float]]:
        """(class, examples, correct, accuracy) for each class that has examples."""
        rows = []
        for c in range(self.confusion.shape[0]):
            n = int(self.confusion[c].sum())
            if n:
                rows.append((c, n, int(self.confusion[c, c]), float(self.confusion[c, c]) / n))
        return rows


def data_inputs(program: Program, entry: str = TRAIN_ENTRY) -> dict:
    """The inputs of an entry that come from the data set (all but the learning rate), with types."""
    return {i.name: i.type for i in program.entry(entry).graph.inputs if i.name not in (LR_INPUT, SHARE_INPUT)}


def input_rules(program: Program) -> dict:
    """The declared preprocessing of each input, by name (inputs without one left out)."""
    return {i.name: i.preprocess for e in program.entries.values() for i in e.graph.inputs if i.preprocess}


def eval_data(program: Program, split: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """A split bound to the predict entry's inputs, plus its labels (under their input's name)."""
    types = data_inputs(program, PREDICT_ENTRY)
    label = label_name(program)
    train_types = data_inputs(program, TRAIN_ENTRY)
    if label in train_types:
        types[label] = train_types[label]
    return bind(split, types, input_rules(program))


def eval_fields(program: Program) -> list[str]:
    """What evaluation reads: the predict entry's inputs and the labels."""
    return [*data_inputs(program, PREDICT_ENTRY), label_name(program)]


def check_labels(program: Program, labels: np.ndarray, split: str) -> int:
    """The model's class count, after checking that every label is one of its classes."""
    g = program.entry(PREDICT_ENTRY).graph
    classes = g.types[dict(g.outputs)[logits_output(program)]].shape[-1]
    if len(labels) and (labels.min() < 0 or labels.max() >= classes):
        raise DataError(f"{split} labels run from {labels.min()} to {labels.max()}, "
                        f"but the model has {classes} classes (0 to {classes - 1})")
    return classes


def check_split_labels(program: Program, split: Mapping, labels: np.ndarray, what: str) -> None:
    """`check_labels`, its error led by where the user wrote the labels (an npz file's array)."""
    try:
        check_labels(program, labels, what)
    except DataError as e:
        raise at_origin(e, split, label_name(program)) from None


def label_name(program: Program) -> str:
    """The input that holds the class labels (the compiler records the label inputs)."""
    labels = list(program.meta.get("label_inputs", []))
    return labels[0] if len(labels) == 1 else "label"


def accuracy_on(
    executor: Executor, program: Program, data: Mapping[str, np.ndarray], batch_size: int = EVAL_BATCH
) -> EvalResult:
    """Accuracy and confusion matrix of the `predict` entry's logits against the labels."""
    label = label_name(program)
    if label not in data:
        raise DataError(f"evaluation needs the labels (field {label!r}) in the data set")
    labels = np.asarray(data[label])
    g = program.entry(PREDICT_ENTRY).graph
    logits_name = logits_output(program)
    classes = check_labels(program, labels, "evaluation")
    names = [i.name for i in g.inputs]
    confusion = np.zeros((classes, classes), np.int64)
    world = World(executor.comm)  # each rank its contiguous part; the counts are summed exactly
    first, last = world.part(len(labels))
    for start in range(first, last, batch_size):
        stop = min(start + batch_size, last)
        feeds = {name: data[name][start:stop] for name in names}
        pred = np.asarray(executor.predict(feeds)[logits_name]).argmax(-1)
        np.add.at(confusion, (labels[start:stop], pred), 1)
    confusion = world.sum(confusion)
    total = int(confusion.sum())
    return EvalResult(float(np.trace(confusion)) / max(total, 1), confusion, total)


def logits_output(program: Program) -> str:
    g = program.entry(PREDICT_ENTRY).graph
    names = [name for name, _ in g.outputs]
    if "logits" in names:
        return "logits"
    for name, value in g.outputs:
        t = g.types[value]
        if t.is_float and t.rank == 2:
            return name
    raise DataError(
        f"the predict entry has no logits output (it has {', '.join(names) or 'none'})",
        hint="return outputs={'logits': logits, ...} from the model's tc.Train",
    )
