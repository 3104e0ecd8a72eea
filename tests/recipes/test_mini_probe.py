"""The mini recipe's linear probes: they read separable classes and pairs of classes, and score chance on noise."""

import numpy as np
import torch

from recipes.mini.local.probe import log_mel_statistics, probe_scores

NUM_CLASSES, WIDTH = 6, 16


def clips_and_mixtures(centres: np.ndarray, clips_per_class: int, noise: float, rng: np.random.Generator):
    """Clip features near their class centre; a mixture's features are the sum of two different classes' centres."""
    labels = np.repeat(np.arange(NUM_CLASSES), clips_per_class)
    clips = centres[labels] + noise * rng.normal(size=(len(labels), WIDTH))
    pairs = np.array([rng.choice(NUM_CLASSES, 2, replace=False) for _ in range(100)])
    mixtures = centres[pairs].sum(axis=1) + noise * rng.normal(size=(len(pairs), WIDTH))
    targets = np.zeros((len(pairs), NUM_CLASSES), dtype=np.float32)
    np.put_along_axis(targets, pairs, 1.0, axis=1)
    return torch.tensor(clips).float(), labels, torch.tensor(mixtures).float(), targets


def test_probes_name_separable_classes_and_both_events_of_a_mixture():
    rng = np.random.default_rng(0)
    centres = 3 * rng.normal(size=(NUM_CLASSES, WIDTH))
    features, labels = {}, {}
    for split, clips_per_class in (("train", 10), ("test", 5)):
        clips, clip_labels, mixtures, targets = clips_and_mixtures(centres, clips_per_class, 0.1, rng)
        features[f"{split}_clips"], labels[f"{split}_clips"] = clips, clip_labels
        features[f"{split}_mixtures"], labels[f"{split}_mixtures"] = mixtures, targets
    scores = probe_scores(features, labels)
    assert scores["held_out_clip_accuracy"] == 1.0
    assert scores["test_mixtures_both_events"] > 0.9 and scores["test_mixtures_any_event"] == 1.0


def test_probes_score_near_chance_on_noise():
    generator = torch.Generator().manual_seed(0)
    rng = np.random.default_rng(0)
    pairs = {
        split: np.array([rng.choice(10, 2, replace=False) for _ in range(n)])
        for split, n in (("train", 300), ("test", 200))
    }
    labels = {"train_clips": np.arange(200) % 10, "test_clips": np.arange(100) % 10}
    for split, chosen in pairs.items():
        labels[f"{split}_mixtures"] = np.zeros((len(chosen), 10), dtype=np.float32)
        np.put_along_axis(labels[f"{split}_mixtures"], chosen, 1.0, axis=1)
    features = {name: torch.randn(len(value), WIDTH, generator=generator) for name, value in labels.items()}
    scores = probe_scores(features, labels)
    assert scores["held_out_clip_accuracy"] < 0.25  # chance 0.1
    assert scores["test_mixtures_both_events"] < 0.1  # chance 1 / 45


def test_log_mel_statistics_are_mean_deviation_and_maximum_per_mel_bin():
    windows = torch.arange(2 * 3 * 4, dtype=torch.float32).reshape(2, 1, 3, 4)
    statistics = log_mel_statistics(windows)
    assert statistics.shape == (2, 12)
    assert torch.equal(statistics[:, :4], windows[:, 0].mean(dim=1))
    assert torch.equal(statistics[:, 4:8], windows[:, 0].std(dim=1))
    assert torch.equal(statistics[:, 8:], windows[:, 0, -1])


def test_frequency_sorted_statistics_forget_which_bin_holds_a_value():
    windows = torch.zeros(2, 1, 3, 4)
    windows[0, 0, :, 0] = 5.0  # energy in the lowest bin
    windows[1, 0, :, 3] = 5.0  # the same energy in the highest bin
    assert not torch.equal(log_mel_statistics(windows)[0], log_mel_statistics(windows)[1])
    sorted_statistics = log_mel_statistics(windows, frequency_order=False)
    assert torch.equal(sorted_statistics[0], sorted_statistics[1])
    assert torch.equal(sorted_statistics[0, :4], torch.tensor([0.0, 0.0, 0.0, 5.0]))
