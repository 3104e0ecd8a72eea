"""Tests for modeling_paircap.audio_io (loading, validation, resampling).

Resampling accuracy vs soxr "VHQ", measured on the real clips used below (edges of 0.1 s excluded):
  * in band (both signals FFT-low-passed at 0.9 x the lower Nyquist): SNR 82-141 dB, max abs diff <= 7.2e-5;
  * full band: SNR 32-108 dB. The two filters differ only in their transition band (kaiser_best's cutoff is
    0.9475 x Nyquist, soxr's differs), so full-band agreement depends on how much energy a clip has up there.
The asserted tolerances are in-band SNR > 75 dB, in-band max abs diff < 2e-4 and full-band SNR > 25 dB.
Pure tones come out within 1e-6 of the analytic sine (measured ~1.5e-8).
"""

from __future__ import annotations

import io
import math
import pickle
import sys
import warnings
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import soundfile as sf
import soxr
import torch

from modeling_paircap import audio_io
from modeling_paircap.audio_io import (
    AudioInputError,
    load_audio,
    load_audio_batch,
    load_audio_file,
    resample,
    to_mono_float32,
)

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
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


@pytest.fixture(autouse=True)
def _reset_missing_sr_warning(monkeypatch):
    monkeypatch.setattr(audio_io, "_warned_missing_sr", False)


# ----------------------------------------------------------------------------------------------------------------------
# resample
# ----------------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("clip_index", range(4))
def test_resample_matches_soxr_vhq_on_real_clip(clip_index):
    _need(CLOTHO)
    _need(ESC50)
    path = _real_clips()[clip_index]
    x48, sr = sf.read(path, dtype="float64")
    assert sr == 48000 and x48.ndim == 1

    x44 = soxr.resample(x48, 48000, 44100, quality="VHQ")
    for src, orig_sr, target_sr in [(x44, 44100, 48000), (x48, 48000, 16000)]:
        ours = resample(torch.from_numpy(src), orig_sr, target_sr).numpy()
        ref = soxr.resample(src, orig_sr, target_sr, quality="VHQ")
        assert len(ours) == math.ceil(len(src) * target_sr / orig_sr)
        assert abs(len(ours) - len(ref)) <= 1
        n = min(len(ours), len(ref))
        edge = target_sr // 10
        cutoff = 0.9 * min(orig_sr, target_sr) / 2
        a, b = _lowpass(ours[:n], target_sr, cutoff), _lowpass(ref[:n], target_sr, cutoff)
        inband_snr = _snr_db(b[edge:-edge], a[edge:-edge])
        inband_max = float(np.abs(a - b)[edge:-edge].max())
        full_snr = _snr_db(ref[edge : n - edge], ours[edge : n - edge])
        msg = f"{path.name} {orig_sr}->{target_sr}: in-band SNR {inband_snr:.1f} dB, max {inband_max:.2e}"
        assert inband_snr > 75, msg
        assert inband_max < 2e-4, msg
        assert full_snr > 25, f"{msg}, full-band SNR {full_snr:.1f} dB"


@pytest.mark.parametrize(
    ("orig_sr", "target_sr", "freq"),
    [
        (44100, 48000, 997.0),
        (48000, 16000, 997.0),
        (48000, 16000, 6000.0),
        (16000, 48000, 5000.0),
        (48000, 44100, 15e3),
    ],
)
def test_resample_pure_sine_frequency_preserved(orig_sr, target_sr, freq):
    x = _tone(freq, orig_sr, 2 * orig_sr, amp=0.5)
    y = resample(torch.from_numpy(x), orig_sr, target_sr).numpy()
    assert len(y) == 2 * target_sr
    edge = target_sr // 10
    expected = _tone(freq, target_sr, len(y), amp=0.5)
    assert np.abs(y - expected)[edge:-edge].max() < 1e-6
    mid = y[edge:-edge]
    spectrum = np.abs(np.fft.rfft(mid * np.hanning(len(mid))))
    peak = np.fft.rfftfreq(len(mid), 1 / target_sr)[spectrum.argmax()]
    assert abs(peak - freq) <= target_sr / len(mid)


def test_resample_removes_content_above_new_nyquist():
    x = _tone(9000.0, 48000, 96000)  # would alias to 7 kHz at 16 kHz
    y = resample(torch.from_numpy(x), 48000, 16000).numpy()
    assert np.sqrt(np.mean(y[1600:-1600] ** 2)) < 1e-6  # measured ~2.4e-8 (about -150 dB)


def _direct_kaiser_sinc(x: np.ndarray, orig: int, new: int, j: int) -> float:
    """Output sample j straight from the windowed-sinc interpolation formula (gcd-reduced rates, no polyphase)."""
    lpw, beta = 64, 14.769656459379492
    base = min(orig, new) * 0.9475
    n = np.arange(len(x))
    t = base * (n / orig - j / new)
    keep = np.abs(t) < lpw
    t = t[keep]
    window = np.i0(beta * np.sqrt(1 - (t / lpw) ** 2)) / np.i0(beta)
    return float(np.sum(x[keep] * np.sinc(t) * window) * base / orig)


@pytest.mark.parametrize(("orig_sr", "target_sr"), [(44100, 48000), (48000, 16000), (16000, 22050), (48000, 44100)])
def test_resample_matches_direct_windowed_sinc_formula(orig_sr, target_sr):
    rng = np.random.default_rng(0)
    x = rng.standard_normal(3000)
    y = resample(torch.from_numpy(x), orig_sr, target_sr).numpy()
    g = math.gcd(orig_sr, target_sr)
    for j in [0, 1, 7, len(y) // 3, len(y) // 2 + 1, len(y) - 1]:
        assert y[j] == pytest.approx(_direct_kaiser_sinc(x, orig_sr // g, target_sr // g, j), abs=1e-10)


@pytest.mark.parametrize("n", [1, 2, 3, 146, 147, 148, 1000, 44101])
def test_resample_output_length_is_ceil(n):
    for orig_sr, target_sr in [(44100, 48000), (48000, 44100), (48000, 16000), (8000, 22050)]:
        y = resample(torch.ones(n, dtype=torch.float64), orig_sr, target_sr)
        assert y.shape == (math.ceil(n * target_sr / orig_sr),)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_resample_batch_dims_match_per_row(dtype):
    x = torch.randn(2, 3, 4410, generator=torch.Generator().manual_seed(1), dtype=dtype)
    y = resample(x, 44100, 16000)
    assert y.shape == (2, 3, 1600) and y.dtype == dtype
    for i in range(2):
        for k in range(3):
            torch.testing.assert_close(y[i, k], resample(x[i, k].clone(), 44100, 16000))
    # non-contiguous input (time axis made last by a transpose)
    xt = x.transpose(1, 2).contiguous().transpose(1, 2)
    assert not xt.is_contiguous()
    torch.testing.assert_close(resample(xt, 44100, 16000), y)


def test_resample_float32_close_to_float64():
    x = torch.from_numpy(_tone(440.0, 44100, 44100, amp=0.8) + 0.1 * _tone(7000.0, 44100, 44100))
    y64 = resample(x, 44100, 48000)
    y32 = resample(x.float(), 44100, 48000)
    assert y32.dtype == torch.float32
    assert (y32.double() - y64).abs().max() < 1e-5


def test_resample_same_rate_returns_input_unchanged():
    x = torch.randn(2, 100)
    assert resample(x, 16000, 16000) is x


def test_resample_empty_and_kernel_cache():
    assert resample(torch.zeros(3, 0), 48000, 16000).shape == (3, 0)
    audio_io._sinc_kernel.cache_clear()
    x = torch.randn(500)
    resample(x, 22050, 16000)
    resample(x, 44100, 32000)  # same gcd-reduced ratio 441:320 -> same kernel
    info = audio_io._sinc_kernel.cache_info()
    assert info.misses == 1 and info.hits == 1


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
    with pytest.raises(ValueError, match="common divisor"):
        resample(torch.ones(10), 44100, 16001)  # gcd 1: absurd kernel size, refused instead of eating RAM


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
    assert len(out) == math.ceil(len(raw) * 16000 / sr)
    expected = resample(torch.from_numpy(raw.astype(np.float64)), sr, 16000).numpy()
    np.testing.assert_allclose(out, expected, atol=1e-7)
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
    with pytest.raises(AudioInputError) as info:
        load_audio_file(path, 16000)
    _assert_names(info.value, str(path))
    assert "could not decode audio (soundfile:" in str(info.value)


def test_missing_directory_empty_nan_silent_files(tmp_path):
    missing = tmp_path / "nope.flac"
    with pytest.raises(AudioInputError, match="file not found") as info:
        load_audio_file(missing, 16000)
    _assert_names(info.value, str(missing))

    with pytest.raises(AudioInputError, match="directory") as info:
        load_audio_file(tmp_path, 16000)
    _assert_names(info.value, str(tmp_path))

    empty = tmp_path / "empty.wav"
    sf.write(empty, np.zeros((0, 1), dtype=np.float32), 16000)
    with pytest.raises(AudioInputError, match="zero samples") as info:
        load_audio_file(empty, 16000)
    _assert_names(info.value, str(empty))

    nan = tmp_path / "nan.wav"
    data = np.full(1000, 0.1, dtype=np.float32)
    data[10] = np.nan
    sf.write(nan, data, 16000, subtype="FLOAT")
    with pytest.raises(AudioInputError, match="1 NaN") as info:
        load_audio_file(nan, 16000)
    _assert_names(info.value, str(nan))

    silent = tmp_path / "silent.flac"
    sf.write(silent, np.zeros(1000, dtype=np.float32), 16000)
    with pytest.raises(AudioInputError, match="silent") as info:
        load_audio_file(silent, 16000)
    _assert_names(info.value, str(silent))

    zero_bytes = tmp_path / "zero.wav"
    zero_bytes.write_bytes(b"")
    with pytest.raises(AudioInputError, match="could not decode") as info:
        load_audio_file(zero_bytes, 16000)
    _assert_names(info.value, str(zero_bytes))


def test_missing_soundfile_gives_install_hint(tmp_path, monkeypatch):
    path = tmp_path / "a.wav"
    sf.write(path, _tone(440, 16000, 1600), 16000)
    monkeypatch.setitem(sys.modules, "soundfile", None)  # makes `import soundfile` raise ImportError
    with pytest.raises(ImportError, match="pip install soundfile"):
        load_audio_file(path, 16000)


# ----------------------------------------------------------------------------------------------------------------------
# load_audio / load_audio_batch
# ----------------------------------------------------------------------------------------------------------------------


def test_load_audio_arrays_and_missing_rate_warning():
    x = _tone(440, 48000, 4800, 0.5)
    out = load_audio(x, 16000, sampling_rate=48000)
    assert out.shape == (1600,) and out.dtype == np.float32
    np.testing.assert_allclose(out, resample(torch.from_numpy(x), 48000, 16000).numpy(), atol=1e-7)
    np.testing.assert_allclose(load_audio(torch.from_numpy(x).float(), 16000, sampling_rate=48000), out, atol=1e-6)

    with pytest.warns(UserWarning, match="assuming it is already at 16000 Hz"):
        same = load_audio(x, 16000)
    assert same.shape == (4800,)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # warned only once
        load_audio(x, 16000)

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
