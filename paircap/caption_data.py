"""Caption datasets for training and evaluation: loading them, and grouping an evaluation split's references."""

from dataclasses import dataclass
from pathlib import Path

from datasets import Dataset, concatenate_datasets, load_dataset, load_from_disk


def load_pairs(sources: list[str]) -> Dataset:
    """Caption datasets from `save_to_disk` folders, folders of parquet files, or hub dataset ids (split train)."""
    parts = []
    for source in sources:
        path = Path(source)
        if (path / "dataset_info.json").is_file() or (path / "state.json").is_file():
            parts.append(load_from_disk(str(path)))
        elif path.is_dir():
            files = sorted(str(p) for p in path.rglob("*.parquet"))
            if not files:
                raise FileNotFoundError(f"{path}: neither a save_to_disk folder nor a folder of parquet files")
            parts.append(load_dataset("parquet", data_files=files, split="train"))
        else:
            parts.append(load_dataset(source, split="train"))
    return concatenate_datasets(parts) if len(parts) > 1 else parts[0]


@dataclass
class EvaluationItem:
    """One clip of an evaluation split with every reference caption it has (Clotho: 5, AudioCaps test: 5)."""

    audio_id: str
    audio: dict
    references: list[str]


def group_references(pairs: Dataset) -> list[EvaluationItem]:
    """One item per clip, in first-appearance order; rows without audio are skipped."""
    items: dict[str, EvaluationItem] = {}
    for row in pairs.select_columns(["audio_id", "audio", "caption"]):
        if row["audio"] is None:
            continue
        item = items.setdefault(row["audio_id"], EvaluationItem(row["audio_id"], row["audio"], []))
        item.references.append(row["caption"])
    return list(items.values())
