"""Tests for the audio modules of modeling_paircap (`audio_*_paircap.py`): validation, soxr resampling, windowed
decoding, bad paths and lying headers.

Resampling is soxr "HQ" (`resample` is a thin torch wrapper around it): pure tones come out within 2e-6 of the analytic
sine (measured 6e-9 to 9e-7; 9e-6 for a 15 kHz tone at 44.1 kHz, in soxr's passband ripple), for any pair of rates.
A long file decoded with the processor's window layout gives exactly the windows of its full decode where no resampling
happens, within 1e-6 where the ratio is rational enough for soxr's exact phase clock, within 1e-4 for co-prime rates.
"""

from __future__ import annotations

import io
import logging
import math
import os
import pickle
import re
import socket
import sys
import tempfile
import threading
import tracemalloc
import warnings
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import soundfile as sf
import soxr
import torch
from conftest import CHMOD_BLOCKS
from helpers import SHARED_DATA

from modeling_paircap import (
    audio_arrays_paircap,
    audio_decoding_paircap,
    audio_loading_paircap,
    audio_reader_paircap,
    audio_windows_paircap,
)
from modeling_paircap.audio_arrays_paircap import AudioInputError, resample, resampled_length, to_mono_float32
from modeling_paircap.audio_loading_paircap import load_audio, load_audio_batch, load_audio_file
from modeling_paircap.audio_windows_paircap import WindowedWaveform, window_starts
from modeling_paircap.processing_paircap import split_into_windows

DATA = SHARED_DATA
CLOTHO = DATA / "clotho_eval7"
ESC50 = DATA / "esc50_cc"


def _real_clips() -> list[Path]:
    """Two Clotho clips and two ESC-50 clips (sorted, so the choice is stable)."""
    return sorted(CLOTHO.glob("*.flac"))[:2] + sorted(ESC50.glob("*.flac"))[:2]


def _need(folder: Path) -> None:
    if not folder.is_dir() or not any(folder.glob("*.flac")):
        pytest.skip(f"real test clips not available: {folder} is missing (shared data folder not checked out)")


def _lowpass(x: np.ndarray, sr: int, cutoff: float) -> np.ndarray:
    spec = np.fft.rfft(x)
    spec[np.fft.rfftfreq(len(x), 1 / sr) > cutoff] = 0
    return np.fft.irfft(spec, len(x))


def _snr_db(ref: np.ndarray, x: np.ndarray) -> float:
    return 10 * math.log10(float(np.sum(ref**2)) / float(np.sum((ref - x) ** 2)))


def _tone(freq: float, sr: int, n: int, amp: float = 1.0) -> np.ndarray:
    return amp * np.sin(2 * np.pi * freq * np.arange(n) / sr)


def _assert_names(exc: AudioInputError, name: str) -> None:
    assert exc.item == name
    assert str(exc).startswith(f"{name}: ")


def _refused(path, sampling_rate: int, match: str | None = None, **options) -> AudioInputError:
    """`load_audio_file(path, sampling_rate, **options)` raises an `AudioInputError` matching `match` that names
    the file; the error."""
    with pytest.raises(AudioInputError, match=match) as info:
        load_audio_file(path, sampling_rate, **options)
    _assert_names(info.value, str(path))
    return info.value


@pytest.fixture(autouse=True)
def _reset_missing_sr_warning():
    audio_loading_paircap.logger.warning_once.cache_clear()


# ----------------------------------------------------------------------------------------------------------------------
# resample (soxr "HQ")
# ----------------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("orig_sr", "target_sr", "freq", "tolerance"),
    [
        (44100, 48000, 997.0, 2e-6),
        (48000, 16000, 997.0, 2e-6),
        (48000, 16000, 6000.0, 2e-6),
        (16000, 48000, 5000.0, 2e-6),
        (48000, 44100, 15e3, 2e-5),  # 15 kHz is 68 % of the way to the new Nyquist: passband ripple (measured 9e-6)
        (11127, 48000, 997.0, 2e-6),  # 3709:16000 after gcd reduction: refused by the hand-written resampler
        (16001, 48000, 997.0, 2e-6),  # co-prime rates (measured 8.8e-7)
        (16001, 48000, 5000.0, 1e-5),  # measured 3.9e-6
        (8000, 48000, 3000.0, 2e-6),
    ],
)
def test_resample_pure_sine_frequency_preserved(orig_sr, target_sr, freq, tolerance):
    x = _tone(freq, orig_sr, 2 * orig_sr, amp=0.5)
    y = resample(torch.from_numpy(x), orig_sr, target_sr).numpy()
    assert len(y) == 2 * target_sr
    edge = target_sr // 10
    expected = _tone(freq, target_sr, len(y), amp=0.5)
    assert np.abs(y - expected)[edge:-edge].max() < tolerance
    mid = y[edge:-edge]
    spectrum = np.abs(np.fft.rfft(mid * np.hanning(len(mid))))
    peak = np.fft.rfftfreq(len(mid), 1 / target_sr)[spectrum.argmax()]
    assert abs(peak - freq) <= target_sr / len(mid)


def test_resample_removes_content_above_new_nyquist():
    x = _tone(9000.0, 48000, 96000)  # would alias to 7 kHz at 16 kHz
    y = resample(torch.from_numpy(x), 48000, 16000).numpy()
    assert np.sqrt(np.mean(y[1600:-1600] ** 2)) < 1e-6  # measured ~3.3e-8 (about -150 dB)


@pytest.mark.parametrize("clip_index", range(4))
def test_resample_is_soxr_on_real_clips(clip_index):
    _need(CLOTHO)
    _need(ESC50)
    x48, sr = sf.read(_real_clips()[clip_index], dtype="float32")
    for target_sr in (44100, 16000, 11127, 16001):
        ours = resample(torch.from_numpy(x48), sr, target_sr).numpy()
        np.testing.assert_array_equal(ours, soxr.resample(x48, sr, target_sr, quality="HQ"))
        back = resample(torch.from_numpy(ours), target_sr, sr).numpy()  # a round trip keeps the band both carry
        n, edge = min(len(back), len(x48)), sr // 10
        cutoff = 0.85 * target_sr / 2
        a, b = _lowpass(back[:n].astype(np.float64), sr, cutoff), _lowpass(x48[:n].astype(np.float64), sr, cutoff)
        assert _snr_db(b[edge:-edge], a[edge:-edge]) > 75  # measured 80-132 dB


@pytest.mark.parametrize("n", [1, 2, 3, 146, 147, 148, 1000, 44101])
def test_resample_output_length_is_soxrs_rounded_length(n):
    for orig_sr, target_sr in [(44100, 48000), (48000, 44100), (48000, 16000), (8000, 22050), (16001, 48000)]:
        y = resample(torch.ones(n, dtype=torch.float64), orig_sr, target_sr)
        assert y.shape == (resampled_length(n, orig_sr, target_sr),)
        assert abs(y.shape[0] - n * target_sr / orig_sr) <= 0.5


def test_resampled_length_matches_soxr_for_random_sizes():
    rng = np.random.default_rng(0)
    for _ in range(300):
        n, sr = int(rng.integers(1, 200_000)), int(rng.integers(1_000, 200_000))
        assert resampled_length(n, sr, 48000) == len(soxr.resample(np.zeros(n, np.float32), sr, 48000))


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.bfloat16])
def test_resample_batch_dims_match_per_row(dtype):
    x = torch.randn(2, 3, 4410, generator=torch.Generator().manual_seed(1)).to(dtype)
    y = resample(x, 44100, 16000)
    assert y.shape == (2, 3, 1600) and y.dtype == dtype
    for i in range(2):
        for k in range(3):
            torch.testing.assert_close(y[i, k], resample(x[i, k].clone(), 44100, 16000))
    xt = x.transpose(1, 2).contiguous().transpose(1, 2)  # non-contiguous input (time axis made last by a transpose)
    assert not xt.is_contiguous()
    torch.testing.assert_close(resample(xt, 44100, 16000), y)


def test_resample_float32_close_to_float64():
    x = torch.from_numpy(_tone(440.0, 44100, 44100, amp=0.8) + 0.1 * _tone(7000.0, 44100, 44100))
    y64 = resample(x, 44100, 48000)
    y32 = resample(x.float(), 44100, 48000)
    assert y32.dtype == torch.float32 and y64.dtype == torch.float64
    assert (y32.double() - y64).abs().max() < 1e-5


def test_resample_same_rate_returns_input_unchanged():
    x = torch.randn(2, 100)
    assert resample(x, 16000, 16000) is x


def test_resample_empty_and_odd_rates():
    assert resample(torch.zeros(3, 0), 48000, 16000).shape == (3, 0)
    for orig_sr in (1, 7, 11127, 16001, 44099, 192000):  # any positive integer rate
        y = resample(torch.ones(orig_sr // 3 + 5), orig_sr, 48000)
        assert y.shape == (resampled_length(orig_sr // 3 + 5, orig_sr, 48000),) and torch.isfinite(y).all()


def test_resample_rejects_bad_arguments():
    with pytest.raises(TypeError):
        resample(torch.ones(10, dtype=torch.int16), 48000, 16000)
    with pytest.raises(TypeError):
        resample(np.ones(10), 48000, 16000)
    for bad in (0, -16000, 16000.5, None, True):
        with pytest.raises(ValueError):
            resample(torch.ones(10), bad, 16000)
        with pytest.raises(ValueError):
            resample(torch.ones(10), 16000, bad)


def test_no_hand_written_resampler_left():
    for name in ("_sinc_kernel", "_sinc_kernel_f64", "_LOWPASS_FILTER_WIDTH", "_ROLLOFF", "_KAISER_BETA"):
        for module in (audio_arrays_paircap, audio_decoding_paircap, audio_reader_paircap, audio_windows_paircap):
            assert not hasattr(module, name)


def test_missing_soxr_gives_install_hint(monkeypatch):
    monkeypatch.setitem(sys.modules, "soxr", None)  # makes `import soxr` raise ImportError
    with pytest.raises(ImportError, match="pip install soxr"):
        resample(torch.ones(100), 44100, 48000)
    np.testing.assert_array_equal(load_audio(np.full(10, 0.1), 48000, sampling_rate=48000), np.full(10, 0.1, "f4"))


# ----------------------------------------------------------------------------------------------------------------------
# to_mono_float32
# ----------------------------------------------------------------------------------------------------------------------


def test_int_pcm_scaled_like_soundfile(tmp_path):
    i16 = np.array([-32768, -16384, 0, 16384, 32767], dtype=np.int16)
    np.testing.assert_array_equal(to_mono_float32(i16, "a"), i16.astype(np.float32) / 32768)
    i32 = np.array([-(2**31), -(2**30), 0, 2**30, 2**31 - 1], dtype=np.int32)
    np.testing.assert_allclose(to_mono_float32(i32, "a"), i32 / 2.0**31, rtol=0, atol=1e-9)
    u8 = np.array([0, 64, 128, 192, 255], dtype=np.uint8)
    np.testing.assert_array_equal(to_mono_float32(u8, "a"), (u8.astype(np.float32) - 128) / 128)
    i8 = np.array([-128, 0, 64, 127], dtype=np.int8)
    np.testing.assert_array_equal(to_mono_float32(i8, "a"), i8.astype(np.float32) / 128)
    # same numbers as soundfile's own int -> float conversion
    for arr, subtype in [(i16, "PCM_16"), (i32, "PCM_32")]:
        path = tmp_path / f"{subtype}.wav"
        sf.write(path, arr, 8000, subtype=subtype)
        np.testing.assert_array_equal(to_mono_float32(arr, "a"), sf.read(path, dtype="float32")[0])


def test_float_and_tensor_inputs():
    x64 = np.linspace(-0.5, 0.5, 100)
    out = to_mono_float32(x64, "a")
    assert out.dtype == np.float32 and out.shape == (100,)
    np.testing.assert_allclose(out, x64, atol=1e-7)
    np.testing.assert_array_equal(to_mono_float32(torch.from_numpy(x64), "a"), out)
    bf16 = to_mono_float32(torch.tensor([0.5, -0.25], dtype=torch.bfloat16), "a")
    np.testing.assert_array_equal(bf16, np.array([0.5, -0.25], dtype=np.float32))
    x32 = np.array([0.1, 0.2], dtype=np.float32)
    res = to_mono_float32(x32, "a")
    res[0] = 9.0
    assert x32[0] == np.float32(0.1)  # the result never aliases the caller's buffer


def test_stereo_mixed_to_mono_both_layouts():
    left, right = _tone(440, 16000, 1600, 0.5), _tone(660, 16000, 1600, 0.3)
    expected = ((left + right) / 2).astype(np.float32)
    np.testing.assert_allclose(to_mono_float32(np.stack([left, right], axis=1), "a"), expected, atol=1e-7)  # (T, 2)
    np.testing.assert_allclose(to_mono_float32(np.stack([left, right], axis=0), "a"), expected, atol=1e-7)  # (2, T)
    np.testing.assert_allclose(to_mono_float32(torch.from_numpy(np.stack([left, right])), "a"), expected, atol=1e-7)
    six = np.tile(left, (6, 1))
    np.testing.assert_allclose(to_mono_float32(six, "a"), left.astype(np.float32), atol=1e-7)
    np.testing.assert_allclose(to_mono_float32(left[None, :], "a"), left.astype(np.float32), atol=1e-7)  # (1, T)
    stereo_i16 = (np.stack([left, right], axis=1) * 32767).astype(np.int16)
    np.testing.assert_allclose(to_mono_float32(stereo_i16, "a"), expected, atol=1e-4)


@pytest.mark.parametrize(
    ("array", "fragment"),
    [
        ([0.1, 0.2], "expected a numpy array or torch tensor, got list"),
        ("noise.wav", "got str"),
        (np.float32(0.5), "got float32"),  # numpy scalar, not an ndarray
        (np.array(0.5), "0-d"),
        (np.zeros((2, 3, 100)), "shape (2, 3, 100)"),
        (torch.zeros(1, 2, 100), "shape (1, 2, 100)"),
        (np.zeros(0, dtype=np.float32), "zero samples"),
        (np.zeros((2, 0), dtype=np.float32), "zero samples"),
        (np.zeros((0, 2), dtype=np.int16), "zero samples"),
        (np.zeros(100), "silent"),
        (np.full(100, 1e-8), "silent"),
        (np.zeros(100, dtype=np.int16), "silent"),
        (np.zeros((32, 32)), "ambiguous"),
        (np.ones((20, 40000)), "ambiguous"),
        (np.ones((3, 3)), "ambiguous"),
        (np.ones(100, dtype=np.int64), "unsupported dtype int64"),
        (np.ones(100, dtype=np.complex64), "unsupported dtype"),
        (np.ones(100, dtype=bool), "unsupported dtype"),
    ],
)
def test_to_mono_errors_name_the_item(array, fragment):
    with pytest.raises(AudioInputError) as info:
        to_mono_float32(array, "audio[3]")
    _assert_names(info.value, "audio[3]")
    assert fragment in str(info.value)


def test_nan_and_inf_are_counted():
    x = np.ones(100, dtype=np.float32)
    x[[1, 5, 9]] = np.nan
    x[20] = np.inf
    x[21] = -np.inf
    with pytest.raises(AudioInputError) as info:
        to_mono_float32(x, "clip.wav")
    _assert_names(info.value, "clip.wav")
    assert "3 NaN and 2 inf values" in str(info.value)
    with pytest.raises(AudioInputError, match="1 NaN and 0 inf"):
        to_mono_float32(torch.tensor([[0.1, float("nan")], [0.2, 0.3], [0.3, 0.1]]), "t")


def test_silence_threshold_keyword():
    quiet = np.full(100, 1e-4, dtype=np.float32)
    assert to_mono_float32(quiet, "a").shape == (100,)
    with pytest.raises(AudioInputError, match="silent"):
        to_mono_float32(quiet, "a", silence_threshold=1e-3)
    assert to_mono_float32(np.zeros(10), "a", silence_threshold=0.0).shape == (10,)
    with pytest.raises(AudioInputError, match="silent"):  # channels that cancel out mix to silence
        to_mono_float32(np.stack([quiet, -quiet]), "a")


def test_audio_input_error_is_value_error_and_picklable():
    err = AudioInputError("audio[0]", "bad")
    assert isinstance(err, ValueError)
    assert str(err) == "audio[0]: bad"
    clone = pickle.loads(pickle.dumps(err))
    assert isinstance(clone, AudioInputError) and clone.item == "audio[0]" and str(clone) == str(err)


# ----------------------------------------------------------------------------------------------------------------------
# files
# ----------------------------------------------------------------------------------------------------------------------


def test_load_real_clip_file():
    _need(ESC50)
    path = sorted(ESC50.glob("*.flac"))[0]
    raw, sr = sf.read(path, dtype="float32")
    out = load_audio_file(path, 16000)
    assert out.dtype == np.float32 and out.ndim == 1
    assert len(out) == resampled_length(len(raw), sr, 16000)
    np.testing.assert_array_equal(out, soxr.resample(raw, sr, 16000, quality="HQ"))
    np.testing.assert_array_equal(load_audio_file(str(path), sr), raw)  # native rate: no resampling


def test_load_stereo_int16_file_mixed_and_resampled(tmp_path):
    left, right = _tone(440, 44100, 44100, 0.5), _tone(440, 44100, 44100, 0.25)
    path = tmp_path / "stereo.wav"
    sf.write(path, np.stack([left, right], axis=1), 44100, subtype="PCM_16")
    out = load_audio_file(path, 16000)
    assert out.shape == (16000,) and out.dtype == np.float32
    expected = _tone(440, 16000, 16000, 0.375)
    assert np.abs(out - expected)[1600:-1600].max() < 1e-3  # 16-bit quantisation dominates


def test_text_file_renamed_wav_names_the_file(tmp_path):
    path = tmp_path / "not_audio.wav"
    path.write_text("this is a caption, not a RIFF header\n" * 20)
    assert "could not decode audio (soundfile:" in str(_refused(path, 16000))


def test_missing_directory_empty_nan_silent_files(tmp_path):
    missing = tmp_path / "nope.flac"
    _refused(missing, 16000, "file not found")

    _refused(tmp_path, 16000, "directory")

    empty = tmp_path / "empty.wav"
    sf.write(empty, np.zeros((0, 1), dtype=np.float32), 16000)
    _refused(empty, 16000, "zero samples")

    nan = tmp_path / "nan.wav"
    data = np.full(1000, 0.1, dtype=np.float32)
    data[10] = np.nan
    sf.write(nan, data, 16000, subtype="FLOAT")
    _refused(nan, 16000, "1 NaN")

    silent = tmp_path / "silent.flac"
    sf.write(silent, np.zeros(1000, dtype=np.float32), 16000)
    _refused(silent, 16000, "silent")

    zero_bytes = tmp_path / "zero.wav"
    zero_bytes.write_bytes(b"")
    _refused(zero_bytes, 16000, "could not decode")


def test_missing_soundfile_gives_install_hint(tmp_path, monkeypatch):
    path = tmp_path / "a.wav"
    sf.write(path, _tone(440, 16000, 1600), 16000)
    monkeypatch.setitem(sys.modules, "soundfile", None)  # makes `import soundfile` raise ImportError
    with pytest.raises(ImportError, match="pip install soundfile"):
        load_audio_file(path, 16000)


# ----------------------------------------------------------------------------------------------------------------------
# windowed decoding: only the frames the encoder windows need
# ----------------------------------------------------------------------------------------------------------------------

W, K = 480_000, 3  # the processor's layout: 3 windows of 10 s at 48 kHz


def _signal(sr: int, seconds: float, channels: int = 1, seed: int = 0) -> np.ndarray:
    """A chirp plus noise (so a misplaced window cannot match by accident), float32, (T,) or (T, C)."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(sr * seconds)) / sr
    x = (0.3 * np.sin(2 * np.pi * (200 + 40 * t) * t) + 0.02 * rng.standard_normal(len(t))).astype(np.float32)
    if channels == 1:
        return x
    return np.stack([x * (0.9 - 0.2 * c) + 0.01 * c for c in range(channels)], axis=1).astype(np.float32)


def _write_blocks(path: Path, x: np.ndarray, sr: int, **kwargs) -> Path:
    """Write in one-second blocks (libsndfile 1.2 crashes writing a long Ogg in one call)."""
    with sf.SoundFile(path, "w", sr, 1 if x.ndim == 1 else x.shape[1], **kwargs) as handle:
        for start in range(0, len(x), sr):
            handle.write(x[start : start + sr])
    return path


def _assert_windows_match(got, full: np.ndarray, atol: float) -> None:
    ref, is_long = split_into_windows(full, W, K)
    assert isinstance(got, WindowedWaveform) and got.has_layout
    assert got.num_samples == len(full) and got.is_long is is_long is True
    assert list(got.window_starts) == window_starts(len(full), W, K)[0]
    assert len(got) == K * W and got.dtype == np.float32
    for ours, theirs in zip(got.windows(), ref, strict=True):
        if atol == 0:
            np.testing.assert_array_equal(ours, theirs)
        else:
            np.testing.assert_allclose(ours, theirs, rtol=0, atol=atol)


@pytest.mark.parametrize(
    ("fmt", "subtype", "sr", "channels", "atol"),
    [
        ("WAV", "PCM_16", 48000, 2, 0),  # no resampling: exactly the samples of the full decode
        ("WAV", "FLOAT", 48000, 1, 0),
        ("FLAC", "PCM_24", 48000, 1, 0),
        ("OGG", "OPUS", 48000, 1, 0),
        ("MP3", "MPEG_LAYER_III", 48000, 1, 0),  # read in one pass (mpg123's seeking is inexact)
        ("WAV", "PCM_16", 44100, 2, 1e-6),  # resampled per window: soxr's float rounding (measured <= 9e-8)
        ("FLAC", "PCM_16", 44100, 1, 1e-6),
        ("OGG", "VORBIS", 44100, 2, 1e-6),
        ("MP3", "MPEG_LAYER_III", 44100, 2, 1e-6),
        ("WAV", "PCM_16", 11127, 1, 1e-6),
        ("WAV", "PCM_16", 8000, 1, 1e-6),
        # co-prime 16001:48000: soxr's phase clock for such ratios drifts slightly along a clip, so a window resampled
        # on its own differs from the same window of the whole clip by up to ~1e-5 (the whole clip is no closer to
        # the ideal resampling: see test_windowed_decode_odd_rate_is_as_accurate_as_full_decode).
        ("FLAC", "PCM_16", 16001, 2, 1e-4),
    ],
)
def test_windowed_decode_equals_windows_of_full_decode(tmp_path, fmt, subtype, sr, channels, atol):
    path = _write_blocks(tmp_path / f"long.{fmt.lower()}", _signal(sr, 47.3, channels), sr, format=fmt, subtype=subtype)
    full = load_audio_file(path, 48000)
    assert type(full) is np.ndarray and len(full) == resampled_length(sf.info(str(path)).frames, sr, 48000)
    _assert_windows_match(load_audio_file(path, 48000, window_samples=W, max_windows=K), full, atol)


def test_windowed_decode_odd_rate_is_as_accurate_as_full_decode(tmp_path):
    sr, freq = 16001, 997.0
    path = tmp_path / "tone.wav"
    _write_blocks(path, _tone(freq, sr, 50 * sr, 0.5).astype(np.float32), sr, subtype="FLOAT")
    full = load_audio_file(path, 48000)
    got = load_audio_file(path, 48000, window_samples=W, max_windows=K)
    for start, ours, theirs in zip(got.window_starts, got.windows(), split_into_windows(full, W, K)[0], strict=True):
        ideal = 0.5 * np.sin(2 * np.pi * freq * (start + np.arange(W)) / 48000)
        assert np.abs(ours - ideal)[4800:-4800].max() <= np.abs(theirs - ideal)[4800:-4800].max() + 1e-6


def test_windowed_decode_of_real_clips_joined_into_long_files(tmp_path):
    _need(CLOTHO)
    _need(ESC50)
    clips = [sf.read(path, dtype="float32")[0] for path in sorted(ESC50.glob("*.flac"))[:5] + _real_clips()[:2]]
    joined = np.concatenate(clips)  # 48 kHz, ~70 s of real audio
    assert len(joined) > 3 * W
    flac = _write_blocks(tmp_path / "joined.flac", joined, 48000, subtype="PCM_16")
    _assert_windows_match(
        load_audio_file(flac, 48000, window_samples=W, max_windows=K), load_audio_file(flac, 48000), 0
    )
    at_44k = soxr.resample(joined, 48000, 44100)
    wav = _write_blocks(tmp_path / "joined44k.wav", np.stack([at_44k, 0.5 * at_44k], 1), 44100, subtype="PCM_24")
    _assert_windows_match(
        load_audio_file(wav, 48000, window_samples=W, max_windows=K), load_audio_file(wav, 48000), 1e-6
    )


def test_short_files_come_back_whole(tmp_path):
    for seconds in (4.0, 10.0, 29.9, 30.0):
        path = _write_blocks(tmp_path / f"c{seconds}.wav", _signal(44100, seconds), 44100)
        got = load_audio_file(path, 48000, window_samples=W, max_windows=K)
        assert type(got) is np.ndarray  # the windows cover the whole clip: decoded whole, as before
        np.testing.assert_array_equal(got, load_audio_file(path, 48000))
    just_over = _write_blocks(tmp_path / "over.wav", _signal(48000, 30.5), 48000, subtype="FLOAT")
    _assert_windows_match(load_audio_file(just_over, 48000, window_samples=W, max_windows=K),
                          load_audio_file(just_over, 48000), 0)  # fmt: skip


def test_windowed_decode_memory_is_bounded(tmp_path):
    """30 minutes at 8 kHz: a full decode holds 14.4 M samples plus 86 M resampled ones (~400 MB)."""
    path = tmp_path / "half_hour.wav"
    minute = (0.3 * np.sin(np.arange(8000 * 60) / 5)).astype(np.float32)
    with sf.SoundFile(path, "w", 8000, 1, subtype="PCM_16") as handle:
        for _ in range(30):
            handle.write(minute)
    tracemalloc.start()
    try:
        got = load_audio_file(path, 48000, window_samples=W, max_windows=K)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert got.num_samples == 30 * 60 * 48000 and got.window_starts == (0, 42_960_000, 86_400_000 - W)
    assert peak < 24 * 2**20, f"peak {peak / 2**20:.1f} MiB"  # 3 windows (5.8 MB) + spans + a 1 MiB read buffer


def test_files_bytes_and_path_dicts_are_windowed_arrays_are_not(tmp_path):
    path = _write_blocks(tmp_path / "long.flac", _signal(22050, 40.0), 22050)
    windowed = load_audio({"path": str(path)}, 48000, window_samples=W, max_windows=K)
    assert isinstance(windowed, WindowedWaveform)
    for encoded in (path.read_bytes(), {"bytes": path.read_bytes(), "path": "long.flac"}):
        from_bytes = load_audio(encoded, 48000, window_samples=W, max_windows=K)
        assert isinstance(from_bytes, WindowedWaveform) and from_bytes.window_starts == windowed.window_starts
        np.testing.assert_array_equal(from_bytes, windowed)
    whole = load_audio(path.read_bytes(), 48000)
    assert type(whole) is np.ndarray and len(whole) == windowed.num_samples
    np.testing.assert_array_equal(whole, load_audio_file(path, 48000))
    array = load_audio(_signal(22050, 40.0), 48000, sampling_rate=22050, window_samples=W, max_windows=K)
    assert type(array) is np.ndarray and len(array) == windowed.num_samples
    batch = load_audio_batch([path, str(path)], 48000, window_samples=W, max_windows=K)
    assert all(isinstance(item, WindowedWaveform) for item in batch)
    with pytest.raises(ValueError, match="both"):
        load_audio_file(path, 48000, window_samples=W)


def test_windowed_waveform_keeps_its_layout_only_as_itself(tmp_path):
    path = _write_blocks(tmp_path / "long.wav", _signal(48000, 45.0), 48000)
    got = load_audio_file(path, 48000, window_samples=W, max_windows=K)
    clone = pickle.loads(pickle.dumps(got))  # DataLoader workers
    assert isinstance(clone, WindowedWaveform) and clone.window_starts == got.window_starts
    np.testing.assert_array_equal(clone, got)
    assert not got[:100].has_layout and not (got * 2).has_layout and not got.copy().has_layout
    # handed back to the loader at its own rate (as the captioner and the collator do), it passes through unchanged
    again = load_audio(got, 48000, sampling_rate=48000)
    assert isinstance(again, WindowedWaveform) and again.has_layout and again.window_starts == got.window_starts
    np.testing.assert_array_equal(again, got)
    assert again is not got and not np.shares_memory(again, got)
    with pytest.raises(AudioInputError, match="cannot be resampled"):
        load_audio(got, 16000, sampling_rate=48000, name="clip")
    with pytest.raises(AudioInputError, match="not sampling_rate=44100"):
        load_audio(got, 48000, sampling_rate=44100, name="clip")


def test_processor_features_from_windowed_decode_equal_full_decode(tiny_release, tmp_path):
    _, _, processor = tiny_release
    assert processor.sampling_rate == 48000 and processor.window_samples == W
    flac = _write_blocks(tmp_path / "long.flac", _signal(48000, 41.0, 2), 48000)
    wav = _write_blocks(tmp_path / "odd.wav", _signal(11127, 52.0), 11127)
    for path, atol in ((flac, 0), (wav, 1e-6)):
        loaded = processor.load_audio([str(path)])[0]
        assert isinstance(loaded, WindowedWaveform)
        windows, is_long = processor.window_audio(loaded)
        full = load_audio_file(path, 48000)
        ref, ref_long = split_into_windows(full, W, K)
        assert is_long and ref_long and len(windows) == K
        from_file = processor(audio=[str(path)])
        from_full = processor(audio=[full], sampling_rate=48000)
        from_loaded = processor(audio=[loaded], sampling_rate=48000)  # what caption_waveforms passes
        np.testing.assert_array_equal(from_file["input_ids"], from_full["input_ids"])  # same length token and count
        np.testing.assert_array_equal(from_file["input_features"], from_loaded["input_features"])
        diff = (from_file["input_features"] - from_full["input_features"]).abs().max().item()
        # windows equal within 1e-6 give log-mels within 0.05 dB (measured 0.011 dB, in near-silent mel bins)
        assert diff == 0 or (atol and diff < 0.05), diff


# ----------------------------------------------------------------------------------------------------------------------
# headers that lie, truncated and empty files
# ----------------------------------------------------------------------------------------------------------------------


def _flac_bytes(tmp_path: Path, seconds: float = 60.0, sr: int = 44100) -> bytes:
    path = tmp_path / "intact.flac"
    sf.write(path, _signal(sr, seconds), sr, subtype="PCM_16")
    return path.read_bytes()


def test_truncated_flac_decodes_what_is_there_with_a_warning(tmp_path):
    blob = _flac_bytes(tmp_path)
    cut = tmp_path / "cut.flac"
    cut.write_bytes(blob[: int(len(blob) * 0.7)])
    assert sf.info(str(cut)).frames == 60 * 44100  # the header still claims a minute
    with pytest.warns(UserWarning, match=r"cut\.flac: the header claims 2646000 frames but \d+ could be decoded"):
        full = load_audio_file(cut, 48000)
    assert 0.6 * 60 * 48000 < len(full) < 0.75 * 60 * 48000
    with pytest.warns(UserWarning, match="header claims"):
        got = load_audio_file(cut, 48000, window_samples=W, max_windows=K)
    _assert_windows_match(got, full, 1e-6)
    with pytest.warns(UserWarning, match="header claims"):
        prefix = load_audio_file(cut, 44100)  # no resampling: the decoded frames are the intact file's first ones
    np.testing.assert_array_equal(prefix, load_audio_file(tmp_path / "intact.flac", 44100)[: len(prefix)])


def test_truncated_flac_with_nothing_decodable_is_an_error(tmp_path):
    blob = _flac_bytes(tmp_path, seconds=5.0)
    cut = tmp_path / "header_only.flac"
    cut.write_bytes(blob[:300])
    error = _refused(cut, 48000, "could not decode audio", window_samples=W, max_windows=K)
    assert "the header claims 220500 frames" in str(error)


def test_flac_without_a_length_in_its_header(tmp_path):
    blob = bytearray(_flac_bytes(tmp_path))
    assert blob[:4] == b"fLaC" and blob[4] & 0x7F == 0  # STREAMINFO first
    blob[21] &= 0xF0  # total samples: 36 bits at bytes 21 (low nibble) to 25 of the file; 0 means unknown
    blob[22:26] = b"\0\0\0\0"
    unknown = tmp_path / "unknown.flac"
    unknown.write_bytes(bytes(blob))
    assert sf.info(str(unknown)).frames > 2**40  # libsndfile: unknown
    intact = tmp_path / "intact.flac"
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # an unknown length is not a lie: no warning
        np.testing.assert_array_equal(load_audio_file(unknown, 48000), load_audio_file(intact, 48000))
        got = load_audio_file(unknown, 48000, window_samples=W, max_windows=K)
    np.testing.assert_array_equal(got, load_audio_file(intact, 48000, window_samples=W, max_windows=K))


def test_wav_whose_header_claims_more_data_than_the_file_holds(tmp_path):
    path = tmp_path / "long.wav"
    sf.write(path, _signal(16000, 40.0), 16000, subtype="PCM_16")
    blob = bytearray(path.read_bytes())
    data = blob.index(b"data")
    blob[data + 4 : data + 8] = (0x7FFF0000).to_bytes(4, "little")  # a 2 GB data chunk, in a 1.3 MB file
    lying = tmp_path / "lying.wav"
    lying.write_bytes(bytes(blob))
    expected = load_audio_file(path, 48000, window_samples=W, max_windows=K)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        np.testing.assert_array_equal(load_audio_file(lying, 48000, window_samples=W, max_windows=K), expected)


def test_zero_length_and_header_only_files(tmp_path):
    zero = tmp_path / "zero.wav"
    zero.write_bytes(b"")
    _refused(zero, 48000, r"could not decode audio: the file is empty \(0 bytes\)", window_samples=W, max_windows=K)
    header_only = tmp_path / "header_only.wav"
    sf.write(header_only, np.zeros((0, 1), np.float32), 16000)
    with pytest.raises(AudioInputError, match="zero samples"):
        load_audio_file(header_only, 48000, window_samples=W, max_windows=K)


# ----------------------------------------------------------------------------------------------------------------------
# paths that are not regular files
# ----------------------------------------------------------------------------------------------------------------------


def _load_in_thread(path, timeout: float = 20.0):
    """load_audio_file in a thread: returns its error (or result); fails the test instead of hanging on a FIFO."""
    outcome = {}

    def run():
        try:
            outcome["result"] = load_audio_file(path, 48000, window_samples=W, max_windows=K)
        except Exception as exc:  # noqa: BLE001
            outcome["error"] = exc

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(timeout)
    assert not thread.is_alive(), f"loading {path} blocked"
    return outcome.get("error", outcome.get("result"))


def test_fifo_is_refused_without_blocking(tmp_path):
    fifo = tmp_path / "pipe.wav"
    os.mkfifo(fifo)
    error = _load_in_thread(fifo)
    assert isinstance(error, AudioInputError) and "FIFO" in str(error)
    _assert_names(error, str(fifo))
    good = _write_blocks(tmp_path / "good.wav", _signal(48000, 2.0), 48000)
    out = load_audio_batch([good, fifo, good], 48000)
    assert [type(item) for item in out] == [np.ndarray, AudioInputError, np.ndarray]


def test_devices_and_sockets_are_refused(tmp_path):
    error = _load_in_thread("/dev/null")
    assert isinstance(error, AudioInputError) and "character device" in str(error)
    with tempfile.TemporaryDirectory(dir="/tmp") as short:  # AF_UNIX paths must be short
        address = os.path.join(short, "s.wav")
        server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            server.bind(address)
            error = _load_in_thread(address)
        finally:
            server.close()
    assert isinstance(error, AudioInputError) and "socket" in str(error)
    _assert_names(error, address)


def test_broken_links_loops_and_directories_name_the_path(tmp_path):
    dangling = tmp_path / "dangling.wav"
    dangling.symlink_to(tmp_path / "gone.wav")
    loop_a, loop_b = tmp_path / "loop_a.wav", tmp_path / "loop_b.wav"
    loop_a.symlink_to(loop_b)
    loop_b.symlink_to(loop_a)
    folder = tmp_path / "folder.wav"
    folder.mkdir()
    for path, fragment in [
        (dangling, "broken symbolic link (its target"),
        (loop_a, "symbolic link loop"),
        (folder, "is a directory"),
        (tmp_path / "missing.wav", "file not found"),
        (tmp_path / "nested" / "missing.wav", "file not found"),
    ]:
        _refused(path, 48000, re.escape(fragment))


@pytest.mark.skipif(not CHMOD_BLOCKS, reason="running as root: chmod 000 does not stop root from reading")
def test_unreadable_file_and_folder(tmp_path):
    locked = _write_blocks(tmp_path / "locked.wav", _signal(48000, 1.0), 48000)
    locked.chmod(0)
    closed = tmp_path / "closed"
    closed.mkdir()
    inside = _write_blocks(closed / "inside.wav", _signal(48000, 1.0), 48000)
    closed.chmod(0)
    try:
        _refused(locked, 48000, "permission denied")
        _refused(inside, 48000, "permission denied")
        with pytest.raises(AudioInputError, match="cannot be listed"):
            load_audio_file(closed, 48000)
    finally:
        closed.chmod(0o755)
        locked.chmod(0o644)


# ----------------------------------------------------------------------------------------------------------------------
# any decoder or resampler failure is the item's error
# ----------------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("exception", [RuntimeError("soxr: internal error"), MemoryError(), ValueError("bad ratio")])
def test_resampler_failure_becomes_the_items_error(tmp_path, monkeypatch, exception):
    path = _write_blocks(tmp_path / "clip44k.wav", _signal(44100, 40.0), 44100)

    def failing(*args, **kwargs):
        raise exception

    monkeypatch.setattr(audio_arrays_paircap, "_soxr_resample", failing)
    for layout in ({}, {"window_samples": W, "max_windows": K}):
        _refused(path, 48000, r"could not resample 44100 Hz -> 48000 Hz", **layout)
    out = load_audio_batch([path, np.full(480, 0.1)], 48000, sampling_rate=48000)
    assert isinstance(out[0], AudioInputError) and isinstance(out[1], np.ndarray)


@pytest.mark.parametrize("where", ["open", "read", "seek"])
def test_decoder_failure_becomes_the_items_error(tmp_path, monkeypatch, where):
    path = _write_blocks(tmp_path / "clip.flac", _signal(48000, 40.0), 48000)

    def failing(*args, **kwargs):
        raise OSError("decoder exploded")

    target = {"open": "__init__", "read": "read", "seek": "seek"}[where]
    monkeypatch.setattr(sf.SoundFile, target, failing)
    monkeypatch.setattr(audio_decoding_paircap, "PyAVSound", failing)  # else PyAV opens what soundfile does not
    out = load_audio_batch([path], 48000, window_samples=W, max_windows=K)[0]
    assert isinstance(out, AudioInputError) and out.item == str(path)
    assert "decoder exploded" in str(out)


# ----------------------------------------------------------------------------------------------------------------------
# load_audio / load_audio_batch
# ----------------------------------------------------------------------------------------------------------------------


def test_load_audio_arrays_and_missing_rate_warning(caplog):
    x = _tone(440, 48000, 4800, 0.5)
    out = load_audio(x, 16000, sampling_rate=48000)
    assert out.shape == (1600,) and out.dtype == np.float32
    np.testing.assert_allclose(out, resample(torch.from_numpy(x), 48000, 16000).numpy(), atol=1e-7)
    np.testing.assert_allclose(load_audio(torch.from_numpy(x).float(), 16000, sampling_rate=48000), out, atol=1e-6)

    with caplog.at_level(logging.WARNING, logger=audio_loading_paircap.__name__):
        same = load_audio(x, 16000)
        load_audio(x, 16000)
    warned = [r.getMessage() for r in caplog.records if r.name == audio_loading_paircap.__name__]
    assert len(warned) == 1 and "assuming it is already at 16000 Hz" in warned[0]  # warned only once
    assert same.shape == (4800,)

    with pytest.raises(AudioInputError, match="sampling_rate") as info:
        load_audio(x, 16000, sampling_rate=0, name="clip")
    _assert_names(info.value, "clip")


def test_load_audio_paths_dicts_and_bytes(tmp_path):
    x = _tone(440, 22050, 22050, 0.5).astype(np.float32)
    path = tmp_path / "tone.flac"
    sf.write(path, x, 22050)
    from_path = load_audio(path, 16000)
    assert from_path.shape == (16000,)
    np.testing.assert_array_equal(load_audio(str(path), 16000), from_path)

    decoded = {"array": x, "sampling_rate": 22050, "path": "tone.flac"}
    np.testing.assert_allclose(load_audio(decoded, 16000), from_path, atol=1e-4)  # FLAC is 16-bit
    np.testing.assert_array_equal(load_audio({"path": str(path)}, 16000), from_path)
    np.testing.assert_array_equal(load_audio({"bytes": None, "path": str(path)}, 16000), from_path)

    blob = path.read_bytes()
    np.testing.assert_array_equal(load_audio({"bytes": blob, "path": None}, 16000), from_path)
    np.testing.assert_array_equal(load_audio(blob, 16000), from_path)
    buf = io.BytesIO()
    sf.write(buf, x, 22050, format="WAV", subtype="FLOAT")
    np.testing.assert_allclose(load_audio({"bytes": buf.getvalue()}, 16000), from_path, atol=1e-4)

    # the dict's own "path" names the item in errors
    with pytest.raises(AudioInputError) as info:
        load_audio({"array": np.zeros(100), "sampling_rate": 16000, "path": "quiet.wav"}, 16000)
    _assert_names(info.value, "quiet.wav")
    with pytest.raises(AudioInputError, match="could not decode") as info:
        load_audio({"bytes": b"garbage" * 50}, 16000, name="audio[2]")
    _assert_names(info.value, "audio[2]")
    with pytest.raises(AudioInputError, match="'array', 'bytes' or 'path'") as info:
        load_audio({"array": None, "sampling_rate": 16000}, 16000, name="audio[5]")
    _assert_names(info.value, "audio[5]")
    with pytest.raises(AudioInputError, match="sampling_rate=22050"):
        load_audio(decoded, 16000, sampling_rate=44100)
    for bad in ([0.1, 0.2], None, 3.5):
        with pytest.raises(AudioInputError, match="unsupported input type") as info:
            load_audio(bad, 16000, name="audio[1]")
        _assert_names(info.value, "audio[1]")


def test_load_audio_accepts_decoder_objects():
    """datasets>=4 yields torchcodec AudioDecoder objects; they are handled by duck typing."""
    stereo = torch.from_numpy(np.stack([_tone(440, 32000, 3200, 0.5), _tone(440, 32000, 3200, 0.3)])).float()
    decoder = SimpleNamespace(get_all_samples=lambda: SimpleNamespace(data=stereo, sample_rate=32000))
    out = load_audio(decoder, 16000)
    expected = resample(stereo.double().mean(0), 32000, 16000).numpy()
    np.testing.assert_allclose(out, expected, atol=1e-6)


def test_load_audio_batch_keeps_good_items_and_slots_errors(tmp_path):
    good = []
    for i, freq in enumerate([300.0, 500.0]):
        p = tmp_path / f"good{i}.wav"
        sf.write(p, _tone(freq, 48000, 4800, 0.5), 48000)
        good.append(p)
    corrupt = tmp_path / "corrupt.wav"
    corrupt.write_bytes(b"RIFF\x00\x00\x00\x00WAVEjunkjunkjunk")
    items = [good[0], str(corrupt), np.zeros(480), _tone(700, 48000, 4800, 0.5), good[1]]

    out = load_audio_batch(items, 16000, sampling_rate=48000)
    assert len(out) == 5
    assert [isinstance(o, AudioInputError) for o in out] == [False, True, True, False, False]
    _assert_names(out[1], str(corrupt))
    _assert_names(out[2], "audio[2]")
    assert "silent" in str(out[2])
    for o in (out[0], out[3], out[4]):
        assert o.dtype == np.float32 and o.shape == (1600,)
    np.testing.assert_allclose(out[0], load_audio_file(good[0], 16000))
    np.testing.assert_allclose(out[4], load_audio_file(good[1], 16000))

    per_item = load_audio_batch([np.ones(100) * 0.1, np.ones(300) * 0.1], 16000, sampling_rate=[16000, 48000])
    assert [o.shape for o in per_item] == [(100,), (100,)]
    assert load_audio_batch([], 16000) == []
    with pytest.raises(ValueError, match="2 sampling rates for 1 items"):
        load_audio_batch([np.ones(10)], 16000, sampling_rate=[16000, 16000])
    with pytest.raises(TypeError, match="list"):
        load_audio_batch(str(good[0]), 16000)


def test_real_files_in_batch_with_a_missing_one():
    _need(ESC50)
    paths = [str(p) for p in sorted(ESC50.glob("*.flac"))[:3]]
    missing = str(ESC50 / "does-not-exist.flac")
    out = load_audio_batch([paths[0], missing, paths[1], paths[2]], 16000)
    assert isinstance(out[1], AudioInputError) and out[1].item == missing
    for o in (out[0], out[2], out[3]):
        assert isinstance(o, np.ndarray) and o.shape == (80000,) and o.dtype == np.float32
