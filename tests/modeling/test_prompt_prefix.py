"""The shared prompt prefix (its KV computed once, reused by every prompt of both passes) gives the same tokens as
generating without it; the pass-1 budget (`query_max_new_tokens`)."""

import copy

import numpy as np
import pytest
import soundfile as sf
import torch
from datasets import Dataset

from datasets_scripts.build_kb import build_knowledge_base
from modeling_paircap.configuration_paircap import PairCapConfig
from modeling_paircap.prompt_prefix_paircap import (
    PrefixLayout,
    can_share,
    shared_prefix_inputs,
    shared_prefix_length,
)
from modeling_paircap.retrieval_paircap import PairCapRetriever

SR = 48000
CAPTIONS = ["A low hum drones on.", "A high whistle rises.", "Rain falls on a metal roof.", "A dog barks far away."]
GREEDY = {"max_new_tokens": 8, "min_new_tokens": 8, "do_sample": False}


def write_clip(path, seconds: float, frequency: float, seed: int) -> str:
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * SR)) / SR
    wave = 0.2 * np.sin(2 * np.pi * frequency * t) + 0.05 * rng.standard_normal(len(t))
    sf.write(path, wave.astype(np.float32), SR)
    return str(path)


@pytest.fixture(scope="module")
def clips(tmp_path_factory):
    """Four KB clips, and three queries of 1, 2 and 3 windows (prompts of three lengths, so a padded batch)."""
    folder = tmp_path_factory.mktemp("prefix-clips")
    kb = [write_clip(folder / f"kb{i}.wav", s, 170 * (i + 1), i) for i, s in enumerate([3, 12, 5, 8])]
    queries = [write_clip(folder / f"q{i}.wav", s, 210 * (i + 1), 50 + i) for i, s in enumerate([4, 14, 25])]
    return kb, queries


def pairs(paths, captions, text_only=False) -> Dataset:
    rows = [
        {
            "pair_id": f"syn/train/c{i}/0",
            "audio_id": "" if text_only else f"c{i}",
            "audio": None if text_only else {"path": path, "bytes": None},
            "caption": caption,
            "source": "syn",
            "split": "train",
            "duration": None,
        }
        for i, (path, caption) in enumerate(zip(paths, captions, strict=True))
    ]
    return Dataset.from_list(rows)


@pytest.fixture(scope="module")
def kb_folders(tiny_release, clips, tmp_path_factory) -> dict:
    """A KB of audio pairs, and one of captions only (pass-2 turns without audio tokens)."""
    _, model, processor = tiny_release
    folders = {}
    for kind in ("audio", "text-only"):
        folders[kind] = tmp_path_factory.mktemp("prefix-kb") / kind
        build_knowledge_base(
            pairs(clips[0], CAPTIONS, kind == "text-only"), model, processor, folders[kind], {"name": kind},
            shard_size=4, num_workers=0, progress=False,
        )  # fmt: skip
    return folders


@pytest.fixture(scope="module", params=["audio", "text-only"])
def retriever(request, tiny_release, kb_folders):
    return PairCapRetriever.from_pretrained(kb_folders[request.param], tiny_release[2])


def system_tokens(processor) -> int:
    return len(processor.tokenizer(processor.prompt_format.preamble)["input_ids"])


def test_prefix_length_stops_at_audio_and_needs_left_padding():
    ids = torch.tensor([[0, 0, 5, 6, 7, 9, 9, 3], [5, 6, 7, 8, 9, 9, 9, 3]])
    mask = torch.tensor([[0, 0, 1, 1, 1, 1, 1, 1], [1] * 8])
    length, pads = shared_prefix_length(ids, mask, torch.tensor([9]))
    assert length == 3 and pads.tolist() == [2, 0]
    assert shared_prefix_length(ids, mask, torch.tensor([7]))[0] == 2  # cut before an audio placeholder
    right_padded = torch.tensor([[1, 1, 1, 1, 1, 1, 0, 0], [1] * 8])
    assert shared_prefix_length(ids, right_padded, torch.tensor([9]))[0] == 0
    same = torch.tensor([[5, 6, 7], [5, 6, 7]])
    assert shared_prefix_length(same, None, torch.tensor([9]))[0] == 2  # each prompt keeps a token of its own


def test_layout_puts_padding_after_the_prefix_and_keeps_positions():
    ids = torch.tensor([[0, 0, 5, 6, 7, 1, 2], [5, 6, 7, 3, 4, 8, 2]])
    mask = torch.tensor([[0, 0, 1, 1, 1, 1, 1], [1] * 7])
    layout = PrefixLayout.of(torch.tensor([2, 0]), 7, 3)
    assert layout.gather(ids).tolist() == [[5, 6, 7, 0, 0, 1, 2], [5, 6, 7, 3, 4, 8, 2]]
    assert layout.attention_mask.tolist() == [[1, 1, 1, 0, 0, 1, 1], [1] * 7]
    positions = mask.cumsum(1) - 1
    shared_positions = layout.attention_mask.cumsum(1) - 1
    for row in range(2):  # every real token keeps its position
        kept = mask[row].bool()
        assert (
            layout.gather(positions)[row][layout.attention_mask[row].bool()].tolist() == positions[row][kept].tolist()
        )
        assert shared_positions[row][layout.attention_mask[row].bool()].tolist() == positions[row][kept].tolist()
    embeds = torch.arange(14.0).view(2, 7, 1).expand(-1, -1, 3)
    assert layout.gather(embeds)[0, :, 0].tolist() == [2, 3, 4, 0, 1, 5, 6]


@pytest.mark.parametrize("batch", [1, 3])
def test_zero_shot_tokens_equal_with_and_without_the_shared_prefix(tiny_release, clips, batch):
    _, model, processor = tiny_release
    inputs = processor(audio=clips[1][:batch])
    if batch == 3:
        assert len(set(inputs["attention_mask"].sum(1).tolist())) == 3  # three prompt lengths: left padding
    model.prompt_prefix_cache.clear()
    beams = {"max_new_tokens": 5, "num_beams": 3, "num_return_sequences": 2, "do_sample": False}
    sampling = {"max_new_tokens": 8, "do_sample": True, "top_k": 50, "num_return_sequences": 2}
    for settings in (GREEDY, beams, sampling):
        torch.manual_seed(0)
        plain = model.generate(**inputs, share_prefix=False, **settings)
        assert not model.prompt_prefix_cache._entries
        torch.manual_seed(0)
        shared = model.generate(**inputs, share_prefix=True, **settings)
        assert torch.equal(shared, plain)
        (prefix,) = model.prompt_prefix_cache._entries
        assert len(prefix) >= system_tokens(processor)
        model.prompt_prefix_cache.clear()


@pytest.mark.parametrize("batch", [1, 3])
def test_retrieval_tokens_equal_with_and_without_the_shared_prefix(tiny_release, clips, retriever, batch, monkeypatch):
    _, model, processor = tiny_release
    inputs = processor(audio=clips[1][:batch])
    common = {"retriever": retriever, "top_k": 2, "return_dict_in_generate": True, **GREEDY}
    plain = model.generate(**inputs, share_prefix=False, **common)
    cache, prefixes = model.prompt_prefix_cache, []
    lookup = cache.prefix_cache
    monkeypatch.setattr(cache, "prefix_cache", lambda model, ids: prefixes.append(ids.tolist()) or lookup(model, ids))
    shared = model.generate(**inputs, **common)  # on by default
    assert shared.zero_shot_captions == plain.zero_shot_captions
    assert shared.retrieved_pairs == plain.retrieved_pairs
    assert torch.equal(shared.sequences, plain.sequences)
    assert len(prefixes) == 2 and all(len(ids) >= system_tokens(processor) for ids in prefixes)  # both passes


def test_cached_prefix_follows_the_weights(tiny_release, clips):
    _, base, processor = tiny_release
    model = copy.deepcopy(base)
    inputs = processor(audio=clips[1][:2])
    model.generate(**inputs, **GREEDY)  # caches the prefix of the current weights
    with torch.no_grad():
        for layer in model.language_model.model.layers:
            layer.self_attn.k_proj.weight.mul_(1.5)
    expected = model.generate(**inputs, share_prefix=False, **GREEDY)
    assert torch.equal(model.generate(**inputs, **GREEDY), expected)
    model.config.share_prompt_prefix = False
    model.prompt_prefix_cache.clear()
    model.generate(**inputs, **GREEDY)
    assert not model.prompt_prefix_cache._entries  # the config switch turns it off


def test_static_cache_generates_without_sharing(tiny_release, clips):
    _, model, processor = tiny_release
    inputs = processor(audio=clips[1][:2])
    assert not can_share({"cache_implementation": "static"}, model.generation_config)
    embeds = model.build_inputs_embeds(inputs["input_ids"], inputs["input_features"])
    static = {"cache_implementation": "static", **GREEDY}
    assert shared_prefix_inputs(model, inputs["input_ids"], embeds, inputs["attention_mask"], static) is None
    dynamic = model.generate(**inputs, **GREEDY)
    assert torch.equal(model.generate(**inputs, **static), dynamic)
    config_static = copy.deepcopy(model.generation_config)
    config_static.cache_implementation = "static"
    assert torch.equal(model.generate(**inputs, generation_config=config_static, **GREEDY), dynamic)


def test_query_budget_shortens_only_the_zero_shot_pass(tiny_release, clips, kb_folders):
    _, model, processor = tiny_release
    inputs = processor(audio=clips[1][:2])
    kb_retriever = PairCapRetriever.from_pretrained(kb_folders["audio"], processor)
    common = {"retriever": kb_retriever, "top_k": 2, "return_dict_in_generate": True, **GREEDY}
    short = model.generate(**inputs, query_max_new_tokens=2, **common)
    by_hand = model.generate(**inputs, retrieval_mode="none", max_new_tokens=2, do_sample=False)
    assert short.zero_shot_captions == processor.decode_captions(by_hand, inputs["input_ids"].shape[1])
    assert short.sequences.shape[1] == inputs["input_ids"].shape[1] + GREEDY["max_new_tokens"]
    full = model.generate(**inputs, **common)
    zero_shot = model.generate(**inputs, retrieval_mode="none", **GREEDY)
    assert full.zero_shot_captions == processor.decode_captions(zero_shot, inputs["input_ids"].shape[1])
    model.config.query_max_new_tokens = 2
    try:
        configured = model.generate(**inputs, **common)
    finally:
        model.config.query_max_new_tokens = None
    assert configured.zero_shot_captions == short.zero_shot_captions
    assert torch.equal(configured.sequences, short.sequences)
    with pytest.raises(ValueError, match="query_max_new_tokens must be at least 1"):
        PairCapConfig(query_max_new_tokens=0)
