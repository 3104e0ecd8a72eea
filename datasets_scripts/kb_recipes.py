"""The paper's knowledge bases (§4.1 "Knowledge Base", Table 5) as named recipes."""

import argparse
from dataclasses import dataclass, field
from pathlib import Path

WAVCAPS_SUBSETS = ("AudioSet_SL", "BBC_Sound_Effects", "FreeSound", "SoundBible")


@dataclass(frozen=True)
class CorpusSpec:
    """One corpus split to read with `datasets_scripts.readers.read_corpus`, and its reader options."""

    name: str
    split: str
    options: dict = field(default_factory=dict)

    @classmethod
    def parse(cls, text: str) -> "CorpusSpec":
        """`name:split` (e.g. `clotho:development`, `wavcaps/FreeSound:train`); `name:split:text` for captions only."""
        parts = text.split(":")
        if len(parts) not in (2, 3) or (len(parts) == 3 and parts[2] != "text"):
            raise ValueError(f"{text!r}: a corpus is NAME:SPLIT or NAME:SPLIT:text")
        return cls(parts[0], parts[1], {"text_only": True} if len(parts) == 3 else {})


@dataclass(frozen=True)
class Recipe:
    """A knowledge base built from corpora, or refined from another recipe's KB against a training set's KB."""

    name: str
    description: str
    corpora: tuple[CorpusSpec, ...] = ()
    refine_from: str | None = None
    refine_against: str | None = None


BASE = (CorpusSpec("audiocaps", "train"), CorpusSpec("clotho", "development"))
LARGE = BASE + tuple(CorpusSpec(f"wavcaps/{subset}", "train") for subset in WAVCAPS_SUBSETS)
HUGE = LARGE + (CorpusSpec("autoacd", "train"),)

RECIPES = {
    recipe.name: recipe
    for recipe in (
        Recipe("base", "the training sets: AudioCaps train + Clotho development", BASE),
        Recipe("large", "base + WavCaps (all four sources, evaluation overlap removed)", LARGE),
        Recipe("huge", "large + Auto-ACD train (about 2.2 M pairs in the paper)", HUGE),
        Recipe(
            "refined-huge",
            "huge refined by pair-to-pair search with the base training pairs (paper §3.5; 127 k pairs in the paper)",
            refine_from="huge",
            refine_against="base",
        ),
        Recipe(
            "text-only",
            "RECAP's caption datastore: AudioCaps train + Clotho development captions, no audio",
            tuple(CorpusSpec(spec.name, spec.split, {"text_only": True}) for spec in BASE),
        ),
    )
}


def root_entry(text: str) -> tuple[str, str]:
    """A `NAME=DIR` command-line entry (an argparse type; `dict()` of the entries maps names to folders): where a
    corpus, or a knowledge base's clips, lives locally. The folder must exist."""
    name, sep, path = text.partition("=")
    if not sep or not name or not path:
        raise argparse.ArgumentTypeError(f"{text!r}: expected NAME=DIR, e.g. clotho=/data/clotho")
    if not Path(path).expanduser().is_dir():
        raise argparse.ArgumentTypeError(f"{text!r}: no such folder {path}")
    return name, path
