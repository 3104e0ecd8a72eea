"""TorchClapFeatures against the numpy `ClapFeatureExtractor` (`rand_trunc` + `repeatpad`, the processor's path).

Tolerances are in dB on the log-mel features (range -100..+31 dB), measured on this CPU (torch 2.13, MKL FFT), for
the default and the LAION (50-14000 Hz) extractor:

* float32, real clips (the 18 Clotho windows and tails, 8 ESC-50 5 s clips): max |diff| 0.0038 dB, mean 2.8e-6 dB
  (all 100 ESC-50 clips: max 0.0095 dB); asserted: max 0.02 dB, mean 2e-5 dB.
* float32, pure tones and a repeated 7-sample window (line spectra): max 0.074 dB, mean 5.5e-4 dB; the float32 FFT's
  rounding noise (~1e-7 of a frame's peak) lands in the near-empty bins 100+ dB below the lines. Asserted: max 0.15 dB,
  mean 2e-3 dB. The near-silent window (-100 dBFS noise): max 7.6e-6 dB; asserted 1e-4 dB.
* float64: max 7.6e-6 dB (one float32 ulp at |x| < 128, the output's rounding), mean 8.4e-8 dB, on everything;
  asserted: max 2e-5 dB, mean 1e-6 dB.
"""

import time
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
from transformers import ClapFeatureExtractor

from modeling_paircap.feature_extraction_paircap import TorchClapFeatures, extract_clap_features

SR = 48_000
WINDOW = 10 * SR
ESC50_CLIPS = 8

F32_REAL_MAX_DB, F32_REAL_MEAN_DB = 0.02, 2e-5
F32_SYNTH_MAX_DB, F32_SYNTH_MEAN_DB = 0.15, 2e-3
F32_SILENT_MAX_DB = 1e-4
F64_MAX_DB, F64_MEAN_DB = 2e-5, 1e-6

EXTRACTORS = {
    "default": {},
    "laion": {"frequency_min": 50, "frequency_max": 14_000},
}


def numpy_features(feature_extractor: ClapFeatureExtractor, windows: list[np.ndarray]) -> np.ndarray:
    """The reference: what `PairCapProcessor.extract_features` computes."""
    return feature_extractor(
        windows, sampling_rate=SR, truncation="rand_trunc", padding="repeatpad", return_tensors="np"
    )["input_features"]


def synthetic_windows() -> list[np.ndarray]:
    """A near-silent window (-100 dBFS noise, straddling the -100 dB floor), pure tones, short repeat-padded ones."""
    rng = np.random.default_rng(0)
    t = np.arange(WINDOW) / SR
    return [
        (1e-5 * rng.standard_normal(WINDOW)).astype(np.float32),
        (0.5 * np.sin(2 * np.pi * 1000 * t)).astype(np.float32),
        (0.9 * np.sin(2 * np.pi * 13000.5 * t)).astype(np.float32),
        (0.3 * np.sin(2 * np.pi * 440 * t[:100_000])).astype(np.float32),
        (0.1 * rng.standard_normal(7)).astype(np.float32),
        np.zeros(1000, dtype=np.float32),
    ]


@pytest.fixture(scope="module")
def real_windows(shared_data: Path) -> list[np.ndarray]:
    """Full 10 s windows and the shorter tail of each Clotho clip, then whole 5 s ESC-50 clips (repeat-padded)."""
    windows = []
    for path in sorted((shared_data / "clotho_eval7").glob("*.flac")):
        audio, rate = sf.read(path, dtype="float32")
        assert rate == SR and audio.ndim == 1
        full = len(audio) // WINDOW
        windows += [audio[i * WINDOW : (i + 1) * WINDOW] for i in range(full)]
        if len(audio) % WINDOW:
            windows.append(audio[full * WINDOW :])
    for path in sorted((shared_data / "esc50_cc").glob("*.flac"))[:ESC50_CLIPS]:
        audio, rate = sf.read(path, dtype="float32")
        assert rate == SR and len(audio) < WINDOW
        windows.append(audio)
    assert len(windows) == 18 + ESC50_CLIPS
    assert sum(len(w) < WINDOW for w in windows) == 7 + ESC50_CLIPS
    return windows


@pytest.fixture(scope="module", params=list(EXTRACTORS))
def extractor(request) -> ClapFeatureExtractor:
    return ClapFeatureExtractor(**EXTRACTORS[request.param])


def assert_parity(ours: torch.Tensor, reference: np.ndarray, max_db: float, mean_db: float) -> None:
    assert ours.dtype == torch.float32 and tuple(ours.shape) == reference.shape
    diff = np.abs(ours.cpu().numpy() - reference)
    assert diff.max() <= max_db, f"max |diff| {diff.max():.3g} dB > {max_db} dB"
    assert diff.mean() <= mean_db, f"mean |diff| {diff.mean():.3g} dB > {mean_db} dB"


@pytest.fixture(scope="module")
def real_reference(extractor, real_windows) -> np.ndarray:
    return numpy_features(extractor, real_windows)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_parity_real_clips(extractor, real_windows, real_reference, dtype):
    reference = real_reference
    assert reference.shape == (len(real_windows), 1, 1001, 64)
    ours = extract_clap_features(real_windows, extractor, dtype=dtype)
    if dtype == torch.float32:
        assert_parity(ours, reference, F32_REAL_MAX_DB, F32_REAL_MEAN_DB)
    else:
        assert_parity(ours, reference, F64_MAX_DB, F64_MEAN_DB)


@pytest.fixture(scope="module")
def synthetic_reference(extractor) -> np.ndarray:
    return numpy_features(extractor, synthetic_windows())


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_parity_synthetic(extractor, synthetic_reference, dtype):
    windows, reference = synthetic_windows(), synthetic_reference
    ours = extract_clap_features(windows, extractor, dtype=dtype)
    if dtype == torch.float32:
        assert_parity(ours, reference, F32_SYNTH_MAX_DB, F32_SYNTH_MEAN_DB)
        assert_parity(ours[:1], reference[:1], F32_SILENT_MAX_DB, F32_REAL_MEAN_DB)
    else:
        assert_parity(ours, reference, F64_MAX_DB, F64_MEAN_DB)
    assert reference[0].min() == -100.0 and reference[0].max() > -90.0  # the near-silent window straddles the floor
    assert (ours[-1] == -100.0).all() and (reference[-1] == -100.0).all()  # digital silence sits on the floor


def test_settings_come_from_the_extractor():
    """LAION's 50 Hz low edge changes the features, and a non-default extractor (sizes, rate of frames) is matched."""
    window = synthetic_windows()[3]
    default, laion = (ClapFeatureExtractor(**kwargs) for kwargs in EXTRACTORS.values())
    assert not np.allclose(numpy_features(default, [window]), numpy_features(laion, [window]), atol=1.0)
    custom = ClapFeatureExtractor(
        feature_size=32, hop_length=320, max_length_s=4, fft_window_size=512, frequency_min=100, frequency_max=8000
    )
    windows = [window, window[:7_000]]
    reference = numpy_features(custom, windows)
    assert reference.shape == (2, 1, 4 * SR // 320 + 1, 32)
    assert_parity(extract_clap_features(windows, custom, dtype=torch.float64), reference, F64_MAX_DB, F64_MEAN_DB)
    assert_parity(extract_clap_features(windows, custom), reference, F32_SYNTH_MAX_DB, F32_SYNTH_MEAN_DB)


@pytest.mark.parametrize("length", [1, 7, 1000, 100_000, 240_000, 240_001, 479_999, WINDOW])
def test_pad_windows_is_numpy_repeatpad(length):
    module = TorchClapFeatures(ClapFeatureExtractor())
    window = np.random.default_rng(length).standard_normal(length).astype(np.float32)
    batch, lengths = module.pad_windows([window, torch.from_numpy(window[: (length + 1) // 2])])
    expected = np.tile(window, WINDOW // length)
    expected = np.pad(expected, (0, WINDOW - len(expected)))
    assert batch.shape == (2, WINDOW) and batch.dtype == torch.float32
    np.testing.assert_array_equal(batch[0].numpy(), expected)
    assert lengths.tolist() == [length, (length + 1) // 2]
    # forward(raw, lengths) repeat-pads right-zero-padded raw windows itself; re-padding a padded batch is a no-op.
    raw = torch.zeros(2, max(length, 1000))
    raw[0, :length] = torch.from_numpy(window)
    raw[1, : lengths[1]] = torch.from_numpy(window[: lengths[1]])
    torch.testing.assert_close(module.repeat_pad(raw, lengths), batch, rtol=0, atol=0)
    torch.testing.assert_close(module.repeat_pad(batch, lengths), batch, rtol=0, atol=0)


def test_batch_equals_one_by_one_and_lengths_path():
    module = TorchClapFeatures(ClapFeatureExtractor())
    windows = synthetic_windows()
    batch, lengths = module.pad_windows(windows)
    together = module(batch)
    assert together.shape == (len(windows), 1, 1001, 64) and together.dtype == torch.float32
    for i in range(len(windows)):  # bit-identical on this CPU
        torch.testing.assert_close(module(batch[i : i + 1]), together[i : i + 1], rtol=0, atol=1e-5)
    raw = torch.zeros(len(windows), WINDOW)
    for i, window in enumerate(windows):
        raw[i, : len(window)] = torch.from_numpy(window)
    torch.testing.assert_close(module(raw, lengths), together, rtol=0, atol=0)
    float64 = module(batch.double())
    assert float64.dtype == torch.float32 and float64.shape == together.shape


def test_device_follows_input():
    extractor = ClapFeatureExtractor()
    devices = ["meta"] + (["cuda"] if torch.cuda.is_available() else [])
    windows = synthetic_windows()
    for device in devices:
        tensors = [torch.from_numpy(window).to(device) for window in windows]
        features = extract_clap_features(tensors, extractor)
        assert features.device.type == device
        assert features.shape == (len(windows), 1, 1001, 64) and features.dtype == torch.float32
        module = TorchClapFeatures(extractor).to(device)
        batch, lengths = module.pad_windows(windows)
        assert batch.device.type == lengths.device.type == device
        assert module(batch).device.type == device
        if device == "cuda":
            assert_parity(features, numpy_features(extractor, windows), F32_SYNTH_MAX_DB, F32_SYNTH_MEAN_DB)
    assert extract_clap_features(windows[:1], extractor).device.type == "cpu"


def test_refuses_bad_windows():
    module = TorchClapFeatures(ClapFeatureExtractor())
    for bad in ([np.zeros(WINDOW + 1, np.float32)], [np.zeros(0, np.float32)], [np.zeros((2, 100), np.float32)], []):
        with pytest.raises(ValueError):
            module.pad_windows(bad)
    with pytest.raises(ValueError, match="shape"):
        module(torch.zeros(1, WINDOW - 1))
    with pytest.raises(ValueError, match="lengths"):
        module(torch.zeros(1, 1000), torch.tensor([1001]))


def test_timing_numpy_vs_torch(capsys):
    """Not an assertion: per-window cost of the numpy extractor and of the torch module on this CPU."""
    extractor = ClapFeatureExtractor()
    module = TorchClapFeatures(extractor)
    rng = np.random.default_rng(0)
    windows = [(0.1 * rng.standard_normal(WINDOW)).astype(np.float32) for _ in range(8)]

    def best_ms_per_window(fn, batch: list[np.ndarray], repeats: int) -> float:
        times = []
        for _ in range(repeats):
            start = time.perf_counter()
            fn(batch)
            times.append(time.perf_counter() - start)
        return 1000 * min(times) / len(batch)

    numpy_ms = best_ms_per_window(lambda batch: numpy_features(extractor, batch), windows[:4], 2)
    threads = torch.get_num_threads()
    torch_ms = {}
    try:
        for count in sorted({1, threads}):
            torch.set_num_threads(count)
            torch_ms[count] = best_ms_per_window(lambda batch: module(module.pad_windows(batch)[0]), windows, 3)
    finally:
        torch.set_num_threads(threads)
    with capsys.disabled():
        detail = ", ".join(f"{ms:.1f} ms with {count} thread(s)" for count, ms in torch_ms.items())
        print(f"\n[feature extraction] numpy {numpy_ms:.1f} ms/window; torch {detail} (batch of {len(windows)})")
