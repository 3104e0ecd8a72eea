"""Distillation terms for the `clap_contrastive` stage: a teacher's per-clip targets, read from a file, which the
CLAP's audio embedding learns to predict through linear heads that exist only during training.

The targets file (`.npz`, written by whoever runs the teacher, e.g. the mini recipe) holds:

- `audio_ids`: one string per clip (the pairs' `audio_id` column);
- `embeddings`: `(clips, D)` float targets, learnt with a cosine loss (standardise them per dimension first);
- `probabilities` (optional): `(clips, C)` tag probabilities in [0, 1], learnt with binary cross-entropy.

The stage's loss is CLAP's contrastive loss + `distill_weight` x (cosine distance + `distill_tag_weight` x BCE); the
heads read the projected, normalised audio embedding (the retrieval space) and are dropped on export.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from transformers import ClapModel

TARGET_KEYS = ("audio_ids", "embeddings", "probabilities")


@dataclass(frozen=True)
class DistillTargets:
    """Per-clip teacher targets: row i of `embeddings` (and `probabilities`) belongs to `audio_ids[i]`."""

    audio_ids: tuple[str, ...]
    embeddings: torch.Tensor
    probabilities: torch.Tensor | None = None

    @classmethod
    def load(cls, path: str | Path) -> DistillTargets:
        """Read and check a targets file.

        Raises:
            ValueError: the file is missing, unreadable, or its arrays are absent, misshapen, not finite, repeat an
                audio id, or hold probabilities outside [0, 1] (naming the file).
        """
        path = Path(path)
        if not path.is_file():
            raise ValueError(f"{path}: no such distillation targets file")
        try:
            with np.load(path, allow_pickle=False) as archive:
                arrays = {key: archive[key] for key in archive.files}
        except Exception as error:  # noqa: BLE001 - any failure to read is this file's problem
            raise ValueError(f"{path}: not a distillation targets .npz file ({error})") from error
        problems = [f"no `{key}` array" for key in TARGET_KEYS[:2] if key not in arrays]
        unknown = sorted(set(arrays) - set(TARGET_KEYS))
        if unknown:
            problems.append(f"unknown arrays {unknown} (expected {', '.join(TARGET_KEYS)})")
        if problems:
            raise ValueError(f"{path}: {'; '.join(problems)}")
        ids, embeddings = arrays["audio_ids"], arrays["embeddings"]
        probabilities = arrays.get("probabilities")
        if ids.ndim != 1 or ids.dtype.kind != "U":
            raise ValueError(f"{path}: `audio_ids` must be a 1-D array of strings, got {ids.dtype} {ids.shape}")
        for name, values in (("embeddings", embeddings), ("probabilities", probabilities)):
            if values is None:
                continue
            if values.ndim != 2 or len(values) != len(ids) or values.dtype.kind != "f":
                raise ValueError(
                    f"{path}: `{name}` must be float (clips, dims) with {len(ids)} rows, got {values.dtype} "
                    f"{values.shape}"
                )
            if not np.isfinite(values).all():
                raise ValueError(f"{path}: `{name}` holds NaN or infinite values")
        if probabilities is not None and ((probabilities < 0) | (probabilities > 1)).any():
            raise ValueError(f"{path}: `probabilities` must lie in [0, 1]")
        if len(set(ids.tolist())) != len(ids):
            raise ValueError(f"{path}: `audio_ids` repeats an id")
        return cls(
            tuple(ids.tolist()),
            torch.from_numpy(embeddings.astype(np.float32)),
            None if probabilities is None else torch.from_numpy(probabilities.astype(np.float32)),
        )

    def save(self, path: str | Path) -> None:
        """Write the targets file (through a temporary file, so a half-written one never stays)."""
        path = Path(path)
        arrays = {"audio_ids": np.array(self.audio_ids, dtype=str), "embeddings": self.embeddings.numpy()}
        if self.probabilities is not None:
            arrays["probabilities"] = self.probabilities.numpy()
        temporary = path.with_name(path.name + ".tmp.npz")
        np.savez(temporary, **arrays)
        temporary.replace(path)

    def rows_for(self, audio_ids: Sequence[str], where: str) -> dict[str, torch.Tensor]:
        """The target rows of each of `audio_ids` (a pair's clip), as `distill_embeddings` / `distill_probabilities`.

        Raises:
            ValueError: some clip has no targets (naming `where`, the targets file, and a few of them).
        """
        position = {audio_id: row for row, audio_id in enumerate(self.audio_ids)}
        missing = sorted({audio_id for audio_id in audio_ids if audio_id not in position})
        if missing:
            raise ValueError(f"{where}: no targets for {len(missing)} training clips, e.g. {missing[:3]}")
        index = torch.tensor([position[audio_id] for audio_id in audio_ids], dtype=torch.long)
        rows = {"distill_embeddings": self.embeddings[index]}
        if self.probabilities is not None:
            rows["distill_probabilities"] = self.probabilities[index]
        return rows


class ClapWithDistillation(nn.Module):
    """A `ClapModel` with linear heads from its audio embedding to the targets (training only: export `clap`).
    Called with a batch, it returns the stage's loss: CLAP's contrastive loss plus `weight` x (cosine distance +
    `tag_weight` x tag BCE) on batches with targets (the validation batches have none: the contrastive loss)."""

    def __init__(
        self, clap: ClapModel, embedding_dim: int, tag_count: int | None, weight: float, tag_weight: float
    ) -> None:
        super().__init__()
        self.clap = clap
        width = clap.config.projection_dim
        self.embedding_head = nn.Linear(width, embedding_dim)
        self.tag_head = nn.Linear(width, tag_count) if tag_count else None
        self.weight, self.tag_weight = weight, tag_weight

    def forward(
        self,
        distill_embeddings: torch.Tensor | None = None,
        distill_probabilities: torch.Tensor | None = None,
        **inputs,
    ) -> torch.Tensor:
        outputs = self.clap(**inputs, return_loss=True)
        if distill_embeddings is None:
            return outputs.loss
        audio = outputs.audio_embeds
        distill = (1 - F.cosine_similarity(self.embedding_head(audio), distill_embeddings, dim=1)).mean()
        if distill_probabilities is not None and self.tag_head is not None:
            tags = F.binary_cross_entropy_with_logits(self.tag_head(audio), distill_probabilities)
            distill = distill + self.tag_weight * tags
        return outputs.loss + self.weight * distill


def distillation_loss(model: ClapWithDistillation, batch) -> torch.Tensor:
    return model(**batch)


def clap_state_dict(state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The `ClapModel`'s own weights of a `ClapWithDistillation` state dict (the heads dropped)."""
    return {key.removeprefix("clap."): value for key, value in state_dict.items() if key.startswith("clap.")}
