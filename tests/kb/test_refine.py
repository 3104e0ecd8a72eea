"""Refined knowledge base (paper §3.5): a hand-derived toy KB, columns and order, stats, brute force, resume, paths."""

import json
import re
from pathlib import Path

import datasets
import numpy as np
import pyarrow as pa
import pytest

from datasets_scripts import refine
from datasets_scripts.publish import build_kb_index, kb_metadata, write_kb_folder
from datasets_scripts.refine import RefinementStats, refine_knowledge_base
from modeling_paircap.index_paircap import PairCapIndex
from modeling_paircap.kb_format_paircap import ROW_COLUMNS, clip_schema, kb_row_features
from modeling_paircap.knowledge_base_paircap import PairCapKnowledgeBase
from paircap.cli import main

D_A = D_T = 8


def basis(i: int) -> np.ndarray:
    return np.eye(D_A, dtype=np.float32)[i]


def mix(i: int, j: int, weight: float) -> np.ndarray:
    """The unit vector weight·e_i + sqrt(1 − weight²)·e_j."""
    return weight * basis(i) + np.sqrt(1 - weight**2) * basis(j)


def clip_indices(entries: list[dict]) -> list[int]:
    """Each entry's clip: its audio_id's index in order of first appearance, -1 for text-only entries."""
    clips: dict[str, int] = {}
    return [clips.setdefault(e["audio_id"], len(clips)) if e.get("has_audio", True) else -1 for e in entries]


def make_rows(entries: list[dict]) -> datasets.Dataset:
    """A KB-schema Dataset (`kb_row_features`); each entry gives pair_id, audio_id, caption, source, split, audio,
    text (and has_audio); `clip_index` numbers the distinct audio ids."""
    rows = []
    for i, (entry, clip) in enumerate(zip(entries, clip_indices(entries), strict=True)):
        has_audio = entry.get("has_audio", True)
        rows.append(
            {
                "pair_id": entry["pair_id"],
                "audio_id": entry["audio_id"],
                "caption": entry["caption"],
                "source": entry["source"],
                "split": entry["split"],
                "duration": 10.0 + i if has_audio else None,
                "has_audio": has_audio,
                "clip_index": clip,
                "audio_embedding": np.asarray(entry["audio"], dtype=np.float32).tolist(),
                "text_embedding": np.asarray(entry["text"], dtype=np.float32).tolist(),
            }
        )
    return datasets.Dataset.from_list(rows, features=kb_row_features(D_A, D_T))


ZERO = np.zeros(D_A, dtype=np.float32)
# Query q1 = (e0, e0) lives in the KB (row 0); q2 = (e1, e1) does not; q3 has no audio. Scores S = W·S_A + (1−W)·S_T:
#   row  pair                      for q1                                  for q2
#   0    the q1 pair itself        excluded (same pair_id)                 0
#   1    same audio, same caption  excluded (case / spaces differ)         0
#   2    same audio, other caption W + 0.6(1−W)                            0
#   3    evaluation split          excluded (would score 1)                0
#   4    train-split neighbour     0.9                                     0
#   5    text-only                 1 − W (excluded by default)             0
#   6    audio neighbour of q2     0                                       W
#   7    text neighbour of q2      0                                       1 − W
#   8    far                       0                                       0
KB_ENTRIES = [
    dict(pair_id="clotho/development/A1/0", audio_id="A1", caption="A dog barks loudly.", source="clotho",
         split="development", audio=basis(0), text=basis(0)),
    dict(pair_id="wavcaps/train/A1/0", audio_id="A1", caption="  a DOG barks\tloudly. ", source="wavcaps",
         split="train", audio=basis(0), text=basis(0)),
    dict(pair_id="clotho/development/A1/1", audio_id="A1", caption="A dog is barking.", source="clotho",
         split="development", audio=basis(0), text=mix(0, 2, 0.6)),
    dict(pair_id="clotho/evaluation/B1/0", audio_id="B1", caption="A dog barks loudly.", source="clotho",
         split="Evaluation", audio=basis(0), text=basis(0)),
    dict(pair_id="audiocaps/train/B2/0", audio_id="B2", caption="Dogs bark far away.", source="audiocaps",
         split="train", audio=mix(0, 3, 0.9), text=mix(0, 4, 0.9)),
    dict(pair_id="wavcaps/train/T1/0", audio_id="T1", caption="A dog barks.", source="wavcaps", split="train",
         audio=ZERO, text=basis(0), has_audio=False),
    dict(pair_id="audiocaps/train/C1/0", audio_id="C1", caption="Rain on a roof.", source="audiocaps",
         split="train", audio=basis(1), text=basis(5)),
    dict(pair_id="audiocaps/train/C2/0", audio_id="C2", caption="Water pours.", source="audiocaps", split="train",
         audio=basis(6), text=basis(1)),
    dict(pair_id="audiocaps/train/C3/0", audio_id="C3", caption="A car passes.", source="audiocaps", split="train",
         audio=basis(7), text=basis(7)),
]  # fmt: skip
TRAIN_ENTRIES = [
    dict(KB_ENTRIES[0]),
    dict(pair_id="clotho/development/A2/0", audio_id="A2", caption="Rain pours onto a roof.", source="clotho",
         split="development", audio=basis(1), text=basis(1)),
    dict(pair_id="wavcaps/train/T2/0", audio_id="T2", caption="Birds sing.", source="wavcaps", split="train",
         audio=ZERO, text=basis(2), has_audio=False),
]  # fmt: skip


@pytest.fixture(scope="module")
def toy():
    return make_rows(KB_ENTRIES), make_rows(TRAIN_ENTRIES)


def run(kb, train, **kwargs):
    return refine_knowledge_base(kb, train, progress=False, **kwargs)


@pytest.mark.parametrize(
    ("settings", "expected"),
    [
        # eval row 3 (S=1) and the duplicates 0/1 (S=1) are excluded, the worse train row 4 (0.9) is kept
        (dict(top_k=2, fusion_weight=0.5), ["clotho/development/A1/1", "audiocaps/train/B2/0",
                                            "audiocaps/train/C1/0", "audiocaps/train/C2/0"]),
        # W=1: audio neighbours (row 2, another caption of the query's audio, is no duplicate)
        (dict(top_k=1, fusion_weight=1.0), ["clotho/development/A1/1", "audiocaps/train/C1/0"]),
        # W=0: text neighbours; the text-only row 5 (S=1) is not a candidate
        (dict(top_k=1, fusion_weight=0.0), ["audiocaps/train/B2/0", "audiocaps/train/C2/0"]),
        (dict(top_k=1, fusion_weight=0.0, include_text_only=True), ["wavcaps/train/T1/0", "audiocaps/train/C2/0"]),
        # no split filter: the evaluation row 3 wins for q1 (S=1 against 0.9 and 0.84)
        (dict(top_k=1, fusion_weight=0.6, exclude_splits=()), ["clotho/evaluation/B1/0", "audiocaps/train/C1/0"]),
    ],
)  # fmt: skip
def test_toy_union(toy, settings, expected):
    refined, _ = run(*toy, **settings)
    assert refined["pair_id"][:] == expected


def test_rows_keep_columns_and_kb_order(toy):
    kb, train = toy
    permutation = [8, 7, 6, 5, 4, 3, 2, 1, 0]
    shuffled = kb.select(permutation)
    refined, _ = run(shuffled, train, top_k=2)
    assert refined["pair_id"][:] == [
        "audiocaps/train/C2/0",
        "audiocaps/train/C1/0",
        "audiocaps/train/B2/0",
        "clotho/development/A1/1",
    ]
    assert list(refined.features) == list(ROW_COLUMNS)
    assert refined.features == kb.features
    by_id = {row["pair_id"]: row for row in kb}
    for row in refined:
        assert row == by_id[row["pair_id"]]
    # each kept row still points at its clip in the KB's clip table (what its prompt tokens are read by)
    clip_of = dict(zip((e["pair_id"] for e in KB_ENTRIES), clip_indices(KB_ENTRIES), strict=True))
    assert refined["clip_index"][:] == [clip_of[pair_id] for pair_id in refined["pair_id"][:]] == [4, 3, 2, 0]


def test_stats(toy, caplog):
    with caplog.at_level("INFO", logger="datasets_scripts.refine"):
        _, stats = run(*toy, top_k=2, fusion_weight=0.5)
    assert isinstance(stats, RefinementStats)
    values = stats.to_dict()
    assert json.loads(json.dumps(values)) == values
    assert values == {
        "size_before": 9,
        "candidates": 7,  # all but the evaluation row 3 and the text-only row 5
        "size_after": 4,
        "queries": 2,
        "skipped_train_rows": 1,
        "duplicates_excluded": 2,  # rows 0 and 1 for q1
        "hits": 4,
        "mean_score": pytest.approx((0.9 + 0.8 + 0.5 + 0.5) / 4),
        "mean_audio_score": pytest.approx((0.9 + 1.0 + 1.0 + 0.0) / 4),
        "mean_text_score": pytest.approx((0.9 + 0.6 + 0.0 + 1.0) / 4),
        "sizes_before_per_source": {"clotho": 3, "wavcaps": 2, "audiocaps": 4},
        "sizes_after_per_source": {"clotho": 1, "wavcaps": 0, "audiocaps": 3},
        "top_k": 2,
        "fusion_weight": 0.5,
        "exclude_splits": ["test", "evaluation", "eval", "val", "validation"],
        "include_text_only": False,
    }
    assert "refined KB: 4 of 9 rows" in caplog.text


def test_invalid_settings(toy):
    for settings in (dict(top_k=0), dict(fusion_weight=1.5), dict(chunk_size=0)):
        with pytest.raises(ValueError):
            run(*toy, **settings)


# ------------------------------------------------------------------------------------------ random data, brute force
SPLITS = ["train", "development", "test", "val", "Validation", "evaluation"]


def unit(x: np.ndarray) -> np.ndarray:
    return (x / np.linalg.norm(x, axis=-1, keepdims=True)).astype(np.float32)


def random_data(seed: int = 0, num_kb: int = 500, num_train: int = 80):
    """A KB of clips with several captions each (shared audio embedding), some text-only rows, and training rows:
    copies of KB rows with audio, re-cased copies under new pair ids, new pairs, and rows without audio."""
    rng = np.random.default_rng(seed)
    clip_audio = unit(rng.standard_normal((200, D_A)))
    caption_text = unit(rng.standard_normal((60, D_T)))
    kb = []
    for i in range(num_kb):
        clip, caption = int(rng.integers(200)), int(rng.integers(60))
        text_only = rng.random() < 0.1
        kb.append(
            dict(
                pair_id=f"kb/{i}",
                audio_id=f"clip{clip}",
                caption=f"caption number {caption}",
                source=["clotho", "audiocaps", "wavcaps"][i % 3],
                split=SPLITS[int(rng.integers(len(SPLITS)))],
                audio=ZERO if text_only else clip_audio[clip],
                text=unit(caption_text[caption] + 1e-3 * rng.standard_normal(D_T)),  # no exact ties
                has_audio=not text_only,
            )
        )
    train = []
    with_audio = [i for i, entry in enumerate(kb) if entry["has_audio"]]
    for j, i in enumerate(rng.choice(with_audio, num_train, replace=False)):
        entry = dict(kb[i], split="train")
        if j % 4 == 1:  # same audio and caption up to case / spaces under another pair id
            entry.update(pair_id=f"train/{j}", caption=" " + entry["caption"].upper() + "  ")
        elif j % 4 == 2:  # a new pair
            entry.update(pair_id=f"train/{j}", audio_id=f"new{j}", audio=unit(rng.standard_normal(D_A)))
        if j % 10 == 3:
            entry.update(audio=ZERO, has_audio=False)
        train.append(entry)
    return kb, train


def brute_force(kb: list[dict], train: list[dict], top_k: int, weight: float) -> tuple[list[str], int]:
    """The refined pair ids by exhaustive scoring, and the number of duplicates excluded."""
    audio = np.stack([entry["audio"] for entry in kb]).astype(np.float64)
    text = np.stack([entry["text"] for entry in kb]).astype(np.float64)
    candidate = np.array(
        [entry["split"].lower() not in refine.DEFAULT_EVAL_SPLITS and entry.get("has_audio", True) for entry in kb]
    )
    kept, duplicates = set(), 0
    for query in train:
        if not query.get("has_audio", True):
            continue
        allowed = candidate.copy()
        for row, entry in enumerate(kb):
            same_caption = entry["caption"].lower().split() == query["caption"].lower().split()
            if entry["pair_id"] == query["pair_id"] or (entry["audio_id"] == query["audio_id"] and same_caption):
                duplicates += bool(allowed[row])
                allowed[row] = False
        scores = weight * audio @ query["audio"] + (1 - weight) * text @ query["text"]
        rows = np.flatnonzero(allowed)
        kept.update(rows[np.argsort(-scores[rows], kind="stable")[:top_k]].tolist())
    return [kb[row]["pair_id"] for row in sorted(kept)], duplicates


@pytest.fixture(scope="module")
def random_kb():
    kb, train = random_data()
    return kb, train, make_rows(kb), make_rows(train)


@pytest.mark.parametrize(("top_k", "weight"), [(1, 0.5), (3, 0.0), (5, 0.3), (5, 1.0), (10, 0.7)])
def test_matches_brute_force(random_kb, top_k, weight):
    kb, train, kb_ds, train_ds = random_kb
    expected, duplicates = brute_force(kb, train, top_k, weight)
    refined, stats = run(kb_ds, train_ds, top_k=top_k, fusion_weight=weight, chunk_size=32)
    assert refined["pair_id"][:] == expected
    assert stats.duplicates_excluded == duplicates > 0
    assert stats.queries == sum(entry.get("has_audio", True) for entry in train) == 72
    assert stats.hits == stats.queries * top_k
    assert stats.size_after == len(expected)


def test_torch_path_equals_faiss(random_kb):
    _, _, kb_ds, train_ds = random_kb
    via_faiss, faiss_stats = run(kb_ds, train_ds, top_k=5, fusion_weight=0.4)
    via_torch, torch_stats = run(kb_ds, train_ds, top_k=5, fusion_weight=0.4, device="cpu", chunk_size=16)
    assert via_torch["pair_id"][:] == via_faiss["pair_id"][:]
    torch_values, faiss_values = torch_stats.to_dict(), faiss_stats.to_dict()
    for name in ("mean_score", "mean_audio_score", "mean_text_score"):
        assert torch_values.pop(name) == pytest.approx(faiss_values.pop(name), abs=1e-6)
    assert torch_values == faiss_values


def test_resume_after_interruption(random_kb, tmp_path, monkeypatch):
    _, _, kb_ds, train_ds = random_kb
    settings = dict(top_k=4, fusion_weight=0.5, chunk_size=10)  # 72 queries: 8 chunks
    expected, expected_stats = run(kb_ds, train_ds, **settings)

    original_search = PairCapIndex.search
    batches = []

    def interrupt_on_third(self, audio_embeds, *args, **kwargs):
        if len(batches) == 2:
            raise RuntimeError("interrupted")
        batches.append(len(audio_embeds))
        return original_search(self, audio_embeds, *args, **kwargs)

    monkeypatch.setattr(PairCapIndex, "search", interrupt_on_third)
    work_dir = tmp_path / "work"
    with pytest.raises(RuntimeError, match="interrupted"):
        run(kb_ds, train_ds, work_dir=work_dir, **settings)
    assert sorted(path.name for path in work_dir.iterdir()) == [
        "refine-chunk-00000.npz",
        "refine-chunk-00001.npz",
        "refine_state.json",
    ]

    def count(self, audio_embeds, *args, **kwargs):
        batches.append(len(audio_embeds))
        return original_search(self, audio_embeds, *args, **kwargs)

    batches.clear()
    monkeypatch.setattr(PairCapIndex, "search", count)
    resumed, resumed_stats = run(kb_ds, train_ds, work_dir=work_dir, **settings)
    assert batches == [10, 10, 10, 10, 10, 2]  # chunks 2..7 only
    assert resumed["pair_id"][:] == expected["pair_id"][:]
    assert resumed_stats == expected_stats

    batches.clear()
    again, _ = run(kb_ds, train_ds, work_dir=work_dir, **settings)
    assert batches == [] and again["pair_id"][:] == expected["pair_id"][:]

    other_run = re.escape(f"work_dir {work_dir} holds a refinement run with other inputs or settings")
    for changed in (dict(settings, top_k=5), dict(settings, fusion_weight=0.6), dict(settings, chunk_size=12)):
        with pytest.raises(ValueError, match=other_run):
            run(kb_ds, train_ds, work_dir=work_dir, **changed)
    with pytest.raises(ValueError, match="query_pair_ids_sha256"):
        run(kb_ds, train_ds.select(range(40)), work_dir=work_dir, **settings)
    with pytest.raises(ValueError, match="candidate_pair_ids_sha256"):
        run(kb_ds, train_ds, work_dir=work_dir, exclude_splits=("test",), **settings)


def write_kb(rows: datasets.Dataset, folder: Path) -> Path:
    """`rows` as an index-only knowledge base folder, one clip per distinct `clip_index`."""
    audio_ids = {}
    for clip, audio_id in zip(rows["clip_index"], rows["audio_id"], strict=True):
        if clip >= 0:
            audio_ids[clip] = audio_id
    count = len(audio_ids)
    clips = pa.table(
        {
            "audio_id": [audio_ids[clip] for clip in range(count)],
            "is_long": [False] * count,
            "duration": [10.0] * count,
            "audio_root": ["toy"] * count,
            "audio_path": [f"{audio_ids[clip]}.wav" for clip in range(count)],
        },
        schema=clip_schema(),
    )
    index, recall = build_kb_index(rows)
    metadata = kb_metadata(rows, count, "0" * 64, None, 0, "Flat", recall, {"name": folder.name})
    return write_kb_folder(rows, clips, metadata, folder, index=index)


def test_cli(toy, tmp_path, capsys):
    kb, train = toy
    args = ["--kb", str(write_kb(kb, tmp_path / "kb")), "--train", str(write_kb(train, tmp_path / "train"))]
    args += ["--output", str(tmp_path / "out"), "--work-dir", str(tmp_path / "work")]
    assert main(["kb", "refine", *args, "--top-k", "1", "--weight", "1.0", "--device", "cpu"]) == 0
    refined = PairCapKnowledgeBase.from_pretrained(tmp_path / "out").rows
    assert refined["pair_id"][:] == ["clotho/development/A1/1", "audiocaps/train/C1/0"]
    assert json.loads(capsys.readouterr().out)["size_after"] == 2
