"""Stage `context_ablations`: which of phase 2's context options teach the curriculum model to read its prompt. Each
variant trains phase 2 again from the same phase-1 release, with the same seed, steps and data, and one or both of
the options of `conf/train/stage2_phase2.yaml` set back to the paper's RAFT (audio-to-audio neighbours, the query's
audio always present); the context probe (`mechanism.py`) then measures each against the recipe's phase 2."""

from __future__ import annotations

from typing import NamedTuple

from recipes.mini.local.layout import MiniRun
from recipes.mini.local.mechanism import probe_release
from recipes.mini.local.training import train_captioner


class Variant(NamedTuple):
    name: str  # its folder under `context_ablations/`
    label: str  # its row in RESULTS.md
    settings: dict  # TrainConfig fields over conf/train/stage2_phase2.yaml


VARIANTS = (
    Variant("paper_raft", "paper's RAFT (audio-to-audio neighbours, no query dropout)",
            {"neighbor_mode": "audio2audio", "query_dropout": 0.0}),
    Variant("no_query_dropout", "without query dropout", {"query_dropout": 0.0}),
    Variant("audio_neighbours", "audio-to-audio neighbours", {"neighbor_mode": "audio2audio"}),
)  # fmt: skip


def train_and_probe(run: MiniRun) -> None:
    """Every variant: phase 2 from the phase-1 release (`context_ablations/<name>/`, resumable), then its context
    probe (`context_ablations/<name>/mechanism/`)."""
    for variant in VARIANTS:
        folder = run.path("context_ablations", variant.name)
        train_captioner(
            run,
            "stage2_phase2",
            run.release("stage2_phase1"),
            run.scale.phase2_steps,
            run.scale.max_examples,
            output=folder,
            **variant.settings,
        )
        probe_release(run, folder / "release", folder / "mechanism", (1,))
