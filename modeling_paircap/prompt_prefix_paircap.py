"""The shared prompt prefix: every PairCap prompt of a batch, in both passes, starts with the same system text. Its
KV cache is computed once (batch 1, cached on the model by its token ids and the language model's weights state,
device and dtype) and expanded to the batch. Generation pads on the left, so each row is laid out as prefix, padding,
rest: the attention mask hides the padding in the middle and the position ids (from the mask's cumulative sum) stay
those of the left-padded prompt, so every token sees the same keys at the same positions as without sharing."""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import torch
from transformers import DynamicCache, PreTrainedModel

from .fingerprints_paircap import weights_state

CACHED_PREFIXES = 4  # prefixes a model keeps (e.g. the zero-shot and the retrieval prompts' own, when they differ)
UNSHARED_ARGUMENTS = ("past_key_values", "assistant_model", "prompt_lookup_num_tokens", "prefill_chunk_size")


def generation_setting(kwargs: Mapping[str, Any], generation_config, name: str) -> Any:
    """A generate argument as `generate` sees it: the call's, else its `generation_config`'s, else the model's."""
    if name in kwargs:
        return kwargs[name]
    config = kwargs.get("generation_config") or generation_config
    return getattr(config, name, None)


def can_share(kwargs: Mapping[str, Any], generation_config) -> bool:
    """Whether a generate call runs on a dynamic cache it may start pre-filled: no cache of its own, no static or
    quantized cache implementation, no assisted decoding, no chunked prefill, and caching on."""
    if any(generation_setting(kwargs, generation_config, name) is not None for name in UNSHARED_ARGUMENTS):
        return False
    if generation_setting(kwargs, generation_config, "use_cache") is False:
        return False
    return generation_setting(kwargs, generation_config, "cache_implementation") in (None, "dynamic")


def shared_prefix_length(
    input_ids: torch.Tensor, attention_mask: torch.Tensor | None, stop_ids: torch.Tensor
) -> tuple[int, torch.Tensor]:
    """
    The tokens every prompt starts with (after its left padding), before the first of `stop_ids` (the audio
    placeholders, whose embeddings differ per prompt), leaving each prompt one token of its own; and each row's
    padding. 0 when some row is not left-padded (its mask is not zeros then ones).
    """
    batch, length = input_ids.shape
    if attention_mask is None:
        pads = torch.zeros(batch, dtype=torch.long, device=input_ids.device)
    else:
        pads = length - attention_mask.sum(dim=1).long()
        positions = torch.arange(length, device=input_ids.device)
        if not torch.equal(attention_mask.bool(), positions >= pads[:, None]):
            return 0, pads
    shortest = length - int(pads.max())
    if shortest < 2:
        return 0, pads
    aligned = input_ids.gather(1, pads[:, None] + torch.arange(shortest - 1, device=input_ids.device))
    same = (aligned == aligned[:1]).all(dim=0) & ~torch.isin(aligned[0], stop_ids.to(aligned.device))
    return int(same.long().cumprod(dim=0).sum()), pads


@dataclass
class PrefixLayout:
    """A batch laid out as shared prefix, padding, rest (`order` gathers each row's positions), with its mask."""

    order: torch.Tensor
    attention_mask: torch.Tensor
    length: int

    @classmethod
    def of(cls, pads: torch.Tensor, length: int, prefix: int) -> PrefixLayout:
        positions = torch.arange(length, device=pads.device)
        prefix_part = pads[:, None] + positions[:prefix]
        pad_part = positions[None, : length - prefix].expand(len(pads), -1)
        # a row's padding comes from its first positions, its rest after its prefix
        rest = torch.where(pad_part < pads[:, None], pad_part, pad_part + prefix)
        order = torch.cat([prefix_part, rest], dim=1)
        mask = torch.cat(
            [torch.ones_like(prefix_part), (rest >= pads[:, None] + prefix).long()],
            dim=1,
        )
        return cls(order, mask, length)

    def gather(self, values: torch.Tensor) -> torch.Tensor:
        """Rows of `(batch, length, ...)` values in the shared-prefix layout."""
        index = self.order.to(values.device)
        if values.ndim == 3:
            index = index[:, :, None].expand(-1, -1, values.shape[-1])
        return values.gather(1, index)

    def restore(self, output, input_ids: torch.Tensor):
        """A generate output whose prompts are the caller's again (left padding first), the new tokens after them."""
        sequences = output if isinstance(output, torch.Tensor) else output.sequences
        copies = sequences.shape[0] // input_ids.shape[0]
        prompts = input_ids.to(sequences.device).repeat_interleave(copies, dim=0)
        sequences = torch.cat([prompts, sequences[:, self.length :]], dim=1)
        if isinstance(output, torch.Tensor):
            return sequences
        output.sequences = sequences
        return output


class PromptPrefixCache:
    """The KV caches (batch 1) of a model's recent prompt prefixes, valid while its language model's weights, device
    and dtype stay the same."""

    def __init__(self):
        self._entries: OrderedDict[tuple[int, ...], tuple[tuple, DynamicCache]] = OrderedDict()

    def prefix_cache(self, model: PreTrainedModel, prefix_ids: torch.Tensor) -> DynamicCache:
        """The batch-1 cache of `prefix_ids` (1-d), computed by the language model's decoder unless still cached."""
        embeddings = model.get_input_embeddings().weight
        state = (weights_state(model.language_model), embeddings.device, embeddings.dtype)
        key = tuple(prefix_ids.tolist())
        entry = self._entries.get(key)
        if entry is not None and entry[0] == state:
            self._entries.move_to_end(key)
            return entry[1]
        ids = prefix_ids[None].to(embeddings.device)
        cache = DynamicCache(config=model.config.text_config)
        model.get_decoder()(inputs_embeds=model.get_input_embeddings()(ids), past_key_values=cache, use_cache=True)
        self._entries[key] = (state, cache)
        self._entries.move_to_end(key)
        while len(self._entries) > CACHED_PREFIXES:
            self._entries.popitem(last=False)
        return cache

    def clear(self) -> None:
        self._entries.clear()


def expanded_cache(model: PreTrainedModel, prefix: DynamicCache, batch: int) -> DynamicCache:
    """A fresh dynamic cache holding `prefix`'s keys and values for each of `batch` rows."""
    cache = DynamicCache(config=model.config.text_config)
    for index, layer in enumerate(prefix.layers):
        cache.update(layer.keys.expand(batch, -1, -1, -1), layer.values.expand(batch, -1, -1, -1), index)
    return cache


def shared_prefix_inputs(
    model: PreTrainedModel,
    input_ids: torch.Tensor,
    inputs_embeds: torch.Tensor,
    attention_mask: torch.Tensor | None,
    kwargs: Mapping[str, Any],
) -> tuple[dict, PrefixLayout] | None:
    """
    The `generate` inputs of a batch starting from its shared prefix's cache (`input_ids`, `inputs_embeds` and
    `attention_mask` in the prefix-padding-rest layout, `past_key_values`), and the layout that restores the output;
    None when the call cannot share (`can_share`, a model in training mode, no common prefix).
    """
    if model.training or not can_share(kwargs, model.generation_config):
        return None
    stop_ids = torch.tensor([model.config.audio_token_id, model.config.long_audio_token_id])
    prefix, pads = shared_prefix_length(input_ids, attention_mask, stop_ids)
    if prefix == 0:
        return None
    first_row = int(pads[0])
    cache = model.prompt_prefix_cache.prefix_cache(model, input_ids[0, first_row : first_row + prefix])
    copies = max(
        generation_setting(kwargs, model.generation_config, "num_beams") or 1,
        generation_setting(kwargs, model.generation_config, "num_return_sequences") or 1,
    )
    layout = PrefixLayout.of(pads, input_ids.shape[1], prefix)
    inputs = {
        "input_ids": layout.gather(input_ids),
        "inputs_embeds": layout.gather(inputs_embeds),
        "attention_mask": layout.attention_mask.to(input_ids.device),
        "past_key_values": expanded_cache(model, cache, len(input_ids) * copies),
    }
    return inputs, layout


__all__ = ["PromptPrefixCache", "can_share", "shared_prefix_inputs", "shared_prefix_length"]
