"""
GPU check: the full-size figures in one call of at most 8 minutes on one H100 or H200, from a fresh machine.

Sections, in this order, each timed and guarded (an error or an overrun is recorded and the next section runs):

1. `build`: the 7B-shaped release (CLAP HTSAT + Vicuna-7B shape) with random bf16 weights on the device, and a
   synthetic format-2 KB of 65 pairs in its retrieval space (`workloads.full_release`, `synthetic_knowledge_base`).
2. `generate_eager_1`, `generate_eager_large`: generative pair-to-pair `generate` (pass 1 zero-shot, CLAP text
   embedding, retrieval of 5 pairs, pass 2), greedy, exactly 24 new tokens per pass, at batch 1 and batch 64.
3. `search`: the retrieval class's exact torch search on the GPU over 2.2 M synthetic `[audio ; text]` pairs of
   512 + 512 dims (pair2pair, top 10) at 1, 64 and 1,024 queries, checked against a plain matmul + topk.
4. `kb_embedding`: clips/s of 64 decoded 10 s clips to stored KB rows (torch log-mels on the device, the CLAP audio
   tower in bf16), and of the encoder alone.
5. `generate_static_1`, `generate_static_large`: the same generate with `cache_implementation="static"` (on a GPU
   transformers compiles the decoding step; the first calls include the compilation). The large batch runs only in
   the time the sections after it do not need.
6. `stage2`: stage-2 optimizer steps with the settings of `configs/stage2_phase2.yaml` (`configure_stage2`: IA3 + LM
   head + projector + the separate audio tower; float32 weights under bf16 autocast, as accelerate's
   `mixed_precision: bf16`; gradient checkpointing; batch 8, each sample after K = 5 retrieved pairs; AdamW over
   `optimizer_groups`, clipping at 1.0) on a processor batch (no data files), with the peak memory.

A global budget (`--budget-s`, default 420 s, leaving time for imports and the wheels' install inside 8 minutes)
stops the run early: every section runs under an alarm of at most its own cap and the time left, and the results
name what was skipped. The results file is rewritten after every section, so a run killed from outside keeps what was
measured. Targets (full size): batch 64 >= 45 captions/s (HF eager anchor 26/s, bandwidth floor 58/s) and batch 1
<= 0.4 s per caption (static-cache anchor 0.53 s, eager 1.44 s).

`--size tiny --device cpu` runs the same code paths with the tiny release and small data in seconds (the suite's dry
run). Writes `gpu_check-<device>-<size>.json` and `.md` into `--output-dir`.

    python -m benchmarks.gpu_check [--size tiny|full] [--device cpu|cuda] [--output-dir DIR] [--budget-s 420]
        [--sections build generate_eager_1 ...]
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import importlib.metadata
import os
import signal
import statistics
import tempfile
import time
import traceback
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pyarrow as pa
import torch

from benchmarks.captioning import (
    FUSION_WEIGHT,
    KB_CLIP_SECONDS,
    TOP_K,
    generation_kwargs,
    pass2_prompt_tokens,
    query_inputs,
)
from benchmarks.common import (
    environment,
    markdown_table,
    measure,
    measure_with_peak,
    parse_args,
    synchronize,
    target_check,
    write_results,
)
from benchmarks.kb_embedding import embed_clips, encode_and_store, torch_featurizer, window_clips
from benchmarks.training import training_batch
from benchmarks.workloads import model_dtype, release, synthetic_knowledge_base, waveform
from modeling_paircap.index_paircap import PairCapIndex
from modeling_paircap.retrieval_paircap import PairCapRetriever
from paircap.convert_laion_clap import laion_clap_feature_extractor
from paircap.training.config import parse_config
from paircap.training.stage_setups import optimizer_groups
from paircap.training.trainable_parameters import configure_stage2, set_training_mode, trainable_parameter_count

BENCHMARK = "gpu_check"
SETTINGS = {
    "full": {
        "budget_s": 420.0,
        "new_tokens": 24,
        "large_batch": 64,
        "repeats": 3,
        "kb_pairs": 65,
        "search_pairs": 2_200_000,
        "search_dim": 512,
        "search_batches": [1, 64, 1024],
        "embed_clips": 64,
        "stage2_overrides": [],
        "train_steps": 3,
        "min_section_s": 15.0,
    },
    "tiny": {
        "budget_s": 240.0,
        "new_tokens": 4,
        "large_batch": 4,
        "repeats": 2,
        "kb_pairs": 20,
        "search_pairs": 20_000,
        "search_dim": 64,
        "search_batches": [1, 4, 64],
        "embed_clips": 4,
        "stage2_overrides": ["--per_device_batch_size", "2", "--max_examples", "2"],
        "train_steps": 2,
        "min_section_s": 0.5,
    },
}
CLIP_SECONDS = 10.0
VECTOR_CHUNK = 262_144  # synthetic search rows drawn per step on the device
TOP_K_SEARCH = 10
STAGE2_CONFIG = Path(__file__).resolve().parents[1] / "configs" / "stage2_phase2.yaml"
WRITE_RESERVE_S = 5.0  # kept back from the budget for writing the results
# the targets (full size, one H100/H200) and the anchors measured before (DESIGN.md, issue 28)
BATCH1_LIMIT_S, LARGE_BATCH_MIN_PER_S = 0.4, 45.0
BATCH1_ANCHORS = {"eager": "HF eager ~1.44 s", "static": "static cache + compile ~0.53 s"}
LARGE_BATCH_ANCHORS = "HF eager 26/s, bandwidth floor 58/s"


class SectionTimeout(BaseException):
    """Raised by the alarm when a section outlives its limit (a BaseException, so no `except Exception` inside the
    measured code swallows it)."""


@contextlib.contextmanager
def time_limit(seconds: float) -> Iterator[None]:
    """Raise `SectionTimeout` in the main thread once `seconds` have passed inside the block."""

    def stop(signum, frame) -> None:
        raise SectionTimeout(f"stopped at its limit of {seconds:.1f} s")

    previous = signal.signal(signal.SIGALRM, stop)
    signal.setitimer(signal.ITIMER_REAL, max(seconds, 0.01))
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


@dataclass
class Section:
    """One guarded step: `run(state)` returns rows for `state.results[table]`. `cap_s` bounds its time (at most
    `TINY_CAP_S` at the tiny size); an `optional` section gets only the time that the required sections after it do
    not need."""

    name: str
    run: Callable[[CheckState], list[dict]]
    table: str
    cap_s: float
    needs_model: bool = True
    optional: bool = False


@dataclass
class CheckState:
    """What the sections share: settings, the model, processor and KB once built, and the results so far."""

    args: argparse.Namespace
    settings: dict
    folder: Path
    started: float = field(default_factory=time.perf_counter)
    model: object = None
    processor: object = None
    kb: object = None
    results: dict = field(default_factory=dict)

    @property
    def device(self) -> str:
        return self.args.device

    def elapsed(self) -> float:
        return time.perf_counter() - self.started


# ------------------------------------------------------------------------------------------------------------ sections
def build(state: CheckState) -> list[dict]:
    """The release and a small synthetic KB in its retrieval space."""
    start = time.perf_counter()
    model, processor = release(state.args.size, state.folder, state.device)
    synchronize(state.device)
    build_s = time.perf_counter() - start
    state.kb = synthetic_knowledge_base(model, state.folder / "kb", state.settings["kb_pairs"], KB_CLIP_SECONDS)
    state.model, state.processor = model, processor  # set once the KB is there too: the later sections need both
    parameters = sum(p.numel() for p in model.parameters())
    weights = sum(p.numel() * p.element_size() for p in model.parameters())
    row = {"model": "7B-shaped release" if state.args.size == "full" else "tiny release", "parameters": parameters}
    row.update(dtype=str(model_dtype(state.device)), weights_gib=weights / 2**30, build_s=build_s)
    row["kb_pairs"] = state.settings["kb_pairs"]
    return [row]


def generation(large: bool, cache: str) -> Callable[[CheckState], list[dict]]:
    """Generative pair-to-pair `generate` at batch 1 or the size's large batch, with the default dynamic cache
    (`eager`) or `cache="static"`."""

    def run(state: CheckState) -> list[dict]:
        model, processor, new_tokens = state.model, state.processor, state.settings["new_tokens"]
        batch_size = state.settings["large_batch"] if large else 1
        inputs = query_inputs(processor, batch_size, state.device)
        kwargs = {**generation_kwargs(model, new_tokens), "retriever": PairCapRetriever(state.kb, processor)}
        kwargs.update(retrieval_mode="generative_pair2pair", top_k=TOP_K, fusion_weight=FUSION_WEIGHT)
        if cache == "static":
            kwargs["cache_implementation"] = "static"
        warmup, repeats = (2 if cache == "static" else 1), state.settings["repeats"]
        compiled_before = dynamo_counts()
        seconds = []
        for _ in range(warmup + repeats):
            start = time.perf_counter()
            model.generate(**inputs, **kwargs)
            synchronize(state.device)
            seconds.append(time.perf_counter() - start)
        latency = statistics.median(seconds[warmup:])
        row = {"mode": "generative pair2pair", "cache": cache, "batch_size": batch_size, "new_tokens": new_tokens}
        row.update(prompt_tokens=[inputs["input_ids"].shape[1], pass2_prompt_tokens(processor, state.kb, model)])
        row.update(latency_s=latency, s_per_caption=latency / batch_size, captions_per_s=batch_size / latency)
        row.update(first_call_s=seconds[0], warmup=warmup, raw_s=seconds[warmup:])
        row.update({key: value - compiled_before[key] for key, value in dynamo_counts().items()})
        return [row]

    return run


def dynamo_counts() -> dict[str, int]:
    """Graphs torch.compile made and graph breaks it met so far in this process (on a GPU, generate compiles the
    decoding step of a static cache: one graph and no break is the fast case)."""
    from torch._dynamo.utils import counters  # torch.compile's own bookkeeping

    return {
        "compiled_graphs": counters["stats"]["unique_graphs"],
        "graph_breaks": sum(counters["graph_break"].values()),
    }


def unit_pair_vectors(num: int, dim: int, device: str, seed: int) -> np.ndarray:
    """(num, 2 * dim) float32 `[audio ; text]` rows, each half L2-normalised (uniform on the sphere), drawn on
    `device` in chunks."""
    generator = torch.Generator(device=device).manual_seed(seed)
    vectors = np.empty((num, 2 * dim), dtype=np.float32)
    for start in range(0, num, VECTOR_CHUNK):
        stop = min(start + VECTOR_CHUNK, num)
        halves = torch.randn((stop - start, 2, dim), generator=generator, device=device)
        halves = torch.nn.functional.normalize(halves, dim=2)
        vectors[start:stop] = halves.reshape(stop - start, 2 * dim).cpu().numpy()
    return vectors


def exact_search(vectors: np.ndarray, device: str) -> Callable[[np.ndarray, np.ndarray, int], list[list[int]]]:
    """
    The knowledge base's exact search on `device` (`PairCapIndex`'s chunked torch matmul) over `vectors`, as
    `search(audio, text, top_k)` -> each query's hit rows (pair2pair, W = `FUSION_WEIGHT`).
    """
    ids = pa.array(np.arange(len(vectors))).cast(pa.string())
    index = PairCapIndex(vectors, ids, ids, ids, device=device)

    def search(audio: np.ndarray, text: np.ndarray, top_k: int) -> list[list[int]]:
        hits = index.search(audio, text, mode="pair2pair", fusion_weight=FUSION_WEIGHT, top_k=top_k)
        return [[pair.row for pair in pairs] for pairs in hits]

    return search


def reference_rows(vectors: torch.Tensor, audio: np.ndarray, text: np.ndarray, top_k: int) -> list[list[int]]:
    """Plain matmul + topk (float32) of the fused queries `[W a ; (1 - W) t]`: what the search must return."""
    queries = np.concatenate([FUSION_WEIGHT * audio, (1 - FUSION_WEIGHT) * text], axis=1)
    scores = torch.from_numpy(queries).to(vectors.device) @ vectors.T
    return torch.topk(scores, top_k, dim=1).indices.cpu().tolist()


def search(state: CheckState) -> list[dict]:
    """Setup and query latency of exact GPU search over the synthetic KB, checked against the plain reference."""
    num, dim, device = state.settings["search_pairs"], state.settings["search_dim"], state.device
    start = time.perf_counter()
    vectors = unit_pair_vectors(num, dim, device, seed=0)
    draw_s = time.perf_counter() - start
    start = time.perf_counter()
    searcher = exact_search(vectors, device)
    synchronize(device)
    setup_s = time.perf_counter() - start
    batches = state.settings["search_batches"]
    halves = np.split(unit_pair_vectors(max(batches), dim, device, seed=1), 2, axis=1)
    audio, text = (np.ascontiguousarray(half) for half in halves)
    check = min(64, len(audio))
    found = searcher(audio[:check], text[:check], TOP_K_SEARCH)
    on_device = torch.from_numpy(vectors).to(device)
    expected = reference_rows(on_device, audio[:check], text[:check], TOP_K_SEARCH)
    recall = statistics.mean(len(set(a) & set(b)) / TOP_K_SEARCH for a, b in zip(found, expected, strict=True))
    del on_device, vectors
    rows = []
    for batch in batches:
        timing = measure(lambda b=batch: searcher(audio[:b], text[:b], TOP_K_SEARCH), device, warmup=1, repeats=5)
        row = {"kb_pairs": num, "dims": f"{dim} + {dim}", "queries": batch, "top_k": TOP_K_SEARCH}
        row.update(latency_ms=1000 * timing.median, queries_per_s=batch / timing.median, setup_s=setup_s)
        row.update(draw_s=draw_s, recall_vs_matmul=recall)
        rows.append({**row, "raw_s": timing.seconds})
    return rows


def kb_embedding(state: CheckState) -> list[dict]:
    """Clips/s from decoded 10 s clips to stored rows (torch log-mels + the CLAP audio tower), and the encoder alone."""
    model, device, num = state.model, state.device, state.settings["embed_clips"]
    featurize = torch_featurizer(laion_clap_feature_extractor(model.clap.config), device)
    clips = [waveform(CLIP_SECONDS, seed=i) for i in range(num)]
    windows, counts = window_clips(clips, model)
    total = measure(lambda: embed_clips(model, clips, featurize), device, repeats=state.settings["repeats"])
    features = featurize(windows)
    encoder = measure(lambda: encode_and_store(model, features, counts), device, repeats=state.settings["repeats"])
    dtype = str(next(model.clap.audio_model.parameters()).dtype)
    rows = []
    for path, timing in (("waveforms -> stored rows", total), ("encoder + store only", encoder)):
        row = {"path": path, "clips": num, "windows": len(windows), "clip_seconds": CLIP_SECONDS, "dtype": dtype}
        rows.append({**row, "latency_s": timing.median, "clips_per_s": num / timing.median, "raw_s": timing.seconds})
    return rows


def stage2(state: CheckState) -> list[dict]:
    """Stage-2 steps as the recipe's `configs/stage2_phase2.yaml` trains (its batch, K retrieved pairs per sample,
    precision, gradient checkpointing, optimizer groups and clipping), with their median time and peak memory."""
    model, device = state.model, state.device
    cfg = parse_config(["--config", str(STAGE2_CONFIG), *state.settings["stage2_overrides"]])
    autocast = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(cfg.mixed_precision)
    if autocast is not None:  # accelerate's mixed precision: float32 weights, the forward under autocast
        model.float()
    configure_stage2(model, cfg.train_audio_encoder, cfg.train_language_model, cfg.train_lm_head)
    if cfg.gradient_checkpointing:
        model.language_model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    set_training_mode(model)
    batch = training_batch(state.processor, model, cfg.per_device_batch_size, cfg.max_examples, device)
    optimizer = torch.optim.AdamW(optimizer_groups(cfg, model), weight_decay=cfg.weight_decay)
    trainable = [p for p in model.parameters() if p.requires_grad]

    def step() -> None:
        with torch.autocast(torch.device(device).type, dtype=autocast, enabled=autocast is not None):
            loss = model(**batch).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(trainable, cfg.max_grad_norm)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    gc.collect()
    before = torch.cuda.memory_allocated() if device == "cuda" else None
    timing, peak = measure_with_peak(step, device, warmup=2, repeats=state.settings["train_steps"])
    rows, tokens = batch["input_ids"].shape
    row = {"stage": "stage 2 (IA3 + LM head + projector + audio tower)", "batch_size": rows, "sequence_tokens": tokens}
    row.update(examples_per_sample=cfg.max_examples, mixed_precision=cfg.mixed_precision)
    row.update(gradient_checkpointing=cfg.gradient_checkpointing, trainable_parameters=trainable_parameter_count(model))
    row.update(step_s=timing.median, samples_per_s=rows / timing.median, raw_step_s=timing.seconds)
    row.update(peak_memory_gib=peak / 2**30, peak_memory_bytes=peak)
    if before is not None:
        row["allocated_before_gib"] = before / 2**30
    return [row]


SECTIONS = (
    Section("build", build, "build", cap_s=120, needs_model=False),
    Section("generate_eager_1", generation(False, "eager"), "generation", cap_s=60),
    Section("generate_eager_large", generation(True, "eager"), "generation", cap_s=90),
    Section("search", search, "search", cap_s=90, needs_model=False),
    Section("kb_embedding", kb_embedding, "kb_embedding", cap_s=60),
    Section("generate_static_1", generation(False, "static"), "generation", cap_s=150),
    Section("generate_static_large", generation(True, "static"), "generation", cap_s=150, optional=True),
    Section("stage2", stage2, "stage2", cap_s=120),
)
TINY_CAP_S = 60.0


# ------------------------------------------------------------------------------------------------------------- runner
def run_sections(
    state: CheckState,
    sections: Sequence[Section],
    budget_s: float,
    on_update: Callable[[list[dict]], object] | None = None,
) -> list[dict]:
    """
    Run each section under `time_limit(min(cap, time left))`; record ok / error / stopped / skipped with its time and
    reason, and keep going. `on_update()` is called after every section (the results file is rewritten).
    """
    statuses = []
    caps = [section.cap_s if state.args.size == "full" else min(section.cap_s, TINY_CAP_S) for section in sections]
    for position, (section, cap) in enumerate(zip(sections, caps, strict=True)):
        left = budget_s - WRITE_RESERVE_S - state.elapsed()
        later = sum(c for s, c in zip(sections[position + 1 :], caps[position + 1 :], strict=True) if not s.optional)
        limit = min(cap, left - later) if section.optional else min(cap, left)
        status = {"section": section.name, "status": "skipped", "limit_s": round(max(limit, 0.0), 1)}
        if section.needs_model and state.model is None:
            status["detail"] = "no model: the build did not finish"
        elif limit < state.settings["min_section_s"]:
            status["detail"] = f"budget: {max(left, 0):.0f} s left of {budget_s:.0f} s"
            if section.optional:
                status["detail"] += f", {later:.0f} s kept for the sections after it"
        else:
            start = time.perf_counter()
            try:
                with time_limit(limit):
                    rows = section.run(state)
                state.results.setdefault(section.table, []).extend(rows)
                status.update(status="ok")
            except SectionTimeout as stopped:
                status.update(status="stopped", detail=str(stopped))
            except Exception as error:  # recorded; the next section still runs
                status.update(status="error", detail=f"{type(error).__name__}: {error}"[:500])
                status["traceback"] = traceback.format_exc()[-3000:]
            status["seconds"] = time.perf_counter() - start
            release_memory(state.device)
        print(f"[{state.elapsed():6.1f} s] {section.name}: {status['status']} {status.get('detail', '')}", flush=True)
        if "traceback" in status:
            print(status["traceback"], flush=True)
        statuses.append(status)
        if on_update is not None:
            on_update(statuses)
    return statuses


def release_memory(device: str) -> None:
    gc.collect()
    if device == "cuda":
        torch.cuda.empty_cache()


# ------------------------------------------------------------------------------------------------------------ results
def targets(generation_rows: list[dict], large_batch: int) -> list[dict]:
    """Each generation figure against the issue's targets (set for the full size on a GPU), with its anchors."""
    checks = []
    for row in generation_rows:
        context = {"cache": row["cache"], "batch_size": row["batch_size"]}
        if row["batch_size"] == 1:
            context["anchor"] = BATCH1_ANCHORS[row["cache"]]
            target = f"s per caption <= {BATCH1_LIMIT_S:g}"
            checks.append(target_check(target, row["s_per_caption"], BATCH1_LIMIT_S, **context))
        elif row["batch_size"] == large_batch:
            context["anchor"] = LARGE_BATCH_ANCHORS
            target = f"captions/s >= {LARGE_BATCH_MIN_PER_S:g}"
            checks.append(target_check(target, row["captions_per_s"], LARGE_BATCH_MIN_PER_S, at_least=True, **context))
    return checks


def check_environment(device: str) -> dict:
    """`environment` plus what a GPU check must name: library versions, threads, the GPU's memory."""
    env = environment(device)
    for package in ("peft", "accelerate", "datasets", "faiss-cpu", "pyarrow"):
        with contextlib.suppress(importlib.metadata.PackageNotFoundError):
            env[package] = importlib.metadata.version(package)
    env["torch_interop_threads"] = torch.get_num_interop_threads()
    env["omp_num_threads"] = os.environ.get("OMP_NUM_THREADS")
    if device == "cuda":
        properties = torch.cuda.get_device_properties(0)
        env.update(gpu_memory_gib=properties.total_memory / 2**30, cudnn=torch.backends.cudnn.version())
    return env


def environment_line(env: dict) -> str:
    """Device, versions and threads in one sentence."""
    memory = f" ({env['gpu_memory_gib']:.0f} GiB)" if "gpu_memory_gib" in env else ""
    versions = ", ".join(
        f"{name} {env[key]}"
        for name, key in (("CUDA", "cuda"), ("torch", "torch"), ("transformers", "transformers"), ("peft", "peft"))
        if env.get(key)
    )
    threads = f"torch threads {env['torch_threads']} (interop {env['torch_interop_threads']})"
    return f"Device: {env['device_name']}{memory}; {versions}; {threads}, OMP_NUM_THREADS={env['omp_num_threads']}."


def tables(results: dict, statuses: list[dict], size: str, env: dict) -> list[str]:
    """The markdown: the environment and the sections' status, then one table per measurement that ran."""
    parts = [environment_line(env)]
    if size == "tiny":
        parts.append("Tiny dry run: the code paths of the GPU check, not performance figures.")
    parts.append(markdown_table("Sections", statuses, ["section", "status", "seconds", "limit_s", "detail"]))
    layout = {
        "build": ("Build", ["model", "parameters", "dtype", "weights_gib", "build_s", "kb_pairs"]),
        "generation": (
            "Generative pair2pair generate",
            ["cache", "batch_size", "prompt_tokens", "new_tokens", "latency_s", "captions_per_s", "first_call_s"]
            + ["compiled_graphs", "graph_breaks"],
        ),
        "search": (
            "Exact search (the retrieval class's torch path)",
            ["kb_pairs", "dims", "queries", "latency_ms", "queries_per_s", "setup_s", "recall_vs_matmul"],
        ),
        "kb_embedding": ("KB embedding", ["path", "clips", "windows", "dtype", "latency_s", "clips_per_s"]),
        "stage2": (
            "Stage-2 step",
            ["stage", "trainable_parameters", "batch_size", "examples_per_sample", "sequence_tokens", "mixed_precision"]
            + ["step_s", "samples_per_s", "peak_memory_gib"],
        ),
        "targets": ("Targets", ["cache", "batch_size", "target", "measured", "met", "anchor"]),
    }
    for key, (title, columns) in layout.items():
        if results.get(key):
            parts.append(markdown_table(title, results[key], columns))
    skipped = [s["section"] for s in statuses if s["status"] != "ok"]
    parts.append("Not measured: " + (", ".join(skipped) if skipped else "none") + ".")
    return parts


def selected_sections(names: Sequence[str] | None) -> list[Section]:
    """The sections named (all by default) in their usual order, with `build` where one of them needs the model."""
    wanted = set(names or [section.name for section in SECTIONS])
    if any(section.needs_model for section in SECTIONS if section.name in wanted):
        wanted.add("build")
    return [section for section in SECTIONS if section.name in wanted]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--budget-s", type=float, help="stop starting sections after this (full 420, tiny 240)")
    names = [section.name for section in SECTIONS]
    parser.add_argument(
        "--sections", nargs="+", choices=names, help="run only these, in the usual order, with build where needed"
    )


def main(argv: Sequence[str] | None = None) -> dict:
    """Run the check and write `gpu_check-<device>-<size>.json/.md` (rewritten after every section)."""
    args = parse_args(__doc__.strip().splitlines()[0], argv, add_arguments)
    settings = SETTINGS[args.size]
    budget_s = settings["budget_s"] if args.budget_s is None else args.budget_s
    chosen = selected_sections(args.sections)
    env = check_environment(args.device)
    recorded = {**settings, "budget_s": budget_s, "sections": [s.name for s in chosen], "top_k": TOP_K}
    recorded.update(fusion_weight=FUSION_WEIGHT, decoding="greedy, min_new_tokens = max_new_tokens")

    def write(statuses: list[dict], echo: bool = False) -> dict:
        results = {**state.results, "sections": statuses}
        results["targets"] = targets(state.results.get("generation", []), settings["large_batch"])
        results["skipped"] = [s["section"] for s in statuses if s["status"] != "ok"]
        recorded["elapsed_s"] = state.elapsed()
        return write_results(
            args, BENCHMARK, env, recorded, results, tables(results, statuses, args.size, env), echo=echo
        )

    with tempfile.TemporaryDirectory(prefix="paircap-gpu-check-") as folder:
        state = CheckState(args, settings, Path(folder))
        statuses = run_sections(state, chosen, budget_s, on_update=write)
        payload = write(statuses, echo=True)
    print(
        f"gpu_check: {state.elapsed():.1f} s, results in {args.output_dir}/{BENCHMARK}-{args.device}-{args.size}.json"
    )
    return payload


if __name__ == "__main__":
    main()
