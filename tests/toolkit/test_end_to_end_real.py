"""End to end on the real data: a KB built by the CLI from real Clotho clips and real AudioCaps captions, reloaded
in a fresh process and checked against brute force; then `paircap caption` with retrieval over real clips."""

import itertools
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
from datasets import load_dataset

from modeling_paircap.tokens_paircap import ClipTokenStore
from paircap.cli import main as paircap_main

REPO = Path(__file__).resolve().parents[2]
MODES = ("audio2audio", "audio2text", "audio2mixture", "pair2pair")
WEIGHTS = (0.0, 0.25, 0.5, 1.0)


def test_kb_built_from_real_clips_and_captions(real_kb, tiny_release):
    _, model, _ = tiny_release
    metadata = json.loads((real_kb / "paircap_kb.json").read_text())
    assert metadata["num_pairs"] == 35 + 2475 and metadata["num_text_only"] == 2475
    assert metadata["sources"] == {"clotho": 35, "audiocaps": 2475}
    assert metadata["retrieval_fingerprint"] == model.retrieval_fingerprint()
    assert metadata["token_fingerprint"] == model.token_fingerprint()
    assert metadata["num_clips"] == 7  # 7 Clotho clips x 5 captions; the AudioCaps captions have no audio
    rows = load_dataset(str(real_kb), split="train")
    assert "audio_tokens" not in rows.column_names
    clotho = rows.filter(lambda row: row["source"] == "clotho")
    clips = pq.read_table(real_kb / "clips.parquet")
    tokens = ClipTokenStore(real_kb / "tokens.safetensors")
    assert len(tokens) == clips.num_rows == 7 and tokens.fingerprint == model.token_fingerprint()
    # each clip's tokens are stored once, and every caption of the clip points at them
    links = set(zip(clotho["audio_id"], clotho["clip_index"], strict=True))  # one clip per audio id and back
    assert len(links) == len({audio_id for audio_id, _ in links}) == 7 and sorted(c for _, c in links) == list(range(7))
    assert all(clips.column("audio_id")[clip].as_py() == audio_id for audio_id, clip in links)
    assert all(len(t) >= 2 * model.config.audio_tokens_per_window for t in tokens.get(range(7)))
    assert set(rows.filter(lambda row: row["source"] == "audiocaps")["clip_index"]) == {-1}


RELOAD = textwrap.dedent(
    """
    import json, sys
    import numpy as np
    from modeling_paircap.knowledge_base_paircap import PairCapKnowledgeBase
    folder, queries = sys.argv[1], json.loads(sys.argv[2])
    kb = PairCapKnowledgeBase.from_pretrained(folder)
    audio, text = np.asarray(queries["audio"], np.float32), np.asarray(queries["text"], np.float32)
    out = {}
    for per_clip in (1, None):
        for mode in %r:
            for weight in %r:
                hits = kb.search(audio, text, mode=mode, fusion_weight=weight, top_k=8, max_pairs_per_clip=per_clip)
                scores = [[[h.pair_id, h.score, h.audio_score, h.text_score] for h in q] for q in hits]
                out[f"{per_clip}/{mode}/{weight}"] = scores
    print(json.dumps(out))
    """
) % (MODES, WEIGHTS)


def brute_force_order(scores: np.ndarray, clip_index: np.ndarray, k: int, distinct_clips: bool) -> np.ndarray:
    """The top-k rows by score (ties: row ascending); with `distinct_clips`, only each clip's best row (rows
    without audio, clip index -1, are each their own clip)."""
    order = np.lexsort((np.arange(len(scores)), -scores))
    if distinct_clips:
        keys = np.where(clip_index[order] >= 0, clip_index[order], -1 - order)
        _, first = np.unique(keys, return_index=True)
        order = order[np.sort(first)]
    return order[:k]


def test_reloaded_kb_in_a_fresh_process_equals_brute_force(real_kb):
    rows = load_dataset(str(real_kb), split="train")
    audio = np.asarray(rows["audio_embedding"], dtype=np.float64)
    text = np.asarray(rows["text_embedding"], dtype=np.float64)
    picks = [0, 12, 30]  # query with real Clotho pairs: their audio and a different pair's caption embedding
    queries = {"audio": audio[picks].tolist(), "text": text[[2000, 5, 100]].tolist()}
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(REPO)}
    result = subprocess.run(
        [sys.executable, "-c", RELOAD, str(real_kb), json.dumps(queries)],
        capture_output=True, text=True, env=env, cwd=REPO, timeout=300,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    remote = json.loads(result.stdout.strip().splitlines()[-1])
    qa, qt = np.asarray(queries["audio"]), np.asarray(queries["text"])
    row_of = {pair_id: row for row, pair_id in enumerate(rows["pair_id"])}
    clip_index = np.asarray(rows["clip_index"])
    for per_clip, mode, weight in itertools.product((1, None), MODES, WEIGHTS):
        scores = {
            "audio2audio": qa @ audio.T,
            "audio2text": qa @ text.T,
            "audio2mixture": qa @ audio.T + qa @ text.T,
            "pair2pair": weight * (qa @ audio.T) + (1 - weight) * (qt @ text.T),
        }[mode]
        for q, hits in enumerate(remote[f"{per_clip}/{mode}/{weight}"]):
            order = brute_force_order(scores[q], clip_index, 8, distinct_clips=per_clip == 1)
            rows_of_hits = [row_of[h[0]] for h in hits]
            assert len(rows_of_hits) == 8
            if per_clip == 1:  # one pair per clip: no two hits with audio share a clip
                hit_clips = [clip_index[row] for row in rows_of_hits if clip_index[row] >= 0]
                assert len(set(hit_clips)) == len(hit_clips), (mode, weight, q)
            for position, (hit_row, expected_row) in enumerate(zip(rows_of_hits, order, strict=True)):
                # float32 search against float64 brute force: only scores within 1e-5 may swap places
                gap = abs(scores[q][hit_row] - scores[q][expected_row])
                assert hit_row == expected_row or gap < 1e-5, (per_clip, mode, weight, q, position)
            np.testing.assert_allclose([h[1] for h in hits], scores[q][order], atol=1e-5)
            np.testing.assert_allclose([h[1] for h in hits], scores[q][rows_of_hits], atol=1e-5)
            np.testing.assert_allclose([h[2] for h in hits], qa[q] @ audio[rows_of_hits].T, atol=1e-5)


def test_caption_cli_with_retrieval_on_real_clips(real_kb, tiny_release, shared_data, tmp_path):
    folder, _, _ = tiny_release
    clips = (
        sorted((shared_data / "clotho_eval7").glob("*.flac"))[:3]
        + sorted((shared_data / "esc50_cc").glob("*.flac"))[:3]
    )
    broken = tmp_path / "broken.flac"
    broken.write_bytes(b"fLaC" + bytes(64))
    output = tmp_path / "captions.jsonl"
    argv = ["caption", *map(str, clips), str(broken), "--model", str(folder), "--kb", str(real_kb)]
    argv += ["--top-k", "3", "--weight", "0.5", "--batch-size", "4", "--max-new-tokens", "6", "--output", str(output)]
    assert paircap_main([*argv, "--no-progress"]) == 0
    records = [json.loads(line) for line in output.read_text().splitlines()]
    assert [Path(r["file"]).name for r in records] == [c.name for c in clips] + ["broken.flac"]
    assert "broken.flac" in records[-1]["error"]
    for record in records[:-1]:
        assert isinstance(record["caption"], str) and isinstance(record["zero_shot_caption"], str)
        assert len(record["retrieved"]) == 3
        assert all({"pair_id", "caption", "score", "audio_score", "text_score"} <= set(p) for p in record["retrieved"])
    # audio-to-audio: a real Clotho clip that is in the KB finds its own clip first (same audio, S_A = 1), once
    # (one of its 5 captions), then one pair of each of the other Clotho clips
    single = tmp_path / "own.jsonl"
    argv = ["caption", str(clips[0]), "--model", str(folder), "--kb", str(real_kb), "--mode", "audio2audio"]
    assert paircap_main([*argv, "--top-k", "6", "--max-new-tokens", "4", "--output", str(single), "--no-progress"]) == 0
    own = json.loads(single.read_text())["retrieved"]
    stems = [Path(p["audio_id"]).stem for p in own]
    assert len(own) == 6 and stems[0] == clips[0].stem and len(set(stems)) == 6
    assert own[0]["audio_score"] == pytest.approx(1.0, abs=1e-4)
    assert all(p["audio_score"] < own[0]["audio_score"] - 1e-4 for p in own[1:])
    rows = load_dataset(str(real_kb), split="train")
    own_captions = {row["caption"] for row in rows if Path(row["audio_id"]).stem == clips[0].stem}
    assert len(own_captions) == 5 and own[0]["caption"] in own_captions
