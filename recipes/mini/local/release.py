"""Pack a mini run's curriculum model with its refined knowledge base into one small, offline release folder.

    paircap mini --output runs/mini-cc --scale release --clips esc50_cc --pack-release DIR

The folder holds the model (float16 captioner, float32 CLAP so the KB's retrieval space is exact; remote code,
processor), `knowledge_base/` (refined KB with clip tokens
made by the model's own audio tower, so pass 2 needs no audio) and a model card that says what the model is.
"""

from __future__ import annotations

import json
import shutil
import tempfile
from collections import Counter
from pathlib import Path

import torch
from datasets import load_from_disk
from huggingface_hub import ModelCard

from datasets_scripts.clip_tokens import refresh_tokens
from hub_cards import (
    SourceTerms,
    clip_licence_terms,
    load_evaluation,
    render_dataset_card,
    render_mini_model_card,
)
from modeling_paircap.kb_format_paircap import KnowledgeBaseMetadata
from modeling_paircap.knowledge_base_paircap import PairCapKnowledgeBase
from modeling_paircap.modeling_paircap import PairCapForConditionalGeneration
from modeling_paircap.processing_paircap import PairCapProcessor
from paircap.assembly import save_release
from recipes.mini.local.esc50 import Esc50Clip, read_esc50_manifests
from recipes.mini.local.knowledge_bases import KNOWLEDGE_BASES
from recipes.mini.local.layout import MiniRun
from recipes.mini.local.report import Evaluation, grid_table

KB_FOLDER = "knowledge_base"


def pack_release(run: MiniRun, destination: Path, kb_name: str = "refined") -> Path:
    """Write the release folder; returns it. Needs the run's corpus (the KB's clip tokens are recomputed)."""
    source = run.release("stage2_phase2")
    model = PairCapForConditionalGeneration.from_pretrained(source).eval()
    processor = PairCapProcessor.from_pretrained(source, trust_remote_code=True)
    destination = Path(destination)
    if destination.exists():
        shutil.rmtree(destination)
    captioner = [model.language_model, model.multi_modal_projector, model.get_audio_tower()]
    for module in captioner:  # float16 on disk; the tokens below are made by exactly the weights that will load
        module.to(torch.float16).to(torch.float32)
    kb = PairCapKnowledgeBase.from_pretrained(run.path("kb", kb_name), model.retrieval_fingerprint())
    kb.save_pretrained(destination / KB_FOLDER)
    with tempfile.TemporaryDirectory() as work:
        refresh_tokens(destination / KB_FOLDER, model, processor, run.audio_roots(), work_dir=work, num_workers=0)
    clips = release_clips(run)
    kb_card = render_dataset_card(
        KnowledgeBaseMetadata.load(destination / KB_FOLDER), KB_FOLDER, destination.name, clip_terms(clips)
    )
    kb_card.save(destination / KB_FOLDER / "README.md")
    model.config.knowledge_base = KB_FOLDER
    model.config.retrieval_top_k = run.scale.max_examples
    for module in captioner:  # the CLAP stays float32: the KB's embeddings and fingerprint are of those weights
        module.to(torch.float16)
    save_release(model, processor, destination, mini_card(run, model, clips, destination / KB_FOLDER))
    config = json.loads((destination / "config.json").read_text())  # loads as float32 (`dtype="auto"` reads this)
    for key in ("dtype", "torch_dtype"):
        if key in config:
            config[key] = "float32"
    (destination / "config.json").write_text(json.dumps(config, indent=2) + "\n")
    return destination


def mini_card(run: MiniRun, model, clips: list[Esc50Clip], kb_folder: Path) -> ModelCard:
    """The model card: a 50-event toy, what it was trained on (pairs per source, licences), and its measured results."""
    corpus = json.loads(run.path("corpus", "summary.json").read_text())
    evaluation_dir = run.path("evaluation", "stage2_phase2")
    evaluation = Evaluation(evaluation_dir)
    values = {
        "clips": ", ".join(run.clip_folders),
        "clip_licences": ", ".join(
            f"{name}: {count}" for name, count in sorted(Counter(c.licence for c in clips).items())
        ),
        "train_clips": corpus["clips"]["train"],
        "test_clips": corpus["clips"]["test"],
        "train_pairs": corpus["pairs"]["train"],
        "test_mixtures": evaluation.results["runs"][0]["items"] if evaluation.results["runs"] else "n/a",
        "attribution": attribution_table(clips),
        "parameters": f"{sum(p.numel() for p in model.parameters()) / 1e6:.1f} M",
        "results_table": grid_table(evaluation, list(KNOWLEDGE_BASES), 0.5, run.scale.max_examples),
        "top_k": run.scale.max_examples,
    }
    text_sources = Counter(load_from_disk(str(run.pairs("text")))["source"])  # every caption the release learned
    return render_mini_model_card(
        values,
        training_sources=dict(text_sources),
        kb_sources=KnowledgeBaseMetadata.load(kb_folder).sources,
        overrides=clip_terms(clips),
        **load_evaluation(evaluation_dir),
    )


def release_clips(run: MiniRun) -> list[Esc50Clip]:
    """Every ESC-50 clip the release learned from or retrieves, with its licence."""
    return read_esc50_manifests([run.data / folder for folder in run.clip_folders])


def clip_terms(clips: list[Esc50Clip]) -> dict[str, SourceTerms]:
    """The ESC-50 sources' terms from the licences of the clips actually used (not the dataset-wide CC BY-NC)."""
    terms = clip_licence_terms(
        "ESC-50 clips", [c.licence for c in clips], "https://github.com/karolpiczak/ESC-50", "esc50"
    )
    return {"esc50": terms}


def attribution_table(clips: list[Esc50Clip]) -> str:
    """Every ESC-50 clip the release learned from or retrieves: its Freesound recording and licence."""
    rows = [f"| {c.audio_id} | {c.category} | https://freesound.org/s/{c.src_file}/ | {c.licence} |" for c in clips]
    return "\n".join(["| clip | class | Freesound recording | licence |", "|---|---|---|---|", *rows])
