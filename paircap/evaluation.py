"""`paircap evaluate`: caption an evaluation split under every retrieval setting, save predictions, score them."""

import json
import logging
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from modeling_paircap.clip_ids_paircap import normalise_clip_id
from modeling_paircap.retrieval_paircap import PairCapRetriever
from paircap.caption_data import EvaluationItem
from paircap.captioning import audio_duration, caption_waveforms, length_grouped_batches
from paircap.clap_score import clap_scores, mean_clap_score
from paircap.metrics import ALL_METRICS, compute_caption_metrics

# every metric of one caption per item: SPIDEr-max needs several candidates per item, which evaluate does not make
EVALUATE_METRICS = (*ALL_METRICS, "spider_fl", "fense", "vocab")

logger = logging.getLogger(__name__)

PREDICTIONS_DIR = "predictions"
RESULTS_FILE = "results.json"
TEXT_BATCH_SIZE = 256


@dataclass(frozen=True)
class EvaluationRun:
    """One setting to evaluate: a knowledge base (None for zero-shot), a retrieval mode, W and top-k, and the CLAP
    rescoring of its captions (`num_candidates` beam candidates, weight `rescore_weight`, the zero-shot pass too with
    `rescore_query`; 0 candidates: none)."""

    knowledge_base: str | None
    mode: str
    fusion_weight: float
    top_k: int
    sweeps: tuple[str, ...] = ("grid",)  # the tables and plots it belongs to: grid (method x KB), weight, top_k
    num_candidates: int = 0
    rescore_weight: float = 0.5
    rescore_query: bool = False

    @property
    def name(self) -> str:
        suffix = ""
        if self.num_candidates:
            query = "q" if self.rescore_query and self.mode == "generative_pair2pair" else ""
            suffix = f"__clap{self.num_candidates}{query}x{self.rescore_weight:g}"
        if self.mode == "none":
            return f"zero-shot{suffix}"
        kb = Path(self.knowledge_base).name if self.knowledge_base else "none"
        return f"{self.mode}__{kb}__w{self.fusion_weight:g}__k{self.top_k}{suffix}"

    @property
    def generation(self) -> dict:
        """The `generate` arguments of its rescoring (none without)."""
        if not self.num_candidates:
            return {}
        return {
            "rescore": "clap",
            "num_candidates": self.num_candidates,
            "rescore_weight": self.rescore_weight,
            "rescore_query": self.rescore_query,
        }


def plan_runs(
    knowledge_bases: Sequence[str],
    modes: Sequence[str],
    fusion_weight: float = 0.5,
    top_k: int = 4,
    weight_sweep: Sequence[float] = (),
    top_k_sweep: Sequence[int] = (),
    rescoring: Sequence[EvaluationRun] = (),
) -> list[EvaluationRun]:
    """
    Zero-shot, then every mode on every KB at (W, k) (paper Tables 4, 5, 7), each again with every rescoring of
    `rescoring` (runs whose `num_candidates`, `rescore_weight`, `rescore_query` are taken; `rescoring_runs`) as rows of
    their own, then the W sweep and the top-k sweep of generative pair-to-pair retrieval on the first KB (paper Figs.
    2, 3). Duplicates are evaluated once.
    """
    runs = [EvaluationRun(None, "none", fusion_weight, 0)]
    retrieval_modes = [mode for mode in modes if mode != "none"]
    runs += [EvaluationRun(kb, mode, fusion_weight, top_k) for kb in knowledge_bases for mode in retrieval_modes]
    runs += [
        replace(run, num_candidates=r.num_candidates, rescore_weight=r.rescore_weight, rescore_query=r.rescore_query)
        for r in rescoring
        for run in list(runs)
    ]
    if knowledge_bases and weight_sweep:
        runs += [sweep_run(knowledge_bases[0], w, top_k, "weight") for w in (*weight_sweep, fusion_weight)]
    if knowledge_bases and top_k_sweep:
        runs += [sweep_run(knowledge_bases[0], fusion_weight, k, "top_k") for k in (*top_k_sweep, top_k)]
    unique: dict[tuple, EvaluationRun] = {}
    for run in runs:  # a setting shared by the grid and a sweep is run once and belongs to both
        key = (run.knowledge_base, run.mode, run.fusion_weight, run.top_k, run.name)
        first = unique.setdefault(key, run)
        if first is not run:
            unique[key] = replace(first, sweeps=tuple(dict.fromkeys(first.sweeps + run.sweeps)))
    return list(unique.values())


def rescoring_runs(num_candidates: Sequence[int], weights: Sequence[float], query: bool) -> list[EvaluationRun]:
    """The CLAP rescorings to evaluate (for `plan_runs`): every number of candidates with every weight."""
    return [
        EvaluationRun(None, "none", 0.5, 0, num_candidates=n, rescore_weight=w, rescore_query=query)
        for n in num_candidates
        for w in weights
    ]


def sweep_run(knowledge_base: str, fusion_weight: float, top_k: int, sweep: str) -> EvaluationRun:
    """A point of the W or top-k sweep: generative pair-to-pair retrieval (paper Figs. 2, 3)."""
    return EvaluationRun(knowledge_base, "generative_pair2pair", fusion_weight, top_k, (sweep,))


def caption_items(
    model,
    processor,
    items: list[EvaluationItem],
    run: EvaluationRun,
    retriever: PairCapRetriever | None,
    batch_size: int,
    progress: bool,
    **generation,
) -> list[dict]:
    """
    Caption every item under one run (retrieving with `retriever`, the one over the run's knowledge base), in batches
    of similar length; a query never retrieves its own clip (`query_exclusions`). Returns one record per item, in
    order: its caption, zero-shot caption and retrieved pairs (`caption_waveforms`' fields) and the caption's
    `clap_score` (`paircap.clap_score`), or the load error.
    """
    retrieves = run.mode != "none"  # zero-shot says "none": a release with a bundled KB retrieves by default
    retrieval = {"retrieval_mode": "none"} if not retrieves else {
        "retriever": retriever, "retrieval_mode": run.mode,
        "fusion_weight": run.fusion_weight, "top_k": run.top_k,
    }  # fmt: skip
    records: list[dict | None] = [None] * len(items)
    durations = [audio_duration(item.audio.get("path")) for item in items]
    for batch_indices in tqdm(length_grouped_batches(durations, batch_size), desc=run.name, disable=not progress):
        loaded = processor.load_audio([items[i].audio for i in batch_indices])
        good = [i for i, wave in zip(batch_indices, loaded, strict=True) if isinstance(wave, np.ndarray)]
        exclude = [query_exclusions(items[i].audio_id) for i in good] if retrieves else None
        waves = [wave for wave in loaded if isinstance(wave, np.ndarray)]
        results = caption_waveforms(
            model, processor, waves, exclude_ids=exclude, **retrieval, **run.generation, **generation
        )
        scores = clap_scores(model, processor, waves, [result["caption"] for result in results])
        for result, score in zip(results, scores, strict=True):
            result["clap_score"] = score
        by_index = dict(zip(good, results, strict=True))
        for index, wave in zip(batch_indices, loaded, strict=True):
            item = items[index]
            if index in by_index:
                result = {"zero_shot_caption": None, "retrieved": [], **by_index[index]}
            else:  # the loader's error
                result = {"error": str(wave)}
            records[index] = {"audio_id": item.audio_id, "references": item.references, **result}
    return records


def query_exclusions(audio_id: str) -> set[str]:
    """The ids a query must not retrieve: its own clip, by raw id and by clip identity (its copies in any corpus)."""
    return {audio_id, normalise_clip_id(audio_id)}


def reference_embeddings(model, processor, items: list[EvaluationItem]) -> np.ndarray:
    """`(items, d)`: per item, the mean of its reference captions' L2-normalised CLAP text embeddings."""
    texts = [reference for item in items for reference in item.references]
    batches = [texts[start : start + TEXT_BATCH_SIZE] for start in range(0, len(texts), TEXT_BATCH_SIZE)]
    embeds = np.concatenate([embed_texts(model, processor, batch) for batch in batches])
    bounds = np.cumsum([0, *(len(item.references) for item in items)])
    return np.stack([embeds[start:end].mean(axis=0) for start, end in zip(bounds[:-1], bounds[1:], strict=True)])


def embed_texts(model, processor, texts: list[str]) -> np.ndarray:
    """`(n, d)` float32 CLAP text embeddings in the frozen retrieval space."""
    with torch.no_grad():
        embeds = model.embed_texts(**processor.clap_text_inputs(texts).to(model.device))
    return embeds.float().cpu().numpy()


def add_reference_text_scores(records: list[dict], knowledge_base, references: np.ndarray) -> None:
    """
    Store on every retrieved pair k of item q `reference_text_score` = mean over q's references of <t_ref, t_k>, the
    S_T of paper Fig. 1 (`references[q]` is the mean reference embedding, `reference_embeddings`).
    """
    rows = sorted({pair["row"] for record in records for pair in record.get("retrieved", [])})
    if not rows:
        return
    position = {row: index for index, row in enumerate(rows)}
    texts = pair_text_embeddings(knowledge_base, rows)
    for record, reference in zip(records, references, strict=True):
        for pair in record.get("retrieved", []):
            pair["reference_text_score"] = float(texts[position[pair["row"]]] @ reference)


def pair_text_embeddings(knowledge_base, rows: list[int]) -> np.ndarray:
    """`(rows, text_dim)`: the CLAP text embeddings t_k of the given knowledge-base rows."""
    return knowledge_base.pair_vectors(rows)[:, knowledge_base.metadata.audio_dim :]


def score_records(records: list[dict]) -> dict:
    """
    Caption metrics over the captioned items (`EVALUATE_METRICS`, and the mean CLAP score of the captions where the
    predictions have it), and the similarities of their retrieved pairs (paper Fig. 1):
    `mean_audio_similarity` S_A = <a_q, a_k> and `mean_text_similarity` S_T = mean over the references of
    <t_ref, t_k>, both in the frozen CLAP space; `mean_query_text_score` is the retriever's own text score of each
    pair, <t_q, t_k> (generated caption) in the pair modes but <a_q, t_k> otherwise, so not comparable across modes.
    """
    scored = [r for r in records if "caption" in r]
    scores = compute_caption_metrics(
        [r["caption"] for r in scored], [r["references"] for r in scored], metrics=EVALUATE_METRICS
    )
    pairs = [pair for r in scored for pair in r["retrieved"]]
    return {
        "metrics": {**scores.corpus, "clap_score": mean_clap_score(scored)},
        "unavailable": scores.unavailable,
        "items": len(scored),
        "failed_items": len(records) - len(scored),
        "mean_audio_similarity": mean_pair_field(pairs, "audio_score"),
        "mean_text_similarity": mean_pair_field(pairs, "reference_text_score"),
        "mean_query_text_score": mean_pair_field(pairs, "text_score"),
    }


def mean_pair_field(pairs: list[dict], name: str) -> float | None:
    """Mean of a retrieved-pair field over the pairs where it is finite; None where none is (or no pair)."""
    values = [pair[name] for pair in pairs if pair.get(name) is not None and np.isfinite(pair[name])]
    return float(np.mean(values)) if values else None


def evaluate(
    model,
    processor,
    items: list[EvaluationItem],
    runs: list[EvaluationRun],
    output_dir: str | Path,
    retrievers: Mapping[str, PairCapRetriever],
    batch_size: int = 8,
    progress: bool = True,
    settings: dict | None = None,
    kept: Sequence[dict] = (),
    **generation,
) -> dict:
    """
    Run, save (`predictions/<run>.jsonl`, one line per item, each retrieved pair with its `reference_text_score`) and
    score every run; writes `results.json` with these runs and the already scored rows `kept` (predictions of other
    earlier runs in the folder are left out, and logged). `retrievers` maps each run's knowledge base to its retriever
    (`paircap.captioning.load_retriever`).
    """
    output_dir = Path(output_dir)
    (output_dir / PREDICTIONS_DIR).mkdir(parents=True, exist_ok=True)
    retrieves = bool(items) and any(run.mode != "none" for run in runs)
    references = reference_embeddings(model, processor, items) if retrieves else None
    for run in runs:
        retriever = None if run.mode == "none" else retrievers[run.knowledge_base]
        records = caption_items(model, processor, items, run, retriever, batch_size, progress, **generation)
        if retriever is not None:
            add_reference_text_scores(records, retriever.knowledge_base, references)
        write_predictions(output_dir, run, records)
    settings = {**(settings or {}), "generation": generation, "batch_size": batch_size}
    return rescore(output_dir, settings=settings, names=[run.name for run in runs], kept=kept)


def write_predictions(output_dir: Path, run: EvaluationRun, records: list[dict]) -> None:
    path = output_dir / PREDICTIONS_DIR / f"{run.name}.jsonl"
    with open(path, "w", encoding="utf-8") as handle:
        handle.write(json.dumps({"run": asdict(run)}) + "\n")
        for record in records:
            handle.write(json.dumps(record, ensure_ascii=False) + "\n")


def rescore(
    output_dir: str | Path, settings: dict | None = None, names: Sequence[str] | None = None, kept: Sequence[dict] = ()
) -> dict:
    """
    Score saved predictions again (e.g. once SPICE's jars are installed) without regenerating, and write
    `results.json`. `names` are the runs to score: by default those of the folder's `results.json` (every predictions
    file when there is none); `kept`: rows of runs already scored that `results.json` lists beside them. Predictions
    files of other runs (an earlier invocation's) are left out, and logged.

    Raises:
        FileNotFoundError: a run to score has no predictions file.
    """
    output_dir = Path(output_dir)
    predictions = output_dir / PREDICTIONS_DIR
    previous = previous_results(output_dir)
    saved = sorted(path.stem for path in predictions.glob("*.jsonl"))
    if names is None:
        names = [run["name"] for run in previous["runs"]] if previous else saved
    missing = [name for name in names if name not in saved]
    if missing:
        raise FileNotFoundError(f"{predictions}: no predictions for run(s) {', '.join(missing)}")
    listed = {*names, *(row["name"] for row in kept)}
    left_out = [name for name in saved if name not in listed]
    if left_out:
        logger.info(
            "left out %d predictions file(s) in %s of runs not in this evaluation: %s",
            len(left_out), predictions, ", ".join(left_out),
        )  # fmt: skip
    results = {"settings": settings or previous.get("settings", {}), "runs": list(kept)}
    for name in names:
        lines = (predictions / f"{name}.jsonl").read_text(encoding="utf-8").splitlines()
        run = json.loads(lines[0])["run"]
        records = [json.loads(line) for line in lines[1:]]
        results["runs"].append({"name": name, **run, **score_records(records)})
    results["runs"].sort(key=lambda row: row["name"])
    (output_dir / RESULTS_FILE).write_text(json.dumps(results, indent=2))
    return results


def previous_results(output_dir: Path) -> dict:
    """The folder's `results.json` (`settings` and `runs`), or an empty dict."""
    path = output_dir / RESULTS_FILE
    return json.loads(path.read_text()) if path.is_file() else {}
