"""Unlabelled audio folders for the distillation probe: found, cut, checked, and kept inside the folders given."""

from __future__ import annotations

import logging

import numpy as np
import pytest
import soundfile as sf

from recipes.mini.local.augmented_clips import CLIP, RATE
from recipes.mini.local.extra_audio import audio_files, extra_segments, segments


def tone(seconds: float, level: float = 0.1) -> np.ndarray:
    time = np.arange(int(seconds * RATE)) / RATE
    return (level * np.sin(2 * np.pi * 440 * time)).astype(np.float32)


def test_segments_spread_over_a_long_file_and_drop_short_or_silent_pieces():
    pieces = segments(tone(12.0), per_file=2)
    assert [len(piece) for piece in pieces] == [CLIP, CLIP]
    assert len(segments(tone(12.0), per_file=5)) == 3  # at most one piece per 5 s of audio
    assert [len(piece) for piece in segments(tone(2.0), per_file=2)] == [2 * RATE]
    assert segments(tone(0.3), per_file=2) == [] and segments(np.zeros(RATE, np.float32), per_file=2) == []


def test_a_link_out_of_the_folders_is_skipped(tmp_path, caplog):
    folder, elsewhere = tmp_path / "sounds", tmp_path / "elsewhere"
    folder.mkdir(), elsewhere.mkdir()
    sf.write(folder / "inside.wav", tone(1.0), RATE)
    sf.write(elsewhere / "private.wav", tone(1.0), RATE)
    (folder / "link.wav").symlink_to(elsewhere / "private.wav")
    (folder / "notes.txt").write_text("not audio")
    with caplog.at_level(logging.WARNING):
        assert audio_files([folder]) == [folder / "inside.wav"]
    assert "link.wav: links outside the extra-audio folders" in caplog.text
    with pytest.raises(FileNotFoundError, match="no such folder of extra audio"):
        audio_files([tmp_path / "missing"])


def test_a_corrupt_file_is_skipped_with_its_name_and_the_limit_holds(tmp_path, caplog):
    for index in range(3):
        sf.write(tmp_path / f"clip{index}.flac", tone(6.0), RATE)
    (tmp_path / "broken.ogg").write_bytes(b"OggS but not really")
    with caplog.at_level(logging.WARNING):
        found = extra_segments([tmp_path], limit=100, per_file=2)
    assert len(found) == 6 and "broken.ogg" in caplog.text
    assert len(extra_segments([tmp_path], limit=3, per_file=2)) == 3
