"""A knowledge base survives stage 2: the retrieval space is the frozen CLAP, so the KB built before training searches
identically with the trained release; its clip tokens are reported stale until `datasets_scripts tokens` refreshes
them (resumably), and then hold exactly what the trained audio tower makes of those clips."""

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
from datasets import Dataset

from datasets_scripts import clip_tokens
from datasets_scripts.build_kb import build_knowledge_base
from modeling_paircap.kb_format_paircap import KnowledgeBaseError
from modeling_paircap.knowledge_base_paircap import PairCapKnowledgeBase
from modeling_paircap.modeling_paircap import PairCapForConditionalGeneration
from modeling_paircap.processing_paircap import PairCapProcessor
from modeling_paircap.retrieval_paircap import PairCapRetriever
from paircap.training.config import TrainConfig
from paircap.training.loop import train

REPO = Path(__file__).resolve().parents[2]
SR = 48000
CAPTIONS = ["A low hum drones.", "A whistle rises.", "Rain falls.", "A dog barks.", "Birds chirp.", "A bell rings."]


@pytest.fixture(scope="module")
def clips(tmp_path_factory) -> list[str]:
    folder = tmp_path_factory.mktemp("clips")
    rng = np.random.default_rng(0)
    paths = []
    for i, seconds in enumerate([3, 5, 4, 6, 2, 12]):
        t = np.arange(int(seconds * SR)) / SR
        wave = 0.2 * np.sin(2 * np.pi * 180 * (i + 1) * t) + 0.03 * rng.standard_normal(len(t))
        sf.write(folder / f"clip{i}.wav", wave.astype(np.float32), SR)
        paths.append(str(folder / f"clip{i}.wav"))
    return paths


def pairs(paths: list[str]) -> Dataset:
    """Two captions per clip, so the KB holds each clip's tokens once for two rows."""
    rows = [
        {"pair_id": f"syn/train/clip{i}/{k}", "audio_id": f"clip{i}", "audio": {"path": p, "bytes": None},
         "caption": f"{CAPTIONS[i]} take {k}", "source": "syn", "split": "train", "duration": None}
        for i, p in enumerate(paths) for k in range(2)
    ]  # fmt: skip
    return Dataset.from_list(rows)


@pytest.fixture(scope="module")
def trained(tiny_release, clips, tmp_path_factory):
    """(KB folder built before training, the stage-2 release trained for 3 steps with the audio tower unfrozen)."""
    folder, model, processor = tiny_release
    root = tmp_path_factory.mktemp("train")
    kb = build_knowledge_base(
        pairs(clips), model, processor, root / "kb", {"name": "before"}, shard_size=4, num_workers=0, progress=False
    )
    pairs(clips).save_to_disk(str(root / "pairs"))
    cfg = TrainConfig(
        stage="raft", model_name_or_path=str(folder), output_dir=str(root / "run"), train_pairs=[str(root / "pairs")],
        learning_rate=5e-2, encoder_lr_scale=1.0, max_steps=3, per_device_batch_size=4, num_workers=0,
        warmup_ratio=0.0, log_every=1, save_every=100,
    )  # fmt: skip
    return kb, train(cfg)


def queries(model, processor, paths):
    inputs = processor(audio=paths)
    with torch.no_grad():
        return model.encode_audio(inputs["input_features"], inputs["audio_window_counts"]).audio_embeds.numpy()


def test_the_kb_built_before_training_searches_identically_after_it(tiny_release, clips, trained):
    _, model, processor = tiny_release
    kb_folder, release = trained
    after = PairCapForConditionalGeneration.from_pretrained(release).eval()
    assert after.config.separate_audio_tower
    assert after.retrieval_fingerprint() == model.retrieval_fingerprint()
    assert after.token_fingerprint() != model.token_fingerprint()  # the audio tower trained
    np.testing.assert_array_equal(queries(after, processor, clips), queries(model, processor, clips))
    text = np.asarray(PairCapKnowledgeBase.from_pretrained(kb_folder).rows["text_embedding"][:6], dtype=np.float32)
    results, states = [], []
    for encoder in (model, after):
        retriever = PairCapRetriever.from_pretrained(kb_folder, processor)
        encoder.set_retriever(retriever)  # the retrieval fingerprint matches: accepted
        kb = retriever.knowledge_base
        hits = kb.search(queries(encoder, processor, clips), text, mode="pair2pair", top_k=4)
        results.append([[(h.pair_id, h.score, h.audio_score, h.text_score) for h in q] for q in hits])
        states.append(kb.tokens_state)
    model.set_retriever(None)
    assert results[0] == results[1]
    assert states == ["current", "stale"]


def test_tokens_refresh_resumes_and_then_pass_2_gets_the_trained_towers_tokens(tiny_release, clips, trained, tmp_path,
                                                                                monkeypatch):  # fmt: skip
    _, _, processor = tiny_release
    kb_folder, release = trained
    after = PairCapForConditionalGeneration.from_pretrained(release).eval()
    stale = PairCapKnowledgeBase.from_pretrained(kb_folder)
    stale.check_tokens(after.token_fingerprint())
    with pytest.raises(KnowledgeBaseError, match="another token encoder"):
        stale.clip_tokens([0])

    encoded = []
    original = clip_tokens._encode_shard

    def interrupted(embedder, shards, shard, locations, start):
        if shard == 1:
            raise KeyboardInterrupt("killed")
        encoded.append(shard)
        original(embedder, shards, shard, locations, start)

    monkeypatch.setattr(clip_tokens, "_encode_shard", interrupted)
    work = tmp_path / "work"
    with pytest.raises(KnowledgeBaseError, match=r"\['absolute'\]: pass --root absolute=DIR"):  # absolute paths
        clip_tokens.refresh_tokens(kb_folder, after, processor, {}, work, num_workers=0, progress=False)
    roots = {"absolute": str(Path(clips[0]).parent)}  # the opt-in: the folder the KB's absolute paths must lie in
    with pytest.raises(KeyboardInterrupt):
        clip_tokens.refresh_tokens(
            kb_folder, after, processor, roots, work, shard_size=2, num_workers=0, progress=False
        )
    assert encoded == [0] and PairCapKnowledgeBase.from_pretrained(kb_folder).metadata.token_fingerprint != (
        after.token_fingerprint()
    )
    monkeypatch.setattr(clip_tokens, "_encode_shard", original)
    finished = (work / "shards" / "00000.parquet").stat().st_mtime_ns
    command = [sys.executable, "-m", "paircap.cli", "kb", "tokens", "--kb", str(kb_folder), "--model", str(release),
               "--work-dir", str(work), "--shard-size", "2", "--num-workers", "0",
               "--root", f"absolute={roots['absolute']}"]  # fmt: skip
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(REPO)}
    result = subprocess.run(command, capture_output=True, text=True, env=env, cwd=REPO, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "refreshed the tokens of 6 clips (0 failed" in result.stdout
    assert (work / "shards" / "00000.parquet").stat().st_mtime_ns == finished  # the finished shard was kept
    retriever = PairCapRetriever.from_pretrained(release, knowledge_base=str(kb_folder))
    after_processor = retriever.processor
    assert isinstance(after_processor, PairCapProcessor)
    after.set_retriever(retriever)
    kb = retriever.knowledge_base
    assert kb.tokens_state == "current" and len(kb.tokens) == 6
    hits = kb.search(queries(after, after_processor, clips[:2]), mode="audio2audio", top_k=3)
    examples = kb.examples(hits)
    for query_hits, query_examples in zip(hits, examples, strict=True):
        for hit, example in zip(query_hits, query_examples, strict=True):
            expected = retriever.encode_clip_tokens(after, [clips[int(hit.audio_id[4:])]])[0]
            torch.testing.assert_close(example["audio_tokens"].float(), expected.half().float(), rtol=0, atol=0)
