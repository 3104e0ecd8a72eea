"""Audio->audio retrieval as a yardstick for an audio embedding: leave-one-out R@k over labelled clips.

Each clip queries all the others by cosine similarity; a hit is a clip of the query's class at rank <= k. With
``exclude_own_recording`` the query's other takes (same ``src_file``: near-duplicates in ESC-50) are not candidates,
which measures what the space knows about the class rather than about the recording.

Embedding functions (``waveforms, sample_rate -> (N, D)``): the AudioSet teacher (``teacher.py``), per-mel-bin
log-mel mean and deviation over time (a yardstick that learns nothing), and a CLAP audio tower (a ``ClapModel``
folder, or a PairCap release's ``clap``).

    python -m recipes.mini.local.retrieval_yardstick --data ../shared/data \\
        --teacher ../shared/models/efficientat_mn04_as/mn04_as_mAP_432.pt [--clap FOLDER]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
from collections.abc import Callable, Sequence
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file
from transformers import ClapConfig, ClapFeatureExtractor, ClapModel

from modeling_paircap.audio_arrays_paircap import resample
from modeling_paircap.audio_loading_paircap import load_audio_file
from modeling_paircap.feature_extraction_paircap import TorchClapFeatures
from recipes.mini.local.esc50 import Esc50Clip, read_esc50_manifests
from recipes.mini.local.teacher import SAMPLE_RATE, AudioSetTeacher, KaldiMelFrontEnd

Embedder = Callable[[Sequence[np.ndarray], int], torch.Tensor]
ESC50_NAME = re.compile(r"^(?P<fold>\d+)-(?P<src_file>[^-]+)-(?P<take>[^-]+)-(?P<target>\d+)$")


def recall_at_k(embeddings: torch.Tensor, labels: Sequence, recordings: Sequence | None = None, k: int = 1) -> float:
    """Share of queries with a same-class clip among their k nearest others (cosine); with ``recordings``, clips
    of the query's own recording are not candidates."""
    if len(embeddings) != len(labels) or (recordings is not None and len(recordings) != len(labels)):
        raise ValueError(f"{len(embeddings)} embeddings for {len(labels)} labels / recordings")
    unit = torch.nn.functional.normalize(embeddings.double(), dim=1)
    similarity = unit @ unit.T
    blocked = torch.eye(len(labels), dtype=torch.bool)
    if recordings is not None:
        codes = torch.as_tensor(np.unique(np.asarray(recordings), return_inverse=True)[1])
        blocked |= codes[:, None] == codes[None, :]
    if (blocked.sum(dim=1) > len(labels) - k).any():
        raise ValueError(f"some query has fewer than k={k} candidates")
    ranked = similarity.masked_fill(blocked, float("-inf")).topk(k, dim=1).indices
    classes = torch.as_tensor(np.unique(np.asarray(labels), return_inverse=True)[1])
    return float((classes[ranked] == classes[:, None]).any(dim=1).double().mean())


def recall_against_pool(
    queries: torch.Tensor, query_labels: Sequence, pool: torch.Tensor, pool_labels: Sequence, k: int = 1
) -> float:
    """Share of queries with a clip of their class among their k nearest clips of `pool` (cosine): held-out clips
    searching the training clips, as a query searches a knowledge base (the splits share no recording)."""
    if len(queries) != len(query_labels) or len(pool) != len(pool_labels) or len(pool) < k:
        raise ValueError(f"{len(queries)} queries for {len(query_labels)} labels, {len(pool)} pool clips for "
                         f"{len(pool_labels)} labels, k={k}")  # fmt: skip
    similarity = (
        torch.nn.functional.normalize(queries.double(), dim=1) @ torch.nn.functional.normalize(pool.double(), dim=1).T
    )
    ranked = similarity.topk(k, dim=1).indices
    names = sorted(set(query_labels) | set(pool_labels))
    query_classes = torch.as_tensor([names.index(label) for label in query_labels])
    pool_classes = torch.as_tensor([names.index(label) for label in pool_labels])
    return float((pool_classes[ranked] == query_classes[:, None]).any(dim=1).double().mean())


def reachable_share(labels: Sequence, recordings: Sequence) -> float:
    """Share of queries with a same-class clip of another recording: the ceiling of R@k with the own recording
    excluded (a class with one recording in the pool can never be hit)."""
    recordings_of: dict = {}
    for label, recording in zip(labels, recordings, strict=True):
        recordings_of.setdefault(label, set()).add(recording)
    return float(
        np.mean([len(recordings_of[label] - {rec}) > 0 for label, rec in zip(labels, recordings, strict=True)])
    )


def retrieval_scores(embeddings: torch.Tensor, labels: Sequence, recordings: Sequence) -> dict[str, float]:
    """R@1 and R@5, over all other clips and with the query's own recording excluded (and that one's ceiling)."""
    return {
        "R@1": recall_at_k(embeddings, labels, k=1),
        "R@5": recall_at_k(embeddings, labels, k=5),
        "R@1_own_recording_excluded": recall_at_k(embeddings, labels, recordings, k=1),
        "R@5_own_recording_excluded": recall_at_k(embeddings, labels, recordings, k=5),
        "own_recording_excluded_ceiling": reachable_share(labels, recordings),
    }


def esc50_clips(folders: Sequence[str | os.PathLike]) -> list[Esc50Clip]:
    """The clips of ESC-50 folders (``manifest.csv`` each); a row without ``src_file`` takes it from the file name
    ``{fold}-{src_file}-{take}-{class}``."""
    clips = read_esc50_manifests([Path(folder) for folder in folders])
    for index, clip in enumerate(clips):
        if not clip.src_file:
            match = ESC50_NAME.match(clip.audio_id)
            if match is None:
                raise ValueError(f"{clip.path}: no src_file in the manifest and not an ESC-50 file name")
            clips[index] = replace(clip, src_file=match["src_file"])
    return clips


def teacher_embedder(weights: str | os.PathLike) -> Embedder:
    """The AudioSet teacher's 384-d embedding."""
    return AudioSetTeacher.from_file(weights).embed


@torch.no_grad()
def log_mel_statistics(waveforms: Sequence[np.ndarray], sample_rate: int) -> torch.Tensor:
    """Mean and deviation over time of each of the teacher front end's 128 log-mel bins: ``(N, 256)``."""
    front_end = KaldiMelFrontEnd()
    rows = []
    for waveform in waveforms:
        mels = front_end(resample(torch.as_tensor(waveform, dtype=torch.float32)[None], sample_rate, SAMPLE_RATE))[0]
        rows.append(torch.cat([mels.mean(dim=1), mels.std(dim=1)]))
    return torch.stack(rows)


def load_clap(folder: str | os.PathLike) -> tuple[ClapModel, ClapFeatureExtractor]:
    """A ``ClapModel`` folder, or a PairCap release (its ``clap`` weights and feature extractor)."""
    folder = Path(folder)
    config_path = folder / "config.json"
    if not config_path.is_file():
        raise FileNotFoundError(f"{config_path}: no such file (expected a ClapModel folder or a PairCap release)")
    config = json.loads(config_path.read_text())
    if "clap_config" not in config:
        return ClapModel.from_pretrained(folder).eval(), ClapFeatureExtractor.from_pretrained(folder)
    model = ClapModel(ClapConfig(**config["clap_config"]))
    weights = load_file(folder / "model.safetensors")
    model.load_state_dict({key[len("clap.") :]: value for key, value in weights.items() if key.startswith("clap.")})
    extractor = json.loads((folder / "processor_config.json").read_text())["feature_extractor"]
    extractor = {key: value for key, value in extractor.items() if key not in ("auto_map", "feature_extractor_type")}
    return model.eval(), ClapFeatureExtractor(**extractor)


def clap_embedder(folder: str | os.PathLike, batch_size: int = 16) -> Embedder:
    """A CLAP audio tower's projected embedding of each clip (one repeat-padded window, as the CLAP reads it)."""
    model, extractor = load_clap(folder)
    features = TorchClapFeatures(extractor)

    @torch.no_grad()
    def embed(waveforms: Sequence[np.ndarray], sample_rate: int) -> torch.Tensor:
        rows = []
        for start in range(0, len(waveforms), batch_size):
            windows = [
                resample(torch.as_tensor(w, dtype=torch.float32), sample_rate, extractor.sampling_rate)[
                    : extractor.nb_max_samples
                ]
                for w in waveforms[start : start + batch_size]
            ]
            padded, _ = features.pad_windows(windows)
            rows.append(model.get_audio_features(input_features=features(padded)).pooler_output)
        return torch.cat(rows)

    return embed


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="retrieval_yardstick", description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", default="../shared/data", help="folder holding the ESC-50 folders")
    parser.add_argument("--folders", nargs="+", default=["esc50_cc", "esc50_more"])
    parser.add_argument("--teacher", help="mn04_as_mAP_432.pt (EfficientAT release)")
    parser.add_argument("--clap", nargs="*", default=[], help="ClapModel folders or PairCap releases")
    args = parser.parse_args(argv)
    try:
        clips = esc50_clips([Path(args.data) / folder for folder in args.folders])
    except (OSError, ValueError) as error:
        print(f"retrieval_yardstick: error: {error}", file=sys.stderr)
        return 2
    sample_rate = 48000
    waveforms = [load_audio_file(clip.path, sample_rate) for clip in clips]
    embedders: dict[str, Embedder] = {"log_mel_statistics": log_mel_statistics}
    if args.teacher:
        embedders["teacher_mn04_as"] = teacher_embedder(args.teacher)
    for folder in args.clap:
        embedders[f"clap:{folder}"] = clap_embedder(folder)
    labels = [clip.category for clip in clips]
    recordings = [clip.src_file for clip in clips]
    table = {
        "clips": len(clips),
        "recordings": len(set(recordings)),
        "classes": len(set(labels)),
        **{
            name: retrieval_scores(embed(waveforms, sample_rate), labels, recordings)
            for name, embed in embedders.items()
        },
    }
    print(json.dumps(table, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
