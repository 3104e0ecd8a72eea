"""Model and dataset cards: the templates (`*.md`) and the code that fills them, the one place cards are made.

`model_card` renders release cards (their results led by the release's default configuration,
`default_configuration`), `dataset_card` knowledge-base cards; `terms` holds what both say about licences.
"""

from hub_cards.dataset_card import SIZE_CATEGORIES, render_dataset_card, size_category
from hub_cards.default_configuration import DefaultConfiguration, DefaultResult, release_default
from hub_cards.model_card import (
    earlier_provenance,
    load_evaluation,
    render_mini_model_card,
    render_model_card,
)
from hub_cards.terms import Licence, SourceTerms, clip_licence_terms, release_licence, source_terms

__all__ = [
    "SIZE_CATEGORIES",
    "DefaultConfiguration",
    "DefaultResult",
    "Licence",
    "SourceTerms",
    "clip_licence_terms",
    "earlier_provenance",
    "load_evaluation",
    "release_default",
    "release_licence",
    "render_dataset_card",
    "render_mini_model_card",
    "render_model_card",
    "size_category",
    "source_terms",
]
