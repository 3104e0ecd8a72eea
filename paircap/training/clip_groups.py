"""Clip groups for retrieved training neighbours: per audio id, the clips its audio contains (a mixture's components).

A row's clip identities are its own audio id and its group, normalised (`normalise_clip_id`: takes of one ESC-50
recording are one clip). Two rows whose identities meet share audio, so neither may be the other's neighbour: the
neighbour's caption would tell the captioner nothing its own audio lacks.

The file format is one JSON object, ``{"mix-train-00001": ["1-100032-A-0", "2-118072-A-0"], ...}``.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections import defaultdict
from collections.abc import Collection, Mapping, Sequence
from pathlib import Path

from modeling_paircap.clip_ids_paircap import normalise_clip_id

__all__ = ["clip_groups_digest", "load_clip_groups", "shared_audio_exclusions"]

ClipGroups = Mapping[str, Collection[str]]


def load_clip_groups(path: str | os.PathLike) -> dict[str, list[str]]:
    """The groups of a JSON file ``{audio_id: [clip ids]}``; ValueError naming the file when it is not one."""
    path = Path(path)
    try:
        groups = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise ValueError(f"{path}: cannot read clip groups ({error})") from error
    valid = isinstance(groups, dict) and all(
        isinstance(clips, list) and all(isinstance(clip, str) for clip in clips) for clips in groups.values()
    )
    if not valid:
        raise ValueError(f"{path}: clip groups must be one JSON object {{audio_id: [clip ids, ...]}}")
    return groups


def clip_groups_digest(groups: ClipGroups | None) -> str | None:
    """A sha256 of the groups (order-independent), for caches they shape; None without groups."""
    if groups is None:
        return None
    canonical = {str(key): sorted(map(str, clips)) for key, clips in groups.items()}
    return hashlib.sha256(json.dumps(canonical, sort_keys=True).encode()).hexdigest()


def shared_audio_exclusions(audio_ids: Sequence[str], groups: ClipGroups | None = None) -> list[frozenset[str]]:
    """
    Per row, the audio ids of every row (itself included) whose clip identities meet its own, as the `exclude_ids`
    of `PairCapIndex.search`; empty for rows without audio. Built through an inverted map identity -> audio ids, once
    per distinct clip.
    """
    members = {
        normalise_clip_id(key): {normalise_clip_id(clip) for clip in clips} for key, clips in (groups or {}).items()
    }
    identities: dict[str, frozenset[str]] = {}
    holders: dict[str, set[str]] = defaultdict(set)
    for audio_id in dict.fromkeys(audio_ids):
        if audio_id:
            clip = normalise_clip_id(audio_id)
            identities[audio_id] = frozenset({clip, *members.get(clip, ())})
            for identity in identities[audio_id]:
                holders[identity].add(audio_id)
    excluded = {
        audio_id: frozenset().union(*(holders[identity] for identity in own)) for audio_id, own in identities.items()
    }
    return [excluded[audio_id] if audio_id else frozenset() for audio_id in audio_ids]
