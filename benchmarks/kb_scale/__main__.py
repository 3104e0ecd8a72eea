"""
KB scale: disk size, build time, load time and peak memory, and search latency of format-2 knowledge bases.

Synthetic knowledge bases in the real format (`benchmarks/synthetic_kb.py`, written by `write_knowledge_base`): random
unit `[audio ; text]` vectors of 512 + 512 dims (LAION-CLAP's), 5 captions per clip as in Clotho, plausible ids and
captions, and for a KB with tokens one 10 s window per clip (32 pooled tokens x 768, float16). The build's peak RSS
is reported.

For each KB, in a fresh subprocess each time (`worker.py`), interleaved: the load time and peak RSS (the child's
VmHWM, and RssAnon / RssFile sampled from outside by the parent) of `PairCapKnowledgeBase.from_pretrained` against
the libraries alone reading the same files without checks (`pyarrow.parquet.read_table` of the search columns and
the clip table, `faiss.read_index`), cold (the KB's files evicted from the page cache with `posix_fadvise(DONTNEED)`)
and warm, and whether anything was written to the datasets cache or the KB folder. The last warm PairCap load goes on
(its load figures taken first) to single-query and batch-64 search latency (`kb.search`, mode pair2pair, W 0.5, top
5) against raw faiss `index.search` (top 5) on the same index, interleaved, with the same faiss settings as the
retriever and with faiss's defaults, and the hits compared with faiss's (its top hits cut to one per clip, as
`max_pairs_per_clip=1` does).

    python -m benchmarks.kb_scale [--size tiny|full] [--sizes 127000 500000 2200000] [--token-sizes 127000]
        [--output benchmarks/results/kb_scale-cpu.json] [--work-dir /work/tmp_bench] [--repeats 3] [--keep]
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path

import faiss

from benchmarks.common import ListOrNone, environment, parse_args, write_results
from benchmarks.kb_scale import (
    AUDIO_DIM,
    BATCH,
    CAPTIONS_PER_CLIP,
    FUSION_WEIGHT,
    LOADERS,
    TEXT_DIM,
    TOKEN_DIM,
    TOKENS_PER_CLIP,
    TOP_K,
)
from benchmarks.kb_scale.bench import Bench
from benchmarks.kb_scale.report import check_targets, result_tables

DEFAULTS = {
    "tiny": {"sizes": [2_000], "token_sizes": [2_000]},
    "full": {"sizes": [127_000, 500_000, 2_200_000], "token_sizes": [127_000]},
}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--sizes", action=ListOrNone, item_type=int, help="index-only KB sizes in pairs (full: 127000 500000 2200000)"
    )
    parser.add_argument(
        "--token-sizes", action=ListOrNone, item_type=int, help="KB sizes with clip tokens (full: 127000; none: skip)"
    )
    parser.add_argument("--output", type=Path, help="the JSON file (default results/kb_scale-cpu[-tiny].json)")
    parser.add_argument("--work-dir", type=Path, default=Path("/work/tmp_bench"), help="where the synthetic KBs go")
    parser.add_argument("--repeats", type=int, default=3, help="fresh-process loads per KB and variant, interleaved")
    parser.add_argument("--single-queries", type=int, help="single queries timed per KB (default 20, 8 above 500 k)")
    parser.add_argument("--keep", action="store_true", help="keep the synthetic KBs (deleted after measuring)")


def setting(args: argparse.Namespace, name: str) -> list[int]:
    value = getattr(args, name)
    return DEFAULTS[args.size][name] if value is None else value


def main(argv: Sequence[str] | None = None) -> dict:
    """Run the benchmark and write `kb_scale-cpu.json/.md` (tiny: `kb_scale-cpu-tiny`)."""
    args = parse_args(__doc__.strip().splitlines()[0], argv, add_arguments)
    if args.device != "cpu":
        raise SystemExit("benchmarks.kb_scale measures CPU loading and faiss search: run it with --device cpu")
    args.work_dir.mkdir(parents=True, exist_ok=True)
    output = args.output or args.output_dir / f"kb_scale-cpu{'-tiny' if args.size == 'tiny' else ''}.json"

    env = {**environment("cpu"), "faiss": faiss.__version__, "faiss_threads": faiss.omp_get_max_threads()}
    bench = Bench(args, setting(args, "sizes"), setting(args, "token_sizes"))
    try:
        bench.run()
    finally:
        bench.close()
    settings = {name: setting(args, name) for name in ("sizes", "token_sizes")}
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
        loaders=list(LOADERS.values()),
        baseline="the libraries alone on the same files, no checks (pyarrow.parquet.read_table, faiss.read_index)",
        cold="the KB's files evicted from the page cache (posix_fadvise DONTNEED) before each fresh process",
    )
    results = {
        "builds": bench.builds,
        "loads": bench.loads,
        "searches": bench.searches,
        "targets": check_targets(bench.builds, bench.loads, bench.searches),
        "skipped": bench.skipped,
    }
    return write_results(args, "kb_scale", env, settings, results, result_tables(results), path=output)


if __name__ == "__main__":
    main()
