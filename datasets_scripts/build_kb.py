"""Build, refine and publish knowledge bases: the stages (read → embed → index → write) strung together."""

import contextlib
import functools
import os
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

import numpy as np
import pyarrow as pa
from datasets import Dataset, concatenate_datasets
from transformers.utils import logging

from datasets_scripts.embed import EmbeddedPairs, embed_pairs
from datasets_scripts.evaluation_overlap import (
    OverlapReport,
    clotho_sound_ids,
    drop_evaluation_overlap,
    evaluation_clip_ids,
)
from datasets_scripts.kb_recipes import CorpusSpec
from datasets_scripts.process_shards import Processes, processes
from datasets_scripts.publish import build_kb_index, kb_metadata, write_kb_folder
from datasets_scripts.readers import read_corpus
from datasets_scripts.refine import refine_knowledge_base
from modeling_paircap.file_io_paircap import folder_lock, write_atomic
from modeling_paircap.kb_format_paircap import METADATA_FILE, KnowledgeBaseError
from modeling_paircap.knowledge_base_paircap import PairCapKnowledgeBase
from modeling_paircap.tokens_paircap import TOKENS_FILE, ClipTokenStore, write_clip_tokens

logger = logging.get_logger(__name__)


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


def pairs_read_once(
    pairs: Dataset | Callable[[], Dataset], roots: Mapping[str, str | os.PathLike], path: Path, dist: Processes
) -> tuple[Dataset, OverlapReport | None]:
    """
    The pairs without the rows overlapping evaluation clips, and (main process) what was dropped. Only the main process
    reads the corpora (calls `pairs`, when it is a function) and the evaluation lists; under several processes it
    writes the kept rows to the Arrow file `path` (audio as paths, never embedded), which every other process then
    memory-maps (so all nodes must see one filesystem).
    """
    if dist.is_main_process:
        kept, overlap = drop_evaluation_overlap(
            pairs() if callable(pairs) else pairs, evaluation_clip_ids(roots), clotho_sound_ids_of(roots)
        )
        if dist.num_processes > 1:
            path.parent.mkdir(parents=True, exist_ok=True)
            write_atomic(path, functools.partial(_write_arrow, kept.with_format("arrow")[:]))
    dist.wait_for_everyone()
    return (kept, overlap) if dist.is_main_process else (Dataset.from_file(str(path)), None)


def _write_arrow(table: pa.Table, path: Path) -> None:
    with pa.OSFile(str(path), "wb") as sink, pa.ipc.new_stream(sink, table.schema) as writer:
        writer.write_table(table)


def build_knowledge_base(
    pairs: Dataset | Callable[[], Dataset],
    model,
    processor,
    output: str | os.PathLike,
    recipe: dict,
    index_factory: str = "Flat",
    work_dir: str | os.PathLike | None = None,
    accelerator: Processes | None = None,
    roots: Mapping[str, str | os.PathLike] | None = None,
    with_tokens: bool = True,
    **embed_options,
) -> Path:
    """
    Drop the rows of `pairs` (or of what the function `pairs` reads) overlapping evaluation clips (`roots` name the
    corpus folders whose evaluation lists are read), embed the rest (resumable; under `accelerate launch` the
    processes share the shards, and the corpora are read by the main process alone: `pairs_read_once`), build the
    index, and write the knowledge base folder (main process only; every process returns once it is written). Clip
    locations are recorded relative to the root they lie under, so `tokens --root NAME=DIR` finds them elsewhere.
    The main process holds `output`'s write lock throughout, taken before any work: a second writer, or an output
    that cannot be written, is a `FolderWriteError` at once; the KB already in `output` survives any failure.
    """
    dist = processes(accelerator)
    main = dist.is_main_process
    with folder_lock(output, METADATA_FILE) if main else contextlib.nullcontext():  # an unwritable output fails here
        roots = dict(roots or {})
        work_dir = Path(work_dir) if work_dir else default_work_dir(output)
        pairs, overlap = pairs_read_once(pairs, roots, work_dir / "pairs.arrow", dist)
        embedded = embed_pairs(
            pairs,
            model,
            processor,
            work_dir / "embed",
            accelerator=dist,
            with_tokens=with_tokens,
            **embed_options,
        )
        if main:
            _index_and_write(embedded, overlap, model, output, recipe, roots, index_factory)
    dist.wait_for_everyone()  # every process returns once the KB is written
    return Path(output)


def _index_and_write(
    embedded: EmbeddedPairs,
    overlap: OverlapReport,
    model,
    output: str | os.PathLike,
    recipe: dict,
    roots: Mapping[str, str | os.PathLike],
    index_factory: str,
) -> None:
    """Index the embedded pairs and write the KB folder, with their overlap report and clip locations relative to
    `roots`."""
    start = time.perf_counter()
    index, recall = build_kb_index(embedded.rows, index_factory)
    seconds = time.perf_counter() - start
    logger.info(f"built the {index_factory} index over {len(embedded.rows)} pairs in {seconds:.1f} s")
    if recall is not None:
        logger.info(f"index recall@10 against exact search: {recall:.4f}")
    overlap_record = {**overlap.to_dict(), "summary": overlap_summary(overlap.to_dict())}
    logger.info(f"evaluation overlap: {overlap_record['summary']}")
    clips = relative_clip_locations(embedded.clips, roots)
    metadata = kb_metadata(
        embedded.rows,
        clips.num_rows,
        model.retrieval_fingerprint(),
        embedded.tokens,
        model.config.audio_tokens_per_window,
        index_factory,
        recall,
        recipe,
        overlap_record,
    )
    write_kb_folder(embedded.rows, clips, metadata, output, index=index, tokens=embedded.tokens)


def clotho_sound_ids_of(roots: Mapping[str, str | os.PathLike]) -> dict:
    """Clotho's Freesound ids by (split, file name), when a clotho root is given."""
    return clotho_sound_ids(roots["clotho"]) if roots.get("clotho") else {}


def overlap_summary(report: dict) -> str:
    """One line for the log and the dataset card: rows dropped per source, and the evaluation lists not checked."""
    dropped = ", ".join(f"{source}: {count}" for source, count in sorted(report["dropped_by_source"].items()))
    unchecked = ", ".join(report["not_checked"])
    return f"{report['rows_dropped']} rows dropped ({dropped or 'none'}); not checked: {unchecked or 'none'}"


def relative_clip_locations(clips: pa.Table, roots: Mapping[str, str | os.PathLike]) -> pa.Table:
    """The clip table with each local path rewritten relative to the root folder it lies under (root name kept)."""
    resolved = sorted(((name, Path(folder).resolve()) for name, folder in roots.items()), key=lambda r: -len(str(r[1])))
    names, paths = [], []
    for path in clips.column("audio_path").to_pylist():
        name, relative = "", path
        if path and not path.startswith("<"):
            absolute = Path(path).resolve()
            for root_name, folder in resolved:
                if absolute.is_relative_to(folder):
                    name, relative = root_name, absolute.relative_to(folder).as_posix()
                    break
        names.append(name)
        paths.append(relative if relative and not relative.startswith("<") else None)
    clips = clips.set_column(clips.schema.get_field_index("audio_root"), "audio_root", pa.array(names, pa.string()))
    return clips.set_column(clips.schema.get_field_index("audio_path"), "audio_path", pa.array(paths, pa.string()))


def subset_clips(rows: Dataset, clips: pa.Table) -> tuple[Dataset, pa.Table, np.ndarray]:
    """The clips `rows` refer to (in their order), `rows` with `clip_index` renumbered into them, and the kept clips'
    old indices."""
    old = np.asarray(rows.with_format("arrow")["clip_index"].to_numpy(zero_copy_only=False), dtype=np.int64)
    kept = np.unique(old[old >= 0])
    renumbered = np.where(old >= 0, np.searchsorted(kept, old), -1).astype(np.int32)
    rows = rows.remove_columns("clip_index").add_column("clip_index", renumbered.tolist())
    return rows, clips.take(kept), kept


def refine_knowledge_base_folder(
    kb_folder: str | os.PathLike,
    train_folder: str | os.PathLike,
    output: str | os.PathLike,
    top_k: int = 5,
    fusion_weight: float = 0.5,
    device: str | None = None,
    index_factory: str = "Flat",
    work_dir: str | os.PathLike | None = None,
    chunk_size: int = 8192,
    accelerator: Processes | None = None,
) -> Path:
    """
    Refine the KB in `kb_folder` with the training pairs of the KB in `train_folder` (paper §3.5), and write it with
    the kept clips (and their tokens, when the KB has tokens; an index-only candidate KB gives an index-only refined
    KB, whose tokens `paircap kb tokens` adds). `output`'s write lock is held throughout, as in `build_knowledge_base`.
    Under `accelerate launch` the processes share the searches (chunks of `chunk_size` training pairs, through
    `work_dir`) and the main process writes the KB.
    """
    dist = processes(accelerator)
    with folder_lock(output, METADATA_FILE) if dist.is_main_process else contextlib.nullcontext():
        kb, train = PairCapKnowledgeBase.from_pretrained(kb_folder), PairCapKnowledgeBase.from_pretrained(train_folder)
        if kb.metadata.retrieval_fingerprint != train.metadata.retrieval_fingerprint:
            raise KnowledgeBaseError(f"{kb_folder} and {train_folder} were embedded in different retrieval spaces")
        work_dir = Path(work_dir) if work_dir else default_work_dir(output)
        refined, stats = refine_knowledge_base(
            kb.rows,
            train.rows,
            top_k=top_k,
            fusion_weight=fusion_weight,
            device=device,
            work_dir=work_dir / "refine",
            chunk_size=chunk_size,
            accelerator=dist,
        )
        if dist.is_main_process:
            recipe = {
                "refined_from": kb.metadata.recipe,
                "refined_against": train.metadata.recipe,
                "refinement": stats.to_dict(),
            }
            write_kb_subset(kb, refined, output, recipe, work_dir, index_factory)
    dist.wait_for_everyone()  # every process returns once the KB is written
    return Path(output)


def write_kb_subset(
    kb: PairCapKnowledgeBase,
    rows: Dataset,
    output: str | os.PathLike,
    recipe: dict,
    work_dir: str | os.PathLike,
    index_factory: str = "Flat",
) -> Path:
    """
    Write the KB of `rows` (some of `kb.rows`) to `output`: the clips they refer to and those clips' tokens (when `kb`
    has tokens; written through `work_dir`), a new index, and `recipe`. The caller holds `output`'s write lock.
    """
    rows, clips, kept_clips = subset_clips(rows.flatten_indices(), kb.clips)
    tokens = None
    if isinstance(kb.tokens, ClipTokenStore):
        counts = [kb.tokens.num_tokens(int(clip)) for clip in kept_clips]
        path = Path(work_dir) / TOKENS_FILE
        path.parent.mkdir(parents=True, exist_ok=True)
        write_clip_tokens(path, counts, kb.tokens.get(kept_clips.tolist()), kb.tokens.token_dim, kb.tokens.fingerprint)
        tokens = ClipTokenStore(path, len(clips))
    index, recall = build_kb_index(rows, index_factory)
    metadata = kb_metadata(
        rows,
        clips.num_rows,
        kb.metadata.retrieval_fingerprint,
        tokens,
        kb.metadata.audio_tokens_per_window,
        index_factory,
        recall,
        recipe,
        kb.metadata.evaluation_overlap,
    )
    return write_kb_folder(rows, clips, metadata, output, index=index, tokens=tokens)
