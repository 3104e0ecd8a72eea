"""Embed (audio, caption) pairs into knowledge-base rows: CLAP audio and text embeddings (the retrieval space) and,
once per clip, the pooled prompt tokens of the captioning audio tower.

`embed_pairs` takes a Dataset with the readers' columns (`datasets_scripts.readers`) and returns `EmbeddedPairs`: the
rows with `kb_row_features(...)` (`modeling_paircap/kb_format_paircap.py`) plus `is_long` and `audio_path`, in
input order, minus the rows whose audio could not be loaded; the clip table (one row per distinct clip, in order of
first appearance); and the clips' tokens (`tokens.safetensors`), unless `with_tokens=False` (an index-only KB).

The job runs in two passes, each cut into shards written to `output_dir`. First the distinct clips, `shard_size` per
clip shard in order of first appearance: each is decoded and encoded once, however many captions it has and wherever
they lie. Then the rows, `shard_size` per row shard: their captions are embedded, and each row takes its clip's audio
embedding from the clip shards::

    embed_state.json            what the job embeds: shard size, row count, hash of the pair ids, both fingerprints
    shards/clips-00000.parquet  finished clip shards (`datasets_scripts.clip_shards`): CLAP audio embedding, length
                                flag, windows and (with_tokens) pooled tokens of each clip that loaded
    shards/clips-00000.json     the clip shard's clips that could not be loaded, and its counts (written before it)
    shards/shard-00000.parquet  finished row shards (written atomically: temp file, then rename)
    shards/shard-00000.json     the row shard's rows dropped for bad audio (written before its parquet)
    errors.jsonl                every dropped row: {"pair_id", "audio_id", "file", "error"}
    embed_stats.json            pairs, unique clips, windows, seconds, clips/s, pairs/s of the last call
    clips.parquet, tokens.safetensors   the clip table and the clip tokens of the finished job
    cache/                      the `datasets` arrow cache of the returned Dataset

A rerun skips finished shards, so killing the job loses at most the shards in progress. Under `accelerate launch`
process p computes the shards p, p + P, ... of each pass, and every process returns the same Dataset.

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
import functools
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
from accelerate.utils import gather_object
from datasets import Dataset, Features, Value
from transformers.utils import logging

from datasets_scripts.clip_shards import (
    ClipPlan,
    ClipShards,
    assemble_clips,
    clip_indices,
    clips_path,
    encode_clip_shard,
    plan_clips,
)
from datasets_scripts.job_files import ids_sha256
from datasets_scripts.process_shards import Processes, processes, run_shards
from modeling_paircap.feature_extraction_paircap import TorchClapFeatures
from modeling_paircap.file_io_paircap import write_atomic
from modeling_paircap.kb_format_paircap import CLIPS_FILE, kb_row_features
from modeling_paircap.tokens_paircap import TOKENS_FILE, ClipTokenStore

logger = logging.get_logger(__name__)

__all__ = ["ERRORS_FILE", "STATE_FILE", "STATS_FILE", "EmbedStats", "EmbeddedPairs", "embed_pairs", "shard_path"]

STATE_FILE = "embed_state.json"
STATS_FILE = "embed_stats.json"
ERRORS_FILE = "errors.jsonl"
SHARDS_DIR = "shards"
CACHE_DIR = "cache"
INPUT_COLUMNS = ("pair_id", "audio_id", "audio", "caption", "source", "split", "duration")
PASSED_COLUMNS = ("pair_id", "audio_id", "caption", "source", "split", "duration")
STATE_VERSION = 2  # clips encoded once, in clip shards (version 1 encoded the clips of each row shard)


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
        "version": STATE_VERSION,
    }


def _state_mismatch(previous: dict, state: dict) -> str:
    reasons = []
    if previous.get("version") != state["version"]:
        reasons.append(f"an older shard layout (version {previous.get('version', 1)}, now {state['version']})")
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


def _prepare_output(output_dir: Path, state: dict, overwrite: bool, dist: Processes) -> None:
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
            # not forked from this process, whose torch threads may hold locks (a forked worker can deadlock on them)
            multiprocessing_context="forkserver" if self.num_workers else None,
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

    def embed_rows(
        self, rows: dict[str, list], row_clip: np.ndarray, clips: ClipShards, plan: ClipPlan
    ) -> tuple[dict[str, list], dict[str, Any]]:
        """The KB columns of a row shard, each row's audio embedding and length flag its clip's (rows whose clip could
        not be loaded dropped), and its record: the dropped rows."""
        found = {clip: clips.get(clip) for clip in set(row_clip.tolist()) if clip >= 0}
        failed = {clip for clip, value in found.items() if isinstance(value, str)}
        kept = [row for row, clip in enumerate(row_clip.tolist()) if clip not in failed]
        no_audio = (np.zeros(self.audio_dim, np.float32), False)
        audio = [no_audio if row_clip[row] < 0 else found[row_clip[row]] for row in kept]
        columns = {name: [rows[name][row] for row in kept] for name in PASSED_COLUMNS}
        columns.update(
            has_audio=[bool(row_clip[row] >= 0) for row in kept],
            is_long=[is_long for _, is_long in audio],
            audio_embedding=[embedding for embedding, _ in audio],
            text_embedding=list(self.embed_texts([rows["caption"][row] for row in kept])),
            audio_path=[plan.keys[row_clip[row]] if row_clip[row] >= 0 else None for row in kept],
        )
        errors = [
            {
                "pair_id": rows["pair_id"][row],
                "audio_id": rows["audio_id"][row],
                "file": plan.paths[clip],
                "error": found[clip],
            }
            for row, clip in enumerate(row_clip.tolist())
            if clip in failed
        ]
        return columns, {"pairs": len(row_clip), "errors": errors}


def _write_shard(output_dir: Path, shard: int, columns: dict[str, list], record: dict, features) -> None:
    """Write a row shard's record, then its rows (atomically): the rows file marks a finished shard."""
    _write_json(_record_path(output_dir, shard), record)
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
    totals = {key: sum(counts.get(key, 0) for counts in per_process) for key in ("pairs", "clips", "windows", "shards")}
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
    accelerator: Processes | None = None,
    features_on_device: bool | None = None,
    with_tokens: bool = True,
) -> EmbeddedPairs:
    """
    Embed `pairs` (the readers' columns) into knowledge-base rows, a clip table and (`with_tokens`) the clips' pooled
    prompt tokens, stored once per clip; rows whose audio cannot be loaded are dropped and listed in
    `output_dir/errors.jsonl`.

    Each distinct clip is decoded and encoded once, in shards of `shard_size` clips (`batch_size` clips per encoder
    call, decoding in `num_workers` DataLoader workers); then the captions are embedded, in shards of `shard_size`
    rows and batches of `batch_size`. Finished shards in `output_dir` are reused; an `output_dir` made from other
    pairs, another encoder or another shard size is refused with a ValueError unless `overwrite=True`, which clears
    it. With `accelerator` (an `Accelerator` or `PartialState`; by default the current `PartialState`) process p
    computes shards p, p + P, ... of each pass on the model's device (move the model to `accelerator.device` first),
    and every process returns the same Dataset. With `features_on_device` (the default when the model is on a GPU)
    workers only decode, window and repeat-pad, and the log-mel features are computed batched on the model's device
    (`TorchClapFeatures`), not by the numpy extractor.
    """
    _check_input(pairs, shard_size, batch_size)
    dist = processes(accelerator)
    output_dir = Path(output_dir)
    if features_on_device is None:
        features_on_device = model.device.type == "cuda"
    features = "device" if features_on_device else "processor"
    state = _job_state(pairs, model, shard_size, features, with_tokens)
    _prepare_output(output_dir, state, overwrite, dist)
    embedder = _ShardEmbedder(model, processor, batch_size, num_workers, features_on_device, with_tokens)
    plan = plan_clips(pairs)
    clip_bounds, bounds = _shard_bounds(len(plan.keys), shard_size), _shard_bounds(len(pairs), shard_size)
    rows, clip_shards, row_features = (
        pairs.select_columns(list(PASSED_COLUMNS)),
        ClipShards(output_dir, shard_size),
        embedder.features(),
    )

    def encode_clips(shard: int) -> dict[str, int]:
        return encode_clip_shard(embedder, pairs, plan, output_dir, shard, *clip_bounds[shard])

    def embed_rows(shard: int) -> dict[str, int]:
        start, end = bounds[shard]
        columns, record = embedder.embed_rows(rows[start:end], plan.row_clip[start:end], clip_shards, plan)
        _write_shard(output_dir, shard, columns, record | {"process_index": dist.process_index}, row_features)
        return {"pairs": record["pairs"], "shards": 1}

    started = time.perf_counter()
    with _eval_mode(model):
        clip_sizes, row_sizes = [end - start for start, end in clip_bounds], [end - start for start, end in bounds]
        counts = run_shards(
            encode_clips, functools.partial(clips_path, output_dir), clip_sizes, dist, (progress, "clips", "clip")
        )
        dist.wait_for_everyone()
        done = functools.partial(shard_path, output_dir)
        counts.update(run_shards(embed_rows, done, row_sizes, dist, (progress, "embedding", "pair")))
    per_process = gather_object([counts])
    dist.wait_for_everyone()
    seconds = time.perf_counter() - started

    files = [str(shard_path(output_dir, shard)) for shard in range(len(bounds))]
    with dist.main_process_first():
        dataset = Dataset.from_parquet(files, features=row_features, cache_dir=str(output_dir / CACHE_DIR))
        if dist.is_main_process and not (output_dir / CLIPS_FILE).is_file():
            assemble_clips(output_dir, len(clip_bounds), dataset, embedder.token_dim, state["token_fingerprint"])
    clips = pq.read_table(output_dir / CLIPS_FILE)
    dataset = dataset.add_column("clip_index", clip_indices(dataset, clips), feature=Value("int32"))
    tokens = ClipTokenStore(output_dir / TOKENS_FILE, len(clips)) if with_tokens else None
    if dist.is_main_process:
        stats = _summarise(per_process, len(bounds), seconds, _collect_errors(output_dir, len(bounds)), len(dataset))
        _write_json(output_dir / STATS_FILE, asdict(stats))
        logger.info(stats.line())
    dist.wait_for_everyone()
    return EmbeddedPairs(dataset, clips, tokens)
