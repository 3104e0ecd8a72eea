"""Text replay in stage 2: the language model's own objective, next-token loss on caption text, added to every
training batch's captioning loss (`text_replay_pairs`, `text_replay_weight`), so an LM whose weights train on captions
that never use some words (the mini recipe's novel classes) keeps them."""

from __future__ import annotations

from collections.abc import Callable

import torch

from paircap.caption_data import load_pairs
from paircap.training.config import TrainConfig
from paircap.training.pretraining_data import CaptionTextCollator, CaptionTextSet


class TextReplay:
    """A batch of caption texts drawn with torch's RNG (the loop seeds it per batch, so a resumed run draws the same
    texts), written with the run's `text_template` and tokenised by the captioner's tokenizer."""

    def __init__(self, cfg: TrainConfig, tokenizer):
        captions = load_pairs(cfg.text_replay_pairs)["caption"]
        self.texts = CaptionTextSet(captions, tokenizer, cfg.text_template, cfg.max_text_tokens, cfg.seed)
        self.collator = CaptionTextCollator(tokenizer)
        self.batch_size = cfg.text_replay_batch_size or cfg.per_device_batch_size
        self.weight = cfg.text_replay_weight

    def batch(self, device: torch.device) -> dict[str, torch.Tensor]:
        rows = torch.randint(len(self.texts), (self.batch_size,)).tolist()
        return {name: tensor.to(device) for name, tensor in self.collator([self.texts[row] for row in rows]).items()}

    def loss(self, captioning_loss: Callable) -> Callable:
        """`captioning_loss` plus `weight` x the replayed texts' loss, in training mode only (the validation loss stays
        the captioning loss)."""

        def loss(model, batch) -> torch.Tensor:
            value = captioning_loss(model, batch)
            if not model.training:
                return value
            return value + self.weight * model(**self.batch(batch["input_ids"].device)).loss

        return loss
