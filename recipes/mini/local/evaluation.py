"""Stages `evaluate`, `evaluate_raft_only`, `evaluate_stage1`, `fit` and `zero_shot`: each captioner on the test
mixtures as `paircap evaluate` scores it (method x KB grid, W and top-k sweeps, CLAP rescoring rows), and zero-shot on
its own training data and on more test mixtures, with event accuracy: the share of captions that name their clip's
events."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import torch
from datasets import load_from_disk

from paircap.caption_data import EvaluationItem, group_references, load_pairs
from paircap.captioning import load_retriever, resolve_dtype
from paircap.clap_score import clap_scores
from paircap.evaluation import (
    PREDICTIONS_DIR,
    EvaluationRun,
    evaluate,
    plan_runs,
    previous_results,
    rescore,
)
from paircap.evaluation_report import evaluation_settings, write_report
from paircap.releases import load_release
from recipes.mini.local.corpus import save
from recipes.mini.local.event_captions import event_accuracy
from recipes.mini.local.knowledge_bases import KNOWLEDGE_BASES
from recipes.mini.local.layout import CURRICULUM, MiniRun
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
    rescoring: Sequence[EvaluationRun] = (),
    reuse: Path | None = None,
) -> None:
    """
    What `paircap evaluate` writes (predictions, results.json and .md, sweep plots), for one stage's release on
    `data`, on the CPU at the scale's batch size, caption length and top-k: zero-shot, then every mode on
    every knowledge base (none: zero-shot only), each again with every CLAP rescoring of `rescoring`
    (`paircap.evaluation.rescoring_runs`), then (`sweeps`) the scale's W and top-k sweeps on the first. `reuse`: an
    earlier evaluation of the same release whose predictions of these runs are copied, not made again, where it made
    them on the same items with the same decoding (`reusable_predictions`).
    """
    s = run.scale
    release = str(run.release(model))
    items = group_references(load_pairs([str(data)]))
    runs = plan_runs(
        knowledge_bases,
        modes,
        top_k=s.max_examples,
        weight_sweep=s.weight_sweep if sweeps else (),
        top_k_sweep=s.top_k_sweep if sweeps else (),
        rescoring=rescoring,
    )
    generation = {"max_new_tokens": s.max_new_tokens, "num_beams": 1, "do_sample": False}
    copied = (
        [] if reuse is None else reusable_predictions(reuse, [r.name for r in runs], items, generation, s.batch_size)
    )
    device = torch.device("cpu")
    captioner, processor = load_release(release, device, resolve_dtype("auto", device))
    kept = copy_predictions(reuse, output, copied, captioner, processor, items, s.batch_size)
    todo = [r for r in runs if r.name not in copied]
    needed = {r.knowledge_base for r in todo if r.knowledge_base}
    roots = run.audio_roots()  # their clips' audio: for tokens a KB lacks
    retrievers = {kb: load_retriever(captioner, processor, kb, audio_roots=roots) for kb in needed}
    settings = {"model": release, "data": [str(data)], "clips": len(items), "runs": len(runs)}
    settings |= evaluation_settings(captioner.config, release, knowledge_bases, None, data_name, data.name)
    if copied:
        settings["copied_from"] = {"folder": str(reuse), "runs": copied}
    results = evaluate(
        captioner, processor, items, todo, output, retrievers, batch_size=s.batch_size, progress=False,
        settings=settings, kept=kept, **generation,
    )  # fmt: skip
    write_report(results, output)


def reusable_predictions(
    folder: Path, names: Sequence[str], items: Sequence[EvaluationItem], generation: dict, batch_size: int
) -> list[str]:
    """The runs of `names` whose predictions `folder` (a `paircap evaluate` output) holds for exactly `items`, in their
    order, made with the decoding `generation` at `batch_size` (its results.json's settings)."""
    settings = previous_results(folder).get("settings", {})
    if settings.get("generation") != generation or settings.get("batch_size") != batch_size:
        return []
    ids = [item.audio_id for item in items]
    return [
        name
        for name in names
        if (folder / PREDICTIONS_DIR / f"{name}.jsonl").is_file()
        and [record["audio_id"] for record in read_predictions(folder / PREDICTIONS_DIR / f"{name}.jsonl")] == ids
    ]


def copy_predictions(
    source: Path | None,
    output: Path,
    names: Sequence[str],
    captioner,
    processor,
    items: Sequence[EvaluationItem],
    batch_size: int,
) -> list[dict]:
    """Copy the predictions of runs `names` from `source` into `output`, giving each caption its `clap_score` where
    the copy lacks it (`add_clap_scores`; `captioner` is the release that made them); returns their scores
    (`results.json` rows, scored as `output`'s own runs are)."""
    if not names:
        return []
    (output / PREDICTIONS_DIR).mkdir(parents=True, exist_ok=True)
    audio = {item.audio_id: item.audio for item in items}
    for name in names:
        lines = (source / PREDICTIONS_DIR / f"{name}.jsonl").read_text(encoding="utf-8").splitlines()
        records = [json.loads(line) for line in lines[1:]]
        add_clap_scores(records, captioner, processor, audio, batch_size)
        copied = [lines[0], *(json.dumps(record, ensure_ascii=False) for record in records)]
        (output / PREDICTIONS_DIR / f"{name}.jsonl").write_text("\n".join(copied) + "\n", encoding="utf-8")
    return rescore(output, names=names)["runs"]


def add_clap_scores(records: list[dict], captioner, processor, audio: dict[str, dict], batch_size: int) -> None:
    """Give every captioned record without one its caption's `clap_score` (`paircap.clap_score`) with its clip's
    audio (`audio`: by audio_id), as `paircap evaluate` now records it (predictions made before it lack it)."""
    missing = [record for record in records if "caption" in record and "clap_score" not in record]
    for start in range(0, len(missing), batch_size):
        batch = missing[start : start + batch_size]
        waves = processor.load_audio([audio[record["audio_id"]] for record in batch])
        scores = clap_scores(captioner, processor, waves, [record["caption"] for record in batch])
        for record, score in zip(batch, scores, strict=True):
            record["clap_score"] = score


def evaluate_captioner(run: MiniRun, model: str) -> None:
    """One captioner on the test mixtures: the curriculum model on the grid (and, with the ablations, both sweeps);
    stage 1, RAFT-only (the training ablation) and the others (the progressive schedule) with generative pair-to-pair
    on the refined KB."""
    kbs = [str(run.path("kb", name)) for name in KNOWLEDGE_BASES]
    output = run.path("evaluation", model)
    if not (output / "results.json").is_file():
        if model == CURRICULUM:
            options = {"knowledge_bases": kbs, "sweeps": run.scale.ablations}
        else:
            options = {"knowledge_bases": kbs[:1], "modes": ["generative_pair2pair"]}
        evaluate_release(run, model, output, run.pairs("test"), "esc50-mixtures", **options)
    (output / "events.json").write_text(json.dumps(event_scores(run, output), indent=2))


def evaluate_curriculum(run: MiniRun) -> None:
    """The curriculum model (stage 2, phase 2): the method x KB grid and the sweeps."""
    evaluate_captioner(run, CURRICULUM)


def evaluate_raft_only(run: MiniRun) -> None:
    """RAFT-only (the training ablation): generative pair-to-pair on the refined KB."""
    evaluate_captioner(run, "raft_only")


def evaluate_stage1(run: MiniRun) -> None:
    """Stage 1 alone: generative pair-to-pair on the refined KB."""
    evaluate_captioner(run, "stage1")


def event_scores(run: MiniRun, evaluation: Path) -> dict:
    """Per run: the share of test mixtures whose caption names both of its events (and at least one): the final
    caption, the zero-shot pass of generative pair-to-pair and the caption of the top retrieved pair (what the search
    found; None where a run has no such captions)."""
    events = mixture_events(run.mixtures_dir)
    scores = {}
    for path in sorted((evaluation / "predictions").glob("*.jsonl")):
        records = [record for record in read_predictions(path) if "caption" in record]
        texts = {
            "final": {r["audio_id"]: r["caption"] for r in records},
            "zero_shot_pass": {r["audio_id"]: r["zero_shot_caption"] for r in records if r.get("zero_shot_caption")},
            "top_pair": {r["audio_id"]: r["retrieved"][0]["caption"] for r in records if r.get("retrieved")},
        }
        scores[path.stem] = {
            which: event_accuracy(captions, {clip: events[clip] for clip in captions}) if captions else None
            for which, captions in texts.items()
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
