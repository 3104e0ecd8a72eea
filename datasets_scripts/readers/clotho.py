"""Clotho: the reader of a local copy of Clotho v2 / v2.1."""

from __future__ import annotations

import os
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
    ReaderError,
    ReaderOptions,
    canonical_split,
    read_pairs,
)
from datasets_scripts.readers.layouts import Layout, locate_split, versioned

_SPLITS = {
    "development": "development",
    "dev": "development",
    "train": "development",
    "validation": "validation",
    "val": "validation",
    "evaluation": "evaluation",
    "eval": "evaluation",
    "test": "evaluation",
}


def _layouts(root: Path, split: str) -> list[Layout]:
    """As distributed (root itself), then aac-datasets' ``CLOTHO_v2.1`` (or ``_v2``, ``_v1``) folder."""
    name = f"clotho_captions_{split}.csv"
    return [
        Layout(
            (base / name, base / "clotho_csv_files" / name),
            (base / split, base / "clotho_audio_files" / split, base / f"clotho_audio_{split}"),
        )
        for base in (root, *versioned(root, "CLOTHO_v*", "CLOTHO_v2.1"))
    ]


def read_clotho(
    root: PathLike,
    split: str = "evaluation",
    *,
    captions_csv: PathLike | None = None,
    audio_dir: PathOrPaths | None = None,
    audio_extensions: Sequence[str] = (".wav", ".flac"),
    **shared: Any,
) -> Dataset:
    """Read Clotho v2 / v2.1 (Drossos et al., ICASSP 2020), five captions per clip.

    Source: Zenodo, https://zenodo.org/records/4783391 (v2.1; v2 is record 3490684):
    ``clotho_captions_{development,validation,evaluation}.csv`` with columns
    ``file_name,caption_1,...,caption_5`` (3,839 / 1,045 / 1,045 clips) and
    ``clotho_audio_{split}.7z`` archives that extract to a ``{split}/`` folder of 15-30 s WAV files.

    Layouts found (``root`` is the Clotho folder, or an aac-datasets root)::

        as distributed:   root/clotho_captions_{split}.csv (or root/clotho_csv_files/clotho_captions_{split}.csv),
                          audio in root/{split}/, root/clotho_audio_files/{split}/ or root/clotho_audio_{split}/
        aac-datasets:     root/CLOTHO_v2.1/clotho_csv_files/clotho_captions_{split}.csv (or CLOTHO_v2, CLOTHO_v1),
                          audio in root/CLOTHO_v2.1/clotho_audio_files/{split}/

    The first layout whose caption CSV exists gives the audio folders; the CSV is read strictly
    (:class:`~datasets_scripts.readers.caption_csv.CaptionCsv`).

    A clip stored with another extension (e.g. converted to flac) is found through
    ``audio_extensions``; ``audio_id`` stays the CSV ``file_name``. ``caption_index`` is
    ``N - 1`` for column ``caption_N``.

    Args:
        root: the Clotho folder.
        split: ``development`` (aliases ``dev``, ``train``), ``validation`` (``val``) or
            ``evaluation`` (``eval``, ``test``).
        captions_csv: the split's caption CSV, instead of the layouts' (relative to ``root`` unless absolute).
        audio_dir: audio folder(s), instead of the layout's (each must exist; relative to ``root`` unless absolute).
        audio_extensions: extensions tried, after the exact ``file_name``, for the same stem.
        shared: the :class:`ReaderOptions`.
    """
    options = ReaderOptions(**shared)
    root = Path(root).expanduser()
    split = canonical_split(split, _SPLITS, "Clotho")
    csv_path, folders = locate_split("Clotho", split, root, _layouts(root, split), captions_csv, audio_dir)
    table = CaptionCsv(csv_path, ("file_name",))
    columns = table.columns
    caption_cols = sorted((c for c in columns if re.fullmatch(r"caption_\d+", c)), key=lambda c: int(c.split("_")[1]))
    if not caption_cols:
        raise ReaderError(f"{csv_path}:1: no caption_N columns; found {columns}")

    patterns = ["{file_name}"] + [f"{{stem}}{ext}" for ext in audio_extensions]
    locator = AudioLocator(folders, patterns)

    def locate(cand: Candidate) -> str | None:
        return locator.find({"file_name": cand.audio_id, "stem": os.path.splitext(cand.audio_id)[0]})

    def candidates() -> Iterator[Candidate]:
        for row in table:
            file_name = (row.get("file_name") or "").strip()
            if not file_name:
                continue
            for col in caption_cols:
                yield Candidate(
                    source="clotho",
                    audio_id=file_name,
                    caption_index=int(col.split("_")[1]) - 1,
                    caption=row.get(col) or "",
                    audio_key=file_name,
                )

    report = options.new_report("clotho", split, root)
    return read_pairs(candidates(), report, options, locate=locate, searched=locator.searched)
