"""Audio loading, validation and resampling for PairCap.

This module is shipped as Hugging Face remote code (copied flat into a model repo), so it only imports the standard
library, ``numpy``, ``torch`` and ``transformers`` at top level. ``soundfile`` is imported lazily, only when a file or
encoded bytes must be decoded.

Every bad input raises :class:`AudioInputError`, whose message starts with the item's name (a file path, or e.g.
``"audio[3]"``) followed by ``": "`` and the problem.
"""

from __future__ import annotations

import functools
import io
import math
import os
import warnings
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

__all__ = [
    "AudioInputError",
    "load_audio",
    "load_audio_batch",
    "load_audio_file",
    "resample",
    "to_mono_float32",
]

# torchaudio's "kaiser_best" settings.
_LOWPASS_FILTER_WIDTH = 64
_ROLLOFF = 0.9475
_KAISER_BETA = 14.769656459379492
# Refuse to build polyphase kernels with more elements than this (rates whose gcd is tiny, e.g. 44100 -> 16001).
_MAX_KERNEL_ELEMENTS = 1 << 25
# A channel axis longer than this is not believed to be one.
_MAX_CHANNELS = 16

_INT_PCM_SCALE = {
    np.dtype(np.int8): (0.0, 128.0),
    np.dtype(np.uint8): (128.0, 128.0),
    np.dtype(np.int16): (0.0, 32768.0),
    np.dtype(np.int32): (0.0, 2.0**31),
}

_warned_missing_sr = False


class AudioInputError(ValueError):
    """Bad audio input. The message is ``f"{item}: {problem}"``; ``.item`` is the item's name."""

    def __init__(self, item: str, problem: str) -> None:
        super().__init__(f"{item}: {problem}")
        self.item = item
        self.problem = problem

    def __reduce__(self):  # keep picklable (DataLoader workers) despite the two-argument constructor
        return (type(self), (self.item, self.problem))


# --------------------------------------------------------------------------------------------------------------------
# Resampling
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


@functools.lru_cache(maxsize=16)
def _sinc_kernel_f64(orig: int, new: int) -> tuple[torch.Tensor, int]:
    """Kaiser-windowed sinc polyphase kernels (float64, CPU) for gcd-reduced rates; shape ``(new, 1, 2*width+orig)``."""
    lpw = _LOWPASS_FILTER_WIDTH
    base_freq = min(orig, new) * _ROLLOFF
    width = math.ceil(lpw * orig / base_freq)
    n_elements = new * (2 * width + orig)
    if n_elements > _MAX_KERNEL_ELEMENTS:
        raise ValueError(
            f"resampling ratio {orig}:{new} (after gcd reduction) needs a {n_elements}-element kernel; "
            "use sample rates with a larger common divisor"
        )
    idx = torch.arange(-width, width + orig, dtype=torch.float64)
    phase = torch.arange(new, dtype=torch.float64).unsqueeze(1)
    # t: distance (in units of the filter's zero crossings) between input sample and output instant, per phase.
    t = (idx / orig - phase / new) * base_freq
    t = t.clamp(-lpw, lpw)
    beta = torch.tensor(_KAISER_BETA, dtype=torch.float64)
    window = torch.i0(beta * torch.sqrt(1.0 - (t / lpw) ** 2)) / torch.i0(beta)
    t = t * math.pi
    sinc = torch.where(t == 0, torch.ones_like(t), torch.sin(t) / torch.where(t == 0, torch.ones_like(t), t))
    kernel = (sinc * window * (base_freq / orig)).unsqueeze(1).contiguous()
    return kernel, width


@functools.lru_cache(maxsize=16)
def _sinc_kernel(orig: int, new: int, dtype: torch.dtype, device: torch.device) -> tuple[torch.Tensor, int]:
    """:func:`_sinc_kernel_f64` cast to ``dtype`` and moved to ``device`` (cached per dtype/device)."""
    kernel, width = _sinc_kernel_f64(orig, new)
    return kernel.to(device=device, dtype=dtype), width


def resample(waveform: torch.Tensor, orig_sr: int, target_sr: int) -> torch.Tensor:
    """Band-limited (Kaiser-windowed sinc, polyphase) resampling over the last dimension.

    Same algorithm as ``torchaudio.functional.resample`` with ``resampling_method="sinc_interp_kaiser"``,
    ``lowpass_filter_width=64``, ``rolloff=0.9475``, ``beta=14.769656459379492`` ("kaiser_best"). Works on any device
    and any leading batch dims for floating tensors; output length is ``ceil(n * target_sr / orig_sr)``. If the rates
    are equal the input is returned unchanged.
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

    g = math.gcd(orig_sr, target_sr)
    orig, new = orig_sr // g, target_sr // g
    kernel, width = _sinc_kernel(orig, new, waveform.dtype, waveform.device)

    shape = waveform.shape
    length = shape[-1]
    target_length = -(-length * new // orig)  # ceil(length * new / orig)
    n_signals = math.prod(shape[:-1])
    if length == 0 or n_signals == 0:
        return waveform.new_zeros(*shape[:-1], target_length)
    x = waveform.reshape(n_signals, 1, length)
    x = torch.nn.functional.pad(x, (width, width + orig))
    if x.dtype == torch.float64 and x.device.type == "cpu":
        # CPU conv1d has no fast float64 path (~30x slower); the same polyphase sum as chunked frame @ kernel GEMMs.
        frames = x[:, 0].unfold(-1, kernel.shape[-1], orig)  # (batch, n_frames, taps), a strided view
        taps_by_phase = kernel[:, 0].T  # (taps, new)
        step = max(1, (1 << 22) // (kernel.shape[-1] * n_signals))  # bound the per-chunk copy to ~32 MB
        y = torch.cat([frames[:, s : s + step] @ taps_by_phase for s in range(0, frames.shape[1], step)], dim=1)
    else:
        y = torch.nn.functional.conv1d(x, kernel, stride=orig).transpose(1, 2)  # (batch, n_frames, new)
    y = y.reshape(x.shape[0], -1)
    y = y[:, :target_length]
    return y.reshape(*shape[:-1], target_length)


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
# Loading
# --------------------------------------------------------------------------------------------------------------------


def _import_soundfile():
    try:
        import soundfile
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise ImportError("Decoding audio files requires the `soundfile` package: pip install soundfile") from exc
    return soundfile


def _resample_np(mono: np.ndarray, orig_sr: int, target_sr: int) -> np.ndarray:
    """Resample a 1-D float32 array (through float64 torch) and return float32 numpy."""
    if orig_sr == target_sr:
        return mono
    out = resample(torch.from_numpy(mono.astype(np.float64)), orig_sr, target_sr)
    return out.numpy().astype(np.float32)


def _decode(source: str | io.BytesIO, name: str, target_sr: int) -> np.ndarray:
    """Decode a file path or file-like with soundfile, mono-mix, validate and resample."""
    sf = _import_soundfile()
    errors: tuple[type[BaseException], ...] = (RuntimeError, OSError, TypeError, ValueError, EOFError)
    if hasattr(sf, "SoundFileError"):
        errors = (*errors, sf.SoundFileError)
    try:
        data, sr = sf.read(source, dtype="float32", always_2d=True)
    except errors as exc:
        reason = str(exc).strip() or type(exc).__name__
        raise AudioInputError(name, f"could not decode audio (soundfile: {reason})") from exc
    if sr is None or sr <= 0:
        raise AudioInputError(name, f"decoded audio has an invalid sample rate {sr!r}")
    # soundfile's layout is known: (frames, channels).
    mono = data.mean(axis=1, dtype=np.float64) if data.shape[1] > 1 else data[:, 0]
    mono = to_mono_float32(np.asarray(mono), name)
    return _resample_np(mono, int(sr), target_sr)


def load_audio_file(path: str | os.PathLike, target_sr: int) -> np.ndarray:
    """Decode an audio file with soundfile and return mono float32 at ``target_sr``.

    Raises :class:`AudioInputError` naming the path if it is missing, a directory, undecodable, empty, silent or
    contains NaN/inf.
    """
    target_sr = _check_rate(target_sr, "target_sr")
    path_str = os.fspath(path)
    if isinstance(path_str, bytes):
        path_str = os.fsdecode(path_str)
    if not os.path.exists(path_str):
        raise AudioInputError(path_str, "file not found")
    if os.path.isdir(path_str):
        raise AudioInputError(path_str, "is a directory, not an audio file")
    return _decode(path_str, path_str, target_sr)


def _from_array(array: Any, sr: int | None, target_sr: int, name: str) -> np.ndarray:
    global _warned_missing_sr
    if sr is None:
        if not _warned_missing_sr:
            _warned_missing_sr = True
            warnings.warn(
                f"No sampling_rate was given for a raw audio array; assuming it is already at {target_sr} Hz. "
                "Pass `sampling_rate` to avoid silent errors.",
                UserWarning,
                stacklevel=4,
            )
        sr = target_sr
    try:
        sr = _check_rate(sr, "sampling_rate")
    except ValueError as exc:
        raise AudioInputError(name, str(exc)) from None
    mono = to_mono_float32(array, name)
    return _resample_np(mono, sr, target_sr)


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


def load_audio(item: Any, target_sr: int, sampling_rate: int | None = None, name: str = "audio") -> np.ndarray:
    """Load one audio item as mono float32 at ``target_sr``.

    ``item`` may be a path (str/PathLike), encoded bytes, a numpy array / torch tensor (at ``sampling_rate``; if that
    is None a one-time warning is issued and ``target_sr`` is assumed), or a ``datasets``-style dict
    ``{"array", "sampling_rate"[, "path"]}`` / ``{"bytes"[, "path"]}`` / ``{"path"}``. A dict's ``"path"`` is used as
    the item's name. Raises :class:`AudioInputError` for bad input.
    """
    target_sr = _check_rate(target_sr, "target_sr")
    if isinstance(item, (str, os.PathLike)):
        return load_audio_file(item, target_sr)
    if isinstance(item, (bytes, bytearray, memoryview)):
        return _decode(io.BytesIO(bytes(item)), name, target_sr)
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
            return _decode(io.BytesIO(bytes(data)), item_name, target_sr)
        if has_path:
            return load_audio_file(path, target_sr)
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
) -> list[np.ndarray | AudioInputError]:
    """Load each item with :func:`load_audio`; a bad item yields its :class:`AudioInputError` in its slot.

    ``sampling_rate`` applies to array items: one value for all, or one per item. Items are named by their path when
    they are files, else ``f"audio[{i}]"``.
    """
    target_sr = _check_rate(target_sr, "target_sr")
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
            results.append(load_audio(item, target_sr, sampling_rate=sr, name=f"audio[{i}]"))
        except AudioInputError as exc:
            results.append(exc)
    return results
