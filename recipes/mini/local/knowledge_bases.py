"""Stage `kb`: the knowledge bases *base* (the training pairs), *large* (base + the noisy pairs) and *refined* (large
refined with the training pairs, paper §3.5), embedded by the assembled release's CLAP (the frozen retrieval space)."""

from __future__ import annotations

from datasets import concatenate_datasets, load_from_disk
from transformers import AutoModel, AutoProcessor

from datasets_scripts.build_kb import build_knowledge_base, refine_knowledge_base_folder
from recipes.mini.local.layout import MiniRun

KNOWLEDGE_BASES = ("refined", "large", "base")  # the first is the one the W and top-k sweeps run on


def build_knowledge_bases(run: MiniRun) -> None:
    """`kb/base`, `kb/large` and `kb/refined`; their clips are recorded under named roots (`MiniRun.audio_roots`)."""
    model = AutoModel.from_pretrained(run.path("assembled"), trust_remote_code=True).eval()
    processor = AutoProcessor.from_pretrained(run.path("assembled"), trust_remote_code=True)
    train = load_from_disk(str(run.pairs("train")))
    noisy = load_from_disk(str(run.pairs("noisy")))
    options = {"batch_size": 32, "num_workers": run.scale.num_workers, "roots": run.audio_roots()}
    build_knowledge_base(train, model, processor, run.path("kb", "base"), {"name": "mini-base"}, **options)
    large = concatenate_datasets([train, noisy])
    build_knowledge_base(large, model, processor, run.path("kb", "large"), {"name": "mini-large"}, **options)
    refine_knowledge_base_folder(run.path("kb", "large"), run.path("kb", "base"), run.path("kb", "refined"))
