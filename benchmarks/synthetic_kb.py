"""
Synthetic knowledge bases in the real format, written by the project's own writer (`write_knowledge_base`, and
`write_clip_tokens` for the tokens): random unit audio and text embeddings (the captions of a clip share its audio
embedding), plausible ids and captions, random float16 pooled tokens per clip. The rows are generated chunk by chunk
into a memory-mapped Arrow file (`datasets.Dataset.from_file`), so 2.2 M pairs are never held in memory; the writer
streams the parquet shards from it and builds the flat index.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import datasets
import numpy as np
import pyarrow as pa

from modeling_paircap.kb_format_paircap import KnowledgeBaseMetadata, clip_schema, kb_row_features
from modeling_paircap.knowledge_base_paircap import write_knowledge_base
from modeling_paircap.tokens_paircap import TOKENS_FILE, ClipTokenStore, write_clip_tokens

CHUNK_CLIPS = 13_000  # clips generated per chunk (65,000 rows at 5 captions per clip)
TOKEN_BLOCK = 256  # clips of tokens drawn at a time
SUBJECTS = (
    "A dog", "A man", "A woman", "Children", "A car", "A train", "Birds", "A crowd", "Rain", "Water", "A cat",
    "An engine", "Footsteps", "A bell", "Wind", "A machine", "People", "A baby", "Thunder", "A motorcycle",
)  # fmt: skip
ACTIONS = (
    "barks loudly", "is speaking", "laugh and shout", "drives past", "passes by with a horn", "chirp", "cheers",
    "falls on a metal roof", "flows from a tap", "meows", "idles and revs", "echo in a hallway", "rings several times",
    "blows through the trees", "hums steadily", "talk in a busy market", "cries", "rumbles", "accelerates away",
    "clicks and whirs",
)  # fmt: skip
SETTINGS = (
    "in the distance", "while birds chirp", "as music plays", "near a busy road", "in a large room", "before it stops",
    "in the background", "on a rainy day", "while people talk", "over a steady hum",
)  # fmt: skip
SOURCES = ("clotho", "audiocaps", "wavcaps/freesound", "wavcaps/bbc_sound_effects", "wavcaps/soundbible")


def caption_pool() -> list[str]:
    """Caption-like sentences: subject + action + setting (4,000 distinct, ~40-60 characters)."""
    return [f"{s} {a} {c}." for s in SUBJECTS for a in ACTIONS for c in SETTINGS]


def unit_rows(rng: np.random.Generator, num: int, dim: int) -> np.ndarray:
    """`num` random L2-normalised float32 vectors of `dim`."""
    vectors = rng.standard_normal((num, dim), dtype=np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    return vectors


@dataclass
class SyntheticKB:
    """The shape of a synthetic knowledge base; `tokens_per_clip` 0 makes it index-only."""

    num_pairs: int
    audio_dim: int = 512
    text_dim: int = 512
    captions_per_clip: int = 5
    tokens_per_clip: int = 0
    tokens_per_window: int | None = None  # recorded in the metadata; None: one window per clip
    token_dim: int = 0
    clip_seconds: float | None = None  # every clip this long; None: uniform in 5-30 s
    window_seconds: float = 10.0  # clips longer than this are long clips
    captions: Sequence[str] | None = None  # drawn at random per row (default `caption_pool()`)
    retrieval_fingerprint: str = "synthetic-retrieval-clap"
    token_fingerprint: str = "synthetic"
    seed: int = 0

    @property
    def num_clips(self) -> int:
        return -(-self.num_pairs // self.captions_per_clip)


def clip_ids(clips: np.ndarray) -> tuple[list[str], list[str]]:
    """Sources and audio ids of clips."""
    sources = [SOURCES[clip % len(SOURCES)] for clip in clips]
    return sources, [f"{source.split('/')[-1]}_{clip:07d}.wav" for source, clip in zip(sources, clips, strict=True)]


def chunk_columns(spec: SyntheticKB, start: int, stop: int, captions: Sequence[str]) -> dict:
    """The row columns of clips `start:stop` (their `captions_per_clip` rows each, cut at `num_pairs`), drawn from a
    generator seeded by chunk, plus the clips' own ids and durations (`clip_audio_id`, `clip_duration`)."""
    rng = np.random.default_rng([spec.seed, start])
    clips = np.arange(start, stop)
    rows = np.arange(start * spec.captions_per_clip, min(stop * spec.captions_per_clip, spec.num_pairs))
    local = rows // spec.captions_per_clip - start  # each row's clip, counted from `start`
    sources, audio_ids = clip_ids(clips)
    if spec.clip_seconds is None:
        durations = rng.uniform(5.0, 30.0, len(clips)).astype(np.float32)
    else:
        durations = np.full(len(clips), spec.clip_seconds, dtype=np.float32)
    return {
        "pair_id": [
            f"{sources[c]}/train/{audio_ids[c]}/{r % spec.captions_per_clip}" for r, c in zip(rows, local, strict=True)
        ],
        "audio_id": [audio_ids[c] for c in local],
        "caption": [captions[i] for i in rng.integers(0, len(captions), len(rows))],
        "source": [sources[c] for c in local],
        "split": ["train"] * len(rows),
        "duration": durations[local],
        "has_audio": np.ones(len(rows), dtype=bool),
        "clip_index": (local + start).astype(np.int32),
        "audio_embedding": unit_rows(rng, len(clips), spec.audio_dim)[local],
        "text_embedding": unit_rows(rng, len(rows), spec.text_dim),
        "clip_duration": durations,
        "clip_audio_id": audio_ids,
    }


def row_batches(spec: SyntheticKB, clips: dict) -> Iterator[pa.RecordBatch]:
    """The rows as Arrow record batches in the format-2 row schema; the clips' ids, durations and sources are
    appended to `clips`."""
    schema = kb_row_features(spec.audio_dim, spec.text_dim).arrow_schema
    captions = list(spec.captions or caption_pool())
    for start in range(0, spec.num_clips, CHUNK_CLIPS):
        columns = chunk_columns(spec, start, min(start + CHUNK_CLIPS, spec.num_clips), captions)
        clips["audio_id"] += columns.pop("clip_audio_id")
        clips["duration"].append(columns.pop("clip_duration"))
        clips["sources"].update(columns["source"])
        for name in ("audio_embedding", "text_embedding"):
            values = columns[name]
            columns[name] = pa.FixedSizeListArray.from_arrays(pa.array(values.reshape(-1)), values.shape[1])
        arrays = [
            value if isinstance(value := columns[field.name], pa.Array) else pa.array(value, field.type)
            for field in schema
        ]
        yield pa.record_batch(arrays, schema=schema)


def stage_rows(path: Path, spec: SyntheticKB) -> tuple[datasets.Dataset, dict]:
    """Write the rows chunk by chunk to an Arrow stream file and return it memory-mapped as a `datasets.Dataset`
    (what `embed_pairs` hands the writer), plus the clip columns."""
    clips = {"audio_id": [], "duration": [], "sources": Counter()}
    batches = row_batches(spec, clips)
    first = next(batches)
    with pa.OSFile(str(path), "wb") as sink, pa.ipc.new_stream(sink, first.schema) as writer:
        writer.write_batch(first)
        for batch in batches:
            writer.write_batch(batch)
    clips["duration"] = np.concatenate(clips["duration"])
    return datasets.Dataset.from_file(str(path)), clips


def clip_table(clips: dict, window_seconds: float) -> pa.Table:
    """The clip table of the staged clips."""
    durations = clips["duration"]
    return pa.table(
        {
            "audio_id": clips["audio_id"],
            "is_long": durations > window_seconds,
            "duration": durations,
            "audio_root": ["synthetic"] * len(durations),
            "audio_path": [f"audio/{audio_id}" for audio_id in clips["audio_id"]],
        },
        schema=clip_schema(),
    )


def clip_token_blocks(spec: SyntheticKB) -> Iterator[np.ndarray]:
    """Random float16 `(tokens_per_clip, token_dim)` tokens of every clip, in clip order."""
    for start in range(0, spec.num_clips, TOKEN_BLOCK):
        rng = np.random.default_rng([spec.seed, 7, start])
        shape = (min(TOKEN_BLOCK, spec.num_clips - start), spec.tokens_per_clip, spec.token_dim)
        yield from rng.standard_normal(shape, dtype=np.float32).astype(np.float16)


def write_synthetic_kb(folder: Path, spec: SyntheticKB, staging: Path) -> dict[str, float]:
    """
    Write a format-2 knowledge base of `spec` into `folder`: rows staged in the Arrow file `staging` (deleted
    afterwards), tokens with `write_clip_tokens` beside it when `spec` has them, then `write_knowledge_base` (which
    builds the flat index and links the tokens in). Returns the seconds of each step (`generate_s`, `tokens_write_s`,
    `write_s`) and `staging_bytes`.
    """
    start = time.perf_counter()
    rows, clips = stage_rows(staging, spec)
    timings = {"generate_s": time.perf_counter() - start, "staging_bytes": staging.stat().st_size}
    tokens = None
    if spec.tokens_per_clip:
        start = time.perf_counter()
        counts = [spec.tokens_per_clip] * spec.num_clips
        token_file = staging.with_name(f"{staging.stem}-{TOKENS_FILE}")
        write_clip_tokens(token_file, counts, clip_token_blocks(spec), spec.token_dim, spec.token_fingerprint)
        timings["tokens_write_s"] = time.perf_counter() - start
        tokens = ClipTokenStore(token_file, num_clips=spec.num_clips)
    metadata = KnowledgeBaseMetadata(
        retrieval_fingerprint=spec.retrieval_fingerprint,
        audio_dim=spec.audio_dim,
        text_dim=spec.text_dim,
        num_pairs=spec.num_pairs,
        num_clips=spec.num_clips,
        token_fingerprint=spec.token_fingerprint if spec.tokens_per_clip else None,
        token_dim=spec.token_dim if spec.tokens_per_clip else 0,
        audio_tokens_per_window=spec.tokens_per_window or spec.tokens_per_clip,
        sources=dict(clips["sources"]),
        recipe={"name": "synthetic benchmark KB", "seed": spec.seed, "clip_seconds": spec.clip_seconds},
    )
    start = time.perf_counter()
    write_knowledge_base(folder, rows, clip_table(clips, spec.window_seconds), metadata, tokens=tokens)
    timings["write_s"] = time.perf_counter() - start
    del rows
    staging.unlink(missing_ok=True)
    if tokens is not None:
        tokens.path.unlink()  # linked or copied into the KB
    return timings
