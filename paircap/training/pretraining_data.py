"""Training data of the stand-in stages for the pretrained parts: CLAP contrastive (audio, caption) batches and
caption-text batches for a causal language model.

They serve the mini recipe, which cannot download `laion/clap-htsat-unfused` or Vicuna, and domain adaptation at full
scale. Both datasets follow `CaptionTrainingSet`'s conventions: a bad clip gives None with a warning naming it (the
collator drops it), and every random choice is drawn from (seed, epoch, index) so a resumed run sees the same data.
"""

from __future__ import annotations

import re
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from datasets import Dataset
from transformers import BatchFeature

from datasets_scripts.columns import column
from modeling_paircap.audio_arrays_paircap import AudioInputError
from modeling_paircap.audio_loading_paircap import load_audio_file
from modeling_paircap.audio_windows_paircap import WindowedWaveform
from modeling_paircap.feature_extraction_paircap import TorchClapFeatures

CROP_WINDOWS = 3  # windows decoded of a long file, one of which each epoch's crop takes
KEYWORD_STOPWORDS = frozenset({
    "a", "an", "the", "is", "are", "was", "were", "be", "being", "been", "and", "or", "but", "of", "in", "on", "at",
    "to", "by", "for", "from", "with", "while", "as", "it", "its", "into", "onto", "over", "under", "then", "there",
    "also", "someone", "something", "some",
})  # fmt: skip

__all__ = [
    "CaptionTextCollator",
    "CaptionTextSet",
    "caption_keywords",
    "ClapPairCollator",
    "ClapPairSet",
    "LogMelAugmentation",
]


@dataclass(frozen=True)
class LogMelAugmentation:
    """
    Label-preserving changes to a clip's log-mel features, drawn per sample: a gain of up to +-`gain_db` (a shift of
    the dB features) and, with `time_shift`, a circular shift by a random number of frames (the window's content
    starts anywhere, as a repeat-padded clip does).
    """

    gain_db: float = 0.0
    time_shift: bool = False

    def __call__(self, features: torch.Tensor, rng: np.random.Generator) -> torch.Tensor:
        if self.gain_db:
            features = features + float(rng.uniform(-self.gain_db, self.gain_db))
        if self.time_shift:
            features = torch.roll(features, int(rng.integers(features.shape[-2])), dims=-2)
        return features


class ClapPairSet(torch.utils.data.Dataset):
    """
    (log-mel window, caption) samples for CLAP's contrastive loss, with the features `PairCapProcessor` computes at
    inference. A clip longer than the feature extractor's window (`max_length_s`, 10 s) gives one window at an
    offset drawn per (seed, epoch, index); shorter clips are repeat-padded, as at inference. A file longer than
    `CROP_WINDOWS` windows is decoded only at that many evenly spaced windows (memory stays three windows, whatever
    its length), and the draw picks one. `augmentation` then changes the features of each sample.

    With `cache_features`, the features of clips that fit one window are kept in memory after their first read
    (64 mels x 10 s: tens of KB each): for small corpora read in the main process (`num_workers` 0), where decoding
    and the STFT would otherwise cost more than the training step.
    """

    def __init__(
        self,
        pairs: Dataset,
        feature_extractor,
        seed: int = 0,
        augmentation: LogMelAugmentation | None = None,
        cache_features: bool = False,
        targets: dict[str, torch.Tensor] | None = None,
    ):
        missing = pairs.with_format("arrow")["audio"].is_null().to_numpy(zero_copy_only=False)
        if missing.any():
            raise ValueError(f"{int(missing.sum())} pairs have no audio (contrastive training needs it)")
        self.sampling_rate = int(feature_extractor.sampling_rate)
        self.window_samples = int(feature_extractor.nb_max_samples)
        self.seed = seed
        self.captions: list[str] = column(pairs, "caption")
        self.pair_ids: list[str] = column(pairs, "pair_id")
        self.sources: list[str] = column(pairs, "source")
        self._paths = [audio["path"] for audio in column(pairs, "audio")]
        self._epoch = torch.zeros((), dtype=torch.int64).share_memory_()  # read by DataLoader workers
        self.features = TorchClapFeatures(feature_extractor)
        self.augmentation = augmentation or LogMelAugmentation()
        self._cache: dict[str, torch.Tensor] | None = {} if cache_features else None
        self.targets = targets or {}
        for name, rows in self.targets.items():
            if len(rows) != len(self.captions):
                raise ValueError(f"targets {name!r} have {len(rows)} rows for {len(self.captions)} pairs")

    def __len__(self) -> int:
        return len(self.captions)

    def set_epoch(self, epoch: int) -> None:
        self._epoch.fill_(epoch)

    def __getitem__(self, index: int) -> dict[str, Any] | None:
        index = int(index)
        rng = np.random.default_rng([self.seed, int(self._epoch), index])
        path = self._paths[index]
        features = self._cache.get(path) if self._cache is not None else None
        if features is None:
            try:
                waveform = load_audio_file(
                    path, self.sampling_rate, window_samples=self.window_samples, max_windows=CROP_WINDOWS
                )
            except AudioInputError as error:
                warnings.warn(f"skipping pair {self.pair_ids[index]!r}: {error}", stacklevel=2)
                return None
            fits_one_window = len(waveform) <= self.window_samples
            features = self.log_mel(self.crop(waveform, rng))
            if self._cache is not None and fits_one_window:
                self._cache[path] = features
        targets = {name: rows[index] for name, rows in self.targets.items()}
        return {"input_features": self.augmentation(features, rng), "caption": self.captions[index], **targets}

    def crop(self, waveform: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """One window of a long file at a drawn offset (a decoded window of a very long one); short clips whole."""
        if isinstance(waveform, WindowedWaveform) and waveform.has_layout:  # a long file: only its windows decoded
            windows = waveform.windows()
            return np.array(windows[int(rng.integers(len(windows)))])
        if len(waveform) > self.window_samples:
            start = int(rng.integers(0, len(waveform) - self.window_samples + 1))
            return waveform[start : start + self.window_samples]
        return waveform

    def log_mel(self, window: np.ndarray) -> torch.Tensor:
        """`(1, frames, mels)` log-mel features of one repeat-padded window."""
        with torch.no_grad():
            padded, _ = self.features.pad_windows([window])
            return self.features(padded)[0]


class ClapPairCollator:
    """`ClapModel` inputs: the samples' log-mel features stacked and their captions tokenised, with their targets
    (every other key) stacked. Failed samples (None) are dropped; a batch where all failed gives None."""

    def __init__(self, tokenizer):
        self.tokenizer = tokenizer

    def __call__(self, items: Sequence[dict[str, Any] | None]) -> BatchFeature | None:
        items = [item for item in items if item is not None]
        if not items:
            return None
        input_features = torch.stack([item["input_features"] for item in items])
        text = self.tokenizer([item["caption"] for item in items], padding=True, truncation=True, return_tensors="pt")
        names = items[0].keys() - {"input_features", "caption"}
        targets = {name: torch.stack([item[name] for item in items]) for name in sorted(names)}
        return BatchFeature({"input_features": input_features, **text, **targets})


def caption_keywords(caption: str, rng: np.random.Generator) -> str:
    """The caption's content words (lower case, no punctuation or stop words) in a random order."""
    words = [word for word in re.findall(r"[a-z']+", caption.lower()) if word not in KEYWORD_STOPWORDS]
    return " ".join(words[i] for i in rng.permutation(len(words)))


class CaptionTextSet(torch.utils.data.Dataset):
    """
    Caption texts, each formatted with `template` (`"{caption}"` by default) and tokenised once, for next-token
    training of a causal language model; the tokenizer adds BOS, the collator appends EOS. A `{keywords}` field in the
    template gets the caption's content words, shuffled (`caption_keywords`, fixed by `seed` and the index): an LM
    trained from scratch on a fixed prompt learns to ignore the prompt, one trained to caption its prompt's keywords
    learns to read it, as an LM that is later given audio tokens in their place has to.
    """

    def __init__(
        self, captions: Sequence[str], tokenizer, template: str = "{caption}", max_length: int = 128, seed: int = 0
    ):
        if "{caption}" not in template:
            raise ValueError(f"text_template must contain '{{caption}}', got {template!r}")
        with_keywords = "{keywords}" in template  # else no caption is parsed for keywords
        texts = [
            template.format(
                caption=caption.strip(),
                keywords=caption_keywords(caption, np.random.default_rng([seed, index])) if with_keywords else "",
            )
            for index, caption in enumerate(captions)
        ]
        encoded = tokenizer(texts, truncation=True, max_length=max_length - 1)["input_ids"]
        self.input_ids = [np.asarray(ids, dtype=np.int64) for ids in encoded]
        self.lengths = [len(ids) + 1 for ids in self.input_ids]

    def __len__(self) -> int:
        return len(self.input_ids)

    def __getitem__(self, index: int) -> np.ndarray:
        return self.input_ids[int(index)]


class CaptionTextCollator:
    """Right-padded batches of `CaptionTextSet` samples with EOS appended; the loss covers every real token."""

    def __init__(self, tokenizer):
        if tokenizer.eos_token_id is None:
            raise ValueError("the language model's tokenizer has no eos token")
        self.eos = tokenizer.eos_token_id
        self.pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else self.eos

    def __call__(self, items: Sequence[np.ndarray]) -> BatchFeature:
        width = max(len(ids) for ids in items) + 1
        input_ids = torch.full((len(items), width), self.pad, dtype=torch.long)
        attention_mask = torch.zeros((len(items), width), dtype=torch.long)
        for row, ids in enumerate(items):
            input_ids[row, : len(ids)] = torch.from_numpy(ids)
            input_ids[row, len(ids)] = self.eos
            attention_mask[row, : len(ids) + 1] = 1
        labels = input_ids.masked_fill(attention_mask == 0, -100)
        return BatchFeature({"input_ids": input_ids, "attention_mask": attention_mask, "labels": labels})
