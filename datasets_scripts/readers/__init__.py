"""Readers for local copies of the public audio-caption corpora used by PairCap.

Each reader turns a corpus folder, laid out as the corpus is distributed (or, for AudioCaps and Clotho, as
aac-datasets writes it), into a :class:`datasets.Dataset` with one row per (audio, caption) pair. Nothing is
downloaded: getting the corpora is the user's job, and every reader's docstring says where the corpus comes from and
which layouts it finds (``captions_csv`` and ``audio_dir`` name the files of another). One module per corpus
(:mod:`.audiocaps`, :mod:`.clotho`, :mod:`.wavcaps`, :mod:`.autoacd`),
:func:`read_corpus` by name in :mod:`.corpora`, the shared record, options, audio checks and output format in
:mod:`.core`, strict caption CSVs in :mod:`.caption_csv`, layouts in :mod:`.layouts`, the command line in :mod:`.cli`.

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

Options shared by every reader (keywords, the fields of :class:`ReaderOptions`): ``text_only=False``
(captions without audio), ``max_duration=40.0`` (seconds; ``None`` keeps everything), ``exclude_ids=None``
(clip ids to drop as evaluation overlap), ``verify_decode=False`` (decode every file, not only its header) and
``num_workers`` (threads probing audio files).

Metadata problems always stop a read, with a :class:`ReaderError` naming the file (and line): an unknown
corpus, split or subset, a caption file found in none of the known layouts (:class:`LayoutError`, which says what was
looked for), or a malformed row (an unterminated quote, a field over several lines, a wrong number of fields) is an
error, never a merge of rows; so is a read with audio where no audio folder exists. Audio problems never stop a
read: a row whose audio file is missing is counted and dropped (one summary :class:`ReaderWarning` per read); a
corrupt or unreadable file drops its rows with a :class:`ReaderWarning` naming the file.

The counts of a read are a :class:`ReaderReport`, stored as JSON in ``dataset.info.description``
(it survives ``select``/``filter``/``save_to_disk``); get it back with
``ReaderReport.from_dataset(ds)``. ``rows_read == rows_kept + dropped`` always holds.

Usage::

    from datasets_scripts.readers import ReaderReport, read_corpus

    ds = read_corpus("clotho", "/data/clotho_v2", "evaluation")
    report = ReaderReport.from_dataset(ds)
    kb = read_corpus("wavcaps", "/data/WavCaps", "train", blacklist="test_ac", text_only=True)

or from the shell: ``paircap read clotho /data/clotho_v2 evaluation``.
"""

from __future__ import annotations

from datasets_scripts.readers.audiocaps import AUDIOCAPS_FILENAME_PATTERNS, read_audiocaps
from datasets_scripts.readers.autoacd import AUTOACD_FILENAME_PATTERNS, read_autoacd
from datasets_scripts.readers.cli import main
from datasets_scripts.readers.clotho import read_clotho
from datasets_scripts.readers.core import (
    FEATURES,
    LayoutError,
    ReaderError,
    ReaderOptions,
    ReaderReport,
    ReaderWarning,
    with_path_audio,
)
from datasets_scripts.readers.corpora import read_corpus
from datasets_scripts.readers.wavcaps import WAVCAPS_SUBSETS, read_wavcaps

__all__ = [
    "AUDIOCAPS_FILENAME_PATTERNS",
    "AUTOACD_FILENAME_PATTERNS",
    "FEATURES",
    "WAVCAPS_SUBSETS",
    "LayoutError",
    "ReaderError",
    "ReaderOptions",
    "ReaderReport",
    "ReaderWarning",
    "main",
    "read_audiocaps",
    "read_autoacd",
    "read_clotho",
    "read_corpus",
    "read_wavcaps",
    "with_path_audio",
]
