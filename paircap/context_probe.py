"""
The context probe: does a captioner read the examples in its prompt? Each held-out item is captioned under several
conditions, its prompt holding (no knowledge-base search involved):

* `none`: no example (zero-shot);
* `oracle`: the item's own clip (its own audio tokens) with a correct caption;
* `adversarial`: the item's own clip with a wrong caption (another item's, or another label's);
* `control...`: examples of other clips (other labels), with their captions.

A captioner that reads its context names the right thing more often under `oracle`, is pulled to the injected label
under `adversarial`, and may copy injected captions verbatim; one that ignores it says the same under every condition.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from paircap.statistics import mcnemar_p, paired_bootstrap, wilson_interval

RESULT_FILE = "context_probe.json"
TABLE_FILE = "context_probe.md"
STOPWORDS = frozenset({
    "a", "an", "the", "and", "or", "of", "in", "on", "at", "to", "from", "by", "with", "while", "as", "is", "are",
    "was", "were", "be", "being", "been", "it", "its", "this", "that", "there", "some", "someone", "something", "then",
    "into", "over", "under", "up", "down", "out", "off", "for", "near", "during", "after", "before",
})  # fmt: skip


@dataclass(frozen=True)
class ProbeItem:
    """A held-out query: its audio (a path, array dict or audio dict, as the processor takes), references, label."""

    item_id: str
    audio: Any
    references: list[str] = field(default_factory=list)
    label: str | None = None


@dataclass(frozen=True)
class Shot:
    """One example in a prompt: a clip (index < len(items): that item's own audio; else `pool[clip - len(items)]`),
    the caption it is shown with, and that caption's label."""

    clip: int
    caption: str
    label: str | None = None


def derangement(n: int, seed: int = 0) -> list[int]:
    """A seeded permutation of range(n) that moves every index (n >= 2)."""
    if n < 2:
        raise ValueError(f"a derangement needs at least 2 items, got {n}")
    rng = np.random.default_rng(seed)
    while True:
        order = rng.permutation(n)
        if not np.any(order == np.arange(n)):
            return order.tolist()


def reference_conditions(items: Sequence[ProbeItem], control_k: int = 1, seed: int = 0) -> dict[str, list[list[Shot]]]:
    """
    The generic conditions from the items' references: oracle = the item's first reference on its own clip;
    adversarial = the first reference of another item (a seeded derangement) on its own clip; control = `control_k`
    other items' clips with their first references (seeded).
    """
    n = len(items)
    if n < 2 or not 1 <= control_k < n:
        raise ValueError(f"the context probe needs 2 or more items and 1 <= control k < items, got {n} and {control_k}")
    if any(not item.references for item in items):
        raise ValueError("every item of the context probe needs a reference caption")
    other = derangement(n, seed)
    rng = np.random.default_rng(seed + 1)
    control = []
    for i in range(n):
        picks = rng.choice([j for j in range(n) if j != i], size=control_k, replace=False)
        control.append([Shot(int(j), items[j].references[0], items[j].label) for j in picks])
    return {
        "none": [[] for _ in items],
        "oracle": [[Shot(i, item.references[0], item.label)] for i, item in enumerate(items)],
        "adversarial": [[Shot(i, items[j].references[0], items[j].label)] for i, j in enumerate(other)],
        "control": control,
    }


@torch.no_grad()
def encode_clips(model, processor, audio: Sequence[Any], batch_size: int = 8) -> list[dict]:
    """Each clip's pooled prompt tokens and length flag, `{"audio_tokens": (tokens, hidden), "is_long"}`, from the
    model's captioning audio tower: the form a prompt takes them in (as a knowledge base stores them)."""
    encoded = []
    for start in range(0, len(audio), batch_size):
        sources = audio[start : start + batch_size]
        windows, counts, flags = [], [], []
        for source, waveform in zip(sources, processor.load_audio(sources), strict=True):
            if not isinstance(waveform, np.ndarray):
                raise ValueError(f"context probe: cannot load {source}: {waveform}")
            clip_windows, is_long = processor.window_audio(waveform)
            windows += clip_windows
            counts.append(len(clip_windows))
            flags.append(is_long)
        features = torch.as_tensor(processor.extract_features(windows)).to(model.device)
        tokens = model.pooled_audio_tokens(features).split(counts)  # one tower pass per batch
        encoded += [{"audio_tokens": t.flatten(0, 1), "is_long": f} for t, f in zip(tokens, flags, strict=True)]
    return encoded


@torch.no_grad()
def caption_condition(
    model,
    processor,
    queries: Sequence[dict],
    clips: Sequence[dict],
    shots: Sequence[Sequence[Shot]],
    batch_size: int,
    **generation,
) -> list[str]:
    """Caption every query (token dicts) with its shots interleaved before it, in batches, through the processor's
    `examples=` path and `generate` without retrieval."""
    captions = []
    for start in range(0, len(queries), batch_size):
        batch = range(start, min(start + batch_size, len(queries)))
        examples = [[{**clips[shot.clip], "caption": shot.caption} for shot in shots[i]] for i in batch]
        inputs = processor(audio=[queries[i] for i in batch], examples=examples).to(model.device)
        output = model.generate(**inputs, retrieval_mode="none", **generation)
        captions += processor.decode_captions(output, inputs["input_ids"].shape[1])
    return captions


def normalise(text: str) -> str:
    """Lower case, punctuation dropped, whitespace collapsed: what a verbatim copy is compared on."""
    return " ".join(re.sub(r"[^\w\s]", " ", text.lower()).split())


def content_words(text: str) -> set[str]:
    return {word for word in normalise(text).split() if word not in STOPWORDS}


def pulled_by_caption(prediction: str, injected: Sequence[str], references: Sequence[str]) -> bool:
    """The prediction shares more content words with an injected caption than with its best reference."""
    words = content_words(prediction)
    best_reference = max((len(words & content_words(ref)) for ref in references), default=0)
    return any(len(words & content_words(caption)) > best_reference for caption in injected)


def share(flags: Sequence[bool], confidence: float = 0.95) -> dict | None:
    """A share of yes over the items counted, with its Wilson interval; None with no item."""
    if not flags:
        return None
    count = int(sum(flags))
    low, high = wilson_interval(count, len(flags), confidence)
    return {"share": count / len(flags), "count": count, "n": len(flags), "low": low, "high": high}


def paired_naming(a: Sequence[bool], b: Sequence[bool], seed: int = 0) -> dict:
    """Condition a vs b on the same items: difference of yes shares, McNemar's exact p, paired bootstrap interval."""
    a_only = sum(x and not y for x, y in zip(a, b, strict=True))
    b_only = sum(y and not x for x, y in zip(a, b, strict=True))
    difference, low, high = paired_bootstrap(np.asarray(a, float), np.asarray(b, float), seed=seed)
    return {"difference": difference, "low": low, "high": high, "a_only": a_only, "b_only": b_only,
            "mcnemar_p": mcnemar_p(a_only, b_only)}  # fmt: skip


def probe_metrics(
    items: Sequence[ProbeItem],
    conditions: Mapping[str, Sequence[Sequence[Shot]]],
    predictions: Mapping[str, Sequence[str]],
    names_label: Callable[[str, str], bool] | None = None,
    cider: Mapping[str, Sequence[float]] | None = None,
    seed: int = 0,
) -> dict:
    """
    Per condition: `copy` (prediction equals an injected caption once normalised), `pulled` (over the items shown
    something foreign; labels: names an injected label other than the item's own; no labels: `pulled_by_caption` on
    the injected captions that are not the item's references), `names_label` (the share naming the
    item's label, items without one skipped), each with its Wilson interval, and the mean `cider_d` when given; and
    `versus_none`, each condition against `none` on the same items (naming with labels, else per-item CIDEr-D).
    """
    labelled = [i for i, item in enumerate(items) if item.label is not None] if names_label else []
    scores, named = {}, {}
    for name, shots in conditions.items():
        preds = predictions[name]
        shown = [(p, row) for p, row in zip(preds, shots, strict=True) if row]
        copies = [any(normalise(p) == normalise(shot.caption) for shot in row) for p, row in shown]
        row: dict[str, Any] = {"copy": share(copies)}
        if labelled:
            named[name] = [names_label(preds[i], items[i].label) for i in labelled]
            row["names_label"] = share(named[name])
            others = [(i, {s.label for s in shots[i] if s.label and s.label != items[i].label}) for i in labelled]
            pulls = [any(names_label(preds[i], label) for label in labels) for i, labels in others if labels]
            row["pulled"] = share(pulls)
        else:
            pulls = []
            for prediction, shown, item in zip(preds, shots, items, strict=True):
                foreign = [shot.caption for shot in shown if shot.caption not in item.references]
                if foreign:
                    pulls.append(pulled_by_caption(prediction, foreign, item.references))
            row["pulled"] = share(pulls)
        if cider is not None:
            row["cider_d"] = float(np.mean(cider[name]))
        scores[name] = row
    versus = {}
    for name in conditions:
        if name == "none" or "none" not in conditions:
            continue
        if labelled:
            versus[name] = paired_naming(named[name], named["none"], seed)
        elif cider is not None:
            difference, low, high = paired_bootstrap(cider[name], cider["none"], seed=seed)
            versus[name] = {"difference": difference, "low": low, "high": high}
    return {"conditions": scores, "versus_none": versus, "measure": "names_label" if labelled else "cider_d"}


def run_context_probe(
    model,
    processor,
    items: Sequence[ProbeItem],
    conditions: Mapping[str, Sequence[Sequence[Shot]]],
    pool: Sequence[Any] = (),
    names_label: Callable[[str, str], bool] | None = None,
    score_cider: bool = False,
    batch_size: int = 8,
    seed: int = 0,
    **generation,
) -> dict:
    """
    Caption every item under every condition (`conditions`: name -> per item its shots; `pool`: the audio of clips
    other than the items that shots show) and score them (`probe_metrics`; CIDEr-D against the items' references
    with `score_cider`, which needs Java). Returns a JSON-able dict: settings, metrics and per-item records
    (prediction, injected captions and labels).
    """
    for name, shots in conditions.items():
        if len(shots) != len(items):
            raise ValueError(f"condition {name} has shots for {len(shots)} items, the probe has {len(items)}")
        bad = [s.clip for row in shots for s in row if not 0 <= s.clip < len(items) + len(pool)]
        if bad:
            raise ValueError(f"condition {name}: shot clip {bad[0]} is neither an item nor in the pool")
    clips = encode_clips(model, processor, [item.audio for item in items] + list(pool), batch_size)
    queries = clips[: len(items)]
    predictions = {
        name: caption_condition(model, processor, queries, clips, shots, batch_size, **generation)
        for name, shots in conditions.items()
    }
    cider = None
    if score_cider:
        from paircap.metrics import compute_caption_metrics

        references = [item.references for item in items]
        cider = {
            name: compute_caption_metrics(preds, references, metrics=("cider_d",)).sentence["cider_d"]
            for name, preds in predictions.items()
        }
    records = [
        {
            "item_id": item.item_id,
            "label": item.label,
            **{
                name: {
                    "prediction": predictions[name][i],
                    "injected": [shot.caption for shot in conditions[name][i]],
                    "injected_labels": [shot.label for shot in conditions[name][i]],
                    "own_clip": [shot.clip == i for shot in conditions[name][i]],
                }
                for name in conditions
            },
        }
        for i, item in enumerate(items)
    ]
    metrics = probe_metrics(items, conditions, predictions, names_label, cider, seed)
    settings = {
        "items": len(items),
        "pool": len(pool),
        "batch_size": batch_size,
        "seed": seed,
        "generation": generation,
    }
    return {"settings": settings, **metrics, "records": records}


def cell(value: dict | None) -> str:
    """A share with its interval, e.g. `42 % [30-55]`."""
    if value is None:
        return "n/a"
    return f"{100 * value['share']:.0f} % [{100 * value['low']:.0f}-{100 * value['high']:.0f}]"


def probe_table(result: dict) -> str:
    """The markdown table of a probe: per condition its shares (and CIDEr-D), then each condition against none."""
    labelled = result["measure"] == "names_label"
    header = "| condition | names label [95 % CI] | pulled to injected [95 % CI] | verbatim copy [95 % CI] |"
    if not labelled:
        header = "| condition | CIDEr-D | pulled to injected [95 % CI] | verbatim copy [95 % CI] |"
    lines = [header, "|---|---:|---:|---:|"]
    for name, row in result["conditions"].items():
        first = cell(row.get("names_label")) if labelled else f"{row.get('cider_d', float('nan')):.3f}"
        lines.append(f"| {name} | {first} | {cell(row['pulled'])} | {cell(row['copy'])} |")
    if result["versus_none"]:
        lines += ["", f"| versus none ({result['measure']}) | difference | 95 % bootstrap CI | McNemar p |",
                  "|---|---:|---:|---:|"]  # fmt: skip
        for name, pair in result["versus_none"].items():
            p = f"{pair['mcnemar_p']:.3g}" if "mcnemar_p" in pair else "n/a"
            lines.append(f"| {name} | {pair['difference']:+.3f} | {pair['low']:+.3f} to {pair['high']:+.3f} | {p} |")
    return "\n".join(lines)


def write_context_probe(result: dict, folder: str | Path) -> tuple[Path, Path]:
    """Write `context_probe.json` and `context_probe.md` (the table) into `folder`; returns their paths."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    json_path, table_path = folder / RESULT_FILE, folder / TABLE_FILE
    json_path.write_text(json.dumps(result, indent=2, ensure_ascii=False))
    table_path.write_text(probe_table(result) + "\n")
    return json_path, table_path


__all__ = [
    "ProbeItem",
    "Shot",
    "cell",
    "derangement",
    "encode_clips",
    "probe_metrics",
    "probe_table",
    "reference_conditions",
    "run_context_probe",
    "write_context_probe",
]
