"""Knowledge-base folders: writing, `load_dataset`, loading with the index, and the checks that refuse bad ones."""

import json

import numpy as np
import pytest
from datasets import Dataset, load_dataset

from datasets_scripts.publish import build_kb_index, kb_metadata, write_kb_folder
from modeling_paircap.knowledge_base_paircap import (
    INDEX_FILE,
    KnowledgeBaseError,
    KnowledgeBaseMetadata,
    PairCapKnowledgeBase,
    kb_features,
)

D_A = D_T = 16
TOKEN_DIM = 8


def unit_rows(rng, n, d):
    x = rng.standard_normal((n, d)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def synthetic_rows(n=300, text_only_every=7, seed=0) -> Dataset:
    """Random unit embeddings; every 7th row text-only (zero audio half, no tokens); token counts vary per row."""
    rng = np.random.default_rng(seed)
    audio, text = unit_rows(rng, n, D_A), unit_rows(rng, n, D_T)
    has_audio = np.arange(n) % text_only_every != 0
    audio[~has_audio] = 0
    tokens = [
        rng.standard_normal((4 * (1 + i % 3) if has_audio[i] else 0, TOKEN_DIM)).astype(np.float16) for i in range(n)
    ]
    data = {
        "pair_id": [f"src{i % 3}/train/clip{i // 2}/{i % 2}" for i in range(n)],
        "audio_id": [f"clip{i // 2}" if has_audio[i] else "" for i in range(n)],
        "caption": [f"caption number {i}" for i in range(n)],
        "source": [f"src{i % 3}" for i in range(n)],
        "split": ["train"] * n,
        "duration": [5.0 if a else None for a in has_audio],
        "has_audio": has_audio.tolist(),
        "is_long": [False] * n,
        "audio_embedding": audio.tolist(),
        "text_embedding": text.tolist(),
        "audio_tokens": tokens,
    }
    return Dataset.from_dict(data, features=kb_features(D_A, D_T, TOKEN_DIM))


@pytest.fixture(scope="module")
def kb_folder(tmp_path_factory):
    rows = synthetic_rows()
    index, recall = build_kb_index(rows)
    metadata = kb_metadata(rows, "f" * 64, 4, "Flat", recall, {"name": "synthetic"})
    folder = tmp_path_factory.mktemp("kb") / "synthetic-kb"
    return write_kb_folder(rows, metadata, folder, index=index, max_shard_bytes=20_000), rows


def brute_force(kb_rows: Dataset, query: np.ndarray, k: int) -> list[str]:
    vectors = np.concatenate([np.asarray(kb_rows["audio_embedding"]), np.asarray(kb_rows["text_embedding"])], 1)
    scores = vectors.astype(np.float64) @ query.astype(np.float64)
    order = np.lexsort((np.arange(len(scores)), -scores))[:k]
    return [kb_rows[int(i)]["pair_id"] for i in order]


def test_folder_layout_and_load_dataset(kb_folder):
    folder, rows = kb_folder
    shards = sorted((folder / "data").glob("train-*.parquet"))
    assert len(shards) > 1 and (folder / INDEX_FILE).is_file() and (folder / "paircap_kb.json").is_file()
    card = (folder / "README.md").read_text()
    metadata = KnowledgeBaseMetadata.load(folder)
    assert f"data/train-{metadata.build_id}-*.parquet" in card and "ffffffffffff" in card
    loaded = load_dataset(str(folder), split="train")
    assert loaded["pair_id"] == rows["pair_id"]
    assert loaded.features == rows.features
    metadata = KnowledgeBaseMetadata.load(folder)
    assert (metadata.num_pairs, metadata.num_text_only) == (300, 43)
    assert metadata.sources == {"src0": 100, "src1": 100, "src2": 100}


@pytest.mark.parametrize("mode", ["audio2audio", "audio2text", "audio2mixture", "pair2pair"])
@pytest.mark.parametrize("weight", [0.0, 0.3, 1.0])
def test_loaded_kb_search_equals_brute_force(kb_folder, mode, weight):
    folder, rows = kb_folder
    kb = PairCapKnowledgeBase.from_pretrained(folder, expected_fingerprint="f" * 64)
    rng = np.random.default_rng(1)
    audio_q, text_q = unit_rows(rng, 5, D_A), unit_rows(rng, 5, D_T)
    results = kb.search(audio_q, text_q, mode=mode, fusion_weight=weight, top_k=6)
    zeros = np.zeros(D_A, dtype=np.float32)
    for i, hits in enumerate(results):
        query = {
            "audio2audio": np.concatenate([audio_q[i], zeros]),
            "audio2text": np.concatenate([zeros, audio_q[i]]),
            "audio2mixture": np.concatenate([audio_q[i], audio_q[i]]),
            "pair2pair": np.concatenate([weight * audio_q[i], (1 - weight) * text_q[i]]),
        }[mode]
        assert [hit.pair_id for hit in hits] == brute_force(rows, query, 6)
    tokens = kb.audio_tokens([hit.row for hit in results[0]])
    for hit, hit_tokens in zip(results[0], tokens, strict=True):
        expected = np.asarray(rows[hit.row]["audio_tokens"], dtype=np.float16).reshape(-1, TOKEN_DIM)
        np.testing.assert_array_equal(hit_tokens, expected)


def test_exclusions_and_text_only_rows(kb_folder):
    folder, rows = kb_folder
    kb = PairCapKnowledgeBase.from_pretrained(folder)
    query_audio = np.asarray(rows[3]["audio_embedding"], dtype=np.float32)[None]
    top = kb.search(query_audio, mode="audio2audio", top_k=1)[0][0]
    assert top.pair_id == rows[3]["pair_id"] and top.audio_score == pytest.approx(1.0, abs=1e-5)
    excluded = kb.search(query_audio, mode="audio2audio", top_k=3, exclude_ids=[{rows[3]["audio_id"]}])[0]
    assert all(hit.audio_id != rows[3]["audio_id"] for hit in excluded)
    assert kb.audio_tokens([0])[0].shape == (0, TOKEN_DIM)


def test_a_kb_rebuilt_in_place_loads_its_new_rows(tmp_path):
    folder = tmp_path / "kb"
    for seed in (0, 1):
        rows = synthetic_rows(n=50, seed=seed)
        write_kb_folder(rows, kb_metadata(rows, "f" * 64, 4, "Flat", None, {}), folder)
        assert load_dataset(str(folder), split="train")["text_embedding"] == rows["text_embedding"]
        assert PairCapKnowledgeBase.from_pretrained(folder).rows["text_embedding"] == rows["text_embedding"]


def test_kb_from_another_encoder_is_refused(kb_folder):
    folder, _ = kb_folder
    with pytest.raises(KnowledgeBaseError, match="embedded by another encoder"):
        PairCapKnowledgeBase.from_pretrained(folder, expected_fingerprint="0" * 64)


def test_missing_corrupt_and_mismatched_index_files(kb_folder, tmp_path):
    import shutil

    import faiss

    folder, rows = kb_folder
    broken = tmp_path / "kb"
    shutil.copytree(folder, broken)
    (broken / INDEX_FILE).unlink()
    with pytest.raises(KnowledgeBaseError, match=r"index.faiss: the FAISS index file is missing"):
        PairCapKnowledgeBase.from_pretrained(broken)
    (broken / INDEX_FILE).write_bytes(b"not an index at all")
    with pytest.raises(KnowledgeBaseError, match=r"index.faiss: not a readable FAISS index"):
        PairCapKnowledgeBase.from_pretrained(broken)
    small = faiss.IndexFlatIP(D_A + D_T)
    small.add(np.zeros((10, D_A + D_T), dtype=np.float32))
    faiss.write_index(small, str(broken / INDEX_FILE))
    with pytest.raises(KnowledgeBaseError, match="the index has 10 vectors but the KB has 300 rows"):
        PairCapKnowledgeBase.from_pretrained(broken)
    metadata = json.loads((broken / "paircap_kb.json").read_text())
    (broken / "paircap_kb.json").write_text(json.dumps({**metadata, "num_pairs": 5}))
    with pytest.raises(KnowledgeBaseError, match="300 rows but paircap_kb.json records 5"):
        PairCapKnowledgeBase.from_pretrained(broken)
    (broken / "paircap_kb.json").unlink()
    with pytest.raises(KnowledgeBaseError, match="paircap_kb.json: missing"):
        PairCapKnowledgeBase.from_pretrained(broken)


def test_unknown_locations_give_clear_errors(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(KnowledgeBaseError, match="not a knowledge base folder nor a hub dataset id"):
        PairCapKnowledgeBase.from_pretrained(tmp_path / "nowhere" / "deep")
    with pytest.raises(KnowledgeBaseError, match="Pass a local knowledge base folder instead"):
        PairCapKnowledgeBase.from_pretrained("org/no-such-kb")


def test_torch_search_path_equals_faiss(kb_folder):
    folder, _ = kb_folder
    rng = np.random.default_rng(2)
    audio_q, text_q = unit_rows(rng, 4, D_A), unit_rows(rng, 4, D_T)
    with_faiss = PairCapKnowledgeBase.from_pretrained(folder).search(audio_q, text_q, top_k=5)
    with_torch = PairCapKnowledgeBase.from_pretrained(folder, device="cpu").search(audio_q, text_q, top_k=5)
    assert [[h.pair_id for h in q] for q in with_faiss] == [[h.pair_id for h in q] for q in with_torch]


def test_approximate_index_reports_recall():
    rows = synthetic_rows(n=600, seed=3)
    index, recall = build_kb_index(rows, "HNSW16")
    assert index.ntotal == 600 and 0.5 <= recall <= 1.0


def test_push_uploads_the_whole_folder_as_a_dataset_repo(kb_folder, monkeypatch):
    from huggingface_hub import HfApi

    from datasets_scripts.publish import push_kb_to_hub

    calls = {}
    monkeypatch.setattr(HfApi, "create_repo", lambda self, repo_id, **kw: calls.setdefault("create", (repo_id, kw)))
    monkeypatch.setattr(HfApi, "upload_folder", lambda self, **kw: calls.setdefault("upload", kw) and "commit-url")
    folder, _ = kb_folder
    assert push_kb_to_hub(folder, "org/refined-audio-kb", private=True) == "commit-url"
    assert calls["create"] == ("org/refined-audio-kb", {"repo_type": "dataset", "private": True, "exist_ok": True})
    assert calls["upload"]["folder_path"] == str(folder) and calls["upload"]["repo_type"] == "dataset"


def test_a_hub_id_resolves_through_snapshot_download(kb_folder, monkeypatch):
    import huggingface_hub

    folder, rows = kb_folder
    requested = {}

    def fake_snapshot_download(repo_id, repo_type=None, revision=None):
        requested.update(repo_id=repo_id, repo_type=repo_type, revision=revision)
        return str(folder)

    monkeypatch.setattr(huggingface_hub, "snapshot_download", fake_snapshot_download)
    kb = PairCapKnowledgeBase.from_pretrained("org/refined-audio-kb", revision="v1")
    assert requested == {"repo_id": "org/refined-audio-kb", "repo_type": "dataset", "revision": "v1"}
    assert len(kb) == len(rows) and kb.retriever.index.ntotal == len(rows)
