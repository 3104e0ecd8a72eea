"""Decoding what soundfile cannot (AAC/M4A, WebM/Matroska, WMA, AC-3, ...) with PyAV, which ships ffmpeg in its wheels.

Shipped as Hugging Face remote code (copied flat into a model repo): imports only the standard library, ``numpy`` and
this package at top level; ``av`` is optional (:func:`import_pyav` gives None without it). ffmpeg opens only the audio
containers of :data:`PYAV_FORMATS` (never a playlist, image or other demuxer that reads further files), decodes the
first audio stream, and is read in order (no seeking).
"""

from __future__ import annotations

import sys
from typing import Any

import numpy as np

__all__ = ["PYAV_FORMATS", "PyAVSound", "import_pyav"]

# The ffmpeg demuxers PyAV may use (a comma list, ffmpeg's `format_whitelist`): audio containers only.
PYAV_FORMATS = "mov,matroska,ogg,mp3,aac,wav,w64,flac,asf,amr,ac3,eac3,aiff,caf,au,wv,ape,tta,mpc,mpc8,dts,loas"
# A frame count the reader takes as "unknown" (what libsndfile reports for a stream without a length).
_UNKNOWN_LENGTH = sys.maxsize
# Integer sample formats of ffmpeg: (offset, scale) to float in [-1, 1), as soundfile scales PCM.
_INT_SCALE = {"u8": (128.0, 128.0), "s16": (0.0, 32768.0), "s32": (0.0, 2.0**31), "s64": (0.0, 2.0**63)}


def import_pyav():
    """The ``av`` module, or None where PyAV is not installed."""
    try:
        import av
    except ImportError:
        return None
    return av


class PyAVSound:
    """The first audio stream of a container, decoded by PyAV behind the part of ``soundfile.SoundFile``'s interface
    that ``MonoReader`` uses. Reads go forward only (``seekable()`` is False). ``frames`` is unknown: the length a
    container states is often not the decoded one (AAC priming and padding, Opus pre-skip), so it only bounds the
    reads (the decoder's padding past it is dropped), and the reader counts what decodes."""

    def __init__(self, source: Any) -> None:
        av = import_pyav()
        self._container = av.open(source, mode="r", options={"format_whitelist": PYAV_FORMATS})
        try:
            if not self._container.streams.audio:
                raise ValueError("the file has no audio stream")
            stream = self._container.streams.audio[0]
            context = stream.codec_context
            self.samplerate = int(context.sample_rate or 0)
            self.channels = int(context.layout.nb_channels) if context.layout else 0
            self.format = self._container.format.name.split(",")[0].upper()
            self.subtype = context.name.upper()
            self.frames = _UNKNOWN_LENGTH
            self._limit = _stated_frames(stream, self._container, self.samplerate)
            self._frames = self._container.decode(stream)
        except BaseException:
            self._container.close()
            raise
        self._pending = np.zeros((0, max(1, self.channels)), np.float32)
        self._position = 0

    def seekable(self) -> bool:
        return False

    def seek(self, frame: int) -> int:
        if frame != self._position:
            raise ValueError("PyAV streams are read in order, not seeked")
        return frame

    def tell(self) -> int:
        return self._position

    def close(self) -> None:
        self._container.close()

    def read(self, dtype: str = "float32", always_2d: bool = True, out: np.ndarray | None = None) -> np.ndarray:
        """Fill ``out`` (``(frames, channels)`` float32) from the stream; returns the filled part. A decoder error
        is raised after the frames before it are in ``out`` (``tell()`` counts them)."""
        count = len(out)
        if self._limit is not None:
            count = max(0, min(count, self._limit - self._position))
        filled = 0
        while filled < count:
            if not len(self._pending):
                frame = next(self._frames, None)
                if frame is None:
                    break
                self._pending = self._samples(frame)
            take = min(count - filled, len(self._pending))
            out[filled : filled + take] = self._pending[:take]
            self._pending = self._pending[take:]
            filled += take
            self._position += take
        return out[:filled]

    def _samples(self, frame) -> np.ndarray:
        """One decoded frame as float32 ``(frames, channels)``."""
        if frame.sample_rate != self.samplerate:
            raise ValueError(f"the sample rate changes mid-stream ({self.samplerate} -> {frame.sample_rate} Hz)")
        channels = frame.layout.nb_channels
        if channels != self.channels:
            raise ValueError(f"the channel count changes mid-stream ({self.channels} -> {channels})")
        data = frame.to_ndarray()
        data = data.T if frame.format.is_planar else data.reshape(-1, channels)
        name = frame.format.name.rstrip("p")
        if name in _INT_SCALE:
            offset, scale = _INT_SCALE[name]
            data = (data.astype(np.float64) - offset) / scale
        return np.ascontiguousarray(data, dtype=np.float32)


def _stated_frames(stream, container, sr: int) -> int | None:
    """The length the container states, in frames at ``sr`` (None if it states none)."""
    if stream.duration and stream.time_base:
        return int(round(stream.duration * stream.time_base * sr))
    if container.duration and container.duration > 0:
        return int(round(container.duration * sr / 1_000_000))  # AV_TIME_BASE: microseconds
    return None
