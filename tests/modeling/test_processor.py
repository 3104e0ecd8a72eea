"""PairCapProcessor: windowing, features, prompts, placeholder expansion, labels, bad input, save/load."""

import numpy as np
import pytest
import torch

from modeling_paircap.audio_arrays_paircap import AudioInputError
from modeling_paircap.processing_paircap import PairCapProcessor, split_into_windows
from modeling_paircap.prompting_paircap import DEFAULT_PROMPT_TEMPLATE

SR = 48000


@pytest.mark.parametrize(
    ("seconds", "expected_starts", "is_long"),
    [
        (4.0, [0], False),
        (10.0, [0], False),
        (15.0, [0, 5], False),
        (25.0, [0, 7.5, 15], False),
        (45.0, [0, 17.5, 35], True),
    ],
)
def test_windows_are_evenly_spaced_and_end_with_the_clip(seconds, expected_starts, is_long):
    waveform = np.arange(int(seconds * 100), dtype=np.float32)  # 100 "samples" per second
    windows, long_flag = split_into_windows(waveform, window_samples=1000, max_windows=3)
    assert [int(w[0]) / 100 for w in windows] == expected_starts
    assert long_flag is is_long
    assert all(len(w) == min(1000, len(waveform)) for w in windows)
    assert windows[-1][-1] == waveform[-1]


def test_zero_shot_prompt_is_vicuna_v1_1(tiny_release):
    _, _, processor = tiny_release
    text, spans = processor.build_prompt([None])
    assert text == (
        f"{DEFAULT_PROMPT_TEMPLATE['system']} USER: <audio>\nDescribe the audio in one sentence. ASSISTANT:"
    )
    assert spans == []
    text, spans = processor.build_prompt(["A dog barks", None])
    assert "ASSISTANT: A dog barks</s>USER: <audio>" in text
    assert text[spans[0][0] : spans[0][1]] == " A dog barks</s>"


def test_placeholders_expand_per_window_with_the_length_token(tiny_release, sine_wave):
    _, model, processor = tiny_release
    inputs = processor(audio=[sine_wave(4), sine_wave(45)], sampling_rate=SR)
    per_window = model.config.audio_tokens_per_window
    placeholders = (inputs["input_ids"] == model.config.audio_token_id).sum(-1)
    assert placeholders.tolist() == [per_window, 3 * per_window]
    long_tokens = (inputs["input_ids"] == model.config.long_audio_token_id).sum(-1)
    assert long_tokens.tolist() == [0, 1]
    row = inputs["input_ids"][1].tolist()
    first_audio = row.index(model.config.audio_token_id)
    assert row[first_audio - 1] == model.config.long_audio_token_id


def test_features_are_deterministic_and_match_the_clap_extractor(tiny_release, sine_wave):
    _, _, processor = tiny_release
    clip = sine_wave(25, frequency=1000.0)
    first = processor(audio=clip, sampling_rate=SR)["input_features"]
    second = processor(audio=clip, sampling_rate=SR)["input_features"]
    torch.testing.assert_close(first, second, rtol=0, atol=0)
    windows, _ = processor.window_audio(clip)
    direct = processor.feature_extractor(
        windows, sampling_rate=SR, truncation="rand_trunc", padding="repeatpad", return_tensors="pt"
    )["input_features"]
    torch.testing.assert_close(first, direct)


def test_paths_arrays_rates_channels_and_pcm_agree(tiny_release, sine_wave, write_wav):
    _, _, processor = tiny_release
    clip = sine_wave(3)
    reference = processor(audio=clip, sampling_rate=SR)["input_features"]
    from_file = processor(audio=str(write_wav("mono.wav", clip, subtype="FLOAT")))["input_features"]
    torch.testing.assert_close(from_file, reference)
    stereo = processor(audio=np.stack([clip, clip], axis=1), sampling_rate=SR)["input_features"]
    torch.testing.assert_close(stereo, reference)
    quantised = (clip * 32767).astype(np.int16)
    pcm16 = processor(audio=quantised, sampling_rate=SR)["input_features"]
    as_float = processor(audio=quantised.astype(np.float32) / 32768, sampling_rate=SR)["input_features"]
    torch.testing.assert_close(pcm16, as_float)
    at_16k = processor(audio=sine_wave(3, sampling_rate=16000), sampling_rate=16000)["input_features"]
    assert at_16k.shape == reference.shape
    # a 440 Hz tone keeps its energy in the same mel bins after resampling from 16 kHz
    assert at_16k[0, 0].mean(0).argmax() == reference[0, 0].mean(0).argmax()
    mixed_rates = processor(audio=[clip, sine_wave(3, sampling_rate=16000)], sampling_rate=[SR, 16000])
    torch.testing.assert_close(mixed_rates["input_features"][1:], at_16k)


def test_bad_inputs_name_every_failing_item(tiny_release, sine_wave, write_wav, tmp_path):
    _, _, processor = tiny_release
    not_audio = tmp_path / "notes.wav"
    not_audio.write_text("this is not audio")
    nan_clip = sine_wave(2)
    nan_clip[100] = np.nan
    with pytest.raises(AudioInputError) as error:
        processor(audio=[sine_wave(2), str(not_audio), nan_clip, np.zeros(SR, dtype=np.float32)], sampling_rate=SR)
    message = str(error.value)
    assert "notes.wav" in message and "audio[2]" in message and "audio[3]" in message and "audio[0]" not in message
    assert "nan" in message.lower() and "silent" in message.lower()
    with pytest.raises(AudioInputError, match="empty"):
        processor(audio=np.zeros(0, dtype=np.float32), sampling_rate=SR)
    with pytest.raises(AudioInputError, match="missing.wav"):
        processor(audio=str(tmp_path / "missing.wav"))


def test_per_item_loading_keeps_valid_items(tiny_release, sine_wave, tmp_path):
    _, _, processor = tiny_release
    broken = tmp_path / "broken.flac"
    broken.write_bytes(b"fLaC" + bytes(100))
    loaded = processor.load_audio([sine_wave(1), str(broken), sine_wave(2)], sampling_rate=SR)
    assert isinstance(loaded[1], AudioInputError) and "broken.flac" in str(loaded[1])
    assert [len(x) for x in (loaded[0], loaded[2])] == [SR, 2 * SR]


def test_text_prompts_check_placeholder_counts(tiny_release, sine_wave):
    _, _, processor = tiny_release
    with pytest.raises(ValueError, match=r"hold 3 <audio> placeholders \(text\[0\]: 2, text\[1\]: 1\) for 2 clips"):
        processor(audio=[sine_wave(1), sine_wave(1)], text=["<audio> and <audio>", "<audio>"], sampling_rate=SR)
    inputs = processor(
        audio=[sine_wave(1), sine_wave(1)], text=["USER: <audio> then <audio> ASSISTANT:"], sampling_rate=SR
    )
    assert inputs["audio_window_counts"].tolist() == [1, 1]


def test_precomputed_mask_marks_only_example_positions(tiny_release, sine_wave):
    _, model, processor = tiny_release
    tokens = torch.randn(7, model.config.encoder_hidden_size)
    inputs = processor(
        audio=[sine_wave(2)], examples=[[{"audio_tokens": tokens, "caption": "A bell rings."}]], sampling_rate=SR
    )
    ids, mask = inputs["input_ids"][0], inputs["audio_tokens_mask"][0]
    audio_positions = (ids == model.config.audio_token_id).nonzero().flatten()
    assert mask.sum() == 7 and mask[audio_positions[:7]].all() and not mask[audio_positions[7:]].any()
    torch.testing.assert_close(inputs["audio_tokens"], tokens)


def test_generation_pads_left_and_training_pads_right(tiny_release, sine_wave):
    _, _, processor = tiny_release
    clips = [sine_wave(2), sine_wave(12)]
    generation = processor(audio=clips, sampling_rate=SR)
    assert generation["attention_mask"][0, 0] == 0 and generation["attention_mask"][:, -1].all()
    training = processor(audio=clips, captions=["A tone.", "A long tone."], sampling_rate=SR)
    assert training["attention_mask"][0, -1] == 0 and training["attention_mask"][:, 0].all()
    assert (training["labels"][training["attention_mask"] == 0] == -100).all()


def test_clap_text_inputs_and_caption_cleaning(tiny_release):
    _, _, processor = tiny_release
    text = processor.clap_text_inputs(["a dog barks", "rain " * 200])
    assert text["clap_input_ids"].shape == (2, processor.clap_max_length)
    ids = processor.tokenizer(
        ["  A dog   barks.\nUSER: more", "Rain falls. ASSISTANT: x"], padding=True, return_tensors="pt"
    )
    assert processor.decode_captions(ids["input_ids"]) == ["A dog barks.", "Rain falls."]


def test_processor_round_trip_keeps_template_and_sizes(tiny_release, tmp_path):
    _, _, processor = tiny_release
    processor.prompt_template = {**DEFAULT_PROMPT_TEMPLATE, "instruction": "Caption this sound."}
    try:
        processor.save_pretrained(tmp_path)
        loaded = PairCapProcessor.from_pretrained(tmp_path)
    finally:
        processor.prompt_template = dict(DEFAULT_PROMPT_TEMPLATE)
    assert loaded.prompt_template["instruction"] == "Caption this sound."
    assert loaded.audio_tokens_per_window == processor.audio_tokens_per_window
    assert loaded.tokenizer.convert_tokens_to_ids("<audio>") == processor.tokenizer.convert_tokens_to_ids("<audio>")
    assert loaded.clap_tokenizer.pad_token_id == 1
    with pytest.raises(ValueError, match="prompt_template needs exactly the keys"):
        PairCapProcessor(processor.feature_extractor, processor.tokenizer, processor.clap_tokenizer, prompt_template={})


def test_torch_feature_backend_matches_numpy(tiny_release, sine_wave, tmp_path):
    _, _, processor = tiny_release
    clips = [sine_wave(3, frequency=300.0) + 0.01, sine_wave(25, frequency=1200.0)]
    reference = processor(audio=clips, sampling_rate=SR)["input_features"]
    processor.feature_backend = "torch"
    try:
        fast = processor(audio=clips, sampling_rate=SR)["input_features"]
        processor.save_pretrained(tmp_path)
    finally:
        processor.feature_backend = "numpy"
    assert fast.shape == reference.shape
    assert (fast - reference).abs().max() < 0.2 and (fast - reference).abs().mean() < 2e-3  # dB; tones are worst
    assert PairCapProcessor.from_pretrained(tmp_path).feature_backend == "torch"
    with pytest.raises(ValueError, match="feature_backend"):
        PairCapProcessor(
            processor.feature_extractor, processor.tokenizer, processor.clap_tokenizer, feature_backend="x"
        )
