"""ESC-50 clips as caption pairs, and a two-event mixture corpus made from them (AL-mixgen style).

ESC-50 (K. J. Piczak, "ESC: Dataset for Environmental Sound Classification", ACM MM 2015) has 2,000
five-second clips in 50 classes. Each clip file is ``{fold}-{src_file}-{take}-{target}.wav``; takes
A, B, C of one ``src_file`` are cut from the same Freesound recording, so they are near-duplicates and
must never end up in different splits. The audio is licensed CC BY-NC 3.0 as a whole (some clips are
CC0 / CC-BY on Freesound); every row and every mixture here keeps the licence of the clips it uses.

This module turns folders of ESC-50 clips (each with a ``manifest.csv`` of columns
``filename,fold,target,category,esc10,src_file,take`` and optionally ``clip_license``) into:

* :func:`read_esc50_manifests` -- the clips (:class:`Esc50Clip`), files matched by stem, so a manifest
  may say ``.wav`` where the folder holds ``.flac``;
* :func:`split_by_source` -- train / validation / test by recording (``src_file``), stratified per class;
* :func:`single_clip_pairs` -- one pair per human-style phrasing of the clip's class
  (:data:`EVENT_PHRASES`), e.g. ``"a dog barks"``;
* :func:`write_mixtures` -- a corpus of 10 s mixtures of two clips of different classes, each with
  several captions naming both events ("a dog barks while rain falls on a surface",
  "a dog barks, then a cat meows", ...), the idea of AL-MixGen (Kim et al., "Exploring Train and
  Test-Time Augmentations for Audio-Language Learning", arXiv:2210.17143; later called PairMix) of
  training on mixed audio with both captions combined, here with real event captions; optionally
  with wrong events in the captions as a stand-in for weakly labelled pairs (WavCaps);
* :func:`named_events` / :func:`event_accuracy` -- which classes a caption names
  (:data:`EVENT_KEYWORDS`), to score generated captions of mixtures against their true events
  (:func:`mixture_events`).

Every dataset has the columns of the corpus readers (:data:`datasets_scripts.readers.FEATURES`) and a
:class:`~datasets_scripts.readers.ReaderReport` in ``info.description``.

Usage::

    from datasets_scripts.esc50 import read_esc50_manifests, split_by_source, write_mixtures

    clips = read_esc50_manifests(["../shared/data/esc50_cc", "../shared/data/esc50_more"])
    splits = split_by_source(clips, seed=0)
    train = write_mixtures(splits["train"], "out/esc50mix", count=1500, split="train")
    noisy = write_mixtures(splits["train"], "out/esc50mix", count=500, split="train", wrong_events=1)
"""

from __future__ import annotations

import csv
import json
import math
import os
import re
import time
import zlib
from collections import defaultdict
from collections.abc import Iterable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import soundfile as sf
from datasets import Dataset, DatasetInfo
from datasets.splits import NamedSplit

from datasets_scripts.readers import (
    FEATURES,
    _Assembler,
    _Candidate,
    _new_report,
    _run,
)

__all__ = [
    "DEFAULT_LICENCE",
    "EVENT_EXCLUSIONS",
    "EVENT_KEYWORDS",
    "EVENT_PHRASES",
    "Esc50Clip",
    "event_accuracy",
    "mixture_captions",
    "mixture_events",
    "named_events",
    "names_event",
    "read_esc50_manifests",
    "single_clip_pairs",
    "split_by_source",
    "write_mixtures",
]

PathLike = str | os.PathLike

#: Licence of a clip whose manifest has no ``clip_license`` (the ESC-50 dataset licence).
DEFAULT_LICENCE = "CC BY-NC 3.0"

# ----------------------------------------------------------------------------------- vocabulary

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

#: Word stems naming each class in a caption. A keyword matches at the start of a word of the
#: lowercased caption (``"bark"`` matches "barks", "barking"); several words must follow each other
#: (``"hand saw"``); a keyword ending in a space must also end its word (``"sea "`` matches "sea" but
#: not "season"). Punctuation and hyphens count as spaces ("cock-a-doodle" is "cock a doodle").
# fmt: off
EVENT_KEYWORDS: dict[str, tuple[str, ...]] = {
    "airplane": ("airplane", "aeroplane", "plane", "aircraft", "airliner", "jet "),
    "breathing": ("breath", "inhal", "exhal", "panting"),
    "brushing_teeth": ("teeth", "tooth"),
    "can_opening": (
        "can open", "can is opened", "can being opened", "can pops", "opens a can", "opening a can",
        "open a can", "opened a can", "can of ", "soda can", "tin can", "beer can", "fizz",
    ),
    "car_horn": ("horn", "honk"),
    "cat": ("cat ", "cats ", "meow", "kitten", "mew", "purr"),
    "chainsaw": ("chainsaw", "chain saw"),
    "chirping_birds": ("bird", "songbird", "tweet"),
    "church_bells": ("bell", "chime", "toll", "carillon"),
    "clapping": ("clap", "applau"),
    "clock_alarm": ("alarm",),
    "clock_tick": ("tick",),
    "coughing": ("cough",),
    "cow": ("cow", "moo", "cattle"),
    "crackling_fire": ("fire ", "fireplace", "crackl", "flame", "campfire", "bonfire"),
    "crickets": ("cricket",),
    "crow": ("crow ", "crows ", "crowing", "caw", "raven"),
    "crying_baby": ("baby", "babies", "infant", "cry", "cries", "sob"),
    "dog": ("dog", "bark", "pupp", "woof", "yelp"),
    "door_wood_creaks": ("creak",),
    "door_wood_knock": ("knock",),
    "drinking_sipping": ("drink", "sip", "slurp", "gulp", "swallow"),
    "engine": ("engine", "motor", "idling", "idle", "revving"),
    "fireworks": ("firework", "pyrotechnic"),
    "footsteps": ("footstep", "step", "walk", "stomp"),
    "frog": ("frog", "croak", "toad", "ribbit"),
    "glass_breaking": (
        "shatter", "smash", "glass break", "breaking glass", "breaking of glass", "broken glass",
        "glass is broken", "glass crash",
    ),
    "hand_saw": ("saw", "handsaw"),
    "helicopter": ("helicopter", "chopper", "rotor"),
    "hen": ("hen ", "hens ", "chicken", "cluck"),
    "insects": (
        "insect", "mosquito", "wasp", "bee ", "bees ", "bumblebee", "honeybee", "hornet", "cicada", "fly buzz",
        "flies buzz", "fly is buzz", "flies are buzz", "buzzing fl",
    ),
    "keyboard_typing": ("keyboard", "type", "typing", "keystroke"),
    "laughing": ("laugh", "giggl", "chuckl", "cackl"),
    "mouse_click": ("mouse",),
    "pig": ("pig ", "pigs ", "piglet", "piggy", "oink", "grunt", "hog ", "hogs ", "swine", "squeal"),
    "pouring_water": ("pour",),
    "rain": ("rain", "drizzl", "downpour"),
    "rooster": ("rooster", "cockerel", "cock a doodle"),
    "sea_waves": ("wave", "ocean", "sea ", "seas ", "seashore", "seaside", "shore", "tide", "surf "),
    "sheep": ("sheep", "lamb", "bleat", "baa"),
    "siren": ("siren",),
    "sneezing": ("sneez", "achoo"),
    "snoring": ("snore", "snoring"),
    "thunderstorm": ("thunder", "storm"),
    "toilet_flush": ("toilet", "flush"),
    "train": ("train", "locomotive", "rail"),
    "vacuum_cleaner": ("vacuum", "hoover"),
    "washing_machine": ("washing machine", "washer", "laundry", "spin cycle"),
    "water_drops": ("drip", "droplet", "water drop", "drop of water", "drops of water"),
    "wind": ("wind ", "winds ", "windy", "gust", "breez"),
}
# fmt: on

#: Uses of another class's word that do NOT name the class (regular expressions over the normalised
#: caption: lowercase words separated by single spaces). They are blanked out before that class's
#: keywords are looked for: a rooster *crows* (not a crow), rain *pours* (not pouring water), a chain
#: *saw* (not a hand saw), a cow *bellows* (not a bell), gun *fire* and a fire *alarm* (not a fire), a
#: *hornet* (not a car horn), a *cowbell* (not a cow), a *clap* of thunder (not clapping).
EVENT_EXCLUSIONS: dict[str, tuple[str, ...]] = {
    "crow": (
        r"(?:rooster|cockerel|cock)s? (?:is |are |was |were )?crow\w*",
        r"crow\w* (?:of )?(?:a |the )?(?:rooster|cockerel|cock)\w*",
    ),
    "pouring_water": (
        r"rain\w* (?:is |are |was |keeps |continues )?(?:pour\w*|poured)",
        r"pour\w* (?:down )?(?:of )?rain\w*",
        r"(?:it is |its |it s )pouring",
    ),
    "hand_saw": (r"chain saw\w*",),
    "church_bells": (r"bellow\w*", r"belly\w*"),
    "crackling_fire": (r"gun ?fire", r"fire (?:alarm|engine|truck|siren|brigade|hydrant|cracker)\w*"),
    "car_horn": (r"hornets?",),
    "cow": (r"cowbells?",),
    "clapping": (r"claps? of thunder", r"thunder ?claps?"),
}

_WORDS = re.compile(r"[a-z0-9]+")


def _normalise(text: str) -> str:
    """Lowercase words separated by single spaces, with a space at each end."""
    return " " + " ".join(_WORDS.findall(str(text).lower().replace("'", "").replace("\u2019", ""))) + " "


def _compile_keyword(keyword: str) -> str:
    body = _normalise(keyword).rstrip(" ")
    return body + " " if keyword.endswith(" ") else body


_KEYWORDS: dict[str, tuple[str, ...]] = {c: tuple(_compile_keyword(k) for k in ks) for c, ks in EVENT_KEYWORDS.items()}
_EXCLUSIONS: dict[str, re.Pattern[str]] = {
    c: re.compile(r"\b(?:" + "|".join(patterns) + r")") for c, patterns in EVENT_EXCLUSIONS.items()
}


def _names(text: str, category: str) -> bool:
    exclusion = _EXCLUSIONS.get(category)
    if exclusion is not None:
        text = exclusion.sub(" ", text)
    return any(k in text for k in _KEYWORDS[category])


def names_event(caption: str, category: str) -> bool:
    """Whether ``caption`` names ESC-50 class ``category`` (by :data:`EVENT_KEYWORDS`)."""
    if category not in _KEYWORDS:
        raise KeyError(f"unknown ESC-50 category {category!r}")
    return _names(_normalise(caption), category)


def named_events(caption: str) -> set[str]:
    """All ESC-50 classes that ``caption`` names."""
    text = _normalise(caption)
    return {category for category in _KEYWORDS if _names(text, category)}


# --------------------------------------------------------------------------------------- captions

# Templates over two clauses; {a} is the first clause in the sentence, {b} the second.
_SIMULTANEOUS = (
    "{a} while {b}",
    "{a} as {b}",
    "{a} and at the same time {b}",
    "{a} while in the background {b}",
    "{a}, meanwhile {b}",
)
_NEUTRAL = (
    "{a} and {b}",
    "{a}, and {b}",
    "{a} and also {b}",
)
_SEQUENTIAL = (  # {a} happens first
    "{a}, then {b}",
    "{a} and then {b}",
    "{a} before {b}",
    "first {a}, then {b}",
    "{a}, and after that {b}",
)
#: Seconds by which one event must start before the other for "A, then B" captions.
ORDER_GAP_S = 1.5
#: Seconds two events must overlap for "A while B" captions.
OVERLAP_S = 0.5


def _capitalise(text: str) -> str:
    return text[:1].upper() + text[1:]


def mixture_captions(
    event_a: str,
    event_b: str,
    count: int = 5,
    *,
    rng: np.random.Generator | int | None = None,
    first: int | None = None,
    simultaneous: bool = True,
) -> list[str]:
    """``count`` distinct captions naming both classes, built from :data:`EVENT_PHRASES`.

    Args:
        event_a, event_b: the two ESC-50 classes.
        count: how many captions.
        rng: a numpy Generator or a seed (deterministic).
        first: 0 when ``event_a`` clearly starts first, 1 when ``event_b`` does, None when neither:
            "A, then B" forms are used only in that order (and at least once).
        simultaneous: whether the events overlap in time ("A while B" forms).
    """
    if event_a == event_b:
        raise ValueError(f"a mixture needs two different classes, got {event_a!r} twice")
    for event in (event_a, event_b):
        if event not in EVENT_PHRASES:
            raise KeyError(f"unknown ESC-50 category {event!r}")
    gen = rng if isinstance(rng, np.random.Generator) else np.random.default_rng(rng)
    phrases = (EVENT_PHRASES[event_a], EVENT_PHRASES[event_b])
    candidates: list[tuple[str, int, int, int, bool]] = []  # template, slot first, phrase a, phrase b, ordered
    symmetric = _NEUTRAL + (_SIMULTANEOUS if simultaneous else ())
    for template in symmetric:
        for lead in (0, 1):
            for i in range(len(phrases[0])):
                for j in range(len(phrases[1])):
                    candidates.append((template, lead, i, j, False))
    if first in (0, 1):
        for template in _SEQUENTIAL:
            for i in range(len(phrases[0])):
                for j in range(len(phrases[1])):
                    candidates.append((template, first, i, j, True))
    order = gen.permutation(len(candidates))
    shuffled = [candidates[k] for k in order]
    if first in (0, 1):  # at least one caption says which event comes first
        index = next(k for k, c in enumerate(shuffled) if c[4])
        shuffled.insert(0, shuffled.pop(index))

    chosen: list[str] = []
    used_templates: set[str] = set()
    used_phrases: set[tuple[int, int]] = set()
    # three passes: new template and new phrasings, then new template, then anything new
    for level in (2, 1, 0):
        for template, lead, i, j, _ in shuffled:
            if len(chosen) >= count:
                break
            if level >= 1 and template in used_templates:
                continue
            if level >= 2 and ((0, i) in used_phrases or (1, j) in used_phrases):
                continue
            clauses = (phrases[0][i], phrases[1][j]) if lead == 0 else (phrases[1][j], phrases[0][i])
            caption = _capitalise(template.format(a=clauses[0], b=clauses[1]))
            if caption in chosen:
                continue
            chosen.append(caption)
            used_templates.add(template)
            used_phrases.update({(0, i), (1, j)})
    if len(chosen) < count:
        raise ValueError(f"only {len(chosen)} distinct captions exist for {event_a} + {event_b}, {count} asked")
    return chosen


# ------------------------------------------------------------------------------------------ clips


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


def _seed_sequence(seed: int, *words: str | int) -> np.random.SeedSequence:
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
        rng = np.random.default_rng(_seed_sequence(seed, "split", category))
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

    def candidates() -> Iterator[_Candidate]:
        for clip in ordered:
            for i, phrase in enumerate(EVENT_PHRASES[clip.category]):
                yield _Candidate(
                    source="esc50", audio_id=clip.audio_id, caption_index=i, caption=phrase, audio_key=clip.path
                )

    roots = sorted({os.path.dirname(c.path) for c in ordered})
    report = _new_report("esc50", split, Path(roots[0] if roots else "."), False, None)
    report.root = "+".join(roots) or report.root  # the join ReaderReport.__add__ uses for several roots
    return _run(
        candidates(),
        report,
        split=split,
        text_only=False,
        max_duration=None,
        locate=lambda cand: cand.audio_key if os.path.isfile(cand.audio_key) else None,
        searched=roots,
        exclude_ids=None,
        verify_decode=False,
        num_workers=num_workers,
    )


# --------------------------------------------------------------------------------------- mixtures

_PEAK = 0.9
_JSONL = "mixtures.jsonl"
_INT_SUBTYPES = {"PCM_16", "PCM_S8", "PCM_U8"}
# fields that define a mixture without decoding audio; a stored record must agree on all of them
_PLAN_KEYS = (
    "split",
    "index",
    "seed",
    "wrong_events",
    "events",
    "captioned_events",
    "sources",
    "sample_rate",
    "duration",
    "offset_samples",
    "crop_samples",
    "relative_gain_db",
    "captions",
)


class _ClipCache:
    """Decodes each source clip at most once per call (int16 when the file is 16-bit) and knows its level."""

    def __init__(self, sample_rate: int | None):
        self.sample_rate = sample_rate
        self._info: dict[str, tuple[int, int]] = {}
        self._audio: dict[str, np.ndarray] = {}
        self._level: dict[str, float] = {}

    def native(self, path: str) -> tuple[int, int]:
        """(frames, rate) from the header."""
        if path not in self._info:
            info = sf.info(path)
            self._info[path] = (int(info.frames), int(info.samplerate))
        return self._info[path]

    def rate(self, clips: Sequence[Esc50Clip]) -> int:
        if self.sample_rate is not None:
            return int(self.sample_rate)
        rates = sorted({self.native(c.path)[1] for c in clips})
        if len(rates) != 1:
            raise ValueError(f"the clips have different sampling rates {rates}; pass sample_rate=... to resample")
        return rates[0]

    def frames(self, path: str, rate: int) -> int:
        n, native = self.native(path)
        return n if native == rate else int(round(n * rate / native))

    def audio(self, path: str, rate: int) -> np.ndarray:
        """Mono float32 samples at ``rate``."""
        if path not in self._audio:
            info = sf.info(path)
            dtype = "int16" if info.subtype in _INT_SUBTYPES else "float32"
            data, native = sf.read(path, dtype=dtype, always_2d=True)
            if data.shape[1] > 1 or native != rate:
                mono = data.astype(np.float32).mean(axis=1)
                if dtype == "int16":
                    mono /= 32768.0
                if native != rate:
                    import soxr  # only needed when resampling

                    mono = soxr.resample(mono, native, rate).astype(np.float32)
                    want = self.frames(path, rate)
                    mono = np.pad(mono, (0, max(0, want - len(mono))))[:want]
                self._audio[path] = mono
            else:
                self._audio[path] = data[:, 0].copy()
        data = self._audio[path]
        return data.astype(np.float32) / 32768.0 if data.dtype == np.int16 else data

    def level(self, path: str, rate: int) -> float:
        """RMS over the clip's active 100 ms frames (within 40 dB of its loudest), so padding is ignored."""
        if path not in self._level:
            x = self.audio(path, rate).astype(np.float64)
            hop = max(1, rate // 10)
            n = len(x) // hop
            frames = x[: n * hop].reshape(n, hop) if n else x.reshape(1, -1)
            power = (frames**2).mean(axis=1)
            loudest = float(power.max()) if power.size else 0.0
            active = power[power >= loudest * 1e-4] if loudest > 1e-12 else power
            value = float(np.sqrt(active.mean())) if active.size else 0.0
            self._level[path] = value if value > 1e-6 else 1.0  # silent clip: leave as is
        return self._level[path]


def _db(value: float) -> float:
    return 20.0 * math.log10(value)


def _read_records(path: Path, repair: bool = False) -> dict[str, dict[str, Any]]:
    """Records of ``mixtures.jsonl`` by audio_id (the last one wins). A torn line (interrupted run) is
    skipped; with ``repair`` the file is rewritten without it."""
    records: dict[str, dict[str, Any]] = {}
    if not path.is_file():
        return records
    bad = False
    with open(path, encoding="utf-8") as handle:
        for line in handle:
            if not line.strip():
                continue
            try:
                record = json.loads(line)
                records[record["audio_id"]] = record
            except (ValueError, KeyError, TypeError):
                bad = True
    if bad and repair:
        _write_records(path, records.values())
    return records


def _write_records(path: Path, records: Iterable[Mapping[str, Any]]) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with open(tmp, "w", encoding="utf-8") as handle:
        for record in records:
            handle.write(json.dumps(record, sort_keys=True) + "\n")
    os.replace(tmp, path)


def _complete(path: Path, frames: int, rate: int) -> bool:
    try:
        info = sf.info(str(path))
    except Exception:  # unreadable: rewrite it
        return False
    return int(info.frames) == frames and int(info.samplerate) == rate


def write_mixtures(
    clips: Sequence[Esc50Clip],
    output_dir: PathLike,
    count: int,
    split: str,
    seed: int = 0,
    duration: float = 10.0,
    gain_db: tuple[float, float] = (-6.0, 6.0),
    captions_per_mixture: int = 5,
    wrong_events: int = 0,
    *,
    sample_rate: int | None = None,
    num_workers: int | None = None,
) -> Dataset:
    """Write ``count`` mixtures of two clips of different classes and return their caption pairs.

    Mixture ``index`` is drawn from ``(seed, split, index, wrong_events)`` alone: a class pair (uniform
    over the classes present, then a clip of each), a random offset of each clip on a
    ``duration``-second canvas (a longer clip is cropped at a random point) and a gain of the second
    clip relative to the first, uniform in ``gain_db`` dB, after both are brought to the same level
    (RMS over their active frames). The sum is scaled to a peak of 0.9 and written as 16-bit FLAC at
    the clips' rate (or ``sample_rate``, resampling with soxr) to ``output_dir/audio/{audio_id}.flac``
    (``audio_id`` = ``mix-{split}-{index:05d}``, or ``noisy1-...`` / ``noisy2-...`` with ``wrong_events``
    1 / 2, so all three kinds can share one ``output_dir``), with a JSON
    line in ``output_dir/mixtures.jsonl``: audio_id, split, index, seed, events (true classes),
    captioned_events, sources (audio_ids), src_files, licences, offsets (seconds) and offset_samples,
    crop_samples, gains_db (the gain applied to each source in the written file, normalisation
    included: ``audio ~= sum(10**(g/20) * placed source)``), relative_gain_db, peak_scale,
    sample_rate, duration, captions.

    Captions (``captions_per_mixture`` distinct ones, :func:`mixture_captions`) name both events;
    "A, then B" forms appear when A starts :data:`ORDER_GAP_S` seconds or more before B, "A while B"
    forms only when the two overlap. With ``wrong_events`` = 1 or 2, that many of the two events in
    the captions are replaced by random classes not in the mixture (noise pairs standing in for weak
    labels; source ``esc50_mix_noisy``).

    Resumable and deterministic: an existing complete file with a matching record is reused, not
    rewritten (files are written to a temporary name and renamed); a rerun returns an identical
    dataset and a larger ``count`` only adds mixtures. Records that disagree with the current
    arguments raise ``ValueError``.

    Returns:
        Rows ``esc50mix/{split}/{audio_id}/{i}`` in index order, with a :class:`ReaderReport`.
    """
    if wrong_events not in (0, 1, 2):
        raise ValueError(f"wrong_events must be 0, 1 or 2, got {wrong_events!r}")
    if count < 0 or captions_per_mixture < 1 or duration <= 0:
        raise ValueError("count must be >= 0, captions_per_mixture >= 1 and duration > 0")
    low, high = float(gain_db[0]), float(gain_db[1])
    if low > high:
        raise ValueError(f"gain_db must be (low, high), got {gain_db}")
    start_time = time.perf_counter()
    ordered = sorted(clips, key=lambda c: (c.category, c.audio_id))
    by_category: dict[str, list[Esc50Clip]] = defaultdict(list)
    for clip in ordered:
        by_category[clip.category].append(clip)
    categories = sorted(by_category)
    if count and len(categories) < 2:
        raise ValueError(f"mixtures need clips of at least two classes, got {categories}")
    all_categories = sorted(EVENT_PHRASES)

    out = Path(output_dir).expanduser()
    audio_dir = out / "audio"
    audio_dir.mkdir(parents=True, exist_ok=True)
    jsonl = out / _JSONL
    records = _read_records(jsonl, repair=True)
    cache = _ClipCache(sample_rate)
    rate = cache.rate(ordered) if count else int(sample_rate or 48000)
    canvas = int(round(duration * rate))
    gap = int(round(ORDER_GAP_S * rate))
    prefix = f"noisy{wrong_events}" if wrong_events else "mix"
    source = "esc50_mix_noisy" if wrong_events else "esc50_mix"

    def plan(index: int) -> dict[str, Any]:
        rng = np.random.default_rng(_seed_sequence(seed, "mix", split, index, wrong_events))
        pair = rng.choice(len(categories), size=2, replace=False)
        chosen = [by_category[categories[k]][int(rng.integers(len(by_category[categories[k]])))] for k in pair]
        offsets, crops, ends = [], [], []
        for clip in chosen:
            n = cache.frames(clip.path, rate)
            room, excess = canvas - min(n, canvas), n - min(n, canvas)
            offsets.append(int(rng.integers(room + 1)))
            crops.append(int(rng.integers(excess + 1)))
            ends.append(offsets[-1] + min(n, canvas))
        relative = float(rng.uniform(low, high)) if high > low else low
        events = [c.category for c in chosen]
        captioned = list(events)
        if wrong_events:
            slots = [0, 1] if wrong_events == 2 else [int(rng.integers(2))]
            others = [c for c in all_categories if c not in events]
            picks = rng.choice(len(others), size=len(slots), replace=False)
            for slot, k in zip(slots, picks, strict=True):
                captioned[slot] = others[int(k)]
        first = 0 if offsets[0] + gap <= offsets[1] else 1 if offsets[1] + gap <= offsets[0] else None
        overlap = min(ends) - max(offsets) >= OVERLAP_S * rate
        captions = mixture_captions(
            captioned[0], captioned[1], captions_per_mixture, rng=rng, first=first, simultaneous=overlap
        )
        return {
            "audio_id": f"{prefix}-{split}-{index:05d}",
            "split": split,
            "index": index,
            "seed": int(seed),
            "wrong_events": int(wrong_events),
            "events": events,
            "captioned_events": captioned,
            "sources": [c.audio_id for c in chosen],
            "src_files": [c.src_file for c in chosen],
            "licences": [c.licence for c in chosen],
            "sample_rate": rate,
            "duration": canvas / rate,
            "offsets": [o / rate for o in offsets],
            "offset_samples": offsets,
            "crop_samples": crops,
            "relative_gain_db": relative,
            "captions": captions,
            "_paths": [c.path for c in chosen],
        }

    def render(spec: dict[str, Any]) -> dict[str, Any]:
        placed = []
        for path, offset, crop in zip(spec["_paths"], spec["offset_samples"], spec["crop_samples"], strict=True):
            x = cache.audio(path, rate)[crop : crop + canvas]
            track = np.zeros(canvas, dtype=np.float32)
            track[offset : offset + len(x)] = x
            placed.append(track)
        levels = [cache.level(p, rate) for p in spec["_paths"]]
        gains = [-_db(levels[0]), -_db(levels[1]) + spec["relative_gain_db"]]
        mix = 10 ** (gains[0] / 20) * placed[0] + 10 ** (gains[1] / 20) * placed[1]
        peak = float(np.max(np.abs(mix)))
        scale = _PEAK / peak if peak > 0 else 1.0
        mix *= scale
        target = audio_dir / f"{spec['audio_id']}.flac"
        tmp = audio_dir / f".{spec['audio_id']}.{os.getpid()}.tmp.flac"
        sf.write(str(tmp), mix, rate, subtype="PCM_16", format="FLAC")
        os.replace(tmp, target)
        record = {k: v for k, v in spec.items() if not k.startswith("_")}
        record["gains_db"] = [g + _db(scale) for g in gains]
        record["peak_scale"] = scale
        return record

    specs = [plan(i) for i in range(count)]
    todo: list[dict[str, Any]] = []
    for spec in specs:
        old = records.get(spec["audio_id"])
        if old is not None:
            differs = [k for k in _PLAN_KEYS if old.get(k) != spec[k]]
            if differs:
                raise ValueError(
                    f"{jsonl}: mixture {spec['audio_id']} was written with other settings or clips (differs in "
                    f"{differs}); use another output_dir or remove it"
                )
            if _complete(audio_dir / f"{spec['audio_id']}.flac", canvas, rate):
                continue
        todo.append(spec)
    if todo:
        workers = num_workers or max(1, min(4, os.cpu_count() or 1))
        for spec in todo:  # decode sources once, before threads share the cache
            for path in spec["_paths"]:
                cache.level(path, rate)
        with open(jsonl, "a", encoding="utf-8") as handle, ThreadPoolExecutor(max_workers=workers) as pool:
            for record in pool.map(render, todo):
                handle.write(json.dumps(record, sort_keys=True) + "\n")
                handle.flush()
                records[record["audio_id"]] = record

    cols: dict[str, list] = {name: [] for name in FEATURES}
    for spec in specs:
        path = os.path.abspath(audio_dir / f"{spec['audio_id']}.flac")
        for i, caption in enumerate(spec["captions"]):
            cols["pair_id"].append(f"esc50mix/{split}/{spec['audio_id']}/{i}")
            cols["audio_id"].append(spec["audio_id"])
            cols["audio"].append({"bytes": None, "path": path})
            cols["caption"].append(caption)
            cols["source"].append(source)
            cols["split"].append(split)
            cols["duration"].append(canvas / rate)
    report = _new_report(source, split, out, False, None)
    report.rows_read = report.rows_kept = len(cols["pair_id"])
    report.clips_kept = len(specs)
    report.seconds = round(time.perf_counter() - start_time, 4)
    info = DatasetInfo(description=report.to_json(), features=FEATURES)
    return Dataset(_Assembler._to_table(cols), info=info, split=NamedSplit(split))


def mixture_events(output_dir: PathLike) -> dict[str, tuple[str, str]]:
    """True events of every mixture in ``output_dir/mixtures.jsonl``, by audio_id."""
    path = Path(output_dir).expanduser() / _JSONL
    if not path.is_file():
        raise FileNotFoundError(f"no mixture metadata at {path}")
    return {aid: (r["events"][0], r["events"][1]) for aid, r in _read_records(path).items()}


def event_accuracy(captions: Mapping[str, str], events: Mapping[str, Sequence[str]]) -> dict[str, float | int]:
    """How often captions name their items' events (by :func:`names_event`).

    Args:
        captions: one caption per item id (e.g. generated for each mixture's audio_id).
        events: the true events of every item id (e.g. :func:`mixture_events`).

    Returns:
        ``{"both": share of items whose caption names all their events, "any": share naming at least
        one, "count": items}``; the shares are NaN when ``captions`` is empty.
    """
    missing = [key for key in captions if key not in events]
    if missing:
        raise KeyError(f"no events for {len(missing)} caption id(s), e.g. {missing[:3]}")
    both = anyone = 0
    for key, caption in captions.items():
        hits = [names_event(caption, event) for event in events[key]]
        both += all(hits)
        anyone += any(hits)
    n = len(captions)
    return {"both": both / n if n else float("nan"), "any": anyone / n if n else float("nan"), "count": n}
