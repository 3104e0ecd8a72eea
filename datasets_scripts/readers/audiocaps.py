"""AudioCaps: the reader of a local copy of the AudioCaps caption CSVs and clips."""

from __future__ import annotations

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
from datasets_scripts.readers.layouts import Layout, locate_split, versioned

#: Default file names tried for an AudioCaps clip, in order (``str.format`` fields: ``youtube_id``,
#: ``start_time`` as written in the CSV, ``audiocap_id``, ``split``).
AUDIOCAPS_FILENAME_PATTERNS: tuple[str, ...] = (
    "{youtube_id}.wav",
    "Y{youtube_id}.wav",
    "{youtube_id}_{start_time}.wav",
    "{youtube_id}.flac",
    "Y{youtube_id}.flac",
    "{youtube_id}_{start_time}.flac",
)
_SPLITS = {"train": "train", "val": "val", "valid": "val", "validation": "val", "test": "test"}


def _layouts(root: Path, split: str) -> list[Layout]:
    """As distributed (root itself, or aac-datasets' ``AUDIOCAPS`` folder given as root), then aac-datasets'
    ``AUDIOCAPS`` folder and the older ``AUDIOCAPS_<rate>Hz`` ones."""
    name = f"{split}.csv"

    def audio(base: Path) -> tuple[Path, ...]:
        rates = (folder / split for folder in versioned(base, "audio_*Hz", "audio_32000Hz"))
        return (base / split, base / "audio" / split, *rates, base / "audio", base)

    aac = root / "AUDIOCAPS"
    return [
        Layout((root / name, root / "dataset" / name, root / "csv_files_v1" / name), audio(root)),
        Layout((aac / "csv_files_v1" / name, aac / name), audio(aac)),
        *(Layout((old / name,), audio(old)) for old in versioned(root, "AUDIOCAPS_*Hz", "AUDIOCAPS_32000Hz")),
    ]


def read_audiocaps(
    root: PathLike,
    split: str = "train",
    *,
    captions_csv: PathLike | None = None,
    audio_dir: PathOrPaths | None = None,
    filename_patterns: Sequence[str] = AUDIOCAPS_FILENAME_PATTERNS,
    **shared: Any,
) -> Dataset:
    """Read AudioCaps (v1, Kim et al., NAACL 2019).

    Source: https://github.com/cdjkim/audiocaps -- the folder ``dataset/`` holds ``train.csv``
    (49,838 rows, one caption per clip), ``val.csv`` (2,475 = 495 clips x 5) and ``test.csv``
    (4,875 = 975 clips x 5), columns ``audiocap_id,youtube_id,start_time,caption``. The audio is
    not distributed: users fetch the 10 s YouTube segments themselves.

    Layouts found (``root`` is the repository's ``dataset/`` folder or its parent, or an aac-datasets root or its
    ``AUDIOCAPS`` folder)::

        as distributed:   root/{train,val,test}.csv (or root/dataset/{split}.csv),
                          audio in root/{split}/, root/audio/{split}/, root/audio/ or root/
        aac-datasets:     root/AUDIOCAPS/csv_files_v1/{split}.csv (older versions: root/AUDIOCAPS/{split}.csv,
                          root/AUDIOCAPS_32000Hz/{split}.csv), audio in root/AUDIOCAPS/audio_32000Hz/{split}/ (older:
                          root/AUDIOCAPS_32000Hz/audio/{split}/), files ``{youtube_id}_{start_time}.flac``

    The first layout whose caption CSV exists gives the audio folders. AudioCaps 2.0 (aac-datasets'
    ``csv_files_v2``) or the corrected ``train_fixed.csv`` are read by naming the file with ``captions_csv``.
    The CSV is read strictly (:class:`~datasets_scripts.readers.caption_csv.CaptionCsv`): a broken row is a
    :class:`ReaderError` naming its line.

    A clip's file is found by trying ``filename_patterns`` in each audio folder; the defaults cover
    the usual downloaders: ``{youtube_id}.wav``, ``Y{youtube_id}.wav`` (PANNs/AudioSet style),
    ``{youtube_id}_{start_time}.wav`` and the same in flac. Patterns may contain a sub-folder.

    Args:
        root: the AudioCaps folder.
        split: ``train``, ``val`` (alias ``validation``) or ``test``.
        captions_csv: the split's caption CSV, instead of the layouts' (relative to ``root`` unless absolute).
        audio_dir: audio folder(s), instead of the layout's (each must exist; relative to ``root`` unless absolute).
        filename_patterns: ``str.format`` patterns with ``youtube_id``, ``start_time``,
            ``audiocap_id``, ``split``.
        shared: the :class:`ReaderOptions` (``text_only``, ``max_duration``, ``exclude_ids`` (YouTube ids),
            ``verify_decode``, ``num_workers``).

    Returns:
        A :class:`datasets.Dataset` (columns in :data:`FEATURES`, report in ``info.description``).
    """
    options = ReaderOptions(**shared)
    root = Path(root).expanduser()
    split = canonical_split(split, _SPLITS, "AudioCaps")
    csv_path, folders = locate_split("AudioCaps", split, root, _layouts(root, split), captions_csv, audio_dir)
    table = CaptionCsv(csv_path, ("audiocap_id", "youtube_id", "start_time", "caption"))
    rows = [(r["audiocap_id"].strip(), r["youtube_id"].strip(), r["start_time"].strip(), r["caption"]) for r in table]

    def _order(i: int) -> tuple[int, float | str, int]:
        cap_id = rows[i][0]
        try:
            return (0, float(cap_id), i)
        except ValueError:
            return (1, cap_id, i)

    # caption_index = rank of the row's audiocap_id among the captions of its clip
    per_clip: dict[str, list[int]] = {}
    for i, row in enumerate(rows):
        per_clip.setdefault(row[1], []).append(i)
    caption_index = [0] * len(rows)
    for members in per_clip.values():
        for rank, i in enumerate(sorted(members, key=_order)):
            caption_index[i] = rank
    del per_clip

    locator = AudioLocator(folders, filename_patterns)

    def locate(cand: Candidate) -> str | None:
        yid, start, cap_id = cand.audio_key
        return locator.find({"youtube_id": yid, "start_time": start, "audiocap_id": cap_id, "split": split})

    def candidates() -> Iterator[Candidate]:
        for (cap_id, yid, start, caption), index in zip(rows, caption_index, strict=True):
            yield Candidate(
                source="audiocaps",
                audio_id=yid,
                caption_index=index,
                caption=caption,
                audio_key=(yid, start, cap_id),
            )

    report = options.new_report("audiocaps", split, root)
    return read_pairs(candidates(), report, options, locate=locate, searched=locator.searched)
