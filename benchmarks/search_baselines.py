"""Library searches timed beside PairCap's in the same run: raw faiss `index.search` on its index, numpy brute force."""

from __future__ import annotations

import numpy as np

from modeling_paircap.index_paircap import faiss_search_settings


def faiss_search(index, queries: np.ndarray, k: int, pair_index=None) -> tuple[np.ndarray, np.ndarray]:
    """Raw faiss `index.search` (scores, rows): with faiss's defaults, or with the settings `pair_index` (a
    `PairCapIndex`) searches with (its BLAS threshold and single-query threads, set for the call and restored)."""
    if pair_index is None:
        return index.search(queries, k)
    with faiss_search_settings(len(queries), pair_index.blas_threshold, pair_index.single_query_threads):
        return index.search(queries, k)


def numpy_search(vectors: np.ndarray, queries: np.ndarray, k: int, chunk: int = 64) -> tuple[np.ndarray, np.ndarray]:
    """Brute force in numpy (scores, rows), best first: matmul + argpartition, `chunk` queries at a time."""
    scores, rows = [], []
    for start in range(0, len(queries), chunk):
        block = queries[start : start + chunk] @ vectors.T
        top = np.argpartition(block, -k, axis=1)[:, -k:]
        top_scores = np.take_along_axis(block, top, axis=1)
        order = np.argsort(-top_scores, axis=1)
        scores.append(np.take_along_axis(top_scores, order, axis=1))
        rows.append(np.take_along_axis(top, order, axis=1))
    return np.concatenate(scores), np.concatenate(rows)
