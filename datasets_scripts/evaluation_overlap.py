"""
Keep evaluation clips out of a knowledge base: drop every pair, from any corpus, whose clip is one of an evaluation
split's clips (AudioCaps val / test, Clotho validation / evaluation), by the corpus-independent identity of
`modeling_paircap/clip_ids_paircap.py`.

- AudioCaps clips are YouTube clips, so Auto-ACD and WavCaps AudioSet_SL copies of them (`Y<id>`, `<id>_<start>`) are
  caught; Clotho clips are Freesound sounds, caught in WavCaps FreeSound through the `sound_id` of Clotho's metadata
  CSVs (`clotho_metadata_<split>.csv`), and in Clotho itself by file name (Clotho reuses 4 file names across its
  splits, with captions of the same recordings) or, where the metadata says it, by Freesound id.
- The rows of an evaluation split itself (`source` and `split` of that split, e.g. a test KB built with
  `--corpus clotho:evaluation`) are the evaluation set, not a leak: they are kept and counted apart
  (`kept_evaluation_rows`); evaluation's self-exclusion keeps a query from retrieving its own clip among them.

Usage (what `build_kb` does with its `--root` folders)::

    banned = evaluation_clip_ids({"audiocaps": "/data/audiocaps", "clotho": "/data/clotho_v2"})
    pairs, report = drop_evaluation_overlap(pairs, banned, clotho_sound_ids("/data/clotho_v2"))
"""

import csv
import io
import os
import re
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from datasets import Dataset

from datasets_scripts.readers import read_corpus
from modeling_paircap.clip_ids_paircap import normalise_clip_id

__all__ = [
    "CLOTHO_SPLITS",
    "EVALUATION_SPLITS",
    "EvaluationOverlapWarning",
    "OverlapReport",
    "clotho_sound_ids",
    "drop_evaluation_overlap",
    "evaluation_clip_ids",
]

PathLike = str | os.PathLike

#: The evaluation lists, `"<corpus>/<split>"` as in the readers' `source` and `split` columns.
EVALUATION_SPLITS = ("audiocaps/val", "audiocaps/test", "clotho/validation", "clotho/evaluation")
CLOTHO_SPLITS = ("development", "validation", "evaluation")
_SOUND_LINK = re.compile(r"/sounds/(\d+)")
_KEY_SEPARATOR = "\x1f"


class EvaluationOverlapWarning(UserWarning):
    """An evaluation list (or its Freesound ids) could not be read, so that overlap is not checked."""


@dataclass
class OverlapReport:
    """What `drop_evaluation_overlap` dropped and checked; `to_dict()` goes into the KB metadata and card."""

    rows_checked: int = 0
    rows_dropped: int = 0
    dropped_by_source: dict[str, int] = field(default_factory=dict)
    dropped_by_evaluation_split: dict[str, int] = field(default_factory=dict)  # a row in two lists counts in both
    kept_evaluation_rows: dict[str, int] = field(default_factory=dict)
    evaluation_clips: dict[str, int] = field(default_factory=dict)  # ids in each list checked
    not_checked: list[str] = field(default_factory=list)
    without_freesound_ids: list[str] = field(default_factory=list)  # Clotho lists matched by file name only

    def to_dict(self) -> dict:
        return asdict(self)


def clotho_sound_ids(root: PathLike, splits: Sequence[str] = CLOTHO_SPLITS) -> dict[tuple[str, str], str]:
    """
    `(split, file_name) -> "freesound:<id>"` from the Clotho metadata CSVs under `root` (or `root/clotho_csv_files`)
    that exist: column `sound_id`, else the number in `sound_link`. Clotho v2 writes them in ISO-8859-1.
    """
    ids = {}
    for split in splits:
        path = _clotho_csv(Path(root), f"clotho_metadata_{split}.csv")
        for row in _read_csv(path) if path else ():
            number = _sound_number(row)
            if number is not None and row.get("file_name"):
                ids[split, row["file_name"].strip()] = normalise_clip_id(number)
    return ids


def evaluation_clip_ids(roots: Mapping[str, PathLike]) -> dict[str, set[str]]:
    """
    `{"audiocaps/test": {normalised ids}, ...}` for each evaluation split whose corpus folder `roots` gives
    (`audiocaps`: its val.csv / test.csv as the AudioCaps reader finds them; `clotho`: its caption CSVs, plus the
    Freesound ids of its metadata CSVs). A split without a root, or whose caption file is missing, is left out (a
    warning says so) and `drop_evaluation_overlap` reports it as not checked.
    """
    banned = {}
    for name in EVALUATION_SPLITS:
        corpus, split = name.split("/")
        if roots.get(corpus) is None:
            continue
        try:
            pairs = read_corpus(corpus, roots[corpus], split, text_only=True, max_duration=None)
        except FileNotFoundError as error:
            warnings.warn(f"{name} overlap is not checked: {error}", EvaluationOverlapWarning, stacklevel=2)
            continue
        banned[name] = {normalise_clip_id(a, s) for a, s in zip(pairs["audio_id"], pairs["source"], strict=True)}
        if corpus == "clotho":
            banned[name] |= _clotho_split_sound_ids(roots[corpus], split)
    return banned


def drop_evaluation_overlap(
    pairs: Dataset,
    banned: Mapping[str, set[str]],
    sound_ids: Mapping[tuple[str, str], str] | None = None,
) -> tuple[Dataset, OverlapReport]:
    """
    Drop the rows of `pairs` (columns `audio_id`, and `source` / `split` where present) whose clip identity is in one
    of the `banned` lists (`evaluation_clip_ids`); a Clotho row's identities are its file name and, from `sound_ids`
    (`clotho_sound_ids`), its Freesound id. Rows of the listed split itself are kept. One Python pass over the
    distinct (source, split, audio_id) keys; rows are handled as Arrow / numpy arrays.
    """
    lists = {name: {normalise_clip_id(i) for i in ids} for name, ids in banned.items()}
    keys, codes = _clip_keys(pairs)
    report = OverlapReport(
        rows_checked=len(pairs),
        evaluation_clips={name: len(ids) for name, ids in lists.items()},
        not_checked=[name for name in EVALUATION_SPLITS if name not in lists],
        without_freesound_ids=[n for n, ids in lists.items() if n.startswith("clotho/") and not _has_freesound(ids)],
    )
    rows_per_key = np.bincount(codes, minlength=len(keys))
    dropped = np.zeros(len(keys), dtype=bool)
    for index, key in enumerate(keys):
        source, split, audio_id = key.split(_KEY_SEPARATOR, 2)
        identities = _identities(source, split, audio_id, sound_ids or {})
        for name, ids in lists.items():
            if f"{source}/{split}" == name:
                _add(report.kept_evaluation_rows, name, rows_per_key[index])
            elif not identities.isdisjoint(ids):
                _add(report.dropped_by_evaluation_split, name, rows_per_key[index])
                dropped[index] = True
        if dropped[index]:
            _add(report.dropped_by_source, source, rows_per_key[index])
    report.rows_dropped = int(rows_per_key[dropped].sum())
    if not report.rows_dropped:
        return pairs, report
    return pairs.select(np.flatnonzero(~dropped[codes])), report


def _clip_keys(pairs: Dataset) -> tuple[list[str], np.ndarray]:
    """The distinct `source␟split␟audio_id` keys of the rows, and each row's key index."""
    columns = [name for name in ("source", "split", "audio_id") if name in pairs.column_names]
    table = pairs.select_columns(columns).with_format("arrow")[:]
    parts = [_string_column(table, name) for name in ("source", "split", "audio_id")]
    joined = pc.binary_join_element_wise(*parts, _KEY_SEPARATOR, null_handling="replace", null_replacement="")
    encoded = pc.dictionary_encode(joined.combine_chunks())
    return encoded.dictionary.to_pylist(), encoded.indices.to_numpy(zero_copy_only=False).astype(np.int64)


def _string_column(table: pa.Table, name: str) -> pa.ChunkedArray:
    if name not in table.column_names:
        return pa.chunked_array([pa.nulls(len(table), pa.string())])
    return table.column(name).cast(pa.string())


def _identities(source: str, split: str, audio_id: str, sound_ids: Mapping[tuple[str, str], str]) -> set[str]:
    """A row's clip identities: its normalised id, plus its Freesound id when it is a Clotho clip of known id."""
    identities = {normalise_clip_id(audio_id, source or None)}
    if source == "clotho" and (split, audio_id) in sound_ids:
        identities.add(sound_ids[split, audio_id])
    return identities


def _clotho_split_sound_ids(root: PathLike, split: str) -> set[str]:
    ids = set(clotho_sound_ids(root, (split,)).values())
    if not ids:
        warnings.warn(
            f"clotho/{split}: no clotho_metadata_{split}.csv with sound ids under {root}; its clips are matched by "
            "file name only, so WavCaps FreeSound copies of them are not found",
            EvaluationOverlapWarning,
            stacklevel=3,
        )
    return ids


def _clotho_csv(root: Path, name: str) -> Path | None:
    return next((path for path in (root / name, root / "clotho_csv_files" / name) if path.is_file()), None)


def _read_csv(path: Path) -> list[dict[str, str]]:
    """Rows of a CSV in UTF-8, or ISO-8859-1 when it is not UTF-8 (Clotho's metadata files)."""
    data = path.read_bytes()
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError:
        text = data.decode("iso-8859-1")
    reader = csv.DictReader(io.StringIO(text, newline=""))
    return [{(key or "").strip(): value for key, value in row.items()} for row in reader]


def _sound_number(row: Mapping[str, str]) -> str | None:
    """The Freesound number of a Clotho metadata row (`sound_id`, e.g. `80399`, else from `sound_link`)."""
    value = (row.get("sound_id") or "").strip().removesuffix(".0")
    if value.isdigit():
        return value
    link = _SOUND_LINK.search(row.get("sound_link") or "")
    return link[1] if link else None


def _has_freesound(ids: set[str]) -> bool:
    return any(i.startswith("freesound:") for i in ids)


def _add(counts: dict[str, int], key: str, value: int) -> None:
    counts[key] = counts.get(key, 0) + int(value)
