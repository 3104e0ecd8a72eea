"""Which ESC-50 events a caption names, and captions that name two.

* :func:`mixture_captions` -- distinct captions naming both events of a mixture ("a dog barks while rain falls on a
  surface", "a dog barks, then a cat meows", ...), built from the class phrases of :data:`.esc50.EVENT_PHRASES`;
* :func:`named_events` / :func:`names_event` / :func:`event_accuracy` -- which classes a caption names
  (:data:`EVENT_KEYWORDS`), to score generated captions of mixtures against their true events.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence

import numpy as np

from recipes.mini.local.esc50 import EVENT_PHRASES

__all__ = [
    "EVENT_EXCLUSIONS",
    "EVENT_KEYWORDS",
    "ORDER_GAP_S",
    "OVERLAP_S",
    "event_accuracy",
    "mixture_captions",
    "named_events",
    "names_event",
]

# ----------------------------------------------------------------------------------- vocabulary

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
    return events_named(caption, (category,))[0]


def events_named(caption: str, events: Sequence[str]) -> list[bool]:
    """Per ESC-50 class of ``events``, whether ``caption`` names it (by :data:`EVENT_KEYWORDS`)."""
    unknown = [event for event in events if event not in _KEYWORDS]
    if unknown:
        raise KeyError(f"unknown ESC-50 category {unknown[0]!r}")
    text = _normalise(caption)
    return [_names(text, event) for event in events]


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
        hits = events_named(caption, events[key])
        both += all(hits)
        anyone += any(hits)
    n = len(captions)
    return {"both": both / n if n else float("nan"), "any": anyone / n if n else float("nan"), "count": n}
