"""The AudioSet teacher's targets for the CLAP stand-in (`paircap mini --teacher PATH`): its 384-d embedding
(standardised per dimension over the training clips) and its 527 tag probabilities, once per training clip, as the
`clap_contrastive` stage's `distill_targets` file (`paircap/training/distillation.py`).

They are computed in shards of `SHARD` clips under `clap/teacher/` (a rerun resumes after the last whole shard),
beside `teacher.json`, which records the teacher file's sha256: a run folder whose targets came from another teacher
file is refused, never mixed.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import torch
from datasets import load_from_disk

from datasets_scripts.columns import column
from modeling_paircap.audio_loading_paircap import load_audio_file
from paircap.training.distillation import DistillTargets
from recipes.mini.local.layout import MiniRun
from recipes.mini.local.teacher import SAMPLE_RATE, AudioSetTeacher

SHARD = 256  # clips per shard: about 20 s of teacher time on one thread


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def check_teacher_record(folder: Path, teacher: Path) -> None:
    """Write `teacher.json` for a new cache; for an existing one, the teacher file must have its sha256.

    Raises:
        ValueError: the cache was computed with a different teacher file (naming both).
    """
    record_path = folder / "teacher.json"
    sha256 = file_sha256(teacher)
    if record_path.is_file():
        recorded = json.loads(record_path.read_text())
        if recorded.get("sha256") != sha256:
            raise ValueError(
                f"{folder}: teacher targets computed with {recorded.get('file')} (sha256 {recorded.get('sha256')}), "
                f"not with {teacher} (sha256 {sha256}); remove the folder to recompute them with this teacher"
            )
        return
    folder.mkdir(parents=True, exist_ok=True)
    record_path.write_text(json.dumps({"file": str(teacher), "sha256": sha256}, indent=2))


def clips_to_label(pairs_folders: list[Path]) -> tuple[list[str], list[str]]:
    """Each clip of the pairs once, in order of first appearance: its `audio_id` and audio file."""
    paths: dict[str, str] = {}
    for folder in pairs_folders:
        pairs = load_from_disk(str(folder))
        for audio_id, audio in zip(column(pairs, "audio_id"), column(pairs, "audio"), strict=True):
            paths.setdefault(audio_id, audio["path"])
    return list(paths), list(paths.values())


def standardised(embeddings: torch.Tensor, reference: torch.Tensor) -> torch.Tensor:
    """`embeddings` standardised per dimension by `reference`'s mean and deviation (the targets' own)."""
    return (embeddings - reference.mean(dim=0)) / reference.std(dim=0).clamp(min=1e-4)


def teacher_shard(teacher: AudioSetTeacher, audio_ids: list[str], paths: list[str], path: Path) -> None:
    """The teacher's outputs for one shard of clips (written whole or not at all)."""
    waves = [load_audio_file(audio_path, SAMPLE_RATE) for audio_path in paths]
    logits, embeddings = teacher.outputs(waves, SAMPLE_RATE)
    temporary = path.with_name(path.name + ".tmp.npz")
    np.savez(temporary, audio_ids=np.array(audio_ids), logits=logits.numpy(), embeddings=embeddings.numpy())
    temporary.replace(path)


def compute_targets(folder: Path, teacher_file: Path, audio_ids: list[str], paths: list[str]) -> Path:
    """`folder/targets.npz` for the clips (resuming from the shards there), checked against the teacher's sha256."""
    check_teacher_record(folder, teacher_file)
    targets_path = folder / "targets.npz"
    teacher = None
    shards = []
    for start in range(0, len(audio_ids), SHARD):
        shard = folder / f"shard-{start // SHARD:05d}.npz"
        ids = audio_ids[start : start + SHARD]
        if shard.is_file():
            with np.load(shard) as stored:
                if stored["audio_ids"].tolist() != ids:
                    raise ValueError(f"{shard}: holds other clips than this run's training clips {start}..")
        else:
            teacher = teacher or AudioSetTeacher.from_file(teacher_file)
            with torch.inference_mode():
                teacher_shard(teacher, ids, paths[start : start + SHARD], shard)
        shards.append(shard)
    logits, embeddings = [], []
    for shard in shards:
        with np.load(shard) as stored:
            logits.append(stored["logits"])
            embeddings.append(stored["embeddings"])
    embeddings = torch.from_numpy(np.concatenate(embeddings))
    probabilities = torch.sigmoid(torch.from_numpy(np.concatenate(logits)))
    DistillTargets(tuple(audio_ids), standardised(embeddings, embeddings), probabilities).save(targets_path)
    return targets_path


def teacher_targets(run: MiniRun, pairs_folders: list[str]) -> Path:
    """The distillation targets of every clip the CLAP stage trains on (`pairs_folders`: single clips, their
    augmented takes and training mixtures)."""
    if run.teacher is None:
        raise ValueError("this run has no teacher (paircap mini --teacher PATH)")
    audio_ids, paths = clips_to_label([Path(folder) for folder in pairs_folders])
    return compute_targets(run.path("clap", "teacher"), run.teacher, audio_ids, paths)
