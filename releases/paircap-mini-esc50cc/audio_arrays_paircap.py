"""Audio arrays for PairCap: the error every bad audio item raises, validation to mono float32, and soxr resampling.

Shipped as Hugging Face remote code (copied flat into a model repo): the standard library, ``numpy`` and ``torch`` at
top level; ``soxr`` is imported only when a rate must change.

Every bad input raises :class:`AudioInputError`, whose message starts with the item's name (a file path, or e.g.
``"audio[3]"``) followed by ``": "`` and the problem. Any resampler failure of one item is converted to one, so a
batch, a knowledge-base build or a training epoch only loses that item.
"""

from __future__ import annotations

import importlib
import math
from typing import Any

import numpy as np
import torch

__all__ = ["AudioInputError", "resample", "resampled_length", "to_mono_float32"]

# soxr's "HQ" recipe: 20-bit precision, passband to 91 % of the lower Nyquist, linear phase.
SOXR_QUALITY = "HQ"
# A channel axis longer than this is not believed to be one.
_MAX_CHANNELS = 16

_INT_PCM_SCALE = {
    np.dtype(np.int8): (0.0, 128.0),
    np.dtype(np.uint8): (128.0, 128.0),
    np.dtype(np.int16): (0.0, 32768.0),
    np.dtype(np.int32): (0.0, 2.0**31),
}


class AudioInputError(ValueError):
    """Bad audio input. The message is ``f"{item}: {problem}"``; ``.item`` is the item's name."""

    def __init__(self, item: str, problem: str) -> None:
        super().__init__(f"{item}: {problem}")
        self.item = item
        self.problem = problem

    def __reduce__(self):  # keep picklable (DataLoader workers) despite the two-argument constructor
        return (type(self), (self.item, self.problem))


def describe_error(exc: BaseException) -> str:
    """A library exception as one short phrase (libsndfile's or ffmpeg's own message, without soundfile's "Error
    opening 3:" or PyAV's errno and file name)."""
    text = getattr(exc, "error_string", None) or getattr(exc, "strerror", None) or str(exc).strip()
    return text or type(exc).__name__


def check_rate(rate: Any, what: str) -> int:
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


def import_optional(module: str, purpose: str):
    """Import a package only some inputs need (soxr, soundfile), or raise an ImportError saying how to install it."""
    try:
        return importlib.import_module(module)
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise ImportError(f"{purpose} requires the `{module}` package: pip install {module}") from exc


# --------------------------------------------------------------------------------------------------------------------
# Resampling (soxr)
# --------------------------------------------------------------------------------------------------------------------


def resampled_length(num_samples: int, orig_sr: int, target_sr: int) -> int:
    """Samples soxr gives for ``num_samples`` at ``orig_sr`` resampled to ``target_sr``: the rounded exact length,
    computed in double precision as soxr does (``(size_t)(n * out / in + .5)``)."""
    if orig_sr == target_sr:
        return int(num_samples)
    return int(float(num_samples) * float(target_sr) / float(orig_sr) + 0.5)


def _soxr_resample(x: np.ndarray, orig_sr: int, target_sr: int) -> np.ndarray:
    """soxr over axis 0 of a float32/float64 array of shape ``(T,)`` or ``(T, C)``."""
    return import_optional("soxr", "Resampling audio").resample(x, orig_sr, target_sr, quality=SOXR_QUALITY)


def resample(waveform: torch.Tensor, orig_sr: int, target_sr: int) -> torch.Tensor:
    """Band-limited resampling over the last dimension with soxr ("HQ": linear phase, passband to 91 % of the lower
    Nyquist, 20-bit precision).

    Works for any pair of positive integer rates (also co-prime ones such as 16001 -> 48000), any leading batch dims
    and any device (the computation runs on the CPU; the result goes back to the input's device and dtype). Output
    length is ``round(n * target_sr / orig_sr)`` (:func:`resampled_length`). Equal rates return the input unchanged.
    """
    orig_sr = check_rate(orig_sr, "orig_sr")
    target_sr = check_rate(target_sr, "target_sr")
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


def resample_mono(mono: np.ndarray, orig_sr: int, target_sr: int, name: str) -> np.ndarray:
    """Resample a 1-D float32 array with soxr; any resampler failure becomes an :class:`AudioInputError`."""
    if orig_sr == target_sr:
        return mono
    import_optional("soxr", "Resampling audio")  # a missing package is the environment's problem, not this item's
    try:
        out = _soxr_resample(np.ascontiguousarray(mono, dtype=np.float32), orig_sr, target_sr)
    except Exception as exc:  # noqa: BLE001 - whatever the resampler raises is this item's failure
        raise AudioInputError(
            name, f"could not resample {orig_sr} Hz -> {target_sr} Hz ({type(exc).__name__}: {describe_error(exc)})"
        ) from exc
    return np.asarray(out, dtype=np.float32)


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
