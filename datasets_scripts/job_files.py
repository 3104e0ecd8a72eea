"""What the resumable jobs (embedding, token refresh, refinement, mixtures, training neighbours) share: files written
whole or not at all, and one digest of an id list."""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable, Iterable
from pathlib import Path


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


def ids_sha256(ids: Iterable[str]) -> str:
    """SHA-256 of a sequence of ids (order matters): what a job's saved state says it was run on."""
    digest = hashlib.sha256()
    for value in ids:
        digest.update(value.encode() + b"\0")
    return digest.hexdigest()


__all__ = ["ids_sha256", "write_atomic"]
