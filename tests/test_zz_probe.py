from tests.test_training_data import *  # noqa
import numpy as np, pytest
from modeling_paircap.knowledge_base_paircap import embedding_matrix
from modeling_paircap.retrieval_paircap import PairCapRetriever
from datasets_scripts.neighbors import compute_training_neighbors

def test_probe(embedded_rows):
    e = embedded_rows
    audio = embedding_matrix(e, "audio_embedding")
    print("rows 7..11 identical:", all((audio[7] == audio[r]).all() for r in range(7, 12)))
    rows = np.flatnonzero(np.array(e["has_audio"]))
    a = audio[rows]
    import faiss
    index = faiss.IndexFlatIP(a.shape[1]); index.add(a)
    for nq in (1, 45):
        q = a[:nq] if nq > 1 else a[12:13]
        faiss.cvar.distance_compute_blas_threshold = 16
        D, I = index.search(a, 45)
        j = 12  # row 14 -> position 12
        d = dict(zip(I[j].tolist(), D[j].tolist()))
        print(nq, [repr(d[p]) for p in range(5, 10)])
    print("numpy", [repr(float(a[12] @ a[p])) for p in range(5, 10)])
    print(compute_training_neighbors(e, 6)[14], compute_training_neighbors(e, 6, device="cpu")[14])
