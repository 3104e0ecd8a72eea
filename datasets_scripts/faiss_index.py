"""FAISS indexes over PairCap knowledge-base vectors ``[a_k ; t_k]`` (see `modeling_paircap/index_paircap.py`).

`build_index` turns the vectors into an inner-product index: exact ("Flat", the default) or any faiss factory string
("IVF4096,Flat", "HNSW32", "IVF1024,PQ64", ...), trained on a seeded sample. The search parameters (nprobe, efSearch)
are set on the index, so `save_index` writes them into the file; `describe_index` reports them for the dataset card.
`recall_at_k` measures an approximate index against exact search before it is published. Index files are read (and
checked) by `modeling_paircap.faiss_file_paircap.read_index`.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

try:
    import faiss
except ImportError as error:  # faiss is an extra: one of two wheels
    raise ImportError(
        'building and searching FAISS indexes needs FAISS: `pip install "paircap[cpu]"` (faiss-cpu), or '
        '`pip install "paircap[gpu]"` (faiss-gpu-cu12) on a CUDA 12 machine; install one of the two, not both'
    ) from error

from modeling_paircap.faiss_file_paircap import write_index
from modeling_paircap.file_io_paircap import write_atomic
from modeling_paircap.index_paircap import flat_index

METRICS = {"ip": faiss.METRIC_INNER_PRODUCT, "l2": faiss.METRIC_L2}
ADD_CHUNK_ROWS = 65536
HNSW_EF_SEARCH = 128


def _as_float32(vectors: np.ndarray, name: str = "vectors") -> np.ndarray:
    array = np.ascontiguousarray(vectors, dtype=np.float32)
    if array.ndim != 2:
        raise ValueError(f"{name} must be a 2-D (rows, dim) array, got shape {array.shape}")
    return array


def _search_parameter_names(index: faiss.Index) -> list[str]:
    space = faiss.ParameterSpace()
    space.initialize(index)
    return [space.parameter_ranges.at(i).name for i in range(space.parameter_ranges.size())]


def _nlist(index: faiss.Index) -> int | None:
    try:
        return faiss.extract_index_ivf(index).nlist
    except RuntimeError:
        return None


def default_search_params(index: faiss.Index) -> dict[str, int]:
    """Search parameters for high recall@10: nprobe = nlist / 64 (within 16..nlist) for IVF, efSearch = 128 for HNSW."""
    names, params = _search_parameter_names(index), {}
    nlist = _nlist(index)
    if "nprobe" in names and nlist:
        params["nprobe"] = min(nlist, max(16, nlist // 64))
    if "efSearch" in names:
        params["efSearch"] = HNSW_EF_SEARCH
    return params


def set_search_params(index: faiss.Index, params: dict[str, int]) -> None:
    """Set search parameters (e.g. {"nprobe": 64}) on an index; unknown names raise a ValueError."""
    names = _search_parameter_names(index)
    for name, value in params.items():
        if name not in names:
            raise ValueError(f"search parameter {name!r} does not apply to this index (it takes {names})")
        faiss.ParameterSpace().set_index_parameter(index, name, value)


def describe_index(index: faiss.Index) -> dict:
    """What to record about an index: type, size, dim, metric and the search parameters in effect."""
    info = {
        "type": type(index).__name__,
        "ntotal": int(index.ntotal),
        "dim": int(index.d),
        "metric": "ip" if index.metric_type == faiss.METRIC_INNER_PRODUCT else "l2",
    }
    names = _search_parameter_names(index)
    if "nprobe" in names:
        info["nlist"] = _nlist(index)
        info["nprobe"] = int(faiss.extract_index_ivf(index).nprobe)
    if "efSearch" in names:
        info["efSearch"] = int(faiss.downcast_index(index).hnsw.efSearch)
    return info


def _default_train_size(index: faiss.Index, num_rows: int) -> int:
    return min(num_rows, max(64 * (_nlist(index) or 0), 100_000))


def _train(index: faiss.Index, vectors: np.ndarray, train_size: int | None, seed: int) -> None:
    size = min(len(vectors), train_size or _default_train_size(index, len(vectors)))
    nlist = _nlist(index)
    if nlist and size < nlist:
        raise ValueError(f"an IVF index with {nlist} lists needs at least {nlist} training vectors, got {size}")
    rows = np.sort(np.random.default_rng(seed).choice(len(vectors), size=size, replace=False))
    index.train(_as_float32(vectors[rows]))


def build_index(
    vectors: np.ndarray,
    factory: str = "Flat",
    metric: str = "ip",
    train_size: int | None = None,
    seed: int = 0,
    search_params: dict[str, int] | None = None,
) -> faiss.Index:
    """
    Build an index over (N, d) vectors, added in chunks (float16 or memory-mapped input works).

    Args:
        factory: "Flat" for exact search (`IndexFlatIP`), or any faiss factory string.
        metric: "ip" (PairCap) or "l2".
        train_size: vectors sampled (with `seed`) to train an index that needs training; default
            min(N, max(64 * nlist, 100k)).
        search_params: e.g. {"nprobe": 64} or {"efSearch": 256}; default `default_search_params`.
    """
    if metric not in METRICS:
        raise ValueError(f"metric must be one of {sorted(METRICS)}, got {metric!r}")
    dim = np.shape(vectors)[1]
    starts = range(0, len(vectors), ADD_CHUNK_ROWS)
    if factory == "Flat" and metric == "ip":  # the vectors copied into storage allocated once
        return flat_index(len(vectors), dim, (_as_float32(vectors[start : start + ADD_CHUNK_ROWS]) for start in starts))
    index = faiss.IndexFlatL2(dim) if factory == "Flat" else faiss.index_factory(dim, factory, METRICS[metric])
    if not index.is_trained:
        _train(index, vectors, train_size, seed)
    for start in starts:
        index.add(_as_float32(vectors[start : start + ADD_CHUNK_ROWS]))
    set_search_params(index, default_search_params(index) if search_params is None else search_params)
    return index


def exact_top_rows(vectors, queries: np.ndarray, k: int, metric: int = faiss.METRIC_INNER_PRODUCT) -> np.ndarray:
    """The exact top-k rows of each query over (N, d) vectors, streamed chunk by chunk (no second copy of them)."""
    best_scores = np.zeros((len(queries), 0), dtype=np.float32)
    best_rows = np.zeros((len(queries), 0), dtype=np.int64)
    for start in range(0, len(vectors), ADD_CHUNK_ROWS):
        chunk = _as_float32(vectors[start : start + ADD_CHUNK_ROWS])
        scores = queries @ chunk.T
        if metric != faiss.METRIC_INNER_PRODUCT:  # L2: rank by -|q - x|^2 + |q|^2
            scores = 2 * scores - (chunk * chunk).sum(1)
        scores = np.concatenate([best_scores, scores], 1)
        chunk_rows = np.broadcast_to(np.arange(start, start + len(chunk)), (len(queries), len(chunk)))
        rows = np.concatenate([best_rows, chunk_rows], 1)
        keep = min(k, scores.shape[1])
        top = np.argpartition(-scores, keep - 1, axis=1)[:, :keep]
        best_scores, best_rows = np.take_along_axis(scores, top, 1), np.take_along_axis(rows, top, 1)
    order = np.lexsort((best_rows, -best_scores), axis=1)
    return np.take_along_axis(best_rows, order, 1)


def recall_at_k(index: faiss.Index, exact_index_or_vectors, queries: np.ndarray, k: int = 10) -> float:
    """Mean fraction of the exact top-k that `index` returns in its own top-k (1.0 for an exact index). The exact
    reference is an index, or the vectors themselves (an array or a chunked view such as `PairVectorView`)."""
    queries = _as_float32(queries, "queries")
    exact = exact_index_or_vectors
    total = exact.ntotal if isinstance(exact, faiss.Index) else len(exact)
    if total != index.ntotal:
        raise ValueError(f"the exact reference has {total} vectors but the index has {index.ntotal}")
    _, approx_rows = index.search(queries, k)
    if isinstance(exact, faiss.Index):
        _, exact_rows = exact.search(queries, k)
    else:
        exact_rows = exact_top_rows(exact, queries, k, index.metric_type)
    hits = sum(len(set(a[a >= 0]) & set(e[e >= 0])) for a, e in zip(approx_rows, exact_rows, strict=True))
    return hits / float(len(queries) * min(k, total))


def save_index(index: faiss.Index, path: str | os.PathLike) -> Path:
    """Write an index (a GPU index is copied to the CPU first) atomically, every write checked; returns the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if hasattr(faiss, "index_gpu_to_cpu") and type(index).__name__.startswith("Gpu"):
        index = faiss.index_gpu_to_cpu(index)
    write_atomic(path, lambda temporary: write_index(index, temporary))
    return path
