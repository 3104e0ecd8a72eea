"""The refined knowledge base of PairCap (paper §3.5, eq. 7-9).

Every training pair j with audio queries the knowledge base with its own pair, ``[W·a_j ; (1−W)·t_j]`` (pair2pair,
eq. 4 and 9), and keeps its top-k hits; the union of all hits, in the KB's row order and with every column, is the
refined KB. Rows of evaluation splits never enter it, text-only rows only on request, and a training pair never
retrieves itself: the same ``pair_id``, or the same ``audio_id`` with the same caption up to case and white space.

Queries go to the index in chunks; with ``work_dir`` every finished chunk is saved, so an interrupted run resumes.
Under ``accelerate launch`` the processes share the chunks through ``work_dir``.

Usage::

    refined, stats = refine_knowledge_base(kb, train, top_k=5, fusion_weight=0.5)

or, on knowledge base folders, from the shell: ``paircap kb refine --kb KB --train TRAIN_KB --output OUTPUT --top-k 5
--weight 0.5``.
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
import tempfile
from collections import Counter, defaultdict
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import datasets
import numpy as np
from transformers.utils import logging

from datasets_scripts.columns import column
from datasets_scripts.job_files import ids_sha256
from datasets_scripts.process_shards import Processes, processes, run_shards
from modeling_paircap.file_io_paircap import write_atomic
from modeling_paircap.index_paircap import PairCapIndex, RetrievedPair, concat_pair_vectors
from modeling_paircap.kb_format_paircap import embedding_matrix

logger = logging.get_logger(__name__)

DEFAULT_EVAL_SPLITS = ("test", "evaluation", "eval", "val", "validation")
STATE_FILE = "refine_state.json"
CHUNK_FILE = "refine-chunk-{:05d}.npz"
CHUNK_GLOB = "refine-chunk-*.npz"
HIT_FIELDS = ("rows", "score", "audio_score", "text_score")


@dataclass
class RefinementStats:
    """What a refinement did. Scores are means over all (query, hit) pairs; None when there are no hits."""

    size_before: int
    candidates: int
    size_after: int
    queries: int
    skipped_train_rows: int
    duplicates_excluded: int
    hits: int
    mean_score: float | None
    mean_audio_score: float | None
    mean_text_score: float | None
    sizes_before_per_source: dict[str, int]
    sizes_after_per_source: dict[str, int]
    top_k: int
    fusion_weight: float
    exclude_splits: list[str]
    include_text_only: bool

    def to_dict(self) -> dict:
        return asdict(self)

    def summary(self) -> str:
        """One paragraph for logs."""
        per_source = ", ".join(
            f"{source} {self.sizes_after_per_source[source]}/{size}"
            for source, size in self.sizes_before_per_source.items()
        )
        scores = (
            "no hits"
            if self.mean_score is None
            else f"mean S {self.mean_score:.3f}, S_A {self.mean_audio_score:.3f}, S_T {self.mean_text_score:.3f}"
        )
        return (
            f"refined KB: {self.size_after} of {self.size_before} rows ({self.candidates} candidates outside splits "
            f"{self.exclude_splits}); {self.queries} queries, top_k {self.top_k}, W {self.fusion_weight}, "
            f"{self.skipped_train_rows} training rows without audio skipped, {self.duplicates_excluded} duplicates "
            f"excluded; {scores}; kept per source: {per_source}"
        )


@dataclass
class _Pairs:
    """Selected rows of a dataset in the KB row schema: their positions, ids, captions and embeddings."""

    rows: np.ndarray
    pair_ids: list[str]
    audio_ids: list[str]
    captions: list[str]
    audio: np.ndarray
    text: np.ndarray


def _has_audio(ds: datasets.Dataset) -> np.ndarray:
    return np.array(column(ds, "has_audio"), dtype=bool)


def _select_pairs(ds: datasets.Dataset, mask: np.ndarray) -> _Pairs:
    rows = np.flatnonzero(mask)
    ids, audio_ids, captions = (column(ds, name) for name in ("pair_id", "audio_id", "caption"))
    return _Pairs(
        rows=rows,
        pair_ids=[ids[row] for row in rows],
        audio_ids=[audio_ids[row] or "" for row in rows],
        captions=[captions[row] for row in rows],
        audio=embedding_matrix(ds, "audio_embedding")[rows],
        text=embedding_matrix(ds, "text_embedding")[rows],
    )


def _normalise_caption(caption: str) -> str:
    return " ".join(caption.split()).casefold()


def _candidate_mask(kb: datasets.Dataset, exclude_splits: frozenset[str], include_text_only: bool) -> np.ndarray:
    """KB rows outside the excluded splits, with audio unless `include_text_only`."""
    splits = column(kb, "split")
    outside = np.array([(split or "").strip().casefold() not in exclude_splits for split in splits], dtype=bool)
    return outside & (_has_audio(kb) | include_text_only)


def _duplicate_positions(queries: _Pairs, candidates: _Pairs) -> list[set[int]]:
    """Per query, the candidate positions that duplicate it: same pair_id, or same audio_id and normalised caption."""
    by_pair_id, by_audio_caption = defaultdict(list), defaultdict(list)
    for position, (pair_id, audio_id, caption) in enumerate(
        zip(candidates.pair_ids, candidates.audio_ids, candidates.captions, strict=True)
    ):
        by_pair_id[pair_id].append(position)
        if audio_id:
            by_audio_caption[audio_id, _normalise_caption(caption)].append(position)
    duplicates = []
    for pair_id, audio_id, caption in zip(queries.pair_ids, queries.audio_ids, queries.captions, strict=True):
        positions = set(by_pair_id.get(pair_id, ()))
        if audio_id:
            positions.update(by_audio_caption.get((audio_id, _normalise_caption(caption)), ()))
        duplicates.append(positions)
    return duplicates


def _candidate_index(candidates: _Pairs, device: str | None) -> PairCapIndex:
    """
    An index whose ids are the candidates' positions (and no audio ids), so that `exclude_ids` removes exactly the
    duplicate rows, not every caption of the query's audio.
    """
    positions = [str(position) for position in range(len(candidates.rows))]
    return PairCapIndex(
        concat_pair_vectors(candidates.audio, candidates.text),
        positions,
        [""] * len(positions),
        candidates.captions,
        d_audio=candidates.audio.shape[1],
        device=device,
    )


def _hit_arrays(hits: list[list[RetrievedPair]], candidate_rows: np.ndarray) -> dict[str, np.ndarray]:
    """The hits of a chunk of queries, flattened: KB rows and their S, S_A, S_T."""
    flat = [hit for query_hits in hits for hit in query_hits]
    return {
        "rows": candidate_rows[np.array([hit.row for hit in flat], dtype=np.int64)],
        "score": np.array([hit.score for hit in flat], dtype=np.float64),
        "audio_score": np.array([hit.audio_score for hit in flat], dtype=np.float64),
        "text_score": np.array([hit.text_score for hit in flat], dtype=np.float64),
    }


class _ChunkStore:
    """Finished chunks of one refinement run in `work_dir`, checked against the run's inputs and settings (recorded
    by the main process first)."""

    def __init__(self, work_dir: str | os.PathLike, state: dict, dist: Processes):
        self.folder = Path(work_dir)
        with dist.main_process_first():
            self.folder.mkdir(parents=True, exist_ok=True)
            state_path = self.folder / STATE_FILE
            if state_path.is_file():
                saved = json.loads(state_path.read_text())
                changed = sorted(key for key in state.keys() | saved.keys() if state.get(key) != saved.get(key))
                if changed:
                    raise ValueError(
                        f"work_dir {self.folder} holds a refinement run with other inputs or settings (changed: "
                        f"{', '.join(changed)}); use another work_dir or empty this one"
                    )
            elif any(self.folder.glob(CHUNK_GLOB)):
                raise ValueError(f"work_dir {self.folder} holds refinement chunks but no {STATE_FILE}; empty it")
            else:
                write_atomic(
                    state_path, lambda temporary: temporary.write_text(json.dumps(state, indent=2, sort_keys=True))
                )

    def path(self, index: int) -> Path:
        return self.folder / CHUNK_FILE.format(index)

    def load(self, index: int) -> dict[str, np.ndarray]:
        with np.load(self.path(index)) as saved:
            return {name: saved[name] for name in HIT_FIELDS}

    def save(self, index: int, hits: dict[str, np.ndarray]) -> None:
        write_atomic(self.path(index), lambda temporary: np.savez(temporary, **hits))


def _check_settings(top_k: int, fusion_weight: float, chunk_size: int) -> None:
    if top_k < 1:
        raise ValueError(f"top_k must be >= 1, got {top_k}")
    if not 0.0 <= fusion_weight <= 1.0:
        raise ValueError(f"fusion_weight W must lie in [0, 1], got {fusion_weight}")
    if chunk_size < 1:
        raise ValueError(f"chunk_size must be >= 1, got {chunk_size}")


def _search_all(
    queries: _Pairs,
    candidates: _Pairs,
    duplicates: list[set[int]],
    store: _ChunkStore,
    dist: Processes,
    *,
    top_k: int,
    fusion_weight: float,
    chunk_size: int,
    device: str | None,
    progress: bool,
) -> dict[str, np.ndarray]:
    """The hits of all queries, one index search per chunk, saved in `store`: each process searches its unfinished
    chunks (p, p + P, ...), then every process reads them all."""
    bounds = [(start, min(start + chunk_size, len(queries.rows))) for start in range(0, len(queries.rows), chunk_size)]
    search_index = functools.cache(lambda: _candidate_index(candidates, device))  # built when a chunk needs it

    def search(chunk: int) -> dict[str, int]:
        start, stop = bounds[chunk]
        found = search_index().search(
            queries.audio[start:stop],
            queries.text[start:stop],
            mode="pair2pair",
            fusion_weight=fusion_weight,
            top_k=top_k,
            exclude_ids=[{str(position) for position in positions} for positions in duplicates[start:stop]],
        )
        store.save(chunk, _hit_arrays(found, candidates.rows))
        return {"chunks": 1}

    sizes = [stop - start for start, stop in bounds]
    run_shards(search, store.path, sizes, dist, (progress, "refining KB", "query"))
    dist.wait_for_everyone()
    parts = [{name: np.empty(0, dtype=np.int64 if name == "rows" else np.float64) for name in HIT_FIELDS}]
    parts += [store.load(chunk) for chunk in range(len(bounds))]
    return {name: np.concatenate([part[name] for part in parts]) for name in HIT_FIELDS}


def _mean(values: np.ndarray) -> float | None:
    return float(values.mean()) if len(values) else None


def refine_knowledge_base(
    kb: datasets.Dataset,
    train: datasets.Dataset,
    *,
    top_k: int = 5,
    fusion_weight: float = 0.5,
    exclude_splits: Sequence[str] = DEFAULT_EVAL_SPLITS,
    include_text_only: bool = False,
    work_dir: str | os.PathLike | None = None,
    chunk_size: int = 8192,
    device: str | None = None,
    progress: bool = True,
    accelerator: Processes | None = None,
) -> tuple[datasets.Dataset, RefinementStats]:
    """
    Refine `kb` with the training pairs `train` (both in the KB row schema, embedded by the same encoder).

    Args:
        top_k: hits kept per training pair.
        fusion_weight: W of eq. 4; the query of pair j is ``[W·a_j ; (1−W)·t_j]``.
        exclude_splits: KB splits that can never enter the refined KB (compared case-insensitively).
        include_text_only: also let text-only KB rows (has_audio False) be retrieved.
        work_dir: folder keeping finished chunks, so a rerun with the same inputs and settings resumes (None: a
            temporary folder; required under several processes, on a filesystem they all see).
        chunk_size: training pairs per index search, the unit of resuming and of the split over processes.
        device: None searches a flat faiss index; "cpu", "cuda", ... search exactly with torch on that device.
        progress: show a progress bar over the queries.
        accelerator: an `Accelerator` or `PartialState` (default: the current `PartialState`): under
            `accelerate launch` process p searches the chunks p, p + P, ..., and every process returns the result.

    Returns:
        The refined KB (a subset of `kb` in its row order, all columns kept) and its `RefinementStats`.
    """
    _check_settings(top_k, fusion_weight, chunk_size)
    dist = processes(accelerator)
    if work_dir is None and dist.num_processes > 1:
        raise ValueError("refining over several processes needs a work_dir they all see, to share the chunks")
    splits = tuple(dict.fromkeys(split.strip().casefold() for split in exclude_splits))
    candidates = _select_pairs(kb, _candidate_mask(kb, frozenset(splits), include_text_only))
    queries = _select_pairs(train, _has_audio(train))
    duplicates = _duplicate_positions(queries, candidates)
    state = {
        "query_pair_ids_sha256": ids_sha256(queries.pair_ids),
        "candidate_pair_ids_sha256": ids_sha256(candidates.pair_ids),
        "top_k": top_k,
        "fusion_weight": fusion_weight,
        "chunk_size": chunk_size,
    }
    with tempfile.TemporaryDirectory() if work_dir is None else contextlib.nullcontext(work_dir) as folder:
        hits = _search_all(
            queries,
            candidates,
            duplicates,
            _ChunkStore(folder, state, dist),
            dist,
            top_k=top_k,
            fusion_weight=fusion_weight,
            chunk_size=chunk_size,
            device=device,
            progress=progress,
        )
    kept = np.unique(hits["rows"])
    sources = column(kb, "source")
    sizes_before = Counter(sources)
    sizes_after = Counter(sources[row] for row in kept)
    stats = RefinementStats(
        size_before=len(kb),
        candidates=len(candidates.rows),
        size_after=len(kept),
        queries=len(queries.rows),
        skipped_train_rows=len(train) - len(queries.rows),
        duplicates_excluded=sum(len(positions) for positions in duplicates),
        hits=len(hits["rows"]),
        mean_score=_mean(hits["score"]),
        mean_audio_score=_mean(hits["audio_score"]),
        mean_text_score=_mean(hits["text_score"]),
        sizes_before_per_source=dict(sizes_before),
        sizes_after_per_source={source: sizes_after[source] for source in sizes_before},
        top_k=top_k,
        fusion_weight=fusion_weight,
        exclude_splits=list(splits),
        include_text_only=include_text_only,
    )
    if dist.is_main_process:
        logger.info(stats.summary())
    return kb.select(kept.tolist()), stats
