"""The core of the corpus readers: the pair record, the shared options, audio checks and the output format.

A corpus module turns its metadata into a stream of :class:`Candidate` rows and hands it, with a
:class:`ReaderReport` and the :class:`ReaderOptions` of the read, to :func:`read_pairs`, which applies the
filters, probes the audio and returns the :class:`datasets.Dataset` every reader returns (columns in
:data:`FEATURES`, report in ``info.description``).
"""

from __future__ import annotations

import json
import os
import re
import time
import warnings
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import pyarrow as pa
import soundfile as sf
from datasets import Audio, Dataset, DatasetInfo, Features, Value
from datasets.splits import NamedSplit
from transformers.utils import logging

logger = logging.get_logger(__name__)

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

_AUDIO_EXTENSIONS = (".wav", ".flac", ".mp3", ".ogg", ".opus", ".m4a", ".aiff", ".aif")
_YT_PREFIXED = re.compile(r"Y([A-Za-z0-9_-]{11})")
_REPORT_KEY = "paircap_reader_report"
_CHUNK_ROWS = 50_000
_MISSING_EXAMPLES = 3


class ReaderWarning(UserWarning):
    """Emitted when rows are dropped because of missing or unreadable audio, or a filter is absent."""


class ReaderError(ValueError):
    """A corpus that cannot be read as asked: an unknown corpus, split or subset, or a malformed caption file (the
    message names the file, and the line where there is one: ``<file>:<line>: ...``)."""


class LayoutError(ReaderError, FileNotFoundError):
    """A file or folder the read needs is not where the corpus's known layouts (or the caller) put it; the message
    says what was looked for."""


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
class Candidate:
    """One caption row from the metadata, before any audio check."""

    source: str
    audio_id: str
    caption_index: int
    caption: str
    audio_key: Any = None  # hashable; passed to the locator, shared by the captions of one clip
    meta_duration: float | None = None
    overlap: bool = False


@dataclass(frozen=True)
class ReaderOptions:
    """The options every reader takes, as keywords.

    Attributes:
        text_only: captions without audio (RECAP's caption-only datastore): no audio folder is needed or looked
            at, ``audio`` and ``duration`` are ``None``. ``max_duration`` then only applies where the metadata
            itself carries a duration (WavCaps), so a text-only WavCaps read keeps the same pairs as a read with
            audio.
        max_duration: drop rows whose audio is longer (seconds), as in the paper; ``None`` keeps everything.
        exclude_ids: clip ids to drop (counted as evaluation overlap), compared with ``audio_id`` and with the
            raw metadata id; a ``Y``-prefixed YouTube id also matches the bare one. WavCaps also takes
            ``{subset: ids}`` and has its ``blacklist``.
        verify_decode: also decode every audio file completely (slow) instead of only reading its header.
        num_workers: threads used to probe audio files.
    """

    text_only: bool = False
    max_duration: float | None = 40.0
    exclude_ids: Iterable[Any] | Mapping[str, Iterable[Any]] | None = None
    verify_decode: bool = False
    num_workers: int | None = None

    def new_report(self, corpus: str, split: str, root: PathLike) -> ReaderReport:
        """An empty report of a read of ``corpus`` with these options."""
        return ReaderReport(
            corpus=corpus,
            split=split,
            root=os.path.abspath(root),
            text_only=bool(self.text_only),
            max_duration=None if self.max_duration is None else float(self.max_duration),
        )


# --------------------------------------------------------------------------------------- helpers


def warn(message: str) -> None:
    """Emit a :class:`ReaderWarning`."""
    warnings.warn(message, ReaderWarning, stacklevel=2)


def canonical_split(split: str, table: Mapping[str, str], corpus: str) -> str:
    """The canonical name of ``split`` by ``table`` (alias -> name)."""
    key = str(split).strip().lower()
    if key not in table:
        raise ReaderError(f"unknown {corpus} split {split!r}; expected one of {sorted(set(table.values()))}")
    return table[key]


def as_paths(value: PathOrPaths | None, root: Path) -> list[Path] | None:
    """One path or several as a list, relative ones taken from ``root``; None stays None."""
    if value is None:
        return None
    items = [value] if isinstance(value, (str, os.PathLike)) else list(value)
    out = []
    for item in items:
        p = Path(item).expanduser()
        out.append(p if p.is_absolute() else root / p)
    return out


def first_existing(candidates: Iterable[Path]) -> Path | None:
    """The first of ``candidates`` that is a file."""
    for p in candidates:
        if p.is_file():
            return p
    return None


def strip_audio_ext(name: str) -> str:
    """``name`` without an audio file extension."""
    root, ext = os.path.splitext(name)
    return root if ext.lower() in _AUDIO_EXTENSIONS else name


def norm_id(value: Any) -> str:
    """Normalise a clip id for overlap matching: no audio extension, no PANNs ``Y`` prefix."""
    text = strip_audio_ext(str(value).strip())
    m = _YT_PREFIXED.fullmatch(text)
    return m.group(1) if m else text


def id_set(values: Iterable[Any] | None) -> set[str]:
    """The ids as given and normalised (:func:`norm_id`), for overlap matching."""
    out: set[str] = set()
    for v in values or ():
        s = str(v).strip()
        if s:
            out.add(s)
            out.add(norm_id(s))
    return out


class AudioLocator:
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


# --------------------------------------------------------------------------------- output format


class PairColumns:
    """Rows in the readers' output format (:data:`FEATURES`), collected column by column."""

    def __init__(self) -> None:
        self.columns: dict[str, list] = {name: [] for name in FEATURES}

    def __len__(self) -> int:
        return len(self.columns["pair_id"])

    def add(
        self,
        pair_id: str,
        audio_id: str,
        path: str | None,
        caption: str,
        source: str,
        split: str,
        duration: float | None,
    ) -> None:
        """One row; ``path`` (absolute) and ``duration`` are None for a text-only row."""
        cols = self.columns
        cols["pair_id"].append(pair_id)
        cols["audio_id"].append(audio_id)
        cols["audio"].append(None if path is None else {"bytes": None, "path": path})
        cols["caption"].append(caption)
        cols["source"].append(source)
        cols["split"].append(split)
        cols["duration"].append(duration)

    def table(self) -> pa.Table:
        arrays = [
            pa.array(self.columns[name], type=_AUDIO_TYPE if name == "audio" else _SCHEMA.field(name).type)
            for name in FEATURES
        ]
        return pa.Table.from_arrays(arrays, schema=_SCHEMA)


def pairs_dataset(tables: Sequence[pa.Table], report: ReaderReport) -> Dataset:
    """The dataset of the rows in ``tables`` (each in the :data:`FEATURES` schema), ``report`` in its description."""
    table = pa.concat_tables(tables) if tables else _SCHEMA.empty_table()
    info = DatasetInfo(description=report.to_json(), features=FEATURES)
    return Dataset(table, info=info, split=NamedSplit(report.split))


def with_path_audio(dataset: Dataset) -> Dataset:
    """The dataset with its ``audio`` column as plain ``{bytes, path}`` structs, for ``save_to_disk``: saving an
    ``Audio`` column embeds every file's bytes (a copy of the corpus) and keeps only the file names, which breaks the
    clip locations knowledge bases record. Rows are unchanged."""
    if "audio" not in dataset.column_names:
        return dataset
    features = dataset.features.copy()
    features["audio"] = {"bytes": Value("binary"), "path": Value("string")}
    return dataset.cast(features)


# ------------------------------------------------------------------------------------------ read


class _Assembler:
    """Applies the filters to a stream of candidates and builds the Arrow table chunk by chunk."""

    def __init__(
        self,
        report: ReaderReport,
        options: ReaderOptions,
        locate: Callable[[Candidate], str | None] | None,
        exclude: set[str],
        searched: Sequence[str],
    ):
        self.report = report
        self.options = options
        self.locate = locate
        self.exclude = exclude
        self.searched = list(searched)
        self.num_workers = options.num_workers or _default_workers()
        self._paths: dict[Any, str | None] = {}
        self._probes: dict[str, tuple[float | None, str | None]] = {}
        self._missing_examples: list[str] = []
        self._kept_clips: set[tuple[str, str]] = set()
        self._tables: list[pa.Table] = []

    # -- filters
    def _too_long(self, duration: float | None) -> bool:
        max_duration = self.options.max_duration
        return max_duration is not None and duration is not None and duration > max_duration

    def _excluded(self, cand: Candidate) -> bool:
        if cand.overlap:
            return True
        if not self.exclude:
            return False
        return cand.audio_id in self.exclude or norm_id(cand.audio_id) in self.exclude

    def _probe_new(self, paths: Iterable[str]) -> None:
        todo = sorted({p for p in paths if p not in self._probes})
        if not todo:
            return
        verify = self.options.verify_decode
        if self.num_workers > 1 and len(todo) > 1:
            with ThreadPoolExecutor(max_workers=self.num_workers) as pool:
                results = list(pool.map(lambda p: _probe(p, verify), todo))
        else:
            results = [_probe(p, verify) for p in todo]
        for path, result in zip(todo, results, strict=True):
            self._probes[path] = result
            if result[1] is not None:
                self.report.unreadable_files.append(path)
                warn(f"unreadable audio file {path} ({result[1]}); its rows are dropped")

    def add_chunk(self, chunk: list[Candidate]) -> None:
        rep = self.report
        rep.rows_read += len(chunk)
        survivors: list[tuple[Candidate, str]] = []
        pending: list[tuple[Candidate, str, str | None]] = []
        for cand in chunk:
            caption = str(cand.caption).strip() if cand.caption is not None else ""
            if not caption:
                rep.dropped_empty_caption += 1
            elif self._excluded(cand):
                rep.dropped_eval_overlap += 1
            elif self.options.text_only:
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

        rows = PairColumns()
        for cand, caption in survivors:
            self._emit(rows, cand, caption, None, None)
        for cand, caption, path in pending:
            duration, error = self._probes[path]
            if error is not None:
                rep.dropped_unreadable_audio += 1
            elif self._too_long(duration):
                rep.dropped_too_long += 1
            else:
                self._emit(rows, cand, caption, path, duration)
        if len(rows):
            self._tables.append(rows.table())

    def _emit(self, rows: PairColumns, cand: Candidate, caption: str, path: str | None, duration: float | None):
        split = self.report.split
        pair_id = f"{cand.source}/{split}/{cand.audio_id}/{cand.caption_index}"
        rows.add(pair_id, cand.audio_id, path, caption, cand.source, split, duration)
        self._kept_clips.add((cand.source, cand.audio_id))
        self.report.rows_kept += 1

    def run(self, candidates: Iterable[Candidate]) -> Dataset:
        start = time.perf_counter()
        buffer: list[Candidate] = []
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
            warn(
                f"{rep.corpus} {rep.split}: dropped {rep.dropped_missing_audio} of {rep.rows_read} rows whose audio "
                f"file is missing (e.g. {', '.join(self._missing_examples)}); searched {where}. "
                "Pass text_only=True to keep captions without audio."
            )
        rep.seconds = round(time.perf_counter() - start, 4)
        logger.info(
            "%s %s: %d rows read, %d kept, %d dropped", rep.corpus, rep.split, rep.rows_read, rep.rows_kept, rep.dropped
        )
        return pairs_dataset(self._tables, rep)


def read_pairs(
    candidates: Iterable[Candidate],
    report: ReaderReport,
    options: ReaderOptions,
    *,
    locate: Callable[[Candidate], str | None],
    searched: Sequence[str],
) -> Dataset:
    """The common tail of every reader: filter ``candidates`` by ``options``, find (``locate``, in the folders
    ``searched``) and probe their audio, count everything in ``report`` and return the dataset. A read with audio where
    none of the ``searched`` folders exists is a :class:`LayoutError`."""
    exclude = id_set(options.exclude_ids)
    if exclude:
        report.overlap_filters.append(f"exclude_ids ({len(exclude)} ids)")
    if not options.text_only and not any(Path(s).is_dir() for s in searched):
        raise LayoutError(
            f"{report.corpus} {report.split}: no audio folder (looked for {', '.join(searched)}); name one with "
            "audio_dir=... (--audio-dir), or read the captions alone with text_only=True (--text-only)"
        )
    locator = None if options.text_only else locate
    return _Assembler(report, options, locator, exclude, searched).run(candidates)
