"""The CLAP stand-in's augmented takes (`recipes/mini/local/augmented_clips.py`): 5 s at 48 kHz, each take's
randomness fixed by the seed, the clip's place and the take's number (the same takes however often the writing is
interrupted), a rerun writes only what is missing, and an unreadable clip is named."""

import numpy as np
import pytest
import soundfile as sf

from recipes.mini.local.augmented_clips import CLIP, RATE, augmented_mixture, write_takes


@pytest.fixture
def clips(write_wav, sine_wave):
    return [
        ("short", str(write_wav("short.wav", sine_wave(1.5, 44100, 300.0), 44100))),
        ("long", str(write_wav("long.wav", sine_wave(7.0, 48000, 900.0), 48000))),
    ]


def test_takes_are_5_s_differ_from_each_other_and_repeat_with_their_seed(clips, tmp_path):
    paths = write_takes(clips, 3, seed=0, folder=tmp_path / "all")
    assert [[path.name for path in own] for own in paths] == [
        [f"{name}~aug{take}.flac" for take in range(3)] for name, _ in clips
    ]
    waves = [[sf.read(path, dtype="float32") for path in own] for own in paths]
    assert all(rate == RATE and len(wave) == CLIP and np.abs(wave).max() <= 0.99 for own in waves for wave, rate in own)
    assert not np.allclose(waves[1][0][0], waves[1][1][0])

    again = write_takes(clips, 3, seed=0, folder=tmp_path / "again")
    np.testing.assert_array_equal(sf.read(again[1][2])[0], sf.read(paths[1][2])[0])
    other_seed = write_takes(clips, 1, seed=1, folder=tmp_path / "seed1")
    assert not np.allclose(sf.read(other_seed[1][0])[0], waves[1][0][0])


def test_a_rerun_writes_only_the_missing_takes(clips, tmp_path):
    paths = write_takes(clips, 2, seed=0, folder=tmp_path)
    kept = paths[0][0].stat().st_mtime_ns
    lost = sf.read(paths[1][1])[0]
    paths[1][1].unlink()
    write_takes(clips, 2, seed=0, folder=tmp_path)
    assert paths[0][0].stat().st_mtime_ns == kept
    np.testing.assert_array_equal(sf.read(paths[1][1])[0], lost)


def test_an_unreadable_clip_is_named(clips, tmp_path):
    broken = tmp_path / "broken.wav"
    broken.write_bytes(b"not audio")
    with pytest.raises(ValueError, match="broken.wav"):
        write_takes([*clips, ("broken", str(broken))], 1, seed=0, folder=tmp_path / "takes")


def test_a_mixture_of_clips_is_one_5_s_clip(sine_wave):
    rng = np.random.default_rng(0)
    waves = [sine_wave(5.0, RATE, frequency) for frequency in (200.0, 700.0, 1500.0)]
    mixture = augmented_mixture(waves, rng)
    assert mixture.shape == (CLIP,) and mixture.dtype == np.float32 and np.isfinite(mixture).all()
