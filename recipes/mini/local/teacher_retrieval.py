"""Is the retrieval space or the reading the limit? The curriculum captioner of finished mini runs, captioning with
audio-to-audio retrieval done in the AudioSet teacher's embedding space instead of the CLAP stand-in's: the same KB
pairs (each clip with its first caption), the same prompts (`paircap.context_probe.caption_condition`), and never
the query's own recording or a mixture that holds it. A diagnostic: the teacher is no part of a release.

It captions the test mixtures on the refined KB (share naming one of a mixture's events, and CIDEr-D) and, where the
run has novel classes, their held-out clips on the refined KB and on the control KB without them (share naming the
class); each with the top k clips for every `--top-k` (1 and 4 by default), and zero-shot. Pooled over the runs with
paired intervals (`goals.py`).

    python -m recipes.mini.local.teacher_retrieval runs/p5-s0 runs/p5-s1 --data ../shared/data \
        --teacher mn04_as_mAP_432.pt --output teacher_retrieval.md
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Sequence
from pathlib import Path
from typing import NamedTuple

import numpy as np
import pyarrow.parquet as pq
import torch
from datasets import Dataset, load_from_disk

from modeling_paircap.audio_loading_paircap import load_audio_file
from modeling_paircap.audio_locations_paircap import clip_audio_location
from modeling_paircap.clip_ids_paircap import normalise_clip_id
from paircap.caption_data import group_references
from paircap.captioning import resolve_dtype
from paircap.context_probe import Shot, caption_condition, encode_clips
from paircap.metrics import compute_caption_metrics
from paircap.releases import load_release
from recipes.mini.local.event_captions import events_named
from recipes.mini.local.goals import cell, difference, points, pooled_share
from recipes.mini.local.knowledge_bases import CONTROL, KNOWLEDGE_BASES
from recipes.mini.local.layout import AUDIO_ROOT, CURRICULUM
from recipes.mini.local.mixtures import mixture_events
from recipes.mini.local.teacher import SAMPLE_RATE, AudioSetTeacher

GENERATION = {"max_new_tokens": 24, "num_beams": 1, "do_sample": False}  # the recipe's evaluation decoding
BATCH_SIZE = 16


class KbClips(NamedTuple):
    """A knowledge base's clips, each once: ids, audio files and first captions."""

    ids: list[str]
    paths: list[Path]
    captions: list[str]


class Queries(NamedTuple):
    """Clips to caption: ids, audio files, the events (classes) each should name, and reference captions."""

    ids: list[str]
    paths: list[Path]
    events: list[tuple[str, ...]]
    references: list[list[str]]


def kb_clips(run: Path, name: str, data: Path) -> KbClips:
    """Every clip of the run's KB `name` with its first caption; its audio read only inside the run's corpus or
    `data` (`clip_audio_location`, the KB readers' containment rule).

    Raises:
        AudioLocationError: a clip's recorded file lies outside its root, or is no audio file.
        ValueError: a clip records no file, or a root that is neither the corpus nor a folder of `data`.
    """
    folder = run / "kb" / name
    clips = pq.read_table(folder / "clips.parquet", columns=["audio_id", "audio_root", "audio_path"]).to_pylist()
    first: dict[str, str] = {}
    for path in sorted(folder.glob("data/*")):
        for row in pq.read_table(path, columns=["audio_id", "caption"]).to_pylist():
            if row["audio_id"]:
                first.setdefault(row["audio_id"], row["caption"])
    clips = [clip for clip in clips if clip["audio_id"] in first]
    roots = {root: run / "corpus" if root == AUDIO_ROOT else data / root for root in {c["audio_root"] for c in clips}}
    paths = []
    for clip in clips:
        location = clip_audio_location(clip["audio_root"], clip["audio_path"], roots)
        if location is None:
            raise ValueError(f"{folder}: clip {clip['audio_id']!r} records no audio file under a root of this run")
        paths.append(Path(location))
    ids = [clip["audio_id"] for clip in clips]
    return KbClips(ids, paths, [first[clip] for clip in ids])


def mixture_queries(run: Path) -> Queries:
    """The run's test mixtures (`corpus/pairs/test`), once each, with their events."""
    return queries(load_from_disk(str(run / "corpus" / "pairs" / "test")), mixture_events(run / "corpus" / "mixtures"))


def novel_clips(run: Path) -> Queries | None:
    """The `novel` stage's held-out clips of the novel classes, with their class; None without that stage."""
    results = run / "novel" / "results.json"
    if not results.is_file():
        return None
    novel = json.loads(results.read_text())
    ids = novel["items"]["novel"]
    return queries(load_from_disk(str(run / "novel" / "clips")), {i: (novel["classes"][i],) for i in ids}, ids)


def queries(rows: Dataset, events: dict, ids: Sequence[str] | None = None) -> Queries:
    """Query clips of caption pairs `rows` (one per audio id, in first-seen order, or `ids`) with their references
    (`group_references`) and `events` (audio id -> the events to name)."""
    items = {item.audio_id: item for item in group_references(rows)}
    ids = list(items) if ids is None else list(ids)
    paths = [Path(items[i].audio["path"]) for i in ids]
    return Queries(ids, paths, [tuple(events[i]) for i in ids], [items[i].references for i in ids])


def teacher_embeddings(teacher: AudioSetTeacher, paths: Sequence[Path]) -> torch.Tensor:
    """Unit-norm teacher embeddings of audio files, each read mono at the teacher's rate (`load_audio_file`)."""
    waves = [load_audio_file(path, SAMPLE_RATE) for path in paths]
    return torch.nn.functional.normalize(teacher.embed(waves, SAMPLE_RATE), dim=1)


def nearest_clips(
    queries: torch.Tensor, query_ids: Sequence[str], kb: torch.Tensor, kb_ids: Sequence[str], groups: dict, k: int
) -> list[list[int]]:
    """Per query, the `k` most cosine-similar KB clips (fewer where fewer are allowed), nearest first, never one of the
    query's own recording or a mixture holding it (`groups`: a mixture's component clips)."""
    identities = [{normalise_clip_id(c) for c in (clip, *groups.get(clip, ()))} for clip in kb_ids]
    similarity = queries @ kb.T
    for row, query in enumerate(query_ids):
        own = normalise_clip_id(query)
        similarity[row, [col for col, ids in enumerate(identities) if own in ids]] = -float("inf")
    values, indices = similarity.topk(min(k, similarity.shape[1]), dim=1)
    allowed = values > -float("inf")
    return [row[keep].tolist() for row, keep in zip(indices, allowed, strict=True)]


def scores(captions: Sequence[str], queries: Queries) -> dict[str, list[float]]:
    """Per caption, 1.0 / 0.0 (`named`: it names one of its query's events) and its sentence CIDEr-D."""
    cider = compute_caption_metrics(captions, queries.references, metrics=("cider_d",)).sentence["cider_d"]
    return {"named": names_any(captions, queries.events), "cider_d": [float(value) for value in cider]}


def names_any(texts: Sequence[str], events: Sequence[tuple[str, ...]]) -> list[float]:
    """1.0 / 0.0 per text: names one of its events."""
    return [float(any(events_named(text, wanted))) for text, wanted in zip(texts, events, strict=True)]


def measure_run(run: Path, data: Path, teacher: AudioSetTeacher, top_ks: Sequence[int]) -> dict:
    """One run: per task (mixtures, novel) and setting, per item: `named` (1.0 / 0.0: the caption names an event), its
    sentence `cider_d` and, with retrieval, `top_right` (the first retrieved clip's caption names an event)."""
    device = torch.device("cpu")
    model, processor = load_release(str(run / CURRICULUM / "release"), device, resolve_dtype("auto", device))
    groups = json.loads((run / "corpus" / "clip_groups.json").read_text())
    knowledge_bases: dict[str, tuple[KbClips, torch.Tensor]] = {}  # each KB embedded once
    tasks = {"mixtures": (mixture_queries(run), (KNOWLEDGE_BASES[0],))}
    if (novel := novel_clips(run)) is not None:
        tasks["novel"] = (novel, (KNOWLEDGE_BASES[0], CONTROL))
    result: dict = {}
    for task, (queries, names) in tasks.items():
        tokens = encode_clips(model, processor, [str(p) for p in queries.paths], BATCH_SIZE)
        embedded = teacher_embeddings(teacher, queries.paths)
        none = caption_condition(model, processor, tokens, [], [[]] * len(tokens), BATCH_SIZE, **GENERATION)
        result[task] = {"items": queries.ids, "zero-shot": scores(none, queries)}
        for name in names:
            if name not in knowledge_bases:
                kb = kb_clips(run, name, data)
                knowledge_bases[name] = (kb, teacher_embeddings(teacher, kb.paths))
            kb, kb_embedded = knowledge_bases[name]
            nearest = nearest_clips(embedded, queries.ids, kb_embedded, kb.ids, groups, max(top_ks))
            used = sorted({clip for clips in nearest for clip in clips})
            position = {clip: index for index, clip in enumerate(used)}
            kb_tokens = encode_clips(model, processor, [str(kb.paths[clip]) for clip in used], BATCH_SIZE)
            for k in top_ks:
                shots = [[Shot(position[clip], kb.captions[clip]) for clip in clips[:k]] for clips in nearest]
                captions = caption_condition(model, processor, tokens, kb_tokens, shots, BATCH_SIZE, **GENERATION)
                result[task][f"{name}, top-k {k}"] = {
                    **scores(captions, queries),
                    "top_right": names_any([kb.captions[clips[0]] for clips in nearest], queries.events),
                }
    return result


def pooled(results: Sequence[dict]) -> dict:
    """Per task and setting over the runs: the share naming an event, the mean sentence CIDEr-D and, with retrieval,
    the share whose first retrieved clip's caption names one, and the paired differences to zero-shot."""
    table: dict = {}
    for task in results[0]:
        if not all(task in result for result in results):
            continue
        table[task] = {}
        for setting in (s for s in results[0][task] if s != "items"):
            per_run = {m: [np.array(result[task][setting][m]) for result in results] for m in results[0][task][setting]}
            row = {"named": pooled_share(per_run["named"]), "cider_d": float(np.concatenate(per_run["cider_d"]).mean())}
            if setting != "zero-shot":
                row["top_right"] = pooled_share(per_run["top_right"])
                for metric in ("named", "cider_d"):
                    zero = [np.array(result[task]["zero-shot"][metric]) for result in results]
                    row[f"{metric}_versus_zero_shot"] = difference(per_run[metric], zero, 2000)
            table[task][setting] = row
    return table


def markdown(table: dict) -> str:
    """The pooled table: per task and setting, naming, the first retrieved caption's naming and mean sentence CIDEr-D,
    with their differences to zero-shot."""
    lines = [
        "| items | setting (audio-to-audio in the teacher's space) | names an event [95 %] | first retrieved caption "
        "names one | vs zero-shot, points [95 %] | CIDEr-D | vs zero-shot [95 %] |",
        "|---|---|---:|---:|---:|---:|---:|",
    ]
    for task, settings in table.items():
        for setting, row in settings.items():
            top = named = cider = ""
            if "top_right" in row:  # a retrieval setting
                versus = row["cider_d_versus_zero_shot"]
                top, named = cell(row["top_right"]), points(row["named_versus_zero_shot"])
                cider = f"{versus['pooled']:+.3f} [{versus['low']:+.3f}, {versus['high']:+.3f}]"
            lines.append(
                f"| {task} | {setting} | {cell(row['named'])} | {top} | {named} | {row['cider_d']:.3f} | {cider} |"
            )
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m recipes.mini.local.teacher_retrieval", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("runs", nargs="+", type=Path, help="finished mini run folders (one per seed)")
    parser.add_argument("--data", type=Path, required=True, help="the runs' --data folder (their ESC-50 clips)")
    parser.add_argument("--teacher", type=Path, required=True, help="mn04_as_mAP_432.pt")
    parser.add_argument("--output", type=Path, required=True, help="the markdown table (a .json beside it)")
    parser.add_argument("--top-k", type=int, nargs="+", default=[1, 4])
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    teacher = AudioSetTeacher.from_file(args.teacher)
    results = [measure_run(run, args.data, teacher, args.top_k) for run in args.runs]
    table = pooled(results)
    args.output.write_text(markdown(table))
    record = {"runs": [str(run) for run in args.runs], "per_run": results, "pooled": table}
    args.output.with_suffix(".json").write_text(json.dumps(record, indent=1))
    print(f"{len(results)} runs: {args.output}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
