"""Stage `kb`: the knowledge bases *base* (the training pairs), *large* (base + the noisy pairs) and *refined* (large
refined with the training pairs, paper §3.5), embedded by the assembled release's CLAP (the frozen retrieval space).
With novel classes (`novel_classes.py`) also *text_only* (the distinct training captions without audio: RECAP's
datastore) and *refined_without_novel* (refined less every pair whose audio holds or caption names a novel class)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from datasets import Dataset, Value, concatenate_datasets, load_from_disk
from transformers import AutoModel, AutoProcessor

from datasets_scripts.build_kb import (
    build_knowledge_base,
    default_work_dir,
    refine_knowledge_base_folder,
    write_kb_subset,
)
from modeling_paircap.file_io_paircap import folder_lock
from modeling_paircap.kb_format_paircap import METADATA_FILE
from modeling_paircap.knowledge_base_paircap import PairCapKnowledgeBase
from recipes.mini.local.layout import MiniRun
from recipes.mini.local.novel_classes import clip_events, read_novel_classes, without_novel

KNOWLEDGE_BASES = ("refined", "large", "base")  # the first is the one the W and top-k sweeps run on
TEXT_ONLY, CONTROL = "text_only", "refined_without_novel"  # the `novel` stage's two extra KBs


def build_knowledge_bases(run: MiniRun) -> None:
    """`kb/base`, `kb/large` and `kb/refined`; their clips are recorded under named roots (`MiniRun.audio_roots`).
    With novel classes, `kb/text_only` and `kb/refined_without_novel` too."""
    model = AutoModel.from_pretrained(run.path("assembled"), trust_remote_code=True).eval()
    processor = AutoProcessor.from_pretrained(run.path("assembled"), trust_remote_code=True)
    train = load_from_disk(str(run.pairs("train")))
    noisy = load_from_disk(str(run.pairs("noisy")))
    options = {"batch_size": 32, "num_workers": run.scale.num_workers, "roots": run.audio_roots()}
    build_knowledge_base(train, model, processor, run.path("kb", "base"), {"name": "mini-base"}, **options)
    large = concatenate_datasets([train, noisy])
    build_knowledge_base(large, model, processor, run.path("kb", "large"), {"name": "mini-large"}, **options)
    refine_knowledge_base_folder(run.path("kb", "large"), run.path("kb", "base"), run.path("kb", "refined"))
    novel = read_novel_classes(run)
    if novel:
        recipe = {"name": "mini-text-only"}
        options["with_tokens"] = False
        build_knowledge_base(text_only_pairs(train), model, processor, run.path("kb", TEXT_ONLY), recipe, **options)
        write_without_novel(run.path("kb", "refined"), run.path("kb", CONTROL), clip_events(run), novel)


def text_only_pairs(pairs: Dataset) -> Dataset:
    """The first pair of each distinct caption of `pairs`, without its audio (rows that `build_knowledge_base`
    writes with has_audio false)."""
    first = {}
    for row, caption in enumerate(pairs["caption"]):
        first.setdefault(caption, row)
    text = pairs.select(sorted(first.values())).remove_columns("audio")
    return text.add_column("audio", [None] * len(text)).cast_column("audio", Value("null"))


def write_without_novel(source: Path, output: Path, events: dict[str, Sequence[str]], novel: Sequence[str]) -> Path:
    """The KB in `source` less every pair whose audio holds a novel class or whose caption names one, at `output`."""
    with folder_lock(output, METADATA_FILE):
        kb = PairCapKnowledgeBase.from_pretrained(source)
        rows = without_novel(kb.rows, events, novel)
        recipe = {"subset_of": kb.metadata.recipe, "without_classes": list(novel)}
        return write_kb_subset(kb, rows, output, recipe, default_work_dir(output))
