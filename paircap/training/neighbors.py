"""Retrieved training neighbours for retrieval-augmented fine-tuning (paper §3.2): per training pair, its nearest other
training pairs by CLAP audio→audio dense retrieval (or `pair2pair`: W S_audio + (1 - W) S_text with the pair's own
caption embedding), computed once over the embedded training set and stored with the settings that shaped them.

Usage::

    from datasets_scripts.embed import embed_pairs
    from paircap.training.neighbors import compute_training_neighbors, load_neighbors, save_neighbors

    embedded = embed_pairs(train_pairs, model, processor, "/data/train_embedded")
    settings = neighbor_settings(num_neighbors=10)
    save_neighbors("/data/train_neighbors.npz", embedded, compute_training_neighbors(embedded, 10), settings)
    neighbors = load_neighbors("/data/train_neighbors.npz", embedded, settings)   # every later run, every epoch

Row ``i`` of the array lists row indices into ``embedded``, nearest first (ties: lower row first), padded with -1. A
pair never retrieves itself nor any pair that shares its audio: the same clip (``audio_id``, compared normalised, so
takes of one ESC-50 recording are one clip) or, with ``clip_groups``, a clip whose group (e.g. a mixture's components)
meets its own (`paircap.training.clip_groups`). Text-only rows are neither queried (their row is all -1) nor returned.
"""

from __future__ import annotations

import json
import os
from collections.abc import Collection, Mapping
from pathlib import Path

import numpy as np
from datasets import Dataset

from datasets_scripts.columns import column
from modeling_paircap.file_io_paircap import write_atomic
from modeling_paircap.index_paircap import PairCapIndex
from modeling_paircap.kb_format_paircap import embedding_matrix
from paircap.training.clip_groups import clip_groups_digest, shared_audio_exclusions
from paircap.training.config import NEIGHBOR_MODES

__all__ = ["compute_training_neighbors", "load_neighbors", "neighbor_settings", "save_neighbors", "stored_settings"]


def neighbor_settings(
    num_neighbors: int = 10,
    mode: str = "audio2audio",
    fusion_weight: float = 0.5,
    clip_groups: Mapping[str, Collection[str]] | None = None,
) -> dict:
    """The settings that shape a neighbour table (the clip groups as their digest), stored with it and checked."""
    return {
        "num_neighbors": int(num_neighbors),
        "mode": mode,
        "fusion_weight": float(fusion_weight) if mode == "pair2pair" else None,
        "clip_groups": clip_groups_digest(clip_groups),
    }


def compute_training_neighbors(
    embedded: Dataset,
    num_neighbors: int = 10,
    device: str | None = None,
    batch_size: int = 4096,
    *,
    mode: str = "audio2audio",
    fusion_weight: float = 0.5,
    clip_groups: Mapping[str, Collection[str]] | None = None,
) -> np.ndarray:
    """
    The `num_neighbors` nearest training pairs of every row of `embedded` (knowledge-base schema, from `embed_pairs`):
    an `(N, num_neighbors)` int64 array of row indices into `embedded`, -1 where fewer exist.

    `mode` "audio2audio" ranks by the stored CLAP audio embeddings; "pair2pair" by `fusion_weight` x S_audio +
    (1 - `fusion_weight`) x S_text with the row's own stored audio and caption embeddings (neighbours that share an
    event with the pair's caption rank up). `clip_groups` maps an audio id to the clip ids its audio contains; rows
    whose clips meet are never neighbours. `device` picks the index's search (None: faiss; "cuda": exact matmul on
    the GPU); queries are searched `batch_size` at a time.
    """
    if num_neighbors < 0 or batch_size < 1:
        raise ValueError(f"need num_neighbors >= 0 and batch_size >= 1, got {num_neighbors} and {batch_size}")
    if mode not in NEIGHBOR_MODES or not 0 <= fusion_weight <= 1:
        raise ValueError(
            f"mode must be one of {NEIGHBOR_MODES} and fusion_weight in [0, 1], got {mode!r}, {fusion_weight}"
        )
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
    shared = shared_audio_exclusions(audio_ids, clip_groups)
    exclusions = [{pair_id, *clips} for pair_id, clips in zip(pair_ids, shared, strict=True)]
    for start in range(0, len(rows), batch_size):
        end = min(start + batch_size, len(rows))
        hits = index.search(
            audio[start:end],
            text[start:end],
            mode=mode,
            fusion_weight=fusion_weight,
            top_k=num_neighbors,
            exclude_ids=exclusions[start:end],
        )
        for position, query_hits in zip(range(start, end), hits, strict=True):
            neighbors[rows[position], : len(query_hits)] = rows[[hit.row for hit in query_hits]]
    return neighbors


def save_neighbors(path: str | os.PathLike, embedded: Dataset, neighbors: np.ndarray, settings: Mapping) -> Path:
    """Store `neighbors` with the pair ids of `embedded` and the `settings` that shaped them (`neighbor_settings`)
    in an .npz file, written atomically; returns the path."""
    path = Path(path)
    if neighbors.ndim != 2 or len(neighbors) != len(embedded):
        raise ValueError(f"neighbors has shape {neighbors.shape}; expected ({len(embedded)}, num_neighbors)")
    arrays = {
        "neighbors": neighbors.astype(np.int64),
        "pair_ids": np.asarray(column(embedded, "pair_id")),
        "settings": np.asarray(json.dumps(dict(settings), sort_keys=True)),
    }

    def write(temporary: Path) -> None:
        with open(temporary, "wb") as handle:  # a handle: np.savez adds ".npz" to a name without it
            np.savez(handle, **arrays)

    write_atomic(path, write)
    return path


def stored_settings(path: str | os.PathLike) -> dict | None:
    """The settings a neighbour file was computed with; None when there is no file or it records none."""
    if not Path(path).is_file():
        return None
    with np.load(path, allow_pickle=False) as stored:
        return _read_settings(stored)


def _read_settings(stored) -> dict | None:
    return json.loads(str(stored["settings"])) if "settings" in stored.files else None


def load_neighbors(path: str | os.PathLike, embedded: Dataset, settings: Mapping) -> np.ndarray:
    """Load neighbours saved by `save_neighbors`, refusing (ValueError naming the file) ones made for other rows or
    with other `settings`."""
    with np.load(path, allow_pickle=False) as stored:
        neighbors, pair_ids, found = stored["neighbors"], stored["pair_ids"], _read_settings(stored)
    wanted = json.loads(json.dumps(dict(settings)))  # as stored: tuples become lists
    if found != wanted:
        raise ValueError(
            f"{path}: these neighbours were computed with other settings ({found}, now {wanted}); recompute them "
            "with compute_training_neighbors"
        )
    expected = column(embedded, "pair_id")
    if len(pair_ids) != len(expected) or pair_ids.tolist() != expected:
        raise ValueError(
            f"{path}: these neighbours were computed for another training set ({len(pair_ids)} pairs, now "
            f"{len(expected)}, or the pair ids / their order differ); recompute them with compute_training_neighbors"
        )
    return neighbors
