"""The mini release committed in `releases/` (what `--model mini` names): small, honest about what it is, carrying
this repo's remote code, and captioning real audio offline from a fresh checkout."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pyarrow.parquet as pq
from huggingface_hub import DatasetCard, ModelCard

from modeling_paircap.audio_locations_paircap import is_absolute
from modeling_paircap.knowledge_base_paircap import PairCapKnowledgeBase
from paircap.releases import LOCAL_RELEASES

REPO = Path(__file__).resolve().parents[1]
RELEASE = LOCAL_RELEASES["mini"]
MAX_BYTES = 20 * 2**20  # issue 12: at most 20 MB with its knowledge base


def test_the_shipped_release_is_small_and_says_what_it_is():
    size = sum(path.stat().st_size for path in RELEASE.rglob("*") if path.is_file())
    assert 0 < size <= MAX_BYTES, size
    card = ModelCard.load(RELEASE / "README.md")
    assert "50-event toy" in card.text and "not a useful audio captioner" in card.text
    assert card.data.license == "cc-by-nc-4.0" and "toy-model" in card.data.tags  # its LM learned Clotho's captions
    assert card.data.eval_results  # the results table of its own evaluation
    kb_card = DatasetCard.load(RELEASE / "knowledge_base" / "README.md").data
    clips = json.loads((RELEASE / "knowledge_base" / "paircap_kb.json").read_text())
    assert kb_card.license and clips["num_pairs"] > 0


def test_the_shipped_release_carries_this_repos_remote_code():
    """Its remote code is `modeling_paircap/` as it is now (re-copy it, or re-pack, after changing the model code)."""
    for source in sorted((REPO / "modeling_paircap").glob("*_paircap.py")):
        shipped = RELEASE / source.name
        assert shipped.is_file() and shipped.read_bytes() == source.read_bytes(), f"{shipped} differs from {source}"


def test_model_mini_captions_real_audio_offline(shared_data, tmp_path):
    clips = sorted((shared_data / "esc50_cc").glob("*.flac"))[:2]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(REPO)}
    result = subprocess.run(
        [sys.executable, "-m", "paircap.cli", "caption", *map(str, clips), "--model", "mini", "--no-progress"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    records = [json.loads(line) for line in result.stdout.splitlines()]
    assert [record["file"] for record in records] == [str(clip) for clip in clips]
    for record in records:
        assert record["caption"] and record["zero_shot_caption"] and record["retrieved"]
        assert all(pair["caption"] and pair["audio_id"] for pair in record["retrieved"])


def test_the_shipped_kb_records_clips_under_named_roots_and_they_play_from_the_shared_data(shared_data):
    """No build-machine path: each clip lives under a root name (`esc50_cc` for the real clips, `esc50_mini` for the
    mini run's mixtures), so `--audio-root esc50_cc=../shared/data/esc50_cc` finds the real ones anywhere."""
    folder = RELEASE / "knowledge_base"
    clips = pq.read_table(folder / "clips.parquet")
    roots, paths = clips.column("audio_root").to_pylist(), clips.column("audio_path").to_pylist()
    assert set(roots) == {"esc50_cc", "esc50_mini"} and not any(is_absolute(path) for path in paths)
    kb = PairCapKnowledgeBase.from_pretrained(folder, audio_roots={"esc50_cc": shared_data / "esc50_cc"})
    real = [clip for clip, root in enumerate(roots) if root == "esc50_cc"]
    assert len(real) == 64
    assert all(Path(kb.audio_location(clip)).parent == (shared_data / "esc50_cc").resolve() for clip in real)
