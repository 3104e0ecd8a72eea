"""Files and folders written whole or not at all, and file digests: what the knowledge-base writer, the KB jobs
(`datasets_scripts`) and the training checkpoints share.

- `write_atomic(path, write)`: one file, written to a temporary sibling and renamed onto `path`.
- `write_stream(path, produce)`: a file written from chunks through Python's checked writes, so a full disk raises even
  when the producer is C++ code that only prints its write errors (faiss's `write_index`).
- `replacing_folder(target)`: a new version of a folder, staged beside it, fsynced, then swapped in (old renamed aside,
  new renamed in, old removed); `target` is untouched by any failure. `folder_lock(target)` keeps a second writer
  out and finds an unwritable target before any work starts.
- `file_sha256`, `file_record`, `record_files`: the `{size, sha256}` records of KB metadata and checkpoint manifests.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import os
import shutil
import threading
from collections.abc import Callable, Collection, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from transformers.utils import logging

try:
    import fcntl
except ImportError:  # Windows: the lock is an exclusively created file instead of a flock
    fcntl = None

logger = logging.get_logger(__name__)

HASH_BLOCK = 4 * 2**20
_held: dict[Path, int] = {}  # folders this process holds the write lock of -> the holding thread


class FolderWriteError(OSError):
    """A folder that cannot be written (disk full, read-only, not a folder this writer replaces, or locked by another
    writer). Whatever it held before is unchanged. Its message is one line naming the folder."""

    def __str__(self) -> str:
        return self.strerror or super().__str__()


# ---- files --------------------------------------------------------------------------------------------------------
def write_atomic(path: str | os.PathLike, write: Callable[[Path], object]) -> None:
    """Call `write(temporary_path)`, then rename the temporary file onto `path`: `path` is either absent, the old
    file, or complete, whatever happens. A temporary file left by a killed run is overwritten by the next write of
    `path`. It keeps `path`'s suffix, for writers that choose the format by it (soundfile, `np.savez`)."""
    path = Path(path)
    temporary = path.with_name(f".{path.stem}.tmp{path.suffix}")
    try:
        write(temporary)
        os.replace(temporary, path)
    finally:
        temporary.unlink(missing_ok=True)


def write_stream(path: str | os.PathLike, produce: Callable[[Callable[[bytes], int]], object]) -> None:
    """Write `path` from `produce(write)`, which hands every chunk to `write`. The chunks go through Python's file
    writes, whose errors raise: the first one is re-raised here, whatever the producer made of it (e.g.
    `produce = lambda write: faiss.write_index(index, faiss.PyCallbackIOWriter(write))`)."""
    failures: list[OSError] = []
    with open(path, "wb") as handle:

        def write(chunk: bytes) -> int:
            try:
                return handle.write(chunk)
            except OSError as error:
                failures.append(error)
                raise

        try:
            produce(write)
        except Exception:
            if failures:
                failures[0].filename = failures[0].filename or os.fspath(path)
                raise failures[0] from None
            raise


def link_or_copy(source: str | os.PathLike, destination: str | os.PathLike) -> None:
    """Hard-link `source` at `destination` (no bytes copied; files are replaced, never edited, so the two names stay
    one file), or copy it where links are not possible (another file system)."""
    try:
        os.link(source, destination)
    except OSError as error:
        if error.errno in (errno.ENOSPC, errno.EDQUOT):
            raise
        shutil.copyfile(source, destination)


def link_folder(source: str | os.PathLike, destination: str | os.PathLike, skip: Collection[str] = ()) -> None:
    """`link_or_copy` every file under `source` to the same relative path under `destination`, but those whose
    relative POSIX names are in `skip`."""
    source, destination = Path(source), Path(destination)
    for path in sorted(source.rglob("*")):
        name = path.relative_to(source).as_posix()
        if path.is_file() and name not in skip:
            (destination / name).parent.mkdir(parents=True, exist_ok=True)
            link_or_copy(path, destination / name)


def sync_folder(folder: Path) -> None:
    """fsync every file under `folder` and the folders themselves, so a crash after a rename finds the bytes."""
    for path in sorted(folder.rglob("*"), reverse=True) + [folder]:
        if path.is_file() or (path.is_dir() and os.name == "posix"):  # Windows cannot open a folder to sync it
            descriptor = os.open(path, os.O_RDONLY)
            try:
                os.fsync(descriptor)
            finally:
                os.close(descriptor)


# ---- digests ------------------------------------------------------------------------------------------------------
def file_sha256(path: str | os.PathLike) -> str:
    """The sha256 of a file, read in blocks (memory stays one block)."""
    digest = hashlib.sha256()
    block = bytearray(HASH_BLOCK)
    view = memoryview(block)
    with open(path, "rb", buffering=0) as handle:
        while count := handle.readinto(block):
            digest.update(view[:count])
    return digest.hexdigest()


def file_record(path: str | os.PathLike) -> dict:
    """The `{size, sha256}` record of a file."""
    return {"size": os.stat(path).st_size, "sha256": file_sha256(path)}


def record_files(folder: str | os.PathLike, names: Sequence[str]) -> dict[str, dict]:
    """The records of the named files of `folder` (hashed in parallel: hashlib releases the GIL)."""
    folder = Path(folder)
    with ThreadPoolExecutor(max_workers=max(1, min(4, os.cpu_count() or 1, len(names)))) as pool:
        records = list(pool.map(lambda name: file_record(folder / name), names))
    return dict(zip(names, records, strict=True))


# ---- folders ------------------------------------------------------------------------------------------------------
def _sibling(target: Path, role: str) -> Path:
    return target.with_name(f".{target.name}.{role}")


def _reason(error: OSError) -> str:
    """One line for an OSError: its message and, where known, the file."""
    text = " ".join((error.strerror or str(error)).split())
    return f"{text}: {error.filename}" if error.filename else text


@contextlib.contextmanager
def folder_lock(target: str | os.PathLike, marker: str | None = None) -> Iterator[Path]:
    """
    Hold the write lock of folder `target` (the lock file `.NAME.lock` beside it, removed on release) and yield its
    resolved path. Re-entrant within a thread. Before anything else, a `FolderWriteError` says when it cannot be
    written: another writer holds it; the folder beside it cannot be created or written (read-only, no permission, a
    file in the path); `target` is not a folder, or (with `marker`) a non-empty folder without the file `marker` (not
    what this writer replaces). A new version left by a killed writer is removed, an old one set aside is restored.
    """
    shown, target = Path(target), Path(os.path.realpath(target))
    if _held.get(target) == threading.get_ident():
        yield target
        return
    descriptor = _acquire(shown, target)
    _held[target] = threading.get_ident()
    try:
        _clean_leftovers(shown, target)
        if target.exists() and not target.is_dir():
            raise FolderWriteError(errno.ENOTDIR, f"{shown}: exists and is not a folder")
        if marker and target.is_dir() and not (target / marker).is_file() and any(target.iterdir()):
            raise FolderWriteError(
                errno.EEXIST, f"{shown}: holds other files and no {marker}; choose a new or empty folder"
            )
        yield target
    finally:
        del _held[target]
        _release(target, descriptor)


def _acquire(shown: Path, target: Path) -> int:
    """Create the folder beside `target` and take its lock file `.NAME.lock`; the descriptor holds the lock."""
    lock = _sibling(target, "lock")
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        descriptor = _lock(lock)
    except FileExistsError as error:  # from mkdir: a file where a folder should be
        raise FolderWriteError(error.errno, f"{shown}: cannot be written ({error.filename} is not a folder)") from None
    except OSError as error:
        raise FolderWriteError(error.errno, f"{shown}: cannot be written ({_reason(error)})") from None
    if descriptor is None:
        holder = ""
        with contextlib.suppress(OSError, ValueError, IndexError):
            holder = f" (pid {int(lock.read_text().split()[0])})"
        stale = f", or remove {lock} if no writer runs" if fcntl is None else ""
        raise FolderWriteError(
            errno.EBUSY, f"{shown}: another process{holder} is writing it; wait until it is done{stale}"
        )
    return descriptor


def _lock(lock: Path) -> int | None:
    """Lock the file `lock` (created if need be; this pid written in it) and return its descriptor, or None when
    another process holds it."""
    while True:
        if fcntl is None:
            try:
                descriptor = os.open(lock, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o644)
            except FileExistsError:
                return None
        else:
            descriptor = os.open(lock, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(descriptor)
                return None
            try:
                current = os.stat(lock).st_ino
            except FileNotFoundError:
                current = None
            if current != os.fstat(descriptor).st_ino:  # removed by the writer that held it: lock the new one
                os.close(descriptor)
                continue
        os.ftruncate(descriptor, 0)
        os.write(descriptor, f"{os.getpid()}\n".encode())
        return descriptor


def _release(target: Path, descriptor: int) -> None:
    """Remove the lock file and let go of it: removed while still locked (flock), so no waiting writer locks a removed
    file; closed first where an open file cannot be removed (Windows)."""
    if fcntl is None:
        os.close(descriptor)
    with contextlib.suppress(FileNotFoundError):
        _sibling(target, "lock").unlink()
    if fcntl is not None:
        os.close(descriptor)


def _clean_leftovers(shown: Path, target: Path) -> None:
    """Remove what a killed writer of `target` left beside it; restore the old version if it died mid-swap."""
    staging, old = _sibling(target, "staging"), _sibling(target, "old")
    try:
        if old.is_dir() and not target.exists():
            os.rename(old, target)
            logger.warning(f"{shown}: restored the version a killed writer had set aside")
        for leftover in (staging, old):
            if leftover.is_dir():
                shutil.rmtree(leftover)
    except OSError as error:
        raise FolderWriteError(error.errno, f"{shown}: cannot clean up beside it ({_reason(error)})") from None


@contextlib.contextmanager
def replacing_folder(target: str | os.PathLike, marker: str | None = None) -> Iterator[Path]:
    """
    Write a new version of folder `target`: yields an empty staging folder beside it (`.NAME.staging`, under
    `folder_lock(target, marker)`). When the block ends without error, every file in it is fsynced and it replaces
    `target`: the old version is renamed aside, the new one renamed in, the old one removed. On any error the staging
    folder is removed and `target` is as it was; an OSError (a full disk, a read-only folder) becomes a
    `FolderWriteError` naming `target`. Callers check what they wrote (load it back) inside the block.
    """
    shown = Path(target)
    with folder_lock(target, marker) as target:
        staging, existed = _sibling(target, "staging"), target.exists()
        try:
            staging.mkdir()
            yield staging
            sync_folder(staging)
            _swap(staging, target)
        except FolderWriteError:
            raise
        except OSError as error:
            kept = "it is unchanged" if existed else "nothing was written"
            raise FolderWriteError(error.errno, f"{shown}: could not be written ({_reason(error)}); {kept}") from error
        finally:
            shutil.rmtree(staging, ignore_errors=True)


def _swap(staging: Path, target: Path) -> None:
    """Rename `target` aside and `staging` in (the old version back if that fails); then, past the point of no return,
    fsync the folder holding them and remove the old version, where a failure only warns."""
    old = _sibling(target, "old")
    if target.is_dir():
        shutil.copymode(target, staging)
        os.rename(target, old)
    try:
        os.rename(staging, target)
    except OSError:
        if old.is_dir():
            os.rename(old, target)
        raise
    try:
        if os.name == "posix":  # the renames themselves on disk
            descriptor = os.open(target.parent, os.O_RDONLY)
            try:
                os.fsync(descriptor)
            finally:
                os.close(descriptor)
        if old.is_dir():
            shutil.rmtree(old)
    except OSError as error:
        logger.warning(f"{target}: written, but its old version {old} may remain ({_reason(error)})")
