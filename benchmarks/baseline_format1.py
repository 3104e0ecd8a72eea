"""
Today's baseline, kept for the benchmarks: the format-1 knowledge-base loader and retriever search path of commit
2933174 (`modeling_paircap/knowledge_base_paircap.py` and `retrieval_paircap.py` before format 2), copied down to what
loading and searching do, so that `kb_scale.py` and `retrieval.py` measure them in the same run as the new code.

Format 1 loaded the rows with `load_dataset("parquet", data_files=...)` (a converted Arrow copy in the datasets cache,
memory-mapped), copied the `[audio ; text]` matrix out of them with `pair_vectors` (kept as numpy beside the index read
from `index.faiss`), turned the pair and audio ids into Python lists, and kept the captions as a lazy datasets column.
Its search used faiss's own settings and built each hit with per-row Python lookups (`captions[int(row)]` on that
column reads one row of the Arrow table per hit).
"""

from __future__ import annotations

from pathlib import Path

import datasets
import faiss
import numpy as np

from modeling_paircap.configuration_paircap import PAIR_MODES
from modeling_paircap.index_paircap import RetrievedPair, _as_matrix, build_query

FORMAT1_COMMIT = "2933174"


def format1_features(audio_dim: int, text_dim: int, token_dim: int) -> datasets.Features:
    """The format-1 row schema (`kb_features`): the pooled tokens were stored in every row, float16."""
    return datasets.Features(
        {
            "pair_id": datasets.Value("string"),
            "audio_id": datasets.Value("string"),
            "caption": datasets.Value("string"),
            "source": datasets.Value("string"),
            "split": datasets.Value("string"),
            "duration": datasets.Value("float32"),
            "has_audio": datasets.Value("bool"),
            "is_long": datasets.Value("bool"),
            "audio_embedding": datasets.List(datasets.Value("float32"), length=audio_dim),
            "text_embedding": datasets.List(datasets.Value("float32"), length=text_dim),
            "audio_tokens": datasets.Array2D(shape=(None, token_dim), dtype="float16"),
        }
    )


def embedding_matrix(rows, column: str) -> np.ndarray:
    """Format 1's `embedding_matrix`: a fixed-length list column as a float32 `(rows, dim)` matrix (a copy)."""
    table = rows.flatten_indices() if rows._indices is not None else rows
    values = table.data.column(column).combine_chunks()
    return np.asarray(values.values, dtype=np.float32).reshape(len(rows), values.type.list_size)


def pair_vectors(rows) -> np.ndarray:
    """Format 1's `pair_vectors`: the `[audio_embedding ; text_embedding]` matrix, one more copy."""
    audio, text = embedding_matrix(rows, "audio_embedding"), embedding_matrix(rows, "text_embedding")
    return np.ascontiguousarray(np.concatenate([audio, text], axis=1))


class Format1Retriever:
    """Format 1's `PairCapRetriever` over a faiss index, down to the search path (no exclusions, faiss's settings)."""

    def __init__(self, vectors: np.ndarray, pair_ids, audio_ids, captions, d_audio: int, index):
        self.vectors = np.asarray(vectors)
        num_rows, dim = self.vectors.shape
        for name, values in (("pair_ids", pair_ids), ("audio_ids", audio_ids), ("captions", captions)):
            if len(values) != num_rows:
                raise ValueError(f"the KB has {num_rows} vectors but {name} has {len(values)} entries")
        self.d_audio, self.d_text = d_audio, dim - d_audio
        self.pair_ids = ["" if value is None else str(value) for value in pair_ids]
        self.audio_ids = ["" if value is None else str(value) for value in audio_ids]
        self.captions = captions
        self.index = index

    def __len__(self) -> int:
        return len(self.vectors)

    def _select(self, scores, rows, k: int, fetched: int):
        valid = rows >= 0
        scores, rows = scores[valid], rows[valid].astype(np.int64)
        exhausted = len(rows) < fetched or fetched >= len(self)
        order = np.lexsort((rows, -scores))[:k]
        kept_scores, kept_rows = scores[order], rows[order]
        final = exhausted or (len(kept_rows) == k and scores.min() < kept_scores[-1])
        return kept_scores, kept_rows, final

    def _top_rows(self, queries: np.ndarray, k: int):
        fetch = min(len(self), k + 1)
        results: list = [None] * len(queries)
        pending = np.arange(len(queries))
        while len(pending):
            scores, rows = self.index.search(queries[pending], fetch)
            short = []
            for j, query in enumerate(pending):
                kept_scores, kept_rows, final = self._select(scores[j], rows[j], k, fetch)
                results[query] = (kept_scores, kept_rows)
                if not final:
                    short.append(query)
            pending = np.asarray(short, dtype=np.int64)
            fetch = min(len(self), 2 * fetch)
        return results

    def search(self, audio_embeds, text_embeds=None, mode="pair2pair", fusion_weight=0.5, top_k=5):
        audio = _as_matrix(audio_embeds, "audio_embeds")
        queries = build_query(mode, audio, text_embeds, fusion_weight, d_text=self.d_text)
        text = _as_matrix(text_embeds, "text_embeds") if mode in PAIR_MODES else None
        text_ref = text if mode in PAIR_MODES else (audio if audio.shape[1] == self.d_text else None)
        top = self._top_rows(queries, min(top_k, len(self)))
        return [
            self._to_pairs(scores, rows, audio[i], None if text_ref is None else text_ref[i])
            for i, (scores, rows) in enumerate(top)
        ]

    def _to_pairs(self, scores, rows, audio_query, text_ref) -> list[RetrievedPair]:
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


def load_format1(folder: str | Path, cache_dir: str | Path, d_audio: int) -> tuple[datasets.Dataset, Format1Retriever]:
    """
    Format 1's `PairCapKnowledgeBase.from_pretrained` on a folder's `data/*.parquet` and `index.faiss`: `load_dataset`
    into `cache_dir` (a converted copy of every column), the index, then `pair_vectors` and the retriever's lists.
    """
    folder = Path(folder)
    files = sorted(str(path) for path in (folder / "data").glob("*.parquet"))
    rows = datasets.load_dataset("parquet", data_files=files, split="train", cache_dir=str(cache_dir))
    index = faiss.read_index(str(folder / "index.faiss"))
    retriever = Format1Retriever(
        pair_vectors(rows), rows["pair_id"], rows["audio_id"], rows["caption"], d_audio=d_audio, index=index
    )
    return rows, retriever
