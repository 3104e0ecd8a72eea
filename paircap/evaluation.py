"""`paircap evaluate`: caption an evaluation split under every retrieval setting, save predictions, score them."""

import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from paircap.caption_data import EvaluationItem
from paircap.captioning import audio_duration, caption_waveforms, length_grouped_batches
from paircap.metrics import compute_caption_metrics

PREDICTIONS_DIR = "predictions"
RESULTS_FILE = "results.json"


@dataclass(frozen=True)
class EvaluationRun:
    """One setting to evaluate: a knowledge base (None for zero-shot), a retrieval mode, W and top-k."""

    knowledge_base: str | None
    mode: str
    fusion_weight: float
    top_k: int
    sweeps: tuple[str, ...] = ("grid",)  # the tables and plots it belongs to: grid (method x KB), weight, top_k

    @property
    def name(self) -> str:
        if self.mode == "none":
            return "zero-shot"
        kb = Path(self.knowledge_base).name if self.knowledge_base else "none"
        return f"{self.mode}__{kb}__w{self.fusion_weight:g}__k{self.top_k}"


def plan_runs(
    knowledge_bases: Sequence[str],
    modes: Sequence[str],
    fusion_weight: float = 0.5,
    top_k: int = 4,
    weight_sweep: Sequence[float] = (),
    top_k_sweep: Sequence[int] = (),
) -> list[EvaluationRun]:
    """
    Zero-shot, then every mode on every KB at (W, k) (paper Tables 4, 5, 7), then the W sweep and the top-k sweep of
    generative pair-to-pair retrieval on the first KB (paper Figs. 2, 3). Duplicates are evaluated once.
    """
    runs = [EvaluationRun(None, "none", fusion_weight, 0)]
    retrieval_modes = [mode for mode in modes if mode != "none"]
    runs += [EvaluationRun(kb, mode, fusion_weight, top_k) for kb in knowledge_bases for mode in retrieval_modes]
    if knowledge_bases and weight_sweep:
        runs += [sweep_run(knowledge_bases[0], w, top_k, "weight") for w in (*weight_sweep, fusion_weight)]
    if knowledge_bases and top_k_sweep:
        runs += [sweep_run(knowledge_bases[0], fusion_weight, k, "top_k") for k in (*top_k_sweep, top_k)]
    unique: dict[tuple, EvaluationRun] = {}
    for run in runs:  # a setting shared by the grid and a sweep is run once and belongs to both
        key = (run.knowledge_base, run.mode, run.fusion_weight, run.top_k)
        first = unique.setdefault(key, run)
        if first is not run:
            unique[key] = replace(first, sweeps=tuple(dict.fromkeys(first.sweeps + run.sweeps)))
    return list(unique.values())


def sweep_run(knowledge_base: str, fusion_weight: float, top_k: int, sweep: str) -> EvaluationRun:
    """A point of the W or top-k sweep: generative pair-to-pair retrieval (paper Figs. 2, 3)."""
    return EvaluationRun(knowledge_base, "generative_pair2pair", fusion_weight, top_k, (sweep,))


def caption_items(
    model, processor, items: list[EvaluationItem], run: EvaluationRun, batch_size: int, progress: bool, **generation
) -> list[dict]:
    """
    Caption every item under one run, in batches of similar length; a query never retrieves its own clip
    (`exclude_ids` = its audio_id). Returns one record per item, in order: its caption, zero-shot caption and retrieved
    pairs (`caption_waveforms`' fields), or the load error.
    """
    retrieval = {} if run.mode == "none" else {
        "knowledge_base": run.knowledge_base, "retrieval_mode": run.mode,
        "fusion_weight": run.fusion_weight, "top_k": run.top_k,
    }  # fmt: skip
    records: list[dict | None] = [None] * len(items)
    durations = [audio_duration(item.audio.get("path")) for item in items]
    for batch_indices in tqdm(length_grouped_batches(durations, batch_size), desc=run.name, disable=not progress):
        loaded = processor.load_audio([items[i].audio for i in batch_indices])
        good = [i for i, wave in zip(batch_indices, loaded, strict=True) if isinstance(wave, np.ndarray)]
        exclude = [{items[i].audio_id} for i in good] if retrieval else None
        waves = [wave for wave in loaded if isinstance(wave, np.ndarray)]
        results = caption_waveforms(model, processor, waves, exclude_ids=exclude, **retrieval, **generation)
        by_index = dict(zip(good, results, strict=True))
        for index, wave in zip(batch_indices, loaded, strict=True):
            item = items[index]
            if index in by_index:
                result = {"zero_shot_caption": None, "retrieved": [], **by_index[index]}
            else:  # the loader's error
                result = {"error": str(wave)}
            records[index] = {"audio_id": item.audio_id, "references": item.references, **result}
    return records


def score_records(records: list[dict]) -> dict:
    """Caption metrics over the captioned items, and the mean audio / text similarity of their retrieved pairs."""
    scored = [r for r in records if "caption" in r]
    scores = compute_caption_metrics([r["caption"] for r in scored], [r["references"] for r in scored])
    pairs = [pair for r in scored for pair in r["retrieved"]]
    return {
        "metrics": scores.corpus,
        "unavailable": scores.unavailable,
        "items": len(scored),
        "failed_items": len(records) - len(scored),
        "mean_audio_similarity": float(np.mean([p["audio_score"] for p in pairs])) if pairs else None,
        "mean_text_similarity": float(np.mean([p["text_score"] for p in pairs])) if pairs else None,
    }


def evaluate(
    model,
    processor,
    items: list[EvaluationItem],
    runs: list[EvaluationRun],
    output_dir: str | Path,
    batch_size: int = 8,
    progress: bool = True,
    settings: dict | None = None,
    **generation,
) -> dict:
    """Run, save (`predictions/<run>.jsonl`, one line per item) and score every run; writes `results.json`."""
    output_dir = Path(output_dir)
    (output_dir / PREDICTIONS_DIR).mkdir(parents=True, exist_ok=True)
    for run in runs:
        records = caption_items(model, processor, items, run, batch_size, progress, **generation)
        write_predictions(output_dir, run, records)
    return rescore(output_dir, settings={**(settings or {}), "generation": generation, "batch_size": batch_size})


def write_predictions(output_dir: Path, run: EvaluationRun, records: list[dict]) -> None:
    path = output_dir / PREDICTIONS_DIR / f"{run.name}.jsonl"
    with open(path, "w", encoding="utf-8") as handle:
        handle.write(json.dumps({"run": asdict(run)}) + "\n")
        for record in records:
            handle.write(json.dumps(record, ensure_ascii=False) + "\n")


def rescore(output_dir: str | Path, settings: dict | None = None) -> dict:
    """Score the saved predictions again (e.g. once SPICE's jars are installed) without regenerating."""
    output_dir = Path(output_dir)
    results = {"settings": settings or previous_settings(output_dir), "runs": []}
    for path in sorted((output_dir / PREDICTIONS_DIR).glob("*.jsonl")):
        lines = path.read_text(encoding="utf-8").splitlines()
        run = json.loads(lines[0])["run"]
        records = [json.loads(line) for line in lines[1:]]
        results["runs"].append({"name": path.stem, **run, **score_records(records)})
    (output_dir / RESULTS_FILE).write_text(json.dumps(results, indent=2))
    return results


def previous_settings(output_dir: Path) -> dict:
    path = output_dir / RESULTS_FILE
    return json.loads(path.read_text()).get("settings", {}) if path.is_file() else {}
