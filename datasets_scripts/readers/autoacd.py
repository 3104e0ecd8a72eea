"""Auto-ACD: the reader of a local copy of the Auto-ACD caption CSVs and the user's AudioSet / VGGSound clips."""

from __future__ import annotations

import re
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from datasets import Dataset

from datasets_scripts.readers.caption_csv import CaptionCsv
from datasets_scripts.readers.core import (
    AudioLocator,
    Candidate,
    PathLike,
    PathOrPaths,
    ReaderOptions,
    canonical_split,
    read_pairs,
)
from datasets_scripts.readers.layouts import Layout, locate_split

#: ``video_id`` = the bare 11-character id, ``start_time`` = the suffix of ``<id>_<start>`` ids).
AUTOACD_FILENAME_PATTERNS: tuple[str, ...] = (
    "{youtube_id}.wav",
    "{youtube_id}.flac",
    "Y{video_id}.wav",
    "Y{video_id}.flac",
    "{video_id}.wav",
    "{video_id}.flac",
    "{video_id}_{start_time}.wav",
    "{video_id}_{start_time}.flac",
)

_SPLITS = {"train": "train", "test": "test"}
_CLIP_ID = re.compile(r"(?P<y>Y)?(?P<vid>[A-Za-z0-9_-]{11})(?:_(?P<start>\d+(?:\.\d+)?))?")


def _autoacd_parts(youtube_id: str) -> tuple[str, str | None, str | None]:
    """``(audio_id, video_id, start_time)`` of an Auto-ACD ``youtube_id`` value."""
    m = _CLIP_ID.fullmatch(youtube_id)
    if not m:
        return youtube_id, None, None
    vid, start = m.group("vid"), m.group("start")
    return (vid if start is None else f"{vid}_{start}"), vid, start


def read_autoacd(
    root: PathLike,
    split: str = "train",
    *,
    captions_csv: PathLike | None = None,
    audio_dir: PathOrPaths | None = None,
    filename_patterns: Sequence[str] = AUTOACD_FILENAME_PATTERNS,
    **shared: Any,
) -> Dataset:
    """Read Auto-ACD (Sun et al., ACM MM 2024; arXiv 2309.11500), generated captions of AudioSet /
    VGGSound clips.

    Source: Hugging Face dataset ``Loie/Auto-ACD``: ``train.csv`` (about 1.9 M rows) and
    ``test.csv`` (about 1 k rows), columns ``youtube_id,caption``. ``youtube_id`` is either the
    PANNs-style ``Y<11-char id>`` of an AudioSet clip or ``<11-char id>_<start, 6 digits>`` of a
    VGGSound clip (the suffix is the start time in the video). The audio is not distributed; users
    take it from their AudioSet / VGGSound copies.

    Expected layout (the CSV is read strictly, :class:`~datasets_scripts.readers.caption_csv.CaptionCsv`)::

        root/{train,test}.csv
        root/{split}/<clip file>     (or root/audio/{split}/, root/audio/, root/)

    ``audio_id`` is the ``youtube_id`` without the ``Y`` prefix (so an AudioSet clip has the same
    id as in AudioCaps / WavCaps); ``<id>_<start>`` ids are kept whole. A clip listed several times
    gets ``caption_index`` 0, 1, ... in file order. Default file names: ``{youtube_id}.wav``,
    ``Y{video_id}.wav``, ``{video_id}.wav``, ``{video_id}_{start_time}.wav`` and the same in flac.

    Args:
        root: the Auto-ACD folder.
        split: ``train`` or ``test``.
        captions_csv: the split's caption CSV, instead of ``root/{split}.csv``.
        audio_dir: audio folder(s), instead of the layout's (each must exist).
        filename_patterns: patterns with ``youtube_id``, ``video_id``, ``start_time``, ``split``.
        shared: the :class:`ReaderOptions`.
    """
    options = ReaderOptions(**shared)
    root = Path(root).expanduser()
    split = canonical_split(split, _SPLITS, "Auto-ACD")
    layout = Layout((root / f"{split}.csv",), (root / split, root / "audio" / split, root / "audio", root))
    csv_path, folders = locate_split("Auto-ACD", split, root, [layout], captions_csv, audio_dir)
    table = CaptionCsv(csv_path, ("youtube_id", "caption"))
    locator = AudioLocator(folders, filename_patterns)

    def locate(cand: Candidate) -> str | None:
        raw, vid, start = cand.audio_key
        return locator.find({"youtube_id": raw, "video_id": vid, "start_time": start, "split": split})

    def candidates() -> Iterator[Candidate]:
        counts: dict[str, int] = {}
        for row in table:
            raw = (row.get("youtube_id") or "").strip()
            if not raw:
                continue
            audio_id, vid, start = _autoacd_parts(raw)
            index = counts.get(audio_id, 0)
            counts[audio_id] = index + 1
            yield Candidate(
                source="autoacd",
                audio_id=audio_id,
                caption_index=index,
                caption=row.get("caption") or "",
                audio_key=(raw, vid, start),
            )

    report = options.new_report("autoacd", split, root)
    return read_pairs(candidates(), report, options, locate=locate, searched=locator.searched)
