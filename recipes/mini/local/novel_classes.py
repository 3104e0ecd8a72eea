"""Novel classes (RECAP's claim: a datastore swap captions events never seen in training): `novel_classes` ESC-50
classes kept out of every captioner's training and validation pairs, while the CLAP stand-in, the LM's text and the
knowledge bases keep them.

The classes are drawn from the *eligible* ones: those with clips in both the run's training and test splits whose
keyword map is unambiguous (no `EVENT_EXCLUSIONS` entry, none of their keywords names another class and no other
class's keyword names them, `event_captions.EVENT_KEYWORDS`). The eligible classes, sorted, are shuffled by
`seed_sequence(seed, "novel")` and the first `novel_classes` taken: deterministic from the seed and the clips."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence

import numpy as np
from datasets import Dataset

from recipes.mini.local.esc50 import Esc50Clip, seed_sequence
from recipes.mini.local.event_captions import EVENT_EXCLUSIONS, EVENT_KEYWORDS, names_event
from recipes.mini.local.layout import MiniRun
from recipes.mini.local.mixtures import mixture_events

NOVEL_FILE = "novel_classes.json"  # under corpus/: the classes and how they were chosen


def unambiguous_classes() -> list[str]:
    """The classes whose keywords name no other class and no other class's keywords name (sorted)."""
    chosen = []
    for category in sorted(EVENT_KEYWORDS):
        if category in EVENT_EXCLUSIONS:  # its words are used by other classes' captions
            continue
        others = [other for other in EVENT_KEYWORDS if other != category]
        named_by_others = any(names_event(k, category) for other in others for k in EVENT_KEYWORDS[other])
        names_others = any(names_event(k, other) for other in others for k in EVENT_KEYWORDS[category])
        if not named_by_others and not names_others:
            chosen.append(category)
    return chosen


def choose_novel_classes(splits: Mapping[str, Sequence[Esc50Clip]], count: int, seed: int) -> tuple[str, ...]:
    """`count` eligible classes (see the module docstring), deterministic from `seed` and the clips; sorted.

    Raises:
        ValueError: fewer than `count` classes are eligible.
    """
    present = {split: {clip.category for clip in splits.get(split, ())} for split in ("train", "test")}
    eligible = [c for c in unambiguous_classes() if c in present["train"] and c in present["test"]]
    if len(eligible) < count:
        raise ValueError(f"novel_classes: {count} asked, only {len(eligible)} classes are eligible: {eligible}")
    order = np.random.default_rng(seed_sequence(seed, "novel")).permutation(len(eligible))
    return tuple(sorted(eligible[i] for i in order[:count]))


def clip_events(run: MiniRun) -> dict[str, tuple[str, ...]]:
    """The true events of every clip of the run, by audio_id: single ESC-50 clips and mixtures (noisy ones included)."""
    singles = {clip.audio_id: (clip.category,) for part in run.clip_splits().values() for clip in part}
    return singles | mixture_events(run.mixtures_dir)


def involves(caption: str, events: Sequence[str], novel: Sequence[str]) -> bool:
    """Whether a pair's audio holds a novel class or its caption names one."""
    return any(event in novel for event in events) or any(names_event(caption, c) for c in novel)


def without_novel(pairs: Dataset, events: Mapping[str, Sequence[str]], novel: Sequence[str]) -> Dataset:
    """`pairs` less every pair whose audio holds a novel class or whose caption names one."""
    if not novel:
        return pairs
    return pairs.filter(
        lambda caption, audio_id: not involves(caption, events.get(audio_id, ()), novel),
        input_columns=["caption", "audio_id"],
    )


def write_novel_classes(run: MiniRun, novel: Sequence[str]) -> None:
    """`corpus/novel_classes.json`: the classes and the rule that chose them."""
    rule = __doc__.split("\n\n")[1]  # the module docstring's second paragraph
    record = {"classes": list(novel), "count": run.scale.novel_classes or 0, "seed": run.seed, "rule": rule}
    run.path("corpus", NOVEL_FILE).write_text(json.dumps(record, indent=2))


def read_novel_classes(run: MiniRun) -> tuple[str, ...]:
    """The run's novel classes (`corpus/novel_classes.json`).

    Raises:
        FileNotFoundError: the corpus stage has not written them.
    """
    path = run.path("corpus", NOVEL_FILE)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no novel classes recorded (run the `corpus` stage)")
    return tuple(json.loads(path.read_text())["classes"])
