"""`paircap evaluate`'s report: `results.md` (the release's default configuration, then the tables of
`hub_cards.evaluation_tables`), the sweep plots (paper Figs. 2, 3), and what `results.json` records for the model card
(`evaluation_settings`: the dataset and the release's default configuration, whose run is the card's `model-index`)."""

import sys
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path

from hub_cards.default_configuration import DefaultConfiguration, default_summary, default_table, recorded_default
from hub_cards.evaluation_tables import (
    dcase2024_table,
    headline_metric,
    method_by_kb_table,
    metrics_table,
    similarity_table,
)
from modeling_paircap.configuration_paircap import PairCapConfig


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
    default = recorded_default(results)
    first = ""
    if default is not None:  # an older results.json records none
        parts = (default_summary(default), default_table(default))
        first = "".join(f"{part}\n\n" for part in parts if part)
    text = (
        f"# PairCap evaluation\n\n{first}## {metric} by retrieval method and knowledge base\n\n"
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


def print_report(output_dir: str | Path, written: list[Path]) -> None:
    """`results.md` on standard output, and the files written (`results.json` and `written`) on standard error."""
    print(Path(output_dir, "results.md").read_text())
    print("wrote " + ", ".join(str(path) for path in [Path(output_dir, "results.json"), *written]), file=sys.stderr)


def evaluation_settings(
    config: PairCapConfig,
    release: str,
    knowledge_bases: Sequence[str],
    default_kb: str | None,
    dataset_name: str,
    split: str,
) -> dict:
    """
    What `results.json` records for the model card: the `dataset` (name, split), and the `default` configuration of
    the release `release` (its `config`; `hub_cards.DefaultConfiguration`) with the evaluated KB that is its own:
    `default_kb` (one of `knowledge_bases`), else the one that is `config.knowledge_base` (the same hub id or
    folder), else none (the card then says the default was not measured).
    """
    own = default_kb or next((kb for kb in knowledge_bases if is_release_kb(kb, release, config)), None)
    default = DefaultConfiguration.from_config(config, own)
    return {"dataset": {"name": dataset_name, "split": split}, "default": asdict(default)}


def is_release_kb(knowledge_base: str, release: str, config: PairCapConfig) -> bool:
    """Whether `knowledge_base` (a hub id or folder) is the one `config.knowledge_base` names: the same string, or,
    for a local release, the same folder (a relative name is inside the release folder)."""
    own = config.knowledge_base
    if own is None or knowledge_base == own:
        return own is not None
    folder = Path(knowledge_base).expanduser()
    return folder.is_dir() and Path(release).is_dir() and folder.resolve() == Path(release, own).expanduser().resolve()
