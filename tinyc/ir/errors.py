"""The error classes of tinyc: one base class, and the user's line first in every message."""

from __future__ import annotations


class TinycError(Exception):
    """Base class of every error tinyc raises on purpose.

    `loc` is the user's `file:line` the error is about (or ""); `hint` an optional one-line fix.
    `str(err)` reads `model.py:15: matmul: inner dims differ: ...` followed by `hint: ...`.
    """

    def __init__(self, message: str, loc: str = "", hint: str = "") -> None:
        self.message = message
        self.loc = loc
        self.hint = hint
        super().__init__(self.__str__())

    def __str__(self) -> str:
        text = f"{self.loc}: {self.message}" if self.loc else self.message
        if self.hint:
            text += f"\nhint: {self.hint}"
        return text


class ShapeError(TinycError):
    """Shapes that do not fit an op."""


class IRError(TinycError):
    """A malformed graph: wrong dtype, unknown op or attribute, dangling value, cycle."""


class IRFormatError(TinycError):
    """A `.ir` file that cannot be loaded: truncated, damaged, foreign or from a newer tinyc."""


class CheckpointError(TinycError):
    """A checkpoint that is damaged or does not fit the program."""


class DataError(TinycError):
    """A data set that is missing, damaged or does not fit the program's inputs."""


class NumericsError(TinycError):
    """A non-finite value (NaN or Inf) appeared while running a program."""


class ModelFileError(TinycError):
    """A model file that cannot be imported or does not return `tc.Train`."""


class OutputError(TinycError):
    """An output path that cannot be written, or whose writing would destroy an input or earlier work."""


class ResourceError(TinycError):
    """A run that needs more than the machine has (memory)."""
