"""Retrieval inside `generate`: equivalence with the steps done by hand, modes, exclusions, KB swap, remote code."""

import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
from datasets import Dataset

from datasets_scripts.build_kb import build_knowledge_base
from modeling_paircap.kb_format_paircap import KnowledgeBaseError
from modeling_paircap.knowledge_base_paircap import PairCapKnowledgeBase
from modeling_paircap.retrieval_paircap import PairCapRetriever

SR = 48000
CAPTIONS = [
    "A low hum drones on.",
    "A high whistle rises.",
    "Rain falls on a metal roof.",
    "A dog barks in the distance.",
    "Birds chirp while wind blows.",
    "A bell rings several times.",
    "A car engine starts and idles.",
    "Water flows from a tap.",
]
GEN = {"max_new_tokens": 5, "do_sample": False}


def write_clip(path, seconds, frequency, seed):
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * SR)) / SR
    wave = 0.2 * np.sin(2 * np.pi * frequency * t * (1 + 0.1 * t / seconds)) + 0.02 * rng.standard_normal(len(t))
    sf.write(path, wave.astype(np.float32), SR)
    return str(path)


def write_clips(folder, kb_seconds, query_seconds, kb_hz, query_hz, query_seed) -> tuple[list[str], list[str]]:
    """KB clips `kb{i}.wav` and query clips `q{i}.wav` of the given lengths in seconds: tones rising from
    `kb_hz` (`query_hz`) times i + 1, with noise seeded i (`query_seed` + i)."""
    kb = [write_clip(folder / f"kb{i}.wav", s, kb_hz * (i + 1), i) for i, s in enumerate(kb_seconds)]
    queries = [
        write_clip(folder / f"q{i}.wav", s, query_hz * (i + 1), query_seed + i) for i, s in enumerate(query_seconds)
    ]
    return kb, queries


@pytest.fixture(scope="module")
def kb_clips(tmp_path_factory):
    """Eight synthetic KB clips (one of 45 s, so flagged long) and three query clips."""
    return write_clips(tmp_path_factory.mktemp("clips"), [3, 12, 5, 45, 8, 4, 21, 6], [4, 14, 6], 150, 160, 100)


def pairs_dataset(paths, captions, text_only_captions=()) -> Dataset:
    rows = [
        {"pair_id": f"syn/train/clip{i}/0", "audio_id": f"clip{i}", "audio": {"path": p, "bytes": None}, "caption": c}
        for i, (p, c) in enumerate(zip(paths, captions, strict=True))
    ]
    rows += [
        {"pair_id": f"txt/train/cap{i}/0", "audio_id": "", "audio": None, "caption": c}
        for i, c in enumerate(text_only_captions)
    ]
    return Dataset.from_list(
        [{**r, "source": r["pair_id"].split("/")[0], "split": "train", "duration": None} for r in rows]
    )


def build_kb(release, output: Path, pairs: Dataset, name: str) -> Path:
    """The KB of `pairs` in `output`, built with the tiny release's model and processor (4 pairs a shard)."""
    _, model, processor = release
    build_knowledge_base(pairs, model, processor, output, {"name": name}, shard_size=4, num_workers=0, progress=False)
    return output


def bundle_kb(release: Path, kb: Path, folder: Path) -> Path:
    """A copy of `release` in `folder` with `kb` shipped inside it, as `config.knowledge_base = "knowledge_base"`
    names it (the toolkit's releases' layout)."""
    shutil.copytree(release, folder)
    shutil.copytree(kb, folder / "knowledge_base")
    config = json.loads((folder / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps({**config, "knowledge_base": "knowledge_base"}))
    return folder


@pytest.fixture(scope="module")
def kb_folder(tiny_release, kb_clips, tmp_path_factory):
    pairs = pairs_dataset(kb_clips[0], CAPTIONS, ["Thunder rumbles far away.", "People talk in a market."])
    return build_kb(tiny_release, tmp_path_factory.mktemp("kb") / "kb", pairs, "test")


@pytest.fixture(scope="module")
def text_kb_folder(tiny_release, tmp_path_factory):
    return build_kb(tiny_release, tmp_path_factory.mktemp("kb") / "text-kb", pairs_dataset([], [], CAPTIONS), "text")


@pytest.fixture(scope="module")
def retriever(tiny_release, kb_folder):
    """The KB with the processor that builds pass-2 prompts; given to `generate` per call (`retriever=`), so the
    session's model keeps no retriever."""
    return PairCapRetriever.from_pretrained(kb_folder, tiny_release[2])


def captions_of(processor, sequences, inputs):
    return processor.decode_captions(sequences, inputs["input_ids"].shape[1])


def test_generative_pair2pair_equals_the_steps_done_by_hand(tiny_release, kb_clips, kb_folder, retriever):
    _, model, processor = tiny_release
    queries = kb_clips[1]
    inputs = processor(audio=queries)
    out = model.generate(**inputs, retriever=retriever, top_k=3, fusion_weight=0.5, return_dict_in_generate=True, **GEN)
    assert out.sequences.shape[0] == 3 and len(out.retrieved_pairs) == 3
    kb = PairCapKnowledgeBase.from_pretrained(kb_folder, retrieval_fingerprint=model.retrieval_fingerprint())
    for i, query in enumerate(queries):
        single = processor(audio=[query])
        with torch.no_grad():
            zero_shot = captions_of(processor, model.generate(**single, retrieval_mode="none", **GEN), single)
            encoding = model.encode_audio(single["input_features"], single["audio_window_counts"])
            text = model.embed_texts(**processor.clap_text_inputs(zero_shot))
        assert zero_shot == [out.zero_shot_captions[i]]
        hits = kb.search(encoding.audio_embeds.numpy(), text.numpy(), mode="generative_pair2pair", top_k=3)[0]
        assert [(h.pair_id, round(h.score, 5)) for h in hits] == [
            (p["pair_id"], round(p["score"], 5)) for p in out.retrieved_pairs[i]
        ]
        for hit in out.retrieved_pairs[i]:
            assert hit["score"] == pytest.approx(0.5 * hit["audio_score"] + 0.5 * hit["text_score"], abs=1e-5)
        query_segment = {"audio_tokens": encoding.audio_tokens.flatten(0, 1), "is_long": False}
        second = processor(audio=[query_segment], examples=kb.examples([hits]))
        with torch.no_grad():
            final = captions_of(processor, model.generate(**second, retrieval_mode="none", **GEN), second)
        assert final == captions_of(processor, out.sequences[i : i + 1], inputs)


def test_weight_one_equals_audio_to_audio(tiny_release, kb_clips, retriever):
    _, model, processor = tiny_release
    inputs = processor(audio=kb_clips[1])
    common = {"retriever": retriever, "top_k": 2, "return_dict_in_generate": True, **GEN}
    pair = model.generate(**inputs, retrieval_mode="generative_pair2pair", fusion_weight=1.0, **common)
    audio = model.generate(**inputs, retrieval_mode="audio2audio", **common)
    assert [[p["pair_id"] for p in q] for q in pair.retrieved_pairs] == [
        [p["pair_id"] for p in q] for q in audio.retrieved_pairs
    ]
    torch.testing.assert_close(pair.sequences, audio.sequences)


def test_top_k_zero_and_mode_none_equal_zero_shot(tiny_release, kb_clips, retriever):
    _, model, processor = tiny_release
    inputs = processor(audio=kb_clips[1])
    plain = model.generate(**inputs, **GEN)  # no retriever and no knowledge base configured: zero-shot
    no_pairs = model.generate(**inputs, retriever=retriever, top_k=0, **GEN)
    none = model.generate(**inputs, retriever=retriever, retrieval_mode="none", **GEN)
    torch.testing.assert_close(no_pairs, plain)
    torch.testing.assert_close(none, plain)


def test_every_mode_runs_and_reports_scores(tiny_release, kb_clips, retriever):
    _, model, processor = tiny_release
    inputs = processor(audio=kb_clips[1][:2])
    for mode in ("audio2text", "audio2mixture", "pair2pair"):
        texts = ["A dog barks.", "Rain on a roof."] if mode == "pair2pair" else None
        out = model.generate(
            **inputs, retriever=retriever, retrieval_mode=mode, text_queries=texts, top_k=2,
            return_dict_in_generate=True, **GEN,
        )  # fmt: skip
        assert [len(q) for q in out.retrieved_pairs] == [2, 2] and out.zero_shot_captions is None
    with pytest.raises(ValueError, match="needs text_queries"):
        model.generate(**inputs, retriever=retriever, retrieval_mode="pair2pair", **GEN)
    with pytest.raises(ValueError, match="No knowledge base to retrieve from"):
        model.generate(**inputs, retrieval_mode="audio2audio", **GEN)
    out = model.generate(**inputs, retriever=retriever, top_k=1, **GEN)
    assert out.shape[0] == 2


def test_exclude_ids_keep_a_query_from_retrieving_itself(tiny_release, kb_clips, retriever):
    _, model, processor = tiny_release
    inputs = processor(audio=kb_clips[0][:2])
    common = {"retriever": retriever, "retrieval_mode": "audio2audio", "top_k": 3}
    own = model.generate(**inputs, **common, return_dict_in_generate=True, **GEN)
    assert [q[0]["audio_id"] for q in own.retrieved_pairs] == ["clip0", "clip1"]
    assert own.retrieved_pairs[0][0]["audio_score"] == pytest.approx(1.0, abs=1e-4)
    excluded = model.generate(
        **inputs, **common, exclude_ids=[{"clip0"}, {"syn/train/clip1/0"}], return_dict_in_generate=True, **GEN
    )
    assert "clip0" not in [p["audio_id"] for p in excluded.retrieved_pairs[0]]
    assert "syn/train/clip1/0" not in [p["pair_id"] for p in excluded.retrieved_pairs[1]]


def test_long_kb_clip_brings_its_length_token(tiny_release, kb_clips, kb_folder):
    _, model, processor = tiny_release
    kb = PairCapKnowledgeBase.from_pretrained(kb_folder)
    long_row = kb.rows["pair_id"].index("syn/train/clip3/0")
    hit = kb.search(np.asarray(kb.rows[long_row]["audio_embedding"])[None], mode="audio2audio", top_k=1)
    example = kb.examples(hit)[0][0]
    assert example["is_long"] and example["audio_tokens"].shape[0] == 3 * model.config.audio_tokens_per_window
    second = processor(audio=[kb_clips[1][0]], examples=[[example]])
    assert (second["input_ids"] == model.config.long_audio_token_id).sum() == 1


def test_swapping_in_a_text_only_knowledge_base(tiny_release, kb_clips, retriever, text_kb_folder):
    """RECAP's replaceable caption datastore: audio-to-text retrieval, examples enter as captions only."""
    _, model, processor = tiny_release
    inputs = processor(audio=kb_clips[1][:2])
    text_only = PairCapRetriever.from_pretrained(text_kb_folder, processor)
    out = model.generate(
        **inputs, retriever=text_only, retrieval_mode="audio2text", top_k=3, return_dict_in_generate=True, **GEN
    )
    assert all(p["pair_id"].startswith("txt/") for q in out.retrieved_pairs for p in q)
    assert all(p["audio_score"] == 0.0 for q in out.retrieved_pairs for p in q)
    other = model.generate(**inputs, retriever=retriever, top_k=3, return_dict_in_generate=True, **GEN)
    assert any(p["pair_id"].startswith("syn/") for q in other.retrieved_pairs for p in q)


def test_a_knowledge_base_from_another_retrieval_space_is_refused(tiny_release, retriever):
    import copy

    _, model, processor = tiny_release
    other = copy.deepcopy(model)
    with torch.no_grad():
        other.clap.audio_projection.linear1.weight.add_(0.1)
    inputs = processor(audio=[np.ones(SR, dtype=np.float32) * 0.1], sampling_rate=SR)
    with pytest.raises(KnowledgeBaseError, match="embedded in another retrieval space"):
        other.generate(**inputs, retriever=retriever, **GEN)
    with pytest.raises(KnowledgeBaseError, match="embedded in another retrieval space"):
        other.set_retriever(retriever)
    assert other.retriever is None
    model.generate(**inputs, retriever=retriever, **GEN)  # the same retriever still serves its own encoder
    weight = model.clap.audio_projection.linear1.weight
    original = weight.detach().clone()
    with torch.no_grad():
        weight.add_(0.1)  # weights changed in place after the retriever was checked
    try:
        with pytest.raises(KnowledgeBaseError, match="embedded in another retrieval space"):
            model.generate(**inputs, retriever=retriever, **GEN)
    finally:
        with torch.no_grad():
            weight.copy_(original)


def test_beams_and_several_sequences_per_query(tiny_release, kb_clips, retriever):
    _, model, processor = tiny_release
    inputs = processor(audio=kb_clips[1][:2])
    out = model.generate(
        **inputs, retriever=retriever, top_k=2, num_beams=3, num_return_sequences=2, max_new_tokens=4,
        return_dict_in_generate=True, output_scores=True,
    )  # fmt: skip
    assert out.sequences.shape[0] == 4 and len(out.zero_shot_captions) == 2 and out.sequences_scores.shape == (4,)
    torch.testing.assert_close(
        out.sequences[:, : inputs["input_ids"].shape[1]], inputs["input_ids"].repeat_interleave(2, 0)
    )


REMOTE = textwrap.dedent(
    """
    import importlib.abc, json, sys
    class BlockRepo(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path=None, target=None):
            if name.split(".")[0] in ("modeling_paircap", "paircap", "datasets_scripts"):
                raise ImportError(name)
    sys.meta_path.insert(0, BlockRepo())
    from transformers import AutoModel, AutoProcessor
    folder, audio = sys.argv[1], json.loads(sys.argv[2])
    model = AutoModel.from_pretrained(folder, trust_remote_code=True).eval()
    processor = AutoProcessor.from_pretrained(folder, trust_remote_code=True)
    inputs = processor(audio=audio)  # the model loads config.knowledge_base with its release's processor
    out = model.generate(**inputs, top_k=2, max_new_tokens=5, do_sample=False, return_dict_in_generate=True)
    print(json.dumps({
        "captions": processor.decode_captions(out.sequences, inputs["input_ids"].shape[1]),
        "zero_shot": out.zero_shot_captions,
        "pairs": [[p["pair_id"] for p in q] for q in out.retrieved_pairs],
        "module": type(model).__module__,
    }))
    """
)


def test_knowledge_base_in_config_after_remote_code_load(tiny_release, kb_clips, kb_folder, tmp_path):
    from paircap.assembly import save_release

    _, model, processor = tiny_release
    model.config.knowledge_base = str(kb_folder)
    try:
        folder = save_release(model, processor, tmp_path / "release")
    finally:
        model.config.knowledge_base = None
    inputs = processor(audio=kb_clips[1])
    from_release = PairCapRetriever.from_pretrained(folder)  # the release's processor and configured KB
    local = model.generate(**inputs, retriever=from_release, top_k=2, return_dict_in_generate=True, **GEN)
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env.update(HF_HUB_OFFLINE="1", HF_MODULES_CACHE=str(tmp_path / "modules"), TRANSFORMERS_VERBOSITY="error")
    result = subprocess.run(
        [sys.executable, "-c", REMOTE, str(folder), json.dumps(kb_clips[1])],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.strip(), result.stderr[-3000:]
    remote = json.loads(result.stdout.strip().splitlines()[-1])
    assert remote["module"].startswith("transformers_modules.")
    assert remote["captions"] == captions_of(processor, local.sequences, inputs)
    assert remote["zero_shot"] == local.zero_shot_captions
    assert remote["pairs"] == [[p["pair_id"] for p in q] for q in local.retrieved_pairs]


def test_tokens_kept_on_a_device_give_the_same_captions(tiny_release, kb_clips, kb_folder):
    """`kb.tokens_to(device)`: retrieved pairs' tokens are sliced from one tensor instead of read from the rows."""
    _, model, processor = tiny_release
    inputs = processor(audio=kb_clips[1])
    from_rows = PairCapKnowledgeBase.from_pretrained(kb_folder)
    on_device = PairCapKnowledgeBase.from_pretrained(kb_folder).tokens_to("cpu")
    hits = from_rows.search(np.eye(1, len(from_rows.rows[0]["audio_embedding"]), dtype=np.float32), top_k=4,
                            mode="audio2audio")  # fmt: skip
    for cached, read in zip(on_device.examples(hits)[0], from_rows.examples(hits)[0], strict=True):
        assert isinstance(cached["audio_tokens"], torch.Tensor) and cached["is_long"] == read["is_long"]
        np.testing.assert_array_equal(cached["audio_tokens"].numpy(), np.asarray(read["audio_tokens"]))
    common = {"top_k": 3, "return_dict_in_generate": True, **GEN}
    expected = model.generate(**inputs, retriever=PairCapRetriever(from_rows, processor), **common)
    got = model.generate(**inputs, retriever=PairCapRetriever(on_device, processor), **common)
    torch.testing.assert_close(got.sequences, expected.sequences)
    assert got.retrieved_pairs == expected.retrieved_pairs


def test_a_trained_audio_tower_keeps_the_retrieval_space_and_encodes_stale_tokens_from_audio(
    tiny_release, kb_clips, kb_folder
):
    """Training a separate audio tower: same hits and scores, tokens reported stale, and pass 2 gets the retrieved
    clips' tokens encoded by the trained tower from their audio (the KB records where each clip lives)."""
    import copy

    _, model, processor = tiny_release
    trained = copy.deepcopy(model)
    with torch.no_grad():
        trained.separate_audio_tower().audio_encoder.patch_embed.proj.weight.mul_(1.5)
    assert trained.retrieval_fingerprint() == model.retrieval_fingerprint()
    assert trained.token_fingerprint() != model.token_fingerprint()
    inputs = processor(audio=kb_clips[1][:2])
    # the KB records absolute paths: read only with the opt-in root naming the folder they must lie in
    roots = {"absolute": os.path.dirname(kb_clips[0][0])}
    retriever = PairCapRetriever.from_pretrained(kb_folder, processor, audio_roots=roots)
    common = {"retriever": retriever, "top_k": 3, "retrieval_mode": "audio2audio", **GEN}
    before = model.generate(**inputs, **common, return_dict_in_generate=True)
    assert retriever.knowledge_base.tokens_state == "current"
    after = trained.generate(**inputs, **common, return_dict_in_generate=True)
    assert after.retrieved_pairs == before.retrieved_pairs
    kb = retriever.knowledge_base
    assert kb.tokens_state == "stale"
    clips = sorted({kb.clip_index[pair["row"]] for query in after.retrieved_pairs for pair in query})
    locations = [kb.audio_location(clip) for clip in clips]
    expected = retriever.encode_clip_tokens(trained, locations)
    for clip, tokens in zip(clips, expected, strict=True):
        torch.testing.assert_close(kb.clip_tokens([clip])[0], tokens)
        assert not torch.equal(tokens, kb.tokens.get([clip])[0].float())  # the stale file's tokens differ
