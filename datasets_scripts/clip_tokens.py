"""Refresh a knowledge base's clip tokens from the audio with a release's token encoder (`paircap kb tokens`): after
stage 2 trained the audio tower, or to give an index-only KB its tokens.

The clips are cut into shards of `shard_size`; each finished shard is written to the work folder (atomically), so an
interrupted run resumes where it stopped. When every shard is done, a new version of the KB is staged beside it (its
other files linked in): the tokens streamed into `tokens.safetensors`, the metadata recording the new token
fingerprint and the file's size and sha256. It is loaded back, then swapped in; any failure (a full disk) leaves the
KB as it was. The KB's write lock is held from the start. Clips whose audio cannot be loaded keep no tokens and are
listed in `errors.jsonl`. Under `accelerate launch` the processes share the shards, and only the main process checks
the clips' audio locations, takes the lock and writes the new KB.

    paircap kb tokens --kb ./kb-refined --model ./outputs/stage2/release --root clotho=/data/clotho
    accelerate launch -m paircap.cli kb tokens ...     # shards split over processes / GPUs
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
from collections.abc import Mapping
from pathlib import Path
from urllib.parse import urlparse

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from datasets_scripts.embed import ERRORS_FILE, _eval_mode, _ShardEmbedder, _write_json
from datasets_scripts.process_shards import Processes, processes, run_shards
from modeling_paircap.audio_locations_paircap import (
    ABSOLUTE_ROOT,
    URL_SCHEMES,
    AudioLocationError,
    clip_audio_location,
)
from modeling_paircap.file_io_paircap import file_record, folder_lock, link_folder, replacing_folder, write_atomic
from modeling_paircap.kb_format_paircap import (
    CLIPS_FILE,
    METADATA_FILE,
    KnowledgeBaseError,
    KnowledgeBaseMetadata,
    read_clips,
)
from modeling_paircap.knowledge_base_paircap import PairCapKnowledgeBase
from modeling_paircap.tokens_paircap import TOKENS_FILE, write_clip_tokens

STATE_FILE = "tokens_state.json"
SHARDS_DIR = "shards"


def clip_locations(clips: pa.Table, roots: Mapping[str, str | os.PathLike], folder: Path) -> list[str]:
    """
    Each clip's audio file, checked by `clip_audio_location` (inside the folder given for its `audio_root`; absolute
    paths only under `roots["absolute"]`): a clip without a location, under a root not given, or whose location is
    refused (an escape from its root, a missing or non-audio file, a URL) is an error naming them, before any work.
    """
    locations, missing, refused = [], set(), []
    rows = zip(clips.column("audio_root").to_pylist(), clips.column("audio_path").to_pylist(), strict=True)
    for clip, (root, path) in enumerate(rows):
        if not path:
            raise KnowledgeBaseError(f"{folder / CLIPS_FILE}: a clip has no audio location; its tokens cannot be made")
        try:
            location = clip_audio_location(root, path, roots)
        except AudioLocationError as error:
            refused.append(f"clip {clip}: {error}")
            continue
        if location is None:
            missing.add(root or ABSOLUTE_ROOT)
        elif urlparse(location).scheme in URL_SCHEMES:
            refused.append(f"clip {clip}: {path!r} is a URL (its audio is not downloaded here)")
        locations.append(location)
    if missing:
        flags = " ".join(f"--root {name}=DIR" for name in sorted(missing))
        absolute = " (absolute paths: DIR is the folder they must lie in)" if ABSOLUTE_ROOT in missing else ""
        raise KnowledgeBaseError(
            f"{folder}: its clips live under the corpus folders {sorted(missing)}: pass {flags}{absolute}"
        )
    if refused:
        shown = "; ".join(refused[:3]) + (f"; and {len(refused) - 3} more" if len(refused) > 3 else "")
        raise KnowledgeBaseError(f"{folder / CLIPS_FILE}: the audio of {len(refused)} clips is refused: {shown}")
    return locations


def refresh_tokens(
    kb_folder: str | os.PathLike,
    model,
    processor,
    roots: Mapping[str, str | os.PathLike],
    work_dir: str | os.PathLike | None = None,
    shard_size: int = 1024,
    batch_size: int = 32,
    num_workers: int = 2,
    progress: bool = True,
    accelerator: Processes | None = None,
) -> KnowledgeBaseMetadata:
    """
    (Re)compute the clip tokens of the KB in `kb_folder` with `model`'s token encoder; returns the new metadata. Under
    `accelerate launch` (`accelerator`, or the current `PartialState`) the main process holds the lock, checks the clip
    locations and records them in the work folder, the processes share the shards (p, p + P, ...; the work folder on
    a filesystem every node sees), and the main process writes the new KB.
    """
    folder, dist = Path(kb_folder), processes(accelerator)
    KnowledgeBaseMetadata.load(folder)  # a missing or foreign folder is refused before a lock file is made beside it
    fingerprint = model.token_fingerprint()
    work = Path(work_dir) if work_dir else folder.parent / f".{folder.name}.tokens-work"
    with folder_lock(folder, METADATA_FILE) if dist.is_main_process else contextlib.nullcontext():
        if dist.is_main_process:
            metadata = KnowledgeBaseMetadata.load(folder)
            if metadata.retrieval_fingerprint != model.retrieval_fingerprint():
                raise KnowledgeBaseError(
                    f"{folder}: embedded in another retrieval space than this model's CLAP; refreshing its tokens "
                    "would not make it usable with this model. Rebuild it: paircap kb build"
                )
            locations = clip_locations(read_clips(folder / CLIPS_FILE, metadata.num_clips), roots, folder)
            _prepare_work(work, {"token_fingerprint": fingerprint, "clips": locations, "shard_size": shard_size})
        dist.wait_for_everyone()
        if not dist.is_main_process:
            locations = json.loads((work / STATE_FILE).read_text())["clips"]  # as the main process checked them
        shards = work / SHARDS_DIR
        embedder = _ShardEmbedder(model, processor, batch_size, num_workers)
        bounds = [(start, min(start + shard_size, len(locations))) for start in range(0, len(locations), shard_size)]

        def encode(shard: int) -> dict[str, int]:
            _encode_shard(embedder, shards, shard, locations[slice(*bounds[shard])], bounds[shard][0])
            return {"shards": 1}

        with _eval_mode(model):
            done = functools.partial(_shard_path, shards)
            run_shards(encode, done, [stop - start for start, stop in bounds], dist, (progress, "clip tokens", "clip"))
        dist.wait_for_everyone()
        if dist.is_main_process:
            metadata.token_fingerprint = fingerprint
            metadata.token_dim = embedder.token_dim
            metadata.audio_tokens_per_window = model.config.audio_tokens_per_window
            _write_new_version(folder, metadata, shards, len(bounds))
    dist.wait_for_everyone()
    return KnowledgeBaseMetadata.load(folder)


def _shard_path(shards: Path, shard: int) -> Path:
    return shards / f"{shard:05d}.parquet"


def _write_new_version(folder: Path, metadata: KnowledgeBaseMetadata, shards: Path, num_shards: int) -> None:
    """Stage the KB with the shards' tokens and errors and `metadata` (its other files linked in), load it back, swap
    it in."""
    tables = [pq.read_table(_shard_path(shards, shard)) for shard in range(num_shards)]
    counts = [count for table in tables for count in table.column("num_tokens").to_pylist()]
    parts = (_tokens(data, metadata.token_dim) for table in tables for data in table.column("tokens"))
    errors = "".join(f"{line}\n" for shard in range(num_shards) for line in _errors(shards, shard))
    with replacing_folder(folder, METADATA_FILE) as staging:
        link_folder(folder, staging, skip={TOKENS_FILE, ERRORS_FILE, METADATA_FILE})
        write_clip_tokens(staging / TOKENS_FILE, counts, parts, metadata.token_dim, metadata.token_fingerprint)
        (staging / ERRORS_FILE).write_text(errors)
        if metadata.files:  # the new token file's size and sha256 (a KB written before they were recorded stays so)
            metadata.files[TOKENS_FILE] = file_record(staging / TOKENS_FILE)
        metadata.save(staging)
        PairCapKnowledgeBase.from_pretrained(staging, verify="always")


def _prepare_work(work: Path, state: dict) -> None:
    """Record this job in `work` (its shards go to `work/shards`); a folder left by another job (encoder, clips, shard
    size) is refused."""
    (work / SHARDS_DIR).mkdir(parents=True, exist_ok=True)
    state_path = work / STATE_FILE
    if state_path.is_file() and json.loads(state_path.read_text()) != state:
        raise ValueError(f"{work} holds a token job of another encoder, KB or shard size; empty it or pass --work-dir")
    _write_json(state_path, state)


def _encode_shard(embedder: _ShardEmbedder, shards: Path, shard: int, locations: list[str], start: int) -> None:
    """Encode one shard's clips and write its tokens (float16 bytes, 0 tokens for a failed clip) and errors."""
    encoded, errors = embedder.encode_clips([{"path": location} for location in locations])
    lines = [json.dumps({"clip": start + i, "file": locations[i], "error": error}) for i, error in errors.items()]
    write_atomic(shards / f"{shard:05d}.errors.jsonl", lambda temp: temp.write_text("".join(f"{x}\n" for x in lines)))
    table = pa.table(
        {
            "num_tokens": pa.array([len(encoded[i].tokens) if i in encoded else 0 for i in range(len(locations))]),
            "tokens": pa.array(
                [encoded[i].tokens.tobytes() if i in encoded else b"" for i in range(len(locations))], pa.large_binary()
            ),
        }
    )
    write_atomic(_shard_path(shards, shard), lambda temp: pq.write_table(table, temp))


def _errors(shards: Path, shard: int) -> list[str]:
    return (shards / f"{shard:05d}.errors.jsonl").read_text().splitlines()


def _tokens(data, token_dim: int) -> np.ndarray:
    return np.frombuffer(data.as_py(), dtype=np.float16).reshape(-1, token_dim)
