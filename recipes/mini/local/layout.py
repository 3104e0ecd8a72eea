"""One mini run: its folder (where each stage reads and writes), its data, scale and seed."""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path

from recipes.mini.local.esc50 import Esc50Clip, read_esc50_manifests, split_by_source
from recipes.mini.local.scales import MiniScale

CLIP_FOLDERS = ("esc50_cc", "esc50_more")  # the ESC-50 folders under the data folder (esc50_cc is CC0/CC-BY)
AUDIO_ROOT = "esc50_mini"  # the KBs record clip locations under this root name (the corpus folder)
CAPTIONERS = ("stage1", "stage2_phase1", "stage2_phase2", "raft_only")
CURRICULUM = "stage2_phase2"  # the curriculum model: the grid's captioner, the packed release


@dataclass(frozen=True)
class MiniRun:
    """A run of the mini recipe: `output` holds every stage's outputs, `data` the shared clips and caption text."""

    output: Path
    data: Path
    scale: MiniScale
    clip_folders: tuple[str, ...] = CLIP_FOLDERS
    seed: int = 0
    stages: tuple[str, ...] = ()  # this run's stages, in the order they run
    teacher: Path | None = None  # the AudioSet teacher's weights: the CLAP stand-in is also distilled from it
    variants: tuple[str, ...] = ()  # the `context_ablations` variants to train (empty: all)

    @property
    def captioners(self) -> list[str]:
        """The captioners this run trains (RAFT-only only with the ablations)."""
        return [name for name in CAPTIONERS if name in self.stages]

    def path(self, *parts: str) -> Path:
        return self.output.joinpath(*parts)

    def release(self, stage: str) -> Path:
        return self.path(stage, "release")

    def pairs(self, name: str) -> Path:
        return self.path("corpus", "pairs", name)

    def validation_pairs(self, name: str = "validation") -> list[str]:
        """The pair set `name` as a list of folders, empty when the run has none (`captioner_validation`: the
        captioners')."""
        return [str(self.pairs(name))] if self.pairs(name).is_dir() else []

    def audio_roots(self) -> dict[str, Path]:
        """The KBs' clip roots: the corpus (mixtures) and each ESC-50 folder, so no KB records a machine's paths."""
        return {AUDIO_ROOT: self.path("corpus"), **{name: self.data / name for name in self.clip_folders}}

    @property
    def mixtures_dir(self) -> Path:
        return self.path("corpus", "mixtures")

    @property
    def clip_groups(self) -> Path:
        """`corpus/clip_groups.json`: the ESC-50 clips of every training mixture (TrainConfig `clip_groups`)."""
        return self.path("corpus", "clip_groups.json")

    def stage_record(self, name: str) -> Path:
        """`stages/<name>.json`: the stage finished (its seconds, and when it started and finished)."""
        return self.path("stages", f"{name}.json")

    def location(self) -> dict[str, str]:
        """The run's and the data's folders, absolute: where its saved pair sets point (`relocation.py`)."""
        return {"output": str(self.output.resolve()), "data": str(self.data.resolve())}

    def write_settings(self, location: dict[str, str] | None = None) -> None:
        """`settings.json`: the scale, clip folders and seed this run was started with, and the `location` its pair
        sets point to (`relocation.py`; left out when not known)."""
        settings = {"scale": asdict(self.scale), "clip_folders": self.clip_folders, "seed": self.seed}
        settings["teacher"] = None if self.teacher is None else str(self.teacher)
        if location is not None:
            settings["location"] = location
        temporary = self.path(f"settings.json.{os.getpid()}.tmp")  # one per process: stages side by side write it too
        temporary.write_text(json.dumps(settings, indent=2))
        temporary.replace(self.path("settings.json"))  # a new file: a hard-linked copy's start leaves the original's

    def clip_splits(self) -> dict[str, list[Esc50Clip]]:
        """The ESC-50 clips of each split, by source recording (deterministic by seed)."""
        clips = read_esc50_manifests([self.data / folder for folder in self.clip_folders])
        splits = split_by_source(clips, seed=self.seed)
        return {split: part[: self.scale.clips_per_split] for split, part in splits.items()}
