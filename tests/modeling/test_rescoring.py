"""CLAP-Refine rescoring in `generate`: the combined score and its choice, batching, retrieval, and off by default."""

from types import SimpleNamespace

import pytest
import torch
from test_generate import CAPTIONS, build_kb, pairs_dataset, write_clips

from modeling_paircap.configuration_paircap import PairCapConfig
from modeling_paircap.rescoring_paircap import RescoreSettings, combined_scores, rescore_candidates
from modeling_paircap.retrieval_paircap import PairCapRetriever

GEN = {"max_new_tokens": 5, "do_sample": False}


@pytest.fixture(scope="module")
def clips(tmp_path_factory):
    """Eight KB clips and three query clips (synthetic tones)."""
    return write_clips(tmp_path_factory.mktemp("clips"), [3, 12, 5, 6, 8, 4, 9, 6], [4, 14, 6], 150, 160, 100)


@pytest.fixture(scope="module")
def retriever(tiny_release, clips, tmp_path_factory):
    folder = build_kb(tiny_release, tmp_path_factory.mktemp("kb") / "kb", pairs_dataset(clips[0], CAPTIONS), "test")
    return PairCapRetriever.from_pretrained(folder, tiny_release[2])


def test_combined_scores_weigh_clap_similarity_against_the_lm():
    audio = torch.tensor([[1.0, 0.0]])
    text = torch.tensor([[1.0, 0.0], [0.0, 1.0], [0.6, 0.8]])
    lm = torch.tensor([-2.0, -0.1, -1.0])
    scores, clap = combined_scores(audio, text, lm, 0.5)
    torch.testing.assert_close(clap, torch.tensor([[1.0, 0.0, 0.6]]))
    torch.testing.assert_close(scores, torch.tensor([[-0.5, -0.05, -0.2]]))
    assert [int(combined_scores(audio, text, lm, w)[0].argmax()) for w in (0.0, 0.5, 0.9, 1.0)] == [1, 1, 0, 0]


def test_rescore_candidates_keeps_each_querys_best_combined_score(tiny_release):
    """Two queries of three hand-made candidates each, with given LM scores: the choice is the argmax of
    λ·cos(a_q, t_c) + (1 − λ)·lm computed here from the model's own CLAP text embeddings."""
    _, model, processor = tiny_release
    texts = ["a dog barks", "rain falls on a roof", "a bell rings", "water flows", "birds chirp", "a car idles"]
    ids = processor.tokenizer(texts, padding=True, add_special_tokens=False, return_tensors="pt")["input_ids"]
    prompt = torch.zeros(6, 2, dtype=torch.long)
    lm = torch.tensor([-0.5, -3.0, -1.0, -2.0, -0.2, -0.9])
    audio = torch.nn.functional.normalize(torch.randn(2, model.config.clap_config.projection_dim), dim=-1)
    output = SimpleNamespace(sequences=torch.cat([prompt, ids], dim=1), sequences_scores=lm)
    with torch.no_grad():
        texts_embeds = model.embed_texts(**processor.clap_text_inputs(processor.decode_captions(ids)))
        for weight in (0.0, 0.3, 1.0):
            result = rescore_candidates(model, processor, output, audio, 2, RescoreSettings(3, weight, False))
            clap = torch.stack([texts_embeds[3 * q : 3 * q + 3] @ audio[q] for q in range(2)])
            expected = weight * clap + (1 - weight) * lm.reshape(2, 3)
            torch.testing.assert_close(result.scores, expected)
            assert result.chosen.tolist() == expected.argmax(dim=1).tolist()
            rows = [3 * q + int(c) for q, c in enumerate(expected.argmax(dim=1))]
            torch.testing.assert_close(result.sequences, output.sequences[rows])
    assert result.captions == [processor.decode_captions(ids)[:3], processor.decode_captions(ids)[3:]]


def test_generate_returns_candidates_and_chooses_the_best(tiny_release, clips):
    _, model, processor = tiny_release
    inputs = processor(audio=clips[1])
    out = model.generate(
        **inputs, rescore="clap", num_candidates=3, rescore_weight=0.7, processor=processor,
        return_dict_in_generate=True, **GEN,
    )  # fmt: skip
    assert [len(c) for c in out.candidates] == [3, 3, 3] and out.candidate_scores.shape == (3, 3)
    beams = model.generate(
        **inputs, num_beams=3, num_return_sequences=3, output_scores=True, return_dict_in_generate=True, **GEN
    )
    prompt = inputs["input_ids"].shape[1]
    candidates = processor.decode_captions(beams.sequences, prompt)
    assert [c for query in out.candidates for c in query] == candidates
    torch.testing.assert_close(out.candidate_lm_scores.flatten(), beams.sequences_scores)
    with torch.no_grad():
        audio = model.encode_audio(inputs["input_features"], inputs["audio_window_counts"]).audio_embeds
        text = model.embed_texts(**processor.clap_text_inputs(candidates)).reshape(3, 3, -1)
    clap = torch.einsum("bd,bnd->bn", audio, text)
    torch.testing.assert_close(out.candidate_clap_scores, clap)
    torch.testing.assert_close(out.candidate_scores, 0.7 * clap + 0.3 * beams.sequences_scores.reshape(3, 3))
    best = out.candidate_scores.argmax(dim=1)
    chosen = processor.decode_captions(out.sequences, prompt)
    assert chosen == [out.candidates[q][int(b)] for q, b in enumerate(best)]
    torch.testing.assert_close(out.sequences[:, :prompt], inputs["input_ids"])
    plain = model.generate(**inputs, rescore="clap", num_candidates=3, rescore_weight=0.7, processor=processor, **GEN)
    torch.testing.assert_close(plain, out.sequences)


def test_weight_zero_keeps_the_top_beam(tiny_release, clips, retriever):
    _, model, processor = tiny_release
    inputs = processor(audio=clips[1])
    for common in ({"retrieval_mode": "none"}, {"retriever": retriever, "top_k": 2}):
        rescored = model.generate(
            **inputs, rescore="clap", num_candidates=3, rescore_weight=0.0, num_beams=3, processor=processor,
            **common, **GEN,
        )  # fmt: skip
        beams = model.generate(**inputs, num_beams=3, **common, **GEN)
        torch.testing.assert_close(rescored, beams)


def test_off_by_default_leaves_outputs_identical(tiny_release, clips, retriever):
    _, model, processor = tiny_release
    inputs = processor(audio=clips[1])
    assert PairCapConfig().rescore is None and model.config.rescore is None
    for common in ({}, {"retriever": retriever, "top_k": 2}):
        before = model.generate(**inputs, return_dict_in_generate=True, **common, **GEN)
        after = model.generate(
            **inputs, num_candidates=4, rescore_weight=0.3, rescore_query=True, return_dict_in_generate=True,
            **common, **GEN,
        )  # fmt: skip
        torch.testing.assert_close(after.sequences, before.sequences)
        assert getattr(after, "candidates", None) is None
        assert getattr(after, "zero_shot_captions", None) == getattr(before, "zero_shot_captions", None)


def test_a_batch_chooses_as_one_query_at_a_time(tiny_release, clips, retriever):
    _, model, processor = tiny_release
    settings = {"rescore": "clap", "num_candidates": 3, "rescore_weight": 0.5, "return_dict_in_generate": True, **GEN}
    for common in ({"processor": processor, "retrieval_mode": "none"}, {"retriever": retriever, "top_k": 2}):
        batch = model.generate(**processor(audio=clips[1]), rescore_query=True, **common, **settings)
        for i, clip in enumerate(clips[1]):
            single_inputs = processor(audio=[clip])
            single = model.generate(**single_inputs, rescore_query=True, **common, **settings)
            prompt = single_inputs["input_ids"].shape[1]
            assert single.candidates[0] == batch.candidates[i]
            torch.testing.assert_close(single.candidate_scores[0], batch.candidate_scores[i], atol=1e-4, rtol=1e-4)
            assert processor.decode_captions(single.sequences, prompt) == processor.decode_captions(
                batch.sequences[i : i + 1], processor(audio=clips[1])["input_ids"].shape[1]
            )
            assert single.zero_shot_captions == (
                None if batch.zero_shot_captions is None else [batch.zero_shot_captions[i]]
            )


def test_rescoring_the_query_pass_changes_only_the_text_query(tiny_release, clips, retriever):
    """With weight 0 the rescored zero-shot caption is the top beam of pass 1: the retrieval query of a plain beam
    search of as many beams."""
    _, model, processor = tiny_release
    inputs = processor(audio=clips[1])
    common = {"retriever": retriever, "top_k": 2, "return_dict_in_generate": True, **GEN}
    rescored = model.generate(
        **inputs, rescore="clap", num_candidates=3, rescore_weight=0.0, rescore_query=True, **common
    )
    beams = model.generate(**inputs, num_beams=3, **common)
    assert rescored.zero_shot_captions == beams.zero_shot_captions
    assert [[p["pair_id"] for p in q] for q in rescored.retrieved_pairs] == [
        [p["pair_id"] for p in q] for q in beams.retrieved_pairs
    ]


def test_bad_rescoring_arguments_are_refused(tiny_release, clips):
    _, model, processor = tiny_release
    inputs = processor(audio=clips[1][:1])
    with pytest.raises(ValueError, match="needs the processor"):
        model.generate(**inputs, rescore="clap", **GEN)
    with pytest.raises(ValueError, match="unknown rescore method 'bleu'"):
        model.generate(**inputs, rescore="bleu", processor=processor, **GEN)
    with pytest.raises(ValueError, match="num_candidates must be at least 2"):
        model.generate(**inputs, rescore="clap", num_candidates=1, processor=processor, **GEN)
    with pytest.raises(ValueError, match=r"rescore_weight must lie in \[0, 1\]"):
        PairCapConfig(rescore="clap", rescore_weight=1.5)
    with pytest.raises(ValueError, match="leave do_sample off"):
        model.generate(**inputs, rescore="clap", processor=processor, max_new_tokens=3, do_sample=True)
    with pytest.raises(ValueError, match="leave num_return_sequences at 1"):
        model.generate(**inputs, rescore="clap", processor=processor, num_return_sequences=2, num_beams=2, **GEN)
    prompt_with_tokens = {**inputs, "audio_tokens": torch.zeros(1, 4)}
    with pytest.raises(ValueError, match="rescored generate takes zero-shot prompts"):
        model.generate(**prompt_with_tokens, rescore="clap", processor=processor, **GEN)
