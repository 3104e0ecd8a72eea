"""What the resumable jobs (embedding, token refresh, refinement, mixtures, training neighbours) share: one digest of an
id list, and fast column reads. Files written whole or not at all: `modeling_paircap.file_io_paircap.write_atomic`."""

from __future__ import annotations

import hashlib
from collections.abc import Iterable

from datasets import Dataset


def ids_sha256(ids: Iterable[str]) -> str:
    """SHA-256 of a sequence of ids (order matters): what a job's saved state says it was run on."""
    digest = hashlib.sha256()
    for value in ids:
        digest.update(value.encode() + b"\0")
    return digest.hexdigest()


def column(dataset: Dataset, name: str) -> list:
    """One column as a Python list, read through Arrow (no row decoding, no audio decoded)."""
    return dataset.with_format("arrow")[name].to_pylist()


__all__ = ["column", "ids_sha256"]
