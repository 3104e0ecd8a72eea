"""The decoding budget: a file costs what its windows need, whatever its header claims or how well it compresses.

The crafted input is a FLAC of constant blocks (65,535 samples in 15 bytes each) whose STREAMINFO gives no length:
100 KB hold 2.8 hours of audio, 1 MB 28 hours. Before the budget, the processor's loader decoded all of it twice
(4.9 s and 49 s of CPU here) and encoded bytes decoded it whole (5.9 GB for the 100 KB file).
"""

from __future__ import annotations

import time
import warnings
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from modeling_paircap import audio_reader_paircap
from modeling_paircap.audio_arrays_paircap import AudioInputError
from modeling_paircap.audio_decoding_paircap import MAX_WHOLE_SECONDS, PROBE_SPANS
from modeling_paircap.audio_loading_paircap import load_audio, load_audio_file
from modeling_paircap.audio_windows_paircap import WindowedWaveform

W, K = 480_000, 3  # the processor's layout: 3 windows of 10 s at 48 kHz
BLOCK, RATE = 65535, 44100


def _crc_table(poly: int, bits: int) -> list[int]:
    top, mask = 1 << (bits - 1), (1 << bits) - 1
    table = []
    for byte in range(256):
        crc = byte << (bits - 8)
        for _ in range(8):
            crc = ((crc << 1) ^ poly) & mask if crc & top else (crc << 1) & mask
        table.append(crc)
    return table


CRC8, CRC16 = _crc_table(0x07, 8), _crc_table(0x8005, 16)


def _crc(data: bytes, table: list[int], bits: int) -> int:
    crc = 0
    for byte in data:
        crc = ((crc << 8) & ((1 << bits) - 1)) ^ table[(crc >> (bits - 8)) ^ byte]
    return crc


def _utf8_number(n: int) -> bytes:
    """FLAC's frame number coding (UTF-8 style, up to 2^21)."""
    if n < 0x80:
        return bytes([n])
    if n < 0x800:
        return bytes([0xC0 | n >> 6, 0x80 | n & 0x3F])
    if n < 0x10000:
        return bytes([0xE0 | n >> 12, 0x80 | n >> 6 & 0x3F, 0x80 | n & 0x3F])
    return bytes([0xF0 | n >> 18, 0x80 | n >> 12 & 0x3F, 0x80 | n >> 6 & 0x3F, 0x80 | n & 0x3F])


def constant_flac(size: int, total_samples: int = 0) -> tuple[bytes, int]:
    """A mono 16-bit 44.1 kHz FLAC of about ``size`` bytes: STREAMINFO (``total_samples``; 0 = unknown), then frames of
    65,535 samples of one constant value. Returns the bytes and the number of samples they hold."""
    streaminfo = BLOCK.to_bytes(2, "big") * 2 + bytes(6)  # min/max block size; frame sizes unknown
    streaminfo += ((RATE << 44) | (15 << 36) | total_samples).to_bytes(8, "big") + bytes(16)  # rate, 1 ch, 16 bit; MD5
    out = bytearray(b"fLaC" + bytes([0x80]) + len(streaminfo).to_bytes(3, "big") + streaminfo)
    frames = 0
    while len(out) < size:
        # sync + fixed block size; block size in 16 bits at the end, 44.1 kHz; mono, 16 bit; frame number
        header = bytes([0xFF, 0xF8, 0x79, 0x08]) + _utf8_number(frames) + (BLOCK - 1).to_bytes(2, "big")
        frame = header + bytes([_crc(header, CRC8, 8)]) + b"\x00" + (8192).to_bytes(2, "big")  # CONSTANT 0.25
        out += frame + _crc(frame, CRC16, 16).to_bytes(2, "big")
        frames += 1
    return bytes(out), frames * BLOCK


def _timed(load):
    """(result, this thread's CPU seconds, the warnings it gave)."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        start = time.thread_time()
        result = load()
        seconds = time.thread_time() - start
    return result, seconds, [str(warning.message) for warning in caught]


@pytest.fixture(scope="module")
def crafted(tmp_path_factory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("crafted")
    paths = {}
    for name, size in (("100k", 100_000), ("1m", 1_000_000)):
        blob, samples = constant_flac(size)
        paths[name] = folder / f"constant_{name}.flac"
        paths[name].write_bytes(blob)
    assert samples / RATE > 27 * 3600  # the 1 MB file holds 28 hours
    assert sf.info(str(paths["100k"])).frames > 2**40  # libsndfile: length unknown
    return paths


def test_a_flac_of_unknown_length_is_cut_at_the_budget_quickly_with_a_warning(crafted):
    budget_seconds = PROBE_SPANS * K * W / 48000  # 600 s
    for path in crafted.values():  # 2.8 h and 28 h: the same cost
        got, seconds, warned = _timed(lambda path=path: load_audio_file(path, 48000, window_samples=W, max_windows=K))
        assert isinstance(got, WindowedWaveform) and got.num_samples == budget_seconds * 48000 and got.is_long
        np.testing.assert_allclose(got[W:-W], 0.25, atol=1e-4)  # away from the resampler's edge at the clip's start
        assert seconds < 5.0, f"{path.name}: {seconds:.1f} s of CPU"  # measured 0.4 s (before: 4.9 s and 49 s)
        assert len(warned) == 1 and warned[0].startswith(f"{path}: the header does not state its length")
        assert f"decoding budget of {budget_seconds:.0f} s" in warned[0]


def test_encoded_bytes_are_decoded_within_the_same_budget(crafted):
    data = crafted["1m"].read_bytes()
    got, seconds, warned = _timed(lambda: load_audio({"bytes": data, "path": "upload.flac"}, 48000, 48000,
                                                     window_samples=W, max_windows=K))  # fmt: skip
    assert isinstance(got, WindowedWaveform) and len(got) == K * W  # before: 28 hours decoded whole (> 60 GB)
    assert seconds < 5.0 and warned[0].startswith("upload.flac: the header does not state its length")


def test_a_whole_clip_past_the_limit_is_refused_naming_the_file(crafted):
    path = crafted["100k"]
    with pytest.raises(AudioInputError, match=f"the audio runs past {MAX_WHOLE_SECONDS} s") as info:
        load_audio_file(path, 48000)  # no window layout: the whole clip, at most an hour
    assert info.value.item == str(path) and "window layout" in str(info.value)
    samples = constant_flac(100_000)[1]
    stated = path.with_name("stated.flac")
    stated.write_bytes(constant_flac(100_000, total_samples=samples)[0])
    with pytest.raises(AudioInputError, match=f"the header states {samples / RATE:.0f} s of audio"):
        load_audio_file(stated, 48000)  # refused before decoding


def test_a_stated_length_is_decoded_only_where_the_windows_lie(tmp_path):
    samples = constant_flac(100_000)[1]
    path = tmp_path / "stated.flac"
    path.write_bytes(constant_flac(100_000, total_samples=samples)[0])
    got, seconds, warned = _timed(lambda: load_audio_file(path, 48000, window_samples=W, max_windows=K))
    assert got.num_samples == round(samples * 48000 / RATE) and not warned  # the whole 2.8 hours, by seeking
    assert got.window_starts[-1] == got.num_samples - W and seconds < 5.0


def test_a_decoder_slower_than_the_time_budget_is_stopped_naming_the_file(tmp_path, monkeypatch):
    path = tmp_path / "slow.flac"
    sf.write(path, (0.3 * np.sin(np.arange(40 * 48000) / 9)).astype(np.float32), 48000)
    real_read = sf.SoundFile.read

    def slow_read(self, *args, **kwargs):  # a decoder that spends 50 ms of CPU per block
        end = time.thread_time() + 0.05
        while time.thread_time() < end:
            pass
        return real_read(self, *args, **kwargs)

    monkeypatch.setattr(sf.SoundFile, "read", slow_read)
    assert isinstance(load_audio_file(path, 48000, window_samples=W, max_windows=K), WindowedWaveform)  # in budget
    monkeypatch.setattr(audio_reader_paircap, "CPU_FLOOR_SECONDS", 0.1)
    monkeypatch.setattr(audio_reader_paircap, "CPU_PER_AUDIO_SECOND", 0.001)
    for layout in ({"window_samples": W, "max_windows": K}, {}):
        with pytest.raises(AudioInputError, match=r"decoding stopped: .* over the budget of 0.1 s") as info:
            load_audio_file(path, 48000, **layout)
        assert info.value.item == str(path)
