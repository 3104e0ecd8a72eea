"""The mini recipe's scales (how much data, how many steps): `conf/scales/<name>.yaml`, read at run time."""

from __future__ import annotations

from dataclasses import dataclass, fields
from pathlib import Path

import yaml

CONF = Path(__file__).resolve().parents[1] / "conf"


@dataclass(frozen=True)
class MiniScale:
    """How much of everything: the full run, `--quick` and the release differ only here (`conf/scales/full.yaml` says
    what each field is)."""

    name: str
    clips_per_split: int | None
    train_mixtures: int
    validation_mixtures: int
    test_mixtures: int
    zero_shot_test_mixtures: int
    noisy_mixtures: int
    text_captions: int | None
    clap_steps: int
    clap_augmented_takes: int
    clap_audio_steps: int
    clap_audio_mixtures: int
    lm_steps: int
    stage1_steps: int
    phase1_steps: int
    phase2_steps: int
    clap_batch_size: int
    lm_batch_size: int
    batch_size: int
    num_workers: int
    max_examples: int
    progressive_schedule: tuple[int, ...]
    weight_sweep: tuple[float, ...]
    top_k_sweep: tuple[int, ...]
    max_new_tokens: int
    rescore_candidates: int
    fit_mixtures: int
    ablations: bool
    novel_classes: int | None
    context_variants: tuple[str, ...] | None


# each field's type (its annotation): what its YAML value must be, and how an error says so
VALUE_CHECKS = {
    "int": (lambda v: type(v) is int, "a whole number"),
    "int | None": (lambda v: v is None or type(v) is int, "a whole number or null"),
    "bool": (lambda v: type(v) is bool, "true or false"),
    "tuple[float, ...]": (
        lambda v: type(v) is list and v and all(type(x) in (int, float) for x in v),
        "a list of numbers",
    ),
    "tuple[int, ...]": (lambda v: type(v) is list and v and all(type(x) is int for x in v), "a list of whole numbers"),
    "tuple[str, ...] | None": (
        lambda v: v is None or (type(v) is list and v and all(type(x) is str for x in v)),
        "a list of names or null",
    ),
}


def scale_names() -> list[str]:
    """The scales in `conf/scales/`, by name."""
    return sorted(path.stem for path in (CONF / "scales").glob("*.yaml"))


def load_scale(name: str) -> MiniScale:
    """The scale `conf/scales/<name>.yaml`, which must give every field of `MiniScale` but its name.

    Raises:
        ValueError: no such scale, or a field missing, unknown or of the wrong type (naming the file).
    """
    path = CONF / "scales" / f"{name}.yaml"
    if not path.is_file():
        raise ValueError(f"{path}: no such scale (the scales: {', '.join(scale_names())})")
    values = yaml.safe_load(path.read_text())
    if not isinstance(values, dict):
        raise ValueError(f"{path}: expected one setting per line (NAME: VALUE), got {type(values).__name__}")
    kinds = {field.name: field.type for field in fields(MiniScale) if field.name != "name"}
    missing, unknown = sorted(set(kinds) - set(values)), sorted(set(values) - set(kinds))
    problems = [
        f"{what} {keys}" for what, keys in (("missing settings", missing), ("unknown settings", unknown)) if keys
    ]
    if problems:
        raise ValueError(f"{path}: {'; '.join(problems)}")
    for key, kind in kinds.items():
        check, expected = VALUE_CHECKS[kind]
        if not check(values[key]):
            raise ValueError(f"{path}: {key} must be {expected}, got {values[key]!r}")
    return MiniScale(name=name, **{key: tuple(v) if isinstance(v, list) else v for key, v in values.items()})
