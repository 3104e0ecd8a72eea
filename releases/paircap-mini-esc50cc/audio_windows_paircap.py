"""Encoder windows for PairCap: where the windows of a clip lie, the windows of a long clip decoded alone
(:class:`WindowedWaveform`), and which source frames a decoder must read for them.

Shipped as Hugging Face remote code (copied flat into a model repo): imports only the standard library, ``numpy`` and
this package.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from .audio_arrays_paircap import resampled_length

__all__ = ["WindowedWaveform", "window_starts"]

# Extra source audio read on each side of a window that must be resampled (soxr "HQ" settles within ~10 ms).
_RESAMPLE_MARGIN_SECONDS = 0.25


def window_starts(num_samples: int, window_samples: int, max_windows: int) -> tuple[list[int], bool]:
    """Where the encoder windows of a clip of ``num_samples`` start: at most ``max_windows`` windows of
    ``window_samples``, evenly spaced from the clip's start to its end (the last ends with the clip). Returns the
    starts and whether the clip is longer than ``max_windows`` windows. A clip no longer than one window gives
    ``[0]`` (the window is the whole clip)."""
    if num_samples <= window_samples:
        return [0], False
    needed = math.ceil(num_samples / window_samples)
    count = min(needed, max_windows)
    starts = np.round(np.linspace(0, num_samples - window_samples, count)).astype(int)
    return [int(start) for start in starts], needed > max_windows


class WindowedWaveform(np.ndarray):
    """The encoder windows of a long clip, decoded alone: a 1-D float32 array holding the windows end to end.

    What :func:`load_audio_file` returns, given a window layout, for a file longer than ``max_windows`` windows: the
    samples the encoder would take from the full decode (the same values; within soxr's float rounding where the
    file is resampled), without the rest. ``num_samples`` is the clip's full length and ``window_starts`` where
    each window starts in it, at ``sampling_rate``. Slices and arithmetic results are plain audio (their window
    metadata is dropped); the processor's ``window_audio`` uses the windows as they are.
    """

    window_starts: tuple[int, ...] | None
    window_samples: int | None
    num_samples: int | None
    sampling_rate: int | None

    def __new__(
        cls,
        samples: np.ndarray,
        window_starts: Sequence[int],
        window_samples: int,
        num_samples: int,
        sampling_rate: int,
    ) -> WindowedWaveform:
        samples = np.asarray(samples, dtype=np.float32)
        if samples.ndim != 1 or len(samples) != len(window_starts) * window_samples:
            raise ValueError(f"expected {len(window_starts)} windows of {window_samples} samples, got {samples.shape}")
        out = samples.view(cls)
        out.window_starts = tuple(int(start) for start in window_starts)
        out.window_samples = int(window_samples)
        out.num_samples = int(num_samples)
        out.sampling_rate = int(sampling_rate)
        return out

    def __array_finalize__(self, obj) -> None:  # views, slices, ufunc results: plain audio, no window layout
        self.window_starts = self.window_samples = self.num_samples = self.sampling_rate = None

    def __reduce__(self):  # pickle (DataLoader workers) with the layout
        return (_rebuild_windowed, (np.asarray(self), self.window_starts, self.window_samples, self.num_samples,
                                    self.sampling_rate))  # fmt: skip

    @property
    def has_layout(self) -> bool:
        """False for slices and arithmetic results of a windowed waveform, which are plain audio."""
        return self.window_starts is not None

    @property
    def is_long(self) -> bool:
        """Whether the clip needs more windows than it has (the processor's length token)."""
        return math.ceil(self.num_samples / self.window_samples) > len(self.window_starts)

    def windows(self) -> list[np.ndarray]:
        """The windows, as plain float32 arrays (views)."""
        flat = np.asarray(self)
        size = self.window_samples
        return [flat[i * size : (i + 1) * size] for i in range(len(self.window_starts))]

    def copy_with_layout(self) -> WindowedWaveform:
        """A copy that keeps the window layout (``ndarray.copy`` gives plain audio)."""
        return WindowedWaveform(
            np.array(self, dtype=np.float32, copy=True), self.window_starts, self.window_samples, self.num_samples,
            self.sampling_rate,
        )  # fmt: skip


def _rebuild_windowed(samples, window_starts, window_samples, num_samples, sampling_rate):
    if window_starts is None:
        return np.asarray(samples)
    return WindowedWaveform(samples, window_starts, window_samples, num_samples, sampling_rate)


# --------------------------------------------------------------------------------------------------------------------
# Planning a decode: the source frames each window needs
# --------------------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Span:
    """Source frames ``[first, stop)`` to decode; with ``window_start``, they hold the window starting there in the
    resampled clip at ``offset`` samples into the span's resampled output."""

    first: int
    stop: int
    window_start: int = 0
    offset: int = 0


@dataclass(frozen=True)
class Plan:
    frames: int  # source frames of the clip
    num_samples: int  # its length at the target rate
    spans: tuple[Span, ...]
    windowed: bool  # False: one span, the whole clip


def plan_windows(frames: int, sr: int, target_sr: int, window_samples: int | None, max_windows: int | None) -> Plan:
    """Which source frames a clip of ``frames`` at ``sr`` needs for its windows at ``target_sr``."""
    num_samples = resampled_length(frames, sr, target_sr)
    if window_samples is None or num_samples <= window_samples * max_windows:  # the windows cover the whole clip
        return Plan(frames, num_samples, (Span(0, frames),), False)
    starts, _ = window_starts(num_samples, window_samples, max_windows)
    spans = []
    if sr == target_sr:
        spans = [Span(start, start + window_samples, start, 0) for start in starts]
    else:
        # A span starts on a source frame whose time is a whole number of target samples, so the span's resampled
        # output lines up sample for sample with the full clip's.
        step = sr // math.gcd(sr, target_sr)
        margin = math.ceil(_RESAMPLE_MARGIN_SECONDS * sr)
        for start in starts:
            first = max(0, (start * sr // target_sr - margin) // step * step)
            stop = min(frames, -(-(start + window_samples) * sr // target_sr) + margin)
            spans.append(Span(first, stop, start, start - first * target_sr // sr))
    return Plan(frames, num_samples, tuple(spans), True)
