"""Tables and plots of `paircap evaluate` results, shaped like the paper's (Tables 4, 5, 7; Figs. 1-3)."""

import json
from dataclasses import asdict
from pathlib import Path

from huggingface_hub import EvalResult

METRIC_ORDER = ("bleu_1", "bleu_2", "bleu_3", "bleu_4", "meteor", "rouge_l", "cider_d", "spice", "spider")


def headline_metric(results: dict) -> str:
    """SPIDEr, the paper's headline, where it could be computed; CIDEr-D otherwise (said in every table title)."""
    runs = results["runs"]
    return "spider" if runs and all(run["metrics"].get("spider") is not None for run in runs) else "cider_d"


def kb_label(run: dict) -> str:
    return Path(run["knowledge_base"]).name if run["knowledge_base"] else "none"


def fmt(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.4f}"


def method_by_kb_table(results: dict, metric: str) -> str:
    """Rows: retrieval methods; columns: knowledge bases; cells: `metric` (paper Tables 4, 5, 7)."""
    grid = [run for run in results["runs"] if "grid" in run["sweeps"] and run["mode"] != "none"]
    kbs = list(dict.fromkeys(kb_label(run) for run in grid))
    modes = list(dict.fromkeys(run["mode"] for run in grid))
    cells = {(run["mode"], kb_label(run)): run["metrics"].get(metric) for run in grid}
    lines = [f"| method | {' | '.join(kbs)} |", "|---|" + "---:|" * len(kbs)]
    zero_shot = [run for run in results["runs"] if run["mode"] == "none"]
    if zero_shot:
        lines.append(f"| zero-shot | {' | '.join([fmt(zero_shot[0]['metrics'].get(metric))] * len(kbs))} |")
    lines += [f"| {mode} | {' | '.join(fmt(cells.get((mode, kb))) for kb in kbs)} |" for mode in modes]
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
            lines.append(f"| {run['mode']} | {kb_label(run)} | {fmt(sims[0])} | {fmt(sims[1])} |")
    return "\n".join(lines)


def metrics_table(results: dict) -> str:
    """Every metric of every run; unavailable metrics are `n/a`, never 0."""
    lines = ["| run | items | " + " | ".join(METRIC_ORDER) + " |", "|---|---:|" + "---:|" * len(METRIC_ORDER)]
    for run in results["runs"]:
        values = " | ".join(fmt(run["metrics"].get(name)) for name in METRIC_ORDER)
        lines.append(f"| {run['name']} | {run['items']} | {values} |")
    return "\n".join(lines)


def sweep_points(results: dict, sweep: str, metric: str) -> list[tuple[float, float]]:
    """(x, metric) points of the W sweep (x = W) or the top-k sweep (x = k), sorted by x."""
    key = "fusion_weight" if sweep == "weight" else "top_k"
    points = [(run[key], run["metrics"].get(metric)) for run in results["runs"] if sweep in run["sweeps"]]
    return sorted((x, y) for x, y in points if y is not None)


def plot_sweep(results: dict, sweep: str, metric: str, path: Path) -> Path | None:
    """A PNG line plot of one sweep (paper Fig. 2: W, Fig. 3: top-k); None when the sweep was not run."""
    points = sweep_points(results, sweep, metric)
    if not points:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axis = plt.subplots(figsize=(4.5, 3.2), dpi=120)
    axis.plot([x for x, _ in points], [y for _, y in points], marker="o")
    axis.set_xlabel("fusion weight W" if sweep == "weight" else "top-k retrieved pairs")
    axis.set_ylabel(metric.replace("_", "-").upper())
    axis.set_title(f"generative pair-to-pair: {metric} vs {'W' if sweep == 'weight' else 'k'}")
    axis.grid(alpha=0.3)
    figure.tight_layout()
    figure.savefig(path)
    plt.close(figure)
    return path


def write_report(results: dict, output_dir: str | Path) -> list[Path]:
    """`results.md` with the tables, and the sweep plots as PNG files; returns the files written."""
    output_dir = Path(output_dir)
    metric = headline_metric(results)
    unavailable = {name: reason for run in results["runs"] for name, reason in run["unavailable"].items()}
    note = "".join(f"\n- `{name}` unavailable: {reason}" for name, reason in unavailable.items())
    text = (
        f"# PairCap evaluation\n\n## {metric} by retrieval method and knowledge base\n\n"
        f"{method_by_kb_table(results, metric)}\n\n"
        "## Similarity of retrieved pairs to the query audio (S_A) and to its reference captions (S_T)\n\n"
        f"{similarity_table(results)}\n\n## All metrics\n\n{metrics_table(results)}\n{note}\n"
    )
    written = [output_dir / "results.md"]
    written[0].write_text(text)
    for sweep in ("weight", "top_k"):
        plot = plot_sweep(results, sweep, metric, output_dir / f"{sweep}_sweep.png")
        if plot is not None:
            written.append(plot)
    return written


def model_index_results(results: dict, dataset_name: str, dataset_split: str, run_name: str | None = None):
    """The `model-index` entries of one run (the best by the headline metric unless named) for the model card."""
    metric = headline_metric(results)
    runs = [run for run in results["runs"] if run_name in (None, run["name"])]
    best = max(runs, key=lambda run: run["metrics"].get(metric) or float("-inf"))
    return [
        EvalResult(
            task_type="audio-captioning",
            task_name="Audio captioning",
            dataset_type=dataset_name,
            dataset_name=dataset_name,
            dataset_split=dataset_split,
            metric_type=name,
            metric_name=name.replace("_", "-").upper(),
            metric_value=round(value, 4),
            metric_config=best["name"],
        )
        for name, value in best["metrics"].items()
        if value is not None
    ]


def save_model_index(results: dict, output_dir: Path, dataset_name: str, dataset_split: str) -> Path:
    """`model_index.json`: the card-ready results, consumed by `render_model_card(eval_results=...)`."""
    entries = [asdict(result) for result in model_index_results(results, dataset_name, dataset_split)]
    path = output_dir / "model_index.json"
    path.write_text(json.dumps(entries, indent=2))
    return path
