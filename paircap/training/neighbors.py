"""Retrieved training neighbours for retrieval-augmented fine-tuning (paper §3.2): per training pair, its nearest other
training pairs by CLAP audio→audio dense retrieval, computed once over the embedded training set and stored.

Usage::

    from datasets_scripts.embed import embed_pairs
    from paircap.training.neighbors import compute_training_neighbors, load_neighbors, save_neighbors

    embedded = embed_pairs(train_pairs, model, processor, "/data/train_embedded")
    save_neighbors("/data/train_neighbors.npz", embedded, compute_training_neighbors(embedded, num_neighbors=10))
    neighbors = load_neighbors("/data/train_neighbors.npz", embedded)   # every later run, every epoch

Row ``i`` of the array lists row indices into ``embedded``, nearest first (ties: lower row first), padded with -1. A
pair never retrieves itself nor any pair of the same clip (same ``audio_id``); text-only rows are neither queried
(their row is all -1) nor returned.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
from datasets import Dataset

from datasets_scripts.columns import column
from modeling_paircap.file_io_paircap import write_atomic
from modeling_paircap.index_paircap import PairCapIndex
from modeling_paircap.kb_format_paircap import embedding_matrix

__all__ = ["compute_training_neighbors", "load_neighbors", "save_neighbors"]


def _exclusions(pair_ids: list[str], audio_ids: list[str]) -> list[set[str]]:
    """Per query, the ids whose rows it must not retrieve: its own pair and every pair of its clip."""
    return [{pair_id, audio_id} - {""} for pair_id, audio_id in zip(pair_ids, audio_ids, strict=True)]


def compute_training_neighbors(
    embedded: Dataset, num_neighbors: int = 10, device: str | None = None, batch_size: int = 4096
) -> np.ndarray:
    """
    The `num_neighbors` nearest training pairs of every row of `embedded` (knowledge-base schema, from `embed_pairs`)
    by audio→audio retrieval with the stored CLAP audio embeddings: an `(N, num_neighbors)` int64 array of row indices
    into `embedded`, -1 where fewer exist. `device` picks the index's search (None: faiss; "cuda": exact matmul on
    the GPU); queries are searched `batch_size` at a time.
    """
    if num_neighbors < 0 or batch_size < 1:
        raise ValueError(f"need num_neighbors >= 0 and batch_size >= 1, got {num_neighbors} and {batch_size}")
    neighbors = np.full((len(embedded), num_neighbors), -1, dtype=np.int64)
    rows = np.flatnonzero(np.asarray(column(embedded, "has_audio"), dtype=bool))
    if num_neighbors == 0 or len(rows) < 2:
        return neighbors
    all_pair_ids, all_audio_ids = column(embedded, "pair_id"), column(embedded, "audio_id")
    pair_ids = [all_pair_ids[row] for row in rows]
    audio_ids = [all_audio_ids[row] or "" for row in rows]
    audio = embedding_matrix(embedded, "audio_embedding")[rows]
    text = embedding_matrix(embedded, "text_embedding")[rows]
    index = PairCapIndex.from_embeddings(audio, text, pair_ids, audio_ids, [""] * len(rows), device=device)
    exclusions = _exclusions(pair_ids, audio_ids)
    for start in range(0, len(rows), batch_size):
        end = min(start + batch_size, len(rows))
        hits = index.search(
            audio[start:end], mode="audio2audio", top_k=num_neighbors, exclude_ids=exclusions[start:end]
        )
        for position, query_hits in zip(range(start, end), hits, strict=True):
            neighbors[rows[position], : len(query_hits)] = rows[[hit.row for hit in query_hits]]
    return neighbors


def save_neighbors(path: str | os.PathLike, embedded: Dataset, neighbors: np.ndarray) -> Path:
    """Store `neighbors` with the pair ids of `embedded` (an .npz file, written atomically); returns the path."""
    path = Path(path)
    if neighbors.ndim != 2 or len(neighbors) != len(embedded):
        raise ValueError(f"neighbors has shape {neighbors.shape}; expected ({len(embedded)}, num_neighbors)")
    arrays = {"neighbors": neighbors.astype(np.int64), "pair_ids": np.asarray(column(embedded, "pair_id"))}

    def write(temporary: Path) -> None:
        with open(temporary, "wb") as handle:  # a handle: np.savez adds ".npz" to a name without it
            np.savez(handle, **arrays)

    write_atomic(path, write)
    return path


def load_neighbors(path: str | os.PathLike, embedded: Dataset) -> np.ndarray:
    """Load neighbours saved by `save_neighbors`, refusing (ValueError naming the file) ones made for other rows."""
    with np.load(path, allow_pickle=False) as stored:
        neighbors, pair_ids = stored["neighbors"], stored["pair_ids"]
    expected = column(embedded, "pair_id")
    if len(pair_ids) != len(expected) or pair_ids.tolist() != expected:
        raise ValueError(
            f"{path}: these neighbours were computed for another training set ({len(pair_ids)} pairs, now "
            f"{len(expected)}, or the pair ids / their order differ); recompute them with compute_training_neighbors"
        )
    return neighbors
