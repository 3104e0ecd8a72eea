"""Write a knowledge base folder in datasets-repo layout (parquet shards, FAISS index, metadata, card) and push it."""

import collections
import math
import os
import shutil
import uuid
from importlib.resources import files
from pathlib import Path

import numpy as np
from datasets import Dataset
from huggingface_hub import DatasetCard, DatasetCardData, HfApi

from datasets_scripts.faiss_index import build_index, recall_at_k, save_index
from modeling_paircap.knowledge_base_paircap import (
    DATA_DIR,
    INDEX_FILE,
    KB_COLUMNS,
    KnowledgeBaseMetadata,
    pair_vectors,
)
from modeling_paircap.retrieval_paircap import build_query

MAX_SHARD_BYTES = 500 * 2**20


def build_kb_index(rows: Dataset, factory: str = "Flat", recall_queries: int = 1000, seed: int = 0):
    """
    Build the inner-product index over the rows' pair vectors. For an approximate factory, also measure recall@10
    against exact search with pair-to-pair queries (W = 0.5) made from randomly drawn rows.
    """
    vectors = pair_vectors(rows)
    index = build_index(vectors, factory=factory, seed=seed)
    if factory == "Flat":
        return index, None
    rng = np.random.default_rng(seed)
    sample = rng.choice(len(rows), size=min(recall_queries, len(rows)), replace=False)
    audio_dim = len(rows[0]["audio_embedding"])
    queries = build_query("pair2pair", vectors[sample, :audio_dim], vectors[sample, audio_dim:], 0.5)
    return index, recall_at_k(index, vectors, queries, k=10)


def kb_metadata(
    rows: Dataset,
    encoder_fingerprint: str,
    audio_tokens_per_window: int,
    index_factory: str,
    recall: float | None,
    recipe: dict,
) -> KnowledgeBaseMetadata:
    """Metadata of a finished knowledge base, counted from its rows."""
    first = rows[0]
    token_dim = rows.features["audio_tokens"].shape[1]
    return KnowledgeBaseMetadata(
        encoder_fingerprint=encoder_fingerprint,
        audio_dim=len(first["audio_embedding"]),
        text_dim=len(first["text_embedding"]),
        token_dim=token_dim,
        audio_tokens_per_window=audio_tokens_per_window,
        num_pairs=len(rows),
        num_text_only=len(rows) - sum(rows["has_audio"]),
        index_factory=index_factory,
        index_recall_at_10=recall,
        sources=dict(collections.Counter(rows["source"])),
        recipe=recipe,
    )


def write_kb_folder(
    rows: Dataset,
    metadata: KnowledgeBaseMetadata,
    folder: str | os.PathLike,
    index=None,
    repo_id: str = "org/refined-audio-kb",
    model_repo: str = "org/paircap",
    max_shard_bytes: int = MAX_SHARD_BYTES,
) -> Path:
    """
    Write `folder` in datasets-repo layout: `data/train-<build>-*.parquet` (shards of at most about
    `max_shard_bytes`), the FAISS index (built flat when not given), `paircap_kb.json` and a dataset card whose
    `configs` make `load_dataset(folder)` return the rows. An existing `data/` is replaced. Each write gets a new build
    id in its shard names and card: datasets 5 caches a local folder by its `configs` patterns alone, so without it a
    KB rebuilt in place would load its previous rows.
    """
    missing = [column for column in KB_COLUMNS if column not in rows.column_names]
    if missing:
        raise ValueError(f"the rows lack the knowledge base columns {missing}")
    folder = Path(folder)
    data_dir = folder / DATA_DIR
    if data_dir.exists():
        shutil.rmtree(data_dir)
    data_dir.mkdir(parents=True)
    rows = rows.select_columns(list(KB_COLUMNS))
    metadata.build_id = uuid.uuid4().hex[:12]
    num_shards = max(1, math.ceil(rows.data.nbytes / max_shard_bytes))
    for shard in range(num_shards):
        part = rows.shard(num_shards, shard, contiguous=True)
        part.to_parquet(str(data_dir / f"train-{metadata.build_id}-{shard:05d}-of-{num_shards:05d}.parquet"))
    save_index(index if index is not None else build_index(pair_vectors(rows)), folder / INDEX_FILE)
    metadata.save(folder)
    render_dataset_card(metadata, repo_id, model_repo).save(folder / "README.md")
    return folder


def render_dataset_card(metadata: KnowledgeBaseMetadata, repo_id: str, model_repo: str) -> DatasetCard:
    """Fill `hub_cards/dataset_card.md`; its YAML `configs` point at the parquet shards."""
    card_data = DatasetCardData(
        language="en",
        pretty_name=repo_id.split("/")[-1],
        tags=["audio-captioning", "retrieval-augmented-generation", "faiss", "clap", "paircap"],
        configs=[
            {
                "config_name": "default",
                "data_files": [{"split": "train", "path": f"{DATA_DIR}/train-{metadata.build_id}-*.parquet"}],
            }
        ],
    )
    sources = ", ".join(f"{name}: {count}" for name, count in sorted(metadata.sources.items())) or "n/a"
    return DatasetCard.from_template(
        card_data,
        template_path=str(files("hub_cards") / "dataset_card.md"),
        pretty_name=repo_id.split("/")[-1],
        repo_id=repo_id,
        model_repo=model_repo,
        num_pairs=metadata.num_pairs,
        num_text_only=metadata.num_text_only,
        sources=sources,
        audio_dim=metadata.audio_dim,
        text_dim=metadata.text_dim,
        token_dim=metadata.token_dim,
        audio_tokens_per_window=metadata.audio_tokens_per_window,
        index_file=INDEX_FILE,
        index_factory=metadata.index_factory,
        index_recall=metadata.index_recall_at_10,
        encoder_fingerprint=metadata.encoder_fingerprint,
        recipe=metadata.recipe or "custom",
    )


def push_kb_to_hub(folder: str | os.PathLike, repo_id: str, private: bool = False, token: str | None = None) -> str:
    """Upload a knowledge base folder (rows, index, metadata, card) as a dataset repo; returns the commit URL."""
    api = HfApi(token=token)
    api.create_repo(repo_id, repo_type="dataset", private=private, exist_ok=True)
    commit = api.upload_folder(
        folder_path=str(folder), repo_id=repo_id, repo_type="dataset", commit_message="Upload PairCap knowledge base"
    )
    return str(commit)
