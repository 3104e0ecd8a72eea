"""Decoding audio files and encoded bytes for PairCap: mono float32 at the target rate, the whole clip or only the
windows of a long one, within a sample and time budget per file.

Shipped as Hugging Face remote code (copied flat into a model repo): the standard library, ``numpy`` and this package
at top level; ``soundfile`` is imported when a file is decoded, and PyAV (optional) when soundfile cannot open it.

Budget. What a file costs is bounded by the audio its windows need, not by what its header claims or how well it
compresses (a FLAC of constant blocks holds hours of audio in 100 KB):
- a stated length is decoded only where the windows lie (by seeking where that is exact, else in one pass that stops
  at the last window's end);
- a file whose header states no length (or more than decodes) is probed for at most :data:`PROBE_SPANS` times the
  span its windows cover (10 min for 3 windows of 10 s); audio past that is not used, with a warning;
- a clip decoded whole (no window layout) is at most :data:`MAX_WHOLE_SECONDS` long, else an error;
- every file has a CPU time budget (``audio_reader_paircap.DecodeBudget``).
"""

from __future__ import annotations

import io
import math
import os
import warnings
from collections.abc import Callable
from typing import Any

import numpy as np

from .audio_arrays_paircap import AudioInputError, describe_error, import_optional, resample_mono, to_mono_float32
from .audio_files_paircap import open_regular_file
from .audio_pyav_paircap import PyAVSound, import_pyav
from .audio_reader_paircap import DecodeBudget, MonoReader, ShortRead, seeks_exactly
from .audio_windows_paircap import Plan, WindowedWaveform, plan_windows

__all__ = ["MAX_WHOLE_SECONDS", "PROBE_SPANS", "decode_bytes", "decode_file"]

# Sample rates a file header may declare. Above 1 MHz nothing is audio (and 30 s of it would be 120 MB of mono).
_MAX_FILE_SAMPLE_RATE = 1_000_000
# A header frame count at or above this means "unknown" (libsndfile reports SF_COUNT_MAX for some streams).
_UNKNOWN_FRAMES = 1 << 40
# A file of unknown length is decoded for at most this many times the span its windows cover.
PROBE_SPANS = 20
# A clip decoded whole (no window layout) may be at most this long.
MAX_WHOLE_SECONDS = 3600


def decode_file(path: str, name: str, target_sr: int, window_samples: int | None, max_windows: int | None):
    """Decode the regular file at ``path`` (see :func:`decode_sound`); errors name ``name``."""
    sf = import_optional("soundfile", "Decoding audio files")
    fd = open_regular_file(path, name)
    try:

        def rewound() -> int:
            os.lseek(fd, 0, os.SEEK_SET)
            return fd

        backends = [("soundfile", lambda: sf.SoundFile(rewound(), closefd=False))]
        backends += _pyav_backend(lambda: io.FileIO(rewound(), closefd=False))
        return _decode_with_first_that_opens(backends, name, target_sr, window_samples, max_windows)
    finally:
        os.close(fd)


def decode_bytes(data: bytes, name: str, target_sr: int, window_samples: int | None, max_windows: int | None):
    """Decode encoded bytes in memory (see :func:`decode_sound`); errors name ``name``."""
    sf = import_optional("soundfile", "Decoding audio files")
    if not data:
        raise AudioInputError(name, "could not decode audio: the bytes are empty")
    backends = [("soundfile", lambda: sf.SoundFile(io.BytesIO(data)))] + _pyav_backend(lambda: io.BytesIO(data))
    return _decode_with_first_that_opens(backends, name, target_sr, window_samples, max_windows)


def _pyav_backend(source: Callable[[], Any]) -> list[tuple[str, Callable[[], Any]]]:
    """PyAV reading ``source()`` (a fresh file object at its start), where PyAV is installed."""
    return [("PyAV", lambda: PyAVSound(source()))] if import_pyav() is not None else []


def _decode_with_first_that_opens(
    backends: list[tuple[str, Callable[[], Any]]],
    name: str,
    target_sr: int,
    window_samples: int | None,
    max_windows: int | None,
):
    """Decode with the first backend (soundfile, then PyAV) that opens the audio; if none does, an error naming each
    one's problem."""
    problems = []
    for backend, open_sound in backends:
        try:
            opened = [open_sound()]
        except Exception as exc:  # noqa: BLE001 - this backend cannot read it; try the next
            problems.append(f"{backend}: {describe_error(exc)}")
            continue

        def reopen(opened=opened, open_sound=open_sound):  # the file opened above first, then fresh ones
            return opened.pop() if opened else open_sound()

        return decode_sound(reopen, name, target_sr, window_samples, max_windows, backend=backend)
    if len(backends) == 1:
        problems.append("PyAV is not installed (pip install av: AAC/M4A, WebM and other ffmpeg formats)")
    raise AudioInputError(name, f"could not decode audio ({'; '.join(problems)})")


def decode_sound(
    open_sound: Callable[[], Any],
    name: str,
    target_sr: int,
    window_samples: int | None = None,
    max_windows: int | None = None,
    backend: str = "soundfile",
) -> np.ndarray:
    """Decode what ``open_sound()`` (a fresh ``soundfile.SoundFile`` or ``PyAVSound``) holds: the whole clip, mono
    float32 at ``target_sr``, or with a window layout, only the windows of a long clip (a :class:`WindowedWaveform`).

    A header whose frame count is wrong or unknown is not trusted: the audio is what the decoder gives before it
    ends or fails (within the budget of the module docstring). Where that differs from the header, a warning says
    so; a file that decodes to nothing is an error. Windows of a long clip are read by seeking where that is exact,
    else in one pass from the start; when the decoder stops short of a planned window, the frames it gives are
    counted and the windows placed over those."""
    budget = DecodeBudget(name)
    try:
        with MonoReader(open_sound, budget) as reader:
            sound = reader.sound
            sr, hint = int(sound.samplerate), int(sound.frames)
            if sr <= 0 or sr > _MAX_FILE_SAMPLE_RATE:
                raise AudioInputError(name, f"unsupported sample rate {sr} Hz (expected 1 Hz to 1 MHz)")
            if sound.channels <= 0:
                raise AudioInputError(name, f"invalid channel count {sound.channels}")
            budget.sampling_rate = sr
            known = 0 <= hint < _UNKNOWN_FRAMES
            if window_samples is None:
                frames = _whole_clip_frames(reader, sr, hint if known else None, name)
                if known:
                    return _whole_clip(reader.read_all(frames), sr, target_sr, hint, reader.reason, name, backend)
                reason = reader.reason
            elif known:
                plan = plan_windows(hint, sr, target_sr, window_samples, max_windows)
                if not plan.windowed:  # the whole clip: decode what is there
                    mono = reader.read_all(plan.frames)
                    return _whole_clip(mono, sr, target_sr, hint, reader.reason, name, backend)
                try:
                    if seeks_exactly(sound):
                        spans = reader.spans_by_seeking(plan.spans)
                    else:
                        spans = reader.spans_in_order(plan.spans)
                    return _windows_from_spans(plan, spans, sr, target_sr, window_samples, name)
                except ShortRead:
                    pass
        if window_samples is None:  # a whole clip of unknown length, counted above: read it
            with MonoReader(open_sound, budget) as reader:
                return _whole_clip(reader.read_all(frames), sr, target_sr, -1, reason or reader.reason, name, backend)
        # The header over-states the clip (truncated or corrupt file) or does not give its length: count what
        # decodes (up to the probe budget), then read the windows of that in one pass (seeking is what fails on such
        # files).
        probe = math.ceil(PROBE_SPANS * window_samples * max_windows * sr / target_sr)
        with MonoReader(open_sound, budget) as reader:
            frames = reader.count(probe + 1)
            reason = reader.reason
        cut = frames > probe
        if cut:
            frames = probe
            _warn_cut(name, hint, probe / sr, window_samples * max_windows / target_sr)
        for _ in range(3):
            if frames == 0:
                raise AudioInputError(name, _nothing_decoded(hint, reason, backend))
            plan = plan_windows(frames, sr, target_sr, window_samples, max_windows)
            with MonoReader(open_sound, budget) as reader:
                if not plan.windowed:
                    return _whole_clip(reader.read_all(plan.frames), sr, target_sr, hint, reason, name, backend)
                try:
                    spans = reader.spans_in_order(plan.spans)
                except ShortRead as short:  # decoded less on this pass: place the windows over that
                    frames, reason, cut = short.frames, short.reason, False
                    continue
            if not cut:
                _warn_short(name, hint, frames, reason)
            return _windows_from_spans(plan, spans, sr, target_sr, window_samples, name)
        raise AudioInputError(name, "could not decode audio: the decoder stops at a different frame on each pass")
    except AudioInputError:
        raise
    except Exception as exc:  # noqa: BLE001 - any decoder (or resampler) failure is this item's error
        raise AudioInputError(name, f"could not decode audio ({backend}: {describe_error(exc)})") from exc


def _whole_clip_frames(reader: MonoReader, sr: int, hint: int | None, name: str) -> int:
    """The frames of a clip decoded whole (no window layout): its stated length, or what decodes (counted without
    holding it). At most ``MAX_WHOLE_SECONDS``, else an error."""
    limit = MAX_WHOLE_SECONDS * sr
    too_long = (
        f"a clip decoded whole may be at most {MAX_WHOLE_SECONDS} s (decode it with a window layout, "
        "window_samples and max_windows, to read only its windows)"
    )
    if hint is not None and hint > limit:
        raise AudioInputError(name, f"the header states {hint / sr:.0f} s of audio; {too_long}")
    if hint is not None:
        return hint
    frames = reader.count(limit + 1)
    if frames > limit:
        raise AudioInputError(name, f"the audio runs past {MAX_WHOLE_SECONDS} s; {too_long}")
    return frames


def _windows_from_spans(
    plan: Plan, spans: list[np.ndarray], sr: int, target_sr: int, window_samples: int, name: str
) -> WindowedWaveform:
    """Validate the decoded spans, resample each, and cut its window out of it."""
    to_mono_float32(np.concatenate(spans), name)  # NaN/inf and silence, over the audio the windows use
    windows = []
    for span, mono in zip(plan.spans, spans, strict=True):
        out = resample_mono(mono, sr, target_sr, name)
        offset = min(span.offset, max(0, len(out) - window_samples))  # the last window ends with the clip
        window = out[offset : offset + window_samples]
        if len(window) != window_samples:
            raise AudioInputError(name, f"could not decode audio: a window came out {len(window)} samples long")
        windows.append(window)
    starts = [span.window_start for span in plan.spans]
    return WindowedWaveform(np.concatenate(windows), starts, window_samples, plan.num_samples, target_sr)


def _nothing_decoded(hint: int, reason: str | None, backend: str) -> str:
    claim = f"; the header claims {hint} frames" if 0 < hint < _UNKNOWN_FRAMES else ""
    if reason:
        return f"could not decode audio ({backend}: {reason}){claim}"
    return f"audio is empty (zero samples decoded){claim}"


def _warn_short(name: str, hint: int, frames: int, reason: str | None) -> None:
    if 0 <= hint < _UNKNOWN_FRAMES and frames != hint:
        why = f"the decoder stopped: {reason}" if reason else "the data ends early"
        warnings.warn(
            f"{name}: the header claims {hint} frames but {frames} could be decoded ({why}); using those",
            UserWarning,
            stacklevel=2,
        )


def _warn_cut(name: str, hint: int, probe_seconds: float, span_seconds: float) -> None:
    header = f"the header claims {hint} frames, which do not decode as stated," if 0 <= hint < _UNKNOWN_FRAMES else (
        "the header does not state its length, and"
    )  # fmt: skip
    warnings.warn(
        f"{name}: {header} the audio runs past the decoding budget of {probe_seconds:.0f} s ({PROBE_SPANS} times "
        f"the {span_seconds:.0f} s its windows cover); using its first {probe_seconds:.0f} s",
        UserWarning,
        stacklevel=2,
    )


def _whole_clip(
    mono: np.ndarray, sr: int, target_sr: int, hint: int, reason: str | None, name: str, backend: str
) -> np.ndarray:
    """A whole decoded clip: validated, resampled. A clip that came out shorter than its header said is kept."""
    if len(mono) == 0:
        raise AudioInputError(name, _nothing_decoded(hint, reason, backend))
    _warn_short(name, hint, len(mono), reason)
    mono = to_mono_float32(mono, name)
    return resample_mono(mono, sr, target_sr, name)
