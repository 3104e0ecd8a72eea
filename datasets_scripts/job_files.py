"""What the resumable jobs (embedding, token refresh, refinement, mixtures, training neighbours) share: one digest of an
id list. Files written whole or not at all: `modeling_paircap.file_io_paircap.write_atomic`."""

from __future__ import annotations

import hashlib
from collections.abc import Iterable


def ids_sha256(ids: Iterable[str]) -> str:
    """SHA-256 of a sequence of ids (order matters): what a job's saved state says it was run on."""
    digest = hashlib.sha256()
    for value in ids:
        digest.update(value.encode() + b"\0")
    return digest.hexdigest()


__all__ = ["ids_sha256"]
