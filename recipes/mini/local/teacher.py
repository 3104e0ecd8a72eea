"""The AudioSet teacher of the mini recipe: EfficientAT's ``mn04_as`` (MobileNetV3 at width 0.4, 527 AudioSet classes).

This is the project's own module, written to be compatible with the released ``mn04_as_mAP_432.pt`` state_dict
(F. Schmid et al., "Efficient Large-Scale Audio Tagging via Transformer-to-CNN Knowledge Distillation", ICASSP 2023;
MIT licence, github.com/fschmid56/EfficientAT, release asset ``mn04_as_mAP_432.pt``). The weights are data: they are
never committed to the project; pass their path.

- Front end (eval mode): 32 kHz mono; pre-emphasis ``[-0.97, 1]``; STFT n_fft 1024, Hann window of 800
  (``periodic=False``), hop 320, centred; power; 128 Kaldi mel filters over 0-15 kHz (a zero column for the Nyquist
  bin); ``log(mel + 1e-5)``; ``(x + 4.5) / 5``.
- Network: MobileNetV3-Large inverted residuals at width 0.4, channel squeeze-excitation, strides 2 at C1-C4, a
  1x1 conv to 384 channels, an MLP head (384 -> 512 -> 527).
- Outputs: the 527 AudioSet logits and the 384-d embedding (the last feature map, mean-pooled over frequency and time).

The network's submodule names follow the weights file's keys (``features.N.block.M``, ``conc_se_layers``,
``classifier.2`` / ``classifier.5``), so the file loads strictly.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from modeling_paircap.audio_arrays_paircap import resample

SAMPLE_RATE = 32000
N_FFT, WIN_LENGTH, HOP_LENGTH = 1024, 800, 320
N_MELS, F_MIN, F_MAX = 128, 0.0, 15000.0
EMBEDDING_DIM, NUM_CLASSES = 384, 527
WIDTH = 0.4
WEIGHTS_NAME = "mn04_as_mAP_432.pt"
WEIGHTS_SOURCE = "the mn04_as_mAP_432.pt asset of github.com/fschmid56/EfficientAT/releases (v0.0.1)"

# MobileNetV3-Large at width 1.0: (input, kernel, expanded, output, squeeze-excitation, hardswish, stride)
_BLOCKS = (
    (16, 3, 16, 16, False, False, 1),
    (16, 3, 64, 24, False, False, 2),
    (24, 3, 72, 24, False, False, 1),
    (24, 5, 72, 40, True, False, 2),
    (40, 5, 120, 40, True, False, 1),
    (40, 5, 120, 40, True, False, 1),
    (40, 3, 240, 80, False, True, 2),
    (80, 3, 200, 80, False, True, 1),
    (80, 3, 184, 80, False, True, 1),
    (80, 3, 184, 80, False, True, 1),
    (80, 3, 480, 112, True, True, 1),
    (112, 3, 672, 112, True, True, 1),
    (112, 5, 672, 160, True, True, 2),
    (160, 5, 960, 160, True, True, 1),
    (160, 5, 960, 160, True, True, 1),
)


class TeacherWeightsError(ValueError):
    """The teacher's weights file is missing, unreadable, or not the mn04_as state_dict."""


def kaldi_mel_banks(n_mels: int, n_fft: int, sample_rate: float, f_min: float, f_max: float) -> torch.Tensor:
    """Kaldi's triangular mel filters (mel = 1127 ln(1 + f / 700), triangles in mel between equally spaced edges)
    over FFT bins 0 .. n_fft/2 - 1, with a zero column for the Nyquist bin: ``(n_mels, n_fft // 2 + 1)``."""

    def mel(hz):
        return 1127.0 * torch.log1p(torch.as_tensor(hz, dtype=torch.float64) / 700.0)

    low, high = mel(f_min), mel(f_max)
    delta = (high - low) / (n_mels + 1)
    left = low + delta * torch.arange(n_mels, dtype=torch.float64).unsqueeze(1)
    centre, right = left + delta, left + 2 * delta
    bin_mel = mel(sample_rate / n_fft * torch.arange(n_fft // 2, dtype=torch.float64)).unsqueeze(0)
    up = (bin_mel - left) / (centre - left)
    down = (right - bin_mel) / (right - centre)
    banks = torch.minimum(up, down).clamp(min=0.0)
    return F.pad(banks, (0, 1)).float()


class KaldiMelFrontEnd(nn.Module):
    """32 kHz waveforms ``(N, T)`` -> normalised log-mel ``(N, 128, frames)`` (frames = (T - 1) // 320 + 1)."""

    def __init__(self) -> None:
        super().__init__()
        self.register_buffer("window", torch.hann_window(WIN_LENGTH, periodic=False), persistent=False)
        self.register_buffer("mel_banks", kaldi_mel_banks(N_MELS, N_FFT, SAMPLE_RATE, F_MIN, F_MAX), persistent=False)
        self.register_buffer("preemphasis", torch.tensor([[[-0.97, 1.0]]]), persistent=False)

    def forward(self, waveforms: torch.Tensor) -> torch.Tensor:
        x = F.conv1d(waveforms.unsqueeze(1), self.preemphasis).squeeze(1)
        spectrum = torch.stft(
            x, N_FFT, hop_length=HOP_LENGTH, win_length=WIN_LENGTH, window=self.window, center=True, return_complex=True
        )
        mel = self.mel_banks @ spectrum.abs().square()
        return ((mel + 1e-5).log() + 4.5) / 5.0


def make_divisible(value: float, divisor: int = 8) -> int:
    """The nearest multiple of ``divisor`` (at least ``divisor``), never more than 10 % below ``value``."""
    rounded = max(divisor, int(value + divisor / 2) // divisor * divisor)
    return rounded + divisor if rounded < 0.9 * value else rounded


def conv_bn(inputs: int, outputs: int, kernel: int, stride: int = 1, groups: int = 1, act: type | None = None):
    """Conv (no bias, same padding) + BatchNorm (eps 1e-3) + optional activation, as keys ``0``, ``1``(, ``2``)."""
    layers = [
        nn.Conv2d(inputs, outputs, kernel, stride, (kernel - 1) // 2, groups=groups, bias=False),
        nn.BatchNorm2d(outputs, eps=0.001, momentum=0.01),
    ]
    return nn.Sequential(*layers, *([act()] if act is not None else []))


class _Excitation(nn.Module):
    def __init__(self, channels: int, squeezed: int) -> None:
        super().__init__()
        self.fc1, self.fc2 = nn.Linear(channels, squeezed), nn.Linear(squeezed, channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        scale = torch.sigmoid(self.fc2(F.relu(self.fc1(x.mean(dim=(2, 3))))))
        return x * scale[:, :, None, None]


class ChannelSqueezeExcitation(nn.Module):
    """Squeeze-excitation over channels (bottleneck channels / 4); one branch of EfficientAT's concurrent SE."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conc_se_layers = nn.ModuleList([_Excitation(channels, make_divisible(channels // 4))])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conc_se_layers[0](x)


class InvertedResidual(nn.Module):
    """Expand (1x1, skipped when no wider), depthwise k x k, optional SE, project (1x1); residual at stride 1."""

    def __init__(self, inputs: int, kernel: int, expanded: int, outputs: int, se: bool, hardswish: bool, stride: int):
        super().__init__()
        act = nn.Hardswish if hardswish else nn.ReLU
        layers = [conv_bn(inputs, expanded, 1, act=act)] if expanded != inputs else []
        layers.append(conv_bn(expanded, expanded, kernel, stride, groups=expanded, act=act))
        layers += [ChannelSqueezeExcitation(expanded)] if se else []
        layers.append(conv_bn(expanded, outputs, 1))
        self.block = nn.Sequential(*layers)
        self.residual = stride == 1 and inputs == outputs

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.block(x)
        return y + x if self.residual else y


class MobileNetV3Tagger(nn.Module):
    """mn04_as: log-mel ``(N, 1, 128, frames)`` -> (logits ``(N, 527)``, embedding ``(N, 384)``)."""

    def __init__(self, width: float = WIDTH, num_classes: int = NUM_CLASSES) -> None:
        super().__init__()

        def scaled(channels: int) -> int:
            return make_divisible(channels * width)

        blocks = [(scaled(i), k, scaled(e), scaled(o), se, hs, s) for i, k, e, o, se, hs, s in _BLOCKS]
        last = 6 * blocks[-1][3]
        self.features = nn.Sequential(
            conv_bn(1, blocks[0][0], 3, stride=2, act=nn.Hardswish),
            *(InvertedResidual(*block) for block in blocks),
            conv_bn(blocks[-1][3], last, 1, act=nn.Hardswish),
        )
        self.classifier = nn.Sequential(
            nn.AdaptiveAvgPool2d(1),
            nn.Flatten(start_dim=1),
            nn.Linear(last, scaled(1280)),
            nn.Hardswish(),
            nn.Dropout(p=0.2),
            nn.Linear(scaled(1280), num_classes),
        )

    def forward(self, mels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        feature_map = self.features(mels)
        return self.classifier(feature_map), feature_map.mean(dim=(2, 3))


def check_state_dict(state: object, expected: dict[str, torch.Tensor], where: str) -> None:
    """Raise :class:`TeacherWeightsError` naming ``where`` unless ``state`` has exactly the expected keys and shapes."""
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise TeacherWeightsError(f"{where}: not a state_dict of tensors (got {type(state).__name__})")
    missing = sorted(set(expected) - set(state))
    extra = sorted(set(state) - set(expected))
    shapes = [
        f"{key} {tuple(state[key].shape)} (expected {tuple(value.shape)})"
        for key, value in expected.items()
        if key in state and state[key].shape != value.shape
    ]
    problems = [
        f"{label} {len(items)}: {', '.join(items[:4])}{', ...' if len(items) > 4 else ''}"
        for label, items in (("missing keys", missing), ("unexpected keys", extra), ("wrong shapes", shapes))
        if items
    ]
    if problems:
        raise TeacherWeightsError(f"{where}: not the EfficientAT mn04_as weights ({'; '.join(problems)})")


class AudioSetTeacher(nn.Module):
    """The frozen teacher: waveforms at any rate -> AudioSet logits and 384-d embeddings, batched, in eval mode."""

    def __init__(self) -> None:
        super().__init__()
        self.front_end = KaldiMelFrontEnd()
        self.network = MobileNetV3Tagger()
        self.requires_grad_(False)
        self.train(False)

    @classmethod
    def from_file(cls, path: str | os.PathLike) -> AudioSetTeacher:
        """Load ``mn04_as_mAP_432.pt`` strictly: every key used, every shape checked; errors name the file."""
        path = Path(path)
        if not path.is_file():
            raise TeacherWeightsError(f"{path}: no such file (the teacher's weights are {WEIGHTS_SOURCE})")
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as exc:  # noqa: BLE001 - any failure to unpickle is this file's problem
            raise TeacherWeightsError(f"{path}: cannot be read as a PyTorch state_dict ({exc})") from exc
        teacher = cls()
        check_state_dict(state, teacher.network.state_dict(), str(path))
        teacher.network.load_state_dict(state, strict=True)
        return teacher

    def train(self, mode: bool = True) -> AudioSetTeacher:
        """The teacher stays in eval mode (BatchNorm statistics, no dropout), also inside a module set to train."""
        return super().train(False)

    def forward(self, waveforms: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """32 kHz waveforms ``(N, T)``, T > 513 -> (logits ``(N, 527)``, embeddings ``(N, 384)``)."""
        if waveforms.shape[-1] <= N_FFT // 2 + 1:
            raise ValueError(f"clips of {waveforms.shape[-1]} samples at 32 kHz are too short for the teacher's STFT")
        return self.network(self.front_end(waveforms).unsqueeze(1))

    @torch.no_grad()
    def outputs(
        self, waveforms: torch.Tensor | Sequence, sample_rate: int, batch_size: int = 32
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Logits and embeddings of a batch ``(N, T)`` or a list of 1-D clips (any lengths; clips of one length are
        batched together, each clip is processed at its own length, never padded)."""
        clips = [torch.as_tensor(np.asarray(clip), dtype=torch.float32) for clip in waveforms]
        if any(clip.dim() != 1 or clip.numel() == 0 for clip in clips):
            raise ValueError("each waveform must be a non-empty 1-D mono clip")
        logits = torch.empty(len(clips), NUM_CLASSES)
        embeddings = torch.empty(len(clips), EMBEDDING_DIM)
        by_length: dict[int, list[int]] = {}
        for index, clip in enumerate(clips):
            by_length.setdefault(clip.numel(), []).append(index)
        for indices in by_length.values():
            for start in range(0, len(indices), batch_size):
                chunk = indices[start : start + batch_size]
                batch = resample(torch.stack([clips[i] for i in chunk]), sample_rate, SAMPLE_RATE)
                logits[chunk], embeddings[chunk] = self(batch)
        return logits, embeddings

    def embed(self, waveforms: torch.Tensor | Sequence, sample_rate: int) -> torch.Tensor:
        """384-d embeddings ``(N, 384)`` (not normalised)."""
        return self.outputs(waveforms, sample_rate)[1]

    def logits(self, waveforms: torch.Tensor | Sequence, sample_rate: int) -> torch.Tensor:
        """AudioSet logits ``(N, 527)`` (sigmoid gives the tag probabilities)."""
        return self.outputs(waveforms, sample_rate)[0]
