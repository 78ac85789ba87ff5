"""Every file tinyc writes goes through here: checked up front, written crash-safe, never destructive.

- `check_output(path, inputs)` says before any work whether `path` can be written: not a folder,
  its folder exists and takes new files, not one of the command's `inputs` (same file, however
  named). Every command calls it for every output it will write (`-o`, `--checkpoint`,
  `--metrics-out`, ...), so the user's mistake costs no compile and no epoch.
- `atomic_write(path, data)` writes a regular file atomically (temporary file, fsync, rename); a
  symlink is written through (its target is replaced atomically, the link kept); a character
  device or FIFO (`/dev/null`, `>(cmd)`) is written into, as every Unix tool does, never replaced;
  an open descriptor's name (`/dev/stdout`, `/dev/fd/N`) is appended to, whatever it is open on.
- A writer holds an advisory lock on its temporary file, so `remove_stale_temps` only deletes the
  temporaries of writers that died; `hold_lock(path)` keeps a second run off the same checkpoint.

Errors name the user's path, never a temporary file.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import re
import stat
import tempfile
from collections.abc import Iterable, Iterator
from typing import IO, Any

from .errors import OutputError


def check_output(path: str | os.PathLike, inputs: Iterable[str | os.PathLike] = (), what: str = "") -> None:
    """OutputError unless `path` can be written without losing anything (see the module doc).

    `what` names the option in the message (`--checkpoint`), so the user knows which path it is.
    """
    shown = os.fspath(path)
    label = _label(what, shown)
    target = _target(shown)
    mode = _mode(target)
    if mode is not None and stat.S_ISDIR(mode):
        raise OutputError(f"cannot write {label}: it is a folder", hint="give a file name inside it")
    for source in inputs:
        if mode is not None and _same_file(target, os.fspath(source)):
            raise OutputError(f"refusing to write {label}: it is the input {os.fspath(source)}",
                              hint="write the output to another path")
    if _writes_into(target, mode):
        if mode is None:  # /dev/fd/9 with no descriptor 9 open
            raise OutputError(f"cannot write {label}: no such descriptor is open")
        if not os.access(target, os.W_OK):
            raise OutputError(f"cannot write {label}: permission denied")
        return
    if mode is not None and not stat.S_ISREG(mode):
        raise OutputError(f"cannot write {label}: not a regular file, device or pipe")
    folder = os.path.dirname(os.path.abspath(target))
    if not os.path.isdir(folder):
        raise OutputError(f"cannot write {label}: no folder {os.path.dirname(shown) or folder}")
    try:  # a real probe: os.access says yes to root on a read-only file system
        fd, probe = tempfile.mkstemp(dir=folder, prefix=_temp_prefix(target), suffix=_TEMP_SUFFIX)
        os.close(fd)
        os.unlink(probe)
    except OSError as e:
        raise OutputError(f"cannot write {label}: folder {folder} does not take new files ({e.strerror})") from None


def check_outputs(outputs: Iterable[tuple[str, str | os.PathLike | None]],
                  inputs: Iterable[str | os.PathLike] = ()) -> None:
    """`check_output` for each `(what, path)` of a command (None: not asked for), and no two
    outputs the same file."""
    inputs = [os.fspath(i) for i in inputs]
    seen: list[tuple[str, str]] = []
    for what, path in outputs:
        if path is None:
            continue
        path = os.fspath(path)
        check_output(path, inputs, what)
        target = _target(path)
        if _writes_into(target, _mode(target)):
            continue  # /dev/null may take every output
        for other_what, other in seen:
            if _target(os.path.abspath(path)) == _target(os.path.abspath(other)) or _same_file(path, other):
                raise OutputError(f"{_label(what, path)} is also {_label(other_what, other)}",
                                  hint="give each output its own path")
        seen.append((what, path))


def check_output_folder(path: str | os.PathLike, what: str = "") -> None:
    """OutputError unless `path` is a folder or can become one (files are then written inside it)."""
    shown = os.fspath(path)
    label = _label(what, shown)
    existing = os.path.abspath(shown)
    while not os.path.exists(existing):
        existing = os.path.dirname(existing)
    if not os.path.isdir(existing):
        raise OutputError(f"cannot write into {label}: {existing} is not a folder")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise OutputError(f"cannot write into {label}: folder {existing} is not writable")


def atomic_write(path: str | os.PathLike, data: bytes) -> None:
    """Write `data` to `path` so that a crash at any moment leaves the old file or the new one:
    a temporary file in the same folder, flushed and fsynced, then renamed over `path`. A symlink
    is followed (the link stays); a character device or FIFO is written into directly, and an
    open descriptor's name (/dev/stdout) appended to, even where it is open on a regular file."""
    shown = os.fspath(path)
    target = _target(shown)
    mode = _mode(target)
    try:
        if mode is not None and stat.S_ISDIR(mode):
            raise IsADirectoryError(errno.EISDIR, os.strerror(errno.EISDIR))
        if _writes_into(target, mode):
            # an open descriptor (/dev/stdout onto `>> log`) is appended to, never truncated
            with open_into(target, "ab" if _names_descriptor(target) else "wb") as f:
                f.write(data)
            return
        folder = os.path.dirname(os.path.abspath(target))
        os.makedirs(folder, exist_ok=True)
        _replace(target, folder, data)
    except OSError as e:  # name the user's path, not the link target or our temporary file
        raise type(e)(e.errno, e.strerror or str(e), shown) from None


def _replace(target: str, folder: str, data: bytes) -> None:
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=_temp_prefix(target), suffix=_TEMP_SUFFIX)
    try:
        with os.fdopen(fd, "wb") as f:
            fcntl.flock(f.fileno(), fcntl.LOCK_EX)  # live: remove_stale_temps leaves it alone
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
            os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes it private; these are ordinary user files
            os.replace(tmp, target)
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
    """Delete the temporary files that a killed `atomic_write(path, ...)` left behind; a live
    writer's (its lock is held) is kept."""
    target = _target(os.fspath(path))
    folder, prefix = os.path.dirname(os.path.abspath(target)), _temp_prefix(target)
    try:
        stale = [f for f in os.listdir(folder) if f.startswith(prefix) and f.endswith(_TEMP_SUFFIX)]
    except OSError:
        return
    for name in stale:
        full = os.path.join(folder, name)
        try:
            fd = os.open(full, os.O_RDONLY)
        except OSError:
            continue
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            os.unlink(full)
        except OSError:  # locked: a writer is still at it
            pass
        finally:
            os.close(fd)


@contextlib.contextmanager
def hold_lock(path: str | os.PathLike, what: str = "") -> Iterator[None]:
    """Hold an advisory lock on `path` (a hidden `.NAME.lock` beside it, since each write
    replaces the file itself) while the block runs; OutputError if another process holds it."""
    shown = os.fspath(path)
    target = _target(shown)
    mode = _mode(target)
    if _writes_into(target, mode):  # a device or pipe is never replaced: nothing to guard
        yield
        return
    lock = os.path.join(os.path.dirname(os.path.abspath(target)), f".{os.path.basename(target)}.lock")
    fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o666 & ~_umask())
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            owner = os.pread(fd, 32, 0).decode(errors="replace").strip()
            label = _label(what, shown)
            raise OutputError(f"{label} is in use by another run" + (f" (pid {owner})" if owner else ""),
                              hint="wait for it to finish, or choose another path") from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, str(os.getpid()).encode(), 0)
        yield
    finally:
        os.close(fd)  # releases the lock; the lock file stays (deleting it would race a newcomer)


def is_stream(path: str | os.PathLike) -> bool:
    """Whether writing `path` writes into a character device, a FIFO (`/dev/null`, `>(cmd)`) or
    an open descriptor's name (/dev/stdout, even onto a regular file), through a symlink or not:
    it is opened and written, never replaced, synced or read back."""
    target = _target(os.fspath(path))
    return _writes_into(target, _mode(target))


def _label(what: str, path: str) -> str:
    """How a message names an output: the option and the user's path (`--checkpoint run.st`)."""
    return f"{what} {path}" if what else path


def _target(path: str) -> str:
    """The file a write to `path` lands in: a symlink's final target, else `path` itself; an open
    descriptor's name (/dev/stdout, /dev/fd/N) is kept, since its target may be `pipe:[...]`."""
    if _names_descriptor(path):
        return path
    return os.path.realpath(path) if os.path.islink(path) else path


def open_into(path: str | os.PathLike, mode: str) -> IO[Any]:
    """Open an output that is written into (`is_stream`). A descriptor of this process named by
    its path (/dev/stdout, /dev/fd/N) is duplicated, not opened anew: a new opening of a regular
    file behind it (`> log`) has an offset of its own, and what the process prints through the
    descriptor itself would overwrite what was written through the new one."""
    fd = _own_descriptor(os.fspath(path))
    where = path if fd is None else os.dup(fd)
    return open(where, mode, encoding=None if "b" in mode else "utf-8")  # the caller closes it


def _names_descriptor(path: str) -> bool:
    """Whether `path` names an open file descriptor of this process (/dev/stdout, /dev/fd/1,
    /proc/self/fd/1), through symlinks or not."""
    return _descriptor_name(path) is not None


def _own_descriptor(path: str) -> int | None:
    """The number of this process's descriptor that `path` names (/dev/stdout: 1), else None."""
    name = _descriptor_name(path)
    if name is None:
        return None
    owner, fd = _DESCRIPTOR.match(name).groups()
    return int(fd) if owner in ("dev", "proc/self", f"proc/{os.getpid()}") else None


def _descriptor_name(path: str) -> str | None:
    """The /dev/fd/N-like name that `path` leads to through symlinks, if any."""
    p = os.path.abspath(path)
    for _ in range(40):  # the kernel's own limit on a chain of links
        if _DESCRIPTOR.match(p):
            return p
        if not os.path.islink(p):
            return None
        p = os.path.normpath(os.path.join(os.path.dirname(p), os.readlink(p)))
    return None


_DESCRIPTOR = re.compile(r"^/(dev|proc/self|proc/\d+)/fd/(\d+)$")


def _mode(path: str) -> int | None:
    try:
        return os.stat(path).st_mode
    except OSError:
        return None


def _writes_into(target: str, mode: int | None) -> bool:
    """A character device, a FIFO or an open descriptor is written into, never replaced by a
    regular file."""
    return _names_descriptor(target) or (mode is not None and (stat.S_ISCHR(mode) or stat.S_ISFIFO(mode)))


def _same_file(a: str, b: str) -> bool:
    try:
        return os.path.samefile(a, b)
    except OSError:
        return False


_TEMP_SUFFIX = ".tmp"


def _temp_prefix(path: str | os.PathLike) -> str:
    return f".{os.path.basename(os.fspath(path))}."


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask
