"""The prompt budget of `generate`: retrieved captions cut to `config.max_example_caption_tokens`, pass-2 prompts that
overflow the LM's context dropping their lowest-ranked pairs, one warning naming the KB rows, and a clear error for a
prompt that cannot fit at all."""

import json
import logging

import numpy as np
import pytest
import torch
from test_generate import build_kb, pairs_dataset, write_clips

from modeling_paircap.configuration_paircap import PairCapConfig
from modeling_paircap.retrieval_paircap import PairCapRetriever
from paircap.tiny import CORPUS

GEN = {"max_new_tokens": 5, "do_sample": False}
LONG_CAPTION = " ".join(CORPUS[:20] * 20)[:10_000]  # 3,392 tokens of the tiny LM: past its 2,048 positions
CAPTIONS = ["A low hum drones on.", "A high whistle rises.", "Rain falls on a metal roof.", "A dog barks far away."]
LONG_ID = "syn/train/clip0/0"
LOGGER = "modeling_paircap.prompt_budget_paircap"


class RecordingRetriever(PairCapRetriever):
    """A retriever that keeps what each call gave pass 2."""

    def __init__(self, *args):
        super().__init__(*args)
        self.outputs = []

    def __call__(self, *args, **kwargs):
        self.outputs.append(super().__call__(*args, **kwargs))
        return self.outputs[-1]


@pytest.fixture(scope="module")
def clips(tmp_path_factory):
    """Four KB clips and two query clips, each within one 10 s window (so every example adds the same audio)."""
    return write_clips(tmp_path_factory.mktemp("clips"), [3, 5, 4, 6], [4, 3], 170, 175, 70)


@pytest.fixture(scope="module")
def kb_folder(tiny_release, clips, tmp_path_factory):
    """The first clip's caption is 10,000 characters; the others are normal."""
    pairs = pairs_dataset(clips[0], [LONG_CAPTION, *CAPTIONS[1:]])
    return build_kb(tiny_release, tmp_path_factory.mktemp("kb") / "kb", pairs, "long")


@pytest.fixture
def retriever(tiny_release, kb_folder):
    return RecordingRetriever.from_pretrained(kb_folder, tiny_release[2])


def budget_warnings(caplog) -> list[str]:
    return [record.getMessage() for record in caplog.records if record.name == LOGGER]


def query_segments(model, inputs) -> tuple[list[torch.Tensor], list[dict]]:
    """The queries' pooled tokens, and the pass-2 segments made of them."""
    with torch.no_grad():
        encoding = model.encode_audio(inputs["input_features"], inputs["audio_window_counts"])
    tokens = list(encoding.audio_tokens.split(inputs["audio_window_counts"].tolist()))
    return tokens, [{"audio_tokens": query.flatten(0, 1), "is_long": False} for query in tokens]


def test_a_long_caption_is_cut_with_one_warning_and_the_other_rows_are_unchanged(
    tiny_release, clips, retriever, caplog
):
    _, model, processor = tiny_release
    inputs = processor(audio=[clips[0][0], clips[1][0]])  # the long row's own clip retrieves it first
    with caplog.at_level(logging.WARNING, logger=LOGGER):
        out = model.generate(
            **inputs, retriever=retriever, retrieval_mode="audio2audio", top_k=3, return_dict_in_generate=True, **GEN
        )
    (message,) = budget_warnings(caplog)
    assert repr(LONG_ID) in message and "to 192 tokens" in message and "dropped" not in message
    assert not any(repr(f"syn/train/clip{i}/0") in message for i in (1, 2, 3))
    assert out.retrieved_pairs[0][0]["pair_id"] == LONG_ID and [len(q) for q in out.retrieved_pairs] == [3, 3]
    assert out.retrieved_pairs[0][0]["caption"] == LONG_CAPTION  # the KB's record, not the prompt's cut

    second = retriever.outputs[-1].inputs
    assert second["attention_mask"].sum(dim=1).max() + GEN["max_new_tokens"] <= 2048
    cut = processor.truncate_caption(LONG_CAPTION, 192)
    assert LONG_CAPTION.startswith(cut) and len(processor.tokenizer(cut, add_special_tokens=False).input_ids) == 192
    examples = retriever.knowledge_base.examples(retriever.outputs[-1].hits)
    for query in examples:
        for example in query:
            example["caption"] = cut if example["caption"] == LONG_CAPTION else example["caption"]
    by_hand = processor(audio=query_segments(model, inputs)[1], examples=examples)  # normal captions as they were
    torch.testing.assert_close(second["input_ids"], by_hand["input_ids"], rtol=0, atol=0)


def test_without_a_caption_budget_the_context_check_drops_the_long_row(tiny_release, clips, retriever, caplog):
    _, model, processor = tiny_release
    inputs = processor(audio=[clips[0][0]])
    common = {"retriever": retriever, "retrieval_mode": "audio2audio", "return_dict_in_generate": True, **GEN}
    model.config.max_example_caption_tokens = None
    try:
        with caplog.at_level(logging.WARNING, logger=LOGGER):
            out = model.generate(**inputs, top_k=1, **common)
    finally:
        model.config.max_example_caption_tokens = 192
    (message,) = budget_warnings(caplog)
    assert f"dropped KB rows {LONG_ID!r}" in message and "cut" not in message
    assert out.retrieved_pairs == [[]]
    zero_shot = model.generate(**inputs, retrieval_mode="none", **GEN)
    torch.testing.assert_close(out.sequences, zero_shot, rtol=0, atol=0)  # a prompt without pairs


def test_a_small_context_drops_the_lowest_ranked_pairs(tiny_release, clips, retriever, caplog, monkeypatch):
    _, model, processor = tiny_release
    inputs = processor(audio=[clips[1][1]])
    common = {"retriever": retriever, "retrieval_mode": "audio2audio", "return_dict_in_generate": True, **GEN}
    common["exclude_ids"] = [{"clip0"}]  # normal captions only: nothing is cut
    full = model.generate(**inputs, top_k=3, **common)
    one = model.generate(**inputs, top_k=1, **common)
    one_length = int(retriever.outputs[-1].inputs["attention_mask"].sum())
    monkeypatch.setattr(model.config.text_config, "max_position_embeddings", one_length + GEN["max_new_tokens"])
    with caplog.at_level(logging.WARNING, logger=LOGGER):
        fitted = model.generate(**inputs, top_k=3, **common)
    (message,) = budget_warnings(caplog)
    dropped = [pair["pair_id"] for pair in full.retrieved_pairs[0][1:]]
    assert f"dropped KB rows {dropped[0]!r}, {dropped[1]!r} from pass-2 prompts" in message
    assert fitted.retrieved_pairs == one.retrieved_pairs
    torch.testing.assert_close(fitted.sequences, one.sequences, rtol=0, atol=0)


def test_a_prompt_that_cannot_fit_raises(tiny_release, clips, retriever, monkeypatch):
    _, model, processor = tiny_release
    inputs = processor(audio=[clips[1][0]])
    length = int(inputs["attention_mask"].sum())
    monkeypatch.setattr(model.config.text_config, "max_position_embeddings", length + 4)
    refusal = rf"prompt 0 takes {length} tokens and max_new_tokens=5 more: .* context of {length + 4} positions"
    for mode in ("none", "generative_pair2pair"):
        with pytest.raises(ValueError, match=refusal):
            model.generate(**inputs, retriever=retriever, retrieval_mode=mode, **GEN)
    monkeypatch.undo()
    tokens, _ = query_segments(model, inputs)
    kb = retriever.knowledge_base
    hits = kb.search(np.asarray(kb.rows[0]["audio_embedding"])[None], mode="audio2audio", top_k=2)
    with pytest.raises(ValueError, match="query 0: its pass-2 prompt takes .* tokens without any retrieved pair"):
        retriever.second_pass_inputs(model, hits, tokens, [False], max_prompt_length=length - 1)


def test_truncate_caption_cuts_on_a_token_boundary(tiny_release):
    processor = tiny_release[2]
    normal = "  A dog barks\tin the distance. "
    assert processor.truncate_caption(normal, 192) is normal  # fits: the caption itself, cleaned later as before
    cut = processor.truncate_caption(LONG_CAPTION, 50)
    ids = processor.tokenizer(cut, add_special_tokens=False).input_ids
    full = processor.tokenizer(LONG_CAPTION, add_special_tokens=False).input_ids
    assert ids == full[:50] and LONG_CAPTION.startswith(cut)
    with pytest.raises(ValueError, match="at least 1"):
        processor.truncate_caption(normal, 0)


def test_configs_without_the_budget_load_with_the_default(tiny_release, tmp_path):
    config = json.loads((tiny_release[0] / "config.json").read_text())
    config.pop("max_example_caption_tokens", None)
    (tmp_path / "config.json").write_text(json.dumps(config))
    assert PairCapConfig.from_pretrained(tmp_path).max_example_caption_tokens == 192
    assert PairCapConfig(max_example_caption_tokens=None).max_example_caption_tokens is None
    with pytest.raises(ValueError, match="max_example_caption_tokens must be at least 1"):
        PairCapConfig(max_example_caption_tokens=0)
