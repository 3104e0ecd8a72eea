"""The CLAP stand-in's audio tower pretrained on the AudioSet teacher (stage `clap_audio`, runs with `--teacher`): the
stand-in for the AudioSet pretraining that laion's HTSAT had before its CLAP training.

The mini HTSAT (`init/clap`'s audio tower, dropout off) learns, through linear heads that are dropped afterwards, the
teacher's standardised embedding (cosine) and tag probabilities (binary cross-entropy) of the single training clips
and of the scale's `clap_audio_mixtures` waveform-augmented mixtures of them (`augmented_clips.augmented_mixture`),
with time and mel masks on its input, for `clap_audio_steps` steps. The CLAP stage then starts from `clap_audio/clap`
(`init/clap` with this tower) instead of `init/clap`. A scale with `clap_audio_steps: 0`, or a run without a teacher,
skips it.

Resumable: the labelled bank is written once (`clap_audio/bank.pt`, with `teacher.json` recording the teacher
file's sha256 as `teacher_targets.py` does), training checkpoints every `CHECKPOINT_EVERY`
steps (`clap_audio/checkpoint.pt`, with the batch generator's state, so a resumed run draws the same batches).
`clap_audio/retrieval.json` scores the tower on the held-out single clips (audio->audio, `retrieval_yardstick.py`).
"""

from __future__ import annotations

import json
import logging
import math
import shutil
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm
from transformers import AutoFeatureExtractor, AutoTokenizer, ClapAudioModel, ClapModel

from modeling_paircap.audio_loading_paircap import load_audio_file
from modeling_paircap.feature_extraction_paircap import TorchClapFeatures
from modeling_paircap.file_io_paircap import write_atomic
from recipes.mini.local.augmented_clips import RATE, augmented_mixture
from recipes.mini.local.layout import MiniRun
from recipes.mini.local.retrieval_yardstick import recall_against_pool, retrieval_scores
from recipes.mini.local.teacher import AudioSetTeacher
from recipes.mini.local.teacher_targets import check_teacher_record, standardised

logger = logging.getLogger(__name__)

BATCH_SIZE = 32
LEARNING_RATE = 1e-3
WEIGHT_DECAY = 0.05
CHECKPOINT_EVERY = 500
LABEL_BATCH = 64


@torch.no_grad()
def label(waves: Sequence[np.ndarray], teacher: AudioSetTeacher, features: TorchClapFeatures) -> dict:
    """The tower's log-mel input (one repeat-padded window, half precision) and the teacher's logits and embedding."""
    logits, embeddings = teacher.outputs(list(waves), RATE)
    return {"inputs": tower_inputs(waves, features).half(), "logits": logits, "embeddings": embeddings}


@torch.no_grad()
def tower_inputs(waves: Sequence[np.ndarray], features: TorchClapFeatures) -> torch.Tensor:
    """`(N, 1, frames, mels)` log-mel features of each wave's repeat-padded window."""
    batches = range(0, len(waves), LABEL_BATCH)
    return torch.cat([features(features.pad_windows(waves[i : i + LABEL_BATCH])[0]) for i in batches])


def build_bank(waves: Sequence[np.ndarray], mixtures: int, seed: int, teacher, features) -> dict:
    """The clips and `mixtures` augmented mixtures of them, labelled."""
    rng = np.random.default_rng(seed)
    parts = [label(waves, teacher, features)]
    for start in range(0, mixtures, 256):
        parts.append(
            label([augmented_mixture(waves, rng) for _ in range(min(256, mixtures - start))], teacher, features)
        )
    return {key: torch.cat([part[key] for part in parts]) for key in parts[0]}


def mask(inputs: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Two time masks of up to 40 frames and two mel masks of up to 12 bins per sample (set to the sample's mean)."""
    batch, _, frames, mels = inputs.shape
    out = inputs.clone()
    fill = inputs.mean(dim=(1, 2, 3))
    for axis, size, limit in ((2, frames, 40), (3, mels, 12)):
        for _ in range(2):
            width = torch.randint(0, limit + 1, (batch,), generator=generator)
            start = (torch.rand(batch, generator=generator) * (size - width)).long()
            positions = torch.arange(size)
            hit = (positions[None] >= start[:, None]) & (positions[None] < (start + width)[:, None])
            shape = (batch, 1, size, 1) if axis == 2 else (batch, 1, 1, size)
            out = torch.where(hit.view(shape), fill.view(batch, 1, 1, 1), out)
    return out


class TowerWithTeacherHeads(nn.Module):
    """A `ClapAudioModel` whose pooled output predicts the teacher's embedding and tags through linear heads."""

    def __init__(self, tower: ClapAudioModel, embedding_dim: int, tag_count: int) -> None:
        super().__init__()
        self.tower = tower
        width = tower.config.hidden_size
        self.embedding, self.tags = nn.Linear(width, embedding_dim), nn.Linear(width, tag_count)

    def forward(self, inputs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """The predicted embedding, tag logits and the pooled output."""
        pooled = self.tower(input_features=inputs).pooler_output
        return self.embedding(pooled), self.tags(pooled), pooled


def tower_from(clap_folder: Path) -> ClapAudioModel:
    """`clap_folder`'s audio tower with dropout and stochastic depth off (its weights unchanged)."""
    clap = ClapModel.from_pretrained(clap_folder)
    config = clap.audio_model.config
    config.hidden_dropout_prob = config.attention_probs_dropout_prob = config.drop_path_rate = 0.0
    tower = ClapAudioModel(config)
    tower.load_state_dict(clap.audio_model.state_dict())
    return tower


def lr_schedule(steps: int) -> Callable[[int], float]:
    """Linear warm-up over min(100, steps / 10) steps, then a cosine decay to 0 at `steps`."""
    warmup = max(1, min(100, steps // 10))
    return lambda step: min(1.0, (step + 1) / warmup) * 0.5 * (1 + math.cos(math.pi * min(step, steps) / steps))


def teacher_terms(
    embedding: torch.Tensor, tags: torch.Tensor, targets: torch.Tensor, probabilities: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """The mean cosine of the predicted embeddings to their targets and the tags' binary cross-entropy."""
    cosine = F.cosine_similarity(embedding, targets, dim=1).mean()
    return cosine, F.binary_cross_entropy_with_logits(tags, probabilities)


def train_tower(model: TowerWithTeacherHeads, bank: dict, steps: int, seed: int, checkpoint: Path) -> None:
    """`steps` steps on the bank, resuming from (and writing) `checkpoint`."""
    targets = standardised(bank["embeddings"], bank["embeddings"])
    probabilities = torch.sigmoid(bank["logits"])
    optimizer = torch.optim.AdamW(model.parameters(), lr=LEARNING_RATE, weight_decay=WEIGHT_DECAY)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_schedule(steps))
    generator = torch.Generator().manual_seed(seed)
    done = 0
    if checkpoint.is_file():
        state = torch.load(checkpoint, weights_only=True)
        if state["steps"] != steps:
            raise ValueError(f"{checkpoint}: a run of {state['steps']} steps, not {steps}; remove it to start over")
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        generator.set_state(state["generator"])
        done = state["step"]
    model.train()
    progress = tqdm(range(done, steps), desc="clap_audio", unit="step", initial=done, total=steps)
    for step in progress:
        batch = torch.randint(0, len(targets), (BATCH_SIZE,), generator=generator)
        embedding, tags, _ = model(mask(bank["inputs"][batch].float(), generator))
        cosine, tag_loss = teacher_terms(embedding, tags, targets[batch], probabilities[batch])
        loss = 1 - cosine + tag_loss
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        scheduler.step()
        if (step + 1) % 100 == 0 or step + 1 == steps:
            progress.set_postfix(cosine=f"{cosine.item():.3f}")
        if (step + 1) % CHECKPOINT_EVERY == 0 or step + 1 == steps:
            state = {
                "steps": steps,
                "step": step + 1,
                "model": model.state_dict(),
                "optimizer": optimizer.state_dict(),
                "scheduler": scheduler.state_dict(),
                "generator": generator.get_state(),
            }
            write_atomic(checkpoint, lambda temporary, s=state: torch.save(s, temporary))
    model.eval()


@torch.no_grad()
def tower_retrieval(model: TowerWithTeacherHeads, run: MiniRun, features: TorchClapFeatures) -> dict:
    """Audio->audio retrieval of the held-out single clips in the pooled output and in the predicted teacher
    embedding: leave-one-out (also with the own recording excluded) and searching the training clips."""
    splits = run.clip_splits()
    test, train = splits["test"], splits["train"]

    def outputs(clips) -> tuple[torch.Tensor, torch.Tensor]:
        inputs = tower_inputs([load_audio_file(clip.path, RATE) for clip in clips], features)
        rows = [model(batch.float()) for batch in inputs.split(LABEL_BATCH)]
        return torch.cat([row[0] for row in rows]), torch.cat([row[2] for row in rows])

    labels, recordings = [clip.category for clip in test], [clip.src_file for clip in test]
    train_labels = [clip.category for clip in train]
    scores = {}
    for name, queries, pool in zip(
        ("predicted_teacher_embedding", "pooled"), outputs(test), outputs(train), strict=True
    ):
        scores[name] = retrieval_scores(queries, labels, recordings) | {
            "R@1_against_training_clips": recall_against_pool(queries, labels, pool, train_labels, 1)
        }
    return scores


def clap_start(run: MiniRun) -> Path:
    """The folder the CLAP stage starts from: `clap_audio/clap` once the tower is pretrained, else `init/clap`."""
    pretrained = run.path("clap_audio", "clap")
    return pretrained if (pretrained / "config.json").is_file() else run.path("init", "clap")


def pretrain_audio_tower(run: MiniRun) -> None:
    """Stage `clap_audio`: the bank, the training and `clap_audio/clap`; nothing without a teacher or steps."""
    steps = run.scale.clap_audio_steps
    if run.teacher is None or not steps:
        logger.info("clap_audio: skipped (%s)", "no --teacher" if run.teacher is None else "clap_audio_steps is 0")
        return
    folder = run.path("clap_audio")
    folder.mkdir(parents=True, exist_ok=True)
    init = run.path("init", "clap")
    features = TorchClapFeatures(AutoFeatureExtractor.from_pretrained(init))
    check_teacher_record(folder, run.teacher)  # a bank labelled by another teacher file is refused
    bank = labelled_bank(run, folder / "bank.pt", features)
    torch.manual_seed(run.seed)
    model = TowerWithTeacherHeads(tower_from(init), bank["embeddings"].shape[1], bank["logits"].shape[1])
    train_tower(model, bank, steps, run.seed, folder / "checkpoint.pt")
    (folder / "retrieval.json").write_text(json.dumps(tower_retrieval(model, run, features), indent=2))
    export_clap(init, model.tower, folder / "clap")


def labelled_bank(run: MiniRun, path: Path, features: TorchClapFeatures) -> dict:
    """The run's bank, read back from `path` or built and written there.

    Raises:
        ValueError: `path` holds a bank of another seed or mixture count (naming both).
    """
    wanted = {"seed": run.seed, "mixtures": run.scale.clap_audio_mixtures}
    if path.is_file():
        bank = torch.load(path, weights_only=True)
        if bank["settings"] != wanted:
            raise ValueError(f"{path}: a bank for {bank['settings']}, not {wanted}; remove it to build this run's")
        return bank
    waves = [load_audio_file(clip.path, RATE) for clip in run.clip_splits()["train"]]
    bank = build_bank(waves, wanted["mixtures"], run.seed, AudioSetTeacher.from_file(run.teacher), features)
    bank["settings"] = wanted
    write_atomic(path, lambda temporary: torch.save(bank, temporary))
    return bank


def export_clap(init: Path, tower: ClapAudioModel, folder: Path) -> None:
    """`init`'s CLAP folder with `tower`'s weights as its audio tower, written whole or not at all."""
    clap = ClapModel.from_pretrained(init)
    clap.audio_model.load_state_dict(tower.state_dict())
    temporary = folder.with_name(folder.name + ".tmp")
    shutil.rmtree(temporary, ignore_errors=True)
    clap.save_pretrained(temporary)
    AutoFeatureExtractor.from_pretrained(init).save_pretrained(temporary)
    AutoTokenizer.from_pretrained(init).save_pretrained(temporary)
    shutil.rmtree(folder, ignore_errors=True)
    temporary.rename(folder)
