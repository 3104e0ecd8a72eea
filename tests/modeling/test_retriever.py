"""`PairCapRetriever`: loading from a release (its processor and configured or bundled KB) or a KB folder with a
processor, the three ways a model gets one (`from_pretrained(retriever=)`, `set_retriever`, `config.knowledge_base`
on first use) giving the same captions, the fingerprint checks, and the pass-2 inputs of one call."""

import copy

import numpy as np
import pytest
import torch
from test_generate import build_kb, bundle_kb, pairs_dataset, write_clips

from modeling_paircap.kb_format_paircap import KnowledgeBaseError
from modeling_paircap.modeling_paircap import PairCapForConditionalGeneration
from modeling_paircap.processing_paircap import PairCapProcessor
from modeling_paircap.retrieval_paircap import PairCapRetriever

GEN = {"max_new_tokens": 5, "do_sample": False}


@pytest.fixture(scope="module")
def clips(tmp_path_factory):
    """Three KB clips and two query clips."""
    return write_clips(tmp_path_factory.mktemp("clips"), [3, 5, 4], [4, 6], 200, 210, 50)


@pytest.fixture(scope="module")
def kb_folder(tiny_release, clips, tmp_path_factory):
    pairs = pairs_dataset(clips[0], ["A hum.", "A whistle.", "Rain falls."], ["Thunder rumbles far away."])
    return build_kb(tiny_release, tmp_path_factory.mktemp("kb") / "kb", pairs, "test")


@pytest.fixture(scope="module")
def bundled_release(tiny_release, kb_folder, tmp_path_factory):
    """The tiny release with the KB shipped inside it, as `config.knowledge_base = "knowledge_base"` names it."""
    return bundle_kb(tiny_release[0], kb_folder, tmp_path_factory.mktemp("bundled") / "release")


def test_from_a_release_the_retriever_takes_its_processor_and_its_bundled_kb(
    tiny_release, bundled_release, kb_folder, tmp_path, monkeypatch
):
    monkeypatch.chdir(tmp_path)  # "knowledge_base" does not exist from here: it is found inside the release
    retriever = PairCapRetriever.from_pretrained(bundled_release)
    assert retriever.knowledge_base.folder == bundled_release / "knowledge_base"
    assert isinstance(retriever.processor, PairCapProcessor)
    assert retriever.processor.prompt_template == tiny_release[2].prompt_template
    other = PairCapRetriever.from_pretrained(bundled_release, knowledge_base=str(kb_folder))  # instead of the config's
    assert other.knowledge_base.folder == kb_folder
    with pytest.raises(ValueError, match="names no knowledge base"):
        PairCapRetriever.from_pretrained(tiny_release[0])


def test_from_a_kb_folder_with_a_processor_and_the_kb_arguments(tiny_release, kb_folder, tmp_path):
    processor = tiny_release[2]
    retriever = PairCapRetriever.from_pretrained(
        kb_folder, processor, audio_roots={"corpus": tmp_path}, device="cpu", verify="always"
    )
    kb = retriever.knowledge_base
    assert retriever.processor is processor and kb.folder == kb_folder and kb.audio_roots == {"corpus": tmp_path}
    assert kb.index.device == "cpu" and kb.index.faiss_index is None  # exact torch search, the vectors on the device
    with pytest.raises(ValueError, match="a knowledge base folder, not a release: pass the processor"):
        PairCapRetriever.from_pretrained(kb_folder)
    with pytest.raises(ValueError, match="verify must be one of"):
        PairCapRetriever.from_pretrained(kb_folder, processor, verify="never")


def test_the_three_ways_a_model_gets_a_retriever_give_the_same_captions(tiny_release, bundled_release, clips):
    folder, model, processor = tiny_release
    retriever = PairCapRetriever.from_pretrained(bundled_release)
    inputs = processor(audio=clips[1])
    settings = {"top_k": 2, "return_dict_in_generate": True, **GEN}
    expected = model.generate(**inputs, retriever=retriever, **settings)  # this call's retriever
    assert model.retriever is None

    given = PairCapForConditionalGeneration.from_pretrained(folder, retriever=retriever).eval()
    assert given.retriever is retriever
    outputs = [given.generate(**inputs, **settings)]
    given.set_retriever(None)
    with pytest.raises(ValueError, match="No knowledge base to retrieve from"):
        given.generate(**inputs, retrieval_mode="audio2audio", **GEN)
    given.set_retriever(retriever)
    outputs.append(given.generate(**inputs, **settings))

    configured = PairCapForConditionalGeneration.from_pretrained(bundled_release).eval()
    assert configured.retriever is None and configured.config.knowledge_base == "knowledge_base"
    outputs.append(configured.generate(**inputs, **settings))  # loads config.knowledge_base on first use
    built = configured.get_retriever()
    assert built is configured.get_retriever() and built.knowledge_base.folder == bundled_release / "knowledge_base"
    for output in outputs:
        torch.testing.assert_close(output.sequences, expected.sequences, rtol=0, atol=0)
        assert output.retrieved_pairs == expected.retrieved_pairs
        assert output.zero_shot_captions == expected.zero_shot_captions


def test_a_model_from_another_retrieval_space_is_refused(tiny_release, kb_folder, tmp_path):
    _, model, processor = tiny_release
    retriever = PairCapRetriever.from_pretrained(kb_folder, processor)
    other = copy.deepcopy(model)
    with torch.no_grad():
        other.clap.text_projection.linear1.weight.mul_(1.1)
    other.save_pretrained(tmp_path / "other")
    with pytest.raises(KnowledgeBaseError, match="embedded in another retrieval space"):
        PairCapForConditionalGeneration.from_pretrained(tmp_path / "other", retriever=retriever)
    with pytest.raises(KnowledgeBaseError, match="embedded in another retrieval space"):
        retriever.check_model(other)
    retriever.check_model(model)  # its own model is accepted


def test_the_token_state_follows_the_model_checked(tiny_release, kb_folder):
    _, model, processor = tiny_release
    retriever = PairCapRetriever.from_pretrained(kb_folder, processor)
    trained = copy.deepcopy(model)
    with torch.no_grad():
        trained.separate_audio_tower().audio_encoder.patch_embed.proj.weight.mul_(1.5)
    states = []
    for encoder in (model, trained, model):
        retriever.check_model(encoder)  # same retrieval space: accepted; another token encoder: stale tokens
        states.append(retriever.knowledge_base.tokens_state)
    assert states == ["current", "stale", "current"]


def test_one_call_gives_the_pass_two_inputs_on_the_models_device(tiny_release, kb_folder, clips):
    _, model, processor = tiny_release
    retriever = PairCapRetriever.from_pretrained(kb_folder, processor)
    inputs = processor(audio=clips[1])
    with torch.no_grad():
        encoding = model.encode_audio(inputs["input_features"], inputs["audio_window_counts"])
    query_tokens = encoding.audio_tokens.split(inputs["audio_window_counts"].tolist())
    out = retriever(model, encoding.audio_embeds, query_tokens, [False, False], mode="audio2audio", top_k=2)
    assert [len(hits) for hits in out.hits] == [2, 2] and out.zero_shot_captions is None
    assert all(tensor.device == model.device for tensor in out.inputs.values())
    queries = [{"audio_tokens": tokens.flatten(0, 1)} for tokens in query_tokens]
    by_hand = processor(audio=queries, examples=retriever.knowledge_base.examples(out.hits))
    assert set(out.inputs) == set(by_hand)
    for name in ("input_ids", "attention_mask", "audio_tokens_mask"):
        torch.testing.assert_close(out.inputs[name], by_hand[name], rtol=0, atol=0)

    captions = ["A dog barks.", "Rain falls."]
    ids = processor.tokenizer(captions, add_special_tokens=False, padding=True, return_tensors="pt")["input_ids"]
    out = retriever(
        model, encoding.audio_embeds, query_tokens, [False, False], zero_shot_ids=ids, top_k=2, fusion_weight=0.5
    )  # generative pair-to-pair: the pass-1 ids are decoded into the text queries
    assert out.zero_shot_captions == processor.decode_captions(ids)
    text = model.embed_texts(**processor.clap_text_inputs(out.zero_shot_captions)).detach().numpy()
    expected = retriever.knowledge_base.search(encoding.audio_embeds.numpy(), text, top_k=2)
    assert [[hit.pair_id for hit in hits] for hits in out.hits] == [[hit.pair_id for hit in hits] for hits in expected]
    assert np.isfinite([hit.text_score for hits in out.hits for hit in hits]).all()
