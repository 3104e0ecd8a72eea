"""
Training: samples/s and peak memory of stage-2 steps, against stage 1 measured in the same run.

A step is forward + backward + AdamW step + zero_grad on one batch built by the processor
(`processor(audio=..., examples=..., captions=...)`: synthetic 10 s query clips, each after retrieved pairs given as
pooled tokens of a 20 s KB clip, labels over every caption). Stage 2 (`configure_stage2`: IA3 + LM head + projector +
the CLAP audio encoder) is ours; stage 1 (`configure_stage1`: the projector alone) is the baseline. Peak memory is
`torch.cuda.max_memory_allocated` on a GPU and the peak resident set size on the CPU, reset before each stage.

Full size: the Vicuna-7B-shaped release with random bf16 weights (pure bf16 AdamW), batch 8 (GPU). Tiny: the tiny
release in float32, batch 4 (CPU smoke test).

    python -m benchmarks.training [--size tiny|full] [--device cpu|cuda] [--output-dir benchmarks/results]
"""

from __future__ import annotations

import argparse
import gc
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import torch

from benchmarks.common import (
    environment,
    markdown_table,
    measure_with_peak,
    parse_args,
    write_results,
)
from benchmarks.workloads import CAPTIONS, SAMPLING_RATE, model_dtype, release, waveform
from modeling_paircap.modeling_paircap import PairCapForConditionalGeneration
from modeling_paircap.processing_paircap import PairCapProcessor
from paircap.training.trainable_parameters import (
    configure_stage1,
    configure_stage2,
    set_training_mode,
    trainable_parameter_count,
)

QUERY_SECONDS = 10.0
EXAMPLE_WINDOWS = 2  # each retrieved pair: the pooled tokens of a 20 s clip
WARMUP = 2
LEARNING_RATE = 1e-5
DEFAULTS = {"tiny": {"batch_size": 4, "examples": 2, "steps": 5}, "full": {"batch_size": 8, "examples": 2, "steps": 5}}
STAGES: dict[str, Callable[[PairCapForConditionalGeneration], None]] = {
    "stage 1: projector": configure_stage1,
    "stage 2: IA3 + LM head + projector + audio encoder": configure_stage2,
}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--batch-size", type=int, help="samples per step (tiny 4, full 8)")
    parser.add_argument("--examples", type=int, help="retrieved pairs before each query (default 2)")
    parser.add_argument("--steps", type=int, help="timed steps per stage, after 2 warm-up steps (default 5)")


def training_batch(processor: PairCapProcessor, model, batch_size: int, num_examples: int, device: str):
    """A labelled batch from the processor: query clips after `num_examples` retrieved pairs (random pooled tokens)."""
    rng = np.random.default_rng(0)
    shape = (EXAMPLE_WINDOWS * model.config.audio_tokens_per_window, model.config.encoder_hidden_size)

    def example(index: int) -> dict:
        return {
            "audio_tokens": rng.standard_normal(shape).astype(np.float16),
            "caption": CAPTIONS[index % len(CAPTIONS)],
        }

    examples = [[example(i + j) for j in range(1, num_examples + 1)] for i in range(batch_size)]
    clips = [waveform(QUERY_SECONDS, seed=i) for i in range(batch_size)]
    captions = [CAPTIONS[i % len(CAPTIONS)] for i in range(batch_size)]
    return processor(audio=clips, sampling_rate=SAMPLING_RATE, examples=examples, captions=captions).to(device)


def train_step(model, optimizer: torch.optim.Optimizer, batch) -> None:
    model(**batch).loss.backward()
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)


def measure_stage(name: str, model, batch, device: str, steps: int) -> dict:
    """Configure a stage, then time its steps and record its peak memory."""
    STAGES[name](model)
    set_training_mode(model)
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=LEARNING_RATE)
    gc.collect()
    timing, peak = measure_with_peak(lambda: train_step(model, optimizer, batch), device, warmup=WARMUP, repeats=steps)
    batch_size, tokens = batch["input_ids"].shape[0], int(batch["attention_mask"].sum())
    return {
        "stage": name,
        "trainable_parameters": trainable_parameter_count(model),
        "batch_size": batch_size,
        "tokens_per_step": tokens,
        "step_s": timing.median,
        "samples_per_s": batch_size / timing.median,
        "tokens_per_s": tokens / timing.median,
        "peak_memory_bytes": peak,
        "peak_memory_gib": peak / 2**30,
        "raw_step_s": timing.seconds,
    }


def main(argv: Sequence[str] | None = None) -> dict:
    """Run the benchmark and write `training-<device>-<size>.json/.md`."""
    args = parse_args(__doc__.strip().splitlines()[0], argv, add_arguments)
    env = environment(args.device)
    defaults = DEFAULTS[args.size]
    batch_size = args.batch_size or defaults["batch_size"]
    num_examples = defaults["examples"] if args.examples is None else args.examples
    steps = args.steps or defaults["steps"]
    with tempfile.TemporaryDirectory(prefix="paircap-training-") as folder:
        model, processor = release(args.size, Path(folder), args.device)
    batch = training_batch(processor, model, batch_size, num_examples, args.device)
    baseline, project = (measure_stage(name, model, batch, args.device, steps) for name in STAGES)
    project["speedup_vs_baseline"] = baseline["step_s"] / project["step_s"]
    project["peak_memory_vs_baseline"] = project["peak_memory_bytes"] / baseline["peak_memory_bytes"]

    settings = {
        "model": "Vicuna-7B-shaped release, random weights" if args.size == "full" else "tiny release",
        "dtype": str(model_dtype(args.device)),
        "batch_size": batch_size,
        "examples_per_sample": num_examples,
        "query_seconds": QUERY_SECONDS,
        "sequence_tokens": batch["input_ids"].shape[1],
        "optimizer": f"AdamW lr={LEARNING_RATE}",
        "warmup_steps": WARMUP,
        "timed_steps": steps,
        "peak_memory": "torch.cuda.max_memory_allocated" if args.device == "cuda" else "peak RSS (VmHWM), reset",
    }
    results = {"project": [project], "baseline": [baseline]}
    columns = ["stage", "trainable_parameters", "step_s", "samples_per_s", "tokens_per_s", "peak_memory_gib"]
    table = markdown_table("Forward + backward + optimizer step", [baseline, project], columns)
    table += (
        f"\n\nStage 2 against stage 1: {project['speedup_vs_baseline']:.2f}x the speed, "
        f"{project['peak_memory_vs_baseline']:.2f}x the peak memory."
    )
    return write_results(args, "training", env, settings, results, [table])


if __name__ == "__main__":
    main()
