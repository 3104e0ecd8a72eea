"""Pack a mini run's curriculum model with its refined knowledge base into one small, offline release folder.

    paircap mini --output runs/mini-cc --scale release --clips esc50_cc --pack-release DIR

The folder holds the model (float16 captioner, float32 CLAP so the KB's retrieval space is exact; remote code,
processor), `knowledge_base/` (refined KB with clip tokens
made by the model's own audio tower, so pass 2 needs no audio) and a model card that says what the model is.

Its default retrieval is the paper's generative pair-to-pair (`mode`, `paircap mini --release-mode`). At the full
mini scale audio-to-audio captions better (`recipes/mini/RESULTS.md`, runs `p7`); on the toy's own held-out mixtures
neither leads (runs `toy5`, `toy6`). `generate(retrieval_mode=...)` picks another mode per call.
"""

from __future__ import annotations

import json
import shutil
import tempfile
from collections import Counter
from pathlib import Path

import torch
import yaml
from datasets import load_from_disk
from huggingface_hub import ModelCard

from datasets_scripts.clip_tokens import refresh_tokens
from hub_cards import (
    SourceTerms,
    clip_licence_terms,
    load_evaluation,
    release_default,
    render_dataset_card,
    render_mini_model_card,
)
from hub_cards.default_configuration import DefaultResult, default_summary
from modeling_paircap.kb_format_paircap import KnowledgeBaseMetadata
from modeling_paircap.knowledge_base_paircap import PairCapKnowledgeBase
from modeling_paircap.modeling_paircap import PairCapForConditionalGeneration
from modeling_paircap.processing_paircap import PairCapProcessor
from paircap.assembly import save_release
from paircap.context_probe import cell, paired_naming, probe_table, share
from recipes.mini.local.claims import read_records
from recipes.mini.local.esc50 import Esc50Clip, read_esc50_manifests
from recipes.mini.local.event_captions import events_named
from recipes.mini.local.knowledge_bases import KNOWLEDGE_BASES
from recipes.mini.local.layout import CURRICULUM, MiniRun
from recipes.mini.local.mixtures import mixture_events
from recipes.mini.local.report import Evaluation, grid_table

KB_FOLDER = "knowledge_base"
RELEASE_MODE = "generative_pair2pair"  # the packed release's `config.retrieval_mode` (the module docstring says why)
TEST_DATASET = {"name": "esc50-mixtures", "split": "test"}  # what `evaluate_curriculum` scores the release on


def pack_release(run: MiniRun, destination: Path, kb_name: str = "refined", mode: str = RELEASE_MODE) -> Path:
    """Write the release folder, retrieving with `mode` by default; returns it. Needs the run's corpus (the KB's clip
    tokens are recomputed)."""
    source = run.release(CURRICULUM)
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
    model.config.retrieval_mode = mode
    for module in captioner:  # the CLAP stays float32: the KB's embeddings and fingerprint are of those weights
        module.to(torch.float16)
    card = mini_card(run, model, clips, destination / KB_FOLDER, kb_name)
    save_release(model, processor, destination, card)
    config = json.loads((destination / "config.json").read_text())  # loads as float32 (`dtype="auto"` reads this)
    for key in ("dtype", "torch_dtype"):
        if key in config:
            config[key] = "float32"
    (destination / "config.json").write_text(json.dumps(config, indent=2) + "\n")
    return destination


def mini_card(run: MiniRun, model, clips: list[Esc50Clip], kb_folder: Path, kb: str) -> ModelCard:
    """
    The model card: a 50-event toy, what it was trained on (pairs per source, licences, the CLAP's teacher), and its
    measured results, led by its default configuration (`model.config` retrieving from the KB evaluated as `kb`, the
    name of a KB of the run: its folder may have moved since the evaluation).
    """
    corpus = json.loads(run.path("corpus", "summary.json").read_text())
    evaluation_dir = run.path("evaluation", CURRICULUM)
    evaluation = Evaluation(evaluation_dir)
    results = load_evaluation(evaluation_dir)["results"]
    if results is not None:  # an evaluation made before `paircap evaluate` recorded its dataset
        results["settings"].setdefault("dataset", TEST_DATASET)
    default = release_default(results, model.config, kb) if results and results["runs"] else None
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
        "default_summary": default_summary(default) if default else "No evaluation of this release was found.",
        "default_table": default_cells(evaluation, default),
        "results_table": grid_table(evaluation, list(KNOWLEDGE_BASES), 0.5, run.scale.max_examples),
        "top_k": run.scale.max_examples,
        "default_mode": f"`{model.config.retrieval_mode}`",
        "default_mode_note": mode_note(model.config.retrieval_mode),
        "teacher": teacher_sentence(run),
        "naming_table": naming_table(run, default),
        "probe_table": context_probe_table(run),
    }
    text_sources = Counter(load_from_disk(str(run.pairs("text")))["source"])  # every caption the release learned
    return render_mini_model_card(
        values,
        training_sources=dict(text_sources),
        kb_sources=KnowledgeBaseMetadata.load(kb_folder).sources,
        overrides=clip_terms(clips),
        results=results,
        default=default,
    )


def mode_note(mode: str) -> str:
    """How to get the paper's generative pair-to-pair when the release retrieves otherwise ("" when it does)."""
    if mode == "generative_pair2pair":
        return ""
    return 'the paper\'s generative pair-to-pair is `generate(retrieval_mode="generative_pair2pair")`'


def default_cells(evaluation: Evaluation, default: DefaultResult | None) -> str:
    """The default configuration's cell and zero-shot's beside it, as the grid's cells ("" without a default run)."""
    if default is None or default.run is None:
        return ""
    lines = ["| configuration | CIDEr-D / both events named |", "|---|---:|"]
    lines.append(f"| default: {default.configuration.describe()} | {evaluation.cell(default.run)} |")
    if default.zero_shot is not None and default.zero_shot is not default.run:
        lines.append(f"| zero-shot (no retrieval) | {evaluation.cell(default.zero_shot)} |")
    return "\n".join(lines)


def naming_table(run: MiniRun, default: DefaultResult | None) -> str:
    """Held-out naming, zero-shot against the default configuration on the same test mixtures: the shares whose
    caption names at least one and both of their events (95 % Wilson intervals), the mixtures the default gains and
    loses with McNemar's exact p, and how often the caption of the default's top retrieved pair names them (what
    reading it can give at best); "" without both predictions files."""
    if default is None or default.run is None or default.zero_shot is None:
        return ""
    predictions = run.path("evaluation", CURRICULUM, "predictions")
    files = [predictions / f"{result['name']}.jsonl" for result in (default.zero_shot, default.run)]
    if not all(path.is_file() for path in files):
        return ""
    events = mixture_events(run.mixtures_dir)
    zero_shot, retrieved = (read_records(path) for path in files)
    items = sorted(set(zero_shot) & set(retrieved))
    top_pairs = {item: {"caption": (retrieved[item]["retrieved"] or [{"caption": ""}])[0]["caption"]} for item in items}
    rows = {
        "zero-shot (no retrieval)": zero_shot,
        "default": retrieved,
        "the default's top retrieved pair (its caption)": top_pairs,
    }
    named = {}
    for label, records in rows.items():
        flags = [events_named(records[item]["caption"], events[item]) for item in items]
        named[label] = {"any": [any(f) for f in flags], "both": [all(f) for f in flags]}
    pairs = [paired_naming(named["default"][key], named["zero-shot (no retrieval)"][key]) for key in ("any", "both")]
    gains = [f"{pair['a_only']} gained, {pair['b_only']} lost (McNemar p {pair['mcnemar_p']:.2g})" for pair in pairs]
    lines = [f"| {len(items)} test mixtures | names at least one event | names both events |", "|---|---:|---:|"]
    lines += [
        f"| {label} | {cell(share(flags['any']))} | {cell(share(flags['both']))} |" for label, flags in named.items()
    ]
    lines.insert(-1, f"| default against zero-shot, same mixtures | {gains[0]} | {gains[1]} |")  # before the top pair
    return "\n".join(lines)


def context_probe_table(run: MiniRun) -> str:
    """The curriculum model's context probe (the `mechanism` stage's `context_probe.json`) as its table ("" without
    one)."""
    path = run.path("mechanism", CURRICULUM, "context_probe.json")
    return probe_table(json.loads(path.read_text())) if path.is_file() else ""


def teacher_sentence(run: MiniRun) -> str:
    """What the card says of the CLAP's AudioSet teacher when its training was distilled from one (the `clap` stage's
    `config.yaml` names distillation targets: `paircap mini --teacher`), else ""."""
    config = run.path("clap", "config.yaml")
    if not config.is_file() or not yaml.safe_load(config.read_text()).get("distill_targets"):
        return ""
    record = run.path("clap", "teacher", "teacher.json")
    sha256 = json.loads(record.read_text())["sha256"] if record.is_file() else None
    weights = "`mn04_as_mAP_432.pt`" + (f", sha256 `{sha256}`" if sha256 else "")
    teacher = (
        f"the embeddings and AudioSet tags of EfficientAT `mn04_as` ({weights}; MobileNetV3 at width 0.4, pretrained "
        "on AudioSet; F. Schmid et al., ICASSP 2023; MIT licence)"
    )
    if run.path("clap_audio", "clap", "config.json").is_file():  # stage clap_audio ran: the CLAP started from it
        trained = (
            f"its audio tower was first pretrained to match {teacher} on its training clips and "
            f"{run.scale.clap_audio_mixtures} waveform-augmented mixtures of them ({run.scale.clap_audio_steps} "
            "steps, stage `clap_audio`, as laion's HTSAT was pretrained on AudioSet); then the whole CLAP learned them "
            "besides its contrastive loss"
        )
    else:
        trained = f"besides its contrastive loss, it was trained to match {teacher} on its training clips and mixtures"
    return (
        f"{trained} (`paircap mini --teacher`). The CLAP shipped here is derived from that teacher; the teacher's own "
        "weights are not shipped."
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
