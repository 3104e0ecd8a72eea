"""How the mini recipe trains: each training stage's settings come from `conf/train/<stage>.yaml` and the run (its
folders, seed and scale); and the paper's captioner stages (§3.2, §4.1): stage 1, stage 2's two phases, RAFT-only."""

from __future__ import annotations

from dataclasses import fields
from pathlib import Path

import yaml

from paircap.training.config import TrainConfig
from paircap.training.loop import train
from recipes.mini.local.layout import MiniRun
from recipes.mini.local.scales import CONF


def stage_settings(name: str) -> dict:
    """The settings of `conf/train/<name>.yaml` (TrainConfig fields).

    Raises:
        ValueError: the file is no mapping, or sets something TrainConfig has not (naming the file).
    """
    path = CONF / "train" / f"{name}.yaml"
    settings = yaml.safe_load(path.read_text())
    if not isinstance(settings, dict):
        raise ValueError(f"{path}: expected one setting per line (NAME: VALUE), got {type(settings).__name__}")
    unknown = sorted(set(settings) - {field.name for field in fields(TrainConfig)})
    if unknown:
        raise ValueError(f"{path}: not settings of a training run (paircap/training/config.py): {unknown}")
    return settings


def train_stage(run: MiniRun, name: str, output: Path | None = None, overrides: dict | None = None, **values) -> None:
    """
    Train stage `name` with the settings of `conf/train/<name>.yaml` (with `overrides` over them), `values` (its
    starting point, data, steps and batch size) and the run's folder, seed and workers, into `output` (default: the
    run's `<name>/`), writing the whole config to `<output>/config.yaml` first (`train_accelerate.py --config` runs it
    again). It resumes: an interrupted stage continues from its last checkpoint.

    Raises:
        ValueError: the stage's file sets what the run fills in (naming the file).
    """
    steps = values["max_steps"]
    output = output or run.path(name)
    filled = {
        "output_dir": str(output),
        "seed": run.seed,
        "log_every": max(1, steps // 10),
        "eval_every": max(1, steps // 2),
        "save_every": max(1, steps // 4),
        **values,
    }
    settings = stage_settings(name)
    clash = sorted(set(settings) & set(filled))
    if clash:
        raise ValueError(f"{CONF / 'train' / name}.yaml: {clash} come from the run and its scale, not from this file")
    settings |= overrides or {}
    config = {"num_workers": run.scale.num_workers, **settings, **filled}  # a stage's file may set its own workers
    path = output / "config.yaml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    train(TrainConfig(**config, resume=True))


def train_captioner(
    run: MiniRun,
    name: str,
    start: Path,
    steps: int,
    max_examples: int,
    output: Path | None = None,
    **overrides,
) -> None:
    """A captioner stage on the captioners' training pairs (validated on their validation pairs, when the run has
    them): the training pairs less the novel classes (`novel_classes.py`); with retrieved pairs, no training neighbour
    shares a recording with its pair (the corpus's clip groups). `output` and `overrides` (settings over the stage's
    conf file) train a variant of stage `name`."""
    neighbours = {"clip_groups": str(run.clip_groups)} if max_examples else {}
    train_stage(
        run,
        name,
        output,
        overrides,
        model_name_or_path=str(start),
        train_pairs=[str(run.pairs("captioner_train"))],
        validation_pairs=run.validation_pairs("captioner_validation"),
        max_examples=max_examples,
        max_steps=steps,
        per_device_batch_size=run.scale.batch_size,
        **neighbours,
    )


def stage1(run: MiniRun) -> None:
    """Alignment, from the assembled release, without retrieved pairs."""
    train_captioner(run, "stage1", run.path("assembled"), run.scale.stage1_steps, 0)


def stage2_phase1(run: MiniRun) -> None:
    """RAFT from stage 1, without retrieved pairs (the curriculum's first half)."""
    train_captioner(run, "stage2_phase1", run.release("stage1"), run.scale.phase1_steps, 0)


def stage2_phase2(run: MiniRun) -> None:
    """RAFT from phase 1, with 0..max_examples retrieved pairs (the curriculum's second half)."""
    train_captioner(run, "stage2_phase2", run.release("stage2_phase1"), run.scale.phase2_steps, run.scale.max_examples)


def raft_only(run: MiniRun) -> None:
    """The training ablation: RAFT from stage 1 with retrieved pairs at once, for as many steps as both phases."""
    steps = run.scale.phase1_steps + run.scale.phase2_steps
    train_captioner(run, "raft_only", run.release("stage1"), steps, run.scale.max_examples)
