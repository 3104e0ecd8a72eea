"""Distractors for retrieval-augmented fine-tuning: a sample's retrieved pairs, some swapped for random training pairs
and put in random order, so that, as at test time, not every retrieved pair is right and no position marks the right
one.

A training pair's neighbours are searched among clips the retrieval space was trained on, so they are right far more
often than a new clip's retrieved pairs (the mini recipe: 78-87 % against 34-52 % share an event). These options train
with prompts as unreliable as the test's, where the model should learn to weigh a pair by its audio, not by its place;
in the mini recipe neither changed how it reads its pairs (`recipes/mini/RESULTS.md`).

With `share` s, each neighbour of a sample is swapped with probability s for a training pair drawn uniformly among those
that share no audio with the sample (`paircap.training.clip_groups`); with `shuffle`, each sample's pairs are in random
order. Both are drawn from one random generator, which the caller seeds with (seed, epoch).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

__all__ = ["mixed_example_rows"]

MAX_DRAWS = 100  # redraws of a distractor that shares audio with its sample before giving up


def mixed_example_rows(
    neighbors: np.ndarray,
    source_rows: np.ndarray,
    candidates: np.ndarray,
    audio_ids: Sequence[str],
    exclusions: Sequence[frozenset[str]],
    share: float,
    shuffle: bool,
    rng: np.random.Generator,
) -> np.ndarray:
    """
    `neighbors` (pairs, width): rows of the examples' source per training pair, nearest first, -1 padded, with a
    `share` of them swapped for distractors and, with `shuffle`, each row's filled entries permuted (padding stays
    last). `source_rows` gives each pair's own row in the source (-1: none), `candidates` the source rows that may be
    drawn (those with audio), `audio_ids` each source row's audio id and `exclusions` each source row's audio ids that
    share its audio.

    Raises:
        ValueError: `share` outside [0, 1], or no source row can serve as a distractor for some pair.
    """
    if not 0 <= share <= 1:
        raise ValueError(f"the distractor share must be in [0, 1], got {share}")
    rows = neighbors.copy()
    filled = rows >= 0
    if share:
        for pair, slot in zip(*np.nonzero(filled & (rng.random(rows.shape) < share)), strict=True):
            rows[pair, slot] = _distractor(candidates, audio_ids, exclusions[source_rows[pair]], rng)
    if shuffle:
        keys = np.where(filled, rng.random(rows.shape), np.inf)
        rows = np.take_along_axis(rows, np.argsort(keys, axis=1, kind="stable"), axis=1)
    return rows


def _distractor(
    candidates: np.ndarray, audio_ids: Sequence[str], excluded: frozenset[str], rng: np.random.Generator
) -> int:
    """A random candidate row whose audio id is not `excluded`."""
    for _ in range(MAX_DRAWS):
        if len(candidates) and audio_ids[row := int(candidates[rng.integers(len(candidates))])] not in excluded:
            return row
    raise ValueError(f"no training pair to draw as a distractor: every draw shared audio with its sample ({excluded})")
