"""Stage `corpus`: ESC-50 singles and two-event mixtures per split, noisy training mixtures, and the caption text of
AudioCaps and Clotho (no audio) for the language model; every set saved under `corpus/pairs/`, and the training
mixtures' component clips in `corpus/clip_groups.json`. The captioners train and validate on `captioner_train` and
`captioner_validation`: `train` and `validation` less the novel classes (`novel_classes.py`), which the CLAP stand-in,
the LM's text and the knowledge bases keep."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from datasets import Dataset, concatenate_datasets, disable_progress_bars, enable_progress_bars, load_from_disk

from datasets_scripts.readers import read_audiocaps, read_clotho, with_path_audio
from recipes.mini.local.esc50 import single_clip_pairs
from recipes.mini.local.layout import MiniRun
from recipes.mini.local.mixtures import mixture_events, mixture_sources, write_mixtures
from recipes.mini.local.novel_classes import choose_novel_classes, without_novel, write_novel_classes


def write_corpus(run: MiniRun) -> None:
    """ESC-50 singles and mixtures per split, noisy training mixtures, and the LM's caption text."""
    s = run.scale
    splits = run.clip_splits()
    test_count = max(s.test_mixtures, s.zero_shot_test_mixtures)
    counts = {"train": s.train_mixtures, "validation": s.validation_mixtures, "test": test_count}
    mixtures = {  # esc50_cc alone (about 2 recordings per class) leaves no clip for validation
        split: write_mixtures(splits[split], run.mixtures_dir, counts[split], split, seed=run.seed)
        for split in counts
        if len({clip.category for clip in splits[split]}) >= 2
    }
    noisy = write_mixtures(
        splits["train"], run.mixtures_dir, s.noisy_mixtures, "train", seed=run.seed + 1, wrong_events=1
    )
    clip_pairs = single_clip_pairs(splits["train"], "train")
    save(clip_pairs, run.pairs("train_clips"))
    train = concatenate_datasets([clip_pairs, mixtures["train"]])
    save(train, run.pairs("train"))
    if "validation" in mixtures:
        save(mixtures["validation"], run.pairs("validation"))
    novel = choose_novel_classes(splits, s.novel_classes, run.seed) if s.novel_classes else ()
    write_novel_classes(run, novel)
    events = {clip.audio_id: (clip.category,) for clip in splits["train"]} | mixture_events(run.mixtures_dir)
    save(without_novel(train, events, novel), run.pairs("captioner_train"))
    if "validation" in mixtures:
        captioner_validation = without_novel(mixtures["validation"], events, novel)
        if len(captioner_validation):
            save(captioner_validation, run.pairs("captioner_validation"))
    grid = set(list(dict.fromkeys(mixtures["test"]["audio_id"]))[: s.test_mixtures])  # the first mixtures
    save(mixtures["test"].filter(lambda clip: clip in grid, input_columns="audio_id"), run.pairs("test"))
    save(mixtures["test"], run.pairs("test_all"))
    save(noisy, run.pairs("noisy"))
    run.clip_groups.write_text(json.dumps(clip_groups(run.mixtures_dir, [train, noisy]), indent=1))
    save(caption_text(run, train), run.pairs("text"))
    summary = {
        "clips": {split: len(part) for split, part in splits.items()},
        "categories": {split: len({c.category for c in part}) for split, part in splits.items()},
        "pairs": {name: len(load_from_disk(str(run.pairs(name)))) for name in [*mixtures, "test_all"]},
        "novel_classes": list(novel),
        "captioner_pairs": {
            name: len(load_from_disk(str(run.pairs(name))))
            for name in ("captioner_train", "captioner_validation")
            if run.pairs(name).is_dir()
        },
        "noisy_pairs": len(noisy),
        "text_captions": len(load_from_disk(str(run.pairs("text")))),
    }
    run.path("corpus", "summary.json").write_text(json.dumps(summary, indent=2))


def clip_groups(mixtures_dir: Path, pair_sets: list[Dataset]) -> dict[str, list[str]]:
    """The component clips of every mixture (of `mixtures_dir`) among `pair_sets`, by audio_id: in stage 2 no mixture
    is a training neighbour of its own clips, nor of another mixture or take sharing a recording."""
    sources = mixture_sources(mixtures_dir)
    audio_ids = dict.fromkeys(audio_id for pairs in pair_sets for audio_id in pairs["audio_id"])
    return {audio_id: sources[audio_id] for audio_id in audio_ids if audio_id in sources}


def caption_text(run: MiniRun, train: Dataset) -> Dataset:
    """AudioCaps train and Clotho development captions (text only) with the ESC-50 training captions."""
    captions = run.data / "captions"
    audiocaps = read_audiocaps(captions, "train", text_only=True, captions_csv=captions / "audiocaps_train.csv")
    clotho = read_clotho(captions, "development", text_only=True, captions_csv=captions / "clotho_development.csv")
    text = concatenate_datasets([audiocaps, clotho]).shuffle(seed=run.seed)
    if run.scale.text_captions is not None:
        text = text.select(range(min(run.scale.text_captions, len(text))))
    own = train.select_columns(["pair_id", "caption", "source"])
    return concatenate_datasets([text.select_columns(["pair_id", "caption", "source"]), own])


def save(dataset: Dataset, path: Path) -> None:
    """
    `save_to_disk` through a temporary folder, so a stage interrupted mid-write never leaves a half dataset; the audio
    column keeps its paths (`with_path_audio`).
    """
    dataset = with_path_audio(dataset)
    temporary = path.with_name(path.name + ".tmp")
    disable_progress_bars()
    dataset.save_to_disk(str(temporary))
    enable_progress_bars()
    if path.exists():
        shutil.rmtree(path)
    temporary.rename(path)
