"""Readers for local copies of the public audio-caption corpora used by PairCap.

Each reader turns a corpus folder, laid out exactly as the corpus is distributed, into a
:class:`datasets.Dataset` with one row per (audio, caption) pair. Nothing is downloaded: getting the
corpora is the user's job, and every reader's docstring says where the corpus comes from and which
layout it expects.

Output columns (the same for every reader, see :data:`FEATURES`):

``pair_id``
    ``f"{source}/{split}/{audio_id}/{caption_index}"``. Built only from the corpus metadata (never
    from file paths), so it is identical across runs, machines and audio formats. ``caption_index``
    is the caption's 0-based position among the captions of its clip as defined by the metadata
    (Clotho: the ``caption_N`` column minus one; AudioCaps: rank of ``audiocap_id`` within the
    clip; WavCaps / Auto-ACD: order of appearance in the file).
``audio_id``
    Identifies the clip, so that the other captions of the same audio can be excluded later.
    YouTube-based clips use the bare 11-character YouTube id (AudioCaps ``youtube_id``, WavCaps
    AudioSet_SL ``Y<id>.wav`` -> ``<id>``, Auto-ACD ``Y<id>`` -> ``<id>``), so one AudioSet clip has
    the same ``audio_id`` in every corpus. Clotho uses its ``file_name``, WavCaps its ``id``.
``audio``
    ``datasets.Audio(decode=False)``: ``{"path": <absolute path>, "bytes": None}``, or ``None`` for
    text-only rows.
``caption``
    The caption, stripped of surrounding white space (rows whose caption is empty are dropped).
``source``
    ``"audiocaps"``, ``"clotho"``, ``"wavcaps/<subset>"`` (subset = the release's folder name:
    ``AudioSet_SL``, ``BBC_Sound_Effects``, ``FreeSound``, ``SoundBible``) or ``"autoacd"``.
``split``
    The canonical split name (``train``/``val``/``test`` for AudioCaps,
    ``development``/``validation``/``evaluation`` for Clotho, ``train``/``test`` for Auto-ACD and a
    free label, ``train`` by default, for WavCaps).
``duration``
    Seconds, from :func:`soundfile.info`; ``None`` for text-only rows.

Options shared by every reader:

``text_only=False``
    Captions without audio (RECAP's caption-only datastore): no audio folder is needed or looked
    at, ``audio`` and ``duration`` are ``None``. ``max_duration`` then only applies where the
    metadata itself carries a duration (WavCaps), so a text-only WavCaps read keeps the same pairs
    as a read with audio.
``max_duration=40.0``
    Drop rows whose audio is longer (seconds), as in the paper; ``None`` keeps everything.
``exclude_ids=None``
    Clip ids to drop (counted as evaluation overlap), compared with ``audio_id`` and with the raw
    metadata id; a ``Y``-prefixed YouTube id also matches the bare one. For WavCaps see also
    ``blacklist``.
``verify_decode=False``
    Also decode every audio file completely (slow) instead of only reading its header.
``num_workers``
    Threads used to probe audio files.

Audio problems never stop a read: a row whose audio file is missing is counted and dropped (one
summary :class:`ReaderWarning` per read); a corrupt or unreadable file drops its rows with a
:class:`ReaderWarning` naming the file.

The counts of a read are a :class:`ReaderReport`, stored as JSON in ``dataset.info.description``
(it survives ``select``/``filter``/``save_to_disk``); get it back with
``ReaderReport.from_dataset(ds)``. ``rows_read == rows_kept + dropped`` always holds.

Usage::

    from datasets_scripts.readers import ReaderReport, read_corpus

    ds = read_corpus("clotho", "/data/clotho_v2", "evaluation")
    report = ReaderReport.from_dataset(ds)
    kb = read_corpus("wavcaps", "/data/WavCaps", "train", blacklist="test_ac", text_only=True)

or from the shell: ``python -m datasets_scripts.readers clotho /data/clotho_v2 evaluation``.
"""

from __future__ import annotations

import argparse
import csv
import json
import logging
import os
import re
import sys
import time
import warnings
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import pyarrow as pa
import soundfile as sf
from datasets import Audio, Dataset, DatasetInfo, Features, Value
from datasets.splits import NamedSplit

__all__ = [
    "AUDIOCAPS_FILENAME_PATTERNS",
    "AUTOACD_FILENAME_PATTERNS",
    "FEATURES",
    "WAVCAPS_SUBSETS",
    "ReaderReport",
    "ReaderWarning",
    "read_audiocaps",
    "read_autoacd",
    "read_clotho",
    "read_corpus",
    "read_wavcaps",
]

logger = logging.getLogger(__name__)

PathLike = str | os.PathLike
PathOrPaths = PathLike | Sequence[PathLike]

FEATURES = Features(
    {
        "pair_id": Value("string"),
        "audio_id": Value("string"),
        "audio": Audio(decode=False),
        "caption": Value("string"),
        "source": Value("string"),
        "split": Value("string"),
        "duration": Value("float64"),
    }
)
_SCHEMA = FEATURES.arrow_schema
_AUDIO_TYPE = _SCHEMA.field("audio").type

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

#: Default file names tried for an Auto-ACD clip (fields: ``youtube_id`` as written in the CSV,
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

#: WavCaps subsets (folder names of the release) and their caption files.
WAVCAPS_SUBSETS: dict[str, str] = {
    "AudioSet_SL": "as_final.json",
    "BBC_Sound_Effects": "bbc_final.json",
    "FreeSound": "fsd_final.json",
    "SoundBible": "sb_final.json",
}
_WAVCAPS_ALIASES = {
    "as": "AudioSet_SL",
    "audioset": "AudioSet_SL",
    "audioset_sl": "AudioSet_SL",
    "bbc": "BBC_Sound_Effects",
    "bbc_sound_effects": "BBC_Sound_Effects",
    "fsd": "FreeSound",
    "freesound": "FreeSound",
    "sb": "SoundBible",
    "soundbible": "SoundBible",
}
# Keys of the release's blacklist JSONs -> the subset they apply to.
_BLACKLIST_KEYS = {"audioset": "AudioSet_SL", "audioset_sl": "AudioSet_SL", "freesound": "FreeSound"}
_BLACKLIST_SHORT_NAMES = {
    "test_ac": ("blacklist_exclude_test_ac.json",),
    "all_ac": ("blacklist_exclude_all_ac.json",),
    "ub8k_esc50_vggsound": (
        "blacklist_exclude_ub8k_esc50_vggsound.json",
        "blacklist_exclude_ubs8k_esc50_vggsound.json",
    ),
}
# Where the release's zip archives put the flac files once extracted.
_WAVCAPS_ZIP_INNER = "mnt/fast/nobackup/scratch4weeks/xm00178/WavCaps/data/waveforms"

_AUDIOCAPS_SPLITS = {"train": "train", "val": "val", "valid": "val", "validation": "val", "test": "test"}
_CLOTHO_SPLITS = {
    "development": "development",
    "dev": "development",
    "train": "development",
    "validation": "validation",
    "val": "validation",
    "evaluation": "evaluation",
    "eval": "evaluation",
    "test": "evaluation",
}
_AUTOACD_SPLITS = {"train": "train", "test": "test"}

_AUDIO_EXTENSIONS = (".wav", ".flac", ".mp3", ".ogg", ".opus", ".m4a", ".aiff", ".aif")
_YT_PREFIXED = re.compile(r"Y([A-Za-z0-9_-]{11})")
_AUTOACD_ID = re.compile(r"(?P<y>Y)?(?P<vid>[A-Za-z0-9_-]{11})(?:_(?P<start>\d+(?:\.\d+)?))?")
_REPORT_KEY = "paircap_reader_report"
_CHUNK_ROWS = 50_000
_MISSING_EXAMPLES = 3


class ReaderWarning(UserWarning):
    """Emitted when rows are dropped because of missing or unreadable audio, or a filter is absent."""


@dataclass
class ReaderReport:
    """Counts of one read. Stored as JSON in ``dataset.info.description``.

    ``rows_read`` counts the caption rows found in the metadata (after the split/subset selection);
    each of them is either kept or counted in exactly one ``dropped_*`` field.
    """

    corpus: str
    split: str
    root: str
    text_only: bool
    max_duration: float | None
    rows_read: int = 0
    rows_kept: int = 0
    dropped_missing_audio: int = 0
    dropped_too_long: int = 0
    dropped_eval_overlap: int = 0
    dropped_unreadable_audio: int = 0
    dropped_empty_caption: int = 0
    clips_kept: int = 0
    unreadable_files: list[str] = field(default_factory=list)
    overlap_filters: list[str] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def dropped(self) -> int:
        return (
            self.dropped_missing_audio
            + self.dropped_too_long
            + self.dropped_eval_overlap
            + self.dropped_unreadable_audio
            + self.dropped_empty_caption
        )

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def to_json(self) -> str:
        return json.dumps({_REPORT_KEY: self.to_dict()}, sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> ReaderReport:
        payload = json.loads(text)
        if isinstance(payload, dict) and _REPORT_KEY in payload:
            payload = payload[_REPORT_KEY]
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in payload.items() if k in known})

    @classmethod
    def from_dataset(cls, dataset: Dataset) -> ReaderReport:
        """The report of a dataset returned by one of the readers of this module."""
        description = dataset.info.description or ""
        try:
            return cls.from_json(description)
        except (ValueError, TypeError) as err:
            raise ValueError("this dataset carries no reader report in info.description") from err

    def __add__(self, other: ReaderReport) -> ReaderReport:
        """Merge two reports (e.g. of the splits or subsets of one corpus)."""

        def join(a: str, b: str) -> str:
            return a if a == b else f"{a}+{b}"

        counts = {name: getattr(self, name) + getattr(other, name) for name in _COUNT_FIELDS}
        return ReaderReport(
            corpus=join(self.corpus, other.corpus),
            split=join(self.split, other.split),
            root=join(self.root, other.root),
            text_only=self.text_only and other.text_only,
            max_duration=self.max_duration if self.max_duration == other.max_duration else None,
            unreadable_files=self.unreadable_files + other.unreadable_files,
            overlap_filters=sorted(set(self.overlap_filters) | set(other.overlap_filters)),
            **counts,
        )


_COUNT_FIELDS = (
    "rows_read",
    "rows_kept",
    "dropped_missing_audio",
    "dropped_too_long",
    "dropped_eval_overlap",
    "dropped_unreadable_audio",
    "dropped_empty_caption",
    "clips_kept",
    "seconds",
)


@dataclass
class _Candidate:
    """One caption row from the metadata, before any audio check."""

    source: str
    audio_id: str
    caption_index: int
    caption: str
    audio_key: Any = None  # hashable; passed to the locator, shared by the captions of one clip
    meta_duration: float | None = None
    overlap: bool = False


# --------------------------------------------------------------------------------------- helpers


def _warn(message: str) -> None:
    warnings.warn(message, ReaderWarning, stacklevel=2)


def _canonical_split(split: str, table: Mapping[str, str], corpus: str) -> str:
    key = str(split).strip().lower()
    if key not in table:
        raise ValueError(f"unknown {corpus} split {split!r}; expected one of {sorted(set(table.values()))}")
    return table[key]


def _as_paths(value: PathOrPaths | None, root: Path) -> list[Path] | None:
    if value is None:
        return None
    items = [value] if isinstance(value, (str, os.PathLike)) else list(value)
    out = []
    for item in items:
        p = Path(item).expanduser()
        out.append(p if p.is_absolute() else root / p)
    return out


def _first_existing(candidates: Iterable[Path]) -> Path | None:
    for p in candidates:
        if p.is_file():
            return p
    return None


def _strip_audio_ext(name: str) -> str:
    root, ext = os.path.splitext(name)
    return root if ext.lower() in _AUDIO_EXTENSIONS else name


def _norm_id(value: Any) -> str:
    """Normalise a clip id for overlap matching: no audio extension, no PANNs ``Y`` prefix."""
    text = _strip_audio_ext(str(value).strip())
    m = _YT_PREFIXED.fullmatch(text)
    return m.group(1) if m else text


def _id_set(values: Iterable[Any] | None) -> set[str]:
    out: set[str] = set()
    for v in values or ():
        s = str(v).strip()
        if s:
            out.add(s)
            out.add(_norm_id(s))
    return out


def _open_csv(path: Path) -> Iterator[dict[str, str]]:
    with open(path, encoding="utf-8-sig", newline="") as handle:
        reader = csv.DictReader(handle)
        if reader.fieldnames:
            reader.fieldnames = [name.strip() for name in reader.fieldnames]
        yield from reader


def _csv_columns(path: Path) -> list[str]:
    with open(path, encoding="utf-8-sig", newline="") as handle:
        header = next(csv.reader(handle), [])
    return [h.strip() for h in header]


def _require_columns(path: Path, required: Sequence[str]) -> list[str]:
    columns = _csv_columns(path)
    missing = [c for c in required if c not in columns]
    if missing:
        raise ValueError(f"{path}: missing column(s) {missing}; found {columns}")
    return columns


class _AudioLocator:
    """Finds a clip's file among candidate folders and file-name patterns.

    Each folder is listed once (lazily), so looking up tens of thousands of absent files costs no
    file-system calls. Folders are tried in order; within a folder, patterns are tried in order.
    """

    def __init__(self, folders: Sequence[Path], patterns: Sequence[str]):
        self.searched = [str(f) for f in folders]
        self.folders = [f for f in folders if f.is_dir()]
        self.patterns = list(patterns)
        self._listings: dict[Path, set[str]] = {}

    def _names(self, folder: Path) -> set[str]:
        names = self._listings.get(folder)
        if names is None:
            with os.scandir(folder) as it:
                names = {entry.name for entry in it}
            self._listings[folder] = names
        return names

    def find(self, fields_: Mapping[str, Any]) -> str | None:
        present = {k: v for k, v in fields_.items() if v is not None and v != ""}
        names = []
        for pattern in self.patterns:
            try:
                name = pattern.format(**present)
            except (KeyError, IndexError, ValueError):
                continue
            if name and name not in names:
                names.append(name)
        for folder in self.folders:
            listing = None
            for name in names:
                if "/" in name or os.sep in name:
                    path = folder / name
                    if path.is_file():
                        return os.path.abspath(path)
                    continue
                if listing is None:
                    listing = self._names(folder)
                if name in listing:
                    path = folder / name
                    if path.is_file():
                        return os.path.abspath(path)
        return None


def _probe(path: str, verify_decode: bool) -> tuple[float | None, str | None]:
    """Duration of an audio file in seconds, or an error description when it cannot be read."""
    try:
        info = sf.info(path)
        if info.samplerate <= 0 or info.frames <= 0:
            return None, "no audio frames"
        if verify_decode:
            with sf.SoundFile(path) as handle:
                while len(handle.read(1 << 16, dtype="float32", always_2d=True)):
                    pass
        return float(info.frames) / float(info.samplerate), None
    except Exception as err:  # any libsndfile / OS error: the file is unusable
        return None, f"{type(err).__name__}: {err}".strip()


def _default_workers() -> int:
    return max(1, min(8, os.cpu_count() or 1))


class _Assembler:
    """Applies the filters to a stream of candidates and builds the Arrow table chunk by chunk."""

    def __init__(
        self,
        report: ReaderReport,
        *,
        split: str,
        text_only: bool,
        max_duration: float | None,
        locate: Callable[[_Candidate], str | None] | None,
        exclude: set[str],
        verify_decode: bool,
        num_workers: int | None,
        searched: Sequence[str] = (),
    ):
        self.report = report
        self.searched = list(searched)
        self.split = split
        self.text_only = text_only
        self.max_duration = max_duration
        self.locate = locate
        self.exclude = exclude
        self.verify_decode = verify_decode
        self.num_workers = num_workers or _default_workers()
        self._paths: dict[Any, str | None] = {}
        self._probes: dict[str, tuple[float | None, str | None]] = {}
        self._missing_examples: list[str] = []
        self._kept_clips: set[tuple[str, str]] = set()
        self._tables: list[pa.Table] = []

    # -- filters
    def _too_long(self, duration: float | None) -> bool:
        return self.max_duration is not None and duration is not None and duration > self.max_duration

    def _excluded(self, cand: _Candidate) -> bool:
        if cand.overlap:
            return True
        if not self.exclude:
            return False
        return cand.audio_id in self.exclude or _norm_id(cand.audio_id) in self.exclude

    def _probe_new(self, paths: Iterable[str]) -> None:
        todo = sorted({p for p in paths if p not in self._probes})
        if not todo:
            return
        if self.num_workers > 1 and len(todo) > 1:
            with ThreadPoolExecutor(max_workers=self.num_workers) as pool:
                results = list(pool.map(lambda p: _probe(p, self.verify_decode), todo))
        else:
            results = [_probe(p, self.verify_decode) for p in todo]
        for path, result in zip(todo, results, strict=True):
            self._probes[path] = result
            if result[1] is not None:
                self.report.unreadable_files.append(path)
                _warn(f"unreadable audio file {path} ({result[1]}); its rows are dropped")

    def add_chunk(self, chunk: list[_Candidate]) -> None:
        rep = self.report
        rep.rows_read += len(chunk)
        survivors: list[tuple[_Candidate, str]] = []
        pending: list[tuple[_Candidate, str, str | None]] = []
        for cand in chunk:
            caption = str(cand.caption).strip() if cand.caption is not None else ""
            if not caption:
                rep.dropped_empty_caption += 1
            elif self._excluded(cand):
                rep.dropped_eval_overlap += 1
            elif self.text_only:
                if self._too_long(cand.meta_duration):
                    rep.dropped_too_long += 1
                else:
                    survivors.append((cand, caption))
            else:
                if cand.audio_key not in self._paths:
                    self._paths[cand.audio_key] = self.locate(cand) if self.locate else None
                path = self._paths[cand.audio_key]
                if path is None:
                    rep.dropped_missing_audio += 1
                    example = str(cand.audio_id)
                    if len(self._missing_examples) < _MISSING_EXAMPLES and example not in self._missing_examples:
                        self._missing_examples.append(example)
                else:
                    pending.append((cand, caption, path))
        self._probe_new(p for _, _, p in pending)

        cols: dict[str, list] = {name: [] for name in FEATURES}
        for cand, caption in survivors:
            self._emit(cols, cand, caption, None, None)
        for cand, caption, path in pending:
            duration, error = self._probes[path]
            if error is not None:
                rep.dropped_unreadable_audio += 1
            elif self._too_long(duration):
                rep.dropped_too_long += 1
            else:
                self._emit(cols, cand, caption, path, duration)
        if cols["pair_id"]:
            self._tables.append(self._to_table(cols))

    def _emit(self, cols: dict[str, list], cand: _Candidate, caption: str, path: str | None, dur: float | None):
        cols["pair_id"].append(f"{cand.source}/{self.split}/{cand.audio_id}/{cand.caption_index}")
        cols["audio_id"].append(cand.audio_id)
        cols["audio"].append(None if path is None else {"bytes": None, "path": path})
        cols["caption"].append(caption)
        cols["source"].append(cand.source)
        cols["split"].append(self.split)
        cols["duration"].append(dur)
        self._kept_clips.add((cand.source, cand.audio_id))
        self.report.rows_kept += 1

    @staticmethod
    def _to_table(cols: dict[str, list]) -> pa.Table:
        arrays = [
            pa.array(cols[name], type=_AUDIO_TYPE if name == "audio" else _SCHEMA.field(name).type) for name in FEATURES
        ]
        return pa.Table.from_arrays(arrays, schema=_SCHEMA)

    def run(self, candidates: Iterable[_Candidate]) -> Dataset:
        start = time.perf_counter()
        buffer: list[_Candidate] = []
        for cand in candidates:
            buffer.append(cand)
            if len(buffer) >= _CHUNK_ROWS:
                self.add_chunk(buffer)
                buffer = []
        if buffer:
            self.add_chunk(buffer)
        rep = self.report
        rep.clips_kept = len(self._kept_clips)
        if rep.dropped_missing_audio:
            where = ", ".join(self.searched) or "(no audio folder given)"
            _warn(
                f"{rep.corpus} {rep.split}: dropped {rep.dropped_missing_audio} of {rep.rows_read} rows whose audio "
                f"file is missing (e.g. {', '.join(self._missing_examples)}); searched {where}. "
                "Pass text_only=True to keep captions without audio."
            )
        table = pa.concat_tables(self._tables) if self._tables else _SCHEMA.empty_table()
        rep.seconds = round(time.perf_counter() - start, 4)
        info = DatasetInfo(description=rep.to_json(), features=FEATURES)
        logger.info(
            "%s %s: %d rows read, %d kept, %d dropped", rep.corpus, rep.split, rep.rows_read, rep.rows_kept, rep.dropped
        )
        return Dataset(table, info=info, split=NamedSplit(self.split))


def _run(
    candidates: Iterable[_Candidate],
    report: ReaderReport,
    *,
    split: str,
    text_only: bool,
    max_duration: float | None,
    locate: Callable[[_Candidate], str | None] | None,
    searched: Sequence[str],
    exclude_ids: Iterable[Any] | None,
    verify_decode: bool,
    num_workers: int | None,
) -> Dataset:
    exclude = _id_set(exclude_ids)
    if exclude:
        report.overlap_filters.append(f"exclude_ids ({len(exclude)} ids)")
    assembler = _Assembler(
        report,
        split=split,
        text_only=text_only,
        max_duration=max_duration,
        locate=None if text_only else locate,
        exclude=exclude,
        verify_decode=verify_decode,
        num_workers=num_workers,
        searched=searched,
    )
    if not text_only and not any(Path(s).is_dir() for s in searched):
        _warn(
            f"{report.corpus} {split}: no audio folder found (looked for {', '.join(searched)}); every row will be "
            "dropped as missing audio. Pass text_only=True for captions only, or audio_dir=..."
        )
    return assembler.run(candidates)


def _new_report(corpus: str, split: str, root: Path, text_only: bool, max_duration: float | None) -> ReaderReport:
    return ReaderReport(
        corpus=corpus,
        split=split,
        root=os.path.abspath(root),
        text_only=bool(text_only),
        max_duration=None if max_duration is None else float(max_duration),
    )


# -------------------------------------------------------------------------------------- AudioCaps


def read_audiocaps(
    root: PathLike,
    split: str = "train",
    *,
    text_only: bool = False,
    max_duration: float | None = 40.0,
    captions_csv: PathLike | None = None,
    audio_dir: PathOrPaths | None = None,
    filename_patterns: Sequence[str] = AUDIOCAPS_FILENAME_PATTERNS,
    exclude_ids: Iterable[str] | None = None,
    verify_decode: bool = False,
    num_workers: int | None = None,
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
        text_only: captions only, audio is not looked for (``audio``/``duration`` are None).
        max_duration: drop clips longer than this many seconds (None keeps all).
        captions_csv: explicit caption CSV instead of ``root/{split}.csv``.
        audio_dir: explicit audio folder(s) (relative to ``root`` unless absolute).
        filename_patterns: ``str.format`` patterns with ``youtube_id``, ``start_time``,
            ``audiocap_id``, ``split``.
        exclude_ids: YouTube ids to drop (counted as ``dropped_eval_overlap``).
        verify_decode: decode every file completely instead of reading its header only.
        num_workers: threads probing audio files.

    Returns:
        A :class:`datasets.Dataset` (columns in :data:`FEATURES`, report in ``info.description``).
    """
    root = Path(root).expanduser()
    split = _canonical_split(split, _AUDIOCAPS_SPLITS, "AudioCaps")
    csv_path = (
        _as_paths(captions_csv, root)[0]
        if captions_csv is not None
        else _first_existing([root / f"{split}.csv", root / "dataset" / f"{split}.csv"])
    )
    if csv_path is None or not csv_path.is_file():
        raise FileNotFoundError(f"AudioCaps caption file for split {split!r} not found under {root}")
    _require_columns(csv_path, ("audiocap_id", "youtube_id", "start_time", "caption"))

    rows = [
        (r["audiocap_id"].strip(), r["youtube_id"].strip(), r["start_time"].strip(), r["caption"])
        for r in _open_csv(csv_path)
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

    folders = _as_paths(audio_dir, root) or [root / split, root / "audio" / split, root / "audio", root]
    locator = _AudioLocator(folders, filename_patterns)

    def locate(cand: _Candidate) -> str | None:
        yid, start, cap_id = cand.audio_key
        return locator.find({"youtube_id": yid, "start_time": start, "audiocap_id": cap_id, "split": split})

    def candidates() -> Iterator[_Candidate]:
        for (cap_id, yid, start, caption), index in zip(rows, caption_index, strict=True):
            yield _Candidate(
                source="audiocaps",
                audio_id=yid,
                caption_index=index,
                caption=caption,
                audio_key=(yid, start, cap_id),
            )

    report = _new_report("audiocaps", split, root, text_only, max_duration)
    return _run(
        candidates(),
        report,
        split=split,
        text_only=text_only,
        max_duration=max_duration,
        locate=locate,
        searched=locator.searched,
        exclude_ids=exclude_ids,
        verify_decode=verify_decode,
        num_workers=num_workers,
    )


# ----------------------------------------------------------------------------------------- Clotho


def read_clotho(
    root: PathLike,
    split: str = "evaluation",
    *,
    text_only: bool = False,
    max_duration: float | None = 40.0,
    captions_csv: PathLike | None = None,
    audio_dir: PathOrPaths | None = None,
    audio_extensions: Sequence[str] = (".wav", ".flac"),
    exclude_ids: Iterable[str] | None = None,
    verify_decode: bool = False,
    num_workers: int | None = None,
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
        text_only, max_duration, exclude_ids, verify_decode, num_workers: see the module docstring.
        captions_csv: explicit caption CSV.
        audio_dir: explicit audio folder(s) (relative to ``root`` unless absolute).
        audio_extensions: extensions tried, after the exact ``file_name``, for the same stem.
    """
    root = Path(root).expanduser()
    split = _canonical_split(split, _CLOTHO_SPLITS, "Clotho")
    name = f"clotho_captions_{split}.csv"
    csv_path = (
        _as_paths(captions_csv, root)[0]
        if captions_csv is not None
        else _first_existing([root / name, root / "clotho_csv_files" / name])
    )
    if csv_path is None or not csv_path.is_file():
        raise FileNotFoundError(f"Clotho caption file {name} not found under {root}")
    columns = _require_columns(csv_path, ("file_name",))
    caption_cols = sorted((c for c in columns if re.fullmatch(r"caption_\d+", c)), key=lambda c: int(c.split("_")[1]))
    if not caption_cols:
        raise ValueError(f"{csv_path}: no caption_N columns; found {columns}")

    folders = _as_paths(audio_dir, root) or [
        root / split,
        root / "clotho_audio_files" / split,
        root / f"clotho_audio_{split}",
    ]
    patterns = ["{file_name}"] + [f"{{stem}}{ext}" for ext in audio_extensions]
    locator = _AudioLocator(folders, patterns)

    def locate(cand: _Candidate) -> str | None:
        return locator.find({"file_name": cand.audio_id, "stem": os.path.splitext(cand.audio_id)[0]})

    def candidates() -> Iterator[_Candidate]:
        for row in _open_csv(csv_path):
            file_name = (row.get("file_name") or "").strip()
            if not file_name:
                continue
            for col in caption_cols:
                yield _Candidate(
                    source="clotho",
                    audio_id=file_name,
                    caption_index=int(col.split("_")[1]) - 1,
                    caption=row.get(col) or "",
                    audio_key=file_name,
                )

    report = _new_report("clotho", split, root, text_only, max_duration)
    return _run(
        candidates(),
        report,
        split=split,
        text_only=text_only,
        max_duration=max_duration,
        locate=locate,
        searched=locator.searched,
        exclude_ids=exclude_ids,
        verify_decode=verify_decode,
        num_workers=num_workers,
    )


# ---------------------------------------------------------------------------------------- WavCaps


def _wavcaps_subset(name: str) -> str:
    if name in WAVCAPS_SUBSETS:
        return name
    key = str(name).strip().lower()
    for subset in WAVCAPS_SUBSETS:
        if subset.lower() == key:
            return subset
    if key in _WAVCAPS_ALIASES:
        return _WAVCAPS_ALIASES[key]
    raise ValueError(f"unknown WavCaps subset {name!r}; expected one of {list(WAVCAPS_SUBSETS)}")


def _wavcaps_json_dir(root: Path) -> Path:
    return root / "json_files" if (root / "json_files").is_dir() else root


def _resolve_blacklists(
    blacklist: str | PathLike | Sequence[str | PathLike] | None, root: Path, json_dir: Path
) -> list[Path]:
    if blacklist is None:
        return []
    auto = isinstance(blacklist, str) and blacklist == "auto"
    items = ["test_ac"] if auto else [blacklist] if isinstance(blacklist, (str, os.PathLike)) else list(blacklist)
    paths: list[Path] = []
    for item in items:
        if isinstance(item, str) and item in _BLACKLIST_SHORT_NAMES:
            found = _first_existing(json_dir / "blacklist" / fname for fname in _BLACKLIST_SHORT_NAMES[item])
            if found is None:
                if auto:
                    _warn(
                        f"WavCaps: no {_BLACKLIST_SHORT_NAMES[item][0]} under {json_dir / 'blacklist'}; clips "
                        "overlapping the AudioCaps / Clotho evaluation sets are NOT removed (pass blacklist=... or "
                        "exclude_ids=..., or blacklist=None to silence this)"
                    )
                    return []
                raise FileNotFoundError(f"WavCaps blacklist {item!r} not found under {json_dir / 'blacklist'}")
            paths.append(found)
        else:
            p = Path(item).expanduser()
            if not p.is_absolute() and not p.exists():
                p = root / p
            if not p.is_file():
                raise FileNotFoundError(f"WavCaps blacklist file not found: {item}")
            paths.append(p)
    return paths


def _load_blacklists(paths: Sequence[Path]) -> dict[str | None, set[str]]:
    """``{subset: ids}``; ids under an unknown key apply to every subset (key ``None``)."""
    out: dict[str | None, set[str]] = {}
    for path in paths:
        with open(path, encoding="utf-8") as handle:
            payload = json.load(handle)
        if isinstance(payload, list):
            payload = {None: payload}
        if not isinstance(payload, dict):
            raise ValueError(f"{path}: a WavCaps blacklist is a JSON object of id lists")
        for key, ids in payload.items():
            subset = None
            if key is not None:
                k = str(key).strip().lower()
                subset = _BLACKLIST_KEYS.get(k) or next((s for s in WAVCAPS_SUBSETS if s.lower() == k), None)
            out.setdefault(subset, set()).update(_id_set(ids))
    return out


def read_wavcaps(
    root: PathLike,
    split: str = "train",
    *,
    subsets: Sequence[str] | str | None = None,
    text_only: bool = False,
    max_duration: float | None = 40.0,
    blacklist: str | PathLike | Sequence[str | PathLike] | None = "auto",
    exclude_ids: Iterable[str] | Mapping[str, Iterable[str]] | None = None,
    json_files: Mapping[str, PathOrPaths] | None = None,
    audio_dirs: Mapping[str, PathOrPaths] | PathOrPaths | None = None,
    verify_decode: bool = False,
    num_workers: int | None = None,
) -> Dataset:
    """Read WavCaps (Mei et al., 2023), one ChatGPT-processed caption per clip.

    Source: Hugging Face dataset ``cvssp/WavCaps`` (also github XinhaoMei/WavCaps ``data/``):
    ``json_files/{AudioSet_SL/as_final.json, BBC_Sound_Effects/bbc_final.json,
    FreeSound/fsd_final.json, SoundBible/sb_final.json}``, each ``{"num_captions_per_audio": 1,
    "data": [{"id", "caption", "duration", "audio", ...}]}`` (a bare list is accepted too). Common
    keys are ``id``, ``caption``, ``duration`` and ``audio`` (a path on the authors' machine,
    ignored); FreeSound adds ``file_name``, ``href``, ``tags``, ``author``, ``description``,
    ``download_link``; SoundBible ``title``, ``author``, ``description``, ``href``; BBC
    ``description``, ``category``, ``download_link``. AudioSet_SL ids are PANNs-style
    ``Y<youtube id>.wav``; the others are the site's numeric id. The flac audio comes in
    ``Zip_files/<subset>/`` split archives; once extracted the files are ``<id>.flac``
    (AudioSet_SL: ``Y<youtube id>.flac``) under
    ``mnt/fast/nobackup/scratch4weeks/xm00178/WavCaps/data/waveforms/<subset>_flac/``.

    The evaluation-overlap lists of the release, ``json_files/blacklist/blacklist_exclude_*.json``
    (``test_ac``: 1,451 AudioSet + 2,090 FreeSound ids, by their counts the AudioCaps val+test and
    Clotho validation+evaluation clips; ``all_ac``: 50,725 + 5,929, all AudioCaps and Clotho clips;
    ``ub8k_esc50_vggsound``: UrbanSound8K, ESC-50 and VGGSound overlaps), are
    objects ``{"AudioSet": ["Y<id>.wav", ...], "FreeSound": ["<id>", ...]}``; ``AudioSet`` ids apply
    to AudioSet_SL and ``FreeSound`` ids to FreeSound.

    Expected layout (``root`` is the release folder; ``root`` may also be ``json_files`` itself)::

        root/json_files/<subset>/<name>.json
        root/json_files/blacklist/blacklist_exclude_{test_ac,all_ac,...}.json
        audio of <subset>, searched in this order in the folders that exist:
            root/Audio/<subset>/, root/<subset>/, root/waveforms/<subset>_flac/, root/<subset>_flac/,
            root/Zip_files/<subset>/mnt/fast/nobackup/scratch4weeks/xm00178/WavCaps/data/waveforms/<subset>_flac/

    Args:
        root: the WavCaps folder.
        split: label written in ``split``/``pair_id`` (WavCaps has no splits), ``train`` by default.
        subsets: subset names (or aliases ``as``, ``bbc``, ``fsd``, ``sb``); all four by default.
        text_only: captions only. ``max_duration`` is then applied to the JSON ``duration``.
        max_duration: drop clips longer than this (seconds); None keeps all.
        blacklist: ``"auto"`` (default: ``blacklist_exclude_test_ac.json`` when present, else a
            warning), a short name (``"test_ac"``, ``"all_ac"``, ``"ub8k_esc50_vggsound"``), a path,
            a list of those, or None for no blacklist.
        exclude_ids: more ids to drop, for all subsets or as ``{subset: ids}``; ``Y<id>.wav``,
            ``Y<id>`` and ``<id>`` all match an AudioSet_SL clip.
        json_files: ``{subset: path(s)}`` overriding the caption files.
        audio_dirs: ``{subset: folder(s)}``, or folder(s) searched for the files of every selected
            subset; relative paths are taken from ``root``.
        verify_decode, num_workers: see the module docstring.
    """
    root = Path(root).expanduser()
    split = str(split).strip() or "train"
    if subsets is None:
        chosen = list(WAVCAPS_SUBSETS)
    else:
        chosen = [_wavcaps_subset(s) for s in ([subsets] if isinstance(subsets, str) else subsets)]
        chosen = list(dict.fromkeys(chosen))
    json_dir = _wavcaps_json_dir(root)

    report = _new_report("wavcaps", split, root, text_only, max_duration)
    blacklist_paths = _resolve_blacklists(blacklist, root, json_dir)
    banned = _load_blacklists(blacklist_paths)
    report.overlap_filters.extend(str(p) for p in blacklist_paths)
    if isinstance(exclude_ids, Mapping):
        for key, ids in exclude_ids.items():
            banned.setdefault(_wavcaps_subset(key), set()).update(_id_set(ids))
        if exclude_ids:
            report.overlap_filters.append("exclude_ids (per subset)")
    elif exclude_ids is not None:
        extra = _id_set(exclude_ids)
        banned.setdefault(None, set()).update(extra)
        if extra:
            report.overlap_filters.append(f"exclude_ids ({len(extra)} ids)")

    sources: list[tuple[str, list[Path], _AudioLocator]] = []
    searched: list[str] = []
    for subset in chosen:
        if json_files and subset in json_files:
            files = _as_paths(json_files[subset], root) or []
        else:
            canonical = json_dir / subset / WAVCAPS_SUBSETS[subset]
            files = [canonical] if canonical.is_file() else sorted((json_dir / subset).glob("*.json"))
        if not files:
            raise FileNotFoundError(f"no WavCaps caption JSON for subset {subset} under {json_dir / subset}")
        if isinstance(audio_dirs, Mapping):
            folders = _as_paths(audio_dirs.get(subset), root) or []
        elif audio_dirs is not None:
            folders = _as_paths(audio_dirs, root) or []
        else:
            folders = [
                root / "Audio" / subset,
                root / subset,
                root / "waveforms" / f"{subset}_flac",
                root / f"{subset}_flac",
                root / "Zip_files" / subset / _WAVCAPS_ZIP_INNER / f"{subset}_flac",
            ]
        locator = _AudioLocator(folders, ["{stem}.flac", "{stem}.wav", "{audio_id}.flac", "{audio_id}.wav"])
        searched.extend(locator.searched)
        sources.append((subset, files, locator))

    locators = {subset: loc for subset, _, loc in sources}

    def locate(cand: _Candidate) -> str | None:
        subset, stem = cand.audio_key
        return locators[subset].find({"stem": stem, "audio_id": cand.audio_id})

    def candidates() -> Iterator[_Candidate]:
        for subset, files, _ in sources:
            source = f"wavcaps/{subset}"
            bad = banned.get(subset, set()) | banned.get(None, set())
            counts: dict[str, int] = {}
            for path in files:
                with open(path, encoding="utf-8") as handle:
                    payload = json.load(handle)
                entries = payload.get("data", []) if isinstance(payload, dict) else payload
                for entry in entries:
                    raw_id = str(entry.get("id", "")).strip()
                    if not raw_id:
                        continue
                    stem = _strip_audio_ext(raw_id)
                    audio_id = _norm_id(raw_id) if subset == "AudioSet_SL" else stem
                    index = counts.get(audio_id, 0)
                    counts[audio_id] = index + 1
                    try:
                        meta = float(entry["duration"]) if entry.get("duration") is not None else None
                    except (TypeError, ValueError):
                        meta = None
                    yield _Candidate(
                        source=source,
                        audio_id=audio_id,
                        caption_index=index,
                        caption=entry.get("caption") or "",
                        audio_key=(subset, stem),
                        meta_duration=meta,
                        overlap=bool(bad) and (raw_id in bad or stem in bad or audio_id in bad),
                    )
                del payload, entries

    return _run(
        candidates(),
        report,
        split=split,
        text_only=text_only,
        max_duration=max_duration,
        locate=locate,
        searched=searched,
        exclude_ids=None,
        verify_decode=verify_decode,
        num_workers=num_workers,
    )


# --------------------------------------------------------------------------------------- Auto-ACD


def _autoacd_parts(youtube_id: str) -> tuple[str, str | None, str | None]:
    """``(audio_id, video_id, start_time)`` of an Auto-ACD ``youtube_id`` value."""
    m = _AUTOACD_ID.fullmatch(youtube_id)
    if not m:
        return youtube_id, None, None
    vid, start = m.group("vid"), m.group("start")
    return (vid if start is None else f"{vid}_{start}"), vid, start


def read_autoacd(
    root: PathLike,
    split: str = "train",
    *,
    text_only: bool = False,
    max_duration: float | None = 40.0,
    captions_csv: PathLike | None = None,
    audio_dir: PathOrPaths | None = None,
    filename_patterns: Sequence[str] = AUTOACD_FILENAME_PATTERNS,
    exclude_ids: Iterable[str] | None = None,
    verify_decode: bool = False,
    num_workers: int | None = None,
) -> Dataset:
    """Read Auto-ACD (Sun et al., ACM MM 2024; arXiv 2309.11500), generated captions of AudioSet /
    VGGSound clips.

    Source: Hugging Face dataset ``Loie/Auto-ACD``: ``train.csv`` (about 1.9 M rows) and
    ``test.csv`` (about 1 k rows), columns ``youtube_id,caption``. ``youtube_id`` is either the
    PANNs-style ``Y<11-char id>`` of an AudioSet clip or ``<11-char id>_<start, 6 digits>`` of a
    VGGSound clip (the suffix is the start time in the video). The audio is not distributed; users
    take it from their AudioSet / VGGSound copies.

    Expected layout::

        root/{train,test}.csv
        root/{split}/<clip file>     (or root/audio/{split}/, root/audio/, root/)

    ``audio_id`` is the ``youtube_id`` without the ``Y`` prefix (so an AudioSet clip has the same
    id as in AudioCaps / WavCaps); ``<id>_<start>`` ids are kept whole. A clip listed several times
    gets ``caption_index`` 0, 1, ... in file order. Default file names: ``{youtube_id}.wav``,
    ``Y{video_id}.wav``, ``{video_id}.wav``, ``{video_id}_{start_time}.wav`` and the same in flac.

    Args:
        root: the Auto-ACD folder.
        split: ``train`` or ``test``.
        captions_csv: explicit caption CSV.
        audio_dir: explicit audio folder(s).
        filename_patterns: patterns with ``youtube_id``, ``video_id``, ``start_time``, ``split``.
        text_only, max_duration, exclude_ids, verify_decode, num_workers: see the module docstring.
    """
    root = Path(root).expanduser()
    split = _canonical_split(split, _AUTOACD_SPLITS, "Auto-ACD")
    csv_path = _as_paths(captions_csv, root)[0] if captions_csv is not None else root / f"{split}.csv"
    if not csv_path.is_file():
        raise FileNotFoundError(f"Auto-ACD caption file {csv_path.name} not found under {root}")
    _require_columns(csv_path, ("youtube_id", "caption"))

    folders = _as_paths(audio_dir, root) or [root / split, root / "audio" / split, root / "audio", root]
    locator = _AudioLocator(folders, filename_patterns)

    def locate(cand: _Candidate) -> str | None:
        raw, vid, start = cand.audio_key
        return locator.find({"youtube_id": raw, "video_id": vid, "start_time": start, "split": split})

    def candidates() -> Iterator[_Candidate]:
        counts: dict[str, int] = {}
        for row in _open_csv(csv_path):
            raw = (row.get("youtube_id") or "").strip()
            if not raw:
                continue
            audio_id, vid, start = _autoacd_parts(raw)
            index = counts.get(audio_id, 0)
            counts[audio_id] = index + 1
            yield _Candidate(
                source="autoacd",
                audio_id=audio_id,
                caption_index=index,
                caption=row.get("caption") or "",
                audio_key=(raw, vid, start),
            )

    report = _new_report("autoacd", split, root, text_only, max_duration)
    return _run(
        candidates(),
        report,
        split=split,
        text_only=text_only,
        max_duration=max_duration,
        locate=locate,
        searched=locator.searched,
        exclude_ids=exclude_ids,
        verify_decode=verify_decode,
        num_workers=num_workers,
    )


# -------------------------------------------------------------------------------------- dispatch

_READERS: dict[str, Callable[..., Dataset]] = {
    "audiocaps": read_audiocaps,
    "clotho": read_clotho,
    "wavcaps": read_wavcaps,
    "autoacd": read_autoacd,
}
_NAME_ALIASES = {
    "audio_caps": "audiocaps",
    "clotho_v2": "clotho",
    "clotho-v2": "clotho",
    "clothov2": "clotho",
    "auto-acd": "autoacd",
    "auto_acd": "autoacd",
}


def read_corpus(name: str, root: PathLike, split: str, **options: Any) -> Dataset:
    """Read corpus ``name`` (``audiocaps``, ``clotho``, ``wavcaps``, ``wavcaps/<subset>`` or
    ``autoacd``) from ``root``; ``options`` go to the matching ``read_*`` function."""
    key = str(name).strip().lower()
    if key.startswith("wavcaps/"):
        if "subsets" in options:
            raise TypeError("give the WavCaps subset either in the name or as subsets=..., not both")
        options["subsets"] = [name.split("/", 1)[1]]
        key = "wavcaps"
    key = _NAME_ALIASES.get(key, key)
    if key not in _READERS:
        raise ValueError(f"unknown corpus {name!r}; expected one of {sorted(_READERS)} or wavcaps/<subset>")
    return _READERS[key](root, split, **options)


def with_path_audio(dataset: Dataset) -> Dataset:
    """The dataset with its ``audio`` column as plain ``{bytes, path}`` structs, for ``save_to_disk``: saving an
    ``Audio`` column embeds every file's bytes (a copy of the corpus) and keeps only the file names, which breaks the
    clip locations knowledge bases record. Rows are unchanged."""
    if "audio" not in dataset.column_names:
        return dataset
    features = dataset.features.copy()
    features["audio"] = {"bytes": Value("binary"), "path": Value("string")}
    return dataset.cast(features)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Read a local caption corpus and print its reader report.")
    parser.add_argument("name", help="audiocaps | clotho | wavcaps | wavcaps/<subset> | autoacd")
    parser.add_argument("root", help="corpus folder, laid out as distributed")
    parser.add_argument("split")
    parser.add_argument("--text-only", action="store_true")
    parser.add_argument("--max-duration", type=float, default=40.0, help="seconds; <= 0 keeps all")
    parser.add_argument("--save-to", help="save the dataset here (Dataset.save_to_disk)")
    args = parser.parse_args(argv)
    max_duration = args.max_duration if args.max_duration and args.max_duration > 0 else None
    ds = read_corpus(args.name, args.root, args.split, text_only=args.text_only, max_duration=max_duration)
    if args.save_to:
        with_path_audio(ds).save_to_disk(args.save_to)
    print(json.dumps(ReaderReport.from_dataset(ds).to_dict(), indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
