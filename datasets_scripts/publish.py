"""Publishing glue: the index and metadata of a finished knowledge base, its dataset card, and the hub upload.

The folder itself is written, whole or not at all, by `modeling_paircap.knowledge_base_paircap.write_knowledge_base`
(what `PairCapKnowledgeBase.save_pretrained` calls too); this module adds what needs the repo's tooling: approximate
indexes with their recall, and the dataset card (`hub_cards.render_dataset_card`).
"""

import collections
import os
from pathlib import Path

import numpy as np
from datasets import Dataset

from datasets_scripts.faiss_index import build_index, recall_at_k
from hub_cards import render_dataset_card
from modeling_paircap.index_paircap import build_query
from modeling_paircap.kb_format_paircap import KnowledgeBaseMetadata, PairVectorView, push_folder_to_hub
from modeling_paircap.knowledge_base_paircap import write_knowledge_base
from modeling_paircap.tokens_paircap import ClipTokenStore


def build_kb_index(rows: Dataset, factory: str = "Flat", recall_queries: int = 1000, seed: int = 0):
    """
    Build the inner-product index over the rows' pair vectors, read chunk by chunk (the index is the only full copy).
    For an approximate factory, also measure recall@10 against exact search with pair-to-pair queries (W = 0.5) made
    from randomly drawn rows.
    """
    vectors = PairVectorView(rows)
    index = build_index(vectors, factory=factory, seed=seed)
    if factory == "Flat":
        return index, None
    rng = np.random.default_rng(seed)
    sample = np.sort(rng.choice(len(rows), size=min(recall_queries, len(rows)), replace=False))
    drawn = vectors[sample]
    queries = build_query("pair2pair", drawn[:, : vectors.audio_dim], drawn[:, vectors.audio_dim :], 0.5)
    return index, recall_at_k(index, vectors, queries, k=10)


def kb_metadata(
    rows: Dataset,
    num_clips: int,
    retrieval_fingerprint: str,
    tokens: ClipTokenStore | None,
    audio_tokens_per_window: int,
    index_factory: str,
    recall: float | None,
    recipe: dict,
    evaluation_overlap: dict | None = None,
) -> KnowledgeBaseMetadata:
    """Metadata of a finished knowledge base, counted from its rows; `tokens` None makes it index-only."""
    first = rows[0]
    return KnowledgeBaseMetadata(
        retrieval_fingerprint=retrieval_fingerprint,
        token_fingerprint=None if tokens is None else tokens.fingerprint,
        audio_dim=len(first["audio_embedding"]),
        text_dim=len(first["text_embedding"]),
        token_dim=0 if tokens is None else tokens.token_dim,
        audio_tokens_per_window=audio_tokens_per_window if tokens is not None else 0,
        num_pairs=len(rows),
        num_clips=num_clips,
        num_text_only=len(rows) - sum(rows["has_audio"]),
        index_factory=index_factory,
        index_recall_at_10=recall,
        sources=dict(collections.Counter(rows["source"])),
        recipe=recipe,
        evaluation_overlap=evaluation_overlap or {},
    )


def write_kb_folder(
    rows: Dataset,
    clips,
    metadata: KnowledgeBaseMetadata,
    folder: str | os.PathLike,
    index=None,
    tokens: ClipTokenStore | None = None,
    repo_id: str = "org/refined-audio-kb",
    model_repo: str = "org/paircap",
) -> Path:
    """Write the knowledge base folder with the full dataset card (see `write_knowledge_base` for the layout)."""

    def card(final: KnowledgeBaseMetadata) -> str:  # made from the final metadata: it names the build's shards
        return str(render_dataset_card(final, repo_id, model_repo))

    return write_knowledge_base(folder, rows, clips, metadata, index=index, tokens=tokens, card=card)


def push_kb_to_hub(folder: str | os.PathLike, repo_id: str, private: bool = False, token: str | None = None) -> str:
    """Upload a knowledge base folder (rows, clips, index, tokens, metadata, card) as a dataset repo."""
    return push_folder_to_hub(folder, repo_id, private=private, token=token)
