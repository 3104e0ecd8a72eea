"""KB scale benchmark (`python -m benchmarks.kb_scale`): the shape of its synthetic knowledge bases and searches."""

AUDIO_DIM = TEXT_DIM = 512  # LAION-CLAP's
CAPTIONS_PER_CLIP = 5  # as in Clotho
TOKENS_PER_CLIP = 32  # one 10 s window: 64 HTSAT tokens average-pooled with stride 2
TOKEN_DIM = 768
TOP_K = 5
FUSION_WEIGHT = 0.5
BATCH = 64
WORKER = "benchmarks.kb_scale.worker"
SAME_SETTINGS = "faiss, the index's settings"  # the search timings' reference
# how each loader is named in the results
LOADERS = {
    "paircap": "PairCapKnowledgeBase.from_pretrained",
    "libraries": "libraries: pyarrow.parquet.read_table + faiss.read_index",
}
