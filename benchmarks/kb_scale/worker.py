"""
The fresh-process jobs of the KB scale benchmark, run by `benchmarks.processes.run_worker`: build a synthetic KB, or
load one and report the load's time and memory (PairCap's `from_pretrained`, or the libraries alone on the same
files), the last warm load going on to time `kb.search` against raw faiss on its index.
"""

from __future__ import annotations

import time
from pathlib import Path

import datasets  # noqa: F401  (imported before any clock starts, as in a program that loads a KB)
import faiss
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from benchmarks.kb_scale import (
    AUDIO_DIM,
    BATCH,
    CAPTIONS_PER_CLIP,
    FUSION_WEIGHT,
    SAME_SETTINGS,
    TEXT_DIM,
    TOKEN_DIM,
    TOKENS_PER_CLIP,
    TOP_K,
)
from benchmarks.processes import proc_status, serve, worker_task
from benchmarks.search_baselines import faiss_search
from benchmarks.synthetic_kb import SyntheticKB, unit_rows, write_synthetic_kb
from modeling_paircap.index_paircap import build_query
from modeling_paircap.kb_format_paircap import SEARCH_COLUMNS
from modeling_paircap.knowledge_base_paircap import PairCapKnowledgeBase


def kb_spec(num_pairs: int, tokens: bool, seed: int) -> SyntheticKB:
    """The benchmark's synthetic KB: 512 + 512 dims, 5 captions per clip, 5-30 s clips, one window of tokens."""
    spec = SyntheticKB(num_pairs, AUDIO_DIM, TEXT_DIM, CAPTIONS_PER_CLIP, seed=seed)
    if tokens:
        spec.tokens_per_clip, spec.token_dim = TOKENS_PER_CLIP, TOKEN_DIM
    return spec


def build_task(task: dict) -> dict:
    """Synthesise the rows (and tokens) and write the KB with `write_knowledge_base`; the steps' times and peak RSS."""
    spec = kb_spec(task["num_pairs"], task["tokens"], task["seed"])
    timings = write_synthetic_kb(Path(task["folder"]), spec, Path(task["staging"]))
    return {**timings, "peak_rss_bytes": proc_status().get("VmHWM", 0)}


def load_with_libraries(folder: Path) -> tuple[pa.Table, pa.Table, object]:
    """
    The same files read with the libraries alone, no checks: the rows' search columns (`pyarrow.parquet.read_table`,
    memory-mapped, as `from_pretrained` reads them), the clip table and the index (`faiss.read_index`). The tokens
    file is not opened.
    """
    shards = sorted((folder / "data").glob("*.parquet"))
    rows = pa.concat_tables(pq.read_table(shard, columns=list(SEARCH_COLUMNS), memory_map=True) for shard in shards)
    clips = pq.read_table(folder / "clips.parquet", memory_map=True)
    return rows, clips, faiss.read_index(str(folder / "index.faiss"))


def load_task(task: dict) -> dict:
    """Load a KB in this fresh process (`from_pretrained`, or the libraries alone) and report its cost."""
    folder = Path(task["folder"])
    before = proc_status()
    start = time.perf_counter()
    kb = load_with_libraries(folder) if task["loader"] == "libraries" else PairCapKnowledgeBase.from_pretrained(folder)
    load_s = time.perf_counter() - start
    after = proc_status()
    result = {"load_s": load_s, "rss_before_bytes": before.get("VmRSS", 0), "peak_rss_bytes": after.get("VmHWM", 0)}
    result.update(rss_after_bytes=after.get("VmRSS", 0), anon_after_bytes=after.get("RssAnon", 0))
    if task.get("search"):
        result["search"] = search_task(kb, task)
    del kb
    return result


def search_task(kb: PairCapKnowledgeBase, task: dict) -> dict:
    """Interleaved latency of `kb.search` and raw faiss on its index, single queries and batches of 64."""
    pair_index, index = kb.index, kb.index.faiss_index
    rng = np.random.default_rng(12345)
    num_batches = task["repeats"] + 1
    audio = unit_rows(rng, BATCH * num_batches + task["single_queries"] + 1, AUDIO_DIM)
    text = unit_rows(rng, len(audio), TEXT_DIM)
    queries = build_query("pair2pair", audio, text, FUSION_WEIGHT)

    def ours(rows: slice):
        return kb.search(audio[rows], text[rows], mode="pair2pair", fusion_weight=FUSION_WEIGHT, top_k=TOP_K)

    methods = {
        "kb.search": ours,
        SAME_SETTINGS: lambda rows: faiss_search(index, queries[rows], TOP_K, pair_index),
        "faiss defaults": lambda rows: faiss_search(index, queries[rows], TOP_K),
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
    result = {"timings": timings, **agree, "faiss_threads": faiss.omp_get_max_threads(), "fetched_per_query": fetch}
    if kb.tokens is not None:
        examples = []
        for rep in range(num_batches):
            hits = ours(slice(rep * BATCH, (rep + 1) * BATCH))
            start = time.perf_counter()
            kb.examples(hits)
            examples.append(time.perf_counter() - start)
        result["examples_s"] = examples  # the first is the cold read of those clips' tokens
    return result


def run_task(task: dict) -> dict:
    return build_task(task) if task["task"] == "build" else load_task(task)


if __name__ == "__main__":
    if (worker := worker_task()) is None:
        raise SystemExit(f"usage: python -m {__spec__.name} --worker TASK (run by python -m benchmarks.kb_scale)")
    serve(run_task, worker)
