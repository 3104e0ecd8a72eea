"""Retrieval over a PairCap knowledge base (paper eq. 2-4 and 10-12).

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

This file is shipped as Hugging Face remote code: it imports only the standard library, numpy, torch and (lazily) faiss.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import dataclass

import numpy as np
import torch

try:
    import faiss
except ImportError:  # the exact torch search path is used instead
    faiss = None

RETRIEVAL_MODES = ("none", "audio2audio", "audio2text", "audio2mixture", "pair2pair", "generative_pair2pair")
PAIR_MODES = ("pair2pair", "generative_pair2pair")
CROSS_MODAL_MODES = ("audio2text", "audio2mixture")


def require_faiss():
    """Return the faiss module, or raise an ImportError that says what to install."""
    if faiss is None:
        raise ImportError(
            "This code path needs FAISS: `pip install faiss-cpu` (or `pip install faiss-gpu-cu12` on a CUDA machine). "
            "Exact retrieval without FAISS is available with `PairCapRetriever(..., device='cpu')`."
        )
    return faiss


def _check_mode(mode: str) -> None:
    if mode not in RETRIEVAL_MODES:
        raise ValueError(f"unknown retrieval mode {mode!r}; expected one of {RETRIEVAL_MODES}")


def _as_matrix(array, name: str) -> np.ndarray:
    """A (B, d) float32 numpy matrix from a numpy array or a torch tensor."""
    if isinstance(array, torch.Tensor):
        array = array.detach().to(device="cpu", dtype=torch.float32).numpy()
    array = np.asarray(array, dtype=np.float32)
    if array.ndim != 2:
        raise ValueError(f"{name} must be a 2-D (batch, dim) array, got shape {array.shape}")
    return array


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
    _check_mode(mode)
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
    """One retrieved knowledge-base pair: S = `score` (the index score), S_A = `audio_score`, S_T = `text_score`."""

    pair_id: str
    audio_id: str
    caption: str
    row: int
    score: float
    audio_score: float
    text_score: float


def _as_str_list(ids: Sequence) -> list[str]:
    return ["" if value is None else str(value) for value in ids]


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


class PairCapRetriever:
    """
    Exact (or index-approximate) top-k retrieval over a knowledge base of (audio, caption) pairs.

    Args:
        vectors: (N, d_a + d_t) knowledge-base vectors ``[a_k ; t_k]`` (see `concat_pair_vectors`); kept as given (a
            float16 or memory-mapped array works) and read for the component scores S_A and S_T.
        pair_ids, audio_ids, captions: one entry per row. `audio_ids` of text-only rows may be empty.
        d_audio: width d_a of the audio half; defaults to half the vector width.
        index: a faiss index over the same rows (e.g. IVF or HNSW from `datasets_scripts/faiss_index.py`); an exact
            `IndexFlatIP` is built when none is given and faiss is used.
        device: None searches with faiss; "cpu", "cuda", "cuda:1", ... search exactly with a chunked torch matmul on
            that device instead (same results as a flat index). Without faiss installed, "cpu" is used.
        exclude_margin: extra hits fetched per query when exclusions are given (refetched with a larger k when short).
        chunk_size: knowledge-base rows scored per matmul on the torch path (bounds memory to batch x chunk_size).
    """

    def __init__(
        self,
        vectors: np.ndarray,
        pair_ids: Sequence[str],
        audio_ids: Sequence[str],
        captions: Sequence[str],
        *,
        d_audio: int | None = None,
        index=None,
        device: str | None = None,
        exclude_margin: int = 16,
        chunk_size: int = 65536,
    ):
        self.vectors = np.asarray(vectors)
        if self.vectors.ndim != 2 or not np.issubdtype(self.vectors.dtype, np.floating):
            raise ValueError(f"vectors must be a 2-D float array, got shape {self.vectors.shape} {self.vectors.dtype}")
        num_rows, dim = self.vectors.shape
        for name, values in (("pair_ids", pair_ids), ("audio_ids", audio_ids), ("captions", captions)):
            if len(values) != num_rows:
                raise ValueError(f"the KB has {num_rows} vectors but {name} has {len(values)} entries")
        self.d_audio = dim // 2 if d_audio is None else int(d_audio)
        if not 0 < self.d_audio < dim or (d_audio is None and dim % 2):
            raise ValueError(f"cannot split vectors of dim {dim} into an audio half of dim {d_audio}; pass d_audio")
        self.d_text = dim - self.d_audio
        self.pair_ids = _as_str_list(pair_ids)
        self.audio_ids = _as_str_list(audio_ids)
        self.captions = captions
        self.exclude_margin = int(exclude_margin)
        self.chunk_size = int(chunk_size)
        self.device = "cpu" if device is None and faiss is None and index is None else device
        self.index = index
        if index is not None:
            self._check_index(index)
        elif self.device is None:
            self.index = self._build_flat_index()
        self._kb_tensor = None

    def __len__(self) -> int:
        return len(self.vectors)

    @classmethod
    def from_embeddings(cls, audio_embeds, text_embeds, pair_ids, audio_ids, captions, **kwargs) -> PairCapRetriever:
        """A retriever over separate (N, d_a) audio and (N, d_t) text embeddings."""
        vectors = concat_pair_vectors(audio_embeds, text_embeds)
        return cls(vectors, pair_ids, audio_ids, captions, d_audio=np.shape(audio_embeds)[1], **kwargs)

    def _check_index(self, index) -> None:
        num_rows, dim = self.vectors.shape
        if index.ntotal != num_rows:
            raise ValueError(f"the index has {index.ntotal} vectors but the KB has {num_rows} rows: rebuild the index")
        if index.d != dim:
            raise ValueError(f"the index has dim {index.d} but the KB vectors have dim {dim}: rebuild the index")
        if faiss is not None and index.metric_type != faiss.METRIC_INNER_PRODUCT:
            raise ValueError("the index must use the inner-product metric (PairCap scores are inner products)")

    def _build_flat_index(self):
        index = require_faiss().IndexFlatIP(self.vectors.shape[1])
        for start in range(0, len(self.vectors), self.chunk_size):
            index.add(np.ascontiguousarray(self.vectors[start : start + self.chunk_size], dtype=np.float32))
        return index

    # ----------------------------------------------------------------------------------------------- raw top-k search
    def _search_index(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """(B, k) scores and rows, best first; rows of -1 mark missing hits. One call for the whole batch."""
        if self.device is None:
            return self.index.search(queries, k)
        return self._search_torch(queries, k)

    def _kb_on_device(self) -> torch.Tensor:
        if self._kb_tensor is None:
            kb = torch.from_numpy(np.ascontiguousarray(self.vectors, dtype=np.float32))
            self._kb_tensor = kb.to(self.device)
        return self._kb_tensor

    @torch.no_grad()
    def _search_torch(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Exact top-k by matmul, chunked over the knowledge base."""
        kb = self._kb_on_device()
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

    # ------------------------------------------------------------------------------------------ exclusion and ties
    def _is_excluded(self, row: int, exclude: Collection[str]) -> bool:
        audio_id = self.audio_ids[row]
        return self.pair_ids[row] in exclude or (audio_id != "" and audio_id in exclude)

    def _kept_mask(self, rows: np.ndarray, exclude: Collection[str]) -> np.ndarray:
        if not exclude:
            return np.ones(len(rows), dtype=bool)
        return np.array([not self._is_excluded(int(row), exclude) for row in rows], dtype=bool)

    def _select(self, scores, rows, k: int, exclude, fetched: int) -> tuple[np.ndarray, np.ndarray, bool]:
        """
        The best k kept hits of one query (S descending, row ascending) and whether they are final. They are not final
        when fewer than k survive the exclusions, or when the last fetched score ties the k-th kept one (an unfetched
        row with a smaller index could tie too), unless the index has nothing more to give.
        """
        valid = rows >= 0
        scores, rows = scores[valid], rows[valid].astype(np.int64)
        exhausted = len(rows) < fetched or fetched >= len(self)
        keep = self._kept_mask(rows, exclude)
        kept_scores, kept_rows = scores[keep], rows[keep]
        order = np.lexsort((kept_rows, -kept_scores))[:k]
        kept_scores, kept_rows = kept_scores[order], kept_rows[order]
        final = exhausted or (len(kept_rows) == k and scores.min() < kept_scores[-1])
        return kept_scores, kept_rows, final

    def _top_rows(self, queries: np.ndarray, k: int, excludes: list[frozenset]) -> list[tuple[np.ndarray, np.ndarray]]:
        """Per query, the top-k (scores, rows) left after exclusions; refetches only the queries that came up short."""
        largest_exclusion = max(len(exclude) for exclude in excludes)
        extra = largest_exclusion + self.exclude_margin if largest_exclusion else 0
        fetch = min(len(self), k + 1 + extra)
        results: list = [None] * len(queries)
        pending = np.arange(len(queries))
        while len(pending):
            scores, rows = self._search_index(queries[pending], fetch)
            short = []
            for j, query in enumerate(pending):
                kept_scores, kept_rows, final = self._select(scores[j], rows[j], k, excludes[query], fetch)
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
    ) -> list[list[RetrievedPair]]:
        """
        Retrieve the top-k pairs of every query of a batch (one index search for the batch, plus one for the queries
        that exclusions left short).

        Args:
            audio_embeds: (B, d_a) CLAP audio embeddings a_q of the queries.
            text_embeds: (B, d_t) CLAP text embeddings t_q; needed by the pair modes (for generative_pair2pair, the
                embedding of the model's own first-pass caption).
            mode: one of `RETRIEVAL_MODES`.
            fusion_weight: W of eq. 4 (pair modes).
            top_k: pairs per query.
            exclude_ids: per query, pair ids or audio ids whose rows must not be returned (e.g. the query's own clip);
                the empty audio id of text-only rows never matches.

        Returns:
            Per query, a list of `RetrievedPair` sorted by S descending (ties: row ascending). S_A = <a_q, a_k>;
            S_T = <t_q, t_k> in the pair modes and <a_q, t_k> otherwise (NaN if d_a != d_t).
        """
        _check_mode(mode)
        audio = _as_matrix(audio_embeds, "audio_embeds")
        if top_k < 0:
            raise ValueError(f"top_k must be >= 0, got {top_k}")
        excludes = _exclusion_sets(exclude_ids, len(audio))
        if mode == "none" or top_k == 0 or len(self) == 0:
            return [[] for _ in range(len(audio))]
        if audio.shape[1] != self.d_audio:
            raise ValueError(f"audio_embeds have dim {audio.shape[1]} but the KB's audio half has dim {self.d_audio}")
        queries = build_query(mode, audio, text_embeds, fusion_weight, d_text=self.d_text)
        text = _as_matrix(text_embeds, "text_embeds") if mode in PAIR_MODES else None
        text_ref = _text_reference(mode, audio, text, self.d_text)
        top = self._top_rows(queries, min(top_k, len(self)), excludes)
        return [
            self._to_pairs(scores, rows, audio[i], None if text_ref is None else text_ref[i])
            for i, (scores, rows) in enumerate(top)
        ]

    def _to_pairs(self, scores, rows, audio_query, text_ref) -> list[RetrievedPair]:
        """RetrievedPairs of one query, with the component scores recomputed from the KB vectors."""
        kb = np.asarray(self.vectors[rows], dtype=np.float32)
        audio_scores = kb[:, : self.d_audio] @ audio_query
        text_scores = kb[:, self.d_audio :] @ text_ref if text_ref is not None else np.full(len(rows), np.nan)
        return [
            RetrievedPair(
                pair_id=self.pair_ids[row],
                audio_id=self.audio_ids[row],
                caption=str(self.captions[int(row)]),
                row=int(row),
                score=float(score),
                audio_score=float(audio_score),
                text_score=float(text_score),
            )
            for row, score, audio_score, text_score in zip(rows, scores, audio_scores, text_scores, strict=True)
        ]
