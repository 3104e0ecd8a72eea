"""Knowledge-base dataset cards, filled from `dataset_card.md` beside this module; the YAML front matter is built with
huggingface_hub's `DatasetCardData`."""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from huggingface_hub import DatasetCard, DatasetCardData

from hub_cards.terms import SourceTerms, fill_template, restriction_note, source_terms
from modeling_paircap.kb_format_paircap import DATA_DIR, INDEX_FILE, KnowledgeBaseMetadata

DATASET_TAGS = ["audio-captioning", "retrieval-augmented-generation", "faiss", "clap", "paircap"]
DATASET_TASKS = ["audio-text-to-text", "feature-extraction"]
SIZE_CATEGORIES = (
    "n<1K",
    "1K<n<10K",
    "10K<n<100K",
    "100K<n<1M",
    "1M<n<10M",
    "10M<n<100M",
    "100M<n<1B",
    "1B<n<10B",
    "10B<n<100B",
    "100B<n<1T",
)


def size_category(count: int) -> str:
    """The Hub's `size_categories` bucket of `count` examples."""
    for power, bucket in enumerate(SIZE_CATEGORIES, start=3):
        if count < 10**power:
            return bucket
    return "n>1T"


def dataset_licence(terms: Iterable[SourceTerms]) -> dict:
    """The dataset card's `license` (one id, or a list when the sources differ) and, for `other`, a name and link."""
    terms = list(terms)
    licences = sorted({term.license for term in terms}) or ["other"]
    fields: dict = {"license": licences[0] if len(licences) == 1 else licences}
    others = [term for term in terms if term.license == "other"]
    if "other" in licences:
        fields["license_name"] = "per-source-terms"
        links = {term.link for term in others if term.link}
        if len(links) == 1:
            fields["license_link"] = links.pop()
    return fields


def source_licence_table(sources: Mapping[str, int], overrides: Mapping[str, SourceTerms] | None = None) -> str:
    """Per source: pairs, corpus, terms, Hub licence id and whether commercial use is allowed."""
    lines = ["| source | pairs | corpus | terms | licence | commercial use |", "|---|---:|---|---|---|---|"]
    for source, count in sorted(sources.items()):
        term = source_terms(source, overrides)
        lines.append(
            f"| `{source}` | {count:,} | [{term.name}]({term.link}) | {term.terms} | `{term.license}` | "
            f"{term.commercial_use} |"
        )
    return "\n".join(lines)


def render_dataset_card(
    metadata: KnowledgeBaseMetadata,
    repo_id: str,
    model_repo: str,
    overrides: Mapping[str, SourceTerms] | None = None,
) -> DatasetCard:
    """
    Fill `dataset_card.md` from a knowledge base's metadata: its YAML `configs` point at the parquet shards;
    `license`, `size_categories` (from the pair count) and the per-source licence table come from the pairs per
    source the KB records (`overrides`: terms of a source known better than by its name, e.g. per-clip licences).
    """
    terms = [source_terms(source, overrides) for source in sorted(metadata.sources)]
    card_data = DatasetCardData(
        language="en",
        pretty_name=repo_id.split("/")[-1],
        task_categories=DATASET_TASKS,
        size_categories=size_category(metadata.num_pairs),
        tags=DATASET_TAGS,
        configs=[
            {
                "config_name": "default",
                "data_files": [{"split": "train", "path": f"{DATA_DIR}/train-{metadata.build_id}-*.parquet"}],
            }
        ],
        **dataset_licence(terms),
    )
    sources = ", ".join(f"{name}: {count}" for name, count in sorted(metadata.sources.items())) or "n/a"
    return fill_template(
        DatasetCard,
        card_data,
        "dataset_card.md",
        pretty_name=repo_id.split("/")[-1],
        repo_id=repo_id,
        model_repo=model_repo,
        num_pairs=metadata.num_pairs,
        num_clips=metadata.num_clips,
        num_text_only=metadata.num_text_only,
        has_tokens=metadata.has_tokens,
        sources=sources,
        source_table=source_licence_table(metadata.sources, overrides),
        restriction=restriction_note(terms, "This knowledge base holds"),
        audio_dim=metadata.audio_dim,
        text_dim=metadata.text_dim,
        token_dim=metadata.token_dim,
        audio_tokens_per_window=metadata.audio_tokens_per_window,
        index_file=INDEX_FILE,
        index_factory=metadata.index_factory,
        index_recall=metadata.index_recall_at_10,
        retrieval_fingerprint=metadata.retrieval_fingerprint,
        token_fingerprint=metadata.token_fingerprint or "none (index-only)",
        evaluation_overlap=metadata.evaluation_overlap.get("summary", "not checked"),
        recipe=metadata.recipe or "custom",
    )
