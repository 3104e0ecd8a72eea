"""The paper's claims, two the field made since (CLAP rescoring of candidates, SLAM-AAC; MQ-Cap's progressive
schedule of retrieved pairs) and what the recipe's trainable set costs (IA3 alone against the whole LM decoder), as
paired comparisons: every comparison scores two settings on the same test mixtures, per item (CIDEr-D, and whether
the caption names at least one and both of the mixture's events), and reports the mean difference with a paired
bootstrap interval, per seed and pooled over the seeds' runs.

    python -m recipes.mini.local.claims runs/mini-seed0 runs/mini-seed1 --output claims.md

With `--baseline RUN ...` (one per run: the same seeds and test mixtures, a recipe changed) it compares the curriculum
model's zero-shot and retrieval settings of the runs against the baselines' instead.

A verdict is "reproduces" when the pooled 95 % interval lies above zero (the claimed setting is better), "does not"
when it lies below (the opposite of the claim's direction), and "cannot tell at this scale" when it holds zero.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Sequence
from pathlib import Path
from typing import NamedTuple

import numpy as np

from paircap.metrics import compute_caption_metrics
from paircap.statistics import paired_bootstrap
from recipes.mini.local.evaluation import read_predictions
from recipes.mini.local.event_captions import events_named
from recipes.mini.local.layout import CURRICULUM
from recipes.mini.local.mixtures import mixture_events

METRICS = ("cider_d", "an_event_named", "both_named")


class Setting(NamedTuple):
    """One captioner's predictions file: `<run>/evaluation/<captioner>/predictions/<name>.jsonl`; `{top_k}` and
    `{candidates}` in the name are the run's (`run_values`)."""

    captioner: str
    name: str

    def path(self, run: Path) -> Path:
        name = self.name.format(**run_values(run)) if "{" in self.name else self.name
        return run / "evaluation" / self.captioner / "predictions" / f"{name}.jsonl"


def run_values(run: Path) -> dict[str, int | None]:
    """What a run's predictions are named by, from its scale (`settings.json`): the grid's top-k (`max_examples`) and
    the candidates its `rescoring` stage rescores (None where the scale has no such setting)."""
    path = run / "settings.json"
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such file; is {run} a mini run folder?")
    scale = json.loads(path.read_text())["scale"]
    return {"top_k": scale["max_examples"], "candidates": scale.get("rescore_candidates")}


def run_name(
    mode: str = "generative_pair2pair", kb: str = "refined", weight: float = 0.5, top_k: int | str = "{top_k}"
) -> str:
    """The name `paircap evaluate` gives a retrieval setting's predictions (top-k by default the run's grid's)."""
    return f"{mode}__{kb}__w{weight:g}__k{top_k}"


def rescored_name(name: str, weight: float = 0.5, query: bool = False) -> str:
    """The name of run `name` with CLAP rescoring (`EvaluationRun.name`), of the run's number of candidates."""
    return f"{name}__clap{{candidates}}{'q' if query else ''}x{weight:g}"


P2P = Setting(CURRICULUM, run_name())
ZERO_SHOT = Setting(CURRICULUM, "zero-shot")
AUDIO2AUDIO = Setting(CURRICULUM, run_name("audio2audio"))
# (the paper's claim, the setting it says is better, the setting it is compared with)
COMPARISONS: tuple[tuple[str, Setting, Setting], ...] = (
    ("retrieval helps: generative pair-to-pair vs zero-shot", P2P, ZERO_SHOT),
    ("audio-to-audio retrieval vs zero-shot", AUDIO2AUDIO, ZERO_SHOT),
    ("generative pair-to-pair vs audio-to-audio", P2P, AUDIO2AUDIO),
    ("generative pair-to-pair vs audio-to-mixture", P2P, Setting(CURRICULUM, run_name("audio2mixture"))),
    ("refined KB vs large KB (generative pair-to-pair)", P2P, Setting(CURRICULUM, run_name(kb="large"))),
    ("curriculum vs RAFT-only (generative pair-to-pair)", P2P, Setting("raft_only", run_name())),
    ("curriculum vs stage 1 alone (generative pair-to-pair)", P2P, Setting("stage1", run_name())),
    ("W 0.5 vs W 0.1", P2P, Setting(CURRICULUM, run_name(weight=0.1))),
    ("W 0.5 vs W 0.9", P2P, Setting(CURRICULUM, run_name(weight=0.9))),
    ("top-4 (max_examples) vs top-1", P2P, Setting(CURRICULUM, run_name(top_k=1))),
)
RESCORING = "rescoring"  # the `rescoring` stage's folder: its runs without rescoring are those of `evaluate`
RESCORED_P2P = Setting(RESCORING, rescored_name(run_name()))
RESCORED_BOTH = Setting(RESCORING, rescored_name(run_name(), query=True))  # its zero-shot text query rescored too
# the field's claims since the paper: CLAP rescoring (SLAM-AAC's CLAP-Refine), the progressive schedule (MQ-Cap)
FIELD_COMPARISONS: tuple[tuple[str, Setting, Setting], ...] = (
    ("CLAP rescoring vs none (generative pair-to-pair)", RESCORED_P2P, Setting(RESCORING, run_name())),
    ("CLAP rescoring of both passes vs none (generative pair-to-pair)", RESCORED_BOTH, Setting(RESCORING, run_name())),
    (
        "CLAP rescoring vs none (zero-shot)",
        Setting(RESCORING, rescored_name("zero-shot")),
        Setting(RESCORING, "zero-shot"),
    ),
    (
        "CLAP rescoring vs beam search alone (generative pair-to-pair)",
        RESCORED_P2P,
        Setting(RESCORING, rescored_name(run_name(), weight=0.0)),
    ),
    ("CLAP rescoring of both passes vs the final pass only (generative pair-to-pair)", RESCORED_BOTH, RESCORED_P2P),
    ("progressive schedule vs curriculum (generative pair-to-pair)", Setting("progressive", run_name()), P2P),
    ("progressive schedule vs curriculum (zero-shot)", Setting("progressive", "zero-shot"), ZERO_SHOT),
)
WHOLE_LM = "context_ablations/whole_lm"  # the `whole_lm` variant's evaluation (`context_ablations.evaluate_variant`)
# what the recipe's trainable set (IA3 alone, the LM frozen) costs against the whole LM decoder of earlier rounds
TRAINABLE_SET_COMPARISONS: tuple[tuple[str, Setting, Setting], ...] = tuple(
    (f"IA3 alone (the recipe) vs the whole LM decoder ({label})", setting, Setting(WHOLE_LM, setting.name))
    for label, setting in (("zero-shot", ZERO_SHOT), ("audio-to-audio", AUDIO2AUDIO), ("generative pair-to-pair", P2P))
)


def read_records(path: Path) -> dict[str, dict]:
    """The captioned records of a predictions file, by audio_id."""
    return {record["audio_id"]: record for record in read_predictions(path) if "caption" in record}


def item_scores(records: dict[str, dict], events: dict[str, tuple[str, ...]]) -> dict[str, dict[str, float]]:
    """Per item of a predictions file's records (`read_records`): its sentence CIDEr-D and 1.0 / 0.0 for naming at
    least one and all of its events."""
    ids = sorted(records)
    scores = compute_caption_metrics(
        [records[i]["caption"] for i in ids], [records[i]["references"] for i in ids], metrics=["cider_d"]
    )
    cider = scores.sentence["cider_d"]
    named = {item: events_named(records[item]["caption"], events[item]) for item in ids}
    return {
        item: {
            "cider_d": float(cider[position]),
            "an_event_named": float(any(named[item])),
            "both_named": float(all(named[item])),
        }
        for position, item in enumerate(ids)
    }


def paired_files(better: Path, other: Path, run: Path) -> dict[str, tuple[np.ndarray, np.ndarray]] | None:
    """Per metric, two predictions files' scores on the items both captioned, with `run`'s mixtures' events (None
    when either file is missing).

    Raises:
        ValueError: an item has other references in the two files (the files caption different test sets).
    """
    if not (better.is_file() and other.is_file()):
        return None
    events = mixture_events(run / "corpus" / "mixtures")
    records_a, records_b = read_records(better), read_records(other)
    a, b = item_scores(records_a, events), item_scores(records_b, events)
    common = sorted(set(a) & set(b))
    for item in common:
        if records_a[item]["references"] != records_b[item]["references"]:
            raise ValueError(f"{item} has other references in {better} than in {other}: not the same test items")
    return {m: (np.array([a[i][m] for i in common]), np.array([b[i][m] for i in common])) for m in METRICS}


def paired_items(run: Path, better: Setting, other: Setting) -> dict[str, tuple[np.ndarray, np.ndarray]] | None:
    """Per metric, the two settings' scores on the items both captioned (None when either file is missing)."""
    return paired_files(better.path(run), other.path(run), run)


CLAIM_VERDICTS = ("reproduces", "does not", "cannot tell at this scale")
BASELINE_VERDICTS = ("better", "worse", "cannot tell at this scale")


def verdict(low: float, high: float, words: tuple[str, str, str] = CLAIM_VERDICTS) -> str:
    """`words[0]` when the interval lies above zero, `words[1]` below it, `words[2]` when it holds zero."""
    if low > 0:
        return words[0]
    if high < 0:
        return words[1]
    return words[2]


def compare(
    runs: Sequence[Path],
    resamples: int = 2000,
    comparisons: Sequence[tuple[str, Setting, Setting]] = COMPARISONS + FIELD_COMPARISONS + TRAINABLE_SET_COMPARISONS,
) -> list[dict]:
    """Every comparison (the paper's and the field's) in each run and pooled over the runs (items paired within a
    run); those no run has both files of are left out."""
    rows = []
    for claim, better, other in comparisons:
        per_run = [paired_items(run, better, other) for run in runs]
        found = [(run, items) for run, items in zip(runs, per_run, strict=True) if items is not None]
        if found:
            settings = {"claim": claim, "better": better._asdict(), "other": other._asdict()}
            rows.append(settings | summary(found, resamples))
    return rows


def summary(found: Sequence[tuple[Path, dict]], resamples: int, words: tuple[str, str, str] = CLAIM_VERDICTS) -> dict:
    """Per metric, each run's paired difference and the pooled one with its interval and verdict."""
    row: dict = {"runs": [str(run) for run, _ in found]}
    for metric in METRICS:
        seeds = [paired_bootstrap(*items[metric], resamples=resamples, seed=0) for _, items in found]
        pooled_a = np.concatenate([items[metric][0] for _, items in found])
        pooled_b = np.concatenate([items[metric][1] for _, items in found])
        difference, low, high = paired_bootstrap(pooled_a, pooled_b, resamples=resamples, seed=0)
        row[metric] = {
            "per_run": [list(map(float, seed)) for seed in seeds],
            "pooled": [float(difference), float(low), float(high)],
            "items": int(len(pooled_a)),
            "verdict": verdict(low, high, words),
        }
    return row


# the curriculum model's settings that `--baseline` compares between two sets of runs
RUN_SETTINGS: tuple[tuple[str, Setting], ...] = (
    ("zero-shot", ZERO_SHOT),
    ("audio-to-audio", AUDIO2AUDIO),
    ("audio-to-mixture", Setting(CURRICULUM, run_name("audio2mixture"))),
    ("generative pair-to-pair", P2P),
    ("generative pair-to-pair, W 0.9", Setting(CURRICULUM, run_name(weight=0.9))),
)


def compare_with_baselines(runs: Sequence[Path], baselines: Sequence[Path], resamples: int = 2000) -> list[dict]:
    """Each of `RUN_SETTINGS` in `runs[i]` against the same setting in `baselines[i]` (the same seed and test
    mixtures, a recipe changed), per run and pooled."""
    if len(runs) != len(baselines):
        raise ValueError(f"{len(runs)} runs for {len(baselines)} baseline runs: give one baseline per run")
    rows = []
    for label, setting in RUN_SETTINGS:
        per_run = [
            paired_files(setting.path(run), setting.path(base), run) for run, base in zip(runs, baselines, strict=True)
        ]
        found = [(run, items) for run, items in zip(runs, per_run, strict=True) if items is not None]
        if found:
            name = setting.name.format(**run_values(runs[0]))
            claim = f"{label if label == name else f'{label} ({name})'}: these runs vs the baselines"
            settings = {"claim": claim, "better": setting._asdict(), "baselines": list(map(str, baselines))}
            rows.append(settings | summary(found, resamples, BASELINE_VERDICTS))
    return rows


def _difference(values: Sequence[float], scale: float, digits: int) -> str:
    """`difference [low, high]` of a pooled (difference, low, high), times `scale`."""
    difference, low, high = (scale * value for value in values)
    return f"{difference:+.{digits}f} [{low:+.{digits}f}, {high:+.{digits}f}]"


def markdown(rows: list[dict]) -> str:
    """The claims table: per comparison, the pooled difference [95 % interval] of CIDEr-D and of naming an event and
    both events (percentage points), each seed's difference, and the verdicts."""
    lines = [
        "| claim (better vs other) | items | CIDEr-D difference [95 %] | per seed | verdict "
        "| an event named, points [95 %] | per seed | verdict | both named, points [95 %] | per seed | verdict |",
        "|---|---:|---:|---|---|---:|---|---|---:|---|---|",
    ]
    for row in rows:
        cells = [row["claim"], str(row["cider_d"]["items"])]
        for metric, scale, digits in (("cider_d", 1, 3), ("an_event_named", 100, 1), ("both_named", 100, 1)):
            result = row[metric]
            seeds = ", ".join(f"{scale * seed[0]:+.{digits}f}" for seed in result["per_run"])
            cells += [_difference(result["pooled"], scale, digits), seeds, result["verdict"]]
        lines.append(f"| {' | '.join(cells)} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m recipes.mini.local.claims", description=__doc__.split("\n\n")[0])
    parser.add_argument("runs", nargs="+", type=Path, help="mini run folders (one per seed), evaluated")
    parser.add_argument("--output", type=Path, required=True, help="the markdown table (a .json beside it)")
    parser.add_argument("--resamples", type=int, default=2000)
    parser.add_argument(
        "--baseline",
        nargs="+",
        type=Path,
        help="runs of another recipe, one per run (same seeds and test mixtures): compare the curriculum model's "
        "settings of the runs against theirs instead of the claims",
    )
    args = parser.parse_args(argv)
    if args.baseline:
        rows = compare_with_baselines(args.runs, args.baseline, args.resamples)
    else:
        rows = compare(args.runs, args.resamples)
    args.output.write_text(markdown(rows))
    args.output.with_suffix(".json").write_text(json.dumps(rows, indent=2))
    print(f"{len(rows)} comparisons: {args.output}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
