"""
Captioning: captions/s and per-call latency of `generate`, zero-shot and generative pair-to-pair.

Generative pair-to-pair runs two passes: pass 1 captions zero-shot, its caption's CLAP text embedding and the audio
embedding query the knowledge base, and pass 2 captions again with 5 retrieved pairs (64 audio tokens each) in the
prompt. The baseline is plain HF `generate` on the language model alone, fed random `inputs_embeds` of the same prompt
lengths (one pass for zero-shot, two for pair-to-pair). Decode ms/step of the plain LM (the median interval between
generation steps, timestamped by a logits processor) is set against its bandwidth floor: bytes of weights plus KV
cache read per step / memory bandwidth. Every call generates exactly `new_tokens`
tokens (min = max), greedy. Prompts are built by the processor before timing.

Full size: the Vicuna-7B-shaped release with random bf16 weights, batches 1, 16, 64, 24 new tokens (GPU). Tiny: the
tiny release, batches 1, 2, 4, 4 new tokens (CPU smoke test). The KB is a synthetic format-2 KB in the model's
retrieval space, written directly (`workloads.synthetic_knowledge_base`: random embeddings, 5 captions per clip, random
pooled tokens of 20 s clips, two windows per pair).

Contention (CPU only): generative pair-to-pair at `--contention-batch-sizes` (default 1; none: skip) at 1, 2, the thread
policy's default and all-cores torch threads, on the quiet machine and with one core held busy by a bounded load
started inside the benchmark (`benchmarks/contention.py`), rounds interleaved; each row's speed against the best
thread count of its condition, and whether its tokens equal those of one quiet thread. The tiny size swaps in a
language model of the mini recipe's shape (the small model people caption with on a CPU) and its own KB.

KB-size sweep: end-to-end files/s (10 s audio files on disk -> processor -> `generate`) of generative pair-to-pair
against mode none at one batch size (`--files-batch`: tiny 4, full 32), for each KB size (`--kb-sizes`; tiny 2,000, full
10,000 and 127,000), interleaved, and the same for `generate` alone on prepared inputs. The issue's target: pair-to-pair
at >= 0.75x the files/s of mode none at 127 k pairs.

    python -m benchmarks.captioning [--size tiny|full] [--device cpu|cuda] [--output-dir benchmarks/results]
        [--batch-sizes 1 2 4] [--new-tokens 4] [--kb-sizes 10000 127000] [--files-batch 32] [--sweep-repeats 3]
        [--contention-batch-sizes 1 8] [--contention-repeats 2]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import soundfile as sf
import torch
from transformers import LogitsProcessor, LogitsProcessorList

from benchmarks.common import (
    ListOrNone,
    environment,
    markdown_table,
    measure,
    parse_args,
    synchronize,
    target_check,
    write_results,
)
from benchmarks.contention import check_default, contention_rows
from benchmarks.workloads import SAMPLING_RATE, model_dtype, release, synthetic_knowledge_base, use_mini_lm, waveform
from modeling_paircap.knowledge_base_paircap import PairCapKnowledgeBase
from modeling_paircap.modeling_paircap import PairCapForConditionalGeneration
from modeling_paircap.processing_paircap import PairCapProcessor
from modeling_paircap.retrieval_paircap import PairCapRetriever
from paircap.threads import decoding_threads, threads_for_decoding

TOP_K = 5
FUSION_WEIGHT = 0.5
KB_CLIP_SECONDS = 20.0
QUERY_SECONDS = 10.0
WARMUP = 1
NOMINAL_GPU_BANDWIDTH = 3e12  # bytes/s: the H100 figure
DEFAULTS = {
    "tiny": {"batch_sizes": [1, 2, 4], "new_tokens": 4, "kb_pairs": 20, "repeats": 3, "kb_sizes": [2_000]},
    "full": {"batch_sizes": [1, 16, 64], "new_tokens": 24, "kb_pairs": 65, "repeats": 3, "kb_sizes": [10_000, 127_000]},
}
SWEEP_DEFAULTS = {"tiny": {"files_batch": 4, "sweep_repeats": 1}, "full": {"files_batch": 32, "sweep_repeats": 3}}
CONTENTION_DEFAULTS = {"contention_batch_sizes": [1], "contention_repeats": 2}
FILES_TARGET = (127_000, 0.75)  # pair-to-pair files/s >= 0.75 x mode none's at 127 k pairs


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--batch-sizes", type=int, nargs="+", help="tiny 1 2 4, full 1 16 64")
    parser.add_argument("--new-tokens", type=int, help="tokens generated per pass (tiny 4, full 24)")
    parser.add_argument(
        "--kb-sizes", action=ListOrNone, item_type=int, help="KB sizes of the files/s sweep (none: skip it)"
    )
    parser.add_argument("--files-batch", type=int, help="files per generate call in the sweep (tiny 4, full 32)")
    parser.add_argument("--sweep-repeats", type=int, help="interleaved calls per mode and KB size (tiny 1, full 3)")
    parser.add_argument(
        "--contention-batch-sizes",
        action=ListOrNone,
        item_type=int,
        help="batch sizes of the contention row (CPU only; default 1; none: skip it)",
    )
    parser.add_argument("--contention-repeats", type=int, help="timed rounds of the contention row (default 2)")


def generation_kwargs(model: PairCapForConditionalGeneration, new_tokens: int) -> dict:
    """Greedy decoding of exactly `new_tokens` tokens."""
    pad = model.generation_config.pad_token_id
    return {"max_new_tokens": new_tokens, "min_new_tokens": new_tokens, "do_sample": False, "pad_token_id": pad}


def query_inputs(processor: PairCapProcessor, batch_size: int, device: str):
    """Zero-shot prompts for `batch_size` synthetic 10 s clips, on the device."""
    clips = [waveform(QUERY_SECONDS, seed=i) for i in range(batch_size)]
    return processor(audio=clips, sampling_rate=SAMPLING_RATE).to(device)


def pass2_prompt_tokens(processor: PairCapProcessor, kb: PairCapKnowledgeBase, model) -> int:
    """Length of a pass-2 prompt: a 10 s query's tokens after `TOP_K` pairs retrieved from the KB."""
    audio_query = kb.pair_vectors([0])[:, : kb.metadata.audio_dim]
    hits = kb.search(audio_query, mode="audio2audio", top_k=TOP_K)
    query = {"audio_tokens": np.zeros((model.config.audio_tokens_per_window, model.config.encoder_hidden_size))}
    return processor(audio=[query], examples=kb.examples(hits))["input_ids"].shape[1]


def lm_prompt(model: PairCapForConditionalGeneration, batch_size: int, length: int) -> dict:
    """`inputs_embeds` of random token ids and a full attention mask, for the plain LM baseline."""
    device = model.device
    ids = torch.randint(3, 300, (batch_size, length), device=device)
    embeds = model.get_input_embeddings()(ids)
    return {"inputs_embeds": embeds, "attention_mask": torch.ones(batch_size, length, dtype=torch.long, device=device)}


def read_bandwidth(device: str) -> float:
    """Measured memory read bandwidth (bytes/s): summing a 256 MiB float32 buffer."""
    buffer = torch.ones(64 * 2**20, device=device)
    timing = measure(buffer.sum, device, warmup=2, repeats=5)
    return buffer.numel() * buffer.element_size() / timing.median


def bytes_per_step(lm, batch_size: int, context: int) -> tuple[int, int]:
    """Weights read per decode step (all but the input embedding table) and the KV cache of `context` tokens."""
    config = lm.config
    weights = sum(p.numel() * p.element_size() for p in lm.parameters())
    embedding = lm.get_input_embeddings().weight
    head_dim = getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads
    kv_per_token = 2 * config.num_hidden_layers * config.num_key_value_heads * head_dim * embedding.element_size()
    return weights - embedding.numel() * embedding.element_size(), kv_per_token * batch_size * context


class StepClock(LogitsProcessor):
    """Timestamps each generation step: called once per new token, right after the forward that gave its logits."""

    def __init__(self, device: str):
        self.device = device
        self.start = time.perf_counter()
        self.times: list[float] = []

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        synchronize(self.device)
        self.times.append(time.perf_counter())
        return scores


class CaptioningBench:
    """One model, KB and set of generation settings; measures each batch size."""

    def __init__(self, model, processor, kb, device: str, new_tokens: int, repeats: int, bandwidth: float):
        self.model, self.processor, self.kb, self.device = model, processor, kb, device
        self.new_tokens, self.repeats, self.bandwidth = new_tokens, repeats, bandwidth
        self.generate_kwargs = generation_kwargs(model, new_tokens)
        self.pass2_tokens = pass2_prompt_tokens(processor, kb, model)

    def median_s(self, fn) -> float:
        return measure(fn, self.device, warmup=WARMUP, repeats=self.repeats).median

    def lm_run(self, batch_size: int, length: int) -> tuple[float, dict]:
        """Median latency of plain LM generate on a prompt of `length` embeddings, and its decode row: median prefill
        time and ms/step (timestamped inside the same calls) against the bandwidth floor."""
        kwargs = {**lm_prompt(self.model, batch_size, length), **self.generate_kwargs}
        clocks = []

        def call() -> None:
            clocks.append(StepClock(self.device))
            self.model.language_model.generate(**kwargs, logits_processor=LogitsProcessorList([clocks[-1]]))

        latency_s = self.median_s(call)
        timed = clocks[WARMUP:]
        decode_ms = 1000 * statistics.median(np.concatenate([np.diff(clock.times) for clock in timed]))
        weights, kv = bytes_per_step(self.model.language_model, batch_size, length + self.new_tokens // 2)
        floor_ms = 1000 * (weights + kv) / self.bandwidth
        return latency_s, {
            "batch_size": batch_size,
            "prompt_tokens": length,
            "prefill_s": statistics.median(clock.times[0] - clock.start for clock in timed),
            "decode_ms_per_step": decode_ms,
            "weights_bytes": weights,
            "kv_cache_bytes": kv,
            "floor_ms_per_step": floor_ms,
            "floor_over_decode": floor_ms / decode_ms,
        }

    def run(self, batch_size: int) -> tuple[list[dict], list[dict], list[dict]]:
        """Project, baseline and decode rows of one batch size."""
        inputs = query_inputs(self.processor, batch_size, self.device)
        zero_shot_tokens = inputs["input_ids"].shape[1]
        retriever = PairCapRetriever(self.kb, self.processor)
        retrieval = {"retriever": retriever, "retrieval_mode": "generative_pair2pair", "top_k": TOP_K}
        zero_shot = self.median_s(lambda: self.model.generate(**inputs, retrieval_mode="none", **self.generate_kwargs))
        pair2pair = self.median_s(
            lambda: self.model.generate(**inputs, **retrieval, fusion_weight=FUSION_WEIGHT, **self.generate_kwargs)
        )
        lm_pass1, decode1 = self.lm_run(batch_size, zero_shot_tokens)
        lm_pass2, decode2 = self.lm_run(batch_size, self.pass2_tokens)
        both_lengths = [zero_shot_tokens, self.pass2_tokens]
        project = [
            caption_row("zero-shot", batch_size, zero_shot_tokens, zero_shot, lm_pass1),
            caption_row("generative pair2pair", batch_size, both_lengths, pair2pair, lm_pass1 + lm_pass2),
        ]
        baseline = [
            caption_row("LM generate, one pass", batch_size, zero_shot_tokens, lm_pass1),
            caption_row("LM generate, two passes", batch_size, both_lengths, lm_pass1 + lm_pass2),
        ]
        return project, baseline, [decode1, decode2]


def files_sweep(model, processor, folder: Path, args: argparse.Namespace, kb_sizes, new_tokens: int) -> list[dict]:
    """
    End-to-end files/s (`--files-batch` 10 s wav files: processor from the paths, then `generate`) and `generate`-only
    files/s of generative pair-to-pair and of mode none, for each KB size; per repeat, each of the four calls once
    (interleaved; the first round warms up). Rows carry the pair-to-pair / none ratio measured in the same run.
    """
    device, batch = args.device, args.files_batch
    (folder / "queries").mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(batch):
        paths.append(str(folder / "queries" / f"query{i}.wav"))
        sf.write(paths[-1], waveform(QUERY_SECONDS, seed=500 + i), SAMPLING_RATE)
    generate_kwargs = generation_kwargs(model, new_tokens)
    prepared = processor(audio=paths).to(device)
    rows = []
    for kb_size in kb_sizes:
        start = time.perf_counter()
        kb = synthetic_knowledge_base(model, folder / f"kb-{kb_size}", kb_size, KB_CLIP_SECONDS)
        build_s = time.perf_counter() - start
        retrieval = {"retriever": PairCapRetriever(kb, processor), "retrieval_mode": "generative_pair2pair"}
        retrieval.update(top_k=TOP_K, fusion_weight=FUSION_WEIGHT)
        modes = {"none": {"retrieval_mode": "none"}, "generative pair2pair": retrieval}

        def call(mode: str, end_to_end: bool, modes: dict = modes) -> None:
            inputs = processor(audio=paths).to(device) if end_to_end else prepared
            model.generate(**inputs, **modes[mode], **generate_kwargs)

        calls = [(mode, end_to_end) for end_to_end in (True, False) for mode in modes]
        seconds = {key: [] for key in calls}
        for repeat in range(args.sweep_repeats + 1):
            for key in calls:
                begin = time.perf_counter()
                call(*key)
                synchronize(device)
                if repeat:
                    seconds[key].append(time.perf_counter() - begin)
        for mode, end_to_end in calls:
            median = statistics.median(seconds[mode, end_to_end])
            none = statistics.median(seconds["none", end_to_end])
            row = {"mode": mode, "kb_size": kb_size, "batch_size": batch, "path": "files" if end_to_end else "generate"}
            row.update(latency_s=median, files_per_s=batch / median, files_per_s_vs_none=none / median)
            row["paired_vs_none"] = statistics.median(
                n / p for n, p in zip(seconds["none", end_to_end], seconds[mode, end_to_end], strict=True)
            )
            row.update(kb_build_s=build_s, raw_s=seconds[mode, end_to_end])
            rows.append(row)
        ratio = [row["files_per_s_vs_none"] for row in rows[-4:] if row["mode"] != "none"]
        print(f"KB {kb_size:,} pairs: pair2pair / none files/s = {ratio[0]:.2f} (files), {ratio[1]:.2f} (generate)")
        del kb, retrieval, modes
    return rows


def contention(model, processor, folder: Path, args: argparse.Namespace, new_tokens: int, threads: int) -> list[dict]:
    """The contention row (`benchmarks/contention.py`) of generative pair-to-pair, `threads` being the policy's
    default count; at tiny size with a language model of the mini recipe's shape and a KB of its own. Changes
    `model`."""
    if args.size == "tiny":
        use_mini_lm(model)
    kb = synthetic_knowledge_base(model, folder / "kb-contention", DEFAULTS[args.size]["kb_pairs"], KB_CLIP_SECONDS)
    retrieval = {"retriever": PairCapRetriever(kb, processor), "retrieval_mode": "generative_pair2pair"}
    retrieval.update(top_k=TOP_K, fusion_weight=FUSION_WEIGHT, **generation_kwargs(model, new_tokens))
    rows = []
    for batch_size in args.contention_batch_sizes:
        inputs = query_inputs(processor, batch_size, args.device)

        def call(inputs=inputs, batch_size=batch_size):
            with threads_for_decoding(model, batch_size):
                return model.generate(**inputs, **retrieval)

        batch_rows = contention_rows(call, batch_size, args.device, threads, args.contention_repeats)
        for row in batch_rows:
            if row["default"]:
                # the policy row ran with the count left to the policy (contention.POLICY unsets OMP_NUM_THREADS)
                row["policy_threads"] = decoding_threads(model, batch_size, threads, chosen=False)
        summary = "; ".join(f"{r['condition']}, threads {r['threads']}: {r['vs_best']:.2f}" for r in batch_rows)
        print(f"contention, batch {batch_size}, speed / best: {summary}", flush=True)
        rows += batch_rows
    return rows


def check_files_target(rows: list[dict]) -> list[dict]:
    size, limit = FILES_TARGET
    return [
        target_check(
            f"pair2pair files/s / none >= {limit:g}",
            row["files_per_s_vs_none"],
            limit,
            at_least=True,
            kb_size=row["kb_size"],
            path=row["path"],
        )
        for row in rows
        if row["kb_size"] == size and row["mode"] != "none" and row["path"] == "files"
    ]


def caption_row(mode: str, batch_size: int, prompt_tokens, latency_s: float, baseline_s: float | None = None) -> dict:
    """Latency of one generate call (every caption of the batch waits for it) and captions/s."""
    row = {
        "mode": mode,
        "batch_size": batch_size,
        "prompt_tokens": prompt_tokens,
        "latency_s": latency_s,
        "captions_per_s": batch_size / latency_s,
    }
    if baseline_s is not None:
        row["speedup_vs_baseline"] = baseline_s / latency_s
    return row


def main(argv: Sequence[str] | None = None) -> dict:
    """Run the benchmark and write `captioning-<device>-<size>.json/.md`."""
    args = parse_args(__doc__.strip().splitlines()[0], argv, add_arguments)
    for name, value in {**SWEEP_DEFAULTS[args.size], **CONTENTION_DEFAULTS}.items():
        setattr(args, name, value if getattr(args, name) is None else getattr(args, name))
    if args.device != "cpu":
        args.contention_batch_sizes = []
    env = environment(args.device)
    defaults = DEFAULTS[args.size]
    batch_sizes, new_tokens = args.batch_sizes or defaults["batch_sizes"], args.new_tokens or defaults["new_tokens"]
    if new_tokens < 2:
        raise SystemExit("--new-tokens must be at least 2 (decode time is measured over the steps after the first)")
    measured_bandwidth = read_bandwidth(args.device)
    bandwidth = NOMINAL_GPU_BANDWIDTH if args.device == "cuda" else measured_bandwidth
    with tempfile.TemporaryDirectory(prefix="paircap-captioning-") as folder:
        model, processor = release(args.size, Path(folder), args.device)
        kb = synthetic_knowledge_base(model, Path(folder) / "kb", defaults["kb_pairs"], KB_CLIP_SECONDS)
        bench = CaptioningBench(model, processor, kb, args.device, new_tokens, defaults["repeats"], bandwidth)
        project, baseline, decode = [], [], []
        for batch_size in batch_sizes:
            rows = bench.run(batch_size)
            project, baseline, decode = project + rows[0], baseline + rows[1], decode + rows[2]
            print(f"batch {batch_size}: {rows[0][1]['captions_per_s']:.2f} captions/s (pair2pair)", flush=True)
        kb_sizes = defaults["kb_sizes"] if args.kb_sizes is None else args.kb_sizes
        files = files_sweep(model, processor, Path(folder), args, kb_sizes, new_tokens) if kb_sizes else []
        threads = env["torch_threads"]
        busy = (
            contention(model, processor, Path(folder), args, new_tokens, threads) if args.contention_batch_sizes else []
        )

    settings = {
        "model": "Vicuna-7B-shaped release, random weights" if args.size == "full" else "tiny release",
        "dtype": str(model_dtype(args.device)),
        "batch_sizes": batch_sizes,
        "new_tokens": new_tokens,
        "decoding": "greedy, min_new_tokens = max_new_tokens",
        "top_k": TOP_K,
        "fusion_weight": FUSION_WEIGHT,
        "kb_pairs": defaults["kb_pairs"],
        "kb_clip_seconds": KB_CLIP_SECONDS,
        "query_seconds": QUERY_SECONDS,
        "pass2_prompt_tokens": bench.pass2_tokens,
        "sweep_kb_sizes": kb_sizes,
        "files_batch": args.files_batch,
        "sweep_repeats": args.sweep_repeats,
        "captions_per_clip": 5,
        "warmup": WARMUP,
        "repeats": defaults["repeats"],
        "bandwidth_bytes_per_s": bandwidth,
        "bandwidth_source": "nominal H100 (3 TB/s)" if args.device == "cuda" else "measured",
        "measured_bandwidth_bytes_per_s": measured_bandwidth,
        "contention_batch_sizes": args.contention_batch_sizes,
        "contention_repeats": args.contention_repeats,
        "contention_model": "tiny release with the mini LM shape" if args.size == "tiny" else "as above",
        "contention_load": "one spinning Python process, unpinned, started and stopped around each contended round",
        "default_threads": threads,
    }
    results = {"project": project, "baseline": baseline, "decode": decode}
    if files:
        results.update(files_sweep=files, files_targets=check_files_target(files))
    if busy:
        results.update(contention=busy, contention_targets=check_default(busy))
    columns = ["mode", "batch_size", "prompt_tokens", "latency_s", "captions_per_s"]
    decode_columns = ["batch_size", "prompt_tokens", "prefill_s", "decode_ms_per_step", "floor_ms_per_step"]
    tables = [
        markdown_table("PairCap generate", project, [*columns, "speedup_vs_baseline"]),
        markdown_table("Baseline: plain LM generate on inputs_embeds", baseline, columns),
        markdown_table("Plain LM decode against the bandwidth floor", decode, [*decode_columns, "floor_over_decode"]),
    ]
    if files:
        sweep_columns = ["kb_size", "batch_size", "path", "mode", "latency_s", "files_per_s", "files_per_s_vs_none"]
        tables.append(
            markdown_table("Files/s by KB size (medians, interleaved)", files, [*sweep_columns, "paired_vs_none"])
        )
        if results["files_targets"]:
            target_columns = ["kb_size", "path", "target", "measured", "met"]
            tables.append(markdown_table("Files/s target", results["files_targets"], target_columns))
    if busy:
        busy_columns = ["condition", "batch_size", "threads", "default", "latency_s", "captions_per_s", "vs_best"]
        tables.append(
            markdown_table(
                "Contention: thread counts, quiet and one core busy",
                busy,
                [*busy_columns, "same_captions", "load_cpu_share"],
            )
        )
        target_columns = ["batch_size", "condition", "threads", "target", "measured", "met"]
        tables.append(markdown_table("Contention target", results["contention_targets"], target_columns))
    return write_results(args, "captioning", env, settings, results, tables)


if __name__ == "__main__":
    main()
