"""Crash-safe file writing, shared by the `.ir` codec, checkpoints, caches and metrics."""

from __future__ import annotations

import errno
import os
import tempfile


def atomic_write(path: str | os.PathLike, data: bytes) -> None:
    """Write `data` to `path` so that a crash at any moment leaves the old file or the new one:
    a temporary file in the same folder, flushed and fsynced, then renamed over `path`."""
    path = os.fspath(path)
    if os.path.isdir(path):  # else the rename fails naming our temporary file, not the user's path
        raise IsADirectoryError(errno.EISDIR, os.strerror(errno.EISDIR), path)
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=_temp_prefix(path), suffix=_TEMP_SUFFIX)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes it private; these are ordinary user files
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    try:  # make the rename itself durable
        dir_fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
    except OSError:
        pass


def remove_stale_temps(path: str | os.PathLike) -> None:
    """Delete the temporary files that a killed `atomic_write(path, ...)` left behind."""
    folder, prefix = os.path.dirname(os.path.abspath(path)), _temp_prefix(path)
    try:
        stale = [f for f in os.listdir(folder) if f.startswith(prefix) and f.endswith(_TEMP_SUFFIX)]
    except OSError:
        return
    for f in stale:
        try:
            os.unlink(os.path.join(folder, f))
        except OSError:
            pass


_TEMP_SUFFIX = ".tmp"


def _temp_prefix(path: str | os.PathLike) -> str:
    return f".{os.path.basename(os.fspath(path))}."


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask
