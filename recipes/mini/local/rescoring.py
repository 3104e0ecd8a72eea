"""Stage `rescoring`: CLAP-Refine (SLAM-AAC) on the curriculum model. The `evaluate` stage's test mixtures captioned
zero-shot and with generative pair-to-pair retrieval on the refined KB, each with its captions chosen among the scale's
`rescore_candidates` beam candidates by 0.5 x CLAP audio-text similarity + 0.5 x length-normalised LM log-probability
(`modeling_paircap/rescoring_paircap.py`); generative pair-to-pair also with its pass-1 text query rescored the same
way, and with weight 0 (the beam search's own best: the control that tells the CLAP's share from the beam's). The
runs without rescoring are the `evaluate` stage's own predictions, copied where they were made on the same items
with the same decoding (else made again), so every comparison is paired on the same items (`evaluation/rescoring/`)."""

from __future__ import annotations

import json

from paircap.evaluation import rescoring_runs
from recipes.mini.local.evaluation import evaluate_release, event_scores
from recipes.mini.local.knowledge_bases import KNOWLEDGE_BASES
from recipes.mini.local.layout import CURRICULUM, MiniRun

FOLDER = "rescoring"  # under evaluation/
WEIGHT = 0.5  # the CLAP similarity's weight against the LM score
CONTROL_WEIGHT = 0.0  # the LM score alone: the beam search's best candidate


def evaluate_rescoring(run: MiniRun) -> None:
    """The curriculum model, zero-shot and generative pair-to-pair on refined, without rescoring, with it (final pass;
    both passes) and with the beam control (`evaluation/rescoring/`, with `events.json`)."""
    output = run.path("evaluation", FOLDER)
    if not (output / "results.json").is_file():
        n = run.scale.rescore_candidates
        rescoring = [
            *rescoring_runs([n], [WEIGHT], query=False),
            *rescoring_runs([n], [WEIGHT], query=True),
            *rescoring_runs([n], [CONTROL_WEIGHT], query=False),
        ]
        evaluate_release(
            run,
            CURRICULUM,
            output,
            run.pairs("test"),
            "esc50-mixtures",
            knowledge_bases=[str(run.path("kb", KNOWLEDGE_BASES[0]))],
            modes=["generative_pair2pair"],
            rescoring=rescoring,
            reuse=run.path("evaluation", CURRICULUM),
        )
    (output / "events.json").write_text(json.dumps(event_scores(run, output), indent=2))
