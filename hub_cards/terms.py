"""What every PairCap card says about terms: the licences of corpora and language models, and the template filling.

Licences are derived, not hard-coded: a release built on a language model carries that model's licence (Vicuna v1.5:
`llama2`; a model whose licence is not known here: `other`, with `license_name` and `license_link`); a release whose
weights were all trained here takes the most restrictive terms of its data. Every corpus a model was trained on or
retrieves from, and every source of a knowledge base, is listed with its terms; non-commercial ones are flagged.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass
from importlib.resources import files
from pathlib import Path

from huggingface_hub import CardData, ModelCard, RepoCard


@dataclass(frozen=True)
class Licence:
    """A card's licence: a Hub licence id, with `name` and `link` when it is `other`, and what it means in words."""

    license: str
    summary: str
    name: str | None = None
    link: str | None = None


@dataclass(frozen=True)
class SourceTerms:
    """The terms a corpus (a `source` of the corpus readers) is used under."""

    name: str
    license: str  # Hub licence id; `other` for terms that have none
    terms: str
    link: str
    commercial: bool | None  # False: non-commercial (or academic) use only; None: not known here
    dataset: str  # the card's `datasets:` entry

    @property
    def restricted(self) -> bool:
        """Not known to allow commercial use."""
        return self.commercial is not True

    @property
    def commercial_use(self) -> str:
        """The cards' "commercial use" cell."""
        return {True: "yes", False: "**no**", None: "unknown"}[self.commercial]


# Terms as the corpora state them (see also ../shared/data/README.md); keyed by the readers' `source` prefix.
SOURCE_TERMS = {
    "audiocaps": SourceTerms(
        "AudioCaps", "other", "AudioCaps repository terms (academic use)", "https://github.com/cdjkim/audiocaps",
        False, "audiocaps",
    ),
    "clotho": SourceTerms(
        "Clotho", "other", "Tampere University licence: experimental and non-commercial use only",
        "https://zenodo.org/records/4783391", False, "clotho",
    ),
    "wavcaps": SourceTerms(
        "WavCaps", "other", "academic use only", "https://github.com/XinhaoMei/WavCaps", False, "cvssp/WavCaps"
    ),
    "autoacd": SourceTerms(
        "Auto-ACD", "other", "the terms of its release (not known here)", "https://auto-acd.github.io/", None,
        "autoacd",
    ),
    "esc50": SourceTerms(
        "ESC-50", "cc-by-nc-3.0", "CC BY-NC 3.0 (the ESC-50 dataset licence; clips carry their Freesound licences)",
        "https://github.com/karolpiczak/ESC-50", False, "esc50",
    ),
}  # fmt: skip
# Language models whose licence is known, by a pattern of their hub id.
LANGUAGE_MODEL_LICENCES = (
    (
        re.compile(r"vicuna-\d+b-v1\.5|llama-2", re.IGNORECASE),
        Licence("llama2", "Llama 2 Community License (the language model is Llama 2 or fine-tuned from it)"),
    ),
)


def source_terms(source: str, overrides: Mapping[str, SourceTerms] | None = None) -> SourceTerms:
    """The terms of a `source` value (`wavcaps/FreeSound` -> WavCaps, `esc50_mix` -> ESC-50); `other` if unknown."""
    table = {**SOURCE_TERMS, **(overrides or {})}
    for key in sorted(table, key=len, reverse=True):
        if source == key or source.startswith((f"{key}/", f"{key}_")):
            return table[key]
    return SourceTerms(source, "other", "not known here: check the corpus' own terms", "", None, source)


def clip_licence_terms(name: str, licences: Collection[str], link: str, dataset: str) -> SourceTerms:
    """The terms of a set of clips under per-clip licences (`CC0`, `CC-BY`, `CC BY-NC 3.0`): the most restrictive."""
    labels = {re.sub(r"[\s_-]", "", label).upper() for label in licences}
    counts = ", ".join(f"{label}: {count}" for label, count in sorted(Counter(licences).items()))
    if any("NC" in label for label in labels):
        return SourceTerms(name, "cc-by-nc-3.0", f"per clip ({counts}); non-commercial", link, False, dataset)
    if labels <= {"CC0", "CC01.0"}:
        return SourceTerms(name, "cc0-1.0", f"per clip ({counts})", link, True, dataset)
    if labels <= {"CC0", "CC01.0", "CCBY", "CCBY3.0", "CCBY4.0"}:  # an unversioned CC BY on Freesound (ESC-50): 3.0
        licence = "cc-by-4.0" if "CCBY4.0" in labels else "cc-by-3.0"
        return SourceTerms(name, licence, f"per clip ({counts}); attribution required", link, True, dataset)
    return SourceTerms(name, "other", f"per clip ({counts})", link, None, dataset)


def language_model_licence(language_model: str | None) -> Licence:
    """
    The licence of the language model a release was assembled from (hub id or folder): a known family, else the
    `license` of a local folder's model card, else `other`, linked to the model's hub page.
    """
    name = language_model or "unknown"
    for pattern, licence in LANGUAGE_MODEL_LICENCES:
        if pattern.search(name):
            return licence
    card = Path(name) / "README.md"
    if card.is_file():
        data = ModelCard.load(card, ignore_metadata_errors=True).data
        if data.license:
            summary = f"`{data.license}`, the licence of the language model"
            return Licence(data.license, summary, data.license_name, data.license_link)
    link = f"https://huggingface.co/{name}" if is_hub_repo(name) else None
    return Licence(
        "other",
        f"the licence of the language model `{Path(name).name}`, not known here: check it before use",
        name="language-model-license",
        link=link,
    )


def release_licence(language_model: Licence | None, sources: Iterable[SourceTerms]) -> Licence:
    """
    The licence of a release: its language model's (`None`: the weights were all trained here, so the most
    restrictive terms of the data decide: CC BY-NC 4.0 when any source is not known to allow commercial use, CC BY 4.0
    when any needs attribution, else CC0). Non-commercial data under an LM licence is flagged by the card text.
    """
    if language_model is not None:
        return language_model
    sources = list(sources)
    restricted = sorted({s.name for s in sources if s.restricted})
    if restricted:
        return Licence("cc-by-nc-4.0", f"CC BY-NC 4.0, because of the non-commercial terms of {', '.join(restricted)}")
    if any(s.license != "cc0-1.0" for s in sources):
        return Licence("cc-by-4.0", "CC BY 4.0 (its data needs attribution; see below)")
    return Licence("cc0-1.0", "CC0 1.0")


def is_hub_repo(name: str | None) -> bool:
    """Whether `name` reads as a hub repository (`owner/name`, no local path of that name), so a card may link it."""
    return bool(name) and not Path(name).exists() and name.count("/") == 1


def restriction_note(terms: Iterable[SourceTerms], use: str = "This release learned from or retrieves") -> str | None:
    """The warning a card carries when any corpus is not known to allow commercial use."""
    names = sorted({term.name for term in terms if term.restricted})
    if not names:
        return None
    return (
        f"**Non-commercial data.** {', '.join(names)} {'is' if len(names) == 1 else 'are'} not licensed (or not known "
        f"to be licensed) for commercial use. {use} their captions: check their terms before any commercial use."
    )


def fill_template(card_class: type[RepoCard], card_data: CardData, template: str, **values) -> RepoCard:
    """A `card_class` card from this package's template file `template`, `card_data` as its YAML front matter."""
    return card_class.from_template(card_data, template_path=str(files(__package__) / template), **values)
