"""Is the retrieval space or the reading the limit? The curriculum captioner of finished mini runs, captioning with
audio-to-audio retrieval done in the AudioSet teacher's embedding space instead of the CLAP stand-in's: the same KB
pairs (each clip with its first caption), the same prompts (`paircap.context_probe.caption_condition`), and never
the query's own recording or a mixture that holds it. A diagnostic: the teacher is no part of a release.

It captions the test mixtures on the refined KB (share naming one of a mixture's events) and, where the run has novel
classes, their held-out clips on the refined KB and on the control KB without them (share naming the class); each with
the top k clips for every `--top-k` (1 and 4 by default), and zero-shot. Pooled over the runs with paired intervals
(`goals.py`).

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
import soundfile as sf
import torch
from datasets import load_from_disk

from modeling_paircap.clip_ids_paircap import normalise_clip_id
from paircap.captioning import resolve_dtype
from paircap.context_probe import Shot, caption_condition, encode_clips
from paircap.releases import load_release
from recipes.mini.local.event_captions import names_event
from recipes.mini.local.goals import cell, difference, points, pooled_share
from recipes.mini.local.knowledge_bases import CONTROL, KNOWLEDGE_BASES
from recipes.mini.local.layout import AUDIO_ROOT, CURRICULUM
from recipes.mini.local.mixtures import mixture_events
from recipes.mini.local.teacher import EMBEDDING_DIM, AudioSetTeacher

GENERATION = {"max_new_tokens": 24, "num_beams": 1, "do_sample": False}  # the recipe's evaluation decoding
BATCH_SIZE = 16


class Clips(NamedTuple):
    """Audio clips with what retrieval and scoring need: ids, files, captions (KB) or events to name (queries)."""

    ids: list[str]
    paths: list[Path]
    texts: list[str]  # a KB clip's caption; unused for queries
    events: list[tuple[str, ...]]  # a query's events (classes) to name; empty for KB clips


def kb_clips(run: Path, name: str, data: Path) -> Clips:
    """Every clip of the run's KB `name` with its first caption; files under the run's corpus or `data`."""
    folder = run / "kb" / name
    clips = pq.read_table(folder / "clips.parquet", columns=["audio_id", "audio_root", "audio_path"]).to_pylist()
    first: dict[str, str] = {}
    for path in sorted(folder.glob("data/*")):
        for row in pq.read_table(path, columns=["audio_id", "caption"]).to_pylist():
            if row["audio_id"]:
                first.setdefault(row["audio_id"], row["caption"])
    clips = [clip for clip in clips if clip["audio_id"] in first]
    roots = {root: run / "corpus" if root == AUDIO_ROOT else data / root for root in {c["audio_root"] for c in clips}}
    paths = [roots[clip["audio_root"]] / clip["audio_path"] for clip in clips]
    ids = [clip["audio_id"] for clip in clips]
    return Clips(ids, paths, [first[clip] for clip in ids], [()] * len(ids))


def mixture_queries(run: Path) -> Clips:
    """The run's test mixtures (`corpus/pairs/test`), once each, with their events."""
    rows = load_from_disk(str(run / "corpus" / "pairs" / "test"))
    paths = dict(zip(rows["audio_id"], (audio["path"] for audio in rows["audio"]), strict=True))
    events = mixture_events(run / "corpus" / "mixtures")
    ids = list(paths)
    return Clips(ids, [Path(paths[i]) for i in ids], [""] * len(ids), [tuple(events[i]) for i in ids])


def novel_clips(run: Path) -> Clips | None:
    """The `novel` stage's held-out clips of the novel classes, with their class; None without that stage."""
    results = run / "novel" / "results.json"
    if not results.is_file():
        return None
    novel = json.loads(results.read_text())
    rows = load_from_disk(str(run / "novel" / "clips"))
    paths = dict(zip(rows["audio_id"], (audio["path"] for audio in rows["audio"]), strict=True))
    ids = novel["items"]["novel"]
    return Clips(ids, [Path(paths[i]) for i in ids], [""] * len(ids), [(novel["classes"][i],) for i in ids])


def teacher_embeddings(teacher: AudioSetTeacher, paths: Sequence[Path]) -> torch.Tensor:
    """Unit-norm teacher embeddings of audio files (mono), each file at its own sample rate."""
    clips = [sf.read(str(path), dtype="float32", always_2d=True) for path in paths]
    embeddings = torch.empty(len(clips), EMBEDDING_DIM)
    for rate in {rate for _, rate in clips}:
        rows = [i for i, (_, r) in enumerate(clips) if r == rate]
        embeddings[rows] = teacher.embed([clips[i][0].mean(axis=1) for i in rows], rate)
    return torch.nn.functional.normalize(embeddings, dim=1)


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


def names_any(texts: Sequence[str], events: Sequence[tuple[str, ...]]) -> list[float]:
    """1.0 / 0.0 per text: names one of its events."""
    return [
        float(any(names_event(text, event) for event in wanted)) for text, wanted in zip(texts, events, strict=True)
    ]


def measure_run(run: Path, data: Path, teacher: AudioSetTeacher, top_ks: Sequence[int]) -> dict:
    """One run: per task (mixtures, novel) and setting, the per-item flags `named` (the caption names an event) and,
    with retrieval, `top_right` (the first retrieved clip's caption does)."""
    device = torch.device("cpu")
    model, processor = load_release(str(run / CURRICULUM / "release"), device, resolve_dtype("auto", device))
    groups = json.loads((run / "corpus" / "clip_groups.json").read_text())
    knowledge_bases: dict[str, tuple[Clips, torch.Tensor]] = {}  # each KB embedded once
    tasks = {"mixtures": (mixture_queries(run), (KNOWLEDGE_BASES[0],))}
    if (novel := novel_clips(run)) is not None:
        tasks["novel"] = (novel, (KNOWLEDGE_BASES[0], CONTROL))
    result: dict = {}
    for task, (queries, names) in tasks.items():
        tokens = encode_clips(model, processor, [str(p) for p in queries.paths], BATCH_SIZE)
        embedded = teacher_embeddings(teacher, queries.paths)
        none = caption_condition(model, processor, tokens, [], [[]] * len(tokens), BATCH_SIZE, **GENERATION)
        result[task] = {"items": queries.ids, "zero-shot": {"named": names_any(none, queries.events)}}
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
                shots = [[Shot(position[clip], kb.texts[clip]) for clip in clips[:k]] for clips in nearest]
                captions = caption_condition(model, processor, tokens, kb_tokens, shots, BATCH_SIZE, **GENERATION)
                result[task][f"{name}, top-k {k}"] = {
                    "named": names_any(captions, queries.events),
                    "top_right": names_any([kb.texts[clips[0]] for clips in nearest], queries.events),
                }
    return result


def pooled(results: Sequence[dict]) -> dict:
    """Per task and setting over the runs: the share naming an event and, with retrieval, the share whose first
    retrieved clip's caption does, and the paired difference to zero-shot."""
    table: dict = {}
    for task in results[0]:
        if not all(task in result for result in results):
            continue
        zero = [np.array(result[task]["zero-shot"]["named"]) for result in results]
        table[task] = {}
        for setting in (s for s in results[0][task] if s != "items"):
            named = [np.array(result[task][setting]["named"]) for result in results]
            row = {"named": pooled_share(named)}
            if setting != "zero-shot":
                row["top_right"] = pooled_share([np.array(result[task][setting]["top_right"]) for result in results])
                row["versus_zero_shot"] = difference(named, zero, 2000)
            table[task][setting] = row
    return table


def markdown(table: dict) -> str:
    """The pooled table: per task and setting, naming, the first retrieved caption's naming, and the difference."""
    lines = [
        "| items | setting (audio-to-audio in the teacher's space) | names an event [95 %] | first retrieved caption "
        "names one | vs zero-shot, points [95 %] |",
        "|---|---|---:|---:|---:|",
    ]
    for task, settings in table.items():
        for setting, row in settings.items():
            top = cell(row["top_right"]) if "top_right" in row else ""
            versus = points(row["versus_zero_shot"]) if "versus_zero_shot" in row else ""
            lines.append(f"| {task} | {setting} | {cell(row['named'])} | {top} | {versus} |")
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
