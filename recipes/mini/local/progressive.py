"""Stage `progressive`: the curriculum's phase 2 trained again from the same phase-1 release, with the same seed, steps
and data, but MQ-Cap's progressive schedule of retrieved pairs (`conf/train/progressive.yaml`, the scale's
`progressive_schedule`); then evaluated as the curriculum model is for the comparison (zero-shot and generative
pair-to-pair on the refined KB, `evaluation/progressive/`)."""

from __future__ import annotations

import shutil

from recipes.mini.local.evaluation import evaluate_captioner
from recipes.mini.local.layout import CURRICULUM, MiniRun
from recipes.mini.local.training import train_captioner

STAGE = "progressive"  # its training folder (`progressive/`), conf file and evaluation folder


def train_and_evaluate(run: MiniRun) -> None:
    """Phase 2 with the progressive schedule (`progressive/`, resumable), then its evaluation. It starts from a copy of
    phase 2's embedded training pairs and neighbour table (`retrieval/`: the same starting model, pairs and neighbour
    settings; training checks their fingerprints and recomputes what differs)."""
    s = run.scale
    retrieval = run.path(STAGE, "retrieval")
    if not retrieval.exists():
        shutil.copytree(run.path(CURRICULUM, "retrieval"), retrieval)
    train_captioner(
        run,
        STAGE,
        run.release("stage2_phase1"),
        s.phase2_steps,
        s.max_examples,
        examples_schedule=list(s.progressive_schedule),
    )
    evaluate_captioner(run, STAGE)
