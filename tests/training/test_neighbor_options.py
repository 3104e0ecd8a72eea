"""Training-neighbour options that make the context worth reading: clip-group exclusion (no neighbour shares audio
with its pair), pair2pair ranking, and the checks of their settings (tiny hand-made embedded rows, no model)."""

from __future__ import annotations

import json

import numpy as np
import pyarrow as pa
import pytest
from datasets import Dataset

from paircap.training.clip_groups import clip_groups_digest, load_clip_groups, shared_audio_exclusions
from paircap.training.config import TrainConfig
from paircap.training.neighbors import compute_training_neighbors


def embedded_rows(rows: list[tuple[str, str, list[float], list[float]]]) -> Dataset:
    """Knowledge-base-schema rows (pair_id, audio_id, audio embedding, text embedding), unit-normalised."""

    def unit(vectors) -> pa.Array:
        matrix = np.asarray(vectors, dtype=np.float32)
        matrix /= np.linalg.norm(matrix, axis=1, keepdims=True)
        return pa.FixedSizeListArray.from_arrays(pa.array(matrix.ravel()), matrix.shape[1])

    table = pa.table(
        {
            "pair_id": [row[0] for row in rows],
            "audio_id": [row[1] for row in rows],
            "has_audio": [bool(row[1]) for row in rows],
            "audio_embedding": unit([row[2] for row in rows]),
            "text_embedding": unit([row[3] for row in rows]),
        }
    )
    return Dataset(table)


# takes A and B of Freesound recording 100032, a mixture of take A with another clip, and unrelated clips; the
# mixture and take B sound most like take A
TEXT = [0.0, 0.0, 1.0]
ROWS = [
    ("dog/A", "1-100032-A-0", [1.0, 0.0, 0.0], TEXT),
    ("dog/B", "1-100032-B-0.wav", [0.99, 0.1, 0.0], TEXT),
    ("mix", "mix-train-00000", [0.95, 0.3, 0.0], TEXT),
    ("rain", "2-200-A-10", [0.5, 1.0, 0.0], TEXT),
    ("bird", "3-300-A-14", [0.0, 1.0, 0.0], TEXT),
    ("text", "", [1.0, 0.0, 0.0], TEXT),
]
GROUPS = {"mix-train-00000": ["1-100032-A-0", "2-200-A-10"]}


def neighbour_ids(rows: Dataset, table: np.ndarray, pair_id: str) -> list[str]:
    pair_ids = rows["pair_id"]
    row = table[pair_ids.index(pair_id)]
    return [pair_ids[r] for r in row[row >= 0]]


def test_no_neighbour_shares_a_recording_or_mixture_with_its_pair():
    rows = embedded_rows(ROWS)
    plain = compute_training_neighbors(rows, 4, device="cpu")
    assert neighbour_ids(rows, plain, "dog/A") == ["mix", "rain", "bird"]  # takes of one recording are one clip
    assert neighbour_ids(rows, plain, "dog/B") == ["mix", "rain", "bird"]
    grouped = compute_training_neighbors(rows, 4, device="cpu", clip_groups=GROUPS)
    assert neighbour_ids(rows, grouped, "dog/A") == ["rain", "bird"]  # the mixture holds take A
    assert neighbour_ids(rows, grouped, "dog/B") == ["rain", "bird"]  # ... and so take B's recording
    assert neighbour_ids(rows, grouped, "rain") == ["bird", "dog/B", "dog/A"]  # the mixture holds the rain clip too
    assert neighbour_ids(rows, grouped, "mix") == ["bird"]
    assert neighbour_ids(rows, grouped, "bird") == ["rain", "mix", "dog/B", "dog/A"]
    assert (grouped[rows["pair_id"].index("text")] == -1).all()


def test_shared_audio_exclusions_meet_through_normalised_identities():
    audio_ids = ["1-100032-A-0", "1-100032-B-0.wav", "mix-train-00000", "5-999-A-1", ""]
    groups = {"MIX-train-00000": ["1-100032-C-0.flac"], "5-999-A-1": []}  # keys compare normalised too
    exclusions = shared_audio_exclusions(audio_ids, groups)
    dog = {"1-100032-A-0", "1-100032-B-0.wav", "mix-train-00000"}
    assert exclusions[:3] == [dog, dog, dog]
    assert exclusions[3:] == [{"5-999-A-1"}, set()]


def test_pair2pair_ranks_a_same_caption_row_first():
    """Row `echo` sounds less like the query than `near` does, but has its caption: pair2pair puts it first."""
    rows = embedded_rows(
        [
            ("query", "q", [1.0, 0.0, 0.0], [1.0, 0.0, 0.0]),
            ("near", "n", [0.95, 0.3, 0.0], [0.0, 1.0, 0.0]),
            ("echo", "e", [0.7, 0.7, 0.0], [1.0, 0.0, 0.0]),
            ("far", "f", [0.0, 0.0, 1.0], [0.0, 0.0, 1.0]),
        ]
    )
    audio = compute_training_neighbors(rows, 3, device="cpu")
    pair = compute_training_neighbors(rows, 3, device="cpu", mode="pair2pair", fusion_weight=0.5)
    assert neighbour_ids(rows, audio, "query") == ["near", "echo", "far"]
    assert neighbour_ids(rows, pair, "query") == ["echo", "near", "far"]
    all_audio = compute_training_neighbors(rows, 3, device="cpu", mode="pair2pair", fusion_weight=1.0)
    np.testing.assert_array_equal(all_audio, audio)  # W = 1 is audio2audio
    for mode, weight in (("text2text", 0.5), ("pair2pair", 1.5)):
        with pytest.raises(ValueError, match="mode must be one of"):
            compute_training_neighbors(rows, 3, mode=mode, fusion_weight=weight)


def test_clip_groups_file_and_digest(tmp_path):
    path = tmp_path / "groups.json"
    path.write_text(json.dumps(GROUPS))
    assert load_clip_groups(path) == GROUPS
    reordered = {"mix-train-00000": ["2-200-A-10", "1-100032-A-0"]}
    assert clip_groups_digest(reordered) == clip_groups_digest(GROUPS) != clip_groups_digest({"mix": ["a"]})
    assert clip_groups_digest(None) is None
    for text in ('["1-100032-A-0"]', '{"mix": "1-100032-A-0"}', '{"mix": [1]}', "{not json"):
        path.write_text(text)
        with pytest.raises(ValueError, match=r"groups\.json: .*clip groups"):
            load_clip_groups(path)
    with pytest.raises(ValueError, match=r"missing\.json: cannot read clip groups"):
        load_clip_groups(tmp_path / "missing.json")


def test_train_config_checks_the_neighbour_options(tmp_path):
    base = {"stage": "raft", "model_name_or_path": "m", "output_dir": str(tmp_path), "train_pairs": ["p"]}
    groups = tmp_path / "groups.json"
    groups.write_text(json.dumps(GROUPS))
    config = TrainConfig(
        **base,
        max_examples=3,
        neighbor_mode="pair2pair",
        neighbor_weight=0.25,
        query_dropout=0.3,
        clip_groups=str(groups),
    )
    assert (config.neighbor_mode, config.neighbor_weight, config.query_dropout) == ("pair2pair", 0.25, 0.3)
    defaults = TrainConfig(**base)
    assert (defaults.neighbor_mode, defaults.neighbor_weight, defaults.query_dropout) == ("audio2audio", 0.5, 0.0)
    bad = [
        ({"neighbor_mode": "audio2text"}, "neighbor_mode must be one of"),
        ({"neighbor_weight": -0.1}, r"neighbor_weight must be in \[0, 1\]"),
        ({"query_dropout": 1.5, "max_examples": 3}, r"query_dropout must be in \[0, 1\]"),
        ({"query_dropout": 0.2}, "query_dropout .* max_examples=0"),
    ]
    for overrides, message in bad:
        with pytest.raises(ValueError, match=message):
            TrainConfig(**base, **overrides)
    groups.write_text("[]")
    with pytest.raises(ValueError, match=r"groups\.json: clip groups must be one JSON object"):
        TrainConfig(**base, max_examples=3, clip_groups=str(groups))
