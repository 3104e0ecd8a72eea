"""A mini run moved or copied to another folder, or given another data folder: its saved pair sets name their audio by
absolute path (the corpus's mixtures under the run, the ESC-50 clips under the data folder), so before any stage reads
them they are pointed at the folders the run has now.

`settings.json` records the run's and the data's folders (`location`); a run started before it did has them inferred
from its training pairs. A pair set is rewritten through a temporary folder (`corpus.save`), never in place, so a
hard-linked copy of a run leaves the original's files as they were.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

from datasets import load_from_disk

from recipes.mini.local.corpus import save
from recipes.mini.local.layout import MiniRun

logger = logging.getLogger(__name__)

MIXTURE_AUDIO = ("corpus", "mixtures", "audio")  # where the corpus writes its mixtures, under the run


def relocate_pair_sets(run: MiniRun) -> dict[str, str] | None:
    """Point every saved pair set of `run` whose audio lies under the run's or the data's former folder at the current
    ones; returns where the pair sets point now (`run.location()`; None when a run's former folders cannot be told,
    whose pair sets are then left as they are)."""
    pair_sets = saved_pair_sets(run.output)
    recorded = recorded_location(run, pair_sets)
    current = run.location()
    if recorded is None or recorded == current:
        return None if recorded is None and run.pairs("train") in pair_sets else current
    moves = sorted(
        ((recorded[key], current[key]) for key in ("output", "data") if recorded[key] != current[key]),
        key=lambda move: -len(move[0]),  # the longer folder first, where one holds the other
    )
    rewritten = [path for path in pair_sets if repoint(path, moves)]
    logger.info(f"{run.output}: {len(rewritten)} pair sets pointed from {recorded} to {current}")
    return current


def saved_pair_sets(output: Path) -> list[Path]:
    """Every dataset saved under `output` (a `state.json` beside it) outside hidden work folders."""
    folders = (path.parent for path in sorted(output.rglob("state.json")))
    return [
        folder
        for folder in folders
        if not any(part.startswith(".") or part.endswith(".tmp") for part in folder.relative_to(output).parts)
    ]


def recorded_location(run: MiniRun, pair_sets: list[Path]) -> dict[str, str] | None:
    """The folders the run's pair sets were written with: `settings.json`'s `location`, else inferred from a
    mixture's and an ESC-50 clip's path in the training pairs (None when neither is known)."""
    settings = run.path("settings.json")
    if settings.is_file() and (location := json.loads(settings.read_text()).get("location")):
        return location
    train = run.pairs("train")
    if train not in pair_sets:
        return None
    paths = [Path(audio["path"]) for audio in load_from_disk(str(train))["audio"] if audio and audio.get("path")]
    mixture = next((path for path in paths if path.parts[-4:-1] == MIXTURE_AUDIO), None)
    clip = next((path for path in paths if path.parent.name in run.clip_folders), None)
    if mixture is None or clip is None:
        logger.warning(f"{train}: cannot tell which folders its audio paths were written with; left as they are")
        return None
    return {"output": str(mixture.parents[3]), "data": str(clip.parents[1])}


def repoint(path: Path, moves: list[tuple[str, str]]) -> bool:
    """Rewrite the pair set at `path` with each audio path under a former folder moved to the new one; returns whether
    any path changed."""
    dataset = load_from_disk(str(path))
    if "audio" not in dataset.column_names:
        return False

    def moved(audio: dict | None) -> dict | None:
        if not audio or not audio.get("path"):
            return audio
        for old, new in moves:
            if audio["path"].startswith(old + "/"):
                return {**audio, "path": new + audio["path"][len(old) :]}
        return audio

    if all(moved(audio) == audio for audio in dataset["audio"]):
        return False
    relocated = dataset.map(
        lambda batch: {"audio": [moved(audio) for audio in batch["audio"]]},
        batched=True,
        keep_in_memory=True,  # no cache file beside the arrow files, which a hard-linked copy shares
        desc=f"relocating {path.name}",
    )
    save(relocated, path)
    return True
