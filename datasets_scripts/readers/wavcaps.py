"""WavCaps: the reader of a local copy of the WavCaps release (caption JSONs, blacklists, flac audio)."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

from datasets import Dataset

from datasets_scripts.readers.core import (
    AudioLocator,
    Candidate,
    LayoutError,
    PathLike,
    PathOrPaths,
    ReaderError,
    ReaderOptions,
    as_paths,
    first_existing,
    id_set,
    norm_id,
    read_pairs,
    strip_audio_ext,
    warn,
)

#: WavCaps subsets (folder names of the release) and their caption files.
WAVCAPS_SUBSETS: dict[str, str] = {
    "AudioSet_SL": "as_final.json",
    "BBC_Sound_Effects": "bbc_final.json",
    "FreeSound": "fsd_final.json",
    "SoundBible": "sb_final.json",
}
_ALIASES = {
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
_ZIP_INNER = "mnt/fast/nobackup/scratch4weeks/xm00178/WavCaps/data/waveforms"


def _wavcaps_subset(name: str) -> str:
    if name in WAVCAPS_SUBSETS:
        return name
    key = str(name).strip().lower()
    for subset in WAVCAPS_SUBSETS:
        if subset.lower() == key:
            return subset
    if key in _ALIASES:
        return _ALIASES[key]
    raise ReaderError(f"unknown WavCaps subset {name!r}; expected one of {list(WAVCAPS_SUBSETS)}")


def _wavcaps_json_dir(root: Path) -> Path:
    return root / "json_files" if (root / "json_files").is_dir() else root


def _load_json(path: Path) -> Any:
    """The JSON value of a file; :class:`ReaderError` ``<file>:<line>:<column>: ...`` when it is not JSON."""
    try:
        with open(path, encoding="utf-8") as handle:
            return json.load(handle)
    except FileNotFoundError as error:
        raise LayoutError(f"{path}: no such file") from error
    except json.JSONDecodeError as error:
        raise ReaderError(f"{path}:{error.lineno}:{error.colno}: not valid JSON ({error.msg})") from None
    except UnicodeDecodeError as error:
        raise ReaderError(f"{path}: not UTF-8 text ({error.reason})") from None
    except OSError as error:
        raise ReaderError(f"{path}: cannot be read ({error.strerror or error})") from error


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
            found = first_existing(json_dir / "blacklist" / fname for fname in _BLACKLIST_SHORT_NAMES[item])
            if found is None:
                if auto:
                    warn(
                        f"WavCaps: no {_BLACKLIST_SHORT_NAMES[item][0]} under {json_dir / 'blacklist'}; clips "
                        "overlapping the AudioCaps / Clotho evaluation sets are NOT removed (pass blacklist=... or "
                        "exclude_ids=..., or blacklist=None to silence this)"
                    )
                    return []
                raise LayoutError(f"WavCaps blacklist {item!r} not found under {json_dir / 'blacklist'}")
            paths.append(found)
        else:
            p = Path(item).expanduser()
            if not p.is_absolute() and not p.exists():
                p = root / p
            if not p.is_file():
                raise LayoutError(f"WavCaps blacklist file not found: {item}")
            paths.append(p)
    return paths


def _load_blacklists(paths: Sequence[Path]) -> dict[str | None, set[str]]:
    """``{subset: ids}``; ids under an unknown key apply to every subset (key ``None``)."""
    out: dict[str | None, set[str]] = {}
    for path in paths:
        payload = _load_json(path)
        if isinstance(payload, list):
            payload = {None: payload}
        if not isinstance(payload, dict):
            raise ReaderError(f"{path}: a WavCaps blacklist is a JSON object of id lists")
        for key, ids in payload.items():
            subset = None
            if key is not None:
                k = str(key).strip().lower()
                subset = _BLACKLIST_KEYS.get(k) or next((s for s in WAVCAPS_SUBSETS if s.lower() == k), None)
            out.setdefault(subset, set()).update(id_set(ids))
    return out


def read_wavcaps(
    root: PathLike,
    split: str = "train",
    *,
    subsets: Sequence[str] | str | None = None,
    blacklist: str | PathLike | Sequence[str | PathLike] | None = "auto",
    json_files: Mapping[str, PathOrPaths] | None = None,
    audio_dirs: Mapping[str, PathOrPaths] | PathOrPaths | None = None,
    **shared: Any,
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
        blacklist: ``"auto"`` (default: ``blacklist_exclude_test_ac.json`` when present, else a
            warning), a short name (``"test_ac"``, ``"all_ac"``, ``"ub8k_esc50_vggsound"``), a path,
            a list of those, or None for no blacklist.
        json_files: ``{subset: path(s)}`` overriding the caption files.
        audio_dirs: ``{subset: folder(s)}``, or folder(s) searched for the files of every selected
            subset; relative paths are taken from ``root``.
        shared: the :class:`ReaderOptions`. With ``text_only``, ``max_duration`` applies to the JSON ``duration``;
            ``exclude_ids`` are more ids to drop, for all subsets or as ``{subset: ids}``; ``Y<id>.wav``, ``Y<id>``
            and ``<id>`` all match an AudioSet_SL clip.
    """
    options = ReaderOptions(**shared)
    root = Path(root).expanduser()
    if not root.is_dir():
        raise LayoutError(f"{root}: no such folder")
    split = str(split).strip() or "train"
    if subsets is None:
        chosen = list(WAVCAPS_SUBSETS)
    else:
        chosen = [_wavcaps_subset(s) for s in ([subsets] if isinstance(subsets, str) else subsets)]
        chosen = list(dict.fromkeys(chosen))
    json_dir = _wavcaps_json_dir(root)

    sources: list[tuple[str, list[Path], AudioLocator]] = []
    searched: list[str] = []
    for subset in chosen:
        if json_files and subset in json_files:
            files = as_paths(json_files[subset], root) or []
        else:
            canonical = json_dir / subset / WAVCAPS_SUBSETS[subset]
            files = [canonical] if canonical.is_file() else sorted((json_dir / subset).glob("*.json"))
        if not files:
            raise LayoutError(f"no WavCaps caption JSON for subset {subset} under {json_dir / subset}")
        if isinstance(audio_dirs, Mapping):
            folders = as_paths(audio_dirs.get(subset), root) or []
        elif audio_dirs is not None:
            folders = as_paths(audio_dirs, root) or []
        else:
            folders = [
                root / "Audio" / subset,
                root / subset,
                root / "waveforms" / f"{subset}_flac",
                root / f"{subset}_flac",
                root / "Zip_files" / subset / _ZIP_INNER / f"{subset}_flac",
            ]
        missing = [str(folder) for folder in folders if audio_dirs is not None and not folder.is_dir()]
        if missing:
            raise LayoutError(f"no such audio folder: {', '.join(missing)} (audio_dirs, --audio-dir)")
        locator = AudioLocator(folders, ["{stem}.flac", "{stem}.wav", "{audio_id}.flac", "{audio_id}.wav"])
        searched.extend(locator.searched)
        sources.append((subset, files, locator))

    locators = {subset: loc for subset, _, loc in sources}

    exclude_ids = options.exclude_ids
    report = options.new_report("wavcaps", split, root)
    blacklist_paths = _resolve_blacklists(blacklist, root, json_dir)
    banned = _load_blacklists(blacklist_paths)
    report.overlap_filters.extend(str(p) for p in blacklist_paths)
    if isinstance(exclude_ids, Mapping):
        for key, ids in exclude_ids.items():
            banned.setdefault(_wavcaps_subset(key), set()).update(id_set(ids))
        if exclude_ids:
            report.overlap_filters.append("exclude_ids (per subset)")
    elif exclude_ids is not None:
        extra = id_set(exclude_ids)
        banned.setdefault(None, set()).update(extra)
        if extra:
            report.overlap_filters.append(f"exclude_ids ({len(extra)} ids)")

    def locate(cand: Candidate) -> str | None:
        subset, stem = cand.audio_key
        return locators[subset].find({"stem": stem, "audio_id": cand.audio_id})

    def candidates() -> Iterator[Candidate]:
        for subset, files, _ in sources:
            source = f"wavcaps/{subset}"
            bad = banned.get(subset, set()) | banned.get(None, set())
            counts: dict[str, int] = {}
            for path in files:
                payload = _load_json(path)
                entries = payload.get("data", []) if isinstance(payload, dict) else payload
                if not isinstance(entries, list) or not all(isinstance(entry, dict) for entry in entries):
                    raise ReaderError(f"{path}: WavCaps captions are a list of objects (or {{'data': [...]}})")
                for entry in entries:
                    raw_id = str(entry.get("id", "")).strip()
                    if not raw_id:
                        continue
                    stem = strip_audio_ext(raw_id)
                    audio_id = norm_id(raw_id) if subset == "AudioSet_SL" else stem
                    index = counts.get(audio_id, 0)
                    counts[audio_id] = index + 1
                    try:
                        meta = float(entry["duration"]) if entry.get("duration") is not None else None
                    except (TypeError, ValueError):
                        meta = None
                    yield Candidate(
                        source=source,
                        audio_id=audio_id,
                        caption_index=index,
                        caption=entry.get("caption") or "",
                        audio_key=(subset, stem),
                        meta_duration=meta,
                        overlap=bool(bad) and (raw_id in bad or stem in bad or audio_id in bad),
                    )
                del payload, entries

    # the overlap ids are applied per subset above, by `Candidate.overlap`
    return read_pairs(candidates(), report, replace(options, exclude_ids=None), locate=locate, searched=searched)
