"""Opening audio files for PairCap: a read-only descriptor of a regular file, or an :class:`AudioInputError` that says
why not (missing, a broken link or link loop, unreadable, a folder, a FIFO, device or socket, empty).

Shipped as Hugging Face remote code (copied flat into a model repo): imports only the standard library and this
package. A FIFO, device or socket is refused before it is read, and the file is opened without blocking.
"""

from __future__ import annotations

import errno
import os
import stat

from .audio_arrays_paircap import AudioInputError

__all__ = ["open_regular_file"]

_FILE_KINDS = (
    (stat.S_ISFIFO, "a FIFO (named pipe)"),
    (stat.S_ISCHR, "a character device"),
    (stat.S_ISBLK, "a block device"),
    (stat.S_ISSOCK, "a socket"),
)


def _kind_problem(mode: int, path: str) -> str | None:
    """Why an entry of this ``st_mode`` is not read (None for a regular file)."""
    if stat.S_ISREG(mode):
        return None
    if stat.S_ISDIR(mode):
        if not os.access(path, os.R_OK | os.X_OK):
            return "is a directory (that cannot be listed: permission denied), not an audio file"
        return "is a directory, not an audio file"
    kind = next((what for test, what in _FILE_KINDS if test(mode)), f"a special file (mode {stat.S_IFMT(mode):o})")
    return f"is {kind}, not a regular file; not read"


def _stat_problem(path: str, exc: OSError) -> str:
    """Why ``os.stat(path)`` failed, for people: broken link, link loop, permission, missing."""
    if exc.errno == errno.ELOOP:
        return "symbolic link loop (too many levels of symbolic links)"
    if isinstance(exc, FileNotFoundError) or exc.errno == errno.ENOTDIR:
        if os.path.islink(path):
            try:
                target = os.readlink(path)
            except OSError:
                target = "?"
            return f"broken symbolic link (its target {target!r} does not exist)"
        return "file not found"
    if isinstance(exc, PermissionError):
        return "permission denied (a folder on the path cannot be searched)"
    return f"cannot access the file ({exc.strerror or exc})"


def open_regular_file(path: str, name: str) -> int:
    """A read-only descriptor of ``path``, which must be a regular file; else :class:`AudioInputError`.

    The kind of file is checked with ``os.stat`` before opening, and again on the open descriptor (``O_NONBLOCK``, so
    a FIFO swapped in between cannot block the open)."""
    try:
        info = os.stat(path)
    except OSError as exc:
        raise AudioInputError(name, _stat_problem(path, exc)) from None
    problem = _kind_problem(info.st_mode, path)
    if problem is not None:
        raise AudioInputError(name, problem)
    flags = os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_NOCTTY", 0) | getattr(os, "O_CLOEXEC", 0)
    try:
        fd = os.open(path, flags)
    except PermissionError:
        raise AudioInputError(name, "permission denied (the file is not readable)") from None
    except OSError as exc:
        raise AudioInputError(name, _stat_problem(path, exc)) from None
    try:
        info = os.fstat(fd)
        problem = _kind_problem(info.st_mode, path)
        if problem is None and info.st_size == 0:
            problem = "could not decode audio: the file is empty (0 bytes)"
    except OSError as exc:
        problem = f"cannot access the file ({exc.strerror or exc})"
    if problem is not None:
        os.close(fd)
        raise AudioInputError(name, problem)
    return fd
