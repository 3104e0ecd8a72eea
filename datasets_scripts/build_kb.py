"""Build, refine and publish knowledge bases: the stages (read → embed → index → write) strung together."""

import os
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

from datasets import Dataset, concatenate_datasets

from datasets_scripts.embed import embed_pairs
from datasets_scripts.publish import build_kb_index, kb_metadata, write_kb_folder
from datasets_scripts.readers import read_corpus
from datasets_scripts.recipes import CorpusSpec
from datasets_scripts.refine import refine_knowledge_base
from modeling_paircap.knowledge_base_paircap import KnowledgeBaseError, KnowledgeBaseMetadata, load_rows


def read_pairs(corpora: Sequence[CorpusSpec], roots: Mapping[str, str | os.PathLike]) -> Dataset:
    """Read and concatenate the corpora; `roots` maps a corpus name (`clotho`, `wavcaps`, ...) to its local folder."""
    parts = []
    for spec in corpora:
        family = spec.name.split("/")[0]
        root = roots.get(spec.name) or roots.get(family)
        if root is None:
            raise ValueError(f"{spec.name}:{spec.split} needs its corpus folder: pass --root {family}=PATH")
        parts.append(read_corpus(spec.name, root, spec.split, **spec.options))
    return concatenate_datasets(parts) if len(parts) > 1 else parts[0]


def default_work_dir(output: str | os.PathLike) -> Path:
    """Resumable intermediate files live beside the output folder, so they are never uploaded with it."""
    output = Path(output)
    return output.parent / f".{output.name}.work"


def build_knowledge_base(
    pairs: Dataset,
    model,
    processor,
    output: str | os.PathLike,
    recipe: dict,
    index_factory: str = "Flat",
    work_dir: str | os.PathLike | None = None,
    accelerator=None,
    **embed_options,
) -> Path:
    """Embed the pairs (resumable), build the index, and write the knowledge base folder (main process only)."""
    work_dir = Path(work_dir) if work_dir else default_work_dir(output)
    rows = embed_pairs(pairs, model, processor, work_dir / "embed", accelerator=accelerator, **embed_options)
    if accelerator is not None and not accelerator.is_main_process:
        return Path(output)
    start = time.perf_counter()
    index, recall = build_kb_index(rows, index_factory)
    print(f"built the {index_factory} index over {len(rows)} pairs in {time.perf_counter() - start:.1f} s", flush=True)
    if recall is not None:
        print(f"index recall@10 against exact search: {recall:.4f}", flush=True)
    metadata = kb_metadata(
        rows, model.encoder_fingerprint(), model.config.audio_tokens_per_window, index_factory, recall, recipe
    )
    return write_kb_folder(rows, metadata, output, index=index)


def refine_knowledge_base_folder(
    kb_folder: str | os.PathLike,
    train_folder: str | os.PathLike,
    output: str | os.PathLike,
    top_k: int = 5,
    fusion_weight: float = 0.5,
    device: str | None = None,
    index_factory: str = "Flat",
    work_dir: str | os.PathLike | None = None,
) -> Path:
    """Refine the KB in `kb_folder` with the training pairs of the KB in `train_folder` (paper §3.5), and write it."""
    kb_folder, train_folder = Path(kb_folder), Path(train_folder)
    kb_meta, train_meta = KnowledgeBaseMetadata.load(kb_folder), KnowledgeBaseMetadata.load(train_folder)
    if kb_meta.encoder_fingerprint != train_meta.encoder_fingerprint:
        raise KnowledgeBaseError(f"{kb_folder} and {train_folder} were embedded by different encoders")
    work_dir = Path(work_dir) if work_dir else default_work_dir(output)
    refined, stats = refine_knowledge_base(
        load_rows(kb_folder),
        load_rows(train_folder),
        top_k=top_k,
        fusion_weight=fusion_weight,
        device=device,
        work_dir=work_dir / "refine",
    )
    index, recall = build_kb_index(refined, index_factory)
    recipe = {"refined_from": kb_meta.recipe, "refined_against": train_meta.recipe, "refinement": stats.to_dict()}
    metadata = kb_metadata(
        refined, kb_meta.encoder_fingerprint, kb_meta.audio_tokens_per_window, index_factory, recall, recipe
    )
    return write_kb_folder(refined, metadata, output, index=index)
