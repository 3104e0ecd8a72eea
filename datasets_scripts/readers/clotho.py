"""Clotho: the reader of a local copy of Clotho v2 / v2.1."""

from __future__ import annotations

import os
import re
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

    Expected layout::

        root/clotho_captions_{split}.csv   (or root/clotho_csv_files/clotho_captions_{split}.csv)
        root/{split}/<file_name>           (or root/clotho_audio_files/{split}/, root/clotho_audio_{split}/)

    A clip stored with another extension (e.g. converted to flac) is found through
    ``audio_extensions``; ``audio_id`` stays the CSV ``file_name``. ``caption_index`` is
    ``N - 1`` for column ``caption_N``.

    Args:
        root: the Clotho folder.
        split: ``development`` (aliases ``dev``, ``train``), ``validation`` (``val``) or
            ``evaluation`` (``eval``, ``test``).
        captions_csv: explicit caption CSV.
        audio_dir: explicit audio folder(s) (relative to ``root`` unless absolute).
        audio_extensions: extensions tried, after the exact ``file_name``, for the same stem.
        shared: the :class:`ReaderOptions`.
    """
    options = ReaderOptions(**shared)
    root = Path(root).expanduser()
    split = canonical_split(split, _SPLITS, "Clotho")
    name = f"clotho_captions_{split}.csv"
    csv_path = (
        as_paths(captions_csv, root)[0]
        if captions_csv is not None
        else first_existing([root / name, root / "clotho_csv_files" / name])
    )
    if csv_path is None or not csv_path.is_file():
        raise FileNotFoundError(f"Clotho caption file {name} not found under {root}")
    columns = require_columns(csv_path, ("file_name",))
    caption_cols = sorted((c for c in columns if re.fullmatch(r"caption_\d+", c)), key=lambda c: int(c.split("_")[1]))
    if not caption_cols:
        raise ValueError(f"{csv_path}: no caption_N columns; found {columns}")

    folders = as_paths(audio_dir, root) or [
        root / split,
        root / "clotho_audio_files" / split,
        root / f"clotho_audio_{split}",
    ]
    patterns = ["{file_name}"] + [f"{{stem}}{ext}" for ext in audio_extensions]
    locator = AudioLocator(folders, patterns)

    def locate(cand: Candidate) -> str | None:
        return locator.find({"file_name": cand.audio_id, "stem": os.path.splitext(cand.audio_id)[0]})

    def candidates() -> Iterator[Candidate]:
        for row in open_csv(csv_path):
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
