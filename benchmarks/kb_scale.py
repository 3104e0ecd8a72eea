"""
KB scale: disk size, build time, load time and peak memory, and search latency of format-2 knowledge bases.

Synthetic knowledge bases in the real format, written by the project's own writer (`write_knowledge_base`, and
`write_clip_tokens` for the tokens): random unit `[audio ; text]` vectors of 512 + 512 dims (LAION-CLAP's), 5 captions
per clip as in Clotho (the 5 rows of a clip share its audio embedding), plausible ids and captions, and for a KB with
tokens one 10 s window per clip (32 pooled tokens x 768, float16). The rows are generated chunk by chunk into a
memory-mapped Arrow file (`datasets.Dataset.from_file`), so building 2.2 M pairs never holds the rows in memory; the
writer streams the parquet shards from it and holds the flat index it builds (the build's peak RSS is reported).

For each KB, in a fresh subprocess each time: `PairCapKnowledgeBase.from_pretrained` load time and peak RSS (the
child's VmHWM, and RssAnon / RssFile sampled from outside by the parent), cold (the KB's files evicted from the page
cache with `posix_fadvise(DONTNEED)`) and warm, and whether anything was written to the datasets cache or the KB
folder. The last warm load goes on (its load figures taken first) to single-query and batch-64 search latency
(`kb.search`, mode pair2pair, W 0.5, top 5) against raw faiss `index.search` (top 5) on the same index, interleaved,
with the same faiss settings as the index and with faiss's defaults, and the hits compared with faiss's (its top
hits cut to one per clip, as `max_pairs_per_clip=1` does). The baseline is today's format-1 loader
(`benchmarks/baseline_format1.py`: `load_dataset` into a fresh cache, `pair_vectors` copy, lists of ids) on the same
rows, and on a format-1 folder whose rows carry their clip's tokens (the old per-row layout).

    python benchmarks/kb_scale.py [--size tiny|full] [--sizes 127000 500000 2200000] [--token-sizes 127000]
        [--old-sizes 127000 500000 2200000] [--old-token-sizes 127000] [--output benchmarks/results/kb_scale-cpu.json]
        [--work-dir /work/tmp_bench] [--repeats 3] [--keep]
"""

from __future__ import annotations

import sys
from collections.abc import Iterator, Sequence
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run as `python benchmarks/<name>.py`

import argparse
import json
import os
import shutil
import statistics
import subprocess
import tempfile
import time

import numpy as np

AUDIO_DIM = TEXT_DIM = 512
CAPTIONS_PER_CLIP = 5
TOKENS_PER_CLIP = 32  # one 10 s window: 64 HTSAT tokens average-pooled with stride 2
TOKEN_DIM = 768
TOP_K = 5
FUSION_WEIGHT = 0.5
BATCH = 64
CHUNK_CLIPS = 13_000  # clips generated per chunk (65,000 rows)
MAX_SHARD_BYTES = 500 * 2**20
CHUNK_CLIPS_FORMAT1 = 200  # 1,000 rows: one parquet row group of format 1 (~50 MB of tokens)
SAMPLE_INTERVAL_S = 0.02
RESULT_PREFIX = "KB_SCALE_RESULT "
OLD_RSS_LIMIT = 20 * 10**9  # the format-1 loader is skipped where its peak RSS would exceed this
DEFAULTS = {
    "tiny": {"sizes": [2_000], "token_sizes": [2_000], "old_sizes": [2_000], "old_token_sizes": [2_000]},
    "full": {
        "sizes": [127_000, 500_000, 2_200_000],
        "token_sizes": [127_000],
        "old_sizes": [127_000, 500_000, 2_200_000],
        "old_token_sizes": [127_000],
    },
}
TARGETS = {
    "load_s_2.2M": 30.0,  # 2.2 M index-only pairs load in <= 30 s
    "peak_rss_over_vectors_2.2M": 1.25,  # ... with peak RSS <= 1.25 x the raw vector bytes
    "cold_load_s_tokens_127k": 15.0,  # 127 k pairs with tokens load cold in <= 15 s
    "rss_growth_over_token_bytes": 0.05,  # ... and their RSS does not grow with the token bytes (<= 5 % of them)
    "search_over_faiss": 1.10,  # PairCapIndex per-query time <= 1.10 x raw faiss
}
SUBJECTS = [
    "A dog",
    "A man",
    "A woman",
    "Children",
    "A car",
    "A train",
    "Birds",
    "A crowd",
    "Rain",
    "Water",
    "A cat",
    "An engine",
    "Footsteps",
    "A bell",
    "Wind",
    "A machine",
    "People",
    "A baby",
    "Thunder",
    "A motorcycle",
]
ACTIONS = [
    "barks loudly",
    "is speaking",
    "laugh and shout",
    "drives past",
    "passes by with a horn",
    "chirp",
    "cheers",
    "falls on a metal roof",
    "flows from a tap",
    "meows",
    "idles and revs",
    "echo in a hallway",
    "rings several times",
    "blows through the trees",
    "hums steadily",
    "talk in a busy market",
    "cries",
    "rumbles",
    "accelerates away",
    "clicks and whirs",
]
SETTINGS = [
    "in the distance",
    "while birds chirp",
    "as music plays",
    "near a busy road",
    "in a large room",
    "before it stops",
    "in the background",
    "on a rainy day",
    "while people talk",
    "over a steady hum",
]
SOURCES = ("clotho", "audiocaps", "wavcaps/freesound", "wavcaps/bbc_sound_effects", "wavcaps/soundbible")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--sizes", type=int, nargs="*", help="index-only KB sizes in pairs (full: 127000 500000 2200000)"
    )
    parser.add_argument("--token-sizes", type=int, nargs="*", help="KB sizes with clip tokens (full: 127000)")
    parser.add_argument("--old-sizes", type=int, nargs="*", help="sizes to load with the format-1 loader too")
    parser.add_argument(
        "--old-token-sizes", type=int, nargs="*", help="format-1 KBs with per-row tokens (full: 127000)"
    )
    parser.add_argument("--output", type=Path, help="the JSON file (default results/kb_scale-cpu[-tiny].json)")
    parser.add_argument("--work-dir", type=Path, default=Path("/work/tmp_bench"), help="where the synthetic KBs go")
    parser.add_argument("--repeats", type=int, default=3, help="fresh-process loads per KB and variant, interleaved")
    parser.add_argument("--single-queries", type=int, help="single queries timed per KB (default 20, 8 above 500 k)")
    parser.add_argument(
        "--keep", action="store_true", help="keep the synthetic KBs (deleted after measuring by default)"
    )


def setting(args: argparse.Namespace, name: str) -> list[int]:
    value = getattr(args, name)
    return DEFAULTS[args.size][name] if value is None else value


# ------------------------------------------------------------------------------------------------- memory and disk
def proc_status(pid: int | str = "self") -> dict[str, int]:
    """The memory lines of /proc/<pid>/status, in bytes (VmRSS, VmHWM, RssAnon, RssFile)."""
    values = {}
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            key, _, rest = line.partition(":")
            if key in ("VmRSS", "VmHWM", "RssAnon", "RssFile"):
                values[key] = int(rest.split()[0]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return values


def folder_files(folder: Path) -> dict[str, int]:
    """Every file under `folder` with its size."""
    if not folder.exists():
        return {}
    return {str(path.relative_to(folder)): path.stat().st_size for path in folder.rglob("*") if path.is_file()}


def evict(folder: Path) -> None:
    """Drop `folder`'s files from the page cache (written back first), so the next read comes from the disk."""
    for path in folder.rglob("*"):
        if path.is_file():
            fd = os.open(path, os.O_RDONLY)
            try:
                os.fsync(fd)
                os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
            finally:
                os.close(fd)


def run_worker(task: dict, timeout: float = 3600) -> dict:
    """Run `task` in a fresh `python kb_scale.py --worker` process; its result, with the RSS peaks sampled from here."""
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", **task.pop("env", {})}
    command = [sys.executable, str(Path(__file__).resolve()), "--worker", json.dumps(task)]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    peaks = {"RssAnon": 0, "RssFile": 0, "VmRSS": 0}
    start = time.perf_counter()
    while process.poll() is None:
        for key, value in proc_status(process.pid).items():
            if key in peaks:
                peaks[key] = max(peaks[key], value)
        if time.perf_counter() - start > timeout:
            process.kill()
        time.sleep(SAMPLE_INTERVAL_S)
    stdout, stderr = process.communicate()
    lines = [line for line in stdout.splitlines() if line.startswith(RESULT_PREFIX)]
    if process.returncode != 0 or not lines:
        raise RuntimeError(f"worker {task['task']} failed ({process.returncode}):\n{stdout[-2000:]}\n{stderr[-4000:]}")
    result = json.loads(lines[-1][len(RESULT_PREFIX) :])
    result["sampled_peak_anon_bytes"] = peaks["RssAnon"]
    result["sampled_peak_file_bytes"] = peaks["RssFile"]
    return result


# ------------------------------------------------------------------------------------------------- synthetic rows
def unit_rows(rng: np.random.Generator, num: int, dim: int) -> np.ndarray:
    vectors = rng.standard_normal((num, dim), dtype=np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    return vectors


def caption_pool() -> list[str]:
    """Caption-like sentences: subject + action + setting (4,000 distinct, ~40-60 characters)."""
    return [f"{s} {a} {c}." for s in SUBJECTS for a in ACTIONS for c in SETTINGS]


def clip_ids(clips: range) -> tuple[list[str], list[str]]:
    """Sources and audio ids of a range of clips."""
    sources = [SOURCES[clip % len(SOURCES)] for clip in clips]
    return sources, [f"{source.split('/')[-1]}_{clip:07d}.wav" for source, clip in zip(sources, clips, strict=True)]


def chunk_columns(seed: int, num_clips: int, start: int, stop: int) -> dict:
    """The columns of the rows of clips `start:stop` (5 rows each), drawn from a generator seeded by chunk."""
    rng = np.random.default_rng([seed, start])
    clips = range(start, stop)
    rows = len(clips) * CAPTIONS_PER_CLIP
    sources, audio_ids = clip_ids(clips)
    pool = caption_pool()
    captions = [pool[i] for i in rng.integers(0, len(pool), rows)]
    durations = rng.uniform(5.0, 30.0, len(clips)).astype(np.float32)
    return {
        "pair_id": [f"{s}/train/{a}/{j}" for s, a in zip(sources, audio_ids, strict=True) for j in range(5)],
        "audio_id": [a for a in audio_ids for _ in range(CAPTIONS_PER_CLIP)],
        "caption": captions,
        "source": [s for s in sources for _ in range(CAPTIONS_PER_CLIP)],
        "split": ["train"] * rows,
        "duration": np.repeat(durations, CAPTIONS_PER_CLIP),
        "has_audio": np.ones(rows, dtype=bool),
        "clip_index": np.repeat(np.arange(start, stop, dtype=np.int32), CAPTIONS_PER_CLIP),
        "audio_embedding": np.repeat(unit_rows(rng, len(clips), AUDIO_DIM), CAPTIONS_PER_CLIP, axis=0),
        "text_embedding": unit_rows(rng, rows, TEXT_DIM),
        "clip_duration": durations,
        "clip_audio_id": audio_ids,
    }


def clip_token_blocks(seed: int, num_clips: int) -> Iterator[np.ndarray]:
    """Random float16 `(TOKENS_PER_CLIP, TOKEN_DIM)` tokens of every clip, in clip order."""
    for start in range(0, num_clips, 256):
        rng = np.random.default_rng([seed, 7, start])
        block = rng.standard_normal((min(256, num_clips - start), TOKENS_PER_CLIP, TOKEN_DIM), dtype=np.float32)
        yield from block.astype(np.float16)


def arrow_list(pa, values: np.ndarray):
    """A fixed-size list array over a `(rows, dim)` matrix (no copy)."""
    return pa.FixedSizeListArray.from_arrays(pa.array(values.reshape(-1)), values.shape[1])


def row_batches(num_pairs: int, seed: int, format1: bool, clips: dict) -> Iterator:
    """
    The rows as Arrow record batches in the format-2 row schema, or format 1's (its tokens in every row, the
    `audio_tokens` column in its Arrow storage type with the datasets features in the schema metadata); the clips'
    ids and durations are appended to `clips`.
    """
    import pyarrow as pa

    from benchmarks.baseline_format1 import format1_features
    from modeling_paircap.kb_format_paircap import kb_row_features

    num_clips = num_pairs // CAPTIONS_PER_CLIP
    features = format1_features(AUDIO_DIM, TEXT_DIM, TOKEN_DIM) if format1 else kb_row_features(AUDIO_DIM, TEXT_DIM)
    schema = features.arrow_schema
    if format1:
        tokens_type = schema.field("audio_tokens").type
        schema = schema.set(schema.get_field_index("audio_tokens"), pa.field("audio_tokens", tokens_type.storage_type))
    tokens = clip_token_blocks(seed, num_clips) if format1 else None
    chunk = CHUNK_CLIPS_FORMAT1 if format1 else CHUNK_CLIPS  # format 1: 50 KB of tokens per row
    for start in range(0, num_clips, chunk):
        stop = min(start + chunk, num_clips)
        columns = chunk_columns(seed, num_clips, start, stop)
        clips["audio_id"] += columns.pop("clip_audio_id")
        clips["duration"].append(columns.pop("clip_duration"))
        for name in ("audio_embedding", "text_embedding"):
            columns[name] = arrow_list(pa, columns[name])
        if format1:
            del columns["clip_index"]
            columns["is_long"] = columns["duration"] > 10.0
            columns["audio_tokens"] = format1_tokens(pa, tokens, stop - start)
        arrays = [
            value if isinstance(value := columns[field.name], pa.Array) else pa.array(value, field.type)
            for field in schema
        ]
        yield pa.record_batch(arrays, schema=schema)


def stage_rows(path: Path, num_pairs: int, seed: int) -> tuple[object, dict]:
    """Write the format-2 rows chunk by chunk to an Arrow stream file and return it memory-mapped as a
    `datasets.Dataset` (what `embed_pairs` hands the writer), plus the clip columns."""
    import datasets
    import pyarrow as pa

    clips = {"audio_id": [], "duration": []}
    batches = row_batches(num_pairs, seed, False, clips)
    first = next(batches)
    with pa.OSFile(str(path), "wb") as sink, pa.ipc.new_stream(sink, first.schema) as writer:
        writer.write_batch(first)
        for batch in batches:
            writer.write_batch(batch)
    clips["duration"] = np.concatenate(clips["duration"])
    return datasets.Dataset.from_file(str(path)), clips


def format1_tokens(pa, tokens: Iterator[np.ndarray], num_clips: int):
    """Format 1's `audio_tokens` column for `num_clips` clips: each clip's tokens repeated in its 5 rows."""
    block = np.stack([next(tokens) for _ in range(num_clips)])  # (clips, tokens, dim)
    values = np.repeat(block, CAPTIONS_PER_CLIP, axis=0).reshape(-1)
    rows = num_clips * CAPTIONS_PER_CLIP
    inner = pa.ListArray.from_arrays(
        pa.array(np.arange(0, len(values) + 1, TOKEN_DIM, dtype=np.int32)), pa.array(values)
    )
    outer = pa.ListArray.from_arrays(
        pa.array(np.arange(0, rows * TOKENS_PER_CLIP + 1, TOKENS_PER_CLIP, dtype=np.int32)), inner
    )
    return outer


def clip_table(clips: dict):
    import pyarrow as pa

    from modeling_paircap.kb_format_paircap import clip_schema

    durations = clips["duration"]
    return pa.table(
        {
            "audio_id": clips["audio_id"],
            "is_long": durations > 10.0,
            "duration": durations,
            "audio_root": ["synthetic"] * len(durations),
            "audio_path": [f"audio/{audio_id}" for audio_id in clips["audio_id"]],
        },
        schema=clip_schema(),
    )


# -------------------------------------------------------------------------------------------------------- workers
def build_task(task: dict) -> dict:
    """Synthesise rows (and tokens) and write a format-2 KB with `write_knowledge_base` (format 1: its shards)."""
    from modeling_paircap.kb_format_paircap import KnowledgeBaseMetadata, write_knowledge_base
    from modeling_paircap.tokens_paircap import TOKENS_FILE, ClipTokenStore, write_clip_tokens

    folder, staging, num_pairs, seed = Path(task["folder"]), Path(task["staging"]), task["num_pairs"], task["seed"]
    num_clips = num_pairs // CAPTIONS_PER_CLIP
    folder.mkdir(parents=True, exist_ok=True)
    result = {}
    if task["format1"]:
        start = time.perf_counter()
        write_format1(folder, num_pairs, seed, Path(task["index_from"]))
        result["write_s"] = time.perf_counter() - start  # generation included
        result["peak_rss_bytes"] = proc_status().get("VmHWM", 0)
        return result
    start = time.perf_counter()
    rows, clips = stage_rows(staging, num_pairs, seed)
    result.update(generate_s=time.perf_counter() - start, staging_bytes=staging.stat().st_size)
    store = None
    if task["tokens"]:
        start = time.perf_counter()
        counts = [TOKENS_PER_CLIP] * num_clips
        write_clip_tokens(folder / TOKENS_FILE, counts, clip_token_blocks(seed, num_clips), TOKEN_DIM, "synthetic")
        result["tokens_write_s"] = time.perf_counter() - start
        store = ClipTokenStore(folder / TOKENS_FILE, num_clips=num_clips)
    metadata = KnowledgeBaseMetadata(
        retrieval_fingerprint="synthetic-retrieval-clap",
        audio_dim=AUDIO_DIM,
        text_dim=TEXT_DIM,
        num_pairs=num_pairs,
        num_clips=num_clips,
        token_fingerprint="synthetic" if task["tokens"] else None,
        token_dim=TOKEN_DIM if task["tokens"] else 0,
        audio_tokens_per_window=TOKENS_PER_CLIP if task["tokens"] else 0,
        sources={source: num_pairs // len(SOURCES) for source in SOURCES},
        recipe={"name": "kb_scale synthetic", "seed": seed},
    )
    start = time.perf_counter()
    write_knowledge_base(folder, rows, clip_table(clips), metadata, index=None, tokens=store)
    result["write_s"] = time.perf_counter() - start
    result["peak_rss_bytes"] = proc_status().get("VmHWM", 0)
    return result


def write_format1(folder: Path, num_pairs: int, seed: int, index_from: Path) -> None:
    """
    A format-1 folder: its row shards (~500 MiB each, as its `write_knowledge_base` cut them; written with pyarrow in
    row groups of 1,000 rows rather than through `Dataset.to_parquet`, which takes minutes on the token column) and
    the index (a hard link to the format-2 KB's, built from the same vectors).
    """
    import pyarrow.parquet as pq

    data = folder / "data"
    data.mkdir(parents=True, exist_ok=True)
    writer, written, shard = None, 0, 0
    for batch in row_batches(num_pairs, seed, True, {"audio_id": [], "duration": []}):
        if writer is None or written >= MAX_SHARD_BYTES:
            if writer is not None:
                writer.close()
            writer = pq.ParquetWriter(str(data / f"train-{shard:05d}.parquet"), batch.schema)
            written, shard = 0, shard + 1
        writer.write_batch(batch)
        written += batch.nbytes
    writer.close()
    os.link(index_from, folder / "index.faiss")


def load_task(task: dict) -> dict:
    """Load a KB in this fresh process (format 2 with `from_pretrained`, or format 1's loader) and report its cost."""
    import datasets  # noqa: F401  (imports happen before the clock starts, as in a program that loads a KB)
    import faiss  # noqa: F401

    from benchmarks.baseline_format1 import load_format1
    from modeling_paircap.knowledge_base_paircap import PairCapKnowledgeBase

    before = proc_status()
    start = time.perf_counter()
    if task["loader"] == "format1":
        kb = load_format1(task["folder"], task["cache_dir"], AUDIO_DIM)
    else:
        kb = PairCapKnowledgeBase.from_pretrained(task["folder"])
    load_s = time.perf_counter() - start
    after = proc_status()
    result = {"load_s": load_s, "rss_before_bytes": before.get("VmRSS", 0), "peak_rss_bytes": after.get("VmHWM", 0)}
    result.update(rss_after_bytes=after.get("VmRSS", 0), anon_after_bytes=after.get("RssAnon", 0))
    if task.get("search"):
        result["search"] = search_task(kb, task)
    del kb
    return result


def search_task(kb, task: dict) -> dict:
    """Interleaved latency of `kb.search` and raw faiss on its index, single queries and batches of 64."""
    import faiss

    from modeling_paircap.index_paircap import build_query, faiss_search_settings

    pair_index, index = kb.index, kb.index.faiss_index
    rng = np.random.default_rng(12345)
    num_batches = task["repeats"] + 1
    audio = unit_rows(rng, BATCH * num_batches + task["single_queries"] + 1, AUDIO_DIM)
    text = unit_rows(rng, len(audio), TEXT_DIM)
    queries = build_query("pair2pair", audio, text, FUSION_WEIGHT)

    def ours(rows: slice):
        return kb.search(audio[rows], text[rows], mode="pair2pair", fusion_weight=FUSION_WEIGHT, top_k=TOP_K)

    def faiss_same_settings(rows: slice):
        with faiss_search_settings(len(queries[rows]), pair_index.blas_threshold, pair_index.single_query_threads):
            return index.search(queries[rows], TOP_K)

    def faiss_defaults(rows: slice):
        return index.search(queries[rows], TOP_K)

    methods = {
        "kb.search": ours,
        "faiss, the index's settings": faiss_same_settings,
        "faiss defaults": faiss_defaults,
    }
    timings: dict[str, dict[str, list[float]]] = {"single": {m: [] for m in methods}, "batch": {m: [] for m in methods}}
    agree = {"same_rows": True, "max_score_diff": 0.0}

    fetch = min(len(pair_index), TOP_K * min(pair_index.max_rows_per_clip, 8) + 1)

    def compare(hits, rows: slice) -> None:
        """The hits against faiss's own top `fetch`, ordered (S desc, row asc) and cut to one row per clip."""
        scores, found = index.search(queries[rows], fetch)
        for query_hits, query_scores, query_rows in zip(hits, scores, found, strict=True):
            order = np.lexsort((query_rows, -query_scores))
            _, first = np.unique(kb.clip_index[query_rows[order]], return_index=True)
            keep = order[np.sort(first)][:TOP_K]
            agree["same_rows"] &= [hit.row for hit in query_hits] == query_rows[keep].tolist()
            if len(query_hits) == len(keep):
                diff = np.abs(np.array([hit.score for hit in query_hits]) - query_scores[keep]).max()
                agree["max_score_diff"] = max(agree["max_score_diff"], float(diff))

    def timed(kind: str, rows: slice) -> None:
        outputs = {}
        for name, method in methods.items():
            start = time.perf_counter()
            outputs[name] = method(rows)
            timings[kind][name].append(time.perf_counter() - start)
        compare(outputs["kb.search"], rows)

    single_start = BATCH * num_batches
    for method in methods.values():  # warm-up
        method(slice(single_start, single_start + 1))
    for i in range(task["single_queries"]):
        timed("single", slice(single_start + 1 + i, single_start + 2 + i))
    for method in methods.values():
        method(slice(0, BATCH))
    for rep in range(1, num_batches):
        timed("batch", slice(rep * BATCH, (rep + 1) * BATCH))
    result = {"timings": timings, **agree, "faiss_threads": faiss.omp_get_max_threads()}
    result["fetched_per_query"] = fetch
    if kb.tokens is not None:
        hits = ours(slice(0, BATCH))
        examples = []
        for rep in range(num_batches):
            hits = ours(slice(rep * BATCH, (rep + 1) * BATCH))
            start = time.perf_counter()
            kb.examples(hits)
            examples.append(time.perf_counter() - start)
        result["examples_s"] = examples  # the first is the cold read of those clips' tokens
    return result


def worker(task: dict) -> None:
    result = build_task(task) if task["task"] == "build" else load_task(task)
    print(RESULT_PREFIX + json.dumps(result), flush=True)


# ------------------------------------------------------------------------------------------------------ measuring
class Bench:
    """Builds, loads and searches every KB in `args`, collecting result rows."""

    def __init__(self, args: argparse.Namespace):
        self.args = args
        self.work = Path(tempfile.mkdtemp(prefix="kb_scale-", dir=args.work_dir))
        self.builds, self.loads, self.searches, self.skipped = [], [], [], []
        self.old_rss_per_pair: float | None = None

    def kb_name(self, num_pairs: int, tokens: bool, format1: bool = False) -> str:
        return f"{num_pairs // 1000}k{' + tokens' if tokens else ''}{' (format 1)' if format1 else ''}"

    def build(self, num_pairs: int, tokens: bool, format1: bool = False, index_from: Path | None = None) -> Path:
        folder = self.work / f"kb-{num_pairs}{'-tokens' if tokens else ''}{'-format1' if format1 else ''}"
        staging = self.work / "staging.arrow"
        task = {"task": "build", "folder": str(folder), "staging": str(staging), "num_pairs": num_pairs, "seed": 0}
        task.update(tokens=tokens, format1=format1, index_from=str(index_from) if index_from else None)
        result = run_worker(task)
        staging.unlink(missing_ok=True)
        files = folder_files(folder)
        part = {"rows": 0, "index": 0, "tokens": 0, "clips": 0, "other": 0}
        kinds = {"index.faiss": "index", "tokens.safetensors": "tokens", "clips.parquet": "clips"}
        for name, size in files.items():
            part["rows" if name.startswith("data/") else kinds.get(name, "other")] += size
        raw_vectors = num_pairs * (AUDIO_DIM + TEXT_DIM) * 4
        num_clips = num_pairs // CAPTIONS_PER_CLIP
        row = {
            "kb": self.kb_name(num_pairs, tokens, format1),
            "format": 1 if format1 else 2,
            "num_pairs": num_pairs,
            "num_clips": num_clips,
            "disk_bytes": sum(files.values()) - (part["index"] if format1 else 0),  # format 1's index is a hard link
            "rows_bytes": part["rows"],
            "index_bytes": part["index"],
            "clips_bytes": part["clips"],
            "raw_vector_bytes": raw_vectors,
            "write_s": result["write_s"],
            "build_peak_rss_bytes": result["peak_rss_bytes"],
            "build_sampled_peak_anon_bytes": result["sampled_peak_anon_bytes"],
        }
        if "generate_s" in result:
            row["generate_s"] = result["generate_s"]
        if tokens and not format1:
            row["tokens_bytes"] = part["tokens"]
            row["tokens_write_s"] = result["tokens_write_s"]
        if tokens:
            row["per_row_layout_token_bytes"] = num_pairs * TOKENS_PER_CLIP * TOKEN_DIM * 2
        self.builds.append(row)
        print(f"built {row['kb']}: {row['disk_bytes'] / 1e9:.2f} GB in {row['write_s']:.1f} s", flush=True)
        return folder

    def load_once(self, folder: Path, loader: str, cold: bool, search: bool = False) -> dict:
        cache = self.work / "datasets-cache"
        shutil.rmtree(cache, ignore_errors=True)
        before = folder_files(folder)
        if cold:
            evict(folder)
        task = {"task": "load", "folder": str(folder), "loader": loader, "cache_dir": str(cache), "search": search}
        task.update(repeats=self.args.repeats, single_queries=self.single_queries(folder))
        task["env"] = {"HF_DATASETS_CACHE": str(cache)}
        result = run_worker(task)
        result["cache_bytes"] = sum(folder_files(cache).values())
        result["folder_unchanged"] = folder_files(folder) == before
        shutil.rmtree(cache, ignore_errors=True)
        return result

    def single_queries(self, folder: Path) -> int:
        if self.args.single_queries is not None:
            return self.args.single_queries
        return 20 if int(folder.name.split("-")[1]) <= 500_000 else 8

    def measure_loads(
        self,
        folder: Path,
        num_pairs: int,
        tokens: bool,
        variants: Sequence[tuple[str, bool]],
        format1_folder: bool = False,
    ) -> tuple[list[dict], dict | None]:
        """
        `repeats` fresh-process loads of each (loader, cold) variant, interleaved; one row per variant. The last warm
        format-2 load goes on to measure search (after its load figures were taken); returns that search result.
        """
        runs = {variant: [] for variant in variants}
        search = None
        for repeat in range(self.args.repeats):
            for variant in variants:
                last_warm = repeat == self.args.repeats - 1 and variant == ("format2", False)
                runs[variant].append(self.load_once(folder, *variant, search=last_warm))
                search = runs[variant][-1].get("search", search)
        rows = []
        raw_vectors = num_pairs * (AUDIO_DIM + TEXT_DIM) * 4
        for (loader, cold), results in runs.items():
            peak = statistics.median(r["peak_rss_bytes"] for r in results)
            row = {
                "kb": self.kb_name(num_pairs, tokens, format1_folder),
                "loader": "format 1 (load_dataset)" if loader == "format1" else "format 2 (from_pretrained)",
                "cache": "cold" if cold else "warm",
                "num_pairs": num_pairs,
                "load_s": statistics.median(r["load_s"] for r in results),
                "peak_rss_bytes": peak,
                "peak_rss_over_vectors": peak / raw_vectors,
                "load_rss_increase_bytes": statistics.median(
                    r["peak_rss_bytes"] - r["rss_before_bytes"] for r in results
                ),
                "sampled_peak_anon_bytes": statistics.median(r["sampled_peak_anon_bytes"] for r in results),
                "rss_after_bytes": statistics.median(r["rss_after_bytes"] for r in results),
                "datasets_cache_bytes": max(r["cache_bytes"] for r in results),
                "kb_folder_unchanged": all(r["folder_unchanged"] for r in results),
                "raw_load_s": [r["load_s"] for r in results],
                "raw_peak_rss_bytes": [r["peak_rss_bytes"] for r in results],
            }
            rows.append(row)
            print(
                f"  {row['kb']} {row['loader']} {row['cache']}: {row['load_s']:.2f} s, peak RSS "
                f"{row['peak_rss_bytes'] / 1e9:.2f} GB ({row['peak_rss_over_vectors']:.2f}x vectors)",
                flush=True,
            )
        self.loads += rows
        return rows, search

    def add_search(self, result: dict, num_pairs: int, tokens: bool) -> None:
        """Search rows from a worker's search result: per method and batch size, medians and ratios to faiss."""
        name = self.kb_name(num_pairs, tokens)
        for kind, batch in (("single", 1), ("batch", BATCH)):
            for method, seconds in result["timings"][kind].items():
                median_ms = 1000 * statistics.median(seconds)
                row = {"kb": name, "num_pairs": num_pairs, "batch": batch, "method": method, "median_ms": median_ms}
                row.update(per_query_ms=median_ms / batch, repeats=len(seconds), raw_s=seconds)
                self.searches.append(row)
        for row in self.searches:
            if row["kb"] != name:
                continue
            kind = "single" if row["batch"] == 1 else "batch"
            reference = 1000 * statistics.median(result["timings"][kind]["faiss, the index's settings"])
            # per-query ratio of the same calls, so the noise of the machine hits both alike
            paired = [
                ours / raw
                for ours, raw in zip(
                    result["timings"][kind][row["method"]],
                    result["timings"][kind]["faiss, the index's settings"],
                    strict=True,
                )
            ]
            row["over_faiss_same_settings"] = row["median_ms"] / reference
            row["paired_median_over_faiss"] = statistics.median(paired)
            if row["method"] == "kb.search":
                row["same_rows_as_faiss"] = result["same_rows"]
                row["max_score_diff"] = result["max_score_diff"]
                row["fetched_per_query"] = result["fetched_per_query"]
                if "examples_s" in result and row["batch"] == BATCH:
                    row["examples_first_ms"] = 1000 * result["examples_s"][0]
                    row["examples_ms"] = 1000 * statistics.median(result["examples_s"][1:] or result["examples_s"])

    def skip_old(self, num_pairs: int) -> str | None:
        """Why the format-1 loader is not run at this size (its peak RSS, extrapolated per pair, over the limit)."""
        estimate = (self.old_rss_per_pair or 3.2 * (AUDIO_DIM + TEXT_DIM) * 4) * num_pairs
        if estimate > OLD_RSS_LIMIT:
            return (
                f"format-1 loader skipped: its peak RSS would be about {estimate / 1e9:.1f} GB "
                f"(extrapolated per pair from the largest size measured), over the {OLD_RSS_LIMIT / 1e9:.0f} GB limit"
            )
        return None

    def run(self) -> None:
        args = self.args
        old_sizes, token_sizes = set(setting(args, "old_sizes")), set(setting(args, "token_sizes"))
        old_token_sizes = set(setting(args, "old_token_sizes"))
        plan = sorted({(n, False) for n in setting(args, "sizes")} | {(n, True) for n in token_sizes})
        for num_pairs, tokens in plan:
            if (reason := self.cannot_build(num_pairs, tokens)) is not None:
                self.skipped.append({"kb": self.kb_name(num_pairs, tokens), "reason": reason})
                print(reason, flush=True)
                continue
            folder = self.build(num_pairs, tokens)
            variants = [("format2", True), ("format2", False)]
            reason = self.skip_old(num_pairs) if num_pairs in old_sizes and not tokens else None
            if num_pairs in old_sizes and not tokens and reason is None:
                variants.append(("format1", True))
            elif reason:
                self.skipped.append({"kb": self.kb_name(num_pairs, tokens), "reason": reason})
                print(reason, flush=True)
            rows, search = self.measure_loads(folder, num_pairs, tokens, variants)
            old = [row for row in rows if row["loader"].startswith("format 1")]
            if old:
                self.old_rss_per_pair = old[0]["peak_rss_bytes"] / num_pairs
            self.add_search(search, num_pairs, tokens)
            if tokens and num_pairs in old_token_sizes:
                old_folder = self.build(num_pairs, True, format1=True, index_from=folder / "index.faiss")
                self.measure_loads(old_folder, num_pairs, True, [("format1", True)], format1_folder=True)
                self.remove(old_folder)
            self.remove(folder)

    def cannot_build(self, num_pairs: int, tokens: bool) -> str | None:
        raw = num_pairs * (AUDIO_DIM + TEXT_DIM) * 4
        need_disk = 3.2 * raw + (num_pairs * TOKENS_PER_CLIP * TOKEN_DIM * 2 * 2.2 if tokens else 0)
        free_disk = shutil.disk_usage(self.work).free
        available = proc_meminfo("MemAvailable")
        name = self.kb_name(num_pairs, tokens)
        if free_disk < need_disk:
            return f"{name}: skipped, needs ~{need_disk / 1e9:.0f} GB of disk ({free_disk / 1e9:.0f} free)"
        if available and available < 1.3 * raw:
            return f"{name}: skipped, needs ~{1.3 * raw / 1e9:.0f} GB of RAM ({available / 1e9:.0f} available)"
        return None

    def remove(self, folder: Path) -> None:
        if not self.args.keep:
            shutil.rmtree(folder, ignore_errors=True)

    def close(self) -> None:
        if not self.args.keep:
            shutil.rmtree(self.work, ignore_errors=True)


def proc_meminfo(key: str) -> int | None:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith(f"{key}:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


# -------------------------------------------------------------------------------------------------------- targets
def check_targets(bench: Bench) -> list[dict]:
    """The issue's targets against the rows measured (only those whose KB was measured)."""
    checks = []

    def check(target: str, measured: float, limit: float, kb: str) -> None:
        checks.append({"target": target, "kb": kb, "measured": measured, "limit": limit, "met": measured <= limit})

    loads = [row for row in bench.loads if row["loader"].startswith("format 2")]
    for row in loads:
        if row["num_pairs"] == 2_200_000 and "tokens" not in row["kb"]:
            check(f"load_s ({row['cache']}) <= 30", row["load_s"], TARGETS["load_s_2.2M"], row["kb"])
            check(
                f"peak RSS / vector bytes ({row['cache']}) <= 1.25",
                row["peak_rss_over_vectors"],
                TARGETS["peak_rss_over_vectors_2.2M"],
                row["kb"],
            )
    for row in loads:
        if "tokens" in row["kb"] and row["cache"] == "cold":
            check("cold load_s <= 15", row["load_s"], TARGETS["cold_load_s_tokens_127k"], row["kb"])
            check("datasets cache bytes written <= 0", row["datasets_cache_bytes"], 0, row["kb"])
            check("KB folder changed by loading (0/1) <= 0", float(not row["kb_folder_unchanged"]), 0, row["kb"])
            plain = [
                r
                for r in loads
                if r["num_pairs"] == row["num_pairs"] and "tokens" not in r["kb"] and r["cache"] == "cold"
            ]
            build = [b for b in bench.builds if b["kb"] == row["kb"]]
            if plain and build:
                growth = (row["peak_rss_bytes"] - plain[0]["peak_rss_bytes"]) / build[0]["tokens_bytes"]
                check(
                    "peak RSS growth over index-only / token bytes <= 0.05",
                    growth,
                    TARGETS["rss_growth_over_token_bytes"],
                    row["kb"],
                )
    for row in bench.searches:
        if row["method"] == "kb.search":
            check(
                f"kb.search / faiss per query, batch {row['batch']} <= 1.10",
                row["paired_median_over_faiss"],
                TARGETS["search_over_faiss"],
                row["kb"],
            )
    return checks


def in_gb(row: dict) -> dict:
    """`row` with every `*_bytes` number also as `*_GB`, for the tables."""
    sizes = {key: value for key, value in row.items() if key.endswith("_bytes") and isinstance(value, (int, float))}
    return {**row, **{key.removesuffix("_bytes") + "_GB": value / 1e9 for key, value in sizes.items()}}


BUILD_COLUMNS = [
    "kb",
    "num_pairs",
    "num_clips",
    "disk_GB",
    "rows_GB",
    "index_GB",
    "tokens_GB",
    "per_row_layout_token_GB",
    "raw_vector_GB",
    "generate_s",
    "write_s",
    "tokens_write_s",
    "build_peak_rss_GB",
    "build_sampled_peak_anon_GB",
]
LOAD_COLUMNS = [
    "kb",
    "loader",
    "cache",
    "load_s",
    "peak_rss_GB",
    "peak_rss_over_vectors",
    "load_rss_increase_GB",
    "sampled_peak_anon_GB",
    "datasets_cache_GB",
    "kb_folder_unchanged",
]
SEARCH_COLUMNS = [
    "kb",
    "batch",
    "method",
    "median_ms",
    "per_query_ms",
    "over_faiss_same_settings",
    "paired_median_over_faiss",
    "same_rows_as_faiss",
    "max_score_diff",
    "examples_ms",
]


def result_tables(results: dict) -> list[str]:
    """The markdown tables of a results payload (builds, loads, searches, targets, skipped)."""
    from benchmarks.common import markdown_table

    tables = [
        markdown_table(
            "Builds (write_knowledge_base; format 1: its shards)", list(map(in_gb, results["builds"])), BUILD_COLUMNS
        ),
        markdown_table("Loads (fresh process; medians)", list(map(in_gb, results["loads"])), LOAD_COLUMNS),
        markdown_table("Search (pair2pair, top 5; medians, interleaved)", results["searches"], SEARCH_COLUMNS),
        markdown_table("Targets", results["targets"], ["target", "kb", "measured", "limit", "met"]),
    ]
    if results["skipped"]:
        tables.append(markdown_table("Skipped", results["skipped"], ["kb", "reason"]))
    return tables


def main(argv: Sequence[str] | None = None) -> dict:
    """Run the benchmark and write `kb_scale-cpu.json/.md` (tiny: `kb_scale-cpu-tiny`)."""
    import faiss

    from benchmarks.common import RESULTS_DIR, environment, parse_args, write_results

    args = parse_args(__doc__.strip().splitlines()[0], argv, add_arguments)
    if args.device != "cpu":
        raise SystemExit("kb_scale.py measures CPU loading and faiss search: run it with --device cpu")
    args.work_dir.mkdir(parents=True, exist_ok=True)
    output = (
        args.output or (args.output_dir or RESULTS_DIR) / f"kb_scale-cpu{'-tiny' if args.size == 'tiny' else ''}.json"
    )

    env = {**environment("cpu"), "faiss": faiss.__version__, "faiss_threads": faiss.omp_get_max_threads()}
    bench = Bench(args)
    try:
        bench.run()
    finally:
        bench.close()
    targets = check_targets(bench)
    settings = {name: setting(args, name) for name in ("sizes", "token_sizes", "old_sizes", "old_token_sizes")}
    settings.update(
        audio_dim=AUDIO_DIM,
        text_dim=TEXT_DIM,
        captions_per_clip=CAPTIONS_PER_CLIP,
        tokens_per_clip=TOKENS_PER_CLIP,
        token_dim=TOKEN_DIM,
        mode="pair2pair",
        fusion_weight=FUSION_WEIGHT,
        top_k=TOP_K,
        batch=BATCH,
        repeats=args.repeats,
        old_rss_limit_bytes=OLD_RSS_LIMIT,
        baseline="format-1 loader of commit 2933174 (benchmarks/baseline_format1.py)",
        cold="the KB's files evicted from the page cache (posix_fadvise DONTNEED) before each fresh process",
    )
    results = {
        "builds": bench.builds,
        "loads": bench.loads,
        "searches": bench.searches,
        "targets": targets,
        "skipped": bench.skipped,
    }
    tables = result_tables(results)
    return write_results(args, "kb_scale", env, settings, results, tables, path=output)


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "--worker":
        worker(json.loads(sys.argv[2]))
    else:
        main()
