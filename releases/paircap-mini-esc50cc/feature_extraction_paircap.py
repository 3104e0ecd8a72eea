"""Batched torch CLAP log-mel features, as `ClapFeatureExtractor(..., truncation="rand_trunc", padding="repeatpad")`.

The numpy extractor runs one Python-level FFT per frame (`benchmarks/audio_frontend.py` measures both);
`TorchClapFeatures` computes the same features for a whole batch of windows with one `torch.stft`, on the device of its
input:

1. repeat-pad each window (tile it `max_samples // length` times, then zero-pad to `max_samples`);
2. STFT of centred frames (reflect-padded by `n_fft // 2` on both sides), periodic Hann window, one-sided, power 2;
3. Slaney mel filters (Slaney mel scale, area-normalised, `frequency_min`..`frequency_max`), floored at 1e-10;
4. `10 * log10` (reference 1.0, floor 1e-10 = -100 dB; the extractor's `top_db` is not applied on this path);
5. transposed to `(frames, mels)` with `frames = max_samples // hop_length + 1` (1001 for 10 s at 48 kHz / hop 480).

Windows longer than `max_samples` are refused (the numpy path would crop them at a random offset). Float32 inputs are
computed in float32, float64 inputs in float64 (for parity checks); the output is always float32.

This file is shipped as Hugging Face remote code: it imports only the standard library, numpy, torch and transformers.
"""

from collections.abc import Sequence

import numpy as np
import torch
from transformers.audio_utils import window_function

__all__ = ["TorchClapFeatures", "extract_clap_features"]

# `transformers.audio_utils.spectrogram` defaults, as called by `ClapFeatureExtractor._np_extract_fbank_features`.
MEL_FLOOR = 1e-10
DB_MIN_VALUE = 1e-10


class TorchClapFeatures(torch.nn.Module):
    """
    CLAP `rand_trunc` / `repeatpad` log-mel front end as a torch module, configured from a `ClapFeatureExtractor`
    (its STFT sizes, window length and Slaney mel filters, so e.g. LAION's `frequency_min=50` is matched).
    Outputs have `num_frames` frames of `num_mel_bins` mels. Only the FFT bins some mel filter covers are used.
    """

    def __init__(self, feature_extractor) -> None:
        super().__init__()
        self.n_fft = int(feature_extractor.fft_window_size)
        self.hop_length = int(feature_extractor.hop_length)
        self.max_samples = int(feature_extractor.nb_max_samples)
        self.num_frames = self.max_samples // self.hop_length + 1
        window = window_function(self.n_fft, "hann")
        mel_filters = np.asarray(feature_extractor.mel_filters_slaney, dtype=np.float64)  # (n_fft // 2 + 1, mels)
        self.num_mel_bins = mel_filters.shape[1]
        used_bins = np.flatnonzero(mel_filters.any(axis=1))
        self.first_bin, self.end_bin = int(used_bins[0]), int(used_bins[-1]) + 1
        mel_filters = np.ascontiguousarray(mel_filters[self.first_bin : self.end_bin])
        self.register_buffer("window", torch.from_numpy(window), persistent=False)
        self.register_buffer("mel_filters", torch.from_numpy(mel_filters), persistent=False)

    def pad_windows(
        self,
        windows: Sequence[np.ndarray | torch.Tensor],
        dtype: torch.dtype = torch.float32,
        device: torch.device | str | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """
        Repeat-pad 1-D windows of 1..`max_samples` samples into a `(B, max_samples)` batch (on `device`, by default
        the module's), exactly as the numpy extractor's `repeatpad`. Returns the batch and the windows' lengths.
        """
        if len(windows) == 0:
            raise ValueError("pad_windows needs at least one window")
        device = self.window.device if device is None else torch.device(device)
        tensors = [w if isinstance(w, torch.Tensor) else torch.from_numpy(np.ascontiguousarray(w)) for w in windows]
        for i, tensor in enumerate(tensors):
            if tensor.ndim != 1 or not 0 < tensor.numel() <= self.max_samples:
                raise ValueError(
                    f"window {i}: expected a 1-D waveform of 1..{self.max_samples} samples, got shape "
                    f"{tuple(tensor.shape)}"
                )
        batch = torch.zeros(len(tensors), self.max_samples, dtype=dtype, device=device)
        for row, tensor in zip(batch, tensors, strict=True):
            repeats = self.max_samples // tensor.numel()
            row[: repeats * tensor.numel()] = tensor.to(device=device, dtype=dtype).repeat(repeats)
        lengths = torch.tensor([tensor.numel() for tensor in tensors], dtype=torch.long, device=device)
        return batch, lengths

    def repeat_pad(self, windows: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """
        `(B, max_samples)` batch whose row i repeats `windows[i, :lengths[i]]` `max_samples // lengths[i]` times and
        is zero after. `windows` may be narrower than `max_samples`; padding an already padded batch is a no-op.
        """
        lengths = lengths.to(device=windows.device, dtype=torch.long).reshape(-1, 1)
        if windows.ndim != 2 or lengths.shape[0] != windows.shape[0]:
            raise ValueError(
                f"expected (B, samples) windows and B lengths, got {tuple(windows.shape)} and {tuple(lengths.shape)}"
            )
        if not bool(((lengths > 0) & (lengths <= min(windows.shape[1], self.max_samples))).all()):
            raise ValueError(
                f"lengths must lie in 1..{min(windows.shape[1], self.max_samples)}, got {lengths.flatten().tolist()}"
            )
        positions = torch.arange(self.max_samples, device=windows.device).unsqueeze(0)
        repeated = torch.gather(windows, 1, positions % lengths)
        return repeated.masked_fill(positions >= (self.max_samples // lengths) * lengths, 0.0)

    def forward(self, windows: torch.Tensor, lengths: torch.Tensor | None = None) -> torch.Tensor:
        """
        Log-mel features `(B, 1, frames, mels)` float32 of a `(B, max_samples)` batch of repeat-padded windows
        (`pad_windows`). With `lengths`, the rows are first repeat-padded from their first `lengths[i]` samples, so
        right-zero-padded raw windows may be given. Computed in float64 for float64 input, else in float32.
        """
        if lengths is not None:
            windows = self.repeat_pad(windows, lengths)
        if windows.ndim != 2 or windows.shape[1] != self.max_samples:
            raise ValueError(f"expected windows of shape (B, {self.max_samples}), got {tuple(windows.shape)}")
        dtype = torch.float64 if windows.dtype == torch.float64 else torch.float32
        windows = windows.to(dtype)
        pad = self.n_fft // 2  # centred frames: reflect-pad (numpy "reflect", edge not repeated) by n_fft // 2
        padded = torch.cat([windows[:, 1 : pad + 1].flip(-1), windows, windows[:, -pad - 1 : -1].flip(-1)], dim=1)
        spectrum = torch.stft(
            padded,
            n_fft=self.n_fft,
            hop_length=self.hop_length,
            window=self.window.to(dtype),
            center=False,
            onesided=True,
            return_complex=True,
        )  # (B, n_fft // 2 + 1, frames), laid out as (B, frames, n_fft // 2 + 1)
        spectrum = spectrum.transpose(1, 2)[..., self.first_bin : self.end_bin]
        power = spectrum.real.square() + spectrum.imag.square()
        mel = torch.matmul(power, self.mel_filters.to(dtype)).clamp_min_(max(MEL_FLOOR, DB_MIN_VALUE))
        return mel.log10_().mul_(10.0).to(torch.float32).unsqueeze(1)


def extract_clap_features(
    windows: Sequence[np.ndarray | torch.Tensor],
    feature_extractor,
    device: torch.device | str | None = None,
    dtype: torch.dtype = torch.float32,
) -> torch.Tensor:
    """
    CLAP log-mel features `(len(windows), 1, frames, mels)` float32 of 1-D 48 kHz windows of at most `max_length_s`,
    as `feature_extractor(windows, truncation="rand_trunc", padding="repeatpad")` computes them. Runs on `device`
    (default: that of the first window if it is a tensor, else CPU), in `dtype` (float32, or float64 for parity).
    """
    if device is None:
        device = windows[0].device if len(windows) and isinstance(windows[0], torch.Tensor) else "cpu"
    module = TorchClapFeatures(feature_extractor).to(device)
    batch, _ = module.pad_windows(windows, dtype=dtype)
    return module(batch)
