"""Knowledge-base folders (format 2): writing, `load_dataset`, loading with the index and the per-clip token store,
the two fingerprints, and the checks that refuse bad folders."""

import json
import shutil

import numpy as np
import pyarrow as pa
import pytest
import soundfile as sf
import torch
from datasets import Dataset, load_dataset

from datasets_scripts.publish import build_kb_index, kb_metadata, write_kb_folder
from modeling_paircap.kb_format_paircap import (
    CLIPS_FILE,
    INDEX_FILE,
    KnowledgeBaseError,
    KnowledgeBaseMetadata,
    clip_schema,
    kb_row_features,
)
from modeling_paircap.knowledge_base_paircap import PairCapKnowledgeBase
from modeling_paircap.tokens_paircap import TOKENS_FILE, ClipTokenStore, write_clip_tokens

D_A = D_T = 16
TOKEN_DIM = 8
CAPTIONS_PER_CLIP = 5
RETRIEVAL = "r" * 64
TOKENS = "t" * 64


def unit_rows(rng, n, d):
    x = rng.standard_normal((n, d)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def synthetic_kb(n_clips=50, n_text_only=40, seed=0):
    """5 captions per clip (one audio embedding per clip), then text-only rows; clip token counts vary per clip."""
    rng = np.random.default_rng(seed)
    clip_audio = unit_rows(rng, n_clips, D_A)
    n = n_clips * CAPTIONS_PER_CLIP + n_text_only
    clip_index = np.concatenate([np.repeat(np.arange(n_clips), CAPTIONS_PER_CLIP), -np.ones(n_text_only, int)])
    audio = np.where(clip_index[:, None] >= 0, clip_audio[np.maximum(clip_index, 0)], 0).astype(np.float32)
    rows = Dataset.from_dict(
        {
            "pair_id": [f"src{i % 3}/row{i}" for i in range(n)],
            "audio_id": [f"clip{c}" if c >= 0 else "" for c in clip_index],
            "caption": [f"caption number {i}" for i in range(n)],
            "source": [f"src{i % 3}" for i in range(n)],
            "split": ["train"] * n,
            "duration": [5.0 if c >= 0 else None for c in clip_index],
            "has_audio": (clip_index >= 0).tolist(),
            "clip_index": clip_index.tolist(),
            "audio_embedding": audio.tolist(),
            "text_embedding": unit_rows(rng, n, D_T).tolist(),
        },
        features=kb_row_features(D_A, D_T),
    )
    clips = pa.table(
        {
            "audio_id": [f"clip{c}" for c in range(n_clips)],
            "is_long": [c % 4 == 0 for c in range(n_clips)],
            "duration": [5.0] * n_clips,
            "audio_root": ["corpus"] * n_clips,
            "audio_path": [f"audio/clip{c}.wav" for c in range(n_clips)],
        },
        schema=clip_schema(),
    )
    tokens = [rng.standard_normal((4 * (1 + c % 3), TOKEN_DIM)).astype(np.float16) for c in range(n_clips)]
    return rows, clips, tokens


def write_synthetic(folder, rows, clips, tokens, factory="Flat", with_tokens=True):
    store = None
    if with_tokens:
        path = folder.parent / f"{folder.name}-{TOKENS_FILE}"
        write_clip_tokens(path, [len(t) for t in tokens], tokens, TOKEN_DIM, TOKENS)
        store = ClipTokenStore(path, len(tokens))
    index, recall = build_kb_index(rows, factory)
    metadata = kb_metadata(rows, clips.num_rows, RETRIEVAL, store, 4, factory, recall, {"name": "synthetic"})
    return write_kb_folder(rows, clips, metadata, folder, index=index, tokens=store)


@pytest.fixture(scope="module")
def kb_folder(tmp_path_factory):
    rows, clips, tokens = synthetic_kb()
    folder = write_synthetic(tmp_path_factory.mktemp("kb") / "synthetic-kb", rows, clips, tokens)
    return folder, rows, tokens


def brute_force(kb_rows: Dataset, query: np.ndarray, k: int, per_clip: int | None) -> list[str]:
    vectors = np.concatenate([np.asarray(kb_rows["audio_embedding"]), np.asarray(kb_rows["text_embedding"])], 1)
    scores = vectors.astype(np.float64) @ query.astype(np.float64)
    order = np.lexsort((np.arange(len(scores)), -scores))
    picked, seen = [], {}
    for row in order:
        clip = kb_rows[int(row)]["clip_index"]
        seen[clip] = seen.get(clip, 0) + 1
        if per_clip is None or clip < 0 or seen[clip] <= per_clip:
            picked.append(kb_rows[int(row)]["pair_id"])
    return picked[:k]


def test_folder_layout_and_load_dataset(kb_folder):
    folder, rows, tokens = kb_folder
    assert (folder / INDEX_FILE).is_file() and (folder / CLIPS_FILE).is_file() and (folder / TOKENS_FILE).is_file()
    metadata = KnowledgeBaseMetadata.load(folder)
    card = (folder / "README.md").read_text()
    assert f"data/train-{metadata.build_id}-*.parquet" in card and RETRIEVAL[:12] in card and TOKENS[:12] in card
    loaded = load_dataset(str(folder), split="train")
    assert loaded["pair_id"] == rows["pair_id"] and loaded.features == rows.features
    assert (metadata.num_pairs, metadata.num_clips, metadata.num_text_only) == (290, 50, 40)
    assert (metadata.retrieval_fingerprint, metadata.token_fingerprint, metadata.token_dim) == (RETRIEVAL, TOKENS, 8)


def test_tokens_are_stored_once_per_clip(kb_folder):
    folder, rows, tokens = kb_folder
    store = ClipTokenStore(folder / TOKENS_FILE)
    assert len(store) == 50 and len(rows) == 290  # 5 captions per clip, tokens of each clip once
    assert store.offsets[-1] == sum(len(t) for t in tokens)
    for clip in (0, 7, 49):
        np.testing.assert_array_equal(store.get([clip])[0].numpy(), tokens[clip])
    token_bytes = (folder / TOKENS_FILE).stat().st_size
    assert token_bytes < sum(t.nbytes for t in tokens) + 4096  # header and offsets only on top of the tokens


@pytest.mark.parametrize("mode", ["audio2audio", "audio2text", "audio2mixture", "pair2pair"])
@pytest.mark.parametrize("weight", [0.0, 0.3, 1.0])
@pytest.mark.parametrize("per_clip", [1, 2, None])
def test_loaded_kb_search_equals_brute_force(kb_folder, mode, weight, per_clip):
    folder, rows, _ = kb_folder
    kb = PairCapKnowledgeBase.from_pretrained(folder, retrieval_fingerprint=RETRIEVAL)
    rng = np.random.default_rng(1)
    audio_q, text_q = unit_rows(rng, 5, D_A), unit_rows(rng, 5, D_T)
    results = kb.search(audio_q, text_q, mode=mode, fusion_weight=weight, top_k=6, max_pairs_per_clip=per_clip)
    zeros = np.zeros(D_A, dtype=np.float32)
    for i, hits in enumerate(results):
        query = {
            "audio2audio": np.concatenate([audio_q[i], zeros]),
            "audio2text": np.concatenate([zeros, audio_q[i]]),
            "audio2mixture": np.concatenate([audio_q[i], audio_q[i]]),
            "pair2pair": np.concatenate([weight * audio_q[i], (1 - weight) * text_q[i]]),
        }[mode]
        assert [hit.pair_id for hit in hits] == brute_force(rows, query, 6, per_clip)


def test_top_k_returns_distinct_clips_by_default(kb_folder):
    folder, rows, _ = kb_folder
    kb = PairCapKnowledgeBase.from_pretrained(folder)
    audio_q = np.asarray(rows["audio_embedding"][:: CAPTIONS_PER_CLIP * 7], dtype=np.float32)
    for hits in kb.search(audio_q, mode="audio2audio", top_k=5):
        assert len({hit.audio_id for hit in hits}) == 5
    for hits in kb.search(audio_q, mode="audio2audio", top_k=5, max_pairs_per_clip=None):
        assert len({hit.audio_id for hit in hits}) == 1  # all five captions of the query's own clip


def test_examples_carry_each_clips_tokens(kb_folder):
    folder, rows, tokens = kb_folder
    kb = PairCapKnowledgeBase.from_pretrained(folder)
    rng = np.random.default_rng(4)
    hits = kb.search(unit_rows(rng, 3, D_A), unit_rows(rng, 3, D_T), mode="pair2pair", fusion_weight=0.2, top_k=8)
    for query_hits, examples in zip(hits, kb.examples(hits), strict=True):
        for hit, example in zip(query_hits, examples, strict=True):
            clip = rows[hit.row]["clip_index"]
            assert example["caption"] == rows[hit.row]["caption"]
            if clip < 0:
                assert example["audio_tokens"].shape == (0, TOKEN_DIM) and not example["is_long"]
            else:
                np.testing.assert_array_equal(np.asarray(example["audio_tokens"]), tokens[clip])
                assert example["is_long"] == (clip % 4 == 0)
    on_device = PairCapKnowledgeBase.from_pretrained(folder).tokens_to("cpu")
    assert isinstance(on_device.tokens.tokens, torch.Tensor)
    for mapped, held in zip(kb.examples(hits)[0], on_device.examples(hits)[0], strict=True):
        np.testing.assert_array_equal(np.asarray(mapped["audio_tokens"]), np.asarray(held["audio_tokens"]))


def test_the_index_is_the_one_copy_of_the_vectors(kb_folder, tmp_path, monkeypatch):
    folder, rows, _ = kb_folder
    monkeypatch.setenv("HF_DATASETS_CACHE", str(tmp_path / "cache"))
    kb = PairCapKnowledgeBase.from_pretrained(folder)
    kb.search(np.asarray(rows["audio_embedding"][:2], dtype=np.float32), mode="audio2audio", top_k=3)
    assert kb.index._kb_tensor is None and kb.index.faiss_index.ntotal == len(rows)
    assert "audio_embedding" not in kb.table.column_names  # only the search columns are read
    assert not (tmp_path / "cache").exists()  # nothing copied into the datasets cache
    vectors = np.concatenate([np.asarray(rows["audio_embedding"]), np.asarray(rows["text_embedding"])], 1)
    np.testing.assert_array_equal(kb.pair_vectors([3, 0, 289]), vectors[[3, 0, 289]].astype(np.float32))


def test_exclusions_use_ids_and_normalised_clip_ids(kb_folder):
    folder, rows, _ = kb_folder
    kb = PairCapKnowledgeBase.from_pretrained(folder)
    query_audio = np.asarray(rows[3]["audio_embedding"], dtype=np.float32)[None]
    top = kb.search(query_audio, mode="audio2audio", top_k=1)[0][0]
    assert top.audio_id == rows[3]["audio_id"] and top.audio_score == pytest.approx(1.0, abs=1e-5)
    for excluded_id in (rows[3]["audio_id"], rows[3]["audio_id"].upper()):  # normalised ids are casefolded
        excluded = kb.search(query_audio, mode="audio2audio", top_k=3, exclude_ids=[{excluded_id}])[0]
        assert len(excluded) == 3 and all(hit.audio_id != rows[3]["audio_id"] for hit in excluded)


def test_stale_tokens_are_refused_with_the_refresh_command_or_computed_from_audio(kb_folder, tmp_path):
    folder, rows, tokens = kb_folder
    kb = PairCapKnowledgeBase.from_pretrained(folder)
    hits = kb.search(np.asarray(rows["audio_embedding"][:1], dtype=np.float32), mode="audio2audio", top_k=2)
    kb.check_tokens(TOKENS)
    assert kb.tokens_state == "current"
    kb.check_tokens("x" * 64)  # another token encoder, e.g. after stage 2
    assert kb.tokens_state == "stale"
    with pytest.raises(KnowledgeBaseError, match=r"another token encoder.*paircap kb tokens --kb"):
        kb.examples(hits)
    calls = []

    def encoder(audio):
        calls.append([item["path"] for item in audio])
        return [np.full((2, TOKEN_DIM), len(calls), np.float16) for _ in audio]

    with pytest.raises(KnowledgeBaseError, match=r"pass audio_roots for \['corpus'\]"):
        kb.examples(hits, encoder)
    with_audio = PairCapKnowledgeBase.from_pretrained(folder, audio_roots={"corpus": tmp_path})
    with_audio.check_tokens("x" * 64)
    clips = sorted({rows[hit.row]["clip_index"] for hit in hits[0]})
    with pytest.raises(
        KnowledgeBaseError, match=rf"clip {clips[0]} \(clip{clips[0]}\): 'audio/clip{clips[0]}.wav': no"
    ):
        with_audio.examples(hits, encoder)  # the root is given, but the clip's file is not there
    (tmp_path / "audio").mkdir()
    for clip in clips:
        sf.write(tmp_path / "audio" / f"clip{clip}.wav", np.zeros(480, np.float32), 48000)
    examples = with_audio.examples(hits, encoder)
    assert calls == [[str((tmp_path / "audio" / f"clip{clip}.wav").resolve()) for clip in clips]]
    assert all(np.all(np.asarray(example["audio_tokens"]) == 1) for example in examples[0])
    with_audio.examples(hits, encoder)
    assert len(calls) == 1  # cached


def test_pass_2_never_reads_a_clip_location_that_escapes_its_root(tmp_path):
    """A stale KB's clip recorded as `../outside/clip.wav` under root `corpus`: refused before any audio is read."""
    rows, clips, tokens = synthetic_kb(seed=3)
    escaping = pa.array(["../outside/clip.wav"] * clips.num_rows, pa.string())
    folder = write_synthetic(tmp_path / "kb", rows, clips.set_column(4, "audio_path", escaping), tokens)
    (tmp_path / "corpus").mkdir()
    (tmp_path / "outside").mkdir()
    sf.write(tmp_path / "outside" / "clip.wav", np.zeros(480, np.float32), 48000)  # audio, but outside the root
    kb = PairCapKnowledgeBase.from_pretrained(folder, audio_roots={"corpus": tmp_path / "corpus"})
    kb.check_tokens("x" * 64)
    hits = kb.search(np.asarray(rows["audio_embedding"][:1], dtype=np.float32), mode="audio2audio", top_k=2)

    def encoder(audio):
        pytest.fail(f"the escaping files were read: {audio}")

    with pytest.raises(KnowledgeBaseError, match=r"clip \d+ \(clip\d+\): '../outside/clip.wav': outside root 'corpus'"):
        kb.examples(hits, encoder)


def test_an_index_only_kb_searches_and_has_no_tokens(tmp_path):
    rows, clips, tokens = synthetic_kb(seed=2)
    folder = write_synthetic(tmp_path / "index-only", rows, clips, tokens, with_tokens=False)
    assert not (folder / TOKENS_FILE).exists()
    kb = PairCapKnowledgeBase.from_pretrained(folder)
    assert not kb.metadata.has_tokens and kb.tokens_state == "absent"
    hits = kb.search(np.asarray(rows["audio_embedding"][:1], dtype=np.float32), mode="audio2audio", top_k=3)
    assert len(hits[0]) == 3
    with pytest.raises(KnowledgeBaseError, match="index-only"):
        kb.examples(hits)


def test_save_pretrained_round_trip(kb_folder, tmp_path):
    folder, rows, _ = kb_folder
    kb = PairCapKnowledgeBase.from_pretrained(folder)
    copy = PairCapKnowledgeBase.from_pretrained(kb.save_pretrained(tmp_path / "copy"))
    queries = np.asarray(rows["audio_embedding"][:4], dtype=np.float32)
    assert kb.search(queries, mode="audio2audio", top_k=4) == copy.search(queries, mode="audio2audio", top_k=4)
    assert copy.rows["caption"] == rows["caption"] and copy.metadata.token_fingerprint == TOKENS


def test_a_kb_rebuilt_in_place_loads_its_new_rows(tmp_path):
    folder = tmp_path / "kb"
    for seed in (0, 1):
        rows, clips, tokens = synthetic_kb(n_clips=6, n_text_only=5, seed=seed)
        write_synthetic(folder, rows, clips, tokens)
        assert load_dataset(str(folder), split="train")["text_embedding"] == rows["text_embedding"]
        assert PairCapKnowledgeBase.from_pretrained(folder).rows["text_embedding"] == rows["text_embedding"]


def test_kb_from_another_retrieval_space_is_refused(kb_folder):
    folder, _, _ = kb_folder
    with pytest.raises(KnowledgeBaseError, match="embedded in another retrieval space"):
        PairCapKnowledgeBase.from_pretrained(folder, retrieval_fingerprint="0" * 64)


def test_a_format_1_kb_names_the_upgrade_command(kb_folder, tmp_path):
    folder, _, _ = kb_folder
    old = tmp_path / "old"
    shutil.copytree(folder, old)
    metadata = json.loads((old / "paircap_kb.json").read_text())
    (old / "paircap_kb.json").write_text(json.dumps({**metadata, "format_version": 1}))
    with pytest.raises(KnowledgeBaseError, match=r"format 1.*paircap kb upgrade --kb"):
        PairCapKnowledgeBase.from_pretrained(old)


def test_missing_corrupt_and_mismatched_files(kb_folder, tmp_path):
    import faiss

    folder, rows, _ = kb_folder
    broken = tmp_path / "kb"
    shutil.copytree(folder, broken)
    unrecorded = json.loads((broken / "paircap_kb.json").read_text())
    del unrecorded["files"]  # as a KB written before sizes and hashes were recorded: the structural checks only
    (broken / "paircap_kb.json").write_text(json.dumps(unrecorded))  # test_kb_integrity.py: with the record
    tokens = (broken / TOKENS_FILE).read_bytes()
    (broken / TOKENS_FILE).write_bytes(tokens[: len(tokens) // 2])
    with pytest.raises(KnowledgeBaseError, match=r"tokens.safetensors: not a readable token file"):
        PairCapKnowledgeBase.from_pretrained(broken)
    (broken / TOKENS_FILE).write_bytes(tokens)
    (broken / INDEX_FILE).unlink()
    with pytest.raises(KnowledgeBaseError, match=r"index.faiss: the FAISS index file is missing"):
        PairCapKnowledgeBase.from_pretrained(broken)
    (broken / INDEX_FILE).write_bytes(b"not an index at all")
    with pytest.raises(KnowledgeBaseError, match=r"index.faiss: not a readable FAISS index"):
        PairCapKnowledgeBase.from_pretrained(broken)
    small = faiss.IndexFlatIP(D_A + D_T)
    small.add(np.zeros((10, D_A + D_T), dtype=np.float32))
    faiss.write_index(small, str(broken / INDEX_FILE))
    with pytest.raises(KnowledgeBaseError, match="the index has 10 vectors but the KB has 290 rows"):
        PairCapKnowledgeBase.from_pretrained(broken)
    metadata = json.loads((broken / "paircap_kb.json").read_text())
    (broken / "paircap_kb.json").write_text(json.dumps({**metadata, "num_clips": 7}))
    with pytest.raises(KnowledgeBaseError, match="clips.parquet: 50 clips but paircap_kb.json records 7"):
        PairCapKnowledgeBase.from_pretrained(broken)
    (broken / "paircap_kb.json").write_text(json.dumps({**metadata, "num_pairs": 5}))
    with pytest.raises(KnowledgeBaseError, match="290 rows but paircap_kb.json records 5"):
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
    folder, _, _ = kb_folder
    rng = np.random.default_rng(2)
    audio_q, text_q = unit_rows(rng, 4, D_A), unit_rows(rng, 4, D_T)
    with_faiss = PairCapKnowledgeBase.from_pretrained(folder).search(audio_q, text_q, top_k=5)
    on_torch = PairCapKnowledgeBase.from_pretrained(folder, device="cpu")
    assert on_torch.index.faiss_index is None  # the device tensor is the one copy
    with_torch = on_torch.search(audio_q, text_q, top_k=5)
    assert [[h.pair_id for h in q] for q in with_faiss] == [[h.pair_id for h in q] for q in with_torch]
    for fast, exact in zip(with_faiss, with_torch, strict=True):
        np.testing.assert_allclose([h.text_score for h in fast], [h.text_score for h in exact], atol=1e-6)


@pytest.mark.parametrize("factory", ["HNSW16", "IVF4,Flat"])
def test_approximate_indexes_load_and_give_component_scores(tmp_path, factory):
    rows, clips, tokens = synthetic_kb(n_clips=120, seed=3)
    folder = write_synthetic(tmp_path / "approx", rows, clips, tokens, factory=factory)
    kb = PairCapKnowledgeBase.from_pretrained(folder)
    assert 0.5 <= kb.metadata.index_recall_at_10 <= 1.0
    query = np.asarray(rows["audio_embedding"][:1], dtype=np.float32)
    text = np.asarray(rows["text_embedding"][:1], dtype=np.float32)
    for hit in kb.search(query, text, mode="pair2pair", top_k=4)[0]:
        assert hit.audio_score == pytest.approx(float(np.dot(rows[hit.row]["audio_embedding"], query[0])), abs=1e-5)
        assert hit.text_score == pytest.approx(float(np.dot(rows[hit.row]["text_embedding"], text[0])), abs=1e-5)


def test_push_uploads_the_whole_folder_as_a_dataset_repo(kb_folder, monkeypatch):
    from huggingface_hub import HfApi

    calls = {}
    monkeypatch.setattr(HfApi, "create_repo", lambda self, repo_id, **kw: calls.setdefault("create", (repo_id, kw)))
    monkeypatch.setattr(HfApi, "upload_folder", lambda self, **kw: calls.setdefault("upload", kw) and "commit-url")
    folder, _, _ = kb_folder
    kb = PairCapKnowledgeBase.from_pretrained(folder)
    assert kb.push_to_hub("org/refined-audio-kb", private=True) == "commit-url"
    assert calls["create"] == ("org/refined-audio-kb", {"repo_type": "dataset", "private": True, "exist_ok": True})
    assert calls["upload"]["folder_path"] == str(folder) and calls["upload"]["repo_type"] == "dataset"


def test_a_hub_id_resolves_through_snapshot_download(kb_folder, monkeypatch):
    import huggingface_hub

    folder, rows, _ = kb_folder
    requested = {}

    def fake_snapshot_download(repo_id, repo_type=None, revision=None):
        requested.update(repo_id=repo_id, repo_type=repo_type, revision=revision)
        return str(folder)

    monkeypatch.setattr(huggingface_hub, "snapshot_download", fake_snapshot_download)
    kb = PairCapKnowledgeBase.from_pretrained("org/refined-audio-kb", revision="v1")
    assert requested == {"repo_id": "org/refined-audio-kb", "repo_type": "dataset", "revision": "v1"}
    assert len(kb) == len(rows) and kb.index.faiss_index.ntotal == len(rows)
