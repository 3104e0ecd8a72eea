"""Model and dataset cards, rendered from the templates in `hub_cards/`: the one place cards are made.

The YAML front matter is built with huggingface_hub's `ModelCardData` / `DatasetCardData`. Licences are derived, not
hard-coded: a release built on a language model carries that model's licence (Vicuna v1.5: `llama2`; a model whose
licence is not known here: `other`, with `license_name` and `license_link`); a release whose weights were all trained
here takes the most restrictive terms of its data. Every corpus the model was trained on or retrieves from is listed
with its pair count and terms, and non-commercial ones are flagged in the card text.
"""

from __future__ import annotations

import json
import os
import re
from collections import Counter
from collections.abc import Collection, Iterable, Mapping
from dataclasses import asdict, dataclass
from importlib.resources import files
from pathlib import Path

from huggingface_hub import DatasetCard, DatasetCardData, EvalResult, ModelCard, ModelCardData

from modeling_paircap.configuration_paircap import PairCapConfig
from modeling_paircap.knowledge_base_paircap import (
    DATA_DIR,
    INDEX_FILE,
    METADATA_FILE,
    KnowledgeBaseError,
    KnowledgeBaseMetadata,
)
from paircap.evaluation_report import headline_metric, method_by_kb_table, metrics_table

MODEL_TAGS = ["audio-captioning", "retrieval-augmented-generation", "clap", "custom_code"]
DATASET_TAGS = ["audio-captioning", "retrieval-augmented-generation", "faiss", "clap", "paircap"]
PIPELINE_TAG = "audio-text-to-text"
DATASET_TASKS = ["audio-text-to-text", "feature-extraction"]
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
SIZE_CATEGORIES = (
    "n<1K",
    "1K<n<10K",
    "10K<n<100K",
    "100K<n<1M",
    "1M<n<10M",
    "10M<n<100M",
    "100M<n<1B",
    "1B<n<10B",
    "10B<n<100B",
    "100B<n<1T",
)
PROVENANCE_KEY = "paircap"  # the card's own metadata: what the licence of a re-exported release derives from


@dataclass(frozen=True)
class Licence:
    """A card's licence: a Hub licence id, with `name` and `link` when it is `other`, and what it means in words."""

    license: str
    summary: str
    name: str | None = None
    link: str | None = None


@dataclass(frozen=True)
class SourceTerms:
    """The terms a corpus (a `source` of the corpus readers) is used under."""

    name: str
    license: str  # Hub licence id; `other` for terms that have none
    terms: str
    link: str
    commercial: bool | None  # False: non-commercial (or academic) use only; None: not known here
    dataset: str  # the card's `datasets:` entry

    @property
    def restricted(self) -> bool:
        """Not known to allow commercial use."""
        return self.commercial is not True


# Terms as the corpora state them (see also ../shared/data/README.md); keyed by the readers' `source` prefix.
SOURCE_TERMS = {
    "audiocaps": SourceTerms(
        "AudioCaps", "other", "AudioCaps repository terms (academic use)", "https://github.com/cdjkim/audiocaps",
        False, "audiocaps",
    ),
    "clotho": SourceTerms(
        "Clotho", "other", "Tampere University licence: experimental and non-commercial use only",
        "https://zenodo.org/records/4783391", False, "clotho",
    ),
    "wavcaps": SourceTerms(
        "WavCaps", "other", "academic use only", "https://github.com/XinhaoMei/WavCaps", False, "cvssp/WavCaps"
    ),
    "autoacd": SourceTerms(
        "Auto-ACD", "other", "the terms of its release (not known here)", "https://auto-acd.github.io/", None,
        "autoacd",
    ),
    "esc50": SourceTerms(
        "ESC-50", "cc-by-nc-3.0", "CC BY-NC 3.0 (the ESC-50 dataset licence; clips carry their Freesound licences)",
        "https://github.com/karolpiczak/ESC-50", False, "esc50",
    ),
}  # fmt: skip
# Language models whose licence is known, by a pattern of their hub id.
LANGUAGE_MODEL_LICENCES = (
    (
        re.compile(r"vicuna-\d+b-v1\.5|llama-2", re.IGNORECASE),
        Licence("llama2", "Llama 2 Community License (the language model is Llama 2 or fine-tuned from it)"),
    ),
)


def source_terms(source: str, overrides: Mapping[str, SourceTerms] | None = None) -> SourceTerms:
    """The terms of a `source` value (`wavcaps/FreeSound` -> WavCaps, `esc50_mix` -> ESC-50); `other` if unknown."""
    table = {**SOURCE_TERMS, **(overrides or {})}
    for key in sorted(table, key=len, reverse=True):
        if source == key or source.startswith((f"{key}/", f"{key}_")):
            return table[key]
    return SourceTerms(source, "other", "not known here: check the corpus' own terms", "", None, source)


def clip_licence_terms(name: str, licences: Collection[str], link: str, dataset: str) -> SourceTerms:
    """The terms of a set of clips under per-clip licences (`CC0`, `CC-BY`, `CC BY-NC 3.0`): the most restrictive."""
    labels = {re.sub(r"[\s_-]", "", label).upper() for label in licences}
    counts = ", ".join(f"{label}: {count}" for label, count in sorted(Counter(licences).items()))
    if any("NC" in label for label in labels):
        return SourceTerms(name, "cc-by-nc-3.0", f"per clip ({counts}); non-commercial", link, False, dataset)
    if labels <= {"CC0", "CC01.0"}:
        return SourceTerms(name, "cc0-1.0", f"per clip ({counts})", link, True, dataset)
    if labels <= {"CC0", "CC01.0", "CCBY", "CCBY3.0", "CCBY4.0"}:  # an unversioned CC BY on Freesound (ESC-50): 3.0
        licence = "cc-by-4.0" if "CCBY4.0" in labels else "cc-by-3.0"
        return SourceTerms(name, licence, f"per clip ({counts}); attribution required", link, True, dataset)
    return SourceTerms(name, "other", f"per clip ({counts})", link, None, dataset)


def language_model_licence(language_model: str | None) -> Licence:
    """
    The licence of the language model a release was assembled from (hub id or folder): a known family, else the
    `license` of a local folder's model card, else `other`, linked to the model's hub page.
    """
    name = language_model or "unknown"
    for pattern, licence in LANGUAGE_MODEL_LICENCES:
        if pattern.search(name):
            return licence
    card = Path(name) / "README.md"
    if card.is_file():
        data = ModelCard.load(card, ignore_metadata_errors=True).data
        if data.license:
            summary = f"`{data.license}`, the licence of the language model"
            return Licence(data.license, summary, data.license_name, data.license_link)
    link = f"https://huggingface.co/{name}" if is_hub_repo(name) else None
    return Licence(
        "other",
        f"the licence of the language model `{Path(name).name}`, not known here: check it before use",
        name="language-model-license",
        link=link,
    )


def release_licence(language_model: Licence | None, sources: Iterable[SourceTerms]) -> Licence:
    """
    The licence of a release: its language model's (`None`: the weights were all trained here, so the most
    restrictive terms of the data decide: CC BY-NC 4.0 when any source is not known to allow commercial use, CC BY 4.0
    when any needs attribution, else CC0). Non-commercial data under an LM licence is flagged by the card text.
    """
    if language_model is not None:
        return language_model
    sources = list(sources)
    restricted = sorted({s.name for s in sources if s.restricted})
    if restricted:
        return Licence("cc-by-nc-4.0", f"CC BY-NC 4.0, because of the non-commercial terms of {', '.join(restricted)}")
    if any(s.license != "cc0-1.0" for s in sources):
        return Licence("cc-by-4.0", "CC BY 4.0 (its data needs attribution; see below)")
    return Licence("cc0-1.0", "CC0 1.0")


def is_hub_repo(name: str | None) -> bool:
    """Whether `name` reads as a hub repository (`owner/name`, no local path of that name), so a card may link it."""
    return bool(name) and not Path(name).exists() and name.count("/") == 1


def size_category(count: int) -> str:
    """The Hub's `size_categories` bucket of `count` examples."""
    for power, bucket in enumerate(SIZE_CATEGORIES, start=3):
        if count < 10**power:
            return bucket
    return "n>1T"


# ---- model cards ---------------------------------------------------------------------------------------------------


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
            allowed = {True: "yes", False: "**no**", None: "unknown"}[term.commercial]
            rows.append(f"| {use} | `{source}` | {count:,} | [{term.name}]({term.link}): {term.terms} | {allowed} |")
    if not rows:
        return "", terms
    header = ["| used for | source | pairs | terms | commercial use |", "|---|---|---:|---|---|"]
    return "\n".join(header + rows), terms


def restriction_note(terms: Iterable[SourceTerms], use: str = "This release learned from or retrieves") -> str | None:
    """The warning a card carries when any corpus is not known to allow commercial use."""
    names = sorted({term.name for term in terms if term.restricted})
    if not names:
        return None
    return (
        f"**Non-commercial data.** {', '.join(names)} {'is' if len(names) == 1 else 'are'} not licensed (or not known "
        f"to be licensed) for commercial use. {use} their captions: check their terms before any commercial use."
    )


def model_metrics(results: dict | None) -> list[str]:
    """The Hub metric ids a card lists: those `paircap evaluate` computed, or the paper's when there are no results."""
    names = [name for run in (results or {}).get("runs", []) for name, v in run["metrics"].items() if v is not None]
    return list(dict.fromkeys(METRIC_IDS[name] for name in (names or METRIC_IDS) if name in METRIC_IDS))


def results_section(results: dict | None, eval_results: list[EvalResult] | None) -> str | None:
    """The results tables of a `paircap evaluate` run (`results.json`): headline metric by method and KB, all runs."""
    if not results or not results.get("runs"):
        return None
    where = ""
    if eval_results:
        where = f" on {eval_results[0].dataset_name} ({eval_results[0].dataset_split})"
    metric = headline_metric(results)
    unavailable = sorted({name for run in results["runs"] for name in run.get("unavailable", {})})
    note = f"\n\nNot computed: {', '.join(unavailable)} (reported as n/a, never as 0)." if unavailable else ""
    return (
        f"Measured with `paircap evaluate`{where}.\n\n### {metric} by retrieval method and knowledge base\n\n"
        f"{method_by_kb_table(results, metric)}\n\n### All metrics\n\n{metrics_table(results)}{note}"
    )


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
    eval_results: list[EvalResult] | None = None,
    results: dict | None = None,
    language_model: str | None = None,
    language_model_license: dict | None = None,
    training_sources: Mapping[str, int] | None = None,
    release_dir: str | os.PathLike | None = None,
) -> ModelCard:
    """
    Fill `hub_cards/model_card.md` from a PairCap config, with an optional status line, parameter table, results
    (`results` and `eval_results`: see `load_evaluation`) and provenance: the LM the release was built on (its hub
    id or folder, or `language_model_license` as an earlier card recorded it), the pairs per source it was trained
    on, and the knowledge base's sources (read from `config.knowledge_base` when it is local or bundled in
    `release_dir`).
    """
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
        eval_results,
        language_model_license={key: value for key, value in asdict(lm_licence).items() if value is not None},
        training_sources=dict(training_sources or {}),
    )
    return ModelCard.from_template(
        card_data,
        template_path=str(files("hub_cards") / "model_card.md"),
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
        results=results_section(results, eval_results),
    )


def render_mini_model_card(
    values: Mapping[str, object],
    training_sources: Mapping[str, int],
    kb_sources: Mapping[str, int],
    overrides: Mapping[str, SourceTerms],
    results: dict | None = None,
    eval_results: list[EvalResult] | None = None,
) -> ModelCard:
    """
    Fill `hub_cards/mini_model_card.md` (the mini recipe's release): the same front matter as every model card; its
    weights were all trained by the recipe, so its data's terms decide its licence.
    """
    table, terms = data_table(training_sources, kb_sources, overrides)
    licence = release_licence(None, terms)
    card_data = model_card_data(
        "paircap-mini-esc50cc", licence, terms, None, None, results, eval_results, extra_tags=["toy-model"],
        training_sources=dict(training_sources),
    )  # fmt: skip
    return ModelCard.from_template(
        card_data,
        template_path=str(files("hub_cards") / "mini_model_card.md"),
        licence=licence,
        data_table=table,
        restriction=restriction_note(terms),
        **values,
    )


def load_evaluation(folder: str | os.PathLike) -> dict:
    """`paircap evaluate`'s `results.json` and `model_index.json`, as `render_model_card(**load_evaluation(folder))`."""
    folder = Path(folder)
    results = json.loads((folder / "results.json").read_text()) if (folder / "results.json").is_file() else None
    index = folder / "model_index.json"
    return {"results": results, "eval_results": load_eval_results(index) if index.is_file() else None}


def load_eval_results(path: str | os.PathLike) -> list[EvalResult]:
    """The results `paircap evaluate` saved in `model_index.json`, ready for `render_model_card(eval_results=...)`."""
    return [EvalResult(**entry) for entry in json.loads(Path(path).read_text())]


# ---- dataset cards ------------------------------------------------------------------------------------------------


def dataset_licence(terms: Iterable[SourceTerms]) -> dict:
    """The dataset card's `license` (one id, or a list when the sources differ) and, for `other`, a name and link."""
    terms = list(terms)
    licences = sorted({term.license for term in terms}) or ["other"]
    fields: dict = {"license": licences[0] if len(licences) == 1 else licences}
    others = [term for term in terms if term.license == "other"]
    if "other" in licences:
        fields["license_name"] = "per-source-terms"
        links = {term.link for term in others if term.link}
        if len(links) == 1:
            fields["license_link"] = links.pop()
    return fields


def source_licence_table(sources: Mapping[str, int], overrides: Mapping[str, SourceTerms] | None = None) -> str:
    """Per source: pairs, corpus, terms, Hub licence id and whether commercial use is allowed."""
    lines = ["| source | pairs | corpus | terms | licence | commercial use |", "|---|---:|---|---|---|---|"]
    for source, count in sorted(sources.items()):
        term = source_terms(source, overrides)
        allowed = {True: "yes", False: "**no**", None: "unknown"}[term.commercial]
        lines.append(
            f"| `{source}` | {count:,} | [{term.name}]({term.link}) | {term.terms} | `{term.license}` | {allowed} |"
        )
    return "\n".join(lines)


def render_dataset_card(
    metadata: KnowledgeBaseMetadata,
    repo_id: str,
    model_repo: str,
    overrides: Mapping[str, SourceTerms] | None = None,
) -> DatasetCard:
    """
    Fill `hub_cards/dataset_card.md` from a knowledge base's metadata: its YAML `configs` point at the parquet shards;
    `license`, `size_categories` (from the pair count) and the per-source licence table come from the pairs per
    source the KB records (`overrides`: terms of a source known better than by its name, e.g. per-clip licences).
    """
    terms = [source_terms(source, overrides) for source in sorted(metadata.sources)]
    card_data = DatasetCardData(
        language="en",
        pretty_name=repo_id.split("/")[-1],
        task_categories=DATASET_TASKS,
        size_categories=size_category(metadata.num_pairs),
        tags=DATASET_TAGS,
        configs=[
            {
                "config_name": "default",
                "data_files": [{"split": "train", "path": f"{DATA_DIR}/train-{metadata.build_id}-*.parquet"}],
            }
        ],
        **dataset_licence(terms),
    )
    sources = ", ".join(f"{name}: {count}" for name, count in sorted(metadata.sources.items())) or "n/a"
    return DatasetCard.from_template(
        card_data,
        template_path=str(files("hub_cards") / "dataset_card.md"),
        pretty_name=repo_id.split("/")[-1],
        repo_id=repo_id,
        model_repo=model_repo,
        num_pairs=metadata.num_pairs,
        num_clips=metadata.num_clips,
        num_text_only=metadata.num_text_only,
        has_tokens=metadata.has_tokens,
        sources=sources,
        source_table=source_licence_table(metadata.sources, overrides),
        restriction=restriction_note(terms, "This knowledge base holds"),
        audio_dim=metadata.audio_dim,
        text_dim=metadata.text_dim,
        token_dim=metadata.token_dim,
        audio_tokens_per_window=metadata.audio_tokens_per_window,
        index_file=INDEX_FILE,
        index_factory=metadata.index_factory,
        index_recall=metadata.index_recall_at_10,
        retrieval_fingerprint=metadata.retrieval_fingerprint,
        token_fingerprint=metadata.token_fingerprint or "none (index-only)",
        evaluation_overlap=metadata.evaluation_overlap.get("summary", "not checked"),
        recipe=metadata.recipe or "custom",
    )
