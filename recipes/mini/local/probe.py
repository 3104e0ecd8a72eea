"""What the trained CLAP's audio embedding can name, for RESULTS.md: how well it retrieves the test captions and names
a mixture's two events zero-shot (stage `clap`, `clap/retrieval.json`), and linear probes of it (stage `probe`,
`clap/probes.json`).

Two probes per representation, both linear on standardised features and fitted on training clips only:
- a softmax classifier on the single training clips, scored on the held-out single clips (class accuracy);
- a multi-label (sigmoid) classifier on the training mixtures, scored on the test mixtures by its top two classes
  (both events, at least one).

The representations: the trained CLAP's audio embedding (the retrieval space, and what the captioner's tower starts
from) and two yardsticks that learn nothing: per-mel-bin mean, deviation and maximum of the log-mel features, and the
same statistics each sorted over the mel bins, which keeps the spectral shape's values but not which frequency they
sit at (what a network blind to absolute frequency, as a Swin tower with only relative position bias, can at best read).

Beside the probes, `clap/probes.json` holds audio->audio retrieval on the held-out single clips
(`retrieval_yardstick.py`: leave-one-out R@k, also with the query's own recording excluded) in the CLAP's embedding, in
log-mel statistics and, for a run with `--teacher`, in the AudioSet teacher's embedding.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence

import numpy as np
import torch
from datasets import Dataset, load_from_disk
from transformers import AutoTokenizer, ClapFeatureExtractor, ClapModel

from modeling_paircap.audio_loading_paircap import load_audio_file
from paircap.training.pretraining_data import ClapPairSet
from recipes.mini.local.esc50 import EVENT_PHRASES, single_clip_pairs
from recipes.mini.local.layout import MiniRun
from recipes.mini.local.mixtures import mixture_events
from recipes.mini.local.retrieval_yardstick import (
    clap_embedder,
    recall_against_pool,
    retrieval_scores,
    teacher_embedder,
)
from recipes.mini.local.retrieval_yardstick import log_mel_statistics as teacher_log_mel_statistics

L2_PENALTY = 1e-3  # on the mean loss; chosen once, not tuned on the test clips
LBFGS_STEPS = 200


def first_row_per_clip(pairs: Dataset) -> Dataset:
    first: dict[str, int] = {}
    for index, clip in enumerate(pairs["audio_id"]):
        first.setdefault(clip, index)
    return pairs.select(sorted(first.values()))


def log_mel_windows(pairs: Dataset, feature_extractor: ClapFeatureExtractor) -> torch.Tensor:
    """`(N, 1, frames, mels)` log-mel windows of each row, as the CLAP reads them (short clips repeat-padded)."""
    dataset = ClapPairSet(pairs, feature_extractor)
    return torch.stack([dataset[index]["input_features"] for index in range(len(dataset))]).float()


def log_mel_statistics(windows: torch.Tensor, frequency_order: bool = True) -> torch.Tensor:
    """Mean, deviation and maximum over time per mel bin; each sorted over the bins when not `frequency_order`."""
    frames = windows[:, 0]
    statistics = [frames.mean(dim=1), frames.std(dim=1), frames.amax(dim=1)]
    if not frequency_order:
        statistics = [values.sort(dim=1).values for values in statistics]
    return torch.cat(statistics, dim=1)


@torch.no_grad()
def clap_audio_embeddings(model: ClapModel, windows: torch.Tensor, batch_size: int = 32) -> torch.Tensor:
    parts = [model.get_audio_features(input_features=batch).pooler_output for batch in windows.split(batch_size)]
    return torch.nn.functional.normalize(torch.cat(parts), dim=-1)


def fit_linear(features: torch.Tensor, targets: torch.Tensor, multi_label: bool) -> torch.nn.Module:
    """A linear classifier on z-scored features (L-BFGS, L2 penalty): class indices, or 0/1 rows for multi-label."""
    torch.manual_seed(0)
    mean, std = features.mean(dim=0), features.std(dim=0).clamp(min=1e-6)
    num_classes = targets.shape[1] if multi_label else int(targets.max()) + 1
    linear = torch.nn.Linear(features.shape[1], num_classes)
    loss_fn = torch.nn.BCEWithLogitsLoss() if multi_label else torch.nn.CrossEntropyLoss()
    optimizer = torch.optim.LBFGS(linear.parameters(), max_iter=LBFGS_STEPS, line_search_fn="strong_wolfe")
    inputs = (features - mean) / std

    def closure():
        optimizer.zero_grad()
        loss = loss_fn(linear(inputs), targets) + L2_PENALTY * linear.weight.square().sum()
        loss.backward()
        return loss

    optimizer.step(closure)
    return torch.nn.Sequential(_Standardise(mean, std), linear).eval()


class _Standardise(torch.nn.Module):
    def __init__(self, mean: torch.Tensor, std: torch.Tensor):
        super().__init__()
        self.mean, self.std = mean, std

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return (features - self.mean) / self.std


@torch.no_grad()
def probe_scores(features: dict[str, torch.Tensor], labels: dict[str, np.ndarray]) -> dict[str, float]:
    """Held-out single-clip accuracy and test-mixture top-2 event shares of one representation."""
    single = fit_linear(features["train_clips"], torch.as_tensor(labels["train_clips"]), multi_label=False)
    accuracy = (single(features["test_clips"]).argmax(dim=1).numpy() == labels["test_clips"]).mean()
    mixture = fit_linear(features["train_mixtures"], torch.as_tensor(labels["train_mixtures"]), multi_label=True)
    top2 = mixture(features["test_mixtures"]).topk(2, dim=1).indices.numpy()
    truth = labels["test_mixtures"]
    hits = np.take_along_axis(truth, top2, axis=1)  # 1 where a guessed class is one of the mixture's events
    return {
        "held_out_clip_accuracy": float(accuracy),
        "test_mixtures_both_events": float((hits.sum(axis=1) == 2).mean()),
        "test_mixtures_any_event": float((hits.sum(axis=1) >= 1).mean()),
    }


def probe_representations(clap_folder: str, pairs: dict[str, Dataset], events: Mapping[str, Sequence[str]]) -> dict:
    """Both probes on the CLAP's audio embedding and on the two log-mel yardsticks. `pairs` holds the "train_clips",
    "test_clips", "train_mixtures" and "test_mixtures" pairs (one row per caption), `events` each clip's classes."""
    classes = {name: index for index, name in enumerate(sorted(EVENT_PHRASES))}
    feature_extractor = ClapFeatureExtractor.from_pretrained(clap_folder)
    model = ClapModel.from_pretrained(clap_folder).eval()
    windows, labels = {}, {}
    for name, rows in pairs.items():
        rows = first_row_per_clip(rows)
        windows[name] = log_mel_windows(rows, feature_extractor)
        if name.endswith("_clips"):
            labels[name] = np.array([classes[events[clip][0]] for clip in rows["audio_id"]])
        else:
            labels[name] = np.zeros((len(rows), len(classes)), dtype=np.float32)
            for row, clip in enumerate(rows["audio_id"]):
                labels[name][row, [classes[event] for event in events[clip]]] = 1.0
    representations = {
        "clap_audio_embedding": {name: clap_audio_embeddings(model, value) for name, value in windows.items()},
        "log_mel_statistics": {name: log_mel_statistics(value) for name, value in windows.items()},
        "log_mel_statistics_frequency_sorted": {
            name: log_mel_statistics(value, frequency_order=False) for name, value in windows.items()
        },
    }
    scores = {name: probe_scores(features, labels) for name, features in representations.items()}
    return {"probe": f"linear, z-scored features, L2 penalty {L2_PENALTY:g}", **scores}


def clap_retrieval(run: MiniRun) -> dict:
    """The trained CLAP on the test mixtures: audio-to-caption recall (is one of a clip's own captions the nearest
    of all test captions, R@1, or among the nearest 5 / 10), and how often the two classes whose event phrases
    (averaged) are nearest to a mixture are its two events: what the audio embedding alone can name."""
    model = ClapModel.from_pretrained(run.release("clap")).eval()
    feature_extractor = ClapFeatureExtractor.from_pretrained(run.release("clap"))
    tokenizer = AutoTokenizer.from_pretrained(run.release("clap"))
    pairs = load_from_disk(str(run.pairs("test")))
    clip_ids = list(pairs["audio_id"])
    clip_rows = first_row_per_clip(pairs)
    clips = list(clip_rows["audio_id"])
    audio = clap_audio_embeddings(model, log_mel_windows(clip_rows, feature_extractor), batch_size=16)
    with torch.no_grad():
        text = model.get_text_features(
            **tokenizer(list(pairs["caption"]), padding=True, truncation=True, return_tensors="pt")
        ).pooler_output
    scores = audio @ torch.nn.functional.normalize(text, dim=-1).T
    position = {clip: index for index, clip in enumerate(clips)}
    owner = torch.tensor([position[clip] for clip in clip_ids])
    ranked = owner[scores.argsort(dim=1, descending=True)]
    hit_rank = (ranked == torch.arange(len(clips))[:, None]).float().argmax(dim=1)
    recall = {f"audio_to_caption_recall@{k}": float((hit_rank < k).float().mean()) for k in (1, 5, 10)}
    classes = sorted(EVENT_PHRASES)
    with torch.no_grad():
        class_texts = torch.stack(
            [
                torch.nn.functional.normalize(
                    model.get_text_features(
                        **tokenizer(list(EVENT_PHRASES[name]), padding=True, return_tensors="pt")
                    ).pooler_output,
                    dim=-1,
                ).mean(dim=0)
                for name in classes
            ]
        )
    top2 = (audio @ class_texts.T).topk(2, dim=1).indices
    events = mixture_events(run.mixtures_dir)
    named = [{classes[i] for i in row} for row in top2.tolist()]
    both = np.mean([guess == set(events[clip]) for guess, clip in zip(named, clips, strict=True)])
    return {
        "test_clips": len(clips),
        "test_captions": len(clip_ids),
        **recall,
        "zero_shot_top2_both_events": float(both),
    }


def probe_audio(run: MiniRun) -> None:
    """Linear probes of what the trained CLAP's audio embedding (and, as yardsticks, log-mel statistics in and out of
    frequency order) can name: held-out single clips, and both events of the test mixtures (`clap/probes.json`)."""
    splits = run.clip_splits()
    train = load_from_disk(str(run.pairs("train")))
    pairs = {
        "train_clips": load_from_disk(str(run.pairs("train_clips"))),
        "test_clips": single_clip_pairs(splits["test"], "test"),
        "train_mixtures": train.filter(lambda source: source == "esc50_mix", input_columns="source"),
        "test_mixtures": load_from_disk(str(run.pairs("test"))),
    }
    events = {clip.audio_id: (clip.category,) for part in splits.values() for clip in part}
    events.update(mixture_events(run.mixtures_dir))
    probes = probe_representations(str(run.release("clap")), pairs, events)
    probes["audio_to_audio_retrieval"] = audio_retrieval(run)
    run.path("clap", "probes.json").write_text(json.dumps(probes, indent=2))


def audio_retrieval(run: MiniRun, sample_rate: int = 48000) -> dict:
    """Audio->audio retrieval of the held-out single clips (same class = hit), in the trained CLAP's embedding, in
    log-mel mean/deviation statistics and (with `--teacher`) in the AudioSet teacher's embedding: leave-one-out among
    themselves, and searching the training single clips (another recording always: the splits share none)."""
    splits = run.clip_splits()
    clips, train = splits["test"], splits["train"]
    waves = [load_audio_file(clip.path, sample_rate) for clip in clips]
    train_waves = [load_audio_file(clip.path, sample_rate) for clip in train]
    labels, recordings = [clip.category for clip in clips], [clip.src_file for clip in clips]
    train_labels = [clip.category for clip in train]
    embedders = {
        "clap_audio_embedding": clap_embedder(run.release("clap")),
        "log_mel_statistics": teacher_log_mel_statistics,
    }
    if run.teacher is not None:
        embedders["teacher"] = teacher_embedder(run.teacher)
    scores = {}
    for name, embed in embedders.items():
        queries, pool = embed(waves, sample_rate), embed(train_waves, sample_rate)
        scores[name] = retrieval_scores(queries, labels, recordings) | {
            f"R@{k}_against_training_clips": recall_against_pool(queries, labels, pool, train_labels, k) for k in (1, 5)
        }
    return {"clips": len(clips), "recordings": len(set(recordings)), "training_clips": len(train), **scores}
