"""
Shared prompt prefix: `generate` latency and captions/s with the system text's KV computed once and reused
(`share_prefix=True`, the default) against every prompt computing it (`share_prefix=False`), at each batch size.

Two workloads: zero-shot from pre-computed query tokens (the language model alone: projector, prefill, decoding), and
generative pair-to-pair end to end from log-mel features (both passes, retrieval from a synthetic KB of `KB_PAIRS`
pairs, top 5). Calls with and without the shared prefix alternate within each repeat, so load drifts hit both alike.
Greedy, exactly `--new-tokens` tokens. `--lm mini` swaps the tiny release's language model for a random one of the
mini recipe's shape (192 wide, 4 layers); `--lm tiny` keeps the tiny one (48 wide, 2 layers).

    python -m benchmarks.prompt_prefix [--lm tiny|mini] [--batch-sizes 1 8] [--new-tokens 8] [--repeats 5]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import torch

from benchmarks.common import ListOrNone, environment, markdown_table, parse_args, synchronize, write_results
from benchmarks.workloads import SAMPLING_RATE, release, synthetic_knowledge_base, use_mini_lm, waveform
from modeling_paircap.prompt_prefix_paircap import shared_prefix_length
from modeling_paircap.retrieval_paircap import PairCapRetriever

KB_PAIRS = 200
KB_CLIP_SECONDS = 20.0
QUERY_SECONDS = 10.0
TOP_K = 5


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--lm", choices=("tiny", "mini"), default="mini", help="the language model's shape (tiny size)")
    parser.add_argument("--batch-sizes", action=ListOrNone, item_type=int, default=[1, 8])
    parser.add_argument("--new-tokens", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=5)


def paired_medians(calls: dict[str, Callable[[], object]], device: str, repeats: int) -> dict[str, float]:
    """Median seconds of each call, the calls alternating within each repeat (after one untimed round)."""
    seconds = {name: [] for name in calls}
    for round_index in range(repeats + 1):
        for name, call in calls.items():
            start = time.perf_counter()
            call()
            synchronize(device)
            if round_index:
                seconds[name].append(time.perf_counter() - start)
    return {name: statistics.median(values) for name, values in seconds.items()}


def row(mode: str, batch_size: int, inputs, prefix_tokens: int, medians: dict[str, float]) -> dict:
    plain, shared = medians["plain"], medians["shared"]
    return {
        "mode": mode,
        "batch_size": batch_size,
        "prompt_tokens": int(inputs["attention_mask"].sum(dim=1).float().mean()),
        "prefix_tokens": prefix_tokens,
        "plain_s": plain,
        "shared_s": shared,
        "plain_captions_per_s": batch_size / plain,
        "shared_captions_per_s": batch_size / shared,
        "speedup": plain / shared,
    }


def main(argv: Sequence[str] | None = None) -> dict:
    """Run the benchmark and write `prompt_prefix-<device>-<lm>.json/.md`."""
    args = parse_args(__doc__.strip().splitlines()[0], argv, add_arguments)
    env = environment(args.device)
    generation = {"max_new_tokens": args.new_tokens, "min_new_tokens": args.new_tokens, "do_sample": False}
    rows = []
    with tempfile.TemporaryDirectory(prefix="paircap-prompt-prefix-") as folder:
        model, processor = release(args.size, Path(folder), args.device)
        if args.size == "tiny" and args.lm == "mini":
            use_mini_lm(model)
        kb = synthetic_knowledge_base(model, Path(folder) / "kb", KB_PAIRS, KB_CLIP_SECONDS)
        retriever = PairCapRetriever(kb, processor)
        generation["pad_token_id"] = model.generation_config.pad_token_id
        stop_ids = torch.tensor([model.config.audio_token_id, model.config.long_audio_token_id])
        for batch_size in args.batch_sizes:
            clips = [waveform(QUERY_SECONDS * (1 + i % 3), seed=i) for i in range(batch_size)]  # 1-3 windows
            audio = processor(audio=clips, sampling_rate=SAMPLING_RATE).to(args.device)
            with torch.no_grad():
                tokens = model.encode_audio(audio["input_features"], audio["audio_window_counts"]).audio_tokens
            queries = [
                {"audio_tokens": t.flatten(0, 1).cpu().numpy()}
                for t in tokens.split(audio["audio_window_counts"].tolist())
            ]
            zero_shot = processor(audio=queries).to(args.device)
            prefix = shared_prefix_length(zero_shot["input_ids"], zero_shot["attention_mask"], stop_ids)[0]
            workloads = {
                "zero-shot LM": (zero_shot, {"retrieval_mode": "none"}),
                "generative pair2pair": (audio, {"retriever": retriever, "top_k": TOP_K}),
            }
            for mode, (inputs, options) in workloads.items():
                calls = {
                    name: lambda share=share, inputs=inputs, options=options: model.generate(
                        **inputs, **options, **generation, share_prefix=share
                    )
                    for name, share in (("plain", False), ("shared", True))
                }
                rows.append(row(mode, batch_size, inputs, prefix, paired_medians(calls, args.device, args.repeats)))
                print(f"{mode}, batch {batch_size}: {rows[-1]['speedup']:.3f}x", flush=True)
    settings = {
        "model": f"tiny release with the {args.lm} LM shape, random weights" if args.size == "tiny" else args.size,
        "batch_sizes": args.batch_sizes,
        "new_tokens": args.new_tokens,
        "decoding": "greedy, min_new_tokens = max_new_tokens",
        "query_seconds": "10, 20, 30 in turn (1-3 windows: padded batches)",
        "kb_pairs": KB_PAIRS,
        "top_k": TOP_K,
        "repeats": args.repeats,
        "timing": "median of repeats, plain and shared calls alternating, one untimed round first",
    }
    columns = ["mode", "batch_size", "prompt_tokens", "prefix_tokens", "plain_s", "shared_s"]
    columns += ["plain_captions_per_s", "shared_captions_per_s", "speedup"]
    table = markdown_table("generate with and without the shared prompt prefix", rows, columns)
    path = args.output_dir / f"prompt_prefix-{args.device}-{args.lm if args.size == 'tiny' else args.size}.json"
    return write_results(args, "prompt_prefix", env, settings, {"rows": rows}, [table], path=path)


if __name__ == "__main__":
    main()
