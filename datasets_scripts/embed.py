"""Embed (audio, caption) pairs into knowledge-base rows: CLAP audio and text embeddings (the retrieval space) and,
once per clip, the pooled prompt tokens of the captioning audio tower.

`embed_pairs` takes a Dataset with the readers' columns (`datasets_scripts.readers`) and returns `EmbeddedPairs`: the
rows with `kb_row_features(...)` (`modeling_paircap/kb_format_paircap.py`) plus `is_long` and `audio_path`, in
input order, minus the rows whose audio could not be loaded; the clip table (one row per distinct clip, in order of
first appearance); and the clips' tokens (`tokens.safetensors`), unless `with_tokens=False` (an index-only KB). The job
is cut into shards of `shard_size` rows written to `output_dir`::

    embed_state.json            what the job embeds: shard size, row count, hash of the pair ids, both fingerprints
    shards/shard-00000.parquet  finished shards (written atomically: temp file, then rename)
    shards/shard-00000.json     the shard's bad-audio rows and counts (written before its parquet)
    shards/clips-00000.parquet  the shard's clip tokens (with_tokens), written before its rows
    errors.jsonl                every dropped row: {"pair_id", "audio_id", "file", "error"}
    embed_stats.json            pairs, unique clips, windows, seconds, clips/s, pairs/s of the last call
    clips.parquet, tokens.safetensors   the clip table and the clip tokens of the finished job
    cache/                      the `datasets` arrow cache of the returned Dataset

A rerun skips finished shards, so killing the job loses at most the shards in progress. Under `accelerate launch`
process p computes shards p, p + P, ... and every process returns the same Dataset.

Throughput: CLAP feature extraction (numpy) in the DataLoader workers dominates on CPU. Start the job with
`OPENBLAS_NUM_THREADS=1` so the workers' numpy does not oversubscribe the cores (on 2 cores with the tiny test model:
about 26 clips/s with numpy's default threads, 44 clips/s with one thread per worker).

Usage::

    from datasets_scripts.embed import embed_pairs
    from datasets_scripts.readers import read_corpus

    pairs = read_corpus("clotho", "/data/clotho_v2", "development")
    embedded = embed_pairs(pairs, model, processor, "/data/kb/clotho_dev")
    embedded.rows, embedded.clips, embedded.tokens
"""

from __future__ import annotations

import contextlib
import copy
import json
import os
import shutil
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import torch
from accelerate import Accelerator, PartialState
from accelerate.utils import gather_object
from datasets import Dataset, Features, Value
from tqdm.auto import tqdm
from transformers.utils import logging

from datasets_scripts.job_files import ids_sha256, write_atomic
from modeling_paircap.feature_extraction_paircap import TorchClapFeatures
from modeling_paircap.kb_format_paircap import CLIPS_FILE, clip_schema, kb_row_features
from modeling_paircap.tokens_paircap import TOKENS_FILE, ClipTokenStore, write_clip_tokens

logger = logging.get_logger(__name__)

__all__ = ["ERRORS_FILE", "STATE_FILE", "STATS_FILE", "EmbedStats", "EmbeddedPairs", "embed_pairs", "shard_path"]

STATE_FILE = "embed_state.json"
STATS_FILE = "embed_stats.json"
ERRORS_FILE = "errors.jsonl"
SHARDS_DIR = "shards"
CACHE_DIR = "cache"
INPUT_COLUMNS = ("pair_id", "audio_id", "audio", "caption", "source", "split", "duration")
PASSED_COLUMNS = ("pair_id", "audio_id", "caption", "source", "split", "duration")


@dataclass
class EmbeddedPairs:
    """What `embed_pairs` returns: the rows (KB row columns plus `is_long` and `audio_path`), the clip table (an Arrow
    table with `CLIP_COLUMNS`; `rows["clip_index"]` points into it) and the clips' tokens (None without tokens)."""

    rows: Dataset
    clips: pa.Table
    tokens: ClipTokenStore | None


@dataclass
class EmbedStats:
    """One `embed_pairs` call: pairs, clips, windows, seconds and shards computed by it over all processes; rows_out
    and errors (rows dropped for bad audio) count the whole output."""

    pairs: int
    unique_clips: int
    windows: int
    seconds: float
    clips_per_s: float
    pairs_per_s: float
    shards_computed: int
    shards_reused: int
    rows_out: int
    errors: int

    def line(self) -> str:
        return (
            f"embedded {self.pairs} pairs ({self.unique_clips} unique clips, {self.windows} windows) in "
            f"{self.seconds:.1f} s: {self.clips_per_s:.2f} clips/s, {self.pairs_per_s:.2f} pairs/s; "
            f"{self.shards_computed} shards computed, {self.shards_reused} reused; {self.rows_out} rows out, "
            f"{self.errors} dropped for bad audio"
        )


@dataclass
class _Clip:
    """A loaded, windowed clip (or the error that stopped it), from a DataLoader worker: its log-mel features, or
    its repeat-padded waveform windows when the features are computed on the model's device."""

    index: int
    features: np.ndarray | torch.Tensor | None
    is_long: bool
    error: str | None


@dataclass
class _ClipBatch:
    """Collated clips: the windows of every loaded clip, their window counts, and the failed clips' errors."""

    indices: list[int]
    features: torch.Tensor | None
    window_counts: torch.Tensor
    is_long: list[bool]
    errors: dict[int, str]


@dataclass
class _EncodedClip:
    """A clip's pooled encoder tokens `(windows * tokens_per_window, token_dim)` and CLAP audio embedding."""

    tokens: np.ndarray
    embedding: np.ndarray
    is_long: bool
    windows: int


class _ClipDataset(torch.utils.data.Dataset):
    """Unique clips of a shard, loaded, windowed and (unless `pad_only`) featurised by `processor`, in DataLoader
    workers; with `pad_only` a clip carries its repeat-padded windows `(windows, 480000)` for on-device features."""

    def __init__(self, processor, audio: list[dict], padder: TorchClapFeatures | None = None):
        self.processor = processor
        self.audio = audio
        self.padder = padder

    def __len__(self) -> int:
        return len(self.audio)

    def __getitem__(self, index: int) -> _Clip:
        loaded = self.processor.load_audio([self.audio[index]])[0]
        if not isinstance(loaded, np.ndarray):  # the processor's AudioInputError
            return _Clip(index, None, False, getattr(loaded, "problem", str(loaded)))
        windows, is_long = self.processor.window_audio(loaded)
        if self.padder is not None:
            return _Clip(index, self.padder.pad_windows(windows)[0], is_long, None)
        return _Clip(index, self.processor.extract_features(windows), is_long, None)


def _collate_clips(clips: list[_Clip]) -> _ClipBatch:
    loaded = [clip for clip in clips if clip.error is None]
    return _ClipBatch(
        indices=[clip.index for clip in loaded],
        features=torch.cat([torch.as_tensor(clip.features) for clip in loaded]) if loaded else None,
        window_counts=torch.tensor([len(clip.features) for clip in loaded], dtype=torch.long),
        is_long=[clip.is_long for clip in loaded],
        errors={clip.index: clip.error for clip in clips if clip.error is not None},
    )


def shard_path(output_dir: str | os.PathLike, shard: int) -> Path:
    """Where shard `shard` of an embedding job in `output_dir` is written."""
    return Path(output_dir, SHARDS_DIR, f"shard-{shard:05d}.parquet")


def _record_path(output_dir: Path, shard: int) -> Path:
    return shard_path(output_dir, shard).with_suffix(".json")


def _clips_path(output_dir: Path, shard: int) -> Path:
    return Path(output_dir, SHARDS_DIR, f"clips-{shard:05d}.parquet")


def _write_json(path: Path, payload: Any) -> None:
    write_atomic(path, lambda temp: temp.write_text(json.dumps(payload, indent=2, sort_keys=True)))


# ---- job state ------------------------------------------------------------------------------------------------------


def _job_state(pairs: Dataset, model, shard_size: int, features: str, with_tokens: bool) -> dict[str, Any]:
    """What an output folder's shards were computed from; a rerun must match it to reuse them."""
    return {
        "shard_size": shard_size,
        "num_rows": len(pairs),
        "pair_ids_sha256": ids_sha256(
            pair_id
            for batch in pairs.select_columns(["pair_id"]).iter(batch_size=65536)
            for pair_id in batch["pair_id"]
        ),
        "retrieval_fingerprint": model.retrieval_fingerprint(),
        "token_fingerprint": model.token_fingerprint() if with_tokens else None,
        "features": features,
    }


def _state_mismatch(previous: dict, state: dict) -> str:
    reasons = []
    if previous.get("retrieval_fingerprint") != state["retrieval_fingerprint"]:
        reasons.append("another retrieval CLAP (different retrieval fingerprint)")
    if previous.get("token_fingerprint") != state["token_fingerprint"]:
        reasons.append("another token encoder, or tokens on/off (different token fingerprint)")
    if (previous.get("num_rows"), previous.get("pair_ids_sha256")) != (state["num_rows"], state["pair_ids_sha256"]):
        reasons.append(f"other pairs ({previous.get('num_rows')} rows before, {state['num_rows']} now)")
    if previous.get("shard_size") != state["shard_size"]:
        reasons.append(f"shard_size {previous.get('shard_size')} (now {state['shard_size']})")
    if previous.get("features", "processor") != state["features"]:
        reasons.append(f"log-mel features from {previous.get('features', 'processor')} (now {state['features']})")
    return "; ".join(reasons)


def _clear_output(output_dir: Path) -> None:
    """Remove what an embedding job wrote to `output_dir` (and nothing else)."""
    for name in (SHARDS_DIR, CACHE_DIR):
        shutil.rmtree(output_dir / name, ignore_errors=True)
    for name in (STATE_FILE, ERRORS_FILE, STATS_FILE, CLIPS_FILE, TOKENS_FILE):
        (output_dir / name).unlink(missing_ok=True)


def _prepare_output(output_dir: Path, state: dict, overwrite: bool, dist: Accelerator | PartialState) -> None:
    """Check that `output_dir` holds this job (or nothing), clear it if `overwrite`, and record the job's state."""
    state_file = output_dir / STATE_FILE
    previous = json.loads(state_file.read_text()) if state_file.is_file() else None
    if previous is not None and previous != state and not overwrite:
        raise ValueError(
            f"{output_dir} holds an embedding job of {_state_mismatch(previous, state)}; its shards cannot be reused. "
            "Pass overwrite=True to clear it, or choose another output_dir."
        )
    if dist.is_main_process:
        if overwrite:
            _clear_output(output_dir)
        (output_dir / SHARDS_DIR).mkdir(parents=True, exist_ok=True)
        _write_json(state_file, state)
    dist.wait_for_everyone()


# ---- one shard ------------------------------------------------------------------------------------------------------


def _unique_clips(rows: dict[str, list]) -> tuple[list[dict], list[str], list[int | None]]:
    """The distinct clips of a shard, their keys (the path, or the first pair id for in-memory audio) and, per row,
    the index of its clip (None for text-only rows)."""
    index_of: dict[str, int] = {}
    clips, keys, row_clip = [], [], []
    for item, pair_id in zip(rows["audio"], rows["pair_id"], strict=True):
        if item is None:
            row_clip.append(None)
            continue
        key = item.get("path") or f"<audio bytes of pair {pair_id}>"
        if key not in index_of:
            index_of[key] = len(clips)
            clips.append(item)
            keys.append(key)
        row_clip.append(index_of[key])
    return clips, keys, row_clip


def _error_record(rows: dict[str, list], row: int, error: str) -> dict[str, str | None]:
    return {
        "pair_id": rows["pair_id"][row],
        "audio_id": rows["audio_id"][row],
        "file": rows["audio"][row].get("path"),
        "error": error,
    }


@dataclass
class _ShardEmbedder:
    """Turns a shard's input rows into KB columns with `model` and `processor`."""

    model: Any
    processor: Any
    batch_size: int
    num_workers: int
    features_on_device: bool = False
    with_tokens: bool = True

    def __post_init__(self) -> None:
        # workers repeat-pad on CPU with `padder`; the main process computes log-mels with its copy on the device
        self.padder = TorchClapFeatures(self.processor.feature_extractor) if self.features_on_device else None
        self.device_features = None if self.padder is None else copy.deepcopy(self.padder).to(self.model.device)

    @property
    def audio_dim(self) -> int:
        return self.model.config.clap_config.projection_dim

    @property
    def text_dim(self) -> int:
        return self.model.config.clap_config.text_config.projection_dim

    @property
    def token_dim(self) -> int:
        return self.model.config.encoder_hidden_size

    def features(self) -> Features:
        """The shard rows' features: the KB row columns (clip_index is set when the job is assembled) plus the clip's
        length flag and location."""
        features = kb_row_features(self.audio_dim, self.text_dim)
        del features["clip_index"]
        features["is_long"] = Value("bool")
        features["audio_path"] = Value("string")
        return features

    def encode_batch(self, batch: _ClipBatch) -> list[_EncodedClip]:
        """Run the audio encoder on a batch of windows; one result per loaded clip."""
        device = self.model.device
        with torch.inference_mode():
            features = batch.features.to(device, non_blocking=True)
            if self.device_features is not None:  # the batch holds padded waveforms: log-mels on the device
                features = self.device_features(features)
            encoding = self.model.encode_audio(features, batch.window_counts.to(device))
        per_clip = torch.split(encoding.audio_tokens, batch.window_counts.tolist())
        embeddings = encoding.audio_embeds.float().cpu().numpy()
        return [
            _EncodedClip(tokens.flatten(0, 1).to(torch.float16).cpu().numpy(), embedding, is_long, len(tokens))
            for tokens, embedding, is_long in zip(per_clip, embeddings, batch.is_long, strict=True)
        ]

    def encode_clips(self, clips: list[dict]) -> tuple[dict[int, _EncodedClip], dict[int, str]]:
        """Encode every clip once (decoding and features in DataLoader workers); results and errors by clip index."""
        loader = torch.utils.data.DataLoader(
            _ClipDataset(self.processor, clips, self.padder),
            batch_size=self.batch_size,
            num_workers=self.num_workers,
            collate_fn=_collate_clips,
        )
        encoded, errors = {}, {}
        for batch in loader:
            errors.update(batch.errors)
            if batch.features is not None:
                encoded.update(zip(batch.indices, self.encode_batch(batch), strict=True))
        return encoded, errors

    def embed_texts(self, texts: list[str]) -> np.ndarray:
        """L2-normalised CLAP text embeddings `(len(texts), d_t)`, in batches of `batch_size`."""
        chunks = [np.zeros((0, self.text_dim), dtype=np.float32)]
        for start in range(0, len(texts), self.batch_size):
            inputs = self.processor.clap_text_inputs(texts[start : start + self.batch_size]).to(self.model.device)
            with torch.inference_mode():
                chunks.append(self.model.embed_texts(**inputs).float().cpu().numpy())
        return np.concatenate(chunks)

    def __call__(self, rows: dict[str, list]) -> tuple[dict[str, list], pa.Table, dict[str, Any]]:
        """The KB columns of a shard's rows (bad-audio rows dropped), its clips' tokens (`audio_path`, `num_tokens`,
        `tokens` as float16 bytes) and its record: errors, clip and window counts."""
        clips, keys, row_clip = _unique_clips(rows)
        encoded, clip_errors = self.encode_clips(clips)
        kept = [row for row, clip in enumerate(row_clip) if clip is None or clip in encoded]
        text_only = _EncodedClip(
            np.zeros((0, self.token_dim), np.float16), np.zeros(self.audio_dim, np.float32), False, 0
        )
        kept_clips = [text_only if row_clip[row] is None else encoded[row_clip[row]] for row in kept]
        columns = {name: [rows[name][row] for row in kept] for name in PASSED_COLUMNS}
        columns.update(
            has_audio=[row_clip[row] is not None for row in kept],
            is_long=[clip.is_long for clip in kept_clips],
            audio_embedding=[clip.embedding for clip in kept_clips],
            text_embedding=list(self.embed_texts([rows["caption"][row] for row in kept])),
            audio_path=[None if row_clip[row] is None else keys[row_clip[row]] for row in kept],
        )
        order = sorted(encoded)
        clip_tokens = pa.table(
            {
                "audio_path": [keys[clip] for clip in order],
                "num_tokens": pa.array([len(encoded[clip].tokens) for clip in order], pa.int64()),
                "tokens": pa.array([encoded[clip].tokens.tobytes() for clip in order], pa.large_binary()),
            }
        )
        record = {
            "pairs": len(row_clip),
            "clips": len(clips),
            "windows": sum(clip.windows for clip in encoded.values()),
            "errors": [
                _error_record(rows, row, clip_errors[clip]) for row, clip in enumerate(row_clip) if clip in clip_errors
            ],
        }
        return columns, clip_tokens, record


def _write_shard(
    output_dir: Path, shard: int, columns: dict[str, list], clip_tokens: pa.Table | None, record: dict, features
) -> None:
    """Write a shard's record and clip tokens, then its rows; the rows file appears (atomically) only once the others
    are complete, so it marks a finished shard."""
    _write_json(_record_path(output_dir, shard), record)
    if clip_tokens is not None:
        write_atomic(_clips_path(output_dir, shard), lambda temp: pq.write_table(clip_tokens, temp))
    table = Dataset.from_dict(columns, features=features).data.table
    write_atomic(shard_path(output_dir, shard), lambda temp: pq.write_table(table, temp))


# ---- the job --------------------------------------------------------------------------------------------------------


def _shard_bounds(num_rows: int, shard_size: int) -> list[tuple[int, int]]:
    return [(start, min(start + shard_size, num_rows)) for start in range(0, num_rows, shard_size)]


@contextlib.contextmanager
def _eval_mode(model) -> Iterator[None]:
    """Run with dropout off, then restore the model's training flag."""
    was_training = model.training
    model.eval()
    try:
        yield
    finally:
        model.train(was_training)


def _run_shards(
    embedder: _ShardEmbedder,
    pairs: Dataset,
    output_dir: Path,
    bounds: list[tuple[int, int]],
    dist: Accelerator | PartialState,
    progress: bool,
) -> dict[str, int]:
    """Compute and write this process's unfinished shards (p, p + P, ...); returns its counts."""
    mine = range(dist.process_index, len(bounds), dist.num_processes)
    todo = [shard for shard in mine if not shard_path(output_dir, shard).is_file()]
    bar = tqdm(
        total=sum(bounds[shard][1] - bounds[shard][0] for shard in mine),
        initial=sum(bounds[shard][1] - bounds[shard][0] for shard in mine if shard not in todo),
        unit="pair",
        desc="embedding",
        disable=not (progress and dist.is_main_process),
    )
    features = embedder.features()
    counts = {"pairs": 0, "clips": 0, "windows": 0, "shards": 0}
    with bar, _eval_mode(embedder.model):
        for shard in todo:
            start, end = bounds[shard]
            columns, clip_tokens, record = embedder(pairs[start:end])
            record |= {"process_index": dist.process_index}
            _write_shard(output_dir, shard, columns, clip_tokens if embedder.with_tokens else None, record, features)
            for key in ("pairs", "clips", "windows"):
                counts[key] += record[key]
            counts["shards"] += 1
            bar.update(end - start)
    return counts


def _collect_errors(output_dir: Path, num_shards: int) -> int:
    """Write every shard's dropped rows, in shard order, to errors.jsonl; returns their number."""
    errors = [
        error
        for shard in range(num_shards)
        for error in json.loads(_record_path(output_dir, shard).read_text())["errors"]
    ]
    write_atomic(
        output_dir / ERRORS_FILE, lambda temp: temp.write_text("".join(json.dumps(error) + "\n" for error in errors))
    )
    return len(errors)


def _summarise(
    per_process: list[dict[str, int]], num_shards: int, seconds: float, errors: int, rows_out: int
) -> EmbedStats:
    totals = {key: sum(counts[key] for counts in per_process) for key in ("pairs", "clips", "windows", "shards")}
    return EmbedStats(
        pairs=totals["pairs"],
        unique_clips=totals["clips"],
        windows=totals["windows"],
        seconds=round(seconds, 3),
        clips_per_s=round(totals["clips"] / seconds, 3),
        pairs_per_s=round(totals["pairs"] / seconds, 3),
        shards_computed=totals["shards"],
        shards_reused=num_shards - totals["shards"],
        rows_out=rows_out,
        errors=errors,
    )


def _check_input(pairs: Dataset, shard_size: int, batch_size: int) -> None:
    missing = [name for name in INPUT_COLUMNS if name not in pairs.column_names]
    if missing:
        raise ValueError(f"pairs lacks the columns {missing} (expected the readers' columns {list(INPUT_COLUMNS)})")
    if len(pairs) == 0:
        raise ValueError("pairs is empty: nothing to embed")
    if shard_size < 1 or batch_size < 1:
        raise ValueError(f"shard_size and batch_size must be positive, got {shard_size} and {batch_size}")


def embed_pairs(
    pairs: Dataset,
    model,
    processor,
    output_dir: str | os.PathLike,
    *,
    shard_size: int = 1024,
    batch_size: int = 32,
    num_workers: int = 2,
    progress: bool = True,
    overwrite: bool = False,
    accelerator: Accelerator | PartialState | None = None,
    features_on_device: bool | None = None,
    with_tokens: bool = True,
) -> EmbeddedPairs:
    """
    Embed `pairs` (the readers' columns) into knowledge-base rows, a clip table and (`with_tokens`) the clips' pooled
    prompt tokens, stored once per clip; rows whose audio cannot be loaded are dropped and listed in
    `output_dir/errors.jsonl`.

    Each shard of `shard_size` rows decodes and encodes each of its distinct clips once (`batch_size` clips per encoder
    call, decoding in `num_workers` DataLoader workers) and embeds its captions in batches of `batch_size`. Finished
    shards in `output_dir` are reused; an `output_dir` made from other pairs, another encoder or another shard size is
    refused with a ValueError unless `overwrite=True`, which clears it. With `accelerator` (an `Accelerator` or
    `PartialState`; by default the current `PartialState`) process p computes shards p, p + P, ... on the model's
    device (move the model to `accelerator.device` first), and every process returns the same Dataset. With
    `features_on_device` (the default when the model is on a GPU) workers only decode, window and repeat-pad, and the
    log-mel features are computed batched on the model's device (`TorchClapFeatures`), not by the numpy extractor.
    """
    _check_input(pairs, shard_size, batch_size)
    dist = accelerator if accelerator is not None else PartialState()
    output_dir = Path(output_dir)
    if features_on_device is None:
        features_on_device = model.device.type == "cuda"
    features = "device" if features_on_device else "processor"
    state = _job_state(pairs, model, shard_size, features, with_tokens)
    _prepare_output(output_dir, state, overwrite, dist)
    embedder = _ShardEmbedder(model, processor, batch_size, num_workers, features_on_device, with_tokens)
    bounds = _shard_bounds(len(pairs), shard_size)
    started = time.perf_counter()
    counts = _run_shards(embedder, pairs.select_columns(list(INPUT_COLUMNS)), output_dir, bounds, dist, progress)
    per_process = gather_object([counts])
    dist.wait_for_everyone()
    seconds = time.perf_counter() - started

    files = [str(shard_path(output_dir, shard)) for shard in range(len(bounds))]
    with dist.main_process_first():
        dataset = Dataset.from_parquet(files, features=embedder.features(), cache_dir=str(output_dir / CACHE_DIR))
        if dist.is_main_process and not (output_dir / CLIPS_FILE).is_file():
            _assemble_clips(output_dir, len(bounds), dataset, embedder.token_dim, state["token_fingerprint"])
    clips = pq.read_table(output_dir / CLIPS_FILE)
    dataset = dataset.add_column("clip_index", _clip_indices(dataset, clips), feature=Value("int32"))
    tokens = ClipTokenStore(output_dir / TOKENS_FILE, len(clips)) if with_tokens else None
    if dist.is_main_process:
        stats = _summarise(per_process, len(bounds), seconds, _collect_errors(output_dir, len(bounds)), len(dataset))
        _write_json(output_dir / STATS_FILE, asdict(stats))
        logger.info(stats.line())
    dist.wait_for_everyone()
    return EmbeddedPairs(dataset, clips, tokens)


def _first_rows_of_clips(rows: Dataset) -> tuple[list[str], list[int]]:
    """The distinct clip locations of the rows in order of first appearance, and the row where each first appears."""
    paths = rows.with_format("arrow")["audio_path"].to_pylist()
    first: dict[str, int] = {}
    for row, path in enumerate(paths):
        if path is not None and path not in first:
            first[path] = row
    return list(first), list(first.values())


def _clip_indices(rows: Dataset, clips: pa.Table) -> list[int]:
    """Each row's index into the clip table (-1 for text-only rows)."""
    index_of = {path: clip for clip, path in enumerate(clips.column("audio_path").to_pylist())}
    return [-1 if path is None else index_of[path] for path in rows.with_format("arrow")["audio_path"].to_pylist()]


def _assemble_clips(output_dir: Path, num_shards: int, rows: Dataset, token_dim: int, fingerprint: str | None) -> None:
    """Write the clip table and (with a token fingerprint) the token file, streaming each shard's clip tokens once."""
    paths, first_rows = _first_rows_of_clips(rows)
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
        counts, parts = _clip_token_parts(output_dir, num_shards, paths)
        write_clip_tokens(output_dir / TOKENS_FILE, counts, parts, token_dim, fingerprint)
    write_atomic(output_dir / CLIPS_FILE, lambda temp: pq.write_table(clips, temp))


def _clip_token_parts(output_dir: Path, num_shards: int, paths: list[str]):
    """Token counts of the clips (in `paths` order) and a generator of their tokens, read shard by shard: a clip's
    first shard encoded it, and clips first appear in shard order."""
    counts: dict[str, int] = {}
    for shard in range(num_shards):
        table = pq.read_table(_clips_path(output_dir, shard), columns=["audio_path", "num_tokens"])
        shard_paths, numbers = table.column("audio_path").to_pylist(), table.column("num_tokens").to_pylist()
        for path, count in zip(shard_paths, numbers, strict=True):
            counts.setdefault(path, count)

    def tokens():
        wanted = iter(paths)
        pending = next(wanted, None)
        for shard in range(num_shards):
            table = pq.read_table(_clips_path(output_dir, shard))
            for path, data in zip(table.column("audio_path").to_pylist(), table.column("tokens"), strict=True):
                if path == pending:
                    yield np.frombuffer(data.as_py(), dtype=np.float16)
                    pending = next(wanted, None)

    return [counts[path] for path in paths], tokens()
