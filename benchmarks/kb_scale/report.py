"""The KB scale benchmark's targets and markdown tables."""

from __future__ import annotations

from benchmarks.common import markdown_table, target_check
from benchmarks.kb_scale import LOADERS

TARGETS = {
    "load_s_2.2M": 30.0,  # 2.2 M index-only pairs load in <= 30 s
    "peak_rss_over_vectors_2.2M": 1.25,  # ... with peak RSS <= 1.25 x the raw vector bytes
    "cold_load_s_tokens_127k": 15.0,  # 127 k pairs with tokens load cold in <= 15 s
    "rss_growth_over_token_bytes": 0.05,  # ... and their RSS does not grow with the token bytes (<= 5 % of them)
    "search_over_faiss": 1.10,  # index per-query time <= 1.10 x raw faiss
}
BUILD_COLUMNS = [
    "kb", "num_pairs", "num_clips", "disk_GB", "rows_GB", "index_GB", "tokens_GB", "per_row_layout_token_GB",
    "raw_vector_GB", "generate_s", "write_s", "tokens_write_s", "build_peak_rss_GB", "build_sampled_peak_anon_GB",
]  # fmt: skip
LOAD_COLUMNS = [
    "kb", "loader", "cache", "load_s", "over_libraries", "paired_over_libraries", "peak_rss_GB",
    "peak_rss_over_vectors", "load_rss_increase_GB", "sampled_peak_anon_GB", "datasets_cache_GB", "kb_folder_unchanged",
]  # fmt: skip
SEARCH_COLUMNS = [
    "kb", "batch", "method", "median_ms", "per_query_ms", "over_faiss_same_settings", "paired_median_over_faiss",
    "same_rows_as_faiss", "max_score_diff", "examples_ms",
]  # fmt: skip


def check_targets(builds: list[dict], loads: list[dict], searches: list[dict]) -> list[dict]:
    """The issue's targets against the rows measured (only those whose KB was measured)."""
    checks = []

    def check(target: str, measured: float, limit: float, kb: str) -> None:
        checks.append(target_check(target, measured, limit, kb=kb))

    ours = [row for row in loads if row["loader"] == LOADERS["paircap"]]
    for row in ours:
        if row["num_pairs"] == 2_200_000 and "tokens" not in row["kb"]:
            check(f"load_s ({row['cache']}) <= 30", row["load_s"], TARGETS["load_s_2.2M"], row["kb"])
            target = f"peak RSS / vector bytes ({row['cache']}) <= 1.25"
            check(target, row["peak_rss_over_vectors"], TARGETS["peak_rss_over_vectors_2.2M"], row["kb"])
    for row in ours:
        if "tokens" not in row["kb"] or row["cache"] != "cold":
            continue
        check("cold load_s <= 15", row["load_s"], TARGETS["cold_load_s_tokens_127k"], row["kb"])
        check("datasets cache bytes written <= 0", row["datasets_cache_bytes"], 0, row["kb"])
        check("KB folder changed by loading (0/1) <= 0", float(not row["kb_folder_unchanged"]), 0, row["kb"])
        plain = [
            r for r in ours if r["num_pairs"] == row["num_pairs"] and r["cache"] == "cold" and "tokens" not in r["kb"]
        ]
        build = [b for b in builds if b["kb"] == row["kb"]]
        if plain and build:
            growth = (row["peak_rss_bytes"] - plain[0]["peak_rss_bytes"]) / build[0]["tokens_bytes"]
            target = "peak RSS growth over index-only / token bytes <= 0.05"
            check(target, growth, TARGETS["rss_growth_over_token_bytes"], row["kb"])
    for row in searches:
        if row["method"] == "kb.search":
            target = f"kb.search / faiss per query, batch {row['batch']} <= 1.10"
            check(target, row["paired_median_over_faiss"], TARGETS["search_over_faiss"], row["kb"])
    return checks


def in_gb(row: dict) -> dict:
    """`row` with every `*_bytes` number also as `*_GB`, for the tables."""
    sizes = {key: value for key, value in row.items() if key.endswith("_bytes") and isinstance(value, (int, float))}
    return {**row, **{key.removesuffix("_bytes") + "_GB": value / 1e9 for key, value in sizes.items()}}


def result_tables(results: dict) -> list[str]:
    """The markdown tables of a results payload (builds, loads, searches, targets, skipped)."""
    tables = [
        markdown_table("Builds (write_knowledge_base)", list(map(in_gb, results["builds"])), BUILD_COLUMNS),
        markdown_table("Loads (fresh process; medians)", list(map(in_gb, results["loads"])), LOAD_COLUMNS),
        markdown_table("Search (pair2pair, top 5; medians, interleaved)", results["searches"], SEARCH_COLUMNS),
        markdown_table("Targets", results["targets"], ["target", "kb", "measured", "limit", "met"]),
    ]
    if results["skipped"]:
        tables.append(markdown_table("Skipped", results["skipped"], ["kb", "reason"]))
    return tables
