"""Stage `novel`: RECAP's claim that a datastore swap captions events never seen in training, without retraining.

The curriculum captioner (stage 2 phase 2), which never trained on the novel classes (`novel_classes.py`), captions
the held-out (test split) single clips of the novel classes, and as many held-out clips of known classes, under each
of `SETTINGS` (zero-shot; audio-to-audio on the refined KB; audio-to-text over the text-only KB; generative
pair-to-pair on refined across W; and the control KB, refined less the novel classes) through `paircap evaluate`'s
path (`paircap.evaluation.evaluate`: a query never retrieves its own clip). Every setting captions the same items.
`novel/results.json` holds, per setting and group (novel, known), how many captions name the clip's class
(`event_captions.names_event`) and the per-item 0/1 records, for paired statistics.
`evaluate_release` does the same for any captioner release (the `context_ablations` variants)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch

from paircap.caption_data import group_references, load_pairs
from paircap.captioning import load_retriever, resolve_dtype
from paircap.evaluation import EvaluationRun, evaluate, previous_results
from paircap.releases import load_release
from recipes.mini.local.corpus import save
from recipes.mini.local.esc50 import Esc50Clip, seed_sequence, single_clip_pairs
from recipes.mini.local.evaluation import read_predictions
from recipes.mini.local.event_captions import names_event
from recipes.mini.local.knowledge_bases import CONTROL, TEXT_ONLY
from recipes.mini.local.layout import CURRICULUM, MiniRun
from recipes.mini.local.novel_classes import read_novel_classes

GROUPS = ("novel", "known")
WEIGHTS = (0.1, 0.3, 0.5, 0.7, 0.9)  # generative pair-to-pair's W (paper eq. 4)


class Setting(NamedTuple):
    """One row of the table: a label, the KB folder under `kb/` (None: zero-shot), the retrieval mode, W and top-k
    (None: the scale's `max_examples`)."""

    label: str
    knowledge_base: str | None
    mode: str
    fusion_weight: float = 0.5
    top_k: int | None = None


SETTINGS = (
    Setting("zero-shot", None, "none"),
    Setting("audio2audio, refined KB", "refined", "audio2audio"),
    Setting("audio2text, text-only KB (RECAP)", TEXT_ONLY, "audio2text"),
    *(Setting(f"generative pair2pair W {w}, refined KB", "refined", "generative_pair2pair", w) for w in WEIGHTS),
    Setting("control: audio2audio, refined KB less the novel classes", CONTROL, "audio2audio"),
    Setting("control: generative pair2pair W 0.5, refined KB less the novel classes", CONTROL, "generative_pair2pair"),
    # one retrieved pair: a novel-class clip among known-class ones is outvoted less (RESULTS.md)
    Setting("audio2audio, refined KB, top-k 1", "refined", "audio2audio", top_k=1),
    Setting("generative pair2pair W 0.9, refined KB, top-k 1", "refined", "generative_pair2pair", 0.9, 1),
    Setting("control: audio2audio, refined KB less the novel classes, top-k 1", CONTROL, "audio2audio", top_k=1),
)


def held_out_clips(run: MiniRun, novel: tuple[str, ...]) -> dict[str, list[Esc50Clip]]:
    """Every test clip of a novel class, and as many test clips of known classes drawn by `seed_sequence(seed,
    "known")` (all of them when fewer), each list sorted by audio_id."""
    test = run.clip_splits()["test"]
    novel_clips = [clip for clip in test if clip.category in novel]
    known = [clip for clip in test if clip.category not in novel]
    order = np.random.default_rng(seed_sequence(run.seed, "known")).permutation(len(known))
    chosen = sorted((known[i] for i in order[: len(novel_clips)]), key=lambda clip: clip.audio_id)
    return {"novel": novel_clips, "known": chosen}


def evaluation_runs(run: MiniRun) -> dict[str, EvaluationRun]:
    """Each setting's `paircap evaluate` run, by label."""
    return {
        s.label: EvaluationRun(
            str(run.path("kb", s.knowledge_base)) if s.knowledge_base else None,
            s.mode,
            s.fusion_weight,
            (s.top_k or run.scale.max_examples) if s.knowledge_base else 0,
        )
        for s in SETTINGS
    }


def novel_events(run: MiniRun) -> None:
    """The curriculum captioner's novel events (`evaluate_release` into `novel/`)."""
    evaluate_release(run, run.release(CURRICULUM), run.path("novel"))


def evaluate_release(run: MiniRun, release: Path, output: Path) -> None:
    """Caption the held-out clips (`novel/clips`, written once per run) with `release` under every setting
    (`output/evaluation/`; settings its `results.json` already scores are not captioned again) and write
    `output/results.json`."""
    novel = read_novel_classes(run)
    if not novel:
        raise ValueError(f"{run.path('corpus')}: the run has no novel classes (scale setting novel_classes)")
    clips = held_out_clips(run, novel)
    data = run.path("novel", "clips")
    if not data.is_dir():
        save(single_clip_pairs([*clips["novel"], *clips["known"]], "test"), data)
    runs = evaluation_runs(run)
    evaluation = output / "evaluation"
    names = {evaluation_run.name for evaluation_run in runs.values()}
    kept = [row for row in previous_results(evaluation).get("runs", []) if row["name"] in names]
    scored = {row["name"] for row in kept}
    todo = [evaluation_run for evaluation_run in runs.values() if evaluation_run.name not in scored]
    if todo:
        items = group_references(load_pairs([str(data)]))
        device = torch.device("cpu")
        captioner, processor = load_release(str(release), device, resolve_dtype("auto", device))
        kbs = sorted({r.knowledge_base for r in todo if r.knowledge_base})
        retrievers = {kb: load_retriever(captioner, processor, kb, audio_roots=run.audio_roots()) for kb in kbs}
        settings = {"model": str(release), "data": [str(data)], "clips": len(items), "runs": len(runs)}
        evaluate(
            captioner, processor, items, todo, evaluation, retrievers, batch_size=run.scale.batch_size,
            progress=False, settings=settings, kept=kept, max_new_tokens=run.scale.max_new_tokens, num_beams=1,
            do_sample=False,
        )  # fmt: skip
    results = score_settings(runs, evaluation, clips)
    results |= {"novel_classes": list(novel), "model": str(release), "top_k": run.scale.max_examples}
    (output / "results.json").write_text(json.dumps(results, indent=2))


def score_settings(runs: dict[str, EvaluationRun], output: Path, clips: dict[str, list[Esc50Clip]]) -> dict:
    """Per setting and group: the clips whose caption names their class (0/1 per audio_id) and how many of how many
    (a clip that failed to load counts as not named)."""
    classes = {clip.audio_id: clip.category for group in GROUPS for clip in clips[group]}
    rows = []
    for label, evaluation_run in runs.items():
        records = read_predictions(output / "predictions" / f"{evaluation_run.name}.jsonl")
        captions = {r["audio_id"]: r.get("caption", "") for r in records}
        row = {"label": label, "run": evaluation_run.name}
        for group in GROUPS:
            named = {c.audio_id: int(names_event(captions.get(c.audio_id, ""), c.category)) for c in clips[group]}
            row[group] = {"named": sum(named.values()), "count": len(named), "items": named}
        rows.append(row)
    groups = {group: [clip.audio_id for clip in clips[group]] for group in GROUPS}
    return {"settings": rows, "items": groups, "classes": classes}
