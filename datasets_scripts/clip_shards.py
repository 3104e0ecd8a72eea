"""The clip pass of an embedding job (`datasets_scripts.embed`): the distinct clips of the pairs, in order of first
appearance, each decoded and encoded once in a clip shard; read back by the row pass (`ClipShards`), and assembled into
the job's clip table and token file.

    shards/clips-00000.parquet  clip (global index), audio_path (key), is_long, windows, embedding, and with tokens
                                num_tokens and tokens (float16 bytes): the clips of the shard that loaded
    shards/clips-00000.json     {"clips", "windows", "errors": {clip: problem}}, written before the parquet, which marks
                                a finished clip shard
"""

from __future__ import annotations

import functools
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from datasets import Dataset

from modeling_paircap.file_io_paircap import write_atomic
from modeling_paircap.kb_format_paircap import CLIPS_FILE, clip_schema
from modeling_paircap.tokens_paircap import TOKENS_FILE, write_clip_tokens


def clips_path(output_dir: Path, shard: int) -> Path:
    """Where clip shard `shard` of an embedding job in `output_dir` is written."""
    return Path(output_dir, "shards", f"clips-{shard:05d}.parquet")


@dataclass
class ClipPlan:
    """The distinct clips of a job in order of first appearance: their keys (the path, or the first pair id for
    in-memory audio), paths, the row where each first appears, and each row's clip (-1 for a text-only row)."""

    keys: list[str]
    paths: list[str | None]
    first_rows: list[int]
    row_clip: np.ndarray


def plan_clips(pairs: Dataset) -> ClipPlan:
    """Find the distinct clips of `pairs`, reading only the audio paths (no audio bytes copied)."""
    index_of: dict[str, int] = {}
    paths, first_rows, row_clip, row = [], [], np.full(len(pairs), -1, dtype=np.int64), 0
    for batch in pairs.select_columns(["audio", "pair_id"]).with_format("arrow").iter(batch_size=65536):
        audio = batch.column("audio")
        if pa.types.is_struct(audio.type):
            present, locations = pc.is_valid(audio).to_pylist(), pc.struct_field(audio, "path").to_pylist()
        else:  # a column of nulls alone: text-only rows
            present, locations = [False] * len(batch), [None] * len(batch)
        for loaded, path, pair_id in zip(present, locations, batch.column("pair_id").to_pylist(), strict=True):
            if loaded:
                clip = index_of.setdefault(path or f"<audio bytes of pair {pair_id}>", len(index_of))
                if clip == len(paths):
                    paths.append(path)
                    first_rows.append(row)
                row_clip[row] = clip
            row += 1
    return ClipPlan(list(index_of), paths, first_rows, row_clip)


def encode_clip_shard(
    embedder, pairs: Dataset, plan: ClipPlan, output_dir: Path, shard: int, start: int, stop: int
) -> dict[str, int]:
    """Encode the clips `start:stop` of `plan` (from each one's first row) with `embedder` (`embed._ShardEmbedder`)
    and write them as clip shard `shard`; returns its clip and window counts."""
    encoded, errors = embedder.encode_clips(pairs.select_columns(["audio"])[plan.first_rows[start:stop]]["audio"])
    order = sorted(encoded)
    flat = np.concatenate([encoded[i].embedding for i in order]) if order else np.zeros(0, np.float32)
    columns = {
        "clip": pa.array([start + i for i in order], pa.int64()),
        "audio_path": pa.array([plan.keys[start + i] for i in order], pa.string()),
        "is_long": pa.array([encoded[i].is_long for i in order], pa.bool_()),
        "windows": pa.array([encoded[i].windows for i in order], pa.int64()),
        "embedding": pa.FixedSizeListArray.from_arrays(pa.array(flat, pa.float32()), embedder.audio_dim),
    }
    if embedder.with_tokens:
        columns["num_tokens"] = pa.array([len(encoded[i].tokens) for i in order], pa.int64())
        columns["tokens"] = pa.array([encoded[i].tokens.tobytes() for i in order], pa.large_binary())
    record = {
        "clips": stop - start,
        "windows": sum(clip.windows for clip in encoded.values()),
        "errors": {str(start + i): error for i, error in sorted(errors.items())},
    }
    path, table = clips_path(output_dir, shard), pa.table(columns)
    write_atomic(path.with_suffix(".json"), lambda temp: temp.write_text(json.dumps(record, indent=2, sort_keys=True)))
    write_atomic(path, lambda temp: pq.write_table(table, temp))
    return {"clips": record["clips"], "windows": record["windows"]}


class ClipShards:
    """Each clip's audio embedding and length flag, or the problem that stopped it, from the finished clip shards of
    the job in `output_dir` (the last few read are kept)."""

    def __init__(self, output_dir: Path, shard_size: int):
        self.output_dir = output_dir
        self.shard_size = shard_size
        self.read = functools.lru_cache(maxsize=4)(self._read)

    def _read(self, shard: int) -> dict[int, tuple[np.ndarray, bool] | str]:
        path = clips_path(self.output_dir, shard)
        table = pq.read_table(path, columns=["clip", "is_long", "embedding"])
        embeddings = table.column("embedding").combine_chunks()
        matrix = np.asarray(embeddings.flatten(), dtype=np.float32).reshape(len(table), embeddings.type.list_size)
        errors = json.loads(path.with_suffix(".json").read_text())["errors"]
        found: dict[int, tuple[np.ndarray, bool] | str] = {int(clip): problem for clip, problem in errors.items()}
        clips, is_long = table.column("clip").to_pylist(), table.column("is_long").to_pylist()
        found.update((clip, (matrix[i], is_long[i])) for i, clip in enumerate(clips))
        return found

    def get(self, clip: int) -> tuple[np.ndarray, bool] | str:
        return self.read(clip // self.shard_size)[clip]


def first_rows_of_clips(rows: Dataset) -> tuple[list[str], list[int]]:
    """The distinct clip locations of the rows in order of first appearance, and the row where each first appears."""
    paths = rows.with_format("arrow")["audio_path"].to_pylist()
    first: dict[str, int] = {}
    for row, path in enumerate(paths):
        if path is not None and path not in first:
            first[path] = row
    return list(first), list(first.values())


def clip_indices(rows: Dataset, clips: pa.Table) -> list[int]:
    """Each row's index into the clip table (-1 for text-only rows)."""
    index_of = {path: clip for clip, path in enumerate(clips.column("audio_path").to_pylist())}
    return [-1 if path is None else index_of[path] for path in rows.with_format("arrow")["audio_path"].to_pylist()]


def assemble_clips(output_dir: Path, num_shards: int, rows: Dataset, token_dim: int, fingerprint: str | None) -> None:
    """Write the clip table and (with a token fingerprint) the token file, streaming the clip shards' tokens once."""
    paths, first_rows = first_rows_of_clips(rows)
    first = rows.select(first_rows).with_format("arrow")[:]
    clips = pa.table(
        {
            "audio_id": first.column("audio_id"),
            "is_long": first.column("is_long"),
            "duration": first.column("duration").cast(pa.float32()),
            "audio_root": pa.array([""] * len(paths), pa.string()),
            "audio_path": pa.array(paths, pa.string()),
        },
        schema=clip_schema(),
    )
    if fingerprint is not None:
        counts, parts = clip_token_parts(output_dir, num_shards, paths)
        write_clip_tokens(output_dir / TOKENS_FILE, counts, parts, token_dim, fingerprint)
    write_atomic(output_dir / CLIPS_FILE, lambda temp: pq.write_table(clips, temp))


def clip_token_parts(output_dir: Path, num_shards: int, paths: list[str]):
    """Token counts of the clips (in `paths` order: the clip shards' order, less the clips that did not load) and a
    generator of their tokens, read shard by shard."""
    tables = [pq.read_table(clips_path(output_dir, s), columns=["audio_path", "num_tokens"]) for s in range(num_shards)]
    if [path for table in tables for path in table.column("audio_path").to_pylist()] != paths:
        raise ValueError(f"{output_dir}: its clip shards do not match its rows; rerun with overwrite=True")

    def tokens():
        for shard in range(num_shards):
            for data in pq.read_table(clips_path(output_dir, shard), columns=["tokens"]).column("tokens"):
                yield np.frombuffer(data.as_py(), dtype=np.float16)

    return [count for table in tables for count in table.column("num_tokens").to_pylist()], tokens()
