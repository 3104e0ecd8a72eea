"""Reading a corpus by name: :func:`read_corpus` dispatches to the corpus modules."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from datasets import Dataset

from datasets_scripts.readers.audiocaps import read_audiocaps
from datasets_scripts.readers.autoacd import read_autoacd
from datasets_scripts.readers.clotho import read_clotho
from datasets_scripts.readers.core import PathLike, ReaderError
from datasets_scripts.readers.wavcaps import read_wavcaps

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
    ``autoacd``) from ``root``; ``options`` go to the matching ``read_*`` function. WavCaps takes ``audio_dir`` as its
    ``audio_dirs`` (folders searched for every subset), and no ``captions_csv`` (its captions are JSON files)."""
    key = str(name).strip().lower()
    if key.startswith("wavcaps/"):
        if "subsets" in options:
            raise TypeError("give the WavCaps subset either in the name or as subsets=..., not both")
        options["subsets"] = [name.split("/", 1)[1]]
        key = "wavcaps"
    key = _NAME_ALIASES.get(key, key)
    if key not in _READERS:
        raise ReaderError(f"unknown corpus {name!r}; expected one of {sorted(_READERS)} or wavcaps/<subset>")
    if key == "wavcaps":
        if options.get("captions_csv") is not None:
            raise ReaderError("WavCaps captions are JSON files: captions_csv (--captions-csv) does not apply")
        options.pop("captions_csv", None)
        if "audio_dir" in options:
            options["audio_dirs"] = options.pop("audio_dir")
    return _READERS[key](root, split, **options)
