"""The result tables of `paircap evaluate`, shaped like the paper's (Tables 4, 5, 7; Fig. 1): in its `results.md` and
in the model card."""

from pathlib import Path

METRIC_ORDER = ("bleu_1", "bleu_2", "bleu_3", "bleu_4", "meteor", "rouge_l", "cider_d", "spice", "spider")
# the DCASE-2024 task 6 metric set, and the reference-free CLAP score of the release's own CLAP
DCASE2024_COLUMNS = {
    "meteor": "METEOR",
    "cider_d": "CIDEr-D",
    "spice": "SPICE",
    "spider": "SPIDEr",
    "spider_fl": "SPIDEr-FL",
    "fense": "FENSE",
    "vocab": "Vocab",
    "clap_score": "CLAP score",
}


def headline_metric(results: dict) -> str:
    """SPIDEr, the paper's headline, where it could be computed; CIDEr-D otherwise (said in every table title)."""
    runs = results["runs"]
    return "spider" if runs and all(run["metrics"].get("spider") is not None for run in runs) else "cider_d"


def kb_label(run: dict) -> str:
    return Path(run["knowledge_base"]).name if run["knowledge_base"] else "none"


def method_label(run: dict) -> str:
    """A run's retrieval method (`zero-shot` for none), with its CLAP rescoring when it has one."""
    method = "zero-shot" if run["mode"] == "none" else run["mode"]
    candidates = run.get("num_candidates", 0)
    if not candidates:
        return method
    query = ", query too" if run.get("rescore_query") and run["mode"] == "generative_pair2pair" else ""
    return f"{method} + CLAP rescoring (N={candidates}, λ={run['rescore_weight']:g}{query})"


def fmt(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.4f}"


def method_by_kb_table(results: dict, metric: str) -> str:
    """Rows: retrieval methods; columns: knowledge bases; cells: `metric` (paper Tables 4, 5, 7)."""
    grid = [run for run in results["runs"] if "grid" in run["sweeps"] and run["mode"] != "none"]
    kbs = list(dict.fromkeys(kb_label(run) for run in grid))
    methods = list(dict.fromkeys(method_label(run) for run in grid))
    cells = {(method_label(run), kb_label(run)): run["metrics"].get(metric) for run in grid}
    lines = [f"| method | {' | '.join(kbs)} |", "|---|" + "---:|" * len(kbs)]
    for run in results["runs"]:  # zero-shot, and zero-shot rescored: the same in every column
        if run["mode"] == "none":
            lines.append(f"| {method_label(run)} | {' | '.join([fmt(run['metrics'].get(metric))] * len(kbs))} |")
    lines += [f"| {method} | {' | '.join(fmt(cells.get((method, kb))) for kb in kbs)} |" for method in methods]
    return "\n".join(lines)


def similarity_table(results: dict) -> str:
    """
    Per method and KB, the mean similarity of the retrieved pairs k to the query (paper Fig. 1), in the frozen CLAP
    space: S_A = <a_q, a_k> to its audio, S_T = mean over its reference captions of <t_ref, t_k>.
    """
    lines = ["| method | knowledge base | mean S_A | mean S_T |", "|---|---|---:|---:|"]
    for run in results["runs"]:
        if "grid" in run["sweeps"] and run["mode"] != "none":
            sims = (run["mean_audio_similarity"], run["mean_text_similarity"])
            lines.append(f"| {method_label(run)} | {kb_label(run)} | {fmt(sims[0])} | {fmt(sims[1])} |")
    return "\n".join(lines)


def metrics_table(results: dict) -> str:
    """Every metric of every run; unavailable metrics are `n/a`, never 0."""
    lines = ["| run | items | " + " | ".join(METRIC_ORDER) + " |", "|---|---:|" + "---:|" * len(METRIC_ORDER)]
    for run in results["runs"]:
        values = " | ".join(fmt(run["metrics"].get(name)) for name in METRIC_ORDER)
        lines.append(f"| {run['name']} | {run['items']} | {values} |")
    return "\n".join(lines)


def dcase2024_table(results: dict) -> str:
    """Per run the DCASE-2024 metrics; a metric that could not be computed is `unavailable` (never 0), one not
    computed by the run that wrote `results.json` (an older one) is `n/a`."""
    lines = ["| run | " + " | ".join(DCASE2024_COLUMNS.values()) + " |", "|---|" + "---:|" * len(DCASE2024_COLUMNS)]
    for run in results["runs"]:
        cells = [
            "unavailable" if name in run.get("unavailable", {}) else dcase_fmt(name, run["metrics"].get(name))
            for name in DCASE2024_COLUMNS
        ]
        lines.append(f"| {run['name']} | {' | '.join(cells)} |")
    return "\n".join(lines)


def dcase_fmt(name: str, value: float | None) -> str:
    return f"{value:.0f}" if name == "vocab" and value is not None else fmt(value)
