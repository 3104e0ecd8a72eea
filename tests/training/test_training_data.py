"""paircap.training.data and paircap.training.neighbors: retrieved training neighbours, training samples with
interleaved examples, the collator in DataLoader workers, and the length-grouped, source-balanced batch sampler."""

import csv
import json
import math
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest
import soundfile as sf
import torch
from accelerate import Accelerator
from datasets import Dataset

from datasets_scripts.embed import EmbeddedPairs, embed_pairs
from datasets_scripts.readers import FEATURES
from modeling_paircap.clip_ids_paircap import normalise_clip_id
from modeling_paircap.kb_format_paircap import embedding_matrix
from paircap.training.clip_groups import clip_groups_digest, load_clip_groups
from paircap.training.config import TrainConfig
from paircap.training.data import (
    CaptionTrainingSet,
    LengthGroupedBatchSampler,
    PairCapCollator,
    balanced_source_weights,
)
from paircap.training.neighbors import (
    compute_training_neighbors,
    load_neighbors,
    neighbor_settings,
    save_neighbors,
    stored_settings,
)
from paircap.training.stage_setups import retrieved_examples

NUM_NEIGHBORS = 6
MAX_EXAMPLES = 3
TEXT_ONLY = ["A dog barks in the distance.", "Rain falls on a metal roof."]


def pair(pair_id: str, audio_id: str, path, caption: str, source: str, duration) -> dict:
    """A training row: the `FEATURES` columns, in their order."""
    audio = None if path is None else {"path": str(path), "bytes": None}
    return dict(zip(FEATURES, (pair_id, audio_id, audio, caption, source, "train", duration), strict=True))


def as_dataset(rows: list[dict]) -> Dataset:
    return Dataset(pa.Table.from_pylist(rows, schema=FEATURES.arrow_schema))


@pytest.fixture(scope="module")
def training_pairs(clotho_clips, shared_data) -> Dataset:
    """35 Clotho pairs (7 clips x 5 captions) and 10 ESC-50 pairs ("the sound of a {category}"), all with audio."""
    rows = [
        pair(f"clotho/{path.stem}/{i}", path.stem, path, caption, "clotho", sf.info(path).duration)
        for path, captions in clotho_clips
        for i, caption in enumerate(captions)
    ]
    with open(shared_data / "esc50_cc" / "manifest.csv", newline="") as handle:
        entries = list(csv.DictReader(handle))[:10]
    for entry in entries:
        stem = Path(entry["filename"]).stem
        path = shared_data / "esc50_cc" / f"{stem}.flac"
        rows.append(pair(f"esc50/{stem}/0", stem, path, f"the sound of a {entry['category']}", "esc50", 5.0))
    return as_dataset(rows)


@pytest.fixture(scope="module")
def embedded(training_pairs, tiny_release, tmp_path_factory) -> EmbeddedPairs:
    """The embedded training set: rows (text-only rows first, then the training pairs), clip table, clip tokens."""
    _, model, processor = tiny_release
    text = [pair(f"text/{i}", "", None, caption, "text", None) for i, caption in enumerate(TEXT_ONLY)]
    rows = text + training_pairs.to_list()
    return embed_pairs(as_dataset(rows), model, processor, tmp_path_factory.mktemp("embedded"), num_workers=0)


@pytest.fixture(scope="module")
def embedded_rows(embedded) -> Dataset:
    return embedded.rows


@pytest.fixture(scope="module")
def neighbors(embedded_rows) -> np.ndarray:
    return compute_training_neighbors(embedded_rows, NUM_NEIGHBORS)


def training_set(pairs, processor, embedded: EmbeddedPairs, neighbors, max_examples, seed=0, zero_shot_fraction=None):
    """A CaptionTrainingSet over the embedded rows, reading example tokens from their clip store (as the loop does)."""
    return CaptionTrainingSet(
        pairs,
        processor,
        embedded.rows,
        neighbors,
        max_examples,
        seed,
        zero_shot_fraction,
        example_tokens=embedded.tokens,
    )


@pytest.fixture(scope="module")
def train_set(training_pairs, tiny_release, embedded, neighbors) -> CaptionTrainingSet:
    return training_set(training_pairs, tiny_release[2], embedded, neighbors, MAX_EXAMPLES, seed=3)


def brute_force_neighbors(embedded: Dataset, k: int, distinct_clips: bool = True) -> np.ndarray:
    """Audio-to-audio ranking in numpy: score descending, then row ascending; no text-only rows, no same clip (by
    normalised id: takes of one ESC-50 recording are one clip), and (`distinct_clips`) only the best-ranked row of
    each other clip."""
    audio = embedding_matrix(embedded, "audio_embedding")
    has_audio = np.array(embedded["has_audio"])
    audio_ids = np.array(embedded["audio_id"])
    clip_ids = np.array([normalise_clip_id(audio_id) for audio_id in audio_ids])
    expected = np.full((len(embedded), k), -1, dtype=np.int64)
    for row in np.flatnonzero(has_audio):
        candidates = np.flatnonzero(has_audio & (clip_ids != clip_ids[row]))
        scores = audio[candidates] @ audio[row]
        ranked = candidates[np.lexsort((candidates, -scores))]
        if distinct_clips:
            _, first = np.unique(audio_ids[ranked], return_index=True)
            ranked = ranked[np.sort(first)]
        ranked = ranked[:k]
        expected[row, : len(ranked)] = ranked
    return expected


# ---- neighbours -----------------------------------------------------------------------------------------------------


def test_neighbors_exclude_self_same_audio_and_text_only(embedded_rows, neighbors):
    embedded = embedded_rows
    has_audio = np.array(embedded["has_audio"])
    audio_ids = np.array(embedded["audio_id"])
    assert neighbors.shape == (len(embedded), NUM_NEIGHBORS) and neighbors.dtype == np.int64
    assert (neighbors[~has_audio] == -1).all()  # text-only rows are not queried
    queried = neighbors[has_audio]
    assert (queried >= 0).all()  # 16 other clips are plenty for 6 neighbours
    assert has_audio[queried].all()  # nor returned
    rows = np.flatnonzero(has_audio)[:, None]
    assert (queried != rows).all()
    assert (audio_ids[queried] != audio_ids[rows]).all()


def assert_same_ranking(embedded: Dataset, actual: np.ndarray, expected: np.ndarray) -> None:
    """`actual` ranks the same clips as the brute force `expected`, in the same order, at the same scores. Which row
    stands for a clip may differ: a clip's captions share one audio embedding, so they tie in audio-to-audio search
    and a BLAS product may score one of them 1 ulp higher than its equal copies."""
    audio = embedding_matrix(embedded, "audio_embedding")
    audio_ids = np.array(embedded["audio_id"])
    np.testing.assert_array_equal(actual < 0, expected < 0)
    for row in np.flatnonzero((expected >= 0).any(axis=1)):
        got, want = actual[row][actual[row] >= 0], expected[row][expected[row] >= 0]
        assert audio_ids[got].tolist() == audio_ids[want].tolist(), row
        np.testing.assert_allclose(audio[got] @ audio[row], audio[want] @ audio[row], rtol=0, atol=1e-6)


def test_neighbors_equal_brute_force_ranking(embedded_rows, neighbors):
    embedded = embedded_rows
    assert_same_ranking(embedded, neighbors, brute_force_neighbors(embedded, NUM_NEIGHBORS))
    # the exact torch search in small batches, and more neighbours than exist (every pair has 16 other clips: the
    # other 6 Clotho clips, with 5 captions each, and the 10 ESC-50 clips; 40 or 34 other-clip pairs; but the two
    # takes of ESC-50 recording 144468 are one clip, so they have 15)
    many = compute_training_neighbors(embedded, 50, device="cpu", batch_size=7)
    assert_same_ranking(embedded, many, brute_force_neighbors(embedded, 50))
    has_audio = np.array(embedded["has_audio"])
    takes = np.isin(embedded["audio_id"], ["4-144468-A-27", "4-144468-B-27"])
    assert ((many[has_audio & ~takes] >= 0).sum(axis=1) == 16).all()
    assert takes.sum() == 2 and ((many[takes] >= 0).sum(axis=1) == 15).all()


def test_phase2_neighbours_are_distinct_clips(training_pairs, tiny_release, embedded, embedded_rows, neighbors):
    """Several captions per clip in the training set (5 per Clotho clip), yet no two neighbours of a pair, and so no
    two examples of a sample, share a clip: as at inference, which retrieves one pair per clip."""
    audio_ids = np.array(embedded_rows["audio_id"])
    has_audio = np.array(embedded_rows["has_audio"])
    assert max(np.unique(audio_ids[has_audio], return_counts=True)[1]) == 5
    # the constraint bites: ranking all pairs would give some pair neighbours of one clip (its 5 equal embeddings)
    all_pairs = brute_force_neighbors(embedded_rows, NUM_NEIGHBORS, distinct_clips=False)
    assert any(len(set(audio_ids[row])) < NUM_NEIGHBORS for row in all_pairs[has_audio])
    for table in (neighbors, compute_training_neighbors(embedded_rows, 50, device="cpu")):
        for own, row in zip(audio_ids[has_audio], table[has_audio], strict=True):
            clips = audio_ids[row[row >= 0]].tolist()
            assert len(set(clips)) == len(clips) and own not in clips
    train_set = training_set(
        training_pairs, tiny_release[2], embedded, neighbors, MAX_EXAMPLES, seed=3, zero_shot_fraction=0
    )
    clip_index = np.array(embedded_rows["clip_index"])
    for epoch in range(3):
        counts = train_set.example_counts(epoch)
        for index in range(len(train_set)):
            examples = train_set.examples(index, epoch)
            assert len(examples) == counts[index]
            rows = neighbors[np.flatnonzero(np.array(embedded_rows["pair_id"]) == train_set.pair_ids[index])[0]]
            clips = clip_index[rows[: counts[index]]].tolist()
            assert len(set(clips)) == len(clips) == len({audio_ids[r] for r in rows[: counts[index]]})


def test_neighbors_save_load_round_trip_and_mismatch(embedded_rows, neighbors, tmp_path):
    embedded = embedded_rows
    settings = neighbor_settings(NUM_NEIGHBORS)
    path = save_neighbors(tmp_path / "neighbors.npz", embedded, neighbors, settings)
    np.testing.assert_array_equal(load_neighbors(path, embedded, settings), neighbors)
    assert stored_settings(path) == settings and stored_settings(tmp_path / "none.npz") is None
    for other in (embedded.select(range(len(embedded) - 1, -1, -1)), embedded.select(range(10))):
        with pytest.raises(ValueError, match=r"neighbors\.npz: .*another training set"):
            load_neighbors(path, other, settings)
    for changed in (
        neighbor_settings(NUM_NEIGHBORS + 1),
        neighbor_settings(NUM_NEIGHBORS, "pair2pair"),
        neighbor_settings(NUM_NEIGHBORS, clip_groups={"a": ["b"]}),
    ):
        with pytest.raises(ValueError, match=r"neighbors\.npz: .*other settings"):
            load_neighbors(path, embedded, changed)


def test_neighbour_cache_is_recomputed_when_a_setting_changes(training_pairs, tiny_release, tmp_path):
    """`retrieved_examples` reuses `retrieval/neighbors.npz` for the same settings only: a changed mode or clip
    groups file recomputes the table instead of training on stale neighbours."""
    _, model, processor = tiny_release
    accelerator = Accelerator(cpu=True)
    path = tmp_path / "retrieval" / "neighbors.npz"

    def neighbours(**settings) -> np.ndarray:
        cfg = TrainConfig(
            stage="raft",
            model_name_or_path="unused",
            output_dir=str(tmp_path),
            train_pairs=["unused"],
            max_examples=2,
            num_neighbors=4,
            num_workers=0,
            **settings,
        )
        embedded, table = retrieved_examples(cfg, training_pairs, model, processor, accelerator)
        return embedded.rows, table

    rows, audio = neighbours()
    written = path.stat().st_mtime_ns
    np.testing.assert_array_equal(neighbours()[1], audio)
    assert path.stat().st_mtime_ns == written  # reused
    text = neighbours(neighbor_mode="pair2pair", neighbor_weight=0.0)[1]
    assert stored_settings(path) == neighbor_settings(4, "pair2pair", 0.0) and not np.array_equal(text, audio)
    groups = tmp_path / "groups.json"
    audio_ids = rows["audio_id"]
    query, neighbour = audio_ids[0], audio_ids[text[0, 0]]  # the query's audio holds its first neighbour's clip
    groups.write_text(json.dumps({query: [neighbour]}))
    grouped = neighbours(neighbor_mode="pair2pair", neighbor_weight=0.0, clip_groups=str(groups))[1]
    assert neighbour not in [audio_ids[row] for row in grouped[0] if row >= 0]
    assert stored_settings(path)["clip_groups"] == clip_groups_digest(load_clip_groups(groups))


def retrieval_set(pairs, processor, embedded: EmbeddedPairs, neighbors, seed: int, **options) -> CaptionTrainingSet:
    """A training set with up to MAX_EXAMPLES retrieved pairs per sample and `options` (query dropout, schedule)."""
    return CaptionTrainingSet(
        pairs, processor, embedded.rows, neighbors, MAX_EXAMPLES, seed, example_tokens=embedded.tokens, **options
    )


def test_query_dropout_drops_a_share_of_the_queries_with_examples(training_pairs, tiny_release, embedded, neighbors):
    processor = tiny_release[2]

    def make(dropout: float, seed: int = 3) -> CaptionTrainingSet:
        return retrieval_set(training_pairs, processor, embedded, neighbors, seed, query_dropout=dropout)

    half, again, plain = make(0.5), make(0.5), make(0.0)
    epochs = range(20)
    for epoch in epochs:  # drawn from (seed, epoch, index)
        np.testing.assert_array_equal(half.dropped_queries(epoch), again.dropped_queries(epoch))
        np.testing.assert_array_equal(half.example_counts(epoch), plain.example_counts(epoch))  # counts unchanged
        assert not (half.dropped_queries(epoch) & (half.example_counts(epoch) == 0)).any()  # only samples with examples
        assert not plain.dropped_queries(epoch).any()
    with_examples = sum(int((half.example_counts(epoch) > 0).sum()) for epoch in epochs)
    assert 0.4 < sum(int(half.dropped_queries(epoch).sum()) for epoch in epochs) / with_examples < 0.6
    assert not np.array_equal(half.dropped_queries(0), half.dropped_queries(1))
    assert not np.array_equal(half.dropped_queries(0), make(0.5, seed=4).dropped_queries(0))
    always = make(1.0)
    counts = always.example_counts(0)
    np.testing.assert_array_equal(always.dropped_queries(0), counts > 0)
    for index in (int(np.argmax(counts > 0)), int(np.argmax(counts == 0))):
        item, reference = always[index], plain[index]
        assert item["waveform"].shape == reference["waveform"].shape and reference["waveform"].any()
        dropped = counts[index] > 0  # faint noise of the query's length instead of its audio
        assert (np.abs(item["waveform"]).max() < 0.01) == dropped
        assert np.array_equal(item["waveform"], reference["waveform"]) == (not dropped)
        assert len(item["examples"]) == counts[index] and item["caption"] == reference["caption"]
    for dropout in (-0.1, 1.5):
        with pytest.raises(ValueError, match=r"query_dropout must be in \[0, 1\]"):
            make(dropout)


def test_distractors_swap_a_share_of_the_neighbours_for_pairs_that_share_no_audio(
    training_pairs, tiny_release, embedded, neighbors
):
    processor = tiny_release[2]
    plain = retrieval_set(training_pairs, processor, embedded, neighbors, 3)
    mixed, again = (
        retrieval_set(training_pairs, processor, embedded, neighbors, 3, distractor_share=0.5) for _ in range(2)
    )
    source_audio = embedded.rows["audio_id"]
    with_audio = set(np.flatnonzero(embedded.rows["has_audio"]).tolist())
    nearest, swapped = plain.example_rows(0), []
    for epoch in range(10):  # drawn from (seed, epoch): a resumed run sees the same pairs
        rows = mixed.example_rows(epoch)
        np.testing.assert_array_equal(rows, again.example_rows(epoch))
        np.testing.assert_array_equal(mixed.example_counts(epoch), plain.example_counts(epoch))
        np.testing.assert_array_equal(rows >= 0, nearest >= 0)  # the same slots filled, in rank order
        for sample, slot in zip(*np.nonzero(rows != nearest), strict=True):
            own = normalise_clip_id(training_pairs[int(sample)]["audio_id"])
            assert rows[sample, slot] in with_audio  # never a text-only row
            assert normalise_clip_id(source_audio[rows[sample, slot]]) != own  # never another caption of its clip
        swapped.append((rows != nearest).sum() / (nearest >= 0).sum())
    assert 0.35 < np.mean(swapped) < 0.55  # a drawn distractor is now and then the neighbour it replaces
    assert not np.array_equal(mixed.example_rows(0), mixed.example_rows(1))
    counts = mixed.example_counts(2)
    index = int(np.argmax(counts))
    captions = [example["caption"] for example in mixed.examples(index, epoch=2)]
    assert captions == [embedded.rows[int(row)]["caption"] for row in mixed.example_rows(2)[index, : counts[index]]]
    mixed.set_epoch(2)  # the sampler's lengths follow the swapped pairs
    actual = PairCapCollator(processor)([mixed[index]])["input_ids"].shape[1]
    assert abs(mixed.estimated_lengths(2)[index] - actual) <= 0.1 * actual
    for share in (-0.1, 1.5):
        with pytest.raises(ValueError, match=r"distractor_share must be in \[0, 1\]"):
            retrieval_set(training_pairs, processor, embedded, neighbors, 3, distractor_share=share)


def test_shuffled_examples_are_each_samples_neighbours_in_a_random_order(
    training_pairs, tiny_release, embedded, neighbors
):
    processor = tiny_release[2]
    nearest = retrieval_set(training_pairs, processor, embedded, neighbors, 3).example_rows(0)
    shuffled = retrieval_set(training_pairs, processor, embedded, neighbors, 3, shuffle_examples=True)
    orders = [shuffled.example_rows(epoch) for epoch in range(5)]
    for rows in orders:
        np.testing.assert_array_equal(np.sort(rows, axis=1), np.sort(nearest, axis=1))  # the same pairs
        np.testing.assert_array_equal(rows >= 0, nearest >= 0)  # padding stays last
    assert any((rows != nearest).any() for rows in orders)
    assert not all(np.array_equal(orders[0], rows) for rows in orders[1:])


# ---- training samples -----------------------------------------------------------------------------------------------


def test_example_counts_are_deterministic_and_vary_by_epoch(training_pairs, tiny_release, embedded, neighbors):
    processor = tiny_release[2]
    first, again, other_seed = (
        training_set(training_pairs, processor, embedded, neighbors, MAX_EXAMPLES, seed=seed) for seed in (3, 3, 4)
    )
    counts = [first.example_counts(epoch) for epoch in range(3)]
    for epoch, epoch_counts in enumerate(counts):
        assert ((epoch_counts >= 0) & (epoch_counts <= MAX_EXAMPLES)).all()
        np.testing.assert_array_equal(again.example_counts(epoch), epoch_counts)
    assert set(np.concatenate(counts).tolist()) == set(range(MAX_EXAMPLES + 1))  # 0: zero-shot prompts
    assert (counts[0] != counts[1]).any() and (counts[1] != counts[2]).any()
    assert (other_seed.example_counts(0) != counts[0]).any()
    assert all(len(first.examples(i, 1)) == counts[1][i] for i in range(len(first)))
    assert CaptionTrainingSet(training_pairs, processor).example_counts(0).sum() == 0


def pooled_counts(train_set: CaptionTrainingSet, epochs: int = 400) -> np.ndarray:
    """Example counts over `epochs` epochs (400 x 45 = 18,000 draws), independent across epochs (a generator each)."""
    return np.concatenate([train_set.example_counts(epoch) for epoch in range(epochs)])


def assert_share(observed: np.ndarray, expected: float) -> None:
    """The share of True in `observed` within 5 standard errors of `expected` (a check misses for 1 seed in 1.7 M)."""
    tolerance = 5 * math.sqrt(expected * (1 - expected) / len(observed))
    assert abs(observed.mean() - expected) <= tolerance, (observed.mean(), expected, tolerance)


@pytest.mark.parametrize(
    ("max_examples", "fraction"), [(MAX_EXAMPLES, None), (5, None), (MAX_EXAMPLES, 0.25), (5, 0.6)]
)
def test_zero_shot_share_matches_the_fraction(
    training_pairs, tiny_release, embedded, neighbors, max_examples, fraction
):
    processor = tiny_release[2]
    train_set = training_set(training_pairs, processor, embedded, neighbors, max_examples, 3, fraction)
    counts = pooled_counts(train_set)
    expected = 1 / (max_examples + 1) if fraction is None else fraction  # default: uniform over 1..K+1 samples
    assert train_set.zero_shot_fraction == pytest.approx(expected)
    assert_share(counts == 0, expected)
    for count in range(1, max_examples + 1):  # the rest: uniform over 1..K retrieved pairs
        assert_share(counts[counts > 0] == count, 1 / max_examples)
    if fraction is None:  # the default is exactly the fraction 1 / (K + 1)
        explicit = training_set(training_pairs, processor, embedded, neighbors, max_examples, 3, expected)
        np.testing.assert_array_equal(pooled_counts(explicit, 5), counts[: 5 * len(train_set)])


def test_zero_shot_fraction_extremes_and_neighbour_cap(training_pairs, tiny_release, embedded, neighbors):
    processor = tiny_release[2]
    never = training_set(training_pairs, processor, embedded, neighbors, MAX_EXAMPLES, 3, zero_shot_fraction=0)
    always = training_set(training_pairs, processor, embedded, neighbors, MAX_EXAMPLES, 3, zero_shot_fraction=1)
    assert set(pooled_counts(never, 20).tolist()) == set(range(1, MAX_EXAMPLES + 1))
    assert not pooled_counts(always, 20).any()
    few = neighbors.copy()
    few[:, 1:] = -1  # one stored neighbour per pair; none for the first 10 training pairs (rows 2..11)
    few[2:12] = -1
    capped = pooled_counts(training_set(training_pairs, processor, embedded, few, MAX_EXAMPLES, 3), 40)
    counts = pooled_counts(training_set(training_pairs, processor, embedded, neighbors, MAX_EXAMPLES, 3), 40)
    has_none = np.tile(np.arange(len(training_pairs)) < 10, 40)
    np.testing.assert_array_equal(capped, np.where(has_none, 0, np.minimum(counts, 1)))


def test_item_examples_are_the_stored_neighbours(train_set, embedded, neighbors):
    rows = embedded.rows
    row_of = {pair_id: row for row, pair_id in enumerate(rows["pair_id"])}
    train_set.set_epoch(2)
    counts = train_set.example_counts(2)
    try:
        for count in range(MAX_EXAMPLES + 1):  # a sample of every prompt size, the zero-shot one included
            index = int(np.flatnonzero(counts == count)[0])
            item = train_set[index]
            assert item["pair_id"] == train_set.pair_ids[index] and item["caption"] == train_set.captions[index]
            assert item["waveform"].dtype == np.float32 and item["waveform"].ndim == 1
            expected_rows = neighbors[row_of[item["pair_id"]], :count]
            assert len(item["examples"]) == len(expected_rows) == count
            for example, row in zip(item["examples"], expected_rows, strict=True):
                stored = rows[int(row)]
                assert stored["clip_index"] >= 0  # neighbours have audio: their tokens come from the clip store
                tokens = embedded.tokens.get([stored["clip_index"]])[0].numpy()
                assert example["audio_tokens"].dtype == np.float16 and len(example["audio_tokens"]) > 0
                np.testing.assert_array_equal(example["audio_tokens"], tokens)
                assert example["caption"] == stored["caption"] and example["is_long"] == stored["is_long"]
    finally:
        train_set.set_epoch(0)


def test_estimated_lengths_track_prompt_lengths(train_set):
    processor = train_set.processor
    collate = PairCapCollator(processor)
    for epoch in (0, 1):
        train_set.set_epoch(epoch)
        estimates = train_set.estimated_lengths()
        counts = train_set.example_counts()
        for index in (0, 36, int(np.argmin(counts)), int(np.argmax(counts))):  # a zero-shot and a K-example prompt
            actual = collate([train_set[index]])["input_ids"].shape[1]
            assert abs(estimates[index] - actual) <= 0.1 * actual, (epoch, index, estimates[index], actual)
    train_set.set_epoch(0)
    assert train_set.estimated_lengths(1) == estimates and train_set.estimated_lengths() != estimates


SCHEDULE = (0, 1, 1, 2, MAX_EXAMPLES)  # epoch 0 zero-shot only, then up to 1, 1, 2 and 3 retrieved pairs


def scheduled_set(
    pairs, processor, embedded: EmbeddedPairs, neighbors, schedule=SCHEDULE, seed=3
) -> CaptionTrainingSet:
    return retrieval_set(pairs, processor, embedded, neighbors, seed, examples_schedule=schedule)


def test_schedule_caps_the_counts_and_reaches_each_epochs_maximum(training_pairs, tiny_release, embedded, neighbors):
    processor = tiny_release[2]
    scheduled = scheduled_set(training_pairs, processor, embedded, neighbors)
    resumed = scheduled_set(training_pairs, processor, embedded, neighbors)  # a fresh process, as after --resume
    plain = training_set(training_pairs, processor, embedded, neighbors, MAX_EXAMPLES, seed=3)
    for epoch in range(7):
        most = SCHEDULE[min(epoch, len(SCHEDULE) - 1)]
        counts = scheduled.example_counts(epoch)
        assert scheduled.max_examples_at(epoch) == most and counts.max() == most and counts.min() >= 0, epoch
        resumed.set_epoch(epoch)
        np.testing.assert_array_equal(resumed.example_counts(), counts)  # determined by (seed, epoch) alone
        assert all(len(scheduled.examples(i, epoch)) == counts[i] for i in range(len(scheduled)))
        if most:  # the zero-shot samples are the unscheduled set's: the share is as before
            np.testing.assert_array_equal(counts == 0, plain.example_counts(epoch) == 0)
        if most == MAX_EXAMPLES:  # at the full maximum the draws are the unscheduled ones
            np.testing.assert_array_equal(counts, plain.example_counts(epoch))
    assert (scheduled_set(training_pairs, processor, embedded, neighbors, seed=4).example_counts(3) != counts).any()


def test_estimated_lengths_follow_the_schedule(training_pairs, tiny_release, embedded, neighbors):
    processor = tiny_release[2]
    scheduled = scheduled_set(training_pairs, processor, embedded, neighbors)
    plain = training_set(training_pairs, processor, embedded, neighbors, MAX_EXAMPLES, seed=3)
    no_examples = CaptionTrainingSet(training_pairs, processor)
    assert scheduled.estimated_lengths(0) == no_examples.estimated_lengths(0)  # epoch 0: zero-shot prompts only
    assert scheduled.estimated_lengths(4) == plain.estimated_lengths(4)
    one, full = np.array(scheduled.estimated_lengths(1)), np.array(plain.estimated_lengths(1))
    assert (one <= full).all() and (one < full).any()
    sampler = LengthGroupedBatchSampler(scheduled.estimated_lengths, batch_size=4, seed=1, shuffle=False)
    order = np.concatenate(sampler.batches(1))  # one mega-batch, unshuffled: longest first by the epoch's lengths
    assert (np.diff(one[order]) <= 0).all() and (np.diff(full[order]) > 0).any()
    collate = PairCapCollator(processor)
    counts = scheduled.example_counts(1)
    scheduled.set_epoch(1)
    for index in (int(np.argmin(counts)), int(np.argmax(counts))):  # a zero-shot and a one-example prompt
        actual = collate([scheduled[index]])["input_ids"].shape[1]
        assert abs(one[index] - actual) <= 0.1 * actual, (index, one[index], actual)
    with pytest.raises(ValueError, match="must end at max_examples=3"):
        scheduled_set(training_pairs, processor, embedded, neighbors, schedule=[1, 2])


def test_training_set_rejects_bad_arguments(training_pairs, tiny_release, embedded, neighbors):
    processor = tiny_release[2]
    needs = "needs examples_source, neighbors and example_tokens"
    with pytest.raises(ValueError, match=needs):
        CaptionTrainingSet(training_pairs, processor, max_examples=2)
    with pytest.raises(ValueError, match=needs):  # rows and neighbours, but no clip tokens to fill the examples
        CaptionTrainingSet(training_pairs, processor, embedded.rows, neighbors, max_examples=2)
    with pytest.raises(ValueError, match="only 6 neighbours are stored"):
        training_set(training_pairs, processor, embedded, neighbors, max_examples=7)
    for fraction in (-0.1, 1.5):
        with pytest.raises(ValueError, match=r"zero_shot_fraction must be in \[0, 1\]"):
            training_set(training_pairs, processor, embedded, neighbors, 2, zero_shot_fraction=fraction)
    text_only = as_dataset([pair("text/0", "", None, "A dog barks.", "text", None)])
    with pytest.raises(ValueError, match="1 training pairs have no audio"):
        CaptionTrainingSet(text_only, processor)


# ---- batches --------------------------------------------------------------------------------------------------------


def decoded_label_text(processor, labels: torch.Tensor) -> str:
    return processor.tokenizer.decode(labels[labels >= 0]).replace(" ", "")


def expected_label_text(processor, captions: list[str]) -> str:
    eos, clean_caption = processor.tokenizer.eos_token, processor.prompt_format.clean_caption
    return "".join(clean_caption(caption).replace(" ", "") + eos for caption in captions)


def test_dataloader_batches_feed_the_model(train_set, tiny_release):
    _, model, processor = tiny_release
    sampler = LengthGroupedBatchSampler(train_set.estimated_lengths, batch_size=4, seed=1)
    loader = torch.utils.data.DataLoader(
        train_set, batch_sampler=sampler, collate_fn=PairCapCollator(processor), num_workers=2, persistent_workers=True
    )
    for epoch in (0, 1):  # the persistent workers follow set_epoch through shared memory
        train_set.set_epoch(epoch)
        sampler.set_epoch(epoch)
        batch_indices = sampler.batches(epoch)[0]
        batch = next(iter(loader))
        for row, index in enumerate(batch_indices):
            captions = [example["caption"] for example in train_set.examples(index, epoch)]
            expected = expected_label_text(processor, [*captions, train_set.captions[index]])
            assert decoded_label_text(processor, batch["labels"][row]) == expected
    assert batch["input_ids"].shape[0] == 4 and batch["audio_tokens_mask"].any()
    with torch.no_grad():
        loss = model(**batch).loss
    assert torch.isfinite(loss)
    train_set.set_epoch(0)


def audio_segments(input_ids: torch.Tensor, audio_id: int) -> torch.Tensor:
    """Audio segments per sequence: runs of `<audio>` placeholder tokens (one per clip; a length token precedes)."""
    is_audio = input_ids == audio_id
    starts = is_audio & ~torch.nn.functional.pad(is_audio[:, :-1], (1, 0), value=False)
    return starts.sum(dim=1)


def test_phase2_batches_hold_the_drawn_zero_shot_prompts(train_set):
    processor = train_set.processor
    audio_id = processor.tokenizer.convert_tokens_to_ids(processor.audio_token)
    sampler = LengthGroupedBatchSampler(
        train_set.estimated_lengths, batch_size=8, seed=1, weights=balanced_source_weights(train_set.sources)
    )
    loader = torch.utils.data.DataLoader(train_set, batch_sampler=sampler, collate_fn=PairCapCollator(processor))
    epoch = 1
    train_set.set_epoch(epoch)
    sampler.set_epoch(epoch)
    counts = train_set.example_counts(epoch)
    zero_shot_prompts = zero_draws = 0
    try:
        for indices, batch in zip(sampler.batches(epoch), loader, strict=True):
            segments = audio_segments(batch["input_ids"], audio_id)
            assert segments.tolist() == (counts[indices] + 1).tolist()  # the examples, then the query
            zero_shot_prompts += int((segments == 1).sum())
            zero_draws += int((counts[indices] == 0).sum())
    finally:
        train_set.set_epoch(0)
    assert zero_shot_prompts == zero_draws > 0


def test_corrupt_clip_is_dropped_from_its_batch(training_pairs, tiny_release, tmp_path):
    processor = tiny_release[2]
    corrupt = tmp_path / "corrupt.flac"
    corrupt.write_bytes(b"fLaC this is not audio" * 50)
    rows = training_pairs.select(range(3)).to_list() + [pair("bad/0", "bad", corrupt, "A broken clip.", "bad", 2.0)]
    dataset = CaptionTrainingSet(as_dataset(rows), processor)
    loader = torch.utils.data.DataLoader(dataset, batch_size=4, collate_fn=PairCapCollator(processor))
    with pytest.warns(UserWarning, match=r"corrupt\.flac"):
        batch = next(iter(loader))
    assert batch["input_ids"].shape[0] == 3 and "audio_tokens" not in batch
    expected = expected_label_text(processor, [rows[0]["caption"]])
    assert decoded_label_text(processor, batch["labels"][0]) == expected
    with pytest.warns(UserWarning, match=r"corrupt\.flac"):
        assert PairCapCollator(processor)([dataset[3]]) is None


# ---- sampler --------------------------------------------------------------------------------------------------------


def test_sampler_is_deterministic_and_covers_every_index():
    lengths = np.random.default_rng(0).integers(10, 500, size=103)
    sampler = LengthGroupedBatchSampler(lengths, batch_size=8, seed=5, mega_batch_mult=4)
    same = LengthGroupedBatchSampler(lengths.tolist(), batch_size=8, seed=5, mega_batch_mult=4)
    assert len(sampler) == 13 and len(list(sampler)) == 13
    for epoch in range(3):
        sampler.set_epoch(epoch)
        same.set_epoch(epoch)
        batches = list(sampler)
        assert batches == list(same)
        assert sorted(i for batch in batches for i in batch) == list(range(103))
    assert sampler.batches(0) != sampler.batches(1)
    assert LengthGroupedBatchSampler(lengths, 8, seed=6).batches(0) != LengthGroupedBatchSampler(lengths, 8).batches(0)
    dropped = LengthGroupedBatchSampler(lengths, batch_size=8, drop_last=True)
    assert len(dropped) == 12 and all(len(batch) == 8 for batch in dropped)
    ordered = LengthGroupedBatchSampler(lengths, batch_size=8, shuffle=False, mega_batch_mult=1)
    expected = [sorted(range(start, min(start + 8, 103)), key=lambda i: -lengths[i]) for start in range(0, 103, 8)]
    assert list(ordered) == expected  # no shuffling: data order, each batch sorted longest first


def test_sampler_groups_similar_lengths():
    lengths = np.random.default_rng(1).integers(40, 600, size=2000)
    grouped = LengthGroupedBatchSampler(lengths, batch_size=16, seed=0, mega_batch_mult=50)
    random = LengthGroupedBatchSampler(lengths, batch_size=16, seed=0, mega_batch_mult=1)
    random_batches = [perm.tolist() for perm in np.array_split(np.random.default_rng(2).permutation(2000), 125)]

    def spread(batches):
        return np.mean([lengths[batch].max() - lengths[batch].min() for batch in batches])

    assert spread(grouped.batches(0)) < 0.1 * spread(random_batches)
    assert spread(random.batches(0)) > 0.5 * spread(random_batches)  # mega-batches of one batch barely group


def test_sampler_follows_epoch_dependent_lengths():
    def lengths_of(epoch: int) -> np.ndarray:
        return np.arange(64) if epoch % 2 == 0 else -np.arange(64)

    sampler = LengthGroupedBatchSampler(lengths_of, batch_size=8, shuffle=False, mega_batch_mult=8)
    assert sampler.batches(0)[0] == list(range(63, 55, -1)) and sampler.batches(1)[0] == list(range(8))


def test_balanced_source_weights_give_each_source_half_the_draws():
    sources = ["audiocaps"] * 30 + ["clotho"] * 10
    weights = balanced_source_weights(sources)
    assert weights.sum() == pytest.approx(1.0)
    assert weights[:30].sum() == pytest.approx(0.5) and weights[30:].sum() == pytest.approx(0.5)
    sampler = LengthGroupedBatchSampler(np.ones(40, int), batch_size=4, seed=0, weights=weights)
    draws = np.concatenate([np.concatenate(sampler.batches(epoch)) for epoch in range(100)])
    assert len(draws) == 4000 and len(sampler) == 10
    assert 0.46 < (draws >= 30).mean() < 0.54
    per_sample = np.bincount(draws, minlength=40)  # about 200 draws per Clotho pair, 67 per AudioCaps pair
    assert per_sample[30:].min() > per_sample[:30].max()
    assert sampler.batches(3) == sampler.batches(3) and sampler.batches(3) != sampler.batches(4)
    with pytest.raises(ValueError, match="40 non-negative numbers"):
        LengthGroupedBatchSampler(np.ones(40, int), batch_size=4, weights=weights[:10])


def test_train_config_checks_zero_shot_fraction():
    base = dict(stage="raft", model_name_or_path="m", output_dir="o", train_pairs=["p"])
    assert TrainConfig(**base, max_examples=5, zero_shot_fraction=0.25).zero_shot_fraction == 0.25
    assert TrainConfig(**base, max_examples=5).zero_shot_fraction is None
    for max_examples, fraction in ((0, 0.25), (5, 1.5), (5, -0.1)):
        with pytest.raises(ValueError, match="zero_shot_fraction must be in"):
            TrainConfig(**base, max_examples=max_examples, zero_shot_fraction=fraction)
