"""`paircap evaluate`'s report: `results.md` (the tables of `hub_cards.evaluation_tables`), the sweep plots (paper
Figs. 2, 3) and the model card's `model-index` entries."""

import json
from dataclasses import asdict
from pathlib import Path

from huggingface_hub import EvalResult

from hub_cards.evaluation_tables import (
    dcase2024_table,
    headline_metric,
    method_by_kb_table,
    metrics_table,
    similarity_table,
)


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
        f"{similarity_table(results)}\n\n## DCASE-2024 metrics\n\n{dcase2024_table(results)}\n\n"
        f"## All metrics\n\n{metrics_table(results)}\n{note}\n"
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
