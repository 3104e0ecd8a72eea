"""Fast column reads of a caption-pair dataset: the KB jobs and the training data read ids, captions and paths so."""

from datasets import Dataset


def column(dataset: Dataset, name: str) -> list:
    """One column as a Python list, read through Arrow (no row decoding, no audio decoded)."""
    return dataset.with_format("arrow")[name].to_pylist()
