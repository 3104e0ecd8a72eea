"""Per-clip pooled audio tokens of a knowledge base: one safetensors file, read on demand through a memory map.

Layout of ``tokens.safetensors``: ``tokens`` `(total_tokens, token_dim)` float16, the pooled (pre-projector) encoder
tokens of every clip one after the other; ``offsets`` `(num_clips + 1,)` int64, clip ``c`` owning rows
``offsets[c]:offsets[c + 1]`` (none for a clip whose audio could not be loaded or a text-only entry); its metadata holds
the token encoder's fingerprint. The file is written in one streaming pass (`write_clip_tokens`), so a KB's tokens never
have to fit in memory, and opened with `safetensors.safe_open`, which checks the header against the file size.
"""

from __future__ import annotations

import json
import os
import struct
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np
import torch

from .file_io_paircap import write_atomic

TOKENS_FILE = "tokens.safetensors"
FINGERPRINT_KEY = "token_fingerprint"


class ClipTokenStore:
    """The clip tokens of a knowledge base, memory-mapped; `get(clips)` returns one `(n, token_dim)` tensor per clip."""

    def __init__(self, path: str | os.PathLike, num_clips: int | None = None):
        from safetensors import safe_open

        self.path = Path(path)
        try:
            self._file = safe_open(str(self.path), framework="pt")
        except Exception as error:  # safetensors raises its own error types for bad headers and truncated files
            raise ValueError(f"{self.path}: not a readable token file ({error})") from None
        names = set(self._file.keys())
        if names != {"tokens", "offsets"}:
            raise ValueError(f"{self.path}: expected the tensors tokens and offsets, found {sorted(names)}")
        self.metadata = self._file.metadata() or {}
        self.offsets = self._file.get_tensor("offsets").numpy()
        self._tokens = self._file.get_slice("tokens")
        total, self.token_dim = self._tokens.get_shape()
        offsets = self.offsets
        if (
            offsets.ndim != 1
            or len(offsets) < 1
            or offsets[0] != 0
            or offsets[-1] != total
            or (np.diff(offsets) < 0).any()
        ):
            raise ValueError(f"{self.path}: the clip offsets do not partition the {total} token rows")
        if num_clips is not None and len(offsets) - 1 != num_clips:
            raise ValueError(
                f"{self.path}: holds tokens of {len(offsets) - 1} clips, the knowledge base has {num_clips}"
            )

    def __reduce__(self):  # reopened by path, e.g. in DataLoader workers
        return type(self), (self.path, len(self))

    @property
    def fingerprint(self) -> str | None:
        """The fingerprint of the token encoder that made these tokens."""
        return self.metadata.get(FINGERPRINT_KEY)

    def __len__(self) -> int:
        return len(self.offsets) - 1

    def num_tokens(self, clip: int) -> int:
        return int(self.offsets[clip + 1] - self.offsets[clip])

    def get(self, clips: Sequence[int]) -> list[torch.Tensor]:
        """The float16 tokens of each clip, read from the file (only those rows)."""
        return [self._tokens[int(self.offsets[clip]) : int(self.offsets[clip + 1])] for clip in clips]

    def to(self, device) -> DeviceClipTokens:
        """All tokens as one tensor on `device`, sliced per clip (no file reads at generate time)."""
        return DeviceClipTokens(self._file.get_tensor("tokens").to(device), self.offsets)


class DeviceClipTokens:
    """Clip tokens held as one tensor on a device, with the same `get` as `ClipTokenStore`."""

    def __init__(self, tokens: torch.Tensor, offsets: np.ndarray):
        self.tokens = tokens
        self.offsets = offsets

    def __len__(self) -> int:
        return len(self.offsets) - 1

    def get(self, clips: Sequence[int]) -> list[torch.Tensor]:
        return [self.tokens[int(self.offsets[clip]) : int(self.offsets[clip + 1])] for clip in clips]


def write_clip_tokens(
    path: str | os.PathLike,
    counts: Sequence[int],
    clip_tokens: Iterable[np.ndarray | torch.Tensor],
    token_dim: int,
    fingerprint: str,
) -> Path:
    """
    Stream clip tokens into a safetensors file: `counts[c]` token rows for clip c, given in clip order by `clip_tokens`
    (arrays of shape `(counts[c], token_dim)`, written as float16). Written to a temporary file and renamed, so `path`
    is either the old file or the complete new one.
    """
    path = Path(path)
    offsets = np.concatenate([[0], np.cumsum(np.asarray(counts, dtype=np.int64))]).astype(np.int64)
    token_bytes = int(offsets[-1]) * token_dim * 2
    header = {
        "__metadata__": {FINGERPRINT_KEY: fingerprint, "format": "paircap-clip-tokens"},
        "tokens": {"dtype": "F16", "shape": [int(offsets[-1]), token_dim], "data_offsets": [0, token_bytes]},
        "offsets": {
            "dtype": "I64",
            "shape": [len(offsets)],
            "data_offsets": [token_bytes, token_bytes + offsets.nbytes],
        },
    }
    encoded = json.dumps(header, separators=(",", ":")).encode()
    encoded += b" " * (-len(encoded) % 8)

    def write(temporary: Path) -> None:
        written = 0
        with open(temporary, "wb") as handle:
            handle.write(struct.pack("<Q", len(encoded)) + encoded)
            for clip, tokens in enumerate(clip_tokens):
                array = tokens.detach().cpu().numpy() if isinstance(tokens, torch.Tensor) else np.asarray(tokens)
                array = np.ascontiguousarray(array, dtype=np.float16).reshape(-1, token_dim)
                if len(array) != offsets[clip + 1] - offsets[clip]:
                    raise ValueError(
                        f"clip {clip}: {len(array)} token rows, {offsets[clip + 1] - offsets[clip]} announced"
                    )
                handle.write(array.tobytes())
                written = clip + 1
            if written != len(offsets) - 1:
                raise ValueError(f"got the tokens of {written} clips, {len(offsets) - 1} announced")
            handle.write(offsets.astype("<i8").tobytes())

    write_atomic(path, write)
    return path
