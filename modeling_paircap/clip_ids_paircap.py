"""
One identity per audio clip across corpora, shared by the knowledge base's evaluation-overlap filter and evaluation's
self-exclusion: the same YouTube clip is `youtube:<11-char id>` whether AudioCaps, AudioSet, WavCaps AudioSet_SL or
Auto-ACD lists it, the same Freesound sound is `freesound:<number>` in WavCaps FreeSound and (through Clotho's
metadata `sound_id`) in Clotho, and an ESC-50 clip is the Freesound recording it was cut from, so the takes A, B,
C... of one recording are one clip.

What the readers of `datasets_scripts/readers/` put into `audio_id`, and what it becomes:

- AudioCaps `youtube_id`, WavCaps AudioSet_SL `Y<id>.wav` (read as `<id>`), Auto-ACD `Y<id>` (read as `<id>`) and
  `<id>_<start>` (VGGSound) -> `youtube:<id>`;
- WavCaps FreeSound `<number>` -> `freesound:<number>`; BBC Sound Effects and SoundBible numbers are ids of other sites
  (`bbc:<number>`, `soundbible:<number>`) when the row's `source` says so;
- ESC-50 file stems `{fold}-{src_file}-{take}-{target}` (fold 1-5, take one or two capital letters, target 0-49, e.g.
  `1-100032-A-0`, also with an audio extension) -> `freesound:<src_file>` (ESC-50's `src_file` is the Freesound id);
- Clotho `file_name` (e.g. `Santa Motor.wav`) -> the file name, stripped and casefolded; its Freesound id is not in the
  name and comes from Clotho's metadata CSVs (`datasets_scripts/evaluation_overlap.py`).

A name with an audio extension is a file name, not a bare id: Clotho has files called `1.wav`, `100121.wav`,
`Lade-Stereo_2012.wav` and `Waves_00512.wav`, which are neither Freesound numbers nor YouTube ids. So an extension is
read through only in the unambiguous forms `Y<id>[_<start>...].<ext>` (PANNs / AudioSet file names),
`freesound_<number>.<ext>`, and `<number>.<ext>` of a row whose `source` is WavCaps FreeSound.
"""

import re

__all__ = ["normalise_clip_id"]

_AUDIO_EXTENSION = re.compile(r"\.(?:wav|flac|mp3|ogg|oga|opus|m4a|aiff?)$", re.IGNORECASE)
# An 11-char YouTube id after an optional PANNs "Y", then at most a start and an end time: _30, _30.000, _30000_40000
_YOUTUBE = re.compile(r"(?P<prefix>Y)?(?P<id>[A-Za-z0-9_-]{11})(?:_\d+(?:\.\d+)?){0,2}")
# ESC-50 `{fold}-{src_file}-{take}-{target}`; checked before the YouTube form, which an 11-char stem would also match
_ESC50 = re.compile(r"[1-5]-(?P<src_file>\d{1,10})-[A-Z]{1,2}-(?:[0-9]|[1-4][0-9])")
_FREESOUND_NAME = re.compile(r"freesound[_:-]?(?P<number>\d{1,10})", re.IGNORECASE)
_NUMBER = re.compile(r"\d{1,10}")  # an 11-digit string is a YouTube id
_NORMALISED = re.compile(r"(?:youtube|freesound|bbc|soundbible):\S+")
_NUMBER_SITES = {"wavcaps/BBC_Sound_Effects": "bbc", "wavcaps/SoundBible": "soundbible"}
_FREESOUND_SOURCE = "wavcaps/FreeSound"
_FILE_NAME_SOURCES = frozenset({"clotho"})


def normalise_clip_id(audio_id: str, source: str | None = None) -> str:
    """
    The corpus-independent identity of a clip: `youtube:<id>`, `freesound:<number>` (also `bbc:` / `soundbible:` for
    those WavCaps sources; for an ESC-50 stem, its recording), or else the id stripped and casefolded. `source` (a
    reader's `source` column) only settles what a number is and keeps Clotho file names file names; already
    normalised ids are returned unchanged.
    """
    text = str(audio_id).strip()
    if source in _FILE_NAME_SOURCES:
        return text.casefold()
    if _NORMALISED.fullmatch(text):
        return text
    stem = _AUDIO_EXTENSION.sub("", text)
    has_extension = stem != text
    esc50 = _ESC50.fullmatch(stem)
    if esc50:
        return f"freesound:{int(esc50['src_file'])}"
    return _number_id(stem, has_extension, source) or _youtube_id(stem, has_extension) or text.casefold()


def _number_id(stem: str, has_extension: bool, source: str | None) -> str | None:
    """`freesound:<n>` (or the site of `source`) for `freesound_<n>` and bare numbers; None otherwise."""
    named = _FREESOUND_NAME.fullmatch(stem)
    if named:
        return f"freesound:{int(named['number'])}"
    if not _NUMBER.fullmatch(stem) or (has_extension and source != _FREESOUND_SOURCE):
        return None
    return f"{_NUMBER_SITES.get(source, 'freesound')}:{int(stem)}"


def _youtube_id(stem: str, has_extension: bool) -> str | None:
    """`youtube:<id>` for a bare (or `Y`-prefixed) 11-char id with optional start/end suffixes; None otherwise."""
    match = _YOUTUBE.fullmatch(stem)
    if match is None or (has_extension and not match["prefix"]):
        return None
    return f"youtube:{match['id']}"
