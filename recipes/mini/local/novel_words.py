"""Stage `novel_words`: where the novel classes' words vanish on the way from the LM stand-in to the curriculum model.

Each release (the assembled one, whose LM is the `lm` stand-in; every captioner; each `context_ablations` variant)
captions the held-out clips of `novel_events.held_out_clips` (every test clip of a novel class, as many of known
classes; those of a class with a training clip) twice: zero-shot, and with one *same-class example* in its prompt: a
training clip of the query's class (another recording) with a phrase of that class, the example a perfect knowledge
base would retrieve. Per condition and group (novel, known): the share of captions naming the clip's class, and the
mean log-probability per token the release gives that phrase as the query's caption (teacher forced; the example's
caption is context, not scored). A release that can still write a novel class's words names it from the example about
as often as a known class, and gives its phrase about the same log-probability."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from paircap.captioning import resolve_dtype
from paircap.releases import load_release
from recipes.mini.local.esc50 import Esc50Clip, seed_sequence
from recipes.mini.local.event_captions import names_event
from recipes.mini.local.layout import MiniRun
from recipes.mini.local.mechanism import phrase
from recipes.mini.local.novel_classes import read_novel_classes
from recipes.mini.local.novel_events import GROUPS, held_out_clips

RESULT_FILE = "novel_words.json"
CONDITIONS = ("zero-shot", "same-class example")


def same_class_examples(
    queries: Sequence[Esc50Clip], train: Sequence[Esc50Clip], seed: int
) -> list[tuple[Esc50Clip, str]]:
    """Per query: a training clip of its class and a phrase of that class, drawn by `seed_sequence(seed, "words")`.

    Raises:
        ValueError: a query's class has no training clip.
    """
    rng = np.random.default_rng(seed_sequence(seed, "words"))
    examples = []
    for query in queries:
        pool = sorted((clip for clip in train if clip.category == query.category), key=lambda clip: clip.audio_id)
        if not pool:
            raise ValueError(f"novel_words: no training clip of class {query.category!r} for {query.audio_id}")
        examples.append((pool[int(rng.integers(len(pool)))], phrase(rng, query.category)))
    return examples


def last_span(labels: torch.Tensor) -> torch.Tensor:
    """The positions of the last run of scored tokens in a row of labels (-100: not scored): the query's caption."""
    positions = torch.nonzero(labels != -100).flatten()
    if not len(positions):
        raise ValueError("no caption token in the labels")
    breaks = torch.nonzero(positions[1:] - positions[:-1] > 1).flatten()
    return positions[int(breaks[-1]) + 1 :] if len(breaks) else positions


@torch.no_grad()
def caption_log_probs(model, processor, queries: list, examples: list[list], captions: list[str], batch_size: int):
    """The mean log-probability per token `model` gives each query's caption after its examples (teacher forced)."""
    scores = []
    for start in range(0, len(queries), batch_size):
        batch = slice(start, start + batch_size)
        inputs = processor(audio=queries[batch], examples=examples[batch], captions=captions[batch]).to(model.device)
        labels = inputs.pop("labels")
        log_probs = model(**inputs).logits.float().log_softmax(-1)
        for row in range(len(labels)):
            positions = last_span(labels[row])
            scores.append(log_probs[row, positions - 1].gather(-1, labels[row, positions, None]).mean().item())
    return scores


@torch.no_grad()
def generate_captions(model, processor, queries: list, examples: list[list], batch_size: int, max_new_tokens: int):
    """Greedy captions of the queries with their examples in the prompt (no retrieval)."""
    captions = []
    for start in range(0, len(queries), batch_size):
        batch = slice(start, start + batch_size)
        inputs = processor(audio=queries[batch], examples=examples[batch]).to(model.device)
        output = model.generate(
            **inputs, retrieval_mode="none", max_new_tokens=max_new_tokens, num_beams=1, do_sample=False
        )
        captions += processor.decode_captions(output, inputs["input_ids"].shape[1])
    return captions


def probe_words(run: MiniRun, release: Path, output: Path) -> None:
    """The word probe of one release (module docstring): `output/novel_words.json`; skipped when it exists."""
    if (output / RESULT_FILE).is_file():
        return
    novel = read_novel_classes(run)
    train = run.clip_splits()["train"]
    trained_classes = {clip.category for clip in train}
    clips = {  # a known class may have no training clip when the scale keeps few clips per split
        group: [clip for clip in part if clip.category in trained_classes]
        for group, part in held_out_clips(run, novel).items()
    }
    queries = [clip for group in GROUPS for clip in clips[group]]
    picks = same_class_examples(queries, train, run.seed)
    targets = [caption for _, caption in picks]
    prompts = {"zero-shot": [[] for _ in queries], "same-class example": [[(c.path, p)] for c, p in picks]}
    device = torch.device("cpu")
    model, processor = load_release(str(release), device, resolve_dtype("auto", device))
    paths, size = [clip.path for clip in queries], run.scale.batch_size
    records = {
        clip.audio_id: {"class": clip.category, "target": target} for clip, target in zip(queries, targets, strict=True)
    }
    for condition, examples in prompts.items():
        log_probs = caption_log_probs(model, processor, paths, examples, targets, size)
        captions = generate_captions(model, processor, paths, examples, size, run.scale.max_new_tokens)
        for clip, log_prob, caption in zip(queries, log_probs, captions, strict=True):
            named = names_event(caption, clip.category)
            records[clip.audio_id][condition] = {"caption": caption, "named": named, "log_prob": log_prob}
    summary = {
        condition: {group: summarise([records[clip.audio_id][condition] for clip in clips[group]]) for group in GROUPS}
        for condition in CONDITIONS
    }
    result = {"release": str(release), "novel_classes": list(novel), "conditions": summary, "records": records}
    output.mkdir(parents=True, exist_ok=True)
    (output / RESULT_FILE).write_text(json.dumps(result, indent=2))


def summarise(records: list[dict]) -> dict:
    """How many captions name their class, of how many, and the mean log-probability per token of the phrase."""
    return {
        "named": sum(r["named"] for r in records),
        "count": len(records),
        "log_prob": float(np.mean([r["log_prob"] for r in records])) if records else None,
    }


def probe_releases(run: MiniRun) -> None:
    """The word probe of the assembled release and every captioner (`novel/words/<model>/novel_words.json`)."""
    releases = {"assembled": run.path("assembled")} | {model: run.release(model) for model in run.captioners}
    for name, release in releases.items():
        probe_words(run, release, run.path("novel", "words", name))


def log_prob(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.2f}"


def words_table(results: dict[str, Path]) -> str:
    """RESULTS.md's table of word probes (`novel_words.json` files, by the label of their model): per model, naming
    shares and mean log-probabilities per token of novel and known classes, zero-shot and with a same-class example."""
    lines = [
        "| model | zero-shot: novel named | known named | same-class example: novel named | known named | "
        "log-prob per token, novel / known (zero-shot) | (same-class example) |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for label, path in results.items():
        if not path.is_file():
            continue
        summary = json.loads(path.read_text())["conditions"]
        cells = [
            f"{s['named']} of {s['count']}" for c in CONDITIONS for s in (summary[c]["novel"], summary[c]["known"])
        ]
        probs = [" / ".join(log_prob(summary[c][group]["log_prob"]) for group in GROUPS) for c in CONDITIONS]
        lines.append(f"| {label} | {' | '.join(cells)} | {' | '.join(probs)} |")
    return "\n".join(lines) if len(lines) > 2 else "n/a"
