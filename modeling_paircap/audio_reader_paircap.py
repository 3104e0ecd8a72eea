"""Reading decoded audio for PairCap in bounded blocks, mixed to mono, under a per-file time budget.

Shipped as Hugging Face remote code (copied flat into a model repo): imports only the standard library, ``numpy``
and this package. The reader takes any object with the part of ``soundfile.SoundFile``'s interface it uses (a
soundfile file, or the PyAV decoder of ``audio_pyav_paircap``).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import numpy as np

from .audio_arrays_paircap import AudioInputError, describe_error
from .audio_windows_paircap import Span

__all__ = ["DecodeBudget", "MonoReader", "ShortRead", "seeks_exactly"]

# One read: at most this many samples (frames x channels), so the read buffer is 1 MiB of float32.
_BLOCK_SAMPLES = 1 << 18
# The time budget of one file: this thread's CPU seconds spent reading it may not exceed the floor plus this much per
# second of audio decoded (every pass counted), i.e. a decoder slower than 10x real time is stopped after the floor.
CPU_FLOOR_SECONDS = 10.0
CPU_PER_AUDIO_SECOND = 0.1
# Containers and codecs whose seek lands on the exact sample a full decode gives (mpg123's MP3 seeking does not).
_EXACT_SEEK_SUBTYPES = frozenset({"PCM_S8", "PCM_U8", "PCM_16", "PCM_24", "PCM_32", "FLOAT", "DOUBLE", "ULAW", "ALAW"})
_EXACT_SEEK_OGG_CODECS = frozenset({"VORBIS", "OPUS"})


def seeks_exactly(sound) -> bool:
    """Whether seeking this file lands where a full decode would (PCM containers, FLAC, Ogg Vorbis/Opus)."""
    if not sound.seekable():
        return False
    if sound.format == "FLAC" or sound.subtype in _EXACT_SEEK_SUBTYPES:
        return True
    return sound.format == "OGG" and sound.subtype in _EXACT_SEEK_OGG_CODECS


class ShortRead(Exception):
    """The decoder gave fewer frames than planned (the header over-states the length, or the data is corrupt)."""

    def __init__(self, frames: int, reason: str | None) -> None:
        super().__init__(reason)
        self.frames = frames  # the position (in frames) where decoding stopped
        self.reason = reason


class DecodeBudget:
    """The time one file may take: this thread's CPU time since the budget was made, at most ``CPU_FLOOR_SECONDS``
    plus ``CPU_PER_AUDIO_SECOND`` per second of audio decoded so far. Shared by every pass over the file."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.sampling_rate = 0  # set once the file is open
        self.frames = 0  # decoded so far, all passes
        self._start = time.thread_time()

    def charge(self, frames: int) -> None:
        """Count ``frames`` more decoded frames; raise :class:`AudioInputError` if the file is over its budget."""
        self.frames += frames
        seconds = self.frames / self.sampling_rate if self.sampling_rate else 0.0
        allowed = CPU_FLOOR_SECONDS + CPU_PER_AUDIO_SECOND * seconds
        used = time.thread_time() - self._start
        if used > allowed:
            raise AudioInputError(
                self.name,
                f"decoding stopped: {used:.1f} s of CPU for {seconds:.1f} s of audio is over the budget of "
                f"{CPU_FLOOR_SECONDS:g} s plus {CPU_PER_AUDIO_SECOND:g} s per second of audio",
            )


class MonoReader:
    """Reads what ``open_sound()`` (a fresh ``soundfile.SoundFile`` or the like) holds in bounded blocks, mixing each
    block to mono float32 (the mean of the channels in float64, as a full decode does), and stops cleanly where the
    decoder fails. Every read is charged to ``budget``. A context manager; ``sound`` is the open file."""

    def __init__(self, open_sound: Callable[[], Any], budget: DecodeBudget) -> None:
        self._open = open_sound
        self.budget = budget
        self.sound = open_sound()
        self.channels = self.sound.channels
        self.buffer = np.empty((max(1, _BLOCK_SAMPLES // max(1, self.channels)), max(1, self.channels)), np.float32)
        self.position = 0
        self.reason: str | None = None  # why the last `blocks` stopped early on an error
        self._integer_codec = self.sound.subtype not in ("FLOAT", "DOUBLE", "VORBIS", "OPUS", "MPEG_LAYER_III")

    def __enter__(self) -> MonoReader:
        return self

    def __exit__(self, *exc_info) -> None:
        self.sound.close()

    def _restart_at(self, frame: int) -> bool:
        """Reopen the file at ``frame`` (a decoder that failed may refuse every later seek); False if that fails."""
        try:
            self.sound.close()
            self.sound = self._open()
            if frame:
                self.sound.seek(frame)
        except Exception:  # noqa: BLE001
            return False
        self.position = frame
        return True

    def _mono(self, data: np.ndarray) -> np.ndarray:
        if self.channels == 1:
            return data[:, 0].copy()
        return data.mean(axis=1, dtype=np.float64).astype(np.float32)

    def seek(self, frame: int) -> None:
        self.sound.seek(frame)
        self.position = frame

    def _tell(self) -> int:
        try:
            return int(self.sound.tell())
        except Exception:  # noqa: BLE001
            return -1

    def blocks(self, frames: int | None = None) -> Iterator[np.ndarray]:
        """Mono blocks from the current position: ``frames`` of them (None: to the end), fewer where the data ends or
        the decoder fails (then ``self.reason`` says why).

        soundfile raises when libsndfile fails mid-read (a truncated FLAC), and when its position update after a read
        fails (a FLAC cut short or without a length in its header cannot seek to its last decodable frame): the
        frames of that read that did land are kept when libsndfile still knows its position, else the file is
        reopened there and the read retried in smaller pieces (at most the last frame is lost)."""
        self.reason = None
        piece = len(self.buffer)
        sentinel = False  # after a read whose count was lost: pre-fill with NaN, which integer codecs never give
        while frames is None or frames > 0:
            # One frame more than needed: a read that ends exactly where a damaged FLAC stops decoding fails in
            # soundfile's position update and loses its count, one that runs past it reports the decoder's error.
            count = piece if frames is None else min(piece, frames + 1)
            start = self.position
            if sentinel:
                self.buffer[:count] = np.nan
            try:
                data = self.sound.read(dtype="float32", always_2d=True, out=self.buffer[:count])
            except Exception as exc:  # noqa: BLE001 - a decoder error ends the decodable audio
                landed = self._tell() - start
                if not 0 <= landed <= count and sentinel:  # the frames that landed are the ones not left NaN
                    finite = np.isfinite(self.buffer[:count, 0])
                    landed = count if finite.all() else int(np.argmin(finite))
                self.budget.charge(max(0, min(landed, count)))
                if 0 < landed <= count:
                    self.position = start + landed
                    yield self._mono(self.buffer[: landed if frames is None else min(landed, frames)])
                elif piece > 1 and self._restart_at(start):
                    piece = max(1, piece // 64)
                    sentinel = self._integer_codec
                    continue
                self.reason = describe_error(exc)
                return
            self.budget.charge(len(data))
            if not len(data):
                return
            self.position += len(data)
            if frames is not None:
                data = data[:frames]
                frames -= len(data)
            yield self._mono(data)
            if len(data) < count and (frames is None or frames > 0):
                return

    def read(self, frames: int) -> np.ndarray:
        """Exactly ``frames`` from the current position, or :class:`ShortRead`."""
        parts = list(self.blocks(frames))
        got = sum(map(len, parts))
        if got < frames:
            raise ShortRead(self.position, self.reason)
        return np.concatenate(parts) if len(parts) != 1 else parts[0]

    def read_all(self, limit: int | None = None) -> np.ndarray:
        """Everything up to ``limit`` frames (None: what the decoder gives)."""
        parts = list(self.blocks(limit))
        return np.concatenate(parts) if parts else np.zeros(0, np.float32)

    def count(self, limit: int | None = None) -> int:
        """Frames the decoder gives from the current position to where it ends or fails, or ``limit`` if sooner."""
        return sum(len(part) for part in self.blocks(limit))

    def spans_by_seeking(self, spans: Sequence[Span]) -> list[np.ndarray]:
        out = []
        for span in spans:
            try:
                self.seek(span.first)
            except Exception as exc:  # noqa: BLE001 - e.g. a seek past the end of a truncated FLAC
                raise ShortRead(span.first, describe_error(exc)) from exc
            out.append(self.read(span.stop - span.first))
        return out

    def spans_in_order(self, spans: Sequence[Span]) -> list[np.ndarray]:
        """The spans in one pass from the start, keeping only their frames (no seeking: for files whose seeking is
        inexact or unreliable)."""
        out = [np.empty(span.stop - span.first, dtype=np.float32) for span in spans]
        end = max(span.stop for span in spans)
        position = self.position
        for part in self.blocks(end - position):
            for span, buffer in zip(spans, out, strict=True):
                lo, hi = max(span.first, position), min(span.stop, position + len(part))
                if lo < hi:
                    buffer[lo - span.first : hi - span.first] = part[lo - position : hi - position]
            position += len(part)
        if position < end:
            raise ShortRead(position, self.reason)
        return out
