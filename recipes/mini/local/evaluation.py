"""Stages `evaluate`, `evaluate_raft_only`, `evaluate_stage1`, `fit` and `zero_shot`: each captioner on the test
mixtures as `paircap evaluate` scores it (method x KB grid, W and top-k sweeps), and zero-shot on its own training
data and on more test mixtures, with event accuracy: the share of captions that name their clip's events."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import torch
from datasets import load_from_disk

from paircap.caption_data import group_references, load_pairs
from paircap.captioning import load_retriever, resolve_dtype
from paircap.evaluation import evaluate, plan_runs
from paircap.evaluation_report import evaluation_settings, write_report
from paircap.releases import load_release
from recipes.mini.local.corpus import save
from recipes.mini.local.event_captions import event_accuracy
from recipes.mini.local.knowledge_bases import KNOWLEDGE_BASES
from recipes.mini.local.layout import MiniRun
from recipes.mini.local.mixtures import mixture_events

MODES = ("audio2audio", "audio2mixture", "generative_pair2pair")  # the grid's retrieval methods


def evaluate_release(
    run: MiniRun,
    model: str,
    output: Path,
    data: Path,
    data_name: str,
    knowledge_bases: Sequence[str] = (),
    modes: Sequence[str] = MODES,
    sweeps: bool = False,
) -> None:
    """
    What `paircap evaluate` writes (predictions, results.json and .md, sweep plots), for one stage's release on
    `data`, on the CPU at the scale's batch size, caption length and top-k: zero-shot, then every mode on every
    knowledge base (none: zero-shot only), then (`sweeps`) the scale's W and top-k sweeps on the first.
    """
    s = run.scale
    release = str(run.release(model))
    items = group_references(load_pairs([str(data)]))
    device = torch.device("cpu")
    captioner, processor = load_release(release, device, resolve_dtype("auto", device))
    roots = run.audio_roots()  # their clips' audio: for tokens a KB lacks
    retrievers = {kb: load_retriever(captioner, processor, kb, audio_roots=roots) for kb in knowledge_bases}
    runs = plan_runs(
        knowledge_bases,
        modes,
        top_k=s.max_examples,
        weight_sweep=s.weight_sweep if sweeps else (),
        top_k_sweep=s.top_k_sweep if sweeps else (),
    )
    settings = {"model": release, "data": [str(data)], "clips": len(items), "runs": len(runs)}
    settings |= evaluation_settings(captioner.config, release, knowledge_bases, None, data_name, data.name)
    results = evaluate(
        captioner, processor, items, runs, output, retrievers, batch_size=s.batch_size, progress=False,
        settings=settings,
        max_new_tokens=s.max_new_tokens, num_beams=1, do_sample=False,
    )  # fmt: skip
    write_report(results, output)


def evaluate_captioner(run: MiniRun, model: str) -> None:
    """One captioner on the test mixtures: the curriculum model on the grid (and, with the ablations, both sweeps);
    stage 1 and RAFT-only (the training ablation) with generative pair-to-pair on the refined KB."""
    kbs = [str(run.path("kb", name)) for name in KNOWLEDGE_BASES]
    output = run.path("evaluation", model)
    if not (output / "results.json").is_file():
        if model == "stage2_phase2":
            options = {"knowledge_bases": kbs, "sweeps": run.scale.ablations}
        else:
            options = {"knowledge_bases": kbs[:1], "modes": ["generative_pair2pair"]}
        evaluate_release(run, model, output, run.pairs("test"), "esc50-mixtures", **options)
    (output / "events.json").write_text(json.dumps(event_scores(run, output), indent=2))


def evaluate_curriculum(run: MiniRun) -> None:
    """The curriculum model (stage 2, phase 2): the method x KB grid and the sweeps."""
    evaluate_captioner(run, "stage2_phase2")


def evaluate_raft_only(run: MiniRun) -> None:
    """RAFT-only (the training ablation): generative pair-to-pair on the refined KB."""
    evaluate_captioner(run, "raft_only")


def evaluate_stage1(run: MiniRun) -> None:
    """Stage 1 alone: generative pair-to-pair on the refined KB."""
    evaluate_captioner(run, "stage1")


def event_scores(run: MiniRun, evaluation: Path) -> dict:
    """Per run: the share of test mixtures whose caption names both of its events (and at least one)."""
    events = mixture_events(run.mixtures_dir)
    scores = {}
    for path in sorted((evaluation / "predictions").glob("*.jsonl")):
        records = read_predictions(path)
        captions = {r["audio_id"]: r["caption"] for r in records if "caption" in r}
        zero_shot = {r["audio_id"]: r["zero_shot_caption"] for r in records if r.get("zero_shot_caption")}
        scores[path.stem] = {
            "final": event_accuracy(captions, {clip: events[clip] for clip in captions}),
            "zero_shot_pass": event_accuracy(zero_shot, {clip: events[clip] for clip in zero_shot})
            if zero_shot
            else None,
        }
    return scores


def training_fit(run: MiniRun) -> None:
    """
    Every trained captioner, zero-shot, on audio it was trained on: the single training clips and the first
    `fit_mixtures` training mixtures (`evaluation/fit.json`: the share whose caption names the clip's event, or
    both and at least one of a mixture's). Beside the test scores, this tells underfitting from not generalising.
    """
    train = load_from_disk(str(run.pairs("captioner_train")))  # the novel classes' clips are not in it
    trained = set(train["audio_id"])
    singles = {clip.audio_id: (clip.category,) for clip in run.clip_splits()["train"] if clip.audio_id in trained}
    events = mixture_events(run.mixtures_dir)
    mixtures = sorted({clip for clip in train["audio_id"] if clip in events})[: run.scale.fit_mixtures]
    keep = set(singles) | set(mixtures)
    sample = run.path("evaluation", "fit", "train")
    if not sample.is_dir():
        save(train.filter(lambda clip: clip in keep, input_columns="audio_id"), sample)
    groups = {"train_clips": singles, "train_mixtures": {clip: events[clip] for clip in mixtures}}
    fit = zero_shot_event_scores(run, sample, "esc50-train", run.path("evaluation", "fit"), groups)
    run.path("evaluation", "fit.json").write_text(json.dumps(fit, indent=2))


def zero_shot_test(run: MiniRun) -> None:
    """Every captioner zero-shot on the `zero_shot_test_mixtures` test mixtures (`evaluation/zero_shot.json`):
    the share whose caption names both events, counted over five times the grid's mixtures."""
    events = mixture_events(run.mixtures_dir)
    sample = load_from_disk(str(run.pairs("test_all")))
    groups = {"test_mixtures": {clip: events[clip] for clip in dict.fromkeys(sample["audio_id"])}}
    scores = zero_shot_event_scores(
        run, run.pairs("test_all"), "esc50-mixtures", run.path("evaluation", "zero_shot"), groups
    )
    run.path("evaluation", "zero_shot.json").write_text(json.dumps(scores, indent=2))


def zero_shot_event_scores(run: MiniRun, data: Path, data_name: str, output: Path, groups: dict[str, dict]) -> dict:
    """Every captioner zero-shot on `data` (`output/<model>`): per model, the event accuracy of each group of
    clips (audio_id -> events), the number of distinct captions and the run's CIDEr-D."""
    scores = {}
    for model in run.captioners:
        if not (output / model / "results.json").is_file():
            evaluate_release(run, model, output / model, data, data_name)  # no knowledge base: zero-shot only
        (predictions,) = sorted((output / model / "predictions").glob("*.jsonl"))  # the one zero-shot run
        captions = {r["audio_id"]: r["caption"] for r in read_predictions(predictions) if "caption" in r}
        (result,) = json.loads((output / model / "results.json").read_text())["runs"]
        scores[model] = {
            group: event_accuracy({clip: captions[clip] for clip in clips if clip in captions}, clips)
            for group, clips in groups.items()
        }
        scores[model] |= {
            "distinct_captions": len(set(captions.values())),
            "cider_d": result["metrics"].get("cider_d"),
        }
    return scores


def read_predictions(path: Path) -> list[dict]:
    """The records of a `paircap evaluate` predictions file (its first line is the run's settings)."""
    return [json.loads(line) for line in path.read_text().splitlines()[1:]]
