"""
Where a knowledge-base clip's audio may be read from: the one containment rule for every reader of a KB's clip table
(pass 2 encoding stale tokens, `paircap kb tokens`, the demo's neighbour players).

A KB is untrusted input (its sha256 manifest is integrity, not authentication), and its clip table names files. So a
recorded location is read only when:

- it is relative to a named root (`audio_root`) that the caller mapped to a folder, and the file it names, after every
  symbolic link is resolved, lies inside that folder (`../` escapes, absolute paths under a root and links out of the
  root are refused); or it is an absolute path (empty `audio_root`) and the caller opted in by mapping
  `ABSOLUTE_ROOT` to a folder, inside which it must then resolve (`{"absolute": "/"}` allows any);
- it is a regular file whose first bytes are those of an audio container (WAV, FLAC, Ogg, MP3/AAC, M4A, AIFF, WebM,
  AU, CAF: `sniff_audio`).

An http(s) URL recorded without a root is returned as it is: it is fetched by whoever plays it, not read here.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Mapping
from pathlib import Path, PurePosixPath, PureWindowsPath
from urllib.parse import urlparse

__all__ = ["ABSOLUTE_ROOT", "AudioLocationError", "audio_file_format", "clip_audio_location", "sniff_audio"]

ABSOLUTE_ROOT = "absolute"  # the root name that opts in to a KB's absolute locations (mapped to the folder allowed)
URL_SCHEMES = ("http", "https")
SNIFF_BYTES = 12
# The first bytes of the audio containers read: a file matching none is refused.
AUDIO_PREFIXES = {
    b"fLaC": "flac",
    b"OggS": "ogg",
    b"ID3": "mp3",
    b"\x1a\x45\xdf\xa3": "webm",
    b".snd": "au",
    b"caff": "caf",
}
CHUNKED_FORMS = {
    (b"RIFF", b"WAVE"): "wav",
    (b"RF64", b"WAVE"): "wav",
    (b"FORM", b"AIFF"): "aiff",
    (b"FORM", b"AIFC"): "aiff",
}
MP4_AUDIO_BRANDS = frozenset({b"M4A ", b"M4B ", b"mp41", b"mp42", b"isom", b"iso2", b"dash", b"3gp4", b"3gp5"})
MEDIA_TYPES = {
    "wav": "audio/wav",
    "flac": "audio/flac",
    "ogg": "audio/ogg",
    "mp3": "audio/mpeg",
    "aac": "audio/aac",
    "m4a": "audio/mp4",
    "aiff": "audio/aiff",
    "webm": "audio/webm",
    "au": "audio/basic",
    "caf": "audio/x-caf",
}


class AudioLocationError(ValueError):
    """A clip's recorded audio location that is refused: it names the location and the reason."""


def sniff_audio(head: bytes) -> str | None:
    """The audio format (a `MEDIA_TYPES` key) whose container these first bytes begin, or None."""
    for magic, kind in AUDIO_PREFIXES.items():
        if head.startswith(magic):
            return kind
    if (head[:4], head[8:12]) in CHUNKED_FORMS:
        return CHUNKED_FORMS[head[:4], head[8:12]]
    if head[4:8] == b"ftyp" and head[8:12] in MP4_AUDIO_BRANDS:
        return "m4a"
    if len(head) >= 3 and head[0] == 0xFF:  # a bare MPEG frame: layer III (not the reserved version), or AAC ADTS
        if head[1] & 0xE6 == 0xE2 and head[1] & 0x18 != 0x08 and head[2] >> 4 != 0xF and head[2] & 0x0C != 0x0C:
            return "mp3"
        if head[1] & 0xF6 == 0xF0:
            return "aac"
    return None


def clip_audio_location(root: str | None, path: str | None, roots: Mapping[str, str | os.PathLike]) -> str | None:
    """
    The checked location of a clip recorded as (`root`, `path`): the resolved path of an audio file inside its root's
    folder, an http(s) URL (recorded without a root), or None when nothing is recorded or the caller gave no folder
    for its root (`ABSOLUTE_ROOT` for an absolute path).

    Raises:
        AudioLocationError: the location escapes its root (`..`, a symbolic link out, an absolute path under a root, an
            absolute path outside the folder given for `ABSOLUTE_ROOT`), is not a regular file, or is not audio.
    """
    if not path:
        return None
    if "\x00" in path:
        raise AudioLocationError(f"{path!r}: a NUL character in a file name; refused")
    if root:
        if is_absolute(path):
            raise AudioLocationError(f"{path!r} under root {root!r}: an absolute path, not one relative to its root")
        if root not in roots:
            return None
        folder, candidate, where = roots[root], Path(roots[root]) / path, f"root {root!r}"
    else:
        if urlparse(path).scheme in URL_SCHEMES:
            return path
        if not is_absolute(path):
            raise AudioLocationError(f"{path!r}: recorded without a root, but neither an absolute path nor a URL")
        if ABSOLUTE_ROOT not in roots:
            return None
        folder, candidate, where = roots[ABSOLUTE_ROOT], Path(path), "the folder allowed for absolute paths"
    return str(contained_audio_file(Path(folder), candidate, path, where))


def is_absolute(path: str) -> bool:
    """Absolute on POSIX or Windows (`/x`, `\\\\x`, `C:\\x`, `C:x`): never joined under a root."""
    return PurePosixPath(path).is_absolute() or bool(PureWindowsPath(path).anchor)


def contained_audio_file(folder: Path, candidate: Path, recorded: str, where: str) -> Path:
    """`candidate` resolved (links followed), checked to lie inside `folder` (resolved too) and to be an audio file."""
    try:
        base = folder.resolve(strict=True)
    except OSError:
        raise AudioLocationError(f"{recorded!r}: the folder given for {where} does not exist") from None
    resolved = candidate.resolve()
    if not resolved.is_relative_to(base):
        lexical = Path(os.path.normpath(os.path.abspath(candidate)))
        inside = lexical.is_relative_to(os.path.normpath(os.path.abspath(folder)))
        raise AudioLocationError(f"{recorded!r}: {'a symbolic link out of' if inside else 'outside'} {where}; refused")
    audio_file_format(resolved, recorded)
    return resolved


def audio_file_format(path: Path, recorded: str | None = None) -> str:
    """The audio format of the regular file at `path` (a `MEDIA_TYPES` key), else an `AudioLocationError`."""
    name = repr(recorded if recorded is not None else str(path))
    try:
        info = os.stat(path)
    except OSError:
        raise AudioLocationError(f"{name}: no such file") from None
    if not stat.S_ISREG(info.st_mode):
        raise AudioLocationError(f"{name}: not a regular file; refused")
    try:
        with open(path, "rb") as handle:
            head = handle.read(SNIFF_BYTES)
    except OSError as error:
        raise AudioLocationError(f"{name}: cannot be read ({error.strerror or error})") from None
    kind = sniff_audio(head)
    if kind is None:
        raise AudioLocationError(f"{name}: not an audio file (its first bytes match no audio format); refused")
    return kind
