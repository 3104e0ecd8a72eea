"""PairCapForConditionalGeneration: pooling, encoding, embedding merge, labels and generation."""

import math

import numpy as np
import pytest
import soundfile as sf
import torch
import torch.nn.functional as F


@pytest.fixture(scope="module")
def clips():
    """Noise clips of 3 s, 12.5 s (two windows) and 7 s at 48 kHz."""
    rng = np.random.default_rng(0)
    return [(0.1 * rng.standard_normal(int(48000 * seconds))).astype(np.float32) for seconds in (3.0, 12.5, 7.0)]


def test_pooling_orders_tokens_by_time_then_frequency(tiny_release):
    _, model, _ = tiny_release
    windows, channels = 2, model.config.encoder_hidden_size
    hidden = torch.zeros(windows, channels, 2, 32)
    for freq in range(2):
        for time in range(32):
            hidden[:, :, freq, time] = 10 * time + freq
    tokens = model.pool_encoder_tokens(hidden)
    stride = model.config.audio_pool_stride
    assert tokens.shape == (windows, 64 // stride, channels)
    unpooled = torch.tensor([10 * t + f for t in range(32) for f in range(2)], dtype=torch.float32)
    expected = unpooled.reshape(-1, stride).mean(dim=1)
    torch.testing.assert_close(tokens[0, :, 0], expected)


def test_encode_audio_gives_unit_clip_embeddings_averaged_over_windows(tiny_release, clips):
    _, model, processor = tiny_release
    inputs = processor(audio=clips, sampling_rate=48000)
    counts = inputs["audio_window_counts"]
    assert counts.tolist() == [1, 2, 1]
    with torch.no_grad():
        per_window = model.encode_audio(inputs["input_features"])
        per_clip = model.encode_audio(inputs["input_features"], counts)
    assert per_window.audio_tokens.shape == (4, model.config.audio_tokens_per_window, model.config.encoder_hidden_size)
    torch.testing.assert_close(per_clip.audio_embeds.norm(dim=-1), torch.ones(3))
    torch.testing.assert_close(per_clip.audio_embeds[1], F.normalize(per_window.audio_embeds[1:3].mean(0), dim=0))
    torch.testing.assert_close(per_clip.audio_embeds[2], per_window.audio_embeds[3])
    with pytest.raises(ValueError, match="adds up to 5 windows but input_features holds 4"):
        model.encode_audio(inputs["input_features"], torch.tensor([1, 2, 2]))


def test_embed_texts_is_normalised(tiny_release):
    _, model, processor = tiny_release
    text = processor.clap_text_inputs(["a dog barks", "rain falls on a metal roof"])
    with torch.no_grad():
        embeds = model.embed_texts(**text)
    assert embeds.shape == (2, model.config.clap_config.projection_dim)
    torch.testing.assert_close(embeds.norm(dim=-1), torch.ones(2))


def test_precomputed_tokens_give_the_same_logits_as_waveforms(tiny_release, clips):
    _, model, processor = tiny_release
    examples = [[(clips[1], "Rain falls on a metal roof.")], [(clips[2], "A dog barks.")]]
    from_audio = processor(audio=clips[:2], examples=examples, sampling_rate=48000)
    with torch.no_grad():
        tokens = model.encode_audio(processor(audio=[clips[1], clips[2]], sampling_rate=48000)["input_features"])
        example_tokens = [tokens.audio_tokens[0:2].flatten(0, 1), tokens.audio_tokens[2]]
        mixed_examples = [[{"audio_tokens": example_tokens[0], "caption": "Rain falls on a metal roof."}]]
        mixed_examples.append([{"audio_tokens": example_tokens[1], "caption": "A dog barks."}])
        mixed = processor(audio=clips[:2], examples=mixed_examples, sampling_rate=48000)
        assert mixed["audio_tokens_mask"].sum() == sum(len(t) for t in example_tokens)
        torch.testing.assert_close(mixed["input_ids"], from_audio["input_ids"])
        logits_audio = model(**from_audio).logits
        logits_mixed = model(**mixed).logits
    torch.testing.assert_close(logits_mixed, logits_audio, atol=1e-5, rtol=1e-5)


def test_all_segments_precomputed(tiny_release, clips):
    _, model, processor = tiny_release
    with torch.no_grad():
        tokens = model.encode_audio(processor(audio=clips[0], sampling_rate=48000)["input_features"]).audio_tokens
        reference = model(**processor(audio=clips[0], sampling_rate=48000)).logits
        only_tokens = processor(audio={"audio_tokens": tokens[0]}, sampling_rate=48000)
        assert "input_features" not in only_tokens and only_tokens["audio_tokens_mask"].any()
        torch.testing.assert_close(model(**only_tokens).logits, reference, atol=1e-5, rtol=1e-5)


def test_placeholder_and_feature_counts_are_checked(tiny_release, clips):
    _, model, processor = tiny_release
    inputs = processor(audio=clips[:2], sampling_rate=48000)
    with pytest.raises(ValueError, match=r"placeholders for input_features but input_features gives"):
        model(input_ids=inputs["input_ids"], input_features=inputs["input_features"][:1])
    with pytest.raises(ValueError, match="neither input_features nor audio_tokens"):
        model(input_ids=inputs["input_ids"])


def test_labels_cover_every_caption_and_nothing_else(tiny_release, clips):
    _, model, processor = tiny_release
    examples = [[(clips[1], "Rain falls on a metal roof."), (clips[2], "A cat meows.")]]
    inputs = processor(audio=[clips[0]], examples=examples, captions=["A dog barks."], sampling_rate=48000)
    labels = inputs["labels"][0]
    labelled = processor.tokenizer.decode(labels[labels >= 0])
    assert labelled.replace(" ", "") == "Rainfallsonametalroof.</s>Acatmeows.</s>Adogbarks.</s>"
    assert (labels[inputs["input_ids"][0] == model.config.audio_token_id] == -100).all()
    with torch.no_grad():
        output = model(**inputs)
    logits = output.logits[0, :-1]
    targets = labels[1:]
    manual = F.cross_entropy(logits[targets >= 0], targets[targets >= 0])
    torch.testing.assert_close(output.loss, manual)


def test_greedy_generate_matches_a_manual_decoding_loop(tiny_release, clips):
    _, model, processor = tiny_release
    inputs = processor(audio=clips, sampling_rate=48000)
    with torch.no_grad():
        generated = model.generate(**inputs, max_new_tokens=6, do_sample=False, min_new_tokens=6)
        embeds = model.build_inputs_embeds(inputs["input_ids"], inputs["input_features"])
        mask = inputs["attention_mask"]
        manual = []
        for _ in range(6):
            positions = (mask.cumsum(-1) - 1).clamp(min=0)
            logits = model.language_model(inputs_embeds=embeds, attention_mask=mask, position_ids=positions).logits
            next_ids = logits[:, -1].argmax(-1)
            manual.append(next_ids)
            embeds = torch.cat([embeds, model.get_input_embeddings()(next_ids)[:, None]], dim=1)
            mask = torch.cat([mask, torch.ones_like(mask[:, :1])], dim=1)
    prompt_length = inputs["input_ids"].shape[1]
    torch.testing.assert_close(generated[:, :prompt_length], inputs["input_ids"])
    torch.testing.assert_close(generated[:, prompt_length:], torch.stack(manual, dim=1))


def test_beam_search_returns_every_sequence(tiny_release, clips):
    _, model, processor = tiny_release
    inputs = processor(audio=clips[:2], sampling_rate=48000)
    with torch.no_grad():
        beams = model.generate(**inputs, max_new_tokens=4, num_beams=3, num_return_sequences=2, do_sample=False)
    assert beams.shape[0] == 4
    captions = processor.decode_captions(beams, inputs["input_ids"].shape[1])
    assert len(captions) == 4 and all(isinstance(c, str) for c in captions)


def test_real_clotho_clips_use_several_windows(tiny_release, clotho_clips):
    _, model, processor = tiny_release
    paths = [str(path) for path, _ in clotho_clips]
    inputs = processor(audio=paths)
    durations = [sf.info(path).duration for path in paths]
    expected = [min(math.ceil(d / processor.window_seconds), processor.max_audio_windows) for d in durations]
    assert inputs["audio_window_counts"].tolist() == expected and max(expected) == 3
    placeholders = (inputs["input_ids"] == model.config.audio_token_id).sum(-1)
    assert placeholders.tolist() == [n * model.config.audio_tokens_per_window for n in expected]
    with torch.no_grad():
        encoding = model.encode_audio(inputs["input_features"], inputs["audio_window_counts"])
        generated = model.generate(**inputs, max_new_tokens=5, do_sample=False)
    assert torch.isfinite(encoding.audio_tokens).all()
    torch.testing.assert_close(encoding.audio_embeds.norm(dim=-1), torch.ones(len(paths)))
    prompt_length = inputs["input_ids"].shape[1]
    assert generated.shape[0] == len(paths) and prompt_length < generated.shape[1] <= prompt_length + 5
