"""Unlabelled recordings for distilling the CLAP stand-in (`--extra-audio DIR`): any audio the AudioSet teacher can
label adds acoustic variety that the few training clips lack. Nothing here needs a caption.

Files are found under the given folders (sorted, recursively), each cut into at most `per_file` 5 s segments spread
over it; segments under half a second or near silence are dropped, and a file that does not decode is skipped with a
warning naming it. A symbolic link is followed only where its target lies inside one of the folders or a system data
folder of installed packages (`/usr/share`): nothing a folder names reaches anywhere else.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from modeling_paircap.audio_loading_paircap import AudioInputError, load_audio_file
from recipes.mini.local.augmented_clips import CLIP, RATE, rms

logger = logging.getLogger(__name__)

AUDIO_SUFFIXES = frozenset({".wav", ".flac", ".ogg", ".oga", ".opus", ".mp3"})
SHORTEST = RATE // 2
SILENT_RMS = 1e-4
TRUSTED_LINK_TARGETS = (Path("/usr/share"),)


def audio_files(folders: Sequence[str | Path]) -> list[Path]:
    """Every audio file under `folders`, sorted, links kept only where they resolve inside a folder or
    `TRUSTED_LINK_TARGETS`."""
    roots = [Path(folder).resolve() for folder in folders]
    for root in roots:
        if not root.is_dir():
            raise FileNotFoundError(f"{root}: no such folder of extra audio")
    allowed = roots + [target.resolve() for target in TRUSTED_LINK_TARGETS]
    found = []
    for root in roots:
        for path in sorted(root.rglob("*")):
            if path.suffix.lower() not in AUDIO_SUFFIXES:
                continue
            target = path.resolve()
            if target.is_file() and any(target.is_relative_to(base) for base in allowed):
                found.append(path)
            elif target.is_file():
                logger.warning("%s: links outside the extra-audio folders, skipped", path)
    return found


def segments(wave: np.ndarray, per_file: int) -> list[np.ndarray]:
    """Up to `per_file` 5 s pieces evenly spread over `wave` (a shorter wave whole), less the short and silent."""
    if len(wave) <= CLIP:
        pieces = [wave]
    else:
        starts = np.linspace(0, len(wave) - CLIP, num=min(per_file, len(wave) // CLIP + 1)).astype(int)
        pieces = [wave[start : start + CLIP] for start in dict.fromkeys(starts)]
    return [piece for piece in pieces if len(piece) >= SHORTEST and rms(piece) >= SILENT_RMS]


def extra_segments(folders: Sequence[str | Path], limit: int, per_file: int = 2, seed: int = 0) -> list[np.ndarray]:
    """At most `limit` segments (at `RATE`) from the audio files under `folders`, files taken in a seeded order."""
    files = audio_files(folders)
    order = np.random.default_rng(seed).permutation(len(files))
    found: list[np.ndarray] = []
    for index in order:
        if len(found) >= limit:
            break
        try:
            wave = load_audio_file(files[index], RATE)
        except AudioInputError as error:
            logger.warning("skipped: %s", error)
            continue
        found.extend(segments(wave, per_file)[: limit - len(found)])
    return found
