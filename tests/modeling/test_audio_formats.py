"""Formats soundfile cannot read decode through PyAV (ffmpeg): AAC in M4A, Opus in WebM; Ogg Opus through soundfile.

Each clip is encoded in the test with PyAV from a real ESC-50 clip, at 192 kb/s, and must decode to the source's
length, aligned (AAC priming and padding, Opus pre-skip dropped), within 20 dB SNR of it (measured 26-42 dB on four
clips), and caption like the source's WAV.
"""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import av
import numpy as np
import pytest
import soundfile as sf

from modeling_paircap.audio_arrays_paircap import AudioInputError
from modeling_paircap.audio_loading_paircap import load_audio, load_audio_file
from paircap.captioning import walk_audio_inputs
from paircap.cli import main

W, K = 480_000, 3
FORMATS = {"m4a": ("mp4", "aac"), "opus": ("ogg", "libopus"), "webm": ("webm", "libopus")}


@pytest.fixture(scope="module")
def source(shared_data) -> tuple[np.ndarray, int, Path]:
    folder = shared_data / "esc50_cc"
    clips = sorted(folder.glob("*.flac"))
    if not clips:
        pytest.skip(f"real test clips not available: {folder} is missing (shared data folder not checked out)")
    x, sr = sf.read(clips[0], dtype="float32")
    return x, sr, clips[0]


def encode(path: Path, x: np.ndarray, sr: int) -> Path:
    """Write mono ``x`` with PyAV in the container and codec of ``path``'s extension, at 192 kb/s."""
    container, codec = FORMATS[path.suffix[1:]]
    with av.open(str(path), "w", format=container) as out:
        stream = out.add_stream(codec, rate=sr, layout="mono")
        stream.bit_rate = 192_000
        frame = av.AudioFrame.from_ndarray(x[None, :], format="flt", layout="mono")
        frame.sample_rate, frame.pts = sr, 0
        for packet in [*stream.encode(frame), *stream.encode(None)]:
            out.mux(packet)
    return path


def _snr_db(reference: np.ndarray, x: np.ndarray) -> float:
    return 10 * np.log10(np.sum(reference.astype(np.float64) ** 2) / np.sum((reference - x).astype(np.float64) ** 2))


@pytest.mark.parametrize("suffix", sorted(FORMATS))
def test_lossy_formats_decode_to_nearly_the_source(source, tmp_path, suffix):
    x, sr, clip = source
    path = encode(tmp_path / f"clip.{suffix}", x, sr)
    if suffix != "opus":  # Ogg Opus is soundfile's; the others only PyAV reads
        with pytest.raises(sf.LibsndfileError):
            sf.info(str(path))
    reference = load_audio_file(clip, 48000)
    for got in (load_audio_file(path, 48000, window_samples=W, max_windows=K), load_audio(path.read_bytes(), 48000)):
        assert type(got) is np.ndarray and len(got) == len(reference)  # padding and priming dropped
        assert _snr_db(reference, got) > 20, suffix


def test_a_long_m4a_is_decoded_only_in_its_windows(source, tmp_path):
    x, sr, _ = source
    long = np.concatenate([x * (0.5 + 0.1 * i) for i in range(8)])  # 40 s
    path = encode(tmp_path / "long.m4a", long, sr)
    got = load_audio_file(path, 48000, window_samples=W, max_windows=K)
    assert got.num_samples == len(long) and got.is_long
    whole = load_audio_file(path, 48000)
    np.testing.assert_array_equal(np.concatenate(got.windows()), whole[np.r_[tuple(slice(s, s + W) for s in
                                                                                    got.window_starts)]])  # fmt: skip


def test_containers_other_than_audio_are_not_opened_by_ffmpeg(tmp_path):
    image = tmp_path / "picture.m4a"  # a PNG that ffmpeg's image demuxer would read, under an audio name
    with av.open(str(tmp_path / "frame.png"), "w", format="image2") as out:
        stream = out.add_stream("png", rate=1)
        stream.width, stream.height, stream.pix_fmt = 8, 8, "rgb24"
        frame = av.VideoFrame.from_ndarray(np.zeros((8, 8, 3), np.uint8), format="rgb24")
        for packet in [*stream.encode(frame), *stream.encode(None)]:
            out.mux(packet)
    shutil.copy(tmp_path / "frame.png", image)
    with pytest.raises(AudioInputError, match=r"could not decode audio \(soundfile: .*; PyAV: ") as info:
        load_audio_file(image, 48000)
    assert info.value.item == str(image)


def test_without_pyav_an_m4a_says_what_to_install(source, tmp_path, monkeypatch):
    x, sr, _ = source
    path = encode(tmp_path / "clip.m4a", x, sr)
    monkeypatch.setitem(sys.modules, "av", None)  # as where PyAV is not installed: the remote code runs without it
    with pytest.raises(AudioInputError, match=r"PyAV is not installed \(pip install av") as info:
        load_audio_file(path, 48000)
    assert info.value.item == str(path) and "soundfile: Format not recognised" in str(info.value)


def test_caption_command_captions_m4a_and_opus_like_the_wav_and_names_a_broken_one(source, tiny_release, tmp_path):
    x, sr, clip = source
    folder = tmp_path / "clips"
    folder.mkdir()
    sf.write(folder / "clip.wav", x, sr, subtype="FLOAT")
    other = sorted(clip.parent.glob("*.flac"))[3]
    shutil.copy(other, folder / "other.flac")  # another sound: the tiny model's caption depends on the audio
    for suffix in FORMATS:
        encode(folder / f"clip.{suffix}", x, sr)
    (folder / "broken.m4a").write_bytes(b"\x00\x00\x00\x18ftypM4A " + bytes(64))  # an MP4 header and nothing else
    assert not walk_audio_inputs([folder]).skipped  # every audio extension is taken, none skipped
    output = tmp_path / "captions.jsonl"
    argv = ["caption", str(folder), "--model", str(tiny_release[0]), "--output", str(output)]
    assert main([*argv, "--max-new-tokens", "6", "--no-progress"]) == 0  # no --verbose: every file has its line
    records = {Path(r["file"]).name: r for r in map(json.loads, output.read_text().splitlines())}
    assert sorted(records) == ["broken.m4a", "clip.m4a", "clip.opus", "clip.wav", "clip.webm", "other.flac"]
    assert records["other.flac"]["caption"] != records["clip.wav"]["caption"]
    assert records["broken.m4a"]["error"].startswith(f"{folder / 'broken.m4a'}: could not decode audio")
    for name in ("clip.m4a", "clip.opus", "clip.webm"):
        assert records[name]["caption"] == records["clip.wav"]["caption"], name
