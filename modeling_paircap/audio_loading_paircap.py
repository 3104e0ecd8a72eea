"""Loading audio for PairCap: a path, encoded bytes, an array or tensor, a ``datasets``-style dict or a decoder
object, as mono float32 at the processor's rate; in a batch, a bad item gives its :class:`AudioInputError` in its slot.

Shipped as Hugging Face remote code (copied flat into a model repo): imports only the standard library, ``numpy``,
``torch``, ``transformers`` and this package. Decoding is ``audio_decoding_paircap`` (files are opened only if they
are regular files; a long file is decoded only where its windows lie, within a sample and time budget).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from transformers.utils import logging

from .audio_arrays_paircap import AudioInputError, check_rate, resample_mono, to_mono_float32
from .audio_decoding_paircap import decode_bytes, decode_file
from .audio_windows_paircap import WindowedWaveform

__all__ = ["load_audio", "load_audio_batch", "load_audio_file"]

logger = logging.get_logger(__name__)


def _check_layout(window_samples: int | None, max_windows: int | None) -> None:
    if (window_samples is None) != (max_windows is None):
        raise ValueError("pass both window_samples and max_windows, or neither")
    if window_samples is not None:
        check_rate(window_samples, "window_samples")
        check_rate(max_windows, "max_windows")


def load_audio_file(
    path: str | os.PathLike,
    target_sr: int,
    *,
    window_samples: int | None = None,
    max_windows: int | None = None,
) -> np.ndarray:
    """Decode an audio file (soundfile, else PyAV for AAC/M4A, WebM and other ffmpeg formats) and return mono
    float32 at ``target_sr``.

    With ``window_samples`` and ``max_windows`` (the encoder's window layout, at ``target_sr``), a file longer than
    ``max_windows`` windows is decoded only where its windows lie and comes back as a :class:`WindowedWaveform`
    (shorter files come back whole, as without them). A file whose header states no length is decoded for at most 20
    times the span of its windows (a warning says when audio past that is not used); without a layout, a clip may be
    at most an hour long. Decoding has a CPU time budget per file (``audio_reader_paircap.DecodeBudget``).

    Raises :class:`AudioInputError` naming the path if it is missing, a broken link or link loop, unreadable, not a
    regular file (directory, FIFO, device, socket: never opened blocking), undecodable, empty, silent, contains
    NaN/inf, or if decoding or resampling fails in any way.
    """
    target_sr = check_rate(target_sr, "target_sr")
    _check_layout(window_samples, max_windows)
    path_str = os.fspath(path)
    if isinstance(path_str, bytes):
        path_str = os.fsdecode(path_str)
    return decode_file(path_str, path_str, target_sr, window_samples, max_windows)


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
        sr = check_rate(sr, "sampling_rate")
    except ValueError as exc:
        raise AudioInputError(name, str(exc)) from None
    mono = to_mono_float32(array, name)
    return resample_mono(mono, sr, target_sr, name)


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
    the item's name. ``window_samples`` / ``max_windows`` apply to files and bytes (see :func:`load_audio_file`);
    arrays are always taken whole. Raises :class:`AudioInputError` for bad input.
    """
    target_sr = check_rate(target_sr, "target_sr")
    _check_layout(window_samples, max_windows)
    layout = {"window_samples": window_samples, "max_windows": max_windows}
    if isinstance(item, (str, os.PathLike)):
        return load_audio_file(item, target_sr, **layout)
    if isinstance(item, (bytes, bytearray, memoryview)):
        return decode_bytes(bytes(item), name, target_sr, window_samples, max_windows)
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
            return decode_bytes(bytes(data), item_name, target_sr, window_samples, max_windows)
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
    target_sr = check_rate(target_sr, "target_sr")
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
