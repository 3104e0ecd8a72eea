"""`paircap kb upgrade`: a format-1 KB (tokens in every caption row, one encoder fingerprint) becomes
format 2 in place, checked against the release that embedded it."""

import json
import os
import subprocess
import sys
from pathlib import Path

import faiss
import numpy as np
import pytest
from datasets import Array2D, Dataset, Features, List, Value

from datasets_scripts.upgrade import legacy_fingerprint
from modeling_paircap.kb_format_paircap import KnowledgeBaseError
from modeling_paircap.knowledge_base_paircap import PairCapKnowledgeBase

REPO = Path(__file__).resolve().parents[2]


def write_format_1(folder: Path, model, fingerprint: str) -> Dataset:
    """A format-1 folder as the first release wrote it: 4 clips x 3 captions with per-row tokens, 2 text-only rows."""
    rng = np.random.default_rng(0)
    d, token_dim = model.config.clap_config.projection_dim, model.config.encoder_hidden_size
    clip_audio = rng.standard_normal((4, d)).astype(np.float32)
    clip_tokens = [rng.standard_normal((3 + c, token_dim)).astype(np.float16) for c in range(4)]
    rows = [
        {"pair_id": f"c{c}/{k}", "audio_id": f"clip{c}", "caption": f"clip {c} caption {k}", "has_audio": True,
         "audio_embedding": clip_audio[c], "audio_tokens": clip_tokens[c], "is_long": c == 2}
        for c in range(4) for k in range(3)
    ] + [
        {"pair_id": f"t{k}", "audio_id": "", "caption": f"text {k}", "has_audio": False,
         "audio_embedding": np.zeros(d, np.float32), "audio_tokens": np.zeros((0, token_dim), np.float16),
         "is_long": False}
        for k in range(2)
    ]  # fmt: skip
    for row in rows:
        row.update(source="syn", split="train", duration=5.0, text_embedding=rng.standard_normal(d).astype(np.float32))
    features = Features(
        {
            "pair_id": Value("string"), "audio_id": Value("string"), "caption": Value("string"),
            "source": Value("string"), "split": Value("string"), "duration": Value("float32"),
            "has_audio": Value("bool"), "is_long": Value("bool"),
            "audio_embedding": List(Value("float32"), length=d), "text_embedding": List(Value("float32"), length=d),
            "audio_tokens": Array2D(shape=(None, token_dim), dtype="float16"),
        }
    )  # fmt: skip
    dataset = Dataset.from_list(rows, features=features)
    (folder / "data").mkdir(parents=True)
    dataset.to_parquet(str(folder / "data" / "train-old-00000-of-00001.parquet"))
    index = faiss.IndexFlatIP(2 * d)
    index.add(
        np.concatenate(
            [np.stack([r["audio_embedding"] for r in rows]), np.stack([r["text_embedding"] for r in rows])], 1
        )
    )
    faiss.write_index(index, str(folder / "index.faiss"))
    metadata = {
        "encoder_fingerprint": fingerprint, "audio_dim": d, "text_dim": d, "token_dim": token_dim,
        "audio_tokens_per_window": model.config.audio_tokens_per_window, "num_pairs": len(rows), "num_text_only": 2,
        "index_factory": "Flat", "index_recall_at_10": None, "sources": {"syn": 14}, "recipe": {}, "build_id": "old",
        "format_version": 1,
    }  # fmt: skip
    (folder / "paircap_kb.json").write_text(json.dumps(metadata))
    return dataset


def upgrade(folder: Path, release: Path) -> subprocess.CompletedProcess:
    command = [sys.executable, "-m", "paircap.cli", "kb", "upgrade", "--kb", str(folder), "--model", str(release)]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(REPO)}
    return subprocess.run(command, capture_output=True, text=True, env=env, cwd=REPO, timeout=300)


def test_a_format_1_kb_upgrades_in_place(tiny_release, tmp_path):
    release, model, _ = tiny_release
    folder = tmp_path / "kb"
    old = write_format_1(folder, model, legacy_fingerprint(model))
    with pytest.raises(KnowledgeBaseError, match="paircap kb upgrade"):
        PairCapKnowledgeBase.from_pretrained(folder)
    result = upgrade(folder, release)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "14 pairs over 4 clips, format 2" in result.stdout
    kb = PairCapKnowledgeBase.from_pretrained(folder, retrieval_fingerprint=model.retrieval_fingerprint())
    kb.check_tokens(model.token_fingerprint())
    assert kb.tokens_state == "current" and len(kb.tokens) == 4 and kb.rows["caption"] == old["caption"]
    assert kb.clip_index.tolist() == [0, 0, 0, 1, 1, 1, 2, 2, 2, 3, 3, 3, -1, -1]
    for clip in range(4):
        np.testing.assert_array_equal(kb.tokens.get([clip])[0].numpy(), np.asarray(old[3 * clip]["audio_tokens"]))
    assert kb.is_long.tolist() == [False, False, True, False]
    query = np.asarray(old["audio_embedding"][3:4], dtype=np.float32)
    assert [hit.audio_id for hit in kb.search(query, mode="audio2audio", top_k=4)[0]][0] == "clip1"


def test_a_format_1_kb_of_another_encoder_is_refused(tiny_release, tmp_path):
    release, model, _ = tiny_release
    write_format_1(tmp_path / "kb", model, "0" * 64)
    result = upgrade(tmp_path / "kb", release)
    assert result.returncode != 0 and "embedded by another encoder" in result.stderr
