"""End to end on the real data: a KB built by the CLI from real Clotho clips and real AudioCaps captions, reloaded
in a fresh process and checked against brute force; then `paircap caption` with retrieval over real clips."""

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
from datasets import load_dataset

from paircap.cli import main as paircap_main

REPO = Path(__file__).resolve().parents[1]
MODES = ("audio2audio", "audio2text", "audio2mixture", "pair2pair")
WEIGHTS = (0.0, 0.25, 0.5, 1.0)


def test_kb_built_from_real_clips_and_captions(real_kb, tiny_release):
    _, model, _ = tiny_release
    metadata = json.loads((real_kb / "paircap_kb.json").read_text())
    assert metadata["num_pairs"] == 35 + 2475 and metadata["num_text_only"] == 2475
    assert metadata["sources"] == {"clotho": 35, "audiocaps": 2475}
    assert metadata["encoder_fingerprint"] == model.encoder_fingerprint()
    rows = load_dataset(str(real_kb), split="train")
    clotho = rows.filter(lambda row: row["source"] == "clotho")
    assert set(clotho["audio_id"]) and all(
        len(t) >= 2 * model.config.audio_tokens_per_window for t in clotho["audio_tokens"]
    )


RELOAD = textwrap.dedent(
    """
    import json, sys
    import numpy as np
    from modeling_paircap.knowledge_base_paircap import PairCapKnowledgeBase
    folder, queries = sys.argv[1], json.loads(sys.argv[2])
    kb = PairCapKnowledgeBase.from_pretrained(folder)
    audio, text = np.asarray(queries["audio"], np.float32), np.asarray(queries["text"], np.float32)
    out = {}
    for mode in %r:
        for weight in %r:
            hits = kb.search(audio, text, mode=mode, fusion_weight=weight, top_k=8)
            out[f"{mode}/{weight}"] = [[[h.pair_id, h.score, h.audio_score, h.text_score] for h in q] for q in hits]
    print(json.dumps(out))
    """
) % (MODES, WEIGHTS)


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
    for mode in MODES:
        for weight in WEIGHTS:
            scores = {
                "audio2audio": qa @ audio.T,
                "audio2text": qa @ text.T,
                "audio2mixture": qa @ audio.T + qa @ text.T,
                "pair2pair": weight * (qa @ audio.T) + (1 - weight) * (qt @ text.T),
            }[mode]
            for q, hits in enumerate(remote[f"{mode}/{weight}"]):
                order = np.lexsort((np.arange(len(rows)), -scores[q]))[:8]
                rows_of_hits = [row_of[h[0]] for h in hits]
                for position, (hit_row, expected_row) in enumerate(zip(rows_of_hits, order, strict=True)):
                    # float32 search against float64 brute force: only scores within 1e-5 may swap places
                    gap = abs(scores[q][hit_row] - scores[q][expected_row])
                    assert hit_row == expected_row or gap < 1e-5, (mode, weight, q, position)
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
    # audio-to-audio: a real Clotho clip that is in the KB finds its own 5 captions first (same audio, S_A = 1)
    single = tmp_path / "own.jsonl"
    argv = ["caption", str(clips[0]), "--model", str(folder), "--kb", str(real_kb), "--mode", "audio2audio"]
    assert paircap_main([*argv, "--top-k", "6", "--max-new-tokens", "4", "--output", str(single), "--no-progress"]) == 0
    own = json.loads(single.read_text())["retrieved"]
    stem = clips[0].stem
    assert [Path(p["audio_id"]).stem for p in own[:5]] == [stem] * 5 and Path(own[5]["audio_id"]).stem != stem
    assert all(p["audio_score"] == pytest.approx(1.0, abs=1e-4) for p in own[:5])
