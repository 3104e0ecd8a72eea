"""ESC-50 clips as caption pairs: the mini recipe's corpus.

ESC-50 (K. J. Piczak, "ESC: Dataset for Environmental Sound Classification", ACM MM 2015) has 2,000
five-second clips in 50 classes. Each clip file is ``{fold}-{src_file}-{take}-{target}.wav``; takes
A, B, C of one ``src_file`` are cut from the same Freesound recording, so they are near-duplicates and
must never end up in different splits. The audio is licensed CC BY-NC 3.0 as a whole (some clips are
CC0 / CC-BY on Freesound); every row here keeps the licence of its clip.

This module turns folders of ESC-50 clips (each with a ``manifest.csv`` of columns
``filename,fold,target,category,esc10,src_file,take`` and optionally ``clip_license``) into:

* :func:`read_esc50_manifests` -- the clips (:class:`Esc50Clip`), files matched by stem, so a manifest
  may say ``.wav`` where the folder holds ``.flac``;
* :func:`split_by_source` -- train / validation / test by recording (``src_file``), stratified per class;
* :func:`single_clip_pairs` -- one pair per human-style phrasing of the clip's class
  (:data:`EVENT_PHRASES`), e.g. ``"a dog barks"``.

Mixtures of two clips are in :mod:`.mixtures`, the scoring of captions by the events they name in
:mod:`.event_captions`. Every dataset has the columns of the corpus readers
(:data:`datasets_scripts.readers.FEATURES`) and a :class:`~datasets_scripts.readers.ReaderReport` in
``info.description``.

Usage::

    from recipes.mini.local.esc50 import read_esc50_manifests, single_clip_pairs, split_by_source

    clips = read_esc50_manifests(["../shared/data/esc50_cc", "../shared/data/esc50_more"])
    splits = split_by_source(clips, seed=0)
    test = single_clip_pairs(splits["test"], "test")
"""

from __future__ import annotations

import csv
import os
import zlib
from collections import defaultdict
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from datasets import Dataset

from datasets_scripts.readers.core import Candidate, PathLike, ReaderOptions, read_pairs

__all__ = [
    "DEFAULT_LICENCE",
    "EVENT_PHRASES",
    "Esc50Clip",
    "read_esc50_manifests",
    "seed_sequence",
    "single_clip_pairs",
    "split_by_source",
]

#: Licence of a clip whose manifest has no ``clip_license`` (the ESC-50 dataset licence).
DEFAULT_LICENCE = "CC BY-NC 3.0"

#: Human-style clauses (AudioCaps-like: lowercase, no final period) for each of the 50 ESC-50 classes.
#: Each one names its class by one of :data:`EVENT_KEYWORDS` and no other class.
EVENT_PHRASES: dict[str, tuple[str, ...]] = {
    "airplane": (
        "an airplane flies overhead",
        "a jet plane roars across the sky",
        "an aircraft passes by overhead",
        "a plane is flying over loudly",
    ),
    "breathing": (
        "a person breathes heavily",
        "someone is breathing in and out",
        "a man inhales and exhales slowly",
    ),
    "brushing_teeth": (
        "someone brushes their teeth",
        "a person is brushing teeth vigorously",
        "a toothbrush scrubs back and forth",
    ),
    "can_opening": (
        "a soda can is opened",
        "someone opens a can",
        "a can pops open with a fizz",
        "a can of soda is cracked open",
    ),
    "car_horn": (
        "a car horn honks",
        "a driver is honking the horn",
        "a horn blares in traffic",
        "car horns honk repeatedly",
    ),
    "cat": (
        "a cat meows",
        "a cat is meowing loudly",
        "a kitten mews repeatedly",
        "cats meow",
    ),
    "chainsaw": (
        "a chainsaw runs",
        "a chainsaw is cutting through wood",
        "a chainsaw drones loudly",
        "a chainsaw whines as it cuts",
    ),
    "chirping_birds": (
        "birds chirp",
        "birds are chirping and singing",
        "small birds tweet in the trees",
        "birdsong fills the air",
    ),
    "church_bells": (
        "church bells ring",
        "a church bell is tolling",
        "bells chime from a tower",
        "large bells ring out repeatedly",
    ),
    "clapping": (
        "people clap their hands",
        "a crowd is clapping and applauding",
        "hands clap rhythmically",
        "a person claps",
    ),
    "clock_alarm": (
        "an alarm clock rings",
        "an alarm is beeping repeatedly",
        "an alarm clock goes off",
        "a loud alarm rings continuously",
    ),
    "clock_tick": (
        "a clock ticks",
        "a clock is ticking steadily",
        "the steady ticking of a clock",
        "a wall clock ticks rhythmically",
    ),
    "coughing": (
        "a person coughs",
        "someone is coughing repeatedly",
        "a man coughs loudly",
    ),
    "cow": (
        "a cow moos",
        "a cow is mooing loudly",
        "cattle moo in a field",
        "a cow bellows",
    ),
    "crackling_fire": (
        "a fire crackles",
        "wood is crackling in a fireplace",
        "a campfire crackles and pops",
        "flames crackle and hiss",
    ),
    "crickets": (
        "crickets chirp",
        "crickets are chirping at night",
        "a cricket chirps steadily",
    ),
    "crow": (
        "a crow caws",
        "crows are cawing loudly",
        "a crow caws repeatedly",
        "several crows caw",
    ),
    "crying_baby": (
        "a baby cries",
        "an infant is crying loudly",
        "a baby wails and sobs",
        "a young child cries",
    ),
    "dog": (
        "a dog barks",
        "a dog is barking loudly",
        "dogs bark",
        "a small dog yelps and barks",
    ),
    "door_wood_creaks": (
        "a wooden door creaks",
        "a door is creaking open slowly",
        "an old door creaks on its hinges",
        "a door creaks as it swings open",
    ),
    "door_wood_knock": (
        "someone knocks on a wooden door",
        "a person is knocking on a door",
        "knocking on wood",
        "a door is knocked on several times",
    ),
    "drinking_sipping": (
        "a person sips a drink",
        "someone is drinking and swallowing",
        "a person slurps a beverage",
        "someone gulps down a drink",
    ),
    "engine": (
        "an engine idles",
        "a car engine is running",
        "a motor hums steadily",
        "an engine rumbles loudly",
    ),
    "fireworks": (
        "fireworks explode",
        "fireworks are bursting and popping",
        "a series of fireworks go off",
        "fireworks bang in the sky",
    ),
    "footsteps": (
        "footsteps sound on a hard floor",
        "a person is walking on a wooden floor",
        "someone walks with heavy steps",
        "footsteps approach",
    ),
    "frog": (
        "a frog croaks",
        "frogs are croaking",
        "a toad croaks repeatedly",
        "frogs croak at night",
    ),
    "glass_breaking": (
        "glass shatters",
        "a window shatters",
        "a bottle smashes into pieces",
        "glass breaks and shatters",
    ),
    "hand_saw": (
        "someone saws wood by hand",
        "a hand saw cuts through a plank",
        "a person is sawing a piece of wood",
        "a handsaw rasps back and forth",
    ),
    "helicopter": (
        "a helicopter flies overhead",
        "a helicopter hovers in the air",
        "the rotor blades of a helicopter thump",
        "a helicopter passes by",
    ),
    "hen": (
        "a hen clucks",
        "chickens are clucking",
        "a hen is clucking softly",
        "chickens cluck in a coop",
    ),
    "insects": (
        "insects buzz",
        "an insect is buzzing around",
        "a mosquito buzzes close by",
        "bees are buzzing",
    ),
    "keyboard_typing": (
        "someone types on a keyboard",
        "a person is typing on a computer keyboard",
        "keys clack as someone types",
        "fast typing on a keyboard",
    ),
    "laughing": (
        "a person laughs",
        "people are laughing",
        "someone giggles",
        "a man chuckles and laughs",
    ),
    "mouse_click": (
        "a computer mouse clicks",
        "someone is clicking a mouse",
        "mouse buttons click repeatedly",
        "a mouse is clicked several times",
    ),
    "pig": (
        "a pig oinks",
        "pigs are grunting",
        "a pig grunts and squeals",
        "pigs oink loudly",
    ),
    "pouring_water": (
        "water is poured into a glass",
        "someone pours water into a cup",
        "liquid pours from a bottle",
        "water is being poured",
    ),
    "rain": (
        "rain falls on a surface",
        "rain is pouring down",
        "heavy rain falls steadily",
        "it is raining hard",
    ),
    "rooster": (
        "a rooster crows",
        "a rooster is crowing loudly",
        "a cockerel crows in the morning",
        "roosters crow",
    ),
    "sea_waves": (
        "waves crash on the shore",
        "ocean waves are breaking on a beach",
        "the sea surges against the rocks",
        "waves roll onto a beach",
    ),
    "sheep": (
        "a sheep bleats",
        "sheep are bleating",
        "a lamb baas",
        "a flock of sheep bleat",
    ),
    "siren": (
        "a siren wails",
        "an emergency siren is blaring",
        "a police siren wails in the distance",
    ),
    "sneezing": (
        "a person sneezes",
        "someone is sneezing",
        "a man sneezes loudly",
        "someone sneezes twice",
    ),
    "snoring": (
        "a person snores",
        "someone is snoring loudly",
        "a man snores in his sleep",
        "loud snoring",
    ),
    "thunderstorm": (
        "thunder rumbles",
        "thunder is roaring in the distance",
        "a thunderstorm rumbles overhead",
        "thunder cracks and booms",
    ),
    "toilet_flush": (
        "a toilet flushes",
        "a toilet is flushed",
        "someone flushes a toilet",
        "water rushes as a toilet flushes",
    ),
    "train": (
        "a train passes by",
        "a train is rumbling along the tracks",
        "a locomotive chugs past",
        "a train clatters over the rails",
    ),
    "vacuum_cleaner": (
        "a vacuum cleaner runs",
        "someone is vacuuming the floor",
        "a vacuum cleaner whirs loudly",
        "a vacuum hums",
    ),
    "washing_machine": (
        "a washing machine runs",
        "a washing machine is spinning",
        "a washer rumbles through its spin cycle",
        "laundry tumbles in a washing machine",
    ),
    "water_drops": (
        "water drips",
        "water is dripping slowly",
        "drops of water fall into a puddle",
        "droplets drip steadily",
    ),
    "wind": (
        "wind blows",
        "the wind is howling",
        "strong gusts of wind blow",
        "a breeze blows past",
    ),
}


@dataclass(frozen=True)
class Esc50Clip:
    """One ESC-50 clip found on disk."""

    path: str  # absolute
    audio_id: str  # file stem, e.g. "1-100032-A-0"
    category: str
    src_file: str  # Freesound recording id shared by the takes A, B, C
    take: str
    fold: int
    licence: str
    target: int = -1


_AUDIO_EXTENSIONS = (".flac", ".wav", ".ogg", ".mp3", ".aiff", ".aif")
_REQUIRED = ("filename", "fold", "category", "src_file", "take")


def _as_roots(roots: PathLike | Iterable[PathLike]) -> list[Path]:
    if isinstance(roots, (str, os.PathLike)):
        return [Path(roots).expanduser()]
    return [Path(r).expanduser() for r in roots]


def read_esc50_manifests(
    roots: PathLike | Iterable[PathLike], *, default_licence: str = DEFAULT_LICENCE
) -> list[Esc50Clip]:
    """The clips listed by ``root/manifest.csv`` of each root, in manifest order.

    A row's file is ``root/<filename>``, or any audio file in ``root`` with the same stem (the shared
    ``esc50_cc`` manifest says ``.wav`` for files that are ``.flac``). ``licence`` is the row's
    ``clip_license`` when the manifest has one, else ``default_licence``.

    Raises:
        FileNotFoundError: a manifest, or the audio of a row, is missing (names the manifest and row).
        ValueError: a missing column, an unknown category, or one clip listed twice.
    """
    clips: list[Esc50Clip] = []
    seen: dict[str, str] = {}
    for root in _as_roots(roots):
        manifest = root / "manifest.csv"
        if not manifest.is_file():
            raise FileNotFoundError(f"no ESC-50 manifest at {manifest}")
        by_stem: dict[str, str] = {}
        for name in sorted(os.listdir(root)):
            stem, ext = os.path.splitext(name)
            if ext.lower() in _AUDIO_EXTENSIONS:
                by_stem.setdefault(stem, name)
        with open(manifest, encoding="utf-8-sig", newline="") as handle:
            reader = csv.DictReader(handle)
            columns = [c.strip() for c in reader.fieldnames or []]
            reader.fieldnames = columns
            missing = [c for c in _REQUIRED if c not in columns]
            if missing:
                raise ValueError(f"{manifest}: missing column(s) {missing}; found {columns}")
            for line, row in enumerate(reader, start=2):
                where = f"{manifest}, line {line}"
                filename = (row.get("filename") or "").strip()
                stem = os.path.splitext(filename)[0]
                category = (row.get("category") or "").strip()
                if category not in EVENT_PHRASES:
                    raise ValueError(f"{where}: unknown ESC-50 category {category!r} for {filename!r}")
                name = filename if (root / filename).is_file() else by_stem.get(stem)
                if not filename or name is None:
                    raise FileNotFoundError(f"{where}: no audio file for {filename!r} (stem {stem!r}) in {root}")
                if stem in seen:
                    raise ValueError(f"{where}: clip {stem} is already listed in {seen[stem]}")
                seen[stem] = where
                licence = (row.get("clip_license") or "").strip() or default_licence
                target = (row.get("target") or "").strip()
                clips.append(
                    Esc50Clip(
                        path=os.path.abspath(root / name),
                        audio_id=stem,
                        category=category,
                        src_file=(row.get("src_file") or "").strip(),
                        take=(row.get("take") or "").strip(),
                        fold=int(row["fold"]),
                        licence=licence,
                        target=int(target) if target else -1,
                    )
                )
    return clips


def seed_sequence(seed: int, *words: str | int) -> np.random.SeedSequence:
    """A SeedSequence from ``seed`` and labels; strings enter by CRC32 (stable across processes)."""
    entropy = [int(seed)]
    for w in words:
        entropy.append(zlib.crc32(w.encode("utf-8")) if isinstance(w, str) else int(w))
    return np.random.SeedSequence(entropy)


def _allocate(n: int, fractions: Mapping[str, float]) -> dict[str, int]:
    """Source counts per split for a class with ``n`` sources (see :func:`split_by_source`)."""
    names = list(fractions)
    counts = dict.fromkeys(names, 0)
    if n == 0:
        return counts
    if "train" in counts:
        counts["train"] = 1
    if n >= 2 and "test" in counts:
        counts["test"] = 1
    rest = n - sum(counts.values())
    if rest > 0:
        total = sum(fractions.values())
        ideal = {k: round(fractions[k] / total * n - counts[k], 9) for k in names}
        for _ in range(rest):  # one at a time to the split furthest below its share (ties: key order)
            best = max(names, key=lambda k: (ideal[k], -names.index(k)))
            counts[best] += 1
            ideal[best] -= 1
    return counts


def split_by_source(
    clips: Sequence[Esc50Clip],
    fractions: Mapping[str, float] | None = None,
    seed: int = 0,
) -> dict[str, list[Esc50Clip]]:
    """Split clips by recording (``src_file``), stratified per class; deterministic by ``seed``.

    For each class its distinct ``src_file`` values are shuffled (by ``seed`` and the class name) and
    dealt to the splits: 1 source -> train; 2 -> train and test; 3 or more -> at least one each in
    train and test, the rest one at a time to the split furthest below its share of ``fractions``
    (default train 0.6, validation 0.1, test 0.3; ties go to the split named first). All takes of a
    source go to the same split, so no ``src_file`` is in two splits, across all the folders the clips
    came from.

    Returns:
        ``{split: clips sorted by audio_id}`` for every key of ``fractions`` (possibly empty lists).
    """
    fractions = dict(fractions) if fractions is not None else {"train": 0.6, "validation": 0.1, "test": 0.3}
    if not fractions or any(f < 0 for f in fractions.values()) or sum(fractions.values()) <= 0:
        raise ValueError(f"fractions must be non-negative with a positive sum, got {fractions}")
    by_source: dict[str, list[Esc50Clip]] = defaultdict(list)
    for clip in clips:
        by_source[clip.src_file].append(clip)
    sources_of: dict[str, list[str]] = defaultdict(list)
    for src, members in by_source.items():
        # a recording belongs to one class; should one ever carry two, it counts for its most frequent
        cats = sorted({c.category for c in members}, key=lambda c: (-sum(m.category == c for m in members), c))
        sources_of[cats[0]].append(src)

    out: dict[str, list[Esc50Clip]] = {name: [] for name in fractions}
    for category in sorted(sources_of):
        sources = sorted(sources_of[category])
        rng = np.random.default_rng(seed_sequence(seed, "split", category))
        sources = [sources[k] for k in rng.permutation(len(sources))]
        start = 0
        counts = _allocate(len(sources), fractions)
        for name in fractions:
            for src in sources[start : start + counts[name]]:
                out[name].extend(by_source[src])
            start += counts[name]
    for name in out:
        out[name].sort(key=lambda c: c.audio_id)
    return out


def single_clip_pairs(clips: Sequence[Esc50Clip], split: str, *, num_workers: int | None = None) -> Dataset:
    """One row per phrasing of each clip's class (:data:`EVENT_PHRASES`), clips sorted by audio_id.

    ``pair_id`` is ``esc50/{split}/{audio_id}/{i}``, ``source`` ``"esc50"``, ``duration`` from the file
    header; a :class:`ReaderReport` (corpus ``esc50``) is in ``info.description``.
    """
    ordered = sorted(clips, key=lambda c: c.audio_id)

    def candidates() -> Iterator[Candidate]:
        for clip in ordered:
            for i, phrase in enumerate(EVENT_PHRASES[clip.category]):
                yield Candidate(
                    source="esc50", audio_id=clip.audio_id, caption_index=i, caption=phrase, audio_key=clip.path
                )

    roots = sorted({os.path.dirname(c.path) for c in ordered})
    options = ReaderOptions(max_duration=None, num_workers=num_workers)
    report = options.new_report("esc50", split, roots[0] if roots else ".")
    report.root = "+".join(roots) or report.root  # the join ReaderReport.__add__ uses for several roots
    return read_pairs(
        candidates(),
        report,
        options,
        locate=lambda cand: cand.audio_key if os.path.isfile(cand.audio_key) else None,
        searched=roots,
    )
