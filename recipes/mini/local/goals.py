"""The `proof` goals over seeds: does a captioner follow the caption in its prompt (the context probe's oracle and
adversarial conditions, `mechanism`), can it pick a right pair among wrong ones (its right-pair and control
conditions), and does a knowledge base make it name classes it never trained on (`novel`)?
Each per seed and pooled over the runs' items (pairs stay within a run), for the curriculum model and every
`context_ablations` variant that all runs trained.

    python -m recipes.mini.local.goals runs/mini-s0 runs/mini-s1 --output goals.md
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Sequence
from pathlib import Path
from typing import NamedTuple

import numpy as np

from paircap.context_probe import share
from paircap.statistics import paired_bootstrap
from recipes.mini.local.evaluation import read_predictions
from recipes.mini.local.event_captions import names_event
from recipes.mini.local.novel_classes import NOVEL_FILE

ZERO_SHOT = "zero-shot"
A2A, P2P = "audio2audio, refined KB", "generative pair2pair W {}, refined KB"
CONTROL = "control: {}, refined KB less the novel classes"
TOP1 = "{}, top-k 1"
PICKING_CONDITIONS = ("right_", "control_")  # the probe's conditions with a right pair or only wrong ones, by prefix
BY_CLASS_CONDITIONS = ("oracle", "right_k1")  # split by the clip's class: one the captioners trained on, or a novel one
# the novel-events settings each model is reported on, each against a setting on the same clips
NOVEL_ROWS = (
    (A2A, ZERO_SHOT),
    (A2A, CONTROL.format("audio2audio")),
    ("audio2text, text-only KB (RECAP)", ZERO_SHOT),
    (P2P.format(0.5), ZERO_SHOT),
    (P2P.format(0.9), ZERO_SHOT),
    (P2P.format(0.5), CONTROL.format("generative pair2pair W 0.5")),
    (TOP1.format(A2A), ZERO_SHOT),
    (TOP1.format(A2A), TOP1.format(CONTROL.format("audio2audio"))),
    (TOP1.format(P2P.format(0.9)), ZERO_SHOT),
)


class Model(NamedTuple):
    """A captioner of the runs: its context probe and novel-events results, relative to a run's folder."""

    name: str
    probe: Path
    novel: Path


def models(runs: Sequence[Path]) -> list[Model]:
    """The curriculum model, then each `context_ablations` variant present in every run."""
    found = [Model("curriculum", Path("mechanism/stage2_phase2/context_probe.json"), Path("novel/results.json"))]
    names = set.intersection(*({p.name for p in (run / "context_ablations").glob("*") if p.is_dir()} for run in runs))
    for name in sorted(names):
        folder = Path("context_ablations") / name
        found.append(Model(name, folder / "mechanism" / "context_probe.json", folder / "novel" / "results.json"))
    return found


def probe_flags(path: Path) -> dict[str, np.ndarray]:
    """Per item of a context probe, 1.0 / 0.0: names its class under `none`, `oracle` and each right-pair and control
    condition the probe has, and (`pulled`) names the injected wrong class under `adversarial`."""
    records = json.loads(path.read_text())["records"]
    named = ["none", "oracle", *(c for c in records[0] if c.startswith(PICKING_CONDITIONS))] if records else []
    flags: dict[str, list[float]] = {name: [] for name in [*named, "pulled"]}
    for record in records:
        label = record["label"]
        for condition in named:
            flags[condition].append(float(names_event(record[condition]["prediction"], label)))
        adversarial = record["adversarial"]
        wrong = [injected for injected in adversarial["injected_labels"] if injected != label]
        flags["pulled"].append(float(any(names_event(adversarial["prediction"], injected) for injected in wrong)))
    return {name: np.array(values) for name, values in flags.items()}


def novel_mask(run: Path, probe: Path) -> np.ndarray | None:
    """Per item of a run's context probe, whether its class is one of the run's novel classes (None: the run has
    none)."""
    path = run / "corpus" / NOVEL_FILE
    if not path.is_file():
        return None
    novel = set(json.loads(path.read_text())["classes"])
    return np.array([record["label"] in novel for record in json.loads(probe.read_text())["records"]], dtype=bool)


def by_class_group(flags: Sequence[dict[str, np.ndarray]], masks: Sequence[np.ndarray], resamples: int) -> dict:
    """For the clips of known and of novel classes apart: zero-shot naming, and each of `BY_CLASS_CONDITIONS` against
    it (runs without clips of a group are left out of it). A right pair of a known class is a clip the captioner
    trained on with a phrase of its class; of a novel class, a clip it never trained on, as the oracle's own clip."""
    groups = {}
    for group, wanted in (("known", False), ("novel", True)):
        parts = [
            {name: values[mask == wanted] for name, values in f.items()} for f, mask in zip(flags, masks, strict=True)
        ]
        parts = [part for part in parts if len(part["none"])]
        if not parts:
            continue
        groups[group] = {"none": pooled_share([part["none"] for part in parts])} | {
            condition: difference([part[condition] for part in parts], [part["none"] for part in parts], resamples)
            for condition in BY_CLASS_CONDITIONS
            if all(condition in part for part in parts)
        }
    return groups


def novel_flags(result: dict) -> dict[str, np.ndarray]:
    """Per setting of a novel-events result, 1.0 / 0.0 per novel-class clip (in its item order): names the clip's
    class."""
    items = result["items"]["novel"]
    return {
        row["label"]: np.array([float(row["novel"]["items"][item]) for item in items]) for row in result["settings"]
    }


def esc50_target(audio_id: str) -> str:
    """The class index an ESC-50 clip id ends with (`{fold}-{src_file}-{take}-{target}`)."""
    return audio_id.rsplit("-", 1)[-1]


def top1_same_class(result: dict, folder: Path) -> dict[str, np.ndarray]:
    """Per retrieval setting of a novel-events result (its predictions in `folder/evaluation/predictions/`), 1.0 / 0.0
    per novel-class clip (in its item order): the top retrieved pair is a clip of the clip's class."""
    items = result["items"]["novel"]
    flags = {}
    for row in result["settings"]:
        predictions = folder / "evaluation" / "predictions" / f"{row['run']}.jsonl"
        if row["run"] == ZERO_SHOT or not predictions.is_file():
            continue
        records = {record["audio_id"]: record for record in read_predictions(predictions)}
        top = [records[item]["retrieved"][0]["audio_id"] for item in items]
        flags[row["label"]] = np.array(
            [float(esc50_target(t) == esc50_target(i)) for t, i in zip(top, items, strict=True)]
        )
    return flags


def pooled_share(parts: Sequence[np.ndarray]) -> dict | None:
    """The share of yes over the runs' items together, with its Wilson interval (`context_probe.share`; None: none)."""
    return share(np.concatenate(parts).astype(bool).tolist())


def difference(a: Sequence[np.ndarray], b: Sequence[np.ndarray], resamples: int) -> dict:
    """Per run and pooled, the mean of a - b over paired items, with the pooled paired bootstrap interval."""
    per_run = [float(x.mean() - y.mean()) for x, y in zip(a, b, strict=True)]
    pooled, low, high = paired_bootstrap(np.concatenate(a), np.concatenate(b), resamples=resamples, seed=0)
    return {"per_run": per_run, "pooled": pooled, "low": low, "high": high, "n": int(sum(len(x) for x in a))}


def measure(runs: Sequence[Path], resamples: int = 2000) -> dict:
    """Every model's mechanism and novel-events rows (a model lacking a file in some run is left out of that part)."""
    result: dict = {"runs": [str(run) for run in runs], "mechanism": {}, "novel": {}}
    for model in models(runs):
        if all((run / model.probe).is_file() for run in runs):
            flags = [probe_flags(run / model.probe) for run in runs]
            result["mechanism"][model.name] = {
                "none": pooled_share([f["none"] for f in flags]),
                "oracle_gain": difference([f["oracle"] for f in flags], [f["none"] for f in flags], resamples),
                "pulled": pooled_share([f["pulled"] for f in flags]),
                "pulled_per_run": [float(f["pulled"].mean()) for f in flags],
                "picking": {
                    condition: {
                        "named": pooled_share([f[condition] for f in flags]),
                        **difference([f[condition] for f in flags], [f["none"] for f in flags], resamples),
                    }
                    for condition in flags[0]
                    if condition.startswith(PICKING_CONDITIONS) and all(condition in f for f in flags)
                },
            }
            masks = [novel_mask(run, run / model.probe) for run in runs]
            if all(mask is not None for mask in masks):
                result["mechanism"][model.name]["by_class"] = by_class_group(flags, masks, resamples)
        if all((run / model.novel).is_file() for run in runs):
            results = [json.loads((run / model.novel).read_text()) for run in runs]
            flags = [novel_flags(result) for result in results]
            labels = [label for label in flags[0] if all(label in f for f in flags)]  # older runs lack some
            rows = {label: pooled_share([f[label] for f in flags]) for label in labels}
            comparisons = [
                {"setting": a, "versus": b, **difference([f[a] for f in flags], [f[b] for f in flags], resamples)}
                for a, b in NOVEL_ROWS
                if all(a in f and b in f for f in flags)
            ]
            hits = [
                top1_same_class(result, (run / model.novel).parent) for result, run in zip(results, runs, strict=True)
            ]
            retrieval = {}
            for label in (label for label in hits[0] if all(label in h for h in hits)):
                top1 = np.concatenate([h[label] for h in hits])
                named = np.concatenate([f[label] for f in flags])
                retrieval[label] = {
                    "top1_same_class": pooled_share([top1]),
                    "named_when_top1_same_class": pooled_share([named[top1 == 1]]),
                }
            result["novel"][model.name] = {"settings": rows, "comparisons": comparisons, "retrieval": retrieval}
    return result


def cell(row: dict) -> str:
    return f"{100 * row['share']:.0f} % ({row['count']} of {row['n']}; {100 * row['low']:.0f}-{100 * row['high']:.0f})"


def points(row: dict) -> str:
    seeds = ", ".join(f"{100 * value:+.0f}" for value in row["per_run"])
    return f"{100 * row['pooled']:+.1f} [{100 * row['low']:+.1f}, {100 * row['high']:+.1f}] (per seed {seeds})"


def markdown(result: dict) -> str:
    """Five tables: the mechanism goals per model; picking a right pair among wrong ones per model; the oracle and a
    right pair for clips of known and of novel classes apart; novel-class naming per model and setting; and how often
    retrieval put a clip of the novel class first, and how often the caption then named it."""
    lines = [
        "| model | zero-shot names its class | oracle (own clip, right caption) vs zero-shot, points [95 %] "
        "| adversarial (own clip, wrong caption): pulled [95 %] | per seed |",
        "|---|---:|---:|---:|---|",
    ]
    for name, row in result["mechanism"].items():
        seeds = ", ".join(f"{100 * value:.0f} %" for value in row["pulled_per_run"])
        lines.append(
            f"| {name} | {cell(row['none'])} | {points(row['oracle_gain'])} | {cell(row['pulled'])} | {seeds} |"
        )
    if any(row.get("picking") for row in result["mechanism"].values()):
        lines += [
            "",
            "| model | examples (right: a clip of its class from another recording) | names its class [95 %] "
            "| vs zero-shot, points [95 %] |",
            "|---|---|---:|---:|",
        ]
        for name, row in result["mechanism"].items():
            for condition, picked in row.get("picking", {}).items():
                lines.append(f"| {name} | {condition} | {cell(picked['named'])} | {points(picked)} |")
    if any(row.get("by_class") for row in result["mechanism"].values()):
        lines += [
            "",
            "| model | classes | zero-shot names its class [95 %] | oracle vs zero-shot, points [95 %] "
            "| right pair alone (`right_k1`) vs zero-shot, points [95 %] |",
            "|---|---|---:|---:|---:|",
        ]
        for name, row in result["mechanism"].items():
            for group, parts in row.get("by_class", {}).items():
                gains = [points(parts[c]) if c in parts else "n/a" for c in BY_CLASS_CONDITIONS]
                lines.append(f"| {name} | {group} | {cell(parts['none'])} | {' | '.join(gains)} |")
    if result["novel"]:
        lines += [
            "",
            "| model | setting | novel class named [95 %] | versus | difference, points [95 %] |",
            "|---|---|---:|---|---:|",
        ]
        for name, novel in result["novel"].items():
            lines.append(f"| {name} | {ZERO_SHOT} | {cell(novel['settings'][ZERO_SHOT])} |  |  |")
            for row in novel["comparisons"]:
                lines.append(
                    f"| {name} | {row['setting']} | {cell(novel['settings'][row['setting']])} | {row['versus']} "
                    f"| {points(row)} |"
                )
        lines += [
            "",
            "| model | setting | top retrieved pair is a clip of the novel class [95 %] | class named when it is |",
            "|---|---|---:|---:|",
        ]
        for name, novel in result["novel"].items():
            for label in (A2A, TOP1.format(A2A), P2P.format(0.5), P2P.format(0.9), TOP1.format(P2P.format(0.9))):
                row = novel["retrieval"].get(label)
                if row:
                    when = row["named_when_top1_same_class"]
                    lines.append(
                        f"| {name} | {label} | {cell(row['top1_same_class'])} | {cell(when) if when else 'n/a'} |"
                    )
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m recipes.mini.local.goals", description=__doc__.split("\n\n")[0])
    parser.add_argument("runs", nargs="+", type=Path, help="mini run folders (one per seed) with mechanism and novel")
    parser.add_argument("--output", type=Path, required=True, help="the markdown tables (a .json beside it)")
    parser.add_argument("--resamples", type=int, default=2000)
    args = parser.parse_args(argv)
    result = measure(args.runs, args.resamples)
    args.output.write_text(markdown(result))
    args.output.with_suffix(".json").write_text(json.dumps(result, indent=2))
    print(f"{len(result['mechanism'])} models probed, {len(result['novel'])} with novel events: {args.output}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
