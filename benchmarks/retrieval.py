"""
Retrieval: queries/s and latency of pair-to-pair search over synthetic knowledge bases.

The KB holds L2-normalised `[audio ; text]` pair vectors (512 + 512 dims at full size). Ours is
`PairCapIndex.search` (mode `pair2pair`, W = 0.5, top 10), the call `generate` makes: exact with faiss
`IndexFlatIP` (the default) or the chunked torch matmul (`device=`), approximate with an index from `build_index`
(HNSW / IVF factory strings), whose recall@10 against exact search comes from `recall_at_k`. The baseline is a
hand-written brute force: numpy matmul + argpartition on the CPU, torch matmul + topk on the GPU (float32, and float16
as a reference). On a GPU only the exact methods run (the approximate indexes are faiss CPU indexes).

Synthetic vectors: "topics" (pairs scattered around random topic centres, 64 pairs per topic) or "uniform" (uniform
on the sphere: no structure at all, approximate search's worst case).

Batch sweep (CPU, exact, the first distribution): at batches of 1, 8, 32, 64 and 256 queries, `PairCapKnowledgeBase
.search` (over the Arrow search columns, as `from_pretrained` holds them) against the libraries on the same vectors:
raw faiss `index.search` on the same index, with faiss's defaults and with the index's settings, and the numpy
brute force, interleaved; every method's ids and scores are checked against faiss's. At batch 1 also with
`single_query_threads=1`.

    python -m benchmarks.retrieval [--size tiny|full] [--device cpu|cuda] [--output-dir benchmarks/results]
        [--kb-sizes 127000 2200000] [--distributions topics uniform] [--indexes HNSW32 IVF1024,Flat | none]
        [--batch-sizes 1 8 32 64 256 | none] [--sweep-repeats 5]
"""

from __future__ import annotations

import argparse
import itertools
import statistics
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field

import faiss
import numpy as np
import pyarrow as pa
import torch

from benchmarks.common import ListOrNone, environment, markdown_table, measure, parse_args, target_check, write_results
from benchmarks.search_baselines import faiss_search, numpy_search
from benchmarks.synthetic_kb import caption_pool
from datasets_scripts.faiss_index import (
    build_index,
    default_search_params,
    describe_index,
    recall_at_k,
    set_search_params,
)
from modeling_paircap.index_paircap import PairCapIndex, build_query
from modeling_paircap.kb_format_paircap import KnowledgeBaseMetadata
from modeling_paircap.knowledge_base_paircap import PairCapKnowledgeBase

TOP_K = 10
FUSION_WEIGHT = 0.5
TOPIC_SIZE = 64  # pairs per topic in the "topics" distribution
TOPIC_NOISE = 2.0  # noise norm / topic-centre norm, per half: same-topic halves have cosine ~ 1 / (1 + 2^2) = 0.2
RECALL_QUERIES = 500
SEARCH_SWEEP = {"nprobe": (1, 2, 4), "efSearch": (0.5, 1, 2)}  # factors on `default_search_params`
SINGLE_WARMUP, BATCH_WARMUP, BATCH_REPEATS = 3, 1, 3
SWEEP_BATCHES = (1, 8, 32, 64, 256)
SWEEP_SINGLE_REPEATS = 20  # batch 1: this many different queries per method (at least)
SCORE_TOLERANCE = 1e-5
GENERATION_CHUNK = 65_536
DEFAULTS = {
    "tiny": {
        "kb_sizes": [20_000],
        "dim": 128,
        "distributions": ["topics"],
        "indexes": ["HNSW32", "IVF128,Flat"],
        "single_queries": 20,
        "batch_queries": 64,
        "batch_sizes": list(SWEEP_BATCHES),
        "settle_s": 0.0,
    },
    "full": {
        "kb_sizes": {"cpu": [127_000], "cuda": [127_000, 2_200_000]},
        "dim": 512,
        "distributions": ["topics", "uniform"],
        "indexes": ["HNSW32", "IVF1024,Flat"],
        "single_queries": 50,
        "batch_queries": {"cpu": 256, "cuda": 1024},
        "batch_sizes": list(SWEEP_BATCHES),
        "settle_s": 0.25,
    },
}
# The targets: (device, KB size, exact or approximate, metric, limit in ms, minimum recall@10)
TARGETS = (
    ("cpu", 127_000, True, "single_query_ms", 60.0, None),
    ("cpu", 127_000, False, "single_query_ms", 2.0, 0.95),
    ("cuda", 2_200_000, True, "batch_ms", 30.0, None),
)
# Batch sweep target at 127 k: time over raw faiss (same settings) at every batch size
SWEEP_OVERHEAD_TARGET = (127_000, 1.10)
KB_METHOD = "PairCapKnowledgeBase.search"
NUMPY_METHOD = "numpy matmul + argpartition (float32)"
FAISS_SAME = "faiss index.search, the index's settings"
FAISS_DEFAULT = "faiss index.search, faiss defaults"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--kb-sizes", type=int, nargs="+", help="pairs per KB (full: 127000 on cpu, + 2200000 on cuda)")
    parser.add_argument("--dim", type=int, help="width of each half (tiny 128, full 512)")
    parser.add_argument("--distributions", nargs="+", choices=("topics", "uniform"), help="synthetic vector layouts")
    parser.add_argument(
        "--indexes", action=ListOrNone, help="approximate faiss factory strings (CPU only; none: skip them)"
    )
    parser.add_argument("--batch-queries", type=int, help="queries per batched call (cuda full: 1024)")
    parser.add_argument("--faiss-threads", type=int, help="faiss OpenMP threads (default: faiss's own default)")
    parser.add_argument(
        "--batch-sizes", action=ListOrNone, item_type=int, help="batch sweep sizes (default 1 8 32 64 256; none: skip)"
    )
    parser.add_argument("--sweep-repeats", type=int, default=5, help="interleaved calls per method and batch size")
    parser.add_argument(
        "--settle-s",
        type=float,
        help="batch sweep: pause after each call, untimed (tiny 0, full 0.25): BLAS threads that spin on after the "
        "numpy baseline slowed the next faiss call by 20-60 ms on 2 cores",
    )


def setting(args: argparse.Namespace, name: str):
    """The command-line value, else the size's default (per device where the default depends on it)."""
    value = getattr(args, name, None)
    if value is None:
        value = DEFAULTS[args.size][name]
        value = value[args.device] if isinstance(value, dict) else value
    return value


# ---------------------------------------------------------------------------------------------------- synthetic data
def draw_halves(rng: np.random.Generator, num: int, dim: int, centers: list[np.ndarray] | None) -> list[np.ndarray]:
    """Audio and text halves `(num, dim)`, each L2-normalised: a random topic's centres plus noise, or uniform on the
    sphere (approximate search's worst case) when `centers` is None."""
    halves = [rng.standard_normal((num, dim), dtype=np.float32) for _ in range(2)]
    if centers is not None:
        topic = rng.integers(0, len(centers[0]), num)
        scale = np.float32(TOPIC_NOISE / np.sqrt(dim))
        halves = [center[topic] + scale * h for center, h in zip(centers, halves, strict=True)]
    return [h / np.linalg.norm(h, axis=1, keepdims=True) for h in halves]


def synthetic_kb(
    num: int, dim: int, distribution: str, num_queries: int, seed: int = 0
) -> tuple[np.ndarray, list[np.ndarray]]:
    """`(num, 2 * dim)` float32 KB vectors and the (audio, text) halves of `num_queries` fresh queries."""
    rng = np.random.default_rng(seed)
    centers = None
    if distribution == "topics":
        centers = draw_halves(rng, max(1, num // TOPIC_SIZE), dim, None)
    vectors = np.empty((num, 2 * dim), dtype=np.float32)
    for start in range(0, num, GENERATION_CHUNK):
        count = min(GENERATION_CHUNK, num - start)
        vectors[start : start + count] = np.concatenate(draw_halves(rng, count, dim, centers), axis=1)
    return vectors, draw_halves(rng, num_queries, dim, centers)


# ------------------------------------------------------------------------------------------------------------ methods
@dataclass
class Method:
    """A search over (audio, text) query halves; `exact` unless it uses an approximate index."""

    name: str
    search: Callable[[np.ndarray, np.ndarray], object]
    exact: bool = True
    info: dict = field(default_factory=dict)


def fused(audio: np.ndarray, text: np.ndarray) -> np.ndarray:
    """The pair2pair query `[W a ; (1 - W) t]`."""
    return build_query("pair2pair", audio, text, FUSION_WEIGHT)


def numpy_baseline(vectors: np.ndarray) -> Method:
    """Brute force on the CPU: numpy matmul + argpartition (`numpy_search`)."""
    return Method(NUMPY_METHOD, lambda audio, text: numpy_search(vectors, fused(audio, text), TOP_K))


def torch_baseline(vectors: np.ndarray, device: str, dtype: torch.dtype, chunk: int = 256) -> Method:
    """Brute force with torch on `device`: matmul + topk in `dtype`, `chunk` queries at a time."""
    kb = torch.from_numpy(vectors).to(device=device, dtype=dtype)

    def search(audio: np.ndarray, text: np.ndarray) -> np.ndarray:
        queries = torch.from_numpy(fused(audio, text)).to(device=device, dtype=dtype)
        rows = [torch.topk(queries[s : s + chunk] @ kb.T, TOP_K, dim=1).indices for s in range(0, len(queries), chunk)]
        return torch.cat(rows).cpu().numpy()

    return Method(f"torch matmul + topk ({str(dtype).removeprefix('torch.')})", search)


def project_method(name: str, vectors: np.ndarray, exact: bool = True, **index_kwargs) -> Method:
    """`PairCapIndex.search` as `generate` calls it; records how long the index took to set up."""
    ids = [str(row) for row in range(len(vectors))]
    start = time.perf_counter()
    pair_index = PairCapIndex(vectors, ids, ids, ids, **index_kwargs)
    info = {"setup_s": time.perf_counter() - start}

    def search(audio: np.ndarray, text: np.ndarray) -> list:
        return pair_index.search(audio, text, mode="pair2pair", fusion_weight=FUSION_WEIGHT, top_k=TOP_K)

    return Method(name, search, exact, info)


def sweep_settings(index) -> list[dict[str, int]]:
    """`default_search_params` scaled by the `SEARCH_SWEEP` factors (nprobe at most nlist), without repeats."""
    defaults, nlist = default_search_params(index), describe_index(index).get("nlist")
    settings = []
    for step in range(len(next(iter(SEARCH_SWEEP.values())))):
        params = {name: max(1, round(value * SEARCH_SWEEP[name][step])) for name, value in defaults.items()}
        if "nprobe" in params:
            params["nprobe"] = min(params["nprobe"], nlist)
        if params not in settings:
            settings.append(params)
    return settings


def approximate_methods(vectors: np.ndarray, factory: str, exact_index, queries: np.ndarray) -> Iterator[Method]:
    """
    `PairCapIndex` over one `build_index(factory)` index, once per search setting of `sweep_settings`, each with
    the build time and its recall@10 against exact search (`recall_at_k`).
    """
    start = time.perf_counter()
    index = build_index(vectors, factory)
    build_s = time.perf_counter() - start
    if "IVF" in factory:  # the index reconstructs its hits' vectors; `read_index` does this for a loaded KB
        faiss.extract_index_ivf(index).make_direct_map()
    pair_index = project_method(factory, vectors, exact=False, faiss_index=index)
    for params in sweep_settings(index):
        set_search_params(index, params)
        name = f"PairCapIndex, {factory}, " + ", ".join(f"{key}={value}" for key, value in params.items())
        info = {"build_s": build_s, "recall_at_10": recall_at_k(index, exact_index, queries, TOP_K)}
        yield Method(
            name, pair_index.search, exact=False, info={**pair_index.info, **info, "index": describe_index(index)}
        )


# ---------------------------------------------------------------------------------------------------------- measuring
def time_method(method: Method, halves: list[np.ndarray], device: str, single: int, batch: int) -> dict:
    """Median latency of one query (over `single` different queries) and of a batch of `batch` queries."""
    audio, text = halves
    next_row = itertools.cycle(range(len(audio))).__next__

    def one_query() -> None:
        row = next_row()
        method.search(audio[row : row + 1], text[row : row + 1])

    one = measure(one_query, device, warmup=SINGLE_WARMUP, repeats=single)
    many = measure(lambda: method.search(audio[:batch], text[:batch]), device, BATCH_WARMUP, BATCH_REPEATS)
    return {
        "method": method.name,
        "exact": method.exact,
        "single_query_ms": 1000 * one.median,
        "batch_queries": batch,
        "batch_ms": 1000 * many.median,
        "queries_per_s": batch / many.median,
        **method.info,
        "raw_single_query_s": one.seconds,
        "raw_batch_s": many.seconds,
    }


def methods_for(device: str, vectors: np.ndarray, queries: np.ndarray, factories: Sequence[str]):
    """Yield (is_baseline, method) for the device: each method is built just before it is measured."""
    if device == "cuda":
        yield True, torch_baseline(vectors, device, torch.float32)
        yield True, torch_baseline(vectors, device, torch.float16)
        yield False, project_method("PairCapIndex, torch exact (cuda)", vectors, device="cuda")
        return
    yield True, numpy_baseline(vectors)
    yield False, project_method("PairCapIndex, faiss Flat (default)", vectors)
    yield False, project_method("PairCapIndex, torch exact (cpu)", vectors, device="cpu")
    exact_index = build_index(vectors)
    for factory in factories:
        for method in approximate_methods(vectors, factory, exact_index, queries):
            yield False, method


def run_case(args: argparse.Namespace, num: int, distribution: str) -> tuple[list[dict], list[dict], list[dict]]:
    """Project, baseline and batch-sweep rows (CPU, first distribution only) for one KB size and distribution."""
    dim, single, batch = setting(args, "dim"), setting(args, "single_queries"), setting(args, "batch_queries")
    vectors, halves = synthetic_kb(num, dim, distribution, max(batch, RECALL_QUERIES))
    recall_queries = fused(*halves)[:RECALL_QUERIES]
    case = {"kb_size": num, "distribution": distribution}
    project, baseline = [], []
    for is_baseline, method in methods_for(args.device, vectors, recall_queries, setting(args, "indexes")):
        row = {**case, **time_method(method, halves, args.device, single, batch)}
        (baseline if is_baseline else project).append(row)
        print(f"{num:,} pairs, {distribution}: {row['method']}: {row['single_query_ms']:.2f} ms per query", flush=True)
    reference = baseline[0]
    for row in project:
        row["single_speedup_vs_baseline"] = reference["single_query_ms"] / row["single_query_ms"]
        row["batch_speedup_vs_baseline"] = reference["batch_ms"] / row["batch_ms"]
    sweep = []
    if args.device == "cpu" and distribution == setting(args, "distributions")[0] and setting(args, "batch_sizes"):
        sweep = batch_sweep(args, vectors, halves, case)
    return project, baseline, sweep


# ------------------------------------------------------------------------------------------------------ batch sweep
def sweep_methods(vectors: np.ndarray, index) -> dict[str, Callable]:
    """
    The searches of the batch sweep, each `(audio, text) -> (per-query rows, per-query scores)`, over one flat index:
    raw faiss (its defaults; the index's settings), the numpy brute force, and the format-2
    `PairCapKnowledgeBase` (Arrow columns, as `from_pretrained` builds it).
    """
    num, dim = vectors.shape
    audio_ids = [f"clip{row:07d}.wav" for row in range(num)]
    pool = caption_pool()
    table = pa.table(
        {
            "pair_id": [f"synthetic/train/{audio_id}/0" for audio_id in audio_ids],
            "audio_id": audio_ids,
            "caption": [pool[row % len(pool)] for row in range(num)],
            "clip_index": pa.array(np.arange(num, dtype=np.int32)),
        }
    )
    clips = pa.table({"audio_id": audio_ids, "is_long": pa.array(np.zeros(num, dtype=bool))})
    metadata = KnowledgeBaseMetadata("synthetic", dim // 2, dim // 2, num, num)
    kb = PairCapKnowledgeBase(table, clips, metadata, index)  # what `from_pretrained` builds from the files
    pair_index = kb.index

    def ours(audio, text, threads=None):
        pair_index.single_query_threads = threads
        try:
            pairs = kb.search(audio, text, mode="pair2pair", fusion_weight=FUSION_WEIGHT, top_k=TOP_K)
        finally:
            pair_index.single_query_threads = None
        return [[hit.row for hit in query] for query in pairs], [[hit.score for hit in query] for query in pairs]

    def library(search: Callable[[np.ndarray], tuple[np.ndarray, np.ndarray]]) -> Callable:
        def rows_and_scores(audio, text):
            scores, rows = search(fused(audio, text))
            return rows.tolist(), scores.tolist()

        return rows_and_scores

    return {
        FAISS_DEFAULT: library(lambda queries: faiss_search(index, queries, TOP_K)),
        FAISS_SAME: library(lambda queries: faiss_search(index, queries, TOP_K, pair_index)),
        NUMPY_METHOD: library(lambda queries: numpy_search(vectors, queries, TOP_K)),
        KB_METHOD: ours,
        f"{KB_METHOD}, single_query_threads=1": lambda audio, text: ours(audio, text, threads=1),
    }


def agreement(found: tuple[list, list], reference: tuple[list, list]) -> tuple[bool, float]:
    """
    Whether per-query hits agree with the reference's: scores within `SCORE_TOLERANCE` position by position, and the
    same ids except where two scores lie within the tolerance of each other (BLAS and faiss's own loop round the last
    bits differently, which can swap near-ties); and the largest score difference.
    """
    same, largest = True, 0.0
    for rows, scores, reference_rows, reference_scores in zip(*found, *reference, strict=True):
        scores, reference_scores = np.asarray(scores), np.asarray(reference_scores)
        if len(rows) != len(reference_rows):
            return False, float("inf")
        diff = float(np.abs(scores - reference_scores).max(initial=0.0))
        largest = max(largest, diff)
        gaps = np.abs(np.diff(reference_scores))
        tied = np.zeros(len(rows), dtype=bool)
        tied[:-1] |= gaps <= SCORE_TOLERANCE
        tied[1:] |= gaps <= SCORE_TOLERANCE
        tied[-1:] = True  # the last hit may tie with one just outside the top k
        differing = np.asarray(rows) != np.asarray(reference_rows)
        same &= diff <= SCORE_TOLERANCE and not (differing & ~tied).any()
    return bool(same), largest


def paired(numerators: Sequence[float], denominators: Sequence[float]) -> float:
    """The median of the ratios of calls made in the same round."""
    return statistics.median(a / b for a, b in zip(numerators, denominators, strict=True))


def interleaved(
    methods: dict[str, Callable], halves: list[np.ndarray], batch: int, repeats: int, settle_s: float = 0.0
) -> tuple[dict, dict]:
    """
    Per round, every method searches the same `batch` queries (the next block of the query pool), one after another
    with `settle_s` untimed seconds after each call (so that threads a call leaves spinning, numpy's BLAS pool above
    all, do not slow the next method); the first round warms up. Returns each method's seconds per round and its
    agreement with faiss's defaults (`agreement` over every round: all the same, largest score difference).
    """
    audio, text = halves
    seconds = {name: [] for name in methods}
    agree = {name: (True, 0.0) for name in methods}
    for repeat in range(repeats + 1):
        start = (repeat * batch) % max(1, len(audio) - batch + 1)
        block = slice(start, start + batch)
        outputs = {}
        for name, method in methods.items():
            begin = time.perf_counter()
            outputs[name] = method(audio[block], text[block])
            if repeat:
                seconds[name].append(time.perf_counter() - begin)
            time.sleep(settle_s)
        for name in methods:
            same, diff = agreement(outputs[name], outputs[FAISS_DEFAULT])
            agree[name] = (agree[name][0] and same, max(agree[name][1], diff))
    return seconds, agree


def batch_sweep(args: argparse.Namespace, vectors: np.ndarray, halves: list[np.ndarray], case: dict) -> list[dict]:
    """
    Each sweep method at each batch size, interleaved (`interleaved`). Rows hold medians, ratios to raw faiss and to
    numpy (also as medians of the same rounds' ratios), and whether ids and scores agree with faiss's.
    """
    index = faiss.IndexFlatIP(vectors.shape[1])
    index.add(vectors)
    methods = sweep_methods(vectors, index)
    rows = []
    for batch in setting(args, "batch_sizes"):
        chosen = {name: m for name, m in methods.items() if batch == 1 or not name.endswith("single_query_threads=1")}
        repeats = max(args.sweep_repeats, SWEEP_SINGLE_REPEATS if batch == 1 else 0)
        seconds, agree = interleaved(chosen, halves, batch, repeats, setting(args, "settle_s"))
        medians = {name: statistics.median(values) for name, values in seconds.items()}
        for name in chosen:
            row = {**case, "batch": batch, "method": name, "median_ms": 1000 * medians[name]}
            row.update(per_query_ms=row["median_ms"] / batch, queries_per_s=batch / medians[name])
            row["speedup_vs_numpy"] = medians[NUMPY_METHOD] / medians[name]
            row["over_faiss_same_settings"] = medians[name] / medians[FAISS_SAME]
            row["over_faiss_defaults"] = medians[name] / medians[FAISS_DEFAULT]
            # medians of the per-round ratios: the calls of one round ran back to back, so the machine's load (other
            # jobs on a shared CPU) weighs on both sides of each ratio alike
            row["paired_speedup_vs_numpy"] = paired(seconds[NUMPY_METHOD], seconds[name])
            row["paired_over_faiss_same_settings"] = paired(seconds[name], seconds[FAISS_SAME])
            row.update(same_results_as_faiss=agree[name][0], max_score_diff=agree[name][1])
            row.update(repeats=len(seconds[name]), raw_s=seconds[name])
            rows.append(row)
        summary = {name: f"{1000 * medians[name]:.1f}" for name in chosen}
        print(f"{case['kb_size']:,} pairs, batch {batch}: ms {summary}", flush=True)
    return rows


def check_sweep_targets(sweep: list[dict]) -> list[dict]:
    """The batch sweep's target, on the paired (same-round) ratio: <= 1.10x raw faiss with the same settings at
    every batch size."""
    size, limit = SWEEP_OVERHEAD_TARGET
    return [
        target_check(
            f"time / raw faiss (same settings) <= {limit:g}",
            row["paired_over_faiss_same_settings"],
            limit,
            batch=row["batch"],
            same_results_as_faiss=row["same_results_as_faiss"],
        )
        for row in sweep
        if row["kb_size"] == size and row["method"] == KB_METHOD
    ]


def check_targets(device: str, project: list[dict]) -> list[dict]:
    """Each project row the issue's targets apply to, with the measured value against the limit."""
    checks = []
    for target_device, num, exact, metric, limit, min_recall in TARGETS:
        for row in project:
            applies = target_device == device and row["kb_size"] == num and row["exact"] == exact
            if not applies or (metric == "batch_ms" and row["batch_queries"] != 1024):
                continue
            recall = row.get("recall_at_10", 1.0)
            target = f"{metric} <= {limit:g}" + (f", recall@10 >= {min_recall}" if min_recall else "")
            context = {"kb_size": num, "distribution": row["distribution"], "method": row["method"]}
            check = target_check(target, row[metric], limit, **context, recall_at_10=recall)
            check["met"] &= min_recall is None or recall >= min_recall
            checks.append(check)
    return checks


def main(argv: Sequence[str] | None = None) -> dict:
    """Run the benchmark and write `retrieval-<device>-<size>.json/.md`."""
    args = parse_args(__doc__.strip().splitlines()[0], argv, add_arguments)
    if args.faiss_threads:
        faiss.omp_set_num_threads(args.faiss_threads)
    env = {**environment(args.device), "faiss": faiss.__version__, "faiss_threads": faiss.omp_get_max_threads()}
    project, baseline, sweep = [], [], []
    for num, distribution in itertools.product(setting(args, "kb_sizes"), setting(args, "distributions")):
        rows = run_case(args, num, distribution)
        project += rows[0]
        baseline += rows[1]
        sweep += rows[2]
    targets = check_targets(args.device, project)
    sweep_targets = check_sweep_targets(sweep)

    settings = {
        name: setting(args, name)
        for name in ("kb_sizes", "dim", "distributions", "indexes", "single_queries", "batch_queries", "batch_sizes")
    }
    settings.update(
        vector_dim=2 * settings["dim"],
        top_k=TOP_K,
        mode="pair2pair",
        fusion_weight=FUSION_WEIGHT,
        topic_size=TOPIC_SIZE,
        topic_noise=TOPIC_NOISE,
        recall_queries=RECALL_QUERIES,
        search_sweep=SEARCH_SWEEP,
        single_query_warmup=SINGLE_WARMUP,
        batch_warmup=BATCH_WARMUP,
        batch_repeats=BATCH_REPEATS,
        sweep_repeats=args.sweep_repeats,
        sweep_single_repeats=SWEEP_SINGLE_REPEATS,
        sweep_settle_s=setting(args, "settle_s"),
        sweep_baselines=[FAISS_DEFAULT, FAISS_SAME, NUMPY_METHOD],
        faiss_blas_threshold_default=faiss.cvar.distance_compute_blas_threshold,
    )
    results = {"project": project, "baseline": baseline, "targets": targets}
    if sweep:
        results.update(batch_sweep=sweep, batch_sweep_targets=sweep_targets)
    columns = ["kb_size", "distribution", "method", "single_query_ms", "batch_ms", "queries_per_s", "recall_at_10"]
    tables = [
        markdown_table("Baseline (brute force)", baseline, columns[:-1]),
        markdown_table("PairCapIndex", project, [*columns, "build_s", "single_speedup_vs_baseline"]),
    ]
    if targets:
        target_columns = ["kb_size", "distribution", "method", "target", "measured", "recall_at_10", "met"]
        tables.append(markdown_table("The issue's targets", targets, target_columns))
    if sweep:
        sweep_columns = ["kb_size", "batch", "method", "median_ms", "per_query_ms", "speedup_vs_numpy"]
        sweep_columns += ["paired_speedup_vs_numpy", "over_faiss_same_settings", "paired_over_faiss_same_settings"]
        sweep_columns += ["over_faiss_defaults", "same_results_as_faiss", "max_score_diff"]
        tables.append(markdown_table(f"Batch sweep (exact, top {TOP_K}, medians, interleaved)", sweep, sweep_columns))
        target_columns = ["batch", "target", "measured", "met", "same_results_as_faiss"]
        tables.append(markdown_table("Batch sweep targets (127 k)", sweep_targets, target_columns))
    return write_results(args, "retrieval", env, settings, results, tables)


if __name__ == "__main__":
    main()
