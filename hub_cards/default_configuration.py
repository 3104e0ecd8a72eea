"""The release's default configuration (what `model.generate` does with no retrieval arguments) and the run of a
`paircap evaluate` grid that measured it: a model card's `model-index` and its first results, never the grid's best.

`paircap evaluate` records in `results.json`'s settings the evaluated release's `default` (a `DefaultConfiguration`:
its `knowledge_base` is the evaluated KB that stands for the release's own) and the `dataset` it ran on.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

from huggingface_hub import EvalResult

from hub_cards.evaluation_tables import DCASE2024_COLUMNS, METRIC_ORDER, dcase_fmt, kb_label
from modeling_paircap.configuration_paircap import PairCapConfig
from modeling_paircap.retrieval_modes_paircap import PAIR_MODES

DEFAULT_DATASET = {"name": "custom", "split": "evaluation"}  # `paircap evaluate`'s --data-name and --split defaults


@dataclass(frozen=True)
class DefaultConfiguration:
    """
    What `generate` does with no retrieval arguments: `mode` (`none`, zero-shot, when the config names no knowledge
    base or sets top-k 0) over `release_knowledge_base` (`config.knowledge_base`) at W = `fusion_weight` and
    `top_k`, with the config's caption rescoring (`num_candidates` 0: none). `knowledge_base` is the evaluated KB
    that stands for the release's own (None: not known, or zero-shot).
    """

    mode: str
    release_knowledge_base: str | None
    knowledge_base: str | None
    fusion_weight: float
    top_k: int
    num_candidates: int = 0
    rescore_weight: float = 0.5
    rescore_query: bool = False

    @classmethod
    def from_config(cls, config: PairCapConfig, knowledge_base: str | None) -> DefaultConfiguration:
        """The defaults of `config`, with `knowledge_base` the evaluated KB that is `config.knowledge_base`."""
        retrieves = config.knowledge_base is not None and config.retrieval_mode != "none" and config.retrieval_top_k > 0
        rescoring = {}
        if config.rescore:
            rescoring = {"num_candidates": config.num_candidates, "rescore_weight": config.rescore_weight}
            rescoring["rescore_query"] = config.rescore_query and config.retrieval_mode == "generative_pair2pair"
        return cls(
            mode=config.retrieval_mode if retrieves else "none",
            release_knowledge_base=config.knowledge_base,
            knowledge_base=knowledge_base if retrieves else None,
            fusion_weight=config.fusion_weight,
            top_k=config.retrieval_top_k if retrieves else 0,
            **rescoring,
        )

    def matches(self, run: dict) -> bool:
        """Whether a run of `results.json` evaluated this configuration."""
        rescoring = run.get("num_candidates", 0) == self.num_candidates and (
            not self.num_candidates
            or math.isclose(run["rescore_weight"], self.rescore_weight)
            and bool(run["rescore_query"] and run["mode"] == "generative_pair2pair") == self.rescore_query
        )
        if run["mode"] != self.mode or not rescoring:
            return False
        if self.mode == "none":
            return True
        same_kb = self.knowledge_base is not None and retrieves_from(run, self.knowledge_base)
        weight = self.mode not in PAIR_MODES or math.isclose(run["fusion_weight"], self.fusion_weight)
        return same_kb and weight and run["top_k"] == self.top_k

    def describe(self) -> str:
        """E.g. "generative_pair2pair over KB `knowledge_base` (evaluated as `refined`), W = 0.5, k = 4"."""
        rescoring = ""
        if self.num_candidates:
            query = ", the zero-shot pass too" if self.rescore_query else ""
            rescoring = f", CLAP rescoring of {self.num_candidates} candidates (λ = {self.rescore_weight:g}{query})"
        if self.mode == "none":
            why = "no knowledge base is configured" if self.release_knowledge_base is None else "top-k is 0"
            return f"zero-shot ({why}){rescoring}"
        evaluated = Path(self.knowledge_base).name if self.knowledge_base else None
        kb = f"KB `{self.release_knowledge_base}`"
        if evaluated and evaluated != self.release_knowledge_base:
            kb += f" (evaluated as `{evaluated}`)"
        weight = f", W = {self.fusion_weight:g}" if self.mode in PAIR_MODES else ""
        return f"{self.mode} over {kb}{weight}, k = {self.top_k}{rescoring}"


def retrieves_from(run: dict, knowledge_base: str) -> bool:
    """Whether a run of `results.json` retrieved from `knowledge_base` (its KB as given, or that KB's folder name)."""
    return run["knowledge_base"] is not None and knowledge_base in (run["knowledge_base"], kb_label(run))


@dataclass(frozen=True)
class DefaultResult:
    """The default `configuration`'s run of an evaluation (None, with the `reason`, when it has none), and the plain
    zero-shot run beside it."""

    configuration: DefaultConfiguration
    run: dict | None
    zero_shot: dict | None
    reason: str | None = None


def release_default(results: dict, config: PairCapConfig, knowledge_base: str | None = None) -> DefaultResult:
    """
    The run of `results` (`results.json`) that measured what a release with `config` does out of the box.
    `knowledge_base` names the evaluated KB that is `config.knowledge_base` (a run's KB as given, or its folder
    name); default: the one `paircap evaluate` recorded, when it recorded the same `config.knowledge_base`.
    """
    recorded = results.get("settings", {}).get("default") or {}
    if knowledge_base is None and recorded.get("release_knowledge_base") == config.knowledge_base:
        knowledge_base = recorded.get("knowledge_base")
    return find_default_run(results, DefaultConfiguration.from_config(config, knowledge_base))


def recorded_default(results: dict) -> DefaultResult | None:
    """The run of the default configuration `paircap evaluate` recorded for the release it evaluated (None when
    `results.json` records none: an older one)."""
    recorded = results.get("settings", {}).get("default")
    return None if recorded is None else find_default_run(results, DefaultConfiguration(**recorded))


def find_default_run(results: dict, configuration: DefaultConfiguration) -> DefaultResult:
    """The run of `configuration` in `results`, or why there is none."""
    runs = results["runs"]
    zero_shot = next((run for run in runs if run["mode"] == "none" and not run.get("num_candidates")), None)
    run = next((run for run in runs if configuration.matches(run)), None)
    if run is not None:
        return DefaultResult(configuration, run, zero_shot)
    evaluated = list(dict.fromkeys(kb_label(run) for run in runs if run["knowledge_base"]))
    names = ", ".join(f"`{name}`" for name in evaluated) or "none"
    if configuration.mode != "none" and configuration.knowledge_base is None:
        reason = (
            f"the release retrieves from `{configuration.release_knowledge_base}`, and the evaluation did not say "
            f"which of its knowledge bases ({names}) that is (`paircap evaluate --default-kb`, "
            "`paircap card --default-kb`)"
        )
    elif configuration.mode != "none" and not any(retrieves_from(run, configuration.knowledge_base) for run in runs):
        reason = f"the evaluation never retrieved from `{configuration.knowledge_base}` (its knowledge bases: {names})"
    else:
        reason = f"the evaluation has no run of this setting ({nearest_runs(runs, configuration)})"
    return DefaultResult(configuration, None, zero_shot, reason)


def nearest_runs(runs: list[dict], configuration: DefaultConfiguration) -> str:
    """The runs of the configuration's mode (and KB) that were evaluated, as "its runs of ...: `name`, ..."."""
    same = [run for run in runs if run["mode"] == configuration.mode]
    if configuration.mode != "none":
        same = [run for run in same if retrieves_from(run, configuration.knowledge_base)]
    what = "zero-shot" if configuration.mode == "none" else f"{configuration.mode} over that KB"
    names = ", ".join(f"`{run['name']}`" for run in same)
    return f"its runs of {what}: {names}" if same else f"it ran no {what}"


def evaluation_dataset(results: dict) -> dict:
    """The dataset `paircap evaluate` recorded (`name`, `split`); its flags' defaults for an older `results.json`."""
    return results.get("settings", {}).get("dataset") or DEFAULT_DATASET


def default_eval_results(results: dict, default: DefaultResult) -> list[EvalResult]:
    """The card's `model-index` entries: every metric of the default configuration's run (none without one)."""
    if default.run is None:
        return []
    dataset = evaluation_dataset(results)
    return [
        EvalResult(
            task_type="audio-captioning",
            task_name="Audio captioning",
            dataset_type=dataset["name"],
            dataset_name=dataset["name"],
            dataset_split=dataset["split"],
            metric_type=name,
            metric_name=metric_label(name),
            metric_value=round(value, 4),
            metric_config=default.run["name"],
        )
        for name, value in default.run["metrics"].items()
        if value is not None
    ]


def metric_label(name: str) -> str:
    """CIDEr-D, SPIDEr-FL, ... as the DCASE-2024 table writes them; BLEU-4, ROUGE-L otherwise."""
    return DCASE2024_COLUMNS.get(name, name.replace("_", "-").upper())


def default_summary(default: DefaultResult) -> str:
    """One paragraph: the default configuration, and its run or why none measured it (and so no `model-index`)."""
    text = f"**Default configuration:** {default.configuration.describe()}: what `generate` does out of the box."
    if default.run is not None:
        return f"{text} Its run, `{default.run['name']}`, is the model card's `model-index`."
    return (
        f"{text} **Not measured:** {default.reason}. So the model card has no `model-index`: it reports the default "
        "configuration, never the best setting of the grid."
    )


def default_table(default: DefaultResult) -> str:
    """Every metric of the default configuration's run and of zero-shot beside it ("" without a default run)."""
    if default.run is None:
        return ""
    rows = [("default", default.run)]
    if default.zero_shot is not None and default.zero_shot is not default.run:
        rows.append(("zero-shot (no retrieval)", default.zero_shot))
    names = dict.fromkeys((*METRIC_ORDER, *DCASE2024_COLUMNS))
    names = [name for name in names if any(run["metrics"].get(name) is not None for _, run in rows)]
    lines = [
        "| configuration | items | " + " | ".join(metric_label(name) for name in names) + " |",
        "|---|---:|" + "---:|" * len(names),
    ]
    for label, run in rows:
        values = " | ".join(dcase_fmt(name, run["metrics"].get(name)) for name in names)
        lines.append(f"| {label} | {run['items']} | {values} |")
    return "\n".join(lines)
