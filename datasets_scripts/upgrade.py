"""Convert a format-1 knowledge base (tokens stored in every caption row, one encoder fingerprint) to format 2 in place
(`paircap kb upgrade --kb KB --model RELEASE`).

Format 1 recorded one fingerprint of the whole CLAP. The release given must be the one that embedded the KB (checked
by recomputing that fingerprint); its CLAP becomes the KB's retrieval fingerprint and its CLAP audio tower, which made
the format-1 tokens, the token fingerprint. Each clip's tokens are kept once (from its first row). Format 1 did not
record where the audio lives: the clip table's locations stay empty, so `tokens` cannot refresh an upgraded KB (rebuild
it for that). The format-2 KB is written whole or not at all (`write_knowledge_base`), under the folder's write lock.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

import numpy as np
import pyarrow as pa
from datasets import load_dataset

from modeling_paircap.faiss_file_paircap import read_index
from modeling_paircap.file_io_paircap import folder_lock
from modeling_paircap.fingerprints_paircap import weights_fingerprint
from modeling_paircap.kb_format_paircap import (
    DATA_DIR,
    INDEX_FILE,
    KB_FORMAT_VERSION,
    METADATA_FILE,
    KnowledgeBaseError,
    KnowledgeBaseMetadata,
    clip_schema,
)
from modeling_paircap.knowledge_base_paircap import write_knowledge_base
from modeling_paircap.tokens_paircap import TOKENS_FILE, ClipTokenStore, write_clip_tokens


def legacy_fingerprint(model) -> str:
    """The format-1 `encoder_fingerprint`: the token settings and the whole CLAP."""
    settings = {
        "audio_pool_stride": model.config.audio_pool_stride,
        "audio_window_seconds": model.config.audio_window_seconds,
        "max_audio_windows": model.config.max_audio_windows,
    }
    return weights_fingerprint(model.clap, settings)


def upgrade_knowledge_base(folder: str | os.PathLike, model) -> KnowledgeBaseMetadata:
    """Rewrite the format-1 KB in `folder` as format 2, checked against the `model` that embedded it."""
    folder = Path(folder)
    if not (folder / METADATA_FILE).is_file():  # refused before a lock file is made beside it
        raise KnowledgeBaseError(f"{folder}: no {METADATA_FILE}; not a knowledge base folder")
    with folder_lock(folder, METADATA_FILE), tempfile.TemporaryDirectory(dir=folder.parent, prefix=".upgrade-") as work:
        return _upgrade(folder, model, Path(work))


def _upgrade(folder: Path, model, work: Path) -> KnowledgeBaseMetadata:
    """The upgrade under the lock; the new token file is made in `work`, then linked into the new KB folder."""
    old = json.loads((folder / METADATA_FILE).read_text())
    if old.get("format_version") == KB_FORMAT_VERSION:
        raise KnowledgeBaseError(f"{folder}: already format {KB_FORMAT_VERSION}")
    if old.get("encoder_fingerprint") != legacy_fingerprint(model):
        raise KnowledgeBaseError(
            f"{folder}: embedded by another encoder than this release's; pass the release that built it"
        )
    rows = load_dataset(
        "parquet", data_files=sorted(str(p) for p in (folder / DATA_DIR).glob("*.parquet")), split="train"
    )
    audio_ids = rows["audio_id"]
    has_audio = rows["has_audio"]
    first_row: dict[str, int] = {}
    for row, (audio_id, audio) in enumerate(zip(audio_ids, has_audio, strict=True)):
        if audio:
            first_row.setdefault(audio_id, row)
    clip_of = {audio_id: clip for clip, audio_id in enumerate(first_row)}
    clip_index = [clip_of[a] if audio else -1 for a, audio in zip(audio_ids, has_audio, strict=True)]
    firsts = rows.select(list(first_row.values()))
    clips = pa.table(
        {
            "audio_id": list(first_row),
            "is_long": firsts["is_long"],
            "duration": firsts["duration"],
            "audio_root": [""] * len(first_row),
            "audio_path": pa.nulls(len(first_row), pa.string()),
        },
        schema=clip_schema(),
    )
    token_dim = int(old["token_dim"])
    tokens = [
        np.asarray(t, dtype=np.float16).reshape(-1, token_dim) for t in firsts.with_format("numpy")["audio_tokens"]
    ]
    token_settings = {
        "audio_pool_stride": model.config.audio_pool_stride,
        "audio_window_seconds": model.config.audio_window_seconds,
        "max_audio_windows": model.config.max_audio_windows,
    }
    token_fingerprint = weights_fingerprint(model.clap.audio_model, token_settings)
    write_clip_tokens(work / TOKENS_FILE, [len(t) for t in tokens], tokens, token_dim, token_fingerprint)
    rows = rows.remove_columns(["audio_tokens", "is_long"]).add_column("clip_index", clip_index)
    metadata = KnowledgeBaseMetadata(
        retrieval_fingerprint=model.retrieval_fingerprint(),
        token_fingerprint=token_fingerprint,
        audio_dim=old["audio_dim"],
        text_dim=old["text_dim"],
        token_dim=token_dim,
        audio_tokens_per_window=old["audio_tokens_per_window"],
        num_pairs=len(rows),
        num_clips=len(first_row),
        num_text_only=old.get("num_text_only", 0),
        index_factory=old.get("index_factory", "Flat"),
        index_recall_at_10=old.get("index_recall_at_10"),
        sources=old.get("sources", {}),
        recipe=old.get("recipe", {}),
    )
    index = read_index(folder / INDEX_FILE, metadata.num_pairs, metadata.audio_dim + metadata.text_dim)
    tokens_store = ClipTokenStore(work / TOKENS_FILE, len(first_row))
    write_knowledge_base(folder, rows, clips, metadata, index=index, tokens=tokens_store)
    return metadata
