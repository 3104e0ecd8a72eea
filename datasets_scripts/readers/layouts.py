"""Where a split's caption file and audio folders are: in one of the layouts a reader knows (the corpus as distributed,
and as aac-datasets writes it), or where the caller names them (``captions_csv``, ``audio_dir``)."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from datasets_scripts.readers.core import LayoutError, PathLike, PathOrPaths, as_paths


@dataclass(frozen=True)
class Layout:
    """One way a corpus is laid out: the candidate caption files of a split, and the audio folders that go with them."""

    captions: tuple[Path, ...]
    audio: tuple[Path, ...]


def locate_split(
    corpus: str,
    split: str,
    root: Path,
    layouts: Sequence[Layout],
    captions_csv: PathLike | None = None,
    audio_dir: PathOrPaths | None = None,
) -> tuple[Path, list[Path]]:
    """The caption file and the audio folders of ``split``.

    The caption file is ``captions_csv`` or the first candidate of ``layouts`` that exists; the audio folders are
    ``audio_dir`` (each must exist) or those of the layout whose caption file was found (every layout's, when
    ``captions_csv`` is given). Relative paths are taken from ``root``.

    Raises:
        LayoutError: ``root`` or a named path does not exist, or no layout's caption file does (the message lists
            what was looked for).
    """
    if not root.is_dir():
        raise LayoutError(f"{root}: no such folder")
    if captions_csv is not None:
        path = as_paths(captions_csv, root)[0]
        if not path.is_file():
            raise LayoutError(f"{path}: no such caption file (captions_csv, --captions-csv)")
        folders = _unique(folder for layout in layouts for folder in layout.audio)
    else:
        found = next(((p, layout) for layout in layouts for p in layout.captions if p.is_file()), None)
        if found is None:
            tried = ", ".join(_shown(p, root) for p in _unique(p for layout in layouts for p in layout.captions))
            raise LayoutError(
                f"no {corpus} caption file for split {split!r} under {root} (looked for {tried}); "
                "name it with captions_csv=... (--captions-csv)"
            )
        path, layout = found
        folders = list(layout.audio)
    if audio_dir is not None:
        folders = as_paths(audio_dir, root) or []
        missing = [str(folder) for folder in folders if not folder.is_dir()]
        if missing:
            raise LayoutError(f"no such audio folder: {', '.join(missing)} (audio_dir, --audio-dir)")
    return path, folders


def versioned(root: Path, pattern: str, default: str) -> list[Path]:
    """The folders under ``root`` matching ``pattern`` (e.g. ``CLOTHO_v*``), newest name first; ``[root / default]``
    when none does, so that what was looked for names the usual one."""
    return sorted((p for p in root.glob(pattern) if p.is_dir()), reverse=True) or [root / default]


def _unique(paths: Iterable[Path]) -> list[Path]:
    return list(dict.fromkeys(paths))


def _shown(path: Path, root: Path) -> str:
    try:
        return str(path.relative_to(root))
    except ValueError:
        return str(path)
