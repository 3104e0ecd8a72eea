"""Audio loading, validation and resampling for PairCap.

This module is shipped as Hugging Face remote code (copied flat into a model repo), so it only imports the standard
library, ``numpy``, ``torch`` and ``transformers`` at top level. ``soundfile`` (decoding) and ``soxr`` (resampling)
are imported lazily, only when a file must be decoded or a rate changed.

Every bad input raises :class:`AudioInputError`, whose message starts with the item's name (a file path, or e.g.
``"audio[3]"``) followed by ``": "`` and the problem. Any decoder or resampler failure of one item is converted to
one, so a batch, a knowledge-base build or a training epoch only loses that item.

Files are opened without blocking and only if they are regular files (a FIFO, device or socket is refused before it
is read). Given a window layout (``window_samples``, ``max_windows``: what the processor's encoder uses), a file
longer than its windows is decoded only where the windows lie: a seek to each window (plus a margin for the
resampler), so memory is that of the windows plus a bounded read buffer whatever the file's length.
"""

from __future__ import annotations

import errno
import importlib
import io
import math
import os
import stat
import warnings
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from transformers.utils import logging

__all__ = [
    "AudioInputError",
    "WindowedWaveform",
    "load_audio",
    "load_audio_batch",
    "load_audio_file",
    "resample",
    "resampled_length",
    "to_mono_float32",
    "window_starts",
]

# soxr's "HQ" recipe: 20-bit precision, passband to 91 % of the lower Nyquist, linear phase.
SOXR_QUALITY = "HQ"
# A channel axis longer than this is not believed to be one.
_MAX_CHANNELS = 16
# Sample rates a file header may declare. Above 1 MHz nothing is audio (and 30 s of it would be 120 MB of mono).
_MAX_FILE_SAMPLE_RATE = 1_000_000
# A header frame count at or above this means "unknown" (libsndfile reports SF_COUNT_MAX for some streams).
_UNKNOWN_FRAMES = 1 << 40
# One soundfile read: at most this many samples (frames x channels), so the read buffer is 1 MiB of float32.
_BLOCK_SAMPLES = 1 << 18
# Extra source audio read on each side of a window that must be resampled (soxr "HQ" settles within ~10 ms).
_RESAMPLE_MARGIN_SECONDS = 0.25
# Containers and codecs whose seek lands on the exact sample a full decode gives (mpg123's MP3 seeking does not).
_EXACT_SEEK_SUBTYPES = frozenset({"PCM_S8", "PCM_U8", "PCM_16", "PCM_24", "PCM_32", "FLOAT", "DOUBLE", "ULAW", "ALAW"})
_EXACT_SEEK_OGG_CODECS = frozenset({"VORBIS", "OPUS"})

_INT_PCM_SCALE = {
    np.dtype(np.int8): (0.0, 128.0),
    np.dtype(np.uint8): (128.0, 128.0),
    np.dtype(np.int16): (0.0, 32768.0),
    np.dtype(np.int32): (0.0, 2.0**31),
}

logger = logging.get_logger(__name__)


class AudioInputError(ValueError):
    """Bad audio input. The message is ``f"{item}: {problem}"``; ``.item`` is the item's name."""

    def __init__(self, item: str, problem: str) -> None:
        super().__init__(f"{item}: {problem}")
        self.item = item
        self.problem = problem

    def __reduce__(self):  # keep picklable (DataLoader workers) despite the two-argument constructor
        return (type(self), (self.item, self.problem))


def _describe(exc: BaseException) -> str:
    """A library exception as one short phrase (libsndfile's own message without soundfile's "Error opening 3:")."""
    text = getattr(exc, "error_string", None) or str(exc).strip()
    return text or type(exc).__name__


# --------------------------------------------------------------------------------------------------------------------
# Resampling (soxr)
# --------------------------------------------------------------------------------------------------------------------


def _check_rate(rate: Any, what: str) -> int:
    """Return ``rate`` as a positive int, or raise ValueError."""
    if isinstance(rate, bool):
        raise ValueError(f"{what} must be a positive integer, got {rate!r}")
    try:
        as_int = int(rate)
    except (TypeError, ValueError):
        raise ValueError(f"{what} must be a positive integer, got {rate!r}") from None
    if as_int != rate or as_int <= 0:
        raise ValueError(f"{what} must be a positive integer, got {rate!r}")
    return as_int


def _import_optional(module: str, purpose: str):
    """Import a package only some inputs need (soxr, soundfile), or raise an ImportError saying how to install it."""
    try:
        return importlib.import_module(module)
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise ImportError(f"{purpose} requires the `{module}` package: pip install {module}") from exc


def _import_soxr():
    return _import_optional("soxr", "Resampling audio")


def _import_soundfile():
    return _import_optional("soundfile", "Decoding audio files")


def resampled_length(num_samples: int, orig_sr: int, target_sr: int) -> int:
    """Samples soxr gives for ``num_samples`` at ``orig_sr`` resampled to ``target_sr``: the rounded exact length,
    computed in double precision as soxr does (``(size_t)(n * out / in + .5)``)."""
    if orig_sr == target_sr:
        return int(num_samples)
    return int(float(num_samples) * float(target_sr) / float(orig_sr) + 0.5)


def _soxr_resample(x: np.ndarray, orig_sr: int, target_sr: int) -> np.ndarray:
    """soxr over axis 0 of a float32/float64 array of shape ``(T,)`` or ``(T, C)``."""
    return _import_soxr().resample(x, orig_sr, target_sr, quality=SOXR_QUALITY)


def resample(waveform: torch.Tensor, orig_sr: int, target_sr: int) -> torch.Tensor:
    """Band-limited resampling over the last dimension with soxr ("HQ": linear phase, passband to 91 % of the lower
    Nyquist, 20-bit precision).

    Works for any pair of positive integer rates (also co-prime ones such as 16001 -> 48000), any leading batch dims
    and any device (the computation runs on the CPU; the result goes back to the input's device and dtype). Output
    length is ``round(n * target_sr / orig_sr)`` (:func:`resampled_length`). Equal rates return the input unchanged.
    """
    orig_sr = _check_rate(orig_sr, "orig_sr")
    target_sr = _check_rate(target_sr, "target_sr")
    if not isinstance(waveform, torch.Tensor):
        raise TypeError(f"waveform must be a torch.Tensor, got {type(waveform).__name__}")
    if orig_sr == target_sr:
        return waveform
    if not waveform.is_floating_point():
        raise TypeError(f"waveform must be a floating-point tensor, got {waveform.dtype}")
    if waveform.dim() == 0:
        raise ValueError("waveform must have at least one dimension (time)")
    shape = waveform.shape
    length = shape[-1]
    target_length = resampled_length(length, orig_sr, target_sr)
    n_signals = math.prod(shape[:-1])
    if length == 0 or n_signals == 0:
        return waveform.new_zeros(*shape[:-1], target_length)
    work_dtype = torch.float64 if waveform.dtype == torch.float64 else torch.float32
    x = waveform.detach().to(device="cpu", dtype=work_dtype).reshape(n_signals, length).numpy()
    # soxr takes (frames, channels); one call per group of 256 signals bounds its working memory.
    rows = [
        _soxr_resample(np.ascontiguousarray(x[s : s + 256].T), orig_sr, target_sr) for s in range(0, n_signals, 256)
    ]
    y = torch.from_numpy(np.ascontiguousarray(np.concatenate(rows, axis=1).T))
    return y.reshape(*shape[:-1], y.shape[-1]).to(device=waveform.device, dtype=waveform.dtype)


def _resample_np(mono: np.ndarray, orig_sr: int, target_sr: int, name: str) -> np.ndarray:
    """Resample a 1-D float32 array with soxr; any resampler failure becomes an :class:`AudioInputError`."""
    if orig_sr == target_sr:
        return mono
    _import_soxr()  # a missing package is the environment's problem, not this item's
    try:
        out = _soxr_resample(np.ascontiguousarray(mono, dtype=np.float32), orig_sr, target_sr)
    except Exception as exc:  # noqa: BLE001 - whatever the resampler raises is this item's failure
        raise AudioInputError(
            name, f"could not resample {orig_sr} Hz -> {target_sr} Hz ({type(exc).__name__}: {_describe(exc)})"
        ) from exc
    return np.asarray(out, dtype=np.float32)


# --------------------------------------------------------------------------------------------------------------------
# Windows
# --------------------------------------------------------------------------------------------------------------------


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
# Validation
# --------------------------------------------------------------------------------------------------------------------


def to_mono_float32(array: Any, name: str, *, silence_threshold: float = 1e-6) -> np.ndarray:
    """Validate an audio array and return it as a 1-D float32 numpy array (mono mix by averaging channels).

    Accepts numpy arrays or torch tensors shaped ``(T,)``, ``(C, T)`` or ``(T, C)`` (the channel axis is the smaller
    one, and must have at most 16 entries). Integer PCM (int8/uint8/int16/int32) is scaled to [-1, 1) like soundfile.
    Raises :class:`AudioInputError` naming ``name`` for wrong types/shapes, empty input, NaN/inf, or silence
    (peak absolute value below ``silence_threshold``; pass 0 to disable that check).
    """
    if isinstance(array, torch.Tensor):
        t = array.detach()
        if t.dtype in (torch.bfloat16, torch.float16):
            t = t.float()
        try:
            arr = t.cpu().numpy()
        except (TypeError, RuntimeError) as exc:
            raise AudioInputError(name, f"unsupported tensor dtype {array.dtype} ({exc})") from None
    elif isinstance(array, np.ndarray):
        arr = array
    else:
        raise AudioInputError(name, f"expected a numpy array or torch tensor, got {type(array).__name__}")

    dtype = arr.dtype
    if dtype in _INT_PCM_SCALE:
        offset, scale = _INT_PCM_SCALE[dtype]
        data = (arr.astype(np.float64) - offset) / scale
    elif dtype.kind == "f":
        data = arr
    else:
        raise AudioInputError(name, f"unsupported dtype {dtype} (expected float, or int8/uint8/int16/int32 PCM)")

    if data.ndim == 0:
        raise AudioInputError(name, "expected a 1-D or 2-D array, got a 0-d scalar")
    if data.ndim > 2:
        raise AudioInputError(name, f"expected a 1-D (T,) or 2-D (C, T)/(T, C) array, got shape {tuple(data.shape)}")
    if data.size == 0:
        raise AudioInputError(name, f"audio is empty (shape {tuple(data.shape)}, zero samples)")

    if data.dtype.kind == "f":
        finite = np.isfinite(data)
        if not finite.all():
            n_nan = int(np.isnan(data).sum())
            n_inf = int(data.size - finite.sum()) - n_nan
            raise AudioInputError(name, f"audio contains {n_nan} NaN and {n_inf} inf values out of {data.size}")

    if data.ndim == 2:
        rows, cols = data.shape
        if min(rows, cols) > _MAX_CHANNELS or (rows == cols and rows > 1):
            raise AudioInputError(
                name,
                f"ambiguous 2-D shape {tuple(data.shape)}: cannot tell the channel axis "
                f"(expected (C, T) or (T, C) with C <= {_MAX_CHANNELS} and C < T)",
            )
        channel_axis = 0 if rows <= cols else 1
        mono = data.mean(axis=channel_axis, dtype=np.float64) if data.shape[channel_axis] > 1 else data.reshape(-1)
    else:
        mono = data

    out = np.array(mono, dtype=np.float32, copy=True)  # never alias the caller's buffer
    peak = float(np.max(np.abs(out)))
    if peak < silence_threshold:
        raise AudioInputError(name, f"audio is silent (peak |x| = {peak:.3g} < {silence_threshold:g})")
    return out


# --------------------------------------------------------------------------------------------------------------------
# Opening files
# --------------------------------------------------------------------------------------------------------------------


_FILE_KINDS = (
    (stat.S_ISFIFO, "a FIFO (named pipe)"),
    (stat.S_ISCHR, "a character device"),
    (stat.S_ISBLK, "a block device"),
    (stat.S_ISSOCK, "a socket"),
)


def _kind_problem(mode: int, path: str) -> str | None:
    """Why an entry of this ``st_mode`` is not read (None for a regular file)."""
    if stat.S_ISREG(mode):
        return None
    if stat.S_ISDIR(mode):
        if not os.access(path, os.R_OK | os.X_OK):
            return "is a directory (that cannot be listed: permission denied), not an audio file"
        return "is a directory, not an audio file"
    kind = next((what for test, what in _FILE_KINDS if test(mode)), f"a special file (mode {stat.S_IFMT(mode):o})")
    return f"is {kind}, not a regular file; not read"


def _stat_problem(path: str, exc: OSError) -> str:
    """Why ``os.stat(path)`` failed, for people: broken link, link loop, permission, missing."""
    if exc.errno == errno.ELOOP:
        return "symbolic link loop (too many levels of symbolic links)"
    if isinstance(exc, FileNotFoundError) or exc.errno == errno.ENOTDIR:
        if os.path.islink(path):
            try:
                target = os.readlink(path)
            except OSError:
                target = "?"
            return f"broken symbolic link (its target {target!r} does not exist)"
        return "file not found"
    if isinstance(exc, PermissionError):
        return "permission denied (a folder on the path cannot be searched)"
    return f"cannot access the file ({exc.strerror or exc})"


def _open_regular_file(path: str, name: str) -> int:
    """A read-only descriptor of ``path``, which must be a regular file; else :class:`AudioInputError`.

    The kind of file is checked with ``os.stat`` before opening, and again on the open descriptor (``O_NONBLOCK``, so
    a FIFO swapped in between cannot block the open)."""
    try:
        info = os.stat(path)
    except OSError as exc:
        raise AudioInputError(name, _stat_problem(path, exc)) from None
    problem = _kind_problem(info.st_mode, path)
    if problem is not None:
        raise AudioInputError(name, problem)
    flags = os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_NOCTTY", 0) | getattr(os, "O_CLOEXEC", 0)
    try:
        fd = os.open(path, flags)
    except PermissionError:
        raise AudioInputError(name, "permission denied (the file is not readable)") from None
    except OSError as exc:
        raise AudioInputError(name, _stat_problem(path, exc)) from None
    try:
        info = os.fstat(fd)
        problem = _kind_problem(info.st_mode, path)
        if problem is None and info.st_size == 0:
            problem = "could not decode audio: the file is empty (0 bytes)"
    except OSError as exc:
        problem = f"cannot access the file ({exc.strerror or exc})"
    if problem is not None:
        os.close(fd)
        raise AudioInputError(name, problem)
    return fd


# --------------------------------------------------------------------------------------------------------------------
# Decoding
# --------------------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Span:
    """Source frames ``[first, stop)`` to decode; with ``window_start``, they hold the window starting there in the
    resampled clip at ``offset`` samples into the span's resampled output."""

    first: int
    stop: int
    window_start: int = 0
    offset: int = 0


@dataclass(frozen=True)
class _Plan:
    frames: int  # source frames of the clip
    num_samples: int  # its length at the target rate
    spans: tuple[_Span, ...]
    windowed: bool  # False: one span, the whole clip


def _plan(frames: int, sr: int, target_sr: int, window_samples: int | None, max_windows: int | None) -> _Plan:
    """Which source frames a clip of ``frames`` at ``sr`` needs for its windows at ``target_sr``."""
    num_samples = resampled_length(frames, sr, target_sr)
    if window_samples is None or num_samples <= window_samples * max_windows:  # the windows cover the whole clip
        return _Plan(frames, num_samples, (_Span(0, frames),), False)
    starts, _ = window_starts(num_samples, window_samples, max_windows)
    spans = []
    if sr == target_sr:
        spans = [_Span(start, start + window_samples, start, 0) for start in starts]
    else:
        # A span starts on a source frame whose time is a whole number of target samples, so the span's resampled
        # output lines up sample for sample with the full clip's.
        step = sr // math.gcd(sr, target_sr)
        margin = math.ceil(_RESAMPLE_MARGIN_SECONDS * sr)
        for start in starts:
            first = max(0, (start * sr // target_sr - margin) // step * step)
            stop = min(frames, -(-(start + window_samples) * sr // target_sr) + margin)
            spans.append(_Span(first, stop, start, start - first * target_sr // sr))
    return _Plan(frames, num_samples, tuple(spans), True)


def _seeks_exactly(sound) -> bool:
    """Whether seeking this file lands where a full decode would (PCM containers, FLAC, Ogg Vorbis/Opus)."""
    if not sound.seekable():
        return False
    if sound.format == "FLAC" or sound.subtype in _EXACT_SEEK_SUBTYPES:
        return True
    return sound.format == "OGG" and sound.subtype in _EXACT_SEEK_OGG_CODECS


class _ShortRead(Exception):
    """The decoder gave fewer frames than planned (the header over-states the length, or the data is corrupt)."""

    def __init__(self, frames: int, reason: str | None) -> None:
        super().__init__(reason)
        self.frames = frames  # the position (in frames) where decoding stopped
        self.reason = reason


class _MonoReader:
    """Reads what ``open_sound()`` (a fresh ``soundfile.SoundFile``) holds in bounded blocks, mixing each block to
    mono float32 (the mean of the channels in float64, as a full decode does), and stops cleanly where the decoder
    fails. A context manager; ``sound`` is the open file."""

    def __init__(self, open_sound: Callable[[], Any]) -> None:
        self._open = open_sound
        self.sound = open_sound()
        self.channels = self.sound.channels
        self.buffer = np.empty((max(1, _BLOCK_SAMPLES // max(1, self.channels)), max(1, self.channels)), np.float32)
        self.position = 0
        self.reason: str | None = None  # why the last `blocks` stopped early on an error
        self._integer_codec = self.sound.subtype not in ("FLOAT", "DOUBLE", "VORBIS", "OPUS", "MPEG_LAYER_III")

    def __enter__(self) -> _MonoReader:
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
                if 0 < landed <= count:
                    self.position = start + landed
                    yield self._mono(self.buffer[: landed if frames is None else min(landed, frames)])
                elif piece > 1 and self._restart_at(start):
                    piece = max(1, piece // 64)
                    sentinel = self._integer_codec
                    continue
                self.reason = _describe(exc)
                return
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
        """Exactly ``frames`` from the current position, or :class:`_ShortRead`."""
        parts = list(self.blocks(frames))
        got = sum(map(len, parts))
        if got < frames:
            raise _ShortRead(self.position, self.reason)
        return np.concatenate(parts) if len(parts) != 1 else parts[0]

    def read_all(self, limit: int | None = None) -> np.ndarray:
        """Everything up to ``limit`` frames (None: what the decoder gives)."""
        parts = list(self.blocks(limit))
        return np.concatenate(parts) if parts else np.zeros(0, np.float32)

    def count(self) -> int:
        """Frames the decoder gives from the current position to where it ends or fails."""
        return sum(len(part) for part in self.blocks())

    def spans_by_seeking(self, spans: Sequence[_Span]) -> list[np.ndarray]:
        out = []
        for span in spans:
            try:
                self.seek(span.first)
            except Exception as exc:  # noqa: BLE001 - e.g. a seek past the end of a truncated FLAC
                raise _ShortRead(span.first, _describe(exc)) from exc
            out.append(self.read(span.stop - span.first))
        return out

    def spans_in_order(self, spans: Sequence[_Span]) -> list[np.ndarray]:
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
            raise _ShortRead(position, self.reason)
        return out


def _windows_from_spans(
    plan: _Plan, spans: list[np.ndarray], sr: int, target_sr: int, window_samples: int, name: str
) -> WindowedWaveform:
    """Validate the decoded spans, resample each, and cut its window out of it."""
    to_mono_float32(np.concatenate(spans), name)  # NaN/inf and silence, over the audio the windows use
    windows = []
    for span, mono in zip(plan.spans, spans, strict=True):
        out = _resample_np(mono, sr, target_sr, name)
        offset = min(span.offset, max(0, len(out) - window_samples))  # the last window ends with the clip
        window = out[offset : offset + window_samples]
        if len(window) != window_samples:
            raise AudioInputError(name, f"could not decode audio: a window came out {len(window)} samples long")
        windows.append(window)
    starts = [span.window_start for span in plan.spans]
    return WindowedWaveform(np.concatenate(windows), starts, window_samples, plan.num_samples, target_sr)


def _decode_sound(
    open_sound: Callable[[], Any],
    name: str,
    target_sr: int,
    window_samples: int | None = None,
    max_windows: int | None = None,
) -> np.ndarray:
    """Decode what ``open_sound()`` (a fresh ``soundfile.SoundFile``) holds: the whole clip, mono float32 at
    ``target_sr``, or with a window layout, only the windows of a long clip (a :class:`WindowedWaveform`).

    A header whose frame count is wrong or unknown is not trusted: the audio is what the decoder gives before it
    ends or fails. Where that differs from the header, a warning says so; a file that decodes to nothing is an
    error. Windows of a long clip are read by seeking where that is exact, else in one pass from the start; when the
    decoder stops short of a planned window, the frames it gives are counted and the windows placed over those."""
    try:
        with _MonoReader(open_sound) as reader:
            sound = reader.sound
            sr, hint = int(sound.samplerate), int(sound.frames)
            if sr <= 0 or sr > _MAX_FILE_SAMPLE_RATE:
                raise AudioInputError(name, f"unsupported sample rate {sr} Hz (expected 1 Hz to 1 MHz)")
            if sound.channels <= 0:
                raise AudioInputError(name, f"invalid channel count {sound.channels}")
            known = 0 <= hint < _UNKNOWN_FRAMES
            if window_samples is None or known:
                plan = _plan(hint if known else _UNKNOWN_FRAMES, sr, target_sr, window_samples, max_windows)
                if not plan.windowed:  # the whole clip: decode what is there
                    mono = reader.read_all(plan.frames if known else None)
                    return _whole_clip(mono, sr, target_sr, hint, reader.reason, name)
                try:
                    if _seeks_exactly(sound):
                        spans = reader.spans_by_seeking(plan.spans)
                    else:
                        spans = reader.spans_in_order(plan.spans)
                    return _windows_from_spans(plan, spans, sr, target_sr, window_samples, name)
                except _ShortRead:
                    pass
        # The header over-states the clip (truncated or corrupt file) or does not give its length: count what
        # decodes, then read the windows of that in one pass (seeking is what fails on such files).
        with _MonoReader(open_sound) as reader:
            frames = reader.count()
            reason = reader.reason
        for _ in range(3):
            if frames == 0:
                raise AudioInputError(name, _nothing_decoded(hint, reason))
            plan = _plan(frames, sr, target_sr, window_samples, max_windows)
            with _MonoReader(open_sound) as reader:
                if not plan.windowed:
                    return _whole_clip(reader.read_all(plan.frames), sr, target_sr, hint, reason, name)
                try:
                    spans = reader.spans_in_order(plan.spans)
                except _ShortRead as short:  # decoded less on this pass: place the windows over that
                    frames, reason = short.frames, short.reason
                    continue
            _warn_short(name, hint, frames, reason)
            return _windows_from_spans(plan, spans, sr, target_sr, window_samples, name)
        raise AudioInputError(name, "could not decode audio: the decoder stops at a different frame on each pass")
    except AudioInputError:
        raise
    except Exception as exc:  # noqa: BLE001 - any decoder (or resampler) failure is this item's error
        raise AudioInputError(name, f"could not decode audio (soundfile: {_describe(exc)})") from exc


def _nothing_decoded(hint: int, reason: str | None) -> str:
    claim = f"; the header claims {hint} frames" if 0 < hint < _UNKNOWN_FRAMES else ""
    if reason:
        return f"could not decode audio (soundfile: {reason}){claim}"
    return f"audio is empty (zero samples decoded){claim}"


def _warn_short(name: str, hint: int, frames: int, reason: str | None) -> None:
    if 0 <= hint < _UNKNOWN_FRAMES and frames != hint:
        why = f"the decoder stopped: {reason}" if reason else "the data ends early"
        warnings.warn(
            f"{name}: the header claims {hint} frames but {frames} could be decoded ({why}); using those",
            UserWarning,
            stacklevel=4,
        )


def _whole_clip(mono: np.ndarray, sr: int, target_sr: int, hint: int, reason: str | None, name: str) -> np.ndarray:
    """A whole decoded clip: validated, resampled. A clip that came out shorter than its header said is kept."""
    if len(mono) == 0:
        raise AudioInputError(name, _nothing_decoded(hint, reason))
    _warn_short(name, hint, len(mono), reason)
    mono = to_mono_float32(mono, name)
    return _resample_np(mono, sr, target_sr, name)


def _decode_file(path: str, name: str, target_sr: int, window_samples: int | None, max_windows: int | None):
    sf = _import_soundfile()
    fd = _open_regular_file(path, name)
    try:

        def open_sound():
            os.lseek(fd, 0, os.SEEK_SET)
            return sf.SoundFile(fd, closefd=False)

        return _decode_sound(open_sound, name, target_sr, window_samples, max_windows)
    finally:
        os.close(fd)


def _decode_bytes(data: bytes, name: str, target_sr: int) -> np.ndarray:
    """Decode encoded bytes in memory (always the whole clip)."""
    sf = _import_soundfile()
    if not data:
        raise AudioInputError(name, "could not decode audio: the bytes are empty")
    return _decode_sound(lambda: sf.SoundFile(io.BytesIO(data)), name, target_sr)


def _check_layout(window_samples: int | None, max_windows: int | None) -> None:
    if (window_samples is None) != (max_windows is None):
        raise ValueError("pass both window_samples and max_windows, or neither")
    if window_samples is not None:
        _check_rate(window_samples, "window_samples")
        _check_rate(max_windows, "max_windows")


def load_audio_file(
    path: str | os.PathLike,
    target_sr: int,
    *,
    window_samples: int | None = None,
    max_windows: int | None = None,
) -> np.ndarray:
    """Decode an audio file with soundfile and return mono float32 at ``target_sr``.

    With ``window_samples`` and ``max_windows`` (the encoder's window layout, at ``target_sr``), a file longer than
    ``max_windows`` windows is decoded only where its windows lie and comes back as a :class:`WindowedWaveform`
    (shorter files come back whole, as without them).

    Raises :class:`AudioInputError` naming the path if it is missing, a broken link or link loop, unreadable, not a
    regular file (directory, FIFO, device, socket: never opened blocking), undecodable, empty, silent, contains
    NaN/inf, or if decoding or resampling fails in any way.
    """
    target_sr = _check_rate(target_sr, "target_sr")
    _check_layout(window_samples, max_windows)
    path_str = os.fspath(path)
    if isinstance(path_str, bytes):
        path_str = os.fsdecode(path_str)
    return _decode_file(path_str, path_str, target_sr, window_samples, max_windows)


def _from_array(array: Any, sr: int | None, target_sr: int, name: str) -> np.ndarray:
    if isinstance(array, WindowedWaveform) and array.has_layout:  # the windows of a long clip, as decoded
        if sr is not None and sr != array.sampling_rate:
            raise AudioInputError(name, f"windowed waveform is at {array.sampling_rate} Hz, not sampling_rate={sr}")
        if array.sampling_rate != target_sr:
            raise AudioInputError(
                name, f"windowed waveform is at {array.sampling_rate} Hz; it cannot be resampled to {target_sr} Hz"
            )
        return array.copy_with_layout()
    if sr is None:
        logger.warning_once(
            f"No sampling_rate was given for a raw audio array; assuming it is already at {target_sr} Hz. "
            "Pass `sampling_rate` to avoid silent errors."
        )
        sr = target_sr
    try:
        sr = _check_rate(sr, "sampling_rate")
    except ValueError as exc:
        raise AudioInputError(name, str(exc)) from None
    mono = to_mono_float32(array, name)
    return _resample_np(mono, sr, target_sr, name)


def _from_decoder(decoder: Any, target_sr: int, name: str) -> np.ndarray:
    """Handle a torchcodec ``AudioDecoder`` (what ``datasets>=4`` yields for Audio columns), by duck typing."""
    try:
        samples = decoder.get_all_samples()
        data, sr = samples.data, int(samples.sample_rate)
    except Exception as exc:  # noqa: BLE001 - any decoder failure is an input problem
        raise AudioInputError(name, f"could not decode audio ({type(exc).__name__}: {exc})") from exc
    if isinstance(data, torch.Tensor) and data.dim() == 2 and data.shape[0] > 1:
        data = data.double().mean(dim=0)  # layout known: (channels, samples)
    elif isinstance(data, torch.Tensor) and data.dim() == 2:
        data = data[0]
    return _from_array(data, sr, target_sr, name)


def load_audio(
    item: Any,
    target_sr: int,
    sampling_rate: int | None = None,
    name: str = "audio",
    *,
    window_samples: int | None = None,
    max_windows: int | None = None,
) -> np.ndarray:
    """Load one audio item as mono float32 at ``target_sr``.

    ``item`` may be a path (str/PathLike), encoded bytes, a numpy array / torch tensor (at ``sampling_rate``; if that
    is None a one-time warning is issued and ``target_sr`` is assumed), or a ``datasets``-style dict
    ``{"array", "sampling_rate"[, "path"]}`` / ``{"bytes"[, "path"]}`` / ``{"path"}``. A dict's ``"path"`` is used as
    the item's name. ``window_samples`` / ``max_windows`` apply to files (see :func:`load_audio_file`); arrays and
    bytes are always taken whole. Raises :class:`AudioInputError` for bad input.
    """
    target_sr = _check_rate(target_sr, "target_sr")
    _check_layout(window_samples, max_windows)
    layout = {"window_samples": window_samples, "max_windows": max_windows}
    if isinstance(item, (str, os.PathLike)):
        return load_audio_file(item, target_sr, **layout)
    if isinstance(item, (bytes, bytearray, memoryview)):
        return _decode_bytes(bytes(item), name, target_sr)
    if isinstance(item, (np.ndarray, torch.Tensor)):
        return _from_array(item, sampling_rate, target_sr, name)
    if isinstance(item, dict):
        path = item.get("path")
        has_path = isinstance(path, (str, os.PathLike)) and bool(os.fspath(path))
        item_name = os.fspath(path) if has_path else name
        if item.get("array") is not None:
            sr = item.get("sampling_rate")
            if sr is None:
                sr = sampling_rate
            elif sampling_rate is not None and sr != sampling_rate:
                raise AudioInputError(
                    item_name, f"dict says sampling_rate={sr!r} but sampling_rate={sampling_rate!r} was passed"
                )
            return _from_array(item["array"], sr, target_sr, item_name)
        if item.get("bytes") is not None:
            data = item["bytes"]
            if not isinstance(data, (bytes, bytearray, memoryview)):
                raise AudioInputError(item_name, f"'bytes' must be bytes, got {type(data).__name__}")
            return _decode_bytes(bytes(data), item_name, target_sr)
        if has_path:
            return load_audio_file(path, target_sr, **layout)
        raise AudioInputError(
            name, f"dict input needs a non-empty 'array', 'bytes' or 'path' key, got keys {sorted(map(str, item))}"
        )
    if hasattr(item, "get_all_samples"):
        return _from_decoder(item, target_sr, name)
    raise AudioInputError(
        name,
        f"unsupported input type {type(item).__name__} (expected a path, bytes, numpy array, torch tensor or dict)",
    )


def load_audio_batch(
    items: Sequence[Any],
    target_sr: int,
    sampling_rate: int | Sequence[int | None] | None = None,
    *,
    window_samples: int | None = None,
    max_windows: int | None = None,
) -> list[np.ndarray | AudioInputError]:
    """Load each item with :func:`load_audio`; a bad item yields its :class:`AudioInputError` in its slot.

    ``sampling_rate`` applies to array items: one value for all, or one per item. Items are named by their path when
    they are files, else ``f"audio[{i}]"``. ``window_samples`` / ``max_windows``: see :func:`load_audio_file`.
    """
    target_sr = _check_rate(target_sr, "target_sr")
    _check_layout(window_samples, max_windows)
    if isinstance(items, (str, os.PathLike, bytes, dict, np.ndarray, torch.Tensor)):
        raise TypeError(f"items must be a list of audio items, got a single {type(items).__name__}")
    items = list(items)
    if isinstance(sampling_rate, (list, tuple)):
        if len(sampling_rate) != len(items):
            raise ValueError(f"got {len(sampling_rate)} sampling rates for {len(items)} items")
        rates = list(sampling_rate)
    else:
        rates = [sampling_rate] * len(items)

    results: list[np.ndarray | AudioInputError] = []
    for i, (item, sr) in enumerate(zip(items, rates, strict=True)):
        try:
            results.append(
                load_audio(item, target_sr, sr, f"audio[{i}]", window_samples=window_samples, max_windows=max_windows)
            )
        except AudioInputError as exc:
            results.append(exc)
    return results
