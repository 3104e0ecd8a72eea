"""AudioCaps: the reader of a local copy of the AudioCaps caption CSVs and clips."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from datasets import Dataset

from datasets_scripts.readers.core import (
    AudioLocator,
    Candidate,
    PathLike,
    PathOrPaths,
    ReaderOptions,
    as_paths,
    canonical_split,
    first_existing,
    open_csv,
    read_pairs,
    require_columns,
)

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

    Expected layout (``root`` is the repository's ``dataset/`` folder or its parent)::

        root/{train,val,test}.csv          (or root/dataset/{split}.csv)
        root/{split}/<clip file>           (or root/audio/{split}/, root/audio/, root/)

    A clip's file is found by trying ``filename_patterns`` in each audio folder; the defaults cover
    the usual downloaders: ``{youtube_id}.wav``, ``Y{youtube_id}.wav`` (PANNs/AudioSet style),
    ``{youtube_id}_{start_time}.wav`` and the same in flac. Patterns may contain a sub-folder.

    Args:
        root: the AudioCaps folder.
        split: ``train``, ``val`` (alias ``validation``) or ``test``.
        captions_csv: explicit caption CSV instead of ``root/{split}.csv``.
        audio_dir: explicit audio folder(s) (relative to ``root`` unless absolute).
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
    csv_path = (
        as_paths(captions_csv, root)[0]
        if captions_csv is not None
        else first_existing([root / f"{split}.csv", root / "dataset" / f"{split}.csv"])
    )
    if csv_path is None or not csv_path.is_file():
        raise FileNotFoundError(f"AudioCaps caption file for split {split!r} not found under {root}")
    require_columns(csv_path, ("audiocap_id", "youtube_id", "start_time", "caption"))

    rows = [
        (r["audiocap_id"].strip(), r["youtube_id"].strip(), r["start_time"].strip(), r["caption"])
        for r in open_csv(csv_path)
    ]

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

    folders = as_paths(audio_dir, root) or [root / split, root / "audio" / split, root / "audio", root]
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
