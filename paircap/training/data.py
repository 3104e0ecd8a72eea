"""Training data for PairCap (paper §3.2, §4.1): caption pairs with retrieved interleaved examples, a picklable
collator that featurises in DataLoader workers, and a length-grouped, optionally source-balanced batch sampler.

Usage::

    neighbors = load_neighbors(path, embedded, neighbor_settings(10))
    train_set = CaptionTrainingSet(pairs, processor, embedded, neighbors, max_examples=5, seed=0, query_dropout=0.1)
    sampler = LengthGroupedBatchSampler(
        train_set.estimated_lengths, batch_size=128, seed=0, weights=balanced_source_weights(train_set.sources)
    )
    loader = DataLoader(train_set, batch_sampler=sampler, collate_fn=PairCapCollator(processor), num_workers=8)
    for epoch in range(start_epoch, epochs):
        train_set.set_epoch(epoch)                  # before iter(loader): workers read the epoch from shared memory
        sampler.set_epoch(epoch)
        for batch in loader:
            if batch is None:                       # every clip of the batch failed to load
                continue
            loss = model(**batch).loss

How many examples: n in 0..max_examples per sample, drawn from (seed, epoch, index). n = 0 is the zero-shot prompt
(the query alone), which inference runs in pass 1; paper eq. 1 counts the query among its 1..K interleaved samples.
By default n is uniform over 0..max_examples; `zero_shot_fraction` sets the share of n = 0 instead, the rest uniform
over 1..max_examples. The epoch varies n, so a pair meets every prompt size over the epochs. An
`examples_schedule` (one maximum per epoch, `paircap.training.examples_schedule`) raises the most a sample gets as
training goes on (MQ-Cap's progressive schedule): epoch e draws 1..m_e instead of 1..max_examples, the zero-shot share
unchanged; the counts and the length estimates stay functions of (seed, epoch), so resumed runs see the same ones.

Which examples: a sample with n examples gets the first n of its stored neighbour list, nearest first (fewer if it
has fewer): the same pairs, in the same order, that top-n retrieval puts in the prompt at inference. With
`distractor_share` and `shuffle_examples` (`paircap.training.distractors`), a share of the list is swapped for random
training pairs that share no audio with the sample and the list is put in random order, drawn from (seed, epoch).

Query dropout: a `query_dropout` share of the samples with examples, drawn from (seed, epoch, index), get faint white
noise (RMS 1e-3, about -60 dBFS: the processor refuses true silence) of their audio's length as the query, so their
caption can only come from the examples (training sets only).
"""

from __future__ import annotations

import functools
import math
import warnings
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch
from datasets import Dataset
from transformers import BatchFeature

from datasets_scripts.columns import column
from paircap.training.clip_groups import ClipGroups, shared_audio_exclusions
from paircap.training.distractors import mixed_example_rows
from paircap.training.examples_schedule import check_examples_schedule, max_examples_at

__all__ = ["CaptionTrainingSet", "LengthGroupedBatchSampler", "PairCapCollator", "balanced_source_weights"]

EXAMPLE_COLUMNS = ["caption", "is_long", "clip_index"]
QUERY_DROPOUT_STREAM = 1  # the random stream of query dropout, apart from (seed, epoch)'s example counts
DISTRACTOR_STREAM = 2  # the random stream of distractors and example order
QUERY_NOISE_RMS = 1e-3  # a dropped query's white noise: no sound event, yet not the silence the processor refuses


def _token_counts(tokenizer, texts: Sequence[str]) -> np.ndarray:
    """Tokens per text, without special tokens."""
    if not texts:
        return np.zeros(0, dtype=np.int64)
    ids = tokenizer(list(texts), add_special_tokens=False)["input_ids"]
    return np.array([len(row) for row in ids], dtype=np.int64)


def _audio_token_counts(processor, durations: Sequence[float | None]) -> np.ndarray:
    """Prompt tokens of clips of the given durations: windows x tokens per window, plus the length token past 30 s
    (an unknown duration counts as the maximum number of windows)."""
    seconds = np.array([np.nan if d is None else d for d in durations], dtype=np.float64)
    needed = np.where(np.isfinite(seconds), np.ceil(seconds / processor.window_seconds), processor.max_audio_windows)
    needed = np.maximum(needed, 1).astype(np.int64)
    windows = np.minimum(needed, processor.max_audio_windows)
    return windows * processor.audio_tokens_per_window + (needed > processor.max_audio_windows)


def _prompt_overheads(processor) -> tuple[int, int]:
    """(tokens of the system text plus BOS, template tokens of one turn without its audio and caption)."""
    prompt_format = processor.prompt_format
    system, turn_tokens = _token_counts(processor.tokenizer, [prompt_format.preamble, prompt_format.turn("")])
    return int(system) + 1, int(turn_tokens)


def _source_rows(pair_ids: list[str], source: Dataset) -> np.ndarray:
    """Every pair's row in `source`, matched by pair_id; -1 where it has none."""
    row_of = {pair_id: row for row, pair_id in enumerate(column(source, "pair_id"))}
    return np.array([row_of.get(pair_id, -1) for pair_id in pair_ids], dtype=np.int64)


def _neighbors_per_pair(rows: np.ndarray, neighbors: np.ndarray, width: int) -> np.ndarray:
    """The first `width` neighbour rows of every pair, whose rows in the source are `rows`; -1 where none."""
    if width > neighbors.shape[1]:
        raise ValueError(f"max_examples={width} but only {neighbors.shape[1]} neighbours are stored per pair")
    per_pair = np.full((len(rows), width), -1, dtype=np.int64)
    per_pair[rows >= 0] = neighbors[rows[rows >= 0], :width]
    return per_pair


def _draw_example_counts(
    rng: np.random.Generator, size: int, max_examples: int, zero_shot_fraction: float
) -> np.ndarray:
    """`size` counts: 0 with probability `zero_shot_fraction`, otherwise uniform in 1..max_examples."""
    zero_shot = rng.random(size) < zero_shot_fraction
    return np.where(zero_shot, 0, rng.integers(1, max_examples + 1, size=size))


class CaptionTrainingSet(torch.utils.data.Dataset):
    """
    (query waveform, caption, retrieved examples) samples for PairCap training.

    Args:
        pairs: the training pairs, with the readers' columns (`datasets_scripts.readers`); every row needs audio.
        processor: the `PairCapProcessor` (loads the query audio; its tokenizer and windowing estimate lengths).
        examples_source: the embedded training rows (`embed_pairs(...).rows`), row-aligned with `neighbors`; gives
            each neighbour's `caption`, `is_long` and `clip_index` into `example_tokens`.
        neighbors: `(len(examples_source), K)` rows of `examples_source`, nearest first, -1 padded
            (`paircap.training.neighbors`). A pair absent from `examples_source` gets no examples.
        max_examples: the most examples a sample gets (5): each gets 0..max_examples, 0 being the zero-shot prompt,
            i.e. 1..max_examples + 1 interleaved samples counting the query (paper eq. 1); 0 gives none to any sample
            (stage 1, curriculum phase 1).
        seed: with the epoch and the index, fixes the number of examples of every sample.
        zero_shot_fraction: the share of zero-shot samples, the rest drawing 1..max_examples uniformly; None (default)
            is 1 / (max_examples + 1), uniform over 0..max_examples.
        example_tokens: the clips' pooled tokens (`embed_pairs(...).tokens`, a `ClipTokenStore`), read per example.
        query_dropout: the share of the samples with >= 1 example whose query waveform is faint white noise of its
            length in an epoch, drawn from (seed, epoch, index); 0 (default) for validation sets.
        examples_schedule: the most examples a sample gets in each epoch, never decreasing, ending at max_examples
            (later epochs keep the last); the zero-shot share stays `zero_shot_fraction`. None: max_examples always.
        distractor_share: the share of a sample's neighbours swapped in an epoch for random training pairs that share
            no audio with it (`clip_groups`: a mixture's components); 0 (default) for none.
        shuffle_examples: a sample's examples in random order each epoch, not nearest first.
        clip_groups: the clips each audio id contains (`paircap.training.clip_groups`), for the distractors.
    """

    def __init__(
        self,
        pairs: Dataset,
        processor,
        examples_source: Dataset | None = None,
        neighbors: np.ndarray | None = None,
        max_examples: int = 0,
        seed: int = 0,
        zero_shot_fraction: float | None = None,
        example_tokens=None,
        query_dropout: float = 0.0,
        examples_schedule: Sequence[int] | None = None,
        distractor_share: float = 0.0,
        shuffle_examples: bool = False,
        clip_groups: ClipGroups | None = None,
    ):
        if max_examples < 0:
            raise ValueError(f"max_examples must be >= 0, got {max_examples}")
        if zero_shot_fraction is not None and not 0 <= zero_shot_fraction <= 1:
            raise ValueError(f"zero_shot_fraction must be in [0, 1], got {zero_shot_fraction}")
        if not 0 <= query_dropout <= 1:
            raise ValueError(f"query_dropout must be in [0, 1], got {query_dropout}")
        if not 0 <= distractor_share <= 1:
            raise ValueError(f"distractor_share must be in [0, 1], got {distractor_share}")
        if max_examples and (examples_source is None or neighbors is None or example_tokens is None):
            raise ValueError("max_examples > 0 needs examples_source, neighbors and example_tokens")
        missing = pairs.with_format("arrow")["audio"].is_null().to_numpy(zero_copy_only=False)
        if missing.any():
            raise ValueError(f"{int(missing.sum())} training pairs have no audio (text-only rows cannot be queries)")
        self.processor = processor
        self.max_examples = max_examples
        self.examples_schedule = None
        if examples_schedule is not None:
            self.examples_schedule = check_examples_schedule(examples_schedule, max_examples)
        self.seed = seed
        self.query_dropout = query_dropout
        self.distractor_share = distractor_share
        self.shuffle_examples = shuffle_examples
        self._clip_groups = clip_groups
        self.zero_shot_fraction = 1 / (max_examples + 1) if zero_shot_fraction is None else zero_shot_fraction
        self.pair_ids: list[str] = column(pairs, "pair_id")
        self.captions: list[str] = column(pairs, "caption")
        self.sources: list[str] = column(pairs, "source")
        self.durations: list[float | None] = column(pairs, "duration")
        self._audio = pairs.select_columns(["audio"])
        self._epoch = torch.zeros((), dtype=torch.int64).share_memory_()  # seen by DataLoader workers, persistent too
        self._counts: tuple[int, np.ndarray] | None = None
        self._dropped: tuple[int, np.ndarray] | None = None
        self._rows: tuple[int, np.ndarray] | None = None
        self._examples_source = examples_source
        self._neighbors = np.full((len(self.pair_ids), 0), -1, dtype=np.int64)
        if max_examples:
            neighbors = np.asarray(neighbors)
            if neighbors.ndim != 2 or len(neighbors) != len(examples_source):
                raise ValueError(
                    f"neighbors has shape {neighbors.shape}; expected ({len(examples_source)}, K) for examples_source"
                )
            self._source_rows = _source_rows(self.pair_ids, examples_source)
            self._neighbors = _neighbors_per_pair(self._source_rows, neighbors, max_examples)
            self._examples = examples_source.select_columns(EXAMPLE_COLUMNS).with_format("numpy")
        self._example_tokens = example_tokens

    def __len__(self) -> int:
        return len(self.pair_ids)

    @property
    def epoch(self) -> int:
        return int(self._epoch)

    def set_epoch(self, epoch: int) -> None:
        """Select the epoch whose example counts `__getitem__` and `estimated_lengths` use."""
        self._epoch.fill_(epoch)

    def max_examples_at(self, epoch: int) -> int:
        """The most examples a sample gets in `epoch`: the schedule's maximum for it, else max_examples."""
        return self.max_examples if self.examples_schedule is None else max_examples_at(self.examples_schedule, epoch)

    def example_counts(self, epoch: int | None = None) -> np.ndarray:
        """Examples per sample in `epoch` (default: the current one): 0 (zero-shot) for a `zero_shot_fraction` share,
        otherwise uniform in 1..`max_examples_at(epoch)`, capped by the neighbours a pair has; all zero when that
        maximum is 0."""
        epoch = self.epoch if epoch is None else epoch
        if self._counts is None or self._counts[0] != epoch:
            counts = np.zeros(len(self), dtype=np.int64)
            if most := self.max_examples_at(epoch):
                rng = np.random.default_rng([self.seed, epoch])
                drawn = _draw_example_counts(rng, len(self), most, self.zero_shot_fraction)
                counts = np.minimum(drawn, (self._neighbors >= 0).sum(axis=1))
            self._counts = (epoch, counts)
        return self._counts[1]

    def dropped_queries(self, epoch: int | None = None) -> np.ndarray:
        """Per sample, whether its query is silence in `epoch` (default: the current one): a `query_dropout` share
        of the samples that have examples, drawn from (seed, epoch) independently of the example counts."""
        epoch = self.epoch if epoch is None else epoch
        if self._dropped is None or self._dropped[0] != epoch:
            dropped = np.zeros(len(self), dtype=bool)
            if self.query_dropout:
                rng = np.random.default_rng([self.seed, epoch, QUERY_DROPOUT_STREAM])
                dropped = (rng.random(len(self)) < self.query_dropout) & (self.example_counts(epoch) > 0)
            self._dropped = (epoch, dropped)
        return self._dropped[1]

    def example_rows(self, epoch: int | None = None) -> np.ndarray:
        """(samples, max_examples) rows of `examples_source` whose first n are a sample's n examples in `epoch`
        (default: the current one), -1 padded: its neighbours, nearest first, unless `distractor_share` swaps some
        and `shuffle_examples` reorders them (drawn from (seed, epoch))."""
        if not (self.distractor_share or self.shuffle_examples):
            return self._neighbors
        epoch = self.epoch if epoch is None else epoch
        if self._rows is None or self._rows[0] != epoch:
            rows = mixed_example_rows(
                self._neighbors,
                self._source_rows,
                self._rows_with_audio,
                self._audio_ids,
                self._exclusions,
                self.distractor_share,
                self.shuffle_examples,
                np.random.default_rng([self.seed, epoch, DISTRACTOR_STREAM]),
            )
            self._rows = (epoch, rows)
        return self._rows[1]

    @functools.cached_property
    def _rows_with_audio(self) -> np.ndarray:
        """The rows of `examples_source` with audio: those a distractor is drawn from."""
        return np.flatnonzero(np.asarray(column(self._examples_source, "has_audio"), dtype=bool))

    @functools.cached_property
    def _audio_ids(self) -> list[str]:
        """Per row of `examples_source`, its audio id ("" without audio)."""
        return [audio_id or "" for audio_id in column(self._examples_source, "audio_id")]

    @functools.cached_property
    def _exclusions(self) -> list[frozenset[str]]:
        """Per row of `examples_source`, the audio ids that share its audio (never its distractors)."""
        return shared_audio_exclusions(self._audio_ids, self._clip_groups)

    def examples(self, index: int, epoch: int | None = None) -> list[dict[str, Any]]:
        """The interleaved examples of sample `index`: `{"audio_tokens" (n, D) float16, "caption", "is_long"}`."""
        count = self.example_counts(epoch)[index]
        return [self._example(int(row)) for row in self.example_rows(epoch)[index, :count]] if count else []

    def _example(self, row: int) -> dict[str, Any]:
        stored = self._examples[row]
        clip = int(stored["clip_index"])
        return {
            "audio_tokens": (
                self._example_tokens.get([clip])[0].numpy()
                if clip >= 0
                else np.zeros((0, self._example_tokens.token_dim), np.float16)
            ),
            "caption": str(stored["caption"]),
            "is_long": bool(stored["is_long"]),
        }

    def __getitem__(self, index: int) -> dict[str, Any] | None:
        """The sample, or None (with a warning naming the file) when its audio cannot be loaded."""
        index = int(index)
        waveform = self.processor.load_audio([self._audio[index]["audio"]])[0]
        if not isinstance(waveform, np.ndarray):  # the processor's AudioInputError, which names the file
            warnings.warn(f"skipping training pair {self.pair_ids[index]!r}: {waveform}", stacklevel=2)
            return None
        if self.query_dropout and self.dropped_queries()[index]:
            rng = np.random.default_rng([self.seed, self.epoch, index, QUERY_DROPOUT_STREAM])
            waveform = (QUERY_NOISE_RMS * rng.standard_normal(len(waveform))).astype(waveform.dtype)
        return {
            "waveform": waveform,
            "caption": self.captions[index],
            "pair_id": self.pair_ids[index],
            "examples": self.examples(index),
        }

    @functools.cached_property
    def _base_lengths(self) -> np.ndarray:
        """Estimated prompt tokens without examples: system, one turn, query audio tokens, caption and its EOS."""
        system, turn = _prompt_overheads(self.processor)
        audio = _audio_token_counts(self.processor, self.durations)
        return system + turn + audio + _token_counts(self.processor.tokenizer, self.captions) + 1

    @functools.cached_property
    def _example_lengths(self) -> np.ndarray:
        """Per row of `examples_source`: the estimated tokens it adds as an example."""
        source = self._examples_source
        _, turn = _prompt_overheads(self.processor)
        has_audio = np.asarray(column(source, "has_audio"), dtype=bool)
        audio = np.where(has_audio, _audio_token_counts(self.processor, column(source, "duration")), 0)
        return turn + audio + _token_counts(self.processor.tokenizer, column(source, "caption")) + 1

    def estimated_lengths(self, epoch: int | None = None) -> list[int]:
        """Each sample's estimated prompt length in tokens in `epoch` (default: the current one), from durations,
        caption token counts and the epoch's example counts (zero-shot samples: the query turn alone); no audio is
        decoded. Pass the method itself to `LengthGroupedBatchSampler` so batches follow each epoch's example counts."""
        lengths = self._base_lengths
        counts = self.example_counts(epoch)
        if counts.any():
            rows = self.example_rows(epoch)
            cumulative = np.cumsum(np.where(rows >= 0, self._example_lengths[np.maximum(rows, 0)], 0), axis=1)
            added = np.take_along_axis(cumulative, np.maximum(counts - 1, 0)[:, None], axis=1)
            lengths = lengths + np.where(counts > 0, added[:, 0], 0)
        return lengths.tolist()


class PairCapCollator:
    """Turns samples into a training batch with the processor (features, prompts, labels over every caption); runs in
    DataLoader workers. Failed samples (None) are dropped; a batch where all failed gives None."""

    def __init__(self, processor):
        self.processor = processor

    def __call__(self, items: Sequence[dict[str, Any] | None]) -> BatchFeature | None:
        items = [item for item in items if item is not None]
        if not items:
            return None
        examples = [item["examples"] for item in items]
        return self.processor(
            audio=[item["waveform"] for item in items],
            examples=examples if any(examples) else None,
            captions=[item["caption"] for item in items],
            sampling_rate=self.processor.sampling_rate,
            padding_side="right",
            return_tensors="pt",
        )


def balanced_source_weights(sources: Sequence[str]) -> np.ndarray:
    """Per-sample weights giving every source the same total (paper §4.1: AudioCaps and Clotho in equal amounts)."""
    _, inverse, counts = np.unique(np.asarray(sources), return_inverse=True, return_counts=True)
    return 1.0 / (len(counts) * counts[inverse])


class LengthGroupedBatchSampler(torch.utils.data.Sampler[list[int]]):
    """
    Batches of similar prompt lengths, deterministic per (seed, epoch) so a resumed run sees the same batches.

    Each epoch: a permutation of the samples (or, with `weights`, `len(lengths)` draws with replacement proportional to
    the weights), cut into mega-batches of `mega_batch_mult * batch_size`, each sorted by length (longest first) and
    cut into batches; then the batch order is shuffled. `shuffle=False` keeps the data order (no permutation, no batch
    shuffle). `lengths` is a sequence, or a callable `epoch -> lengths` such as `CaptionTrainingSet.estimated_lengths`
    (lengths that change with the epoch's example counts).
    """

    def __init__(
        self,
        lengths: Sequence[int] | Callable[[int], Sequence[int]],
        batch_size: int,
        seed: int = 0,
        shuffle: bool = True,
        drop_last: bool = False,
        mega_batch_mult: int = 50,
        weights: Sequence[float] | None = None,
    ):
        if batch_size < 1 or mega_batch_mult < 1:
            raise ValueError(f"batch_size and mega_batch_mult must be >= 1, got {batch_size} and {mega_batch_mult}")
        self.lengths = lengths
        self.batch_size = batch_size
        self.seed = seed
        self.shuffle = shuffle
        self.drop_last = drop_last
        self.mega_batch_mult = mega_batch_mult
        self.epoch = 0
        self.num_samples = len(self._lengths(0))
        self.probabilities = None if weights is None else self._probabilities(weights)

    def _probabilities(self, weights: Sequence[float]) -> np.ndarray:
        weights = np.asarray(weights, dtype=np.float64)
        if weights.shape != (self.num_samples,) or (weights < 0).any() or not weights.sum() > 0:
            raise ValueError(f"weights must be {self.num_samples} non-negative numbers with a positive sum")
        return weights / weights.sum()

    def _lengths(self, epoch: int) -> np.ndarray:
        lengths = self.lengths(epoch) if callable(self.lengths) else self.lengths
        return np.asarray(lengths, dtype=np.int64)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def _epoch_indices(self, rng: np.random.Generator) -> np.ndarray:
        if self.probabilities is not None:
            return rng.choice(self.num_samples, size=self.num_samples, replace=True, p=self.probabilities)
        return rng.permutation(self.num_samples) if self.shuffle else np.arange(self.num_samples)

    def batches(self, epoch: int) -> list[list[int]]:
        """The batches of `epoch`, in order."""
        rng = np.random.default_rng([self.seed, epoch])
        indices, lengths = self._epoch_indices(rng), self._lengths(epoch)
        if len(lengths) != self.num_samples:
            raise ValueError(f"lengths changed from {self.num_samples} to {len(lengths)} samples")
        mega = self.mega_batch_mult * self.batch_size
        batches = []
        for start in range(0, len(indices), mega):
            group = indices[start : start + mega]
            group = group[np.argsort(-lengths[group], kind="stable")]
            batches.extend(group[i : i + self.batch_size].tolist() for i in range(0, len(group), self.batch_size))
        if self.drop_last and batches and len(batches[-1]) < self.batch_size:
            batches.pop()
        if self.shuffle:
            batches = [batches[i] for i in rng.permutation(len(batches))]
        return batches

    def __iter__(self):
        yield from self.batches(self.epoch)

    def __len__(self) -> int:
        rounding = math.floor if self.drop_last else math.ceil
        return rounding(self.num_samples / self.batch_size)
