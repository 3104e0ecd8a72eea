"""Stage `mechanism`: does each captioner read its prompt? The context probe (`paircap.context_probe`) on the held-out
single clips of the test split, one caption per clip and condition: zero-shot; its own clip with a phrase of its class
(oracle); its own clip with a phrase of another class (adversarial); 1 and `max_examples` training clips of other
classes with their phrases (control); a training clip of its class alone, or first or last among those other-class
clips (right pair: can it pick a KB hit among misses?). Labels are the ESC-50 classes, named by the keyword map of
`event_captions`."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from paircap.captioning import resolve_dtype
from paircap.context_probe import ProbeItem, Shot, cell, run_context_probe, write_context_probe
from paircap.releases import load_release
from recipes.mini.local.esc50 import EVENT_PHRASES, Esc50Clip
from recipes.mini.local.event_captions import names_event
from recipes.mini.local.layout import MiniRun

POOL_PER_CLASS = 2  # training clips per class the control prompts draw from (each encoded once)


def phrase(rng: np.random.Generator, category: str) -> str:
    """A seeded phrase of the class (a caption the captioners were trained on)."""
    phrases = EVENT_PHRASES[category]
    return phrases[int(rng.integers(len(phrases)))]


def control_pool(train: Sequence[Esc50Clip], seed: int) -> list[Esc50Clip]:
    """Up to `POOL_PER_CLASS` training clips of each class, chosen by seed, in class order."""
    rng = np.random.default_rng([seed, 0])
    pool = []
    for category in sorted({clip.category for clip in train}):
        clips = sorted((clip for clip in train if clip.category == category), key=lambda clip: clip.audio_id)
        pool += [clips[i] for i in sorted(rng.permutation(len(clips))[:POOL_PER_CLASS])]
    return pool


def probe_conditions(
    test: Sequence[Esc50Clip], pool: Sequence[Esc50Clip], control_sizes: Sequence[int], seed: int
) -> dict[str, list[list[Shot]]]:
    """
    Per condition, each test clip's examples: none; oracle (its own clip, a phrase of its class); adversarial (its own
    clip, a phrase of a seeded other class of the pool); `control_k<k>` (k seeded pool clips of other classes, each
    with a phrase of its class; shot clips past the test clips index the pool). Each condition has its own seed
    stream, so one condition's draws never shift another's.
    """
    classes = sorted({clip.category for clip in pool})
    oracle_rng, adversarial_rng = np.random.default_rng([seed, 1]), np.random.default_rng([seed, 2])
    conditions = {"none": [[] for _ in test], "oracle": [], "adversarial": []}
    for i, clip in enumerate(test):
        conditions["oracle"].append([Shot(i, phrase(oracle_rng, clip.category), clip.category)])
        others = [category for category in classes if category != clip.category]
        wrong = others[int(adversarial_rng.integers(len(others)))]
        conditions["adversarial"].append([Shot(i, phrase(adversarial_rng, wrong), wrong)])
    for k in sorted(set(control_sizes)):
        rng, rows = np.random.default_rng([seed, 3, k]), []
        for clip in test:
            candidates = [j for j, other in enumerate(pool) if other.category != clip.category]
            picks = rng.choice(candidates, size=k, replace=False)
            rows.append([Shot(len(test) + int(j), phrase(rng, pool[j].category), pool[j].category) for j in picks])
        conditions[f"control_k{k}"] = rows
    widest = conditions[f"control_k{max(control_sizes)}"] if control_sizes else []
    return conditions | right_pair_conditions(test, pool, widest, seed)


def right_pair_conditions(
    test: Sequence[Esc50Clip], pool: Sequence[Esc50Clip], control: Sequence[Sequence[Shot]], seed: int
) -> dict[str, list[list[Shot]]]:
    """
    Can the captioner pick a right pair among wrong ones, as a KB hit among misses? A seeded pool clip of the query's
    class (another recording) with a phrase of it: alone (`right_k1`), and with the first k - 1 shots of `control`
    after it (`right_first_k<k>`) or before it (`right_last_k<k>`; the pair next to the query). None when k < 2 or
    some query's class has no pool clip (the conditions would not be paired).
    """
    k = len(control[0]) if control else 0
    same = [[j for j, other in enumerate(pool) if other.category == clip.category] for clip in test]
    if k < 2 or not all(same):
        return {}
    rng = np.random.default_rng([seed, 4])
    right = [Shot(len(test) + int(j), phrase(rng, pool[j].category), pool[j].category) for j in map(rng.choice, same)]
    return {
        "right_k1": [[shot] for shot in right],
        f"right_first_k{k}": [[shot, *wrong[: k - 1]] for shot, wrong in zip(right, control, strict=True)],
        f"right_last_k{k}": [[*wrong[: k - 1], shot] for shot, wrong in zip(right, control, strict=True)],
    }


def probe_release(run: MiniRun, release: Path, output: Path, control_sizes: Sequence[int]) -> None:
    """The context probe of one captioner release on the held-out test clips: `output/context_probe.json` (and `.md`);
    skipped when that file exists."""
    if (output / "context_probe.json").is_file():
        return
    splits = run.clip_splits()
    test = sorted(splits["test"], key=lambda clip: clip.audio_id)
    pool = control_pool(splits["train"], run.seed)
    items = [ProbeItem(clip.audio_id, clip.path, list(EVENT_PHRASES[clip.category]), clip.category) for clip in test]
    conditions = probe_conditions(test, pool, control_sizes, run.seed)
    device = torch.device("cpu")
    captioner, processor = load_release(str(release), device, resolve_dtype("auto", device))
    result = run_context_probe(
        captioner, processor, items, conditions, pool=[clip.path for clip in pool], names_label=names_event,
        batch_size=run.scale.batch_size, seed=run.seed, max_new_tokens=run.scale.max_new_tokens, num_beams=1,
        do_sample=False,
    )  # fmt: skip
    result["settings"] |= {"release": str(release), "pool_per_class": POOL_PER_CLASS}
    write_context_probe(result, output)


def probe_captioners(run: MiniRun) -> None:
    """The context probe of every captioner release: `mechanism/<captioner>/context_probe.json` (and `.md`), with
    controls of 1 and `max_examples` clips."""
    for model in run.captioners:
        probe_release(run, run.release(model), run.path("mechanism", model), (1, run.scale.max_examples))


def mechanism_table(probes: dict[str, Path]) -> str:
    """RESULTS.md's table of context probes (`context_probe.json` files, by the label of their model): per model and
    condition, the shares naming the right class, pulled to an injected class and copying an injected caption
    verbatim (95 % Wilson intervals), and the paired difference to zero-shot in naming (bootstrap interval, McNemar's
    exact p)."""
    lines = [
        "| model | condition | names right class | pulled to injected class | verbatim copy | vs none: difference "
        "[95 % CI] | McNemar p |",
        "|---|---|---:|---:|---:|---:|---:|",
    ]
    for label, path in probes.items():
        if not path.is_file():
            continue
        result = json.loads(path.read_text())
        for condition, row in result["conditions"].items():
            pair = result["versus_none"].get(condition)
            versus = "" if pair is None else f"{100 * pair['difference']:+.0f} pts [{100 * pair['low']:+.0f}, "
            versus += "" if pair is None else f"{100 * pair['high']:+.0f}]"
            p = "" if pair is None else f"{pair['mcnemar_p']:.2g}"
            lines.append(
                f"| {label} | {condition} | {cell(row['names_label'])} | {cell(row['pulled'])} | "
                f"{cell(row['copy'])} | {versus} | {p} |"
            )
    return "\n".join(lines) if len(lines) > 2 else "n/a"
