"""Model cards, filled from `model_card.md` (a trained or assembled release) and `mini_model_card.md` (the mini
recipe's release) beside this module; the YAML front matter is built with huggingface_hub's `ModelCardData`."""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Mapping
from dataclasses import asdict
from pathlib import Path

from huggingface_hub import EvalResult, ModelCard, ModelCardData

from hub_cards.default_configuration import (
    DefaultResult,
    default_eval_results,
    default_summary,
    default_table,
    evaluation_dataset,
    release_default,
)
from hub_cards.evaluation_tables import dcase2024_table, headline_metric, method_by_kb_table, metrics_table
from hub_cards.terms import (
    Licence,
    SourceTerms,
    fill_template,
    is_hub_repo,
    language_model_licence,
    release_licence,
    restriction_note,
    source_terms,
)
from modeling_paircap.configuration_paircap import PairCapConfig
from modeling_paircap.kb_format_paircap import METADATA_FILE, KnowledgeBaseError, KnowledgeBaseMetadata

MODEL_TAGS = ["audio-captioning", "retrieval-augmented-generation", "clap", "custom_code"]
PIPELINE_TAG = "audio-text-to-text"
# `paircap evaluate`'s metric names -> the Hub's metric ids (the card's `metrics:`)
METRIC_IDS = {
    "bleu_1": "bleu",
    "bleu_2": "bleu",
    "bleu_3": "bleu",
    "bleu_4": "bleu",
    "meteor": "meteor",
    "rouge_l": "rouge",
    "cider_d": "cider",
    "spice": "spice",
    "spider": "spider",
}
# The Hub's `size_categories` buckets (huggingface_hub.DatasetCardData): below 10**3, 10**4, ..., 10**12 examples.
PROVENANCE_KEY = "paircap"  # the card's own metadata: what the licence of a re-exported release derives from


def knowledge_base_sources(knowledge_base: str | os.PathLike | None, release_dir: str | os.PathLike | None = None):
    """
    Pairs per source of a local knowledge base (a folder, or one bundled in `release_dir`); None when it is not local
    or cannot be read (the card then points at the knowledge base's own card).
    """
    if knowledge_base is None:
        return None
    for folder in (Path(knowledge_base), Path(release_dir or "", knowledge_base)):
        if (folder / METADATA_FILE).is_file():
            try:
                return KnowledgeBaseMetadata.load(folder).sources
            except KnowledgeBaseError:
                return None
    return None


def earlier_provenance(release_dir: str | os.PathLike) -> dict:
    """What an earlier release's card recorded (`base_model`, LM licence, training sources), to carry over."""
    card = Path(release_dir, "README.md")
    if not card.is_file():
        return {}
    data = ModelCard.load(card).data.to_dict()
    provenance = dict(data.get(PROVENANCE_KEY) or {})
    if data.get("base_model"):
        provenance["base_model"] = data["base_model"]
    return provenance


def data_table(training: Mapping[str, int], retrieval: Mapping[str, int] | None, overrides=None) -> tuple[str, list]:
    """The card's table of corpora (what for, pairs, terms) and the terms of each, training first."""
    rows, terms = [], []
    for use, counts in (("training", training), ("knowledge base", retrieval or {})):
        for source, count in sorted(counts.items()):
            term = source_terms(source, overrides)
            terms.append(term)
            rows.append(
                f"| {use} | `{source}` | {count:,} | [{term.name}]({term.link}): {term.terms} | {term.commercial_use} |"
            )
    if not rows:
        return "", terms
    header = ["| used for | source | pairs | terms | commercial use |", "|---|---|---:|---|---|"]
    return "\n".join(header + rows), terms


def model_metrics(results: dict | None) -> list[str]:
    """The Hub metric ids a card lists: those `paircap evaluate` computed, or the paper's when there are no results."""
    names = [name for run in (results or {}).get("runs", []) for name, v in run["metrics"].items() if v is not None]
    return list(dict.fromkeys(METRIC_IDS[name] for name in (names or METRIC_IDS) if name in METRIC_IDS))


def results_section(results: dict | None, default: DefaultResult | None) -> str | None:
    """
    The results of a `paircap evaluate` run (`results.json`): first the release's default configuration with its
    numbers and zero-shot beside them (or why none measured it), then every setting evaluated: the headline metric by
    method and KB, the DCASE-2024 metrics, all metrics of every run.
    """
    if not results or not results.get("runs"):
        return None
    dataset = evaluation_dataset(results)
    metric = headline_metric(results)
    unavailable = sorted({name for run in results["runs"] for name in run.get("unavailable", {})})
    parts = [f"Measured with `paircap evaluate` on {dataset['name']} ({dataset['split']})."]
    if default is not None:
        parts += [default_summary(default), default_table(default)]
    parts += [
        f"### Every setting evaluated: {metric} by retrieval method and knowledge base",
        method_by_kb_table(results, metric),
        "### DCASE-2024 metrics",
        dcase2024_table(results),
        "### All metrics",
        metrics_table(results),
    ]
    if unavailable:
        parts.append(f"Not computed: {', '.join(unavailable)} (reported as n/a, never as 0).")
    return "\n\n".join(part for part in parts if part)


def model_card_data(
    repo_id: str,
    licence: Licence,
    sources: Iterable[SourceTerms],
    base_models: list[str] | None,
    knowledge_base: str | None,
    results: dict | None,
    eval_results: list[EvalResult] | None,
    extra_tags: Iterable[str] = (),
    **provenance,
) -> ModelCardData:
    """The YAML front matter every PairCap model card shares."""
    datasets = [knowledge_base] if is_hub_repo(knowledge_base) else []
    datasets += [term.dataset for term in sources]
    return ModelCardData(
        language="en",
        license=licence.license,
        license_name=licence.name,
        license_link=licence.link,
        library_name="transformers",
        pipeline_tag=PIPELINE_TAG,
        tags=[*MODEL_TAGS, *extra_tags],
        base_model=base_models,
        datasets=list(dict.fromkeys(datasets)) or None,
        metrics=model_metrics(results),
        model_name=repo_id.split("/")[-1],
        eval_results=eval_results or None,
        **({PROVENANCE_KEY: provenance} if provenance else {}),
    )


def render_model_card(
    config: PairCapConfig,
    repo_id: str = "org/paircap",
    training_status: str | None = None,
    parameter_table: str | None = None,
    base_models: list[str] | None = None,
    results: dict | None = None,
    default_knowledge_base: str | None = None,
    language_model: str | None = None,
    language_model_license: dict | None = None,
    training_sources: Mapping[str, int] | None = None,
    release_dir: str | os.PathLike | None = None,
) -> ModelCard:
    """
    Fill `model_card.md` from a PairCap config, with an optional status line, parameter table, results
    (`results.json` of `paircap evaluate`: see `load_evaluation`) and provenance: the LM the release was built on (its
    hub id or folder, or `language_model_license` as an earlier card recorded it), the pairs per source it was trained
    on, and the knowledge base's sources (read from `config.knowledge_base` when it is local or bundled in
    `release_dir`). The `model-index` holds the run of the config's default configuration (`release_default`;
    `default_knowledge_base`: the evaluated KB that is `config.knowledge_base`), none when no run measured it.
    """
    default = release_default(results, config, default_knowledge_base) if results and results["runs"] else None
    text = config.text_config
    lm_licence = Licence(**language_model_license) if language_model_license else None
    lm_licence = lm_licence or language_model_licence(language_model)
    table, terms = data_table(
        training_sources or {}, knowledge_base_sources(config.knowledge_base, release_dir) or None
    )
    licence = release_licence(lm_licence, terms)
    card_data = model_card_data(
        repo_id,
        licence,
        terms,
        base_models,
        config.knowledge_base,
        results,
        default_eval_results(results, default) if default else None,
        language_model_license={key: value for key, value in asdict(lm_licence).items() if value is not None},
        training_sources=dict(training_sources or {}),
    )
    return fill_template(
        ModelCard,
        card_data,
        "model_card.md",
        model_name=repo_id.split("/")[-1],
        repo_id=repo_id,
        training_status=training_status,
        parameter_table=parameter_table,
        encoder_hidden_size=config.encoder_hidden_size,
        encoder_tokens_per_window=config.encoder_tokens_per_window,
        window_seconds=config.audio_window_seconds,
        audio_pool_stride=config.audio_pool_stride,
        audio_tokens_per_window=config.audio_tokens_per_window,
        max_audio_windows=config.max_audio_windows,
        separate_audio_tower=config.separate_audio_tower,
        max_seconds=config.max_audio_windows * config.audio_window_seconds,
        projector_hidden_act=config.projector_hidden_act,
        lm_description=f"{text.model_type}, {text.num_hidden_layers} layers, hidden {text.hidden_size}, "
        f"vocabulary {text.vocab_size}",
        retrieval_mode=config.retrieval_mode,
        fusion_weight=config.fusion_weight,
        retrieval_top_k=config.retrieval_top_k,
        knowledge_base=config.knowledge_base or "none set",
        licence_summary=licence.summary,
        data_table=table,
        restriction=restriction_note(terms),
        results=results_section(results, default),
    )


def render_mini_model_card(
    values: Mapping[str, object],
    training_sources: Mapping[str, int],
    kb_sources: Mapping[str, int],
    overrides: Mapping[str, SourceTerms],
    results: dict | None = None,
    default: DefaultResult | None = None,
) -> ModelCard:
    """
    Fill `mini_model_card.md` (the mini recipe's release): the same front matter as every model card, its
    `model-index` the `default` configuration's run; its weights were all trained by the recipe, so its data's terms
    decide its licence.
    """
    table, terms = data_table(training_sources, kb_sources, overrides)
    licence = release_licence(None, terms)
    eval_results = default_eval_results(results, default) if results and default else None
    card_data = model_card_data(
        "paircap-mini-esc50cc", licence, terms, None, None, results, eval_results, extra_tags=["toy-model"],
        training_sources=dict(training_sources),
    )  # fmt: skip
    return fill_template(
        ModelCard,
        card_data,
        "mini_model_card.md",
        licence=licence,
        data_table=table,
        restriction=restriction_note(terms),
        **values,
    )


def load_evaluation(folder: str | os.PathLike) -> dict:
    """`paircap evaluate`'s `results.json` (None without one): `render_model_card(config, **load_evaluation(dir))`."""
    path = Path(folder, "results.json")
    return {"results": json.loads(path.read_text()) if path.is_file() else None}
