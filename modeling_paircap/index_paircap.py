"""The vector index of a PairCap knowledge base: top-k search for every retrieval mode (paper eq. 2-4 and 10-12).

Every knowledge-base pair ``k`` is stored as one vector ``z_k = [a_k ; t_k]``: its L2-normalised CLAP audio
embedding ``a_k`` (zero for a text-only entry) followed by its CLAP text embedding ``t_k``. A single inner-product
index over these vectors answers every retrieval mode exactly; only the query changes (see `build_query`):

==========================  ==========================  ============================================
mode                        query                       score S
==========================  ==========================  ============================================
``audio2audio``             ``[a_q ; 0]``               ``<a_q, a_k>``
``audio2text`` (RECAP)      ``[0 ; a_q]``               ``<a_q, t_k>``
``audio2mixture`` (eq. 12)  ``[a_q ; a_q]``             ``<a_q, a_k> + <a_q, t_k>``
``pair2pair`` (eq. 4)       ``[W a_q ; (1 - W) t_q]``   ``W <a_q, a_k> + (1 - W) <t_q, t_k>``
``generative_pair2pair``    as ``pair2pair``            with ``t_q`` the embedding of the first-pass caption
``none``                    no query                    no retrieval
==========================  ==========================  ============================================

This file is shipped as Hugging Face remote code: it imports only the standard library, numpy, torch, the PairCap
configuration (for the retrieval modes) and (guarded) faiss.
"""

from __future__ import annotations

import contextlib
from collections.abc import Collection, Iterable, Sequence
from dataclasses import dataclass

import numpy as np
import torch

from .clip_ids_paircap import normalise_clip_id
from .retrieval_modes_paircap import CROSS_MODAL_MODES, PAIR_MODES, check_retrieval_mode

try:
    import faiss
except ImportError:  # the exact torch search path is used instead
    faiss = None

# Within a clip, captions whose scores differ by less than this tie and the lower row is taken first: a clip's
# captions share one audio embedding (equal S_A in audio2audio), and BLAS and the plain loop, faiss and torch round
# differently in the last float32 bits, so without it the caption standing for a clip would follow rounding noise.
CLIP_TIE = 1e-6


def require_faiss():
    """Return the faiss module, or raise an ImportError that says what to install."""
    if faiss is None:
        raise ImportError(
            "This code path needs FAISS: `pip install faiss-cpu` (or `pip install faiss-gpu-cu12` on a CUDA machine). "
            "Exact retrieval without FAISS is available with `PairCapIndex(..., device='cpu')`."
        )
    return faiss


def _as_matrix(array, name: str) -> np.ndarray:
    """A (B, d) float32 numpy matrix from a numpy array or a torch tensor."""
    if isinstance(array, torch.Tensor):
        array = array.detach().to(device="cpu", dtype=torch.float32).numpy()
    array = np.asarray(array, dtype=np.float32)
    if array.ndim != 2:
        raise ValueError(f"{name} must be a 2-D (batch, dim) array, got shape {array.shape}")
    return array


def flat_index(num_rows: int, dim: int, chunks: Iterable[np.ndarray]):
    """
    An exact inner-product index (`IndexFlatIP`) over `num_rows` vectors given chunk by chunk, copied into storage
    allocated once: `index.add` in chunks regrows faiss's vector, peaking at twice the vectors' bytes.
    """
    index = require_faiss().IndexFlatIP(dim)
    if num_rows == 0:
        return index
    index.codes.resize(num_rows * dim * 4)
    index.ntotal = num_rows
    storage = faiss.rev_swig_ptr(index.codes.data(), num_rows * dim * 4).view(np.float32).reshape(num_rows, dim)
    filled = 0
    for chunk in chunks:
        storage[filled : filled + len(chunk)] = chunk
        filled += len(chunk)
    if filled != num_rows:
        raise ValueError(f"got {filled} vectors for a flat index of {num_rows}")
    return index


def concat_pair_vectors(audio_embeds: np.ndarray, text_embeds: np.ndarray) -> np.ndarray:
    """The knowledge-base vectors ``[a_k ; t_k]`` (float32, one row per pair); text-only rows carry zero audio."""
    audio = _as_matrix(audio_embeds, "audio_embeds")
    text = _as_matrix(text_embeds, "text_embeds")
    if len(audio) != len(text):
        raise ValueError(f"audio_embeds has {len(audio)} rows but text_embeds has {len(text)}")
    return np.ascontiguousarray(np.concatenate([audio, text], axis=1))


def build_query(
    mode: str,
    audio_embeds: np.ndarray,
    text_embeds: np.ndarray | None = None,
    fusion_weight: float = 0.5,
    *,
    d_text: int | None = None,
) -> np.ndarray:
    """
    The (B, d_a + d_t) float32 query vectors of a retrieval mode (see the module docstring).

    `text_embeds` (t_q) is needed by the pair modes only and ignored by the others. `d_text` is the width of the text
    half of the knowledge base; it defaults to the width of `text_embeds`, else to that of `audio_embeds` (CLAP's joint
    space).
    """
    check_retrieval_mode(mode)
    if mode == "none":
        raise ValueError("mode 'none' performs no retrieval and has no query")
    if not 0.0 <= fusion_weight <= 1.0:
        raise ValueError(f"fusion_weight W must lie in [0, 1], got {fusion_weight}")
    audio = _as_matrix(audio_embeds, "audio_embeds")
    text = None if text_embeds is None or mode not in PAIR_MODES else _as_matrix(text_embeds, "text_embeds")
    if d_text is None:
        d_text = text.shape[1] if text is not None else audio.shape[1]
    zero_audio, zero_text = np.zeros_like(audio), np.zeros((len(audio), d_text), dtype=np.float32)

    if mode == "audio2audio":
        halves = (audio, zero_text)
    elif mode in CROSS_MODAL_MODES:
        if audio.shape[1] != d_text:
            raise ValueError(
                f"mode {mode!r} compares audio embeddings with text embeddings, which needs one joint space: audio "
                f"embeddings have dim {audio.shape[1]}, the text half of the knowledge base has dim {d_text}"
            )
        halves = (zero_audio, audio) if mode == "audio2text" else (audio, audio)
    else:
        if text is None:
            raise ValueError(
                f"mode {mode!r} needs text_embeds t_q (for generative_pair2pair: the CLAP text embedding of the "
                "model's first-pass caption)"
            )
        if text.shape != (len(audio), d_text):
            raise ValueError(f"text_embeds must have shape ({len(audio)}, {d_text}), got {text.shape}")
        halves = (fusion_weight * audio, (1.0 - fusion_weight) * text)
    return np.ascontiguousarray(np.concatenate(halves, axis=1), dtype=np.float32)


def _text_reference(mode: str, audio: np.ndarray, text: np.ndarray | None, d_text: int) -> np.ndarray | None:
    """t_ref of S_T = <t_ref, t_k>: t_q for the pair modes, a_q otherwise (None when a_q cannot meet t_k)."""
    if mode in PAIR_MODES:
        return text
    return audio if audio.shape[1] == d_text else None


@dataclass
class RetrievedPair:
    """
    One retrieved knowledge-base pair: S = `score` (the index score), S_A = `audio_score` = <a_q, a_k>, and
    `text_score` = <t_q, t_k> in the pair modes, <a_q, t_k> otherwise (what the query scored on; the paper's Fig. 1 S_T
    against the reference captions is `paircap evaluate`'s `reference_text_score`).
    """

    pair_id: str
    audio_id: str
    caption: str
    row: int
    score: float
    audio_score: float
    text_score: float


def _as_str_list(ids: Sequence) -> list[str]:
    return ["" if value is None else str(value) for value in ids]


def _take(column, rows: np.ndarray) -> list:
    """`column[rows]` as a list: Arrow's own `take` for Arrow arrays (no per-row Python), indexing otherwise."""
    if hasattr(column, "take") and hasattr(column, "to_pylist"):
        return column.take(rows).to_pylist()
    return [column[int(row)] for row in rows]


def clip_keys_of(audio_ids) -> np.ndarray:
    """One integer per row naming its clip (rows of one clip share it), -1 for rows without audio (empty or None id)."""
    if hasattr(audio_ids, "dictionary_encode"):  # an Arrow array: encoded without Python objects
        encoded = audio_ids.dictionary_encode()
        keys = encoded.indices.fill_null(-1).to_numpy(zero_copy_only=False).astype(np.int64)
        empty = np.flatnonzero(np.asarray(encoded.dictionary.to_pylist(), dtype=object) == "")
        keys[np.isin(keys, empty)] = -1
        return keys
    ids = np.asarray(_as_str_list(audio_ids), dtype=object)
    _, keys = np.unique(ids, return_inverse=True)
    keys = keys.astype(np.int64)
    keys[ids == ""] = -1
    return keys


def _exclusion_sets(exclude_ids: list[Collection[str]] | None, batch_size: int) -> list[frozenset[str]]:
    """One frozenset of ids per query (a bare string counts as one id)."""
    if exclude_ids is None:
        return [frozenset()] * batch_size
    if len(exclude_ids) != batch_size:
        raise ValueError(f"exclude_ids has {len(exclude_ids)} entries for a batch of {batch_size} queries")
    sets = []
    for ids in exclude_ids:
        if ids is None:
            ids = ()
        elif isinstance(ids, str):
            ids = (ids,)
        sets.append(frozenset(_as_str_list(ids)))
    return sets


# faiss's own `distance_compute_blas_threshold` when this module was imported: 20 in faiss before 1.15, where it counts
# queries; faiss 1.15 compares it with queries x dimension and defaults to 128000 (125 queries of 1024-d vectors).
FAISS_BLAS_THRESHOLD = None if faiss is None else int(faiss.cvar.distance_compute_blas_threshold)
BLAS_MIN_ROWS = 32768  # below this, faiss's loop is as fast as BLAS and its own threshold is kept


def faiss_blas_threshold(blas_queries: int | None, dim: int, num_rows: int) -> int | None:
    """The value of faiss's `distance_compute_blas_threshold` that makes flat search use BLAS from `blas_queries`
    queries, in the unit of the installed faiss; None (faiss's own) when not asked or for a small KB."""
    if blas_queries is None or num_rows < BLAS_MIN_ROWS or FAISS_BLAS_THRESHOLD is None:
        return None
    return int(blas_queries) if FAISS_BLAS_THRESHOLD == 20 else int(blas_queries) * dim


@contextlib.contextmanager
def faiss_search_settings(num_queries: int, blas_threshold: int | None, single_query_threads: int | None):
    """
    faiss's process-wide search settings for one call, restored afterwards: `distance_compute_blas_threshold` (see
    `faiss_blas_threshold`; faiss's default sends `generate`-sized batches down its slow loop) and the OpenMP threads
    of a single query.
    """
    saved_threshold = faiss.cvar.distance_compute_blas_threshold
    saved_threads = faiss.omp_get_max_threads()
    if blas_threshold is not None:
        faiss.cvar.distance_compute_blas_threshold = int(blas_threshold)
    if single_query_threads is not None and num_queries == 1:
        faiss.omp_set_num_threads(int(single_query_threads))
    try:
        yield
    finally:
        faiss.cvar.distance_compute_blas_threshold = saved_threshold
        faiss.omp_set_num_threads(saved_threads)


class PairCapIndex:
    """
    Exact (or index-approximate) top-k retrieval over a knowledge base of (audio, caption) pairs.

    The vectors live in one place: the faiss index (component scores S_A and S_T are computed from the hits' vectors,
    reconstructed from it), or, for `device` search, one tensor on that device.

    Args:
        vectors: (N, d_a + d_t) knowledge-base vectors ``[a_k ; t_k]`` (see `concat_pair_vectors`), or None when
            `faiss_index` holds them. Without an index, a flat index is built from them (faiss search) or they are
            copied to `device`.
        pair_ids, audio_ids, captions: one entry per row: lists, or Arrow arrays (read per hit with Arrow's `take`).
            `audio_ids` of text-only rows may be empty.
        d_audio: width d_a of the audio half; defaults to half the vector width.
        faiss_index: a faiss index over the same rows (flat, IVF or HNSW from `datasets_scripts/faiss_index.py`).
        device: None searches with faiss; "cpu", "cuda", "cuda:1", ... search exactly with a chunked torch matmul on
            that device instead (same results as a flat index). Without faiss installed, "cpu" is used.
        clip_keys: (N,) integers naming each row's clip (-1: no audio), for `max_pairs_per_clip`; default from
            `audio_ids`.
        exclude_margin: extra hits fetched per query when exclusions are given (refetched with a larger k when short).
        chunk_size: knowledge-base rows scored per matmul on the torch path (bounds memory to batch x chunk_size).
        blas_queries: queries per batch from which faiss's flat search uses BLAS on a KB of at least `BLAS_MIN_ROWS`
            rows (faiss's process-wide `distance_compute_blas_threshold`, set for each search and restored); None
            keeps faiss's own.
        single_query_threads: OpenMP threads for a one-query faiss search; None keeps faiss's own (all cores).
    """

    def __init__(
        self,
        vectors: np.ndarray | None,
        pair_ids: Sequence[str],
        audio_ids: Sequence[str],
        captions: Sequence[str],
        *,
        d_audio: int | None = None,
        faiss_index=None,
        device: str | None = None,
        clip_keys: np.ndarray | None = None,
        exclude_margin: int = 16,
        chunk_size: int = 65536,
        blas_queries: int | None = 16,
        single_query_threads: int | None = None,
    ):
        if vectors is None and faiss_index is None:
            raise ValueError("pass the knowledge-base vectors or a faiss index holding them")
        if vectors is not None:
            vectors = np.asarray(vectors)
            if vectors.ndim != 2 or not np.issubdtype(vectors.dtype, np.floating):
                raise ValueError(f"vectors must be a 2-D float array, got shape {vectors.shape} {vectors.dtype}")
        num_rows, dim = vectors.shape if vectors is not None else (faiss_index.ntotal, faiss_index.d)
        self.num_rows = int(num_rows)
        for name, values in (("pair_ids", pair_ids), ("audio_ids", audio_ids), ("captions", captions)):
            if len(values) != num_rows:
                raise ValueError(f"the KB has {num_rows} vectors but {name} has {len(values)} entries")
        self.d_audio = dim // 2 if d_audio is None else int(d_audio)
        if not 0 < self.d_audio < dim or (d_audio is None and dim % 2):
            raise ValueError(f"cannot split vectors of dim {dim} into an audio half of dim {d_audio}; pass d_audio")
        self.d_text = dim - self.d_audio
        self.pair_ids = pair_ids if hasattr(pair_ids, "take") else _as_str_list(pair_ids)
        self.audio_ids = audio_ids if hasattr(audio_ids, "take") else _as_str_list(audio_ids)
        self.captions = captions
        self.clip_keys = clip_keys_of(self.audio_ids) if clip_keys is None else np.asarray(clip_keys, dtype=np.int64)
        if len(self.clip_keys) != num_rows:
            raise ValueError(f"the KB has {num_rows} vectors but clip_keys has {len(self.clip_keys)} entries")
        clip_sizes = np.bincount(self.clip_keys[self.clip_keys >= 0])
        self.max_rows_per_clip = int(clip_sizes.max()) if len(clip_sizes) else 1
        self.exclude_margin = int(exclude_margin)
        self.chunk_size = int(chunk_size)
        self.blas_threshold = faiss_blas_threshold(blas_queries, dim, self.num_rows)
        self.single_query_threads = single_query_threads
        self.device = "cpu" if device is None and faiss is None and faiss_index is None else device
        self.faiss_index = faiss_index
        self._kb_tensor = None
        if faiss_index is not None:
            self._check_faiss_index(faiss_index, dim)
        if self.device is not None:
            self._kb_tensor = self._vectors_to_device(vectors if vectors is not None else faiss_index)
            self.faiss_index = None  # the device tensor is the one copy
        elif faiss_index is None:
            self.faiss_index = self._build_flat_index(vectors)

    def __len__(self) -> int:
        return self.num_rows

    @classmethod
    def from_embeddings(cls, audio_embeds, text_embeds, pair_ids, audio_ids, captions, **kwargs) -> PairCapIndex:
        """An index over separate (N, d_a) audio and (N, d_t) text embeddings."""
        vectors = concat_pair_vectors(audio_embeds, text_embeds)
        return cls(vectors, pair_ids, audio_ids, captions, d_audio=np.shape(audio_embeds)[1], **kwargs)

    def _check_faiss_index(self, index, dim: int) -> None:
        """The index must hold the KB's rows in inner-product space; IVF indexes get the direct map that
        reconstructing hits' vectors needs."""
        if index.ntotal != self.num_rows:
            raise ValueError(
                f"the index has {index.ntotal} vectors but the KB has {self.num_rows} rows: rebuild the index"
            )
        if index.d != dim:
            raise ValueError(f"the index has dim {index.d} but the KB vectors have dim {dim}: rebuild the index")
        if faiss is not None and index.metric_type != faiss.METRIC_INNER_PRODUCT:
            raise ValueError("the index must use the inner-product metric (PairCap scores are inner products)")
        if faiss is not None:
            with contextlib.suppress(RuntimeError):  # not an IVF index: it reconstructs as it is
                faiss.extract_index_ivf(index).make_direct_map()

    def _build_flat_index(self, vectors: np.ndarray):
        chunks = (vectors[start : start + self.chunk_size] for start in range(0, len(vectors), self.chunk_size))
        return flat_index(len(vectors), vectors.shape[1], chunks)

    def _vectors_to_device(self, source) -> torch.Tensor:
        """The KB vectors as one float32 tensor on `device`, copied chunk by chunk from an array or an index."""
        kb = torch.empty((self.num_rows, self.d_audio + self.d_text), dtype=torch.float32, device=self.device)
        for start in range(0, self.num_rows, self.chunk_size):
            stop = min(start + self.chunk_size, self.num_rows)
            part = source[start:stop] if isinstance(source, np.ndarray) else source.reconstruct_n(start, stop - start)
            kb[start:stop] = torch.from_numpy(np.ascontiguousarray(part, dtype=np.float32))
        return kb

    def vectors_of(self, rows: np.ndarray) -> np.ndarray:
        """The float32 `[a_k ; t_k]` vectors of the given rows, read from where the vectors live."""
        rows = np.asarray(rows, dtype=np.int64)
        if self._kb_tensor is not None:
            return self._kb_tensor[torch.from_numpy(rows).to(self._kb_tensor.device)].cpu().numpy()
        if len(rows) == 0:
            return np.zeros((0, self.d_audio + self.d_text), dtype=np.float32)
        return self.faiss_index.reconstruct_batch(rows)

    # ----------------------------------------------------------------------------------------------- raw top-k search
    def _search_index(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """(B, k) scores and rows, best first; rows of -1 mark missing hits. One call for the whole batch."""
        if self._kb_tensor is not None:
            return self._search_torch(queries, k)
        with faiss_search_settings(len(queries), self.blas_threshold, self.single_query_threads):
            return self.faiss_index.search(queries, k)

    @torch.no_grad()
    def _search_torch(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Exact top-k by matmul, chunked over the knowledge base."""
        kb = self._kb_tensor
        query = torch.from_numpy(queries).to(kb.device)
        best_scores = torch.empty((len(queries), 0), device=kb.device)
        best_rows = torch.empty((len(queries), 0), dtype=torch.long, device=kb.device)
        for start in range(0, len(kb), self.chunk_size):
            scores = query @ kb[start : start + self.chunk_size].T
            scores, rows = torch.topk(scores, min(k, scores.shape[1]), dim=1)
            scores, rows = torch.cat([best_scores, scores], 1), torch.cat([best_rows, rows + start], 1)
            best_scores, picked = torch.topk(scores, min(k, scores.shape[1]), dim=1)
            best_rows = torch.gather(rows, 1, picked)
        return best_scores.cpu().numpy(), best_rows.cpu().numpy()

    # ------------------------------------------------------------------------------- exclusion, clips and ties
    def _kept_mask(self, rows: np.ndarray, exclude: frozenset[str]) -> np.ndarray:
        """Rows whose pair id and audio id are not in `exclude`, nor their normalised clip id among its normalised."""
        if not exclude:
            return np.ones(len(rows), dtype=bool)
        clip_ids = {normalise_clip_id(value) for value in exclude}
        pair_ids, audio_ids = _take(self.pair_ids, rows), _take(self.audio_ids, rows)
        return np.array(
            [
                not (pair_id in exclude or (audio_id and normalise_clip_id(audio_id) in clip_ids))
                for pair_id, audio_id in zip(pair_ids, audio_ids, strict=True)
            ],
            dtype=bool,
        )

    def _limit_per_clip(self, scores: np.ndarray, rows: np.ndarray, max_pairs_per_clip: int):
        """
        Of hits sorted best first, each clip's best `max_pairs_per_clip` (scores within CLIP_TIE of each other: lower
        row first); rows without audio always pass. Returns the kept hits, sorted best first again.
        """
        by_clip: dict[int, list[int]] = {}
        keep = np.ones(len(rows), dtype=bool)
        for position, key in enumerate(self.clip_keys[rows].tolist()):
            if key >= 0:
                keep[position] = False
                by_clip.setdefault(key, []).append(position)
        for positions in by_clip.values():
            best = scores[positions[0]]
            ranked = sorted(positions, key=lambda p: (int((best - scores[p]) // CLIP_TIE), rows[p]))
            keep[ranked[:max_pairs_per_clip]] = True
        scores, rows = scores[keep], rows[keep]
        order = np.lexsort((rows, -scores))
        return scores[order], rows[order]

    def _select(self, scores, rows, k: int, exclude, fetched: int, max_pairs_per_clip: int | None):
        """
        The best k kept hits of one query (S descending, row ascending) and whether they are final.
        They are not final when fewer than k survive the exclusions and the per-clip limit, or when the last fetched
        score ties the k-th kept one (an unfetched row with a smaller index could tie too), unless the index has nothing
        more to give.
        """
        valid = rows >= 0
        scores, rows = scores[valid], rows[valid].astype(np.int64)
        exhausted = len(rows) < fetched or fetched >= len(self)
        keep = self._kept_mask(rows, exclude)
        kept_scores, kept_rows = scores[keep], rows[keep]
        order = np.lexsort((kept_rows, -kept_scores))
        kept_scores, kept_rows = kept_scores[order], kept_rows[order]
        if max_pairs_per_clip is not None:
            kept_scores, kept_rows = self._limit_per_clip(kept_scores, kept_rows, max_pairs_per_clip)
        kept_scores, kept_rows = kept_scores[:k], kept_rows[:k]
        final = exhausted or (len(kept_rows) == k and scores.min() < kept_scores[-1])
        return kept_scores, kept_rows, final

    def _top_rows(
        self, queries: np.ndarray, k: int, excludes: list[frozenset], max_pairs_per_clip: int | None
    ) -> list[tuple[np.ndarray, np.ndarray]]:
        """Per query, the top-k (scores, rows) left after exclusions; refetches only the queries that came up short."""
        largest_exclusion = max(len(exclude) for exclude in excludes)
        extra = largest_exclusion + self.exclude_margin if largest_exclusion else 0
        per_clip = 1 if max_pairs_per_clip is None else min(self.max_rows_per_clip, 8)
        fetch = min(len(self), k * per_clip + 1 + extra)
        results: list = [None] * len(queries)
        pending = np.arange(len(queries))
        while len(pending):
            scores, rows = self._search_index(queries[pending], fetch)
            short = []
            for j, query in enumerate(pending):
                kept_scores, kept_rows, final = self._select(
                    scores[j], rows[j], k, excludes[query], fetch, max_pairs_per_clip
                )
                results[query] = (kept_scores, kept_rows)
                if not final:
                    short.append(query)
            pending = np.asarray(short, dtype=np.int64)
            fetch = min(len(self), 2 * fetch)
        return results

    # --------------------------------------------------------------------------------------------------- public API
    def search(
        self,
        audio_embeds: np.ndarray,
        text_embeds: np.ndarray | None = None,
        mode: str = "generative_pair2pair",
        fusion_weight: float = 0.5,
        top_k: int = 5,
        exclude_ids: list[Collection[str]] | None = None,
        max_pairs_per_clip: int | None = 1,
    ) -> list[list[RetrievedPair]]:
        """
        Retrieve the top-k pairs of every query of a batch (one index search for the batch, plus one for the queries
        that exclusions or the per-clip limit left short).

        Args:
            audio_embeds: (B, d_a) CLAP audio embeddings a_q of the queries.
            text_embeds: (B, d_t) CLAP text embeddings t_q; needed by the pair modes (for generative_pair2pair, the
                embedding of the model's own first-pass caption).
            mode: one of `RETRIEVAL_MODES`.
            fusion_weight: W of eq. 4 (pair modes).
            top_k: pairs per query.
            exclude_ids: per query, pair ids, audio ids or normalised clip ids (`normalise_clip_id`) whose rows must not
                be returned (e.g. the query's own clip); the empty audio id of text-only rows never matches.
            max_pairs_per_clip: pairs of one clip returned at most (the clip's best-scoring captions); None: no limit.
                Rows without audio are each their own clip.

        Returns:
            Per query, a list of `RetrievedPair` sorted by S descending (ties: row ascending). S_A = <a_q, a_k>;
            S_T = <t_q, t_k> in the pair modes and <a_q, t_k> otherwise (NaN if d_a != d_t).
        """
        check_retrieval_mode(mode)
        audio = _as_matrix(audio_embeds, "audio_embeds")
        if top_k < 0:
            raise ValueError(f"top_k must be >= 0, got {top_k}")
        if max_pairs_per_clip is not None and max_pairs_per_clip < 1:
            raise ValueError(f"max_pairs_per_clip must be >= 1 or None, got {max_pairs_per_clip}")
        excludes = _exclusion_sets(exclude_ids, len(audio))
        if mode == "none" or top_k == 0 or len(self) == 0:
            return [[] for _ in range(len(audio))]
        if audio.shape[1] != self.d_audio:
            raise ValueError(f"audio_embeds have dim {audio.shape[1]} but the KB's audio half has dim {self.d_audio}")
        queries = build_query(mode, audio, text_embeds, fusion_weight, d_text=self.d_text)
        text = _as_matrix(text_embeds, "text_embeds") if mode in PAIR_MODES else None
        text_ref = _text_reference(mode, audio, text, self.d_text)
        top = self._top_rows(queries, min(top_k, len(self)), excludes, max_pairs_per_clip)
        return self._to_pairs(top, audio, text_ref)

    def _to_pairs(self, top, audio: np.ndarray, text_ref: np.ndarray | None) -> list[list[RetrievedPair]]:
        """RetrievedPairs of every query, with one column read and one vector read for all hits of the batch."""
        rows = np.concatenate([query_rows for _, query_rows in top]).astype(np.int64)
        query_of = np.repeat(np.arange(len(top)), [len(query_rows) for _, query_rows in top])
        kb = self.vectors_of(rows)
        audio_scores = np.einsum("nd,nd->n", kb[:, : self.d_audio], audio[query_of])
        text_scores = (
            np.einsum("nd,nd->n", kb[:, self.d_audio :], text_ref[query_of])
            if text_ref is not None
            else np.full(len(rows), np.nan)
        )
        scores = np.concatenate([query_scores for query_scores, _ in top])
        fields = zip(
            _take(self.pair_ids, rows),
            _take(self.audio_ids, rows),
            _take(self.captions, rows),
            rows.tolist(),
            scores.tolist(),
            audio_scores.tolist(),
            text_scores.tolist(),
            strict=True,
        )
        pairs = [
            RetrievedPair(str(p), "" if a is None else str(a), str(c), r, s, sa, st) for p, a, c, r, s, sa, st in fields
        ]
        bounds = np.cumsum([0] + [len(query_rows) for _, query_rows in top])
        return [pairs[start:stop] for start, stop in zip(bounds[:-1], bounds[1:], strict=True)]
