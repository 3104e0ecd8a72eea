"""The prompt budget of a generate call: prompts plus the tokens to generate must fit the LM's context
(`text_config.max_position_embeddings`). Retrieved captions are cut to `config.max_example_caption_tokens`, pass-2
prompts that still overflow lose their lowest-ranked examples, and one warning names the KB rows cut or dropped."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
from transformers import BatchFeature, GenerationConfig, PreTrainedConfig
from transformers.utils import logging

from .processing_paircap import PairCapProcessor

logger = logging.get_logger(__name__)
LISTED_ROWS = 20  # KB rows a warning names at most


def new_token_count(kwargs: Mapping[str, Any], generation_config: GenerationConfig) -> int:
    """The tokens a generate call adds at most: its `max_new_tokens`, else its generation config's; 0 when only
    `max_length` (prompt included) bounds it."""
    config = kwargs.get("generation_config") or generation_config
    value = kwargs.get("max_new_tokens", getattr(config, "max_new_tokens", None))
    return int(value or 0)


def context_size(config: PreTrainedConfig) -> int | None:
    """The LM's positions (`text_config.max_position_embeddings`); None for an LM whose config names none."""
    return getattr(config.text_config, "max_position_embeddings", None)


def prompt_lengths(input_ids: torch.Tensor, attention_mask: torch.Tensor | None) -> list[int]:
    """The tokens of each prompt, padding left out."""
    if attention_mask is None:
        return [input_ids.shape[1]] * input_ids.shape[0]
    return attention_mask.sum(dim=1).tolist()


def check_prompts_fit(lengths: Sequence[int], context: int | None, new_tokens: int, what: str = "prompt") -> None:
    """Raise a ValueError naming the first prompt whose tokens plus `new_tokens` exceed `context`."""
    if context is None:
        return
    for row, length in enumerate(lengths):
        if length + new_tokens > context:
            raise ValueError(
                f"{what} {row} takes {length} tokens and max_new_tokens={new_tokens} more: {length + new_tokens} "
                f"exceed the language model's context of {context} positions (text_config.max_position_embeddings); "
                "use shorter or fewer audio segments, or a lower max_new_tokens"
            )


def cut_captions(
    processor: PairCapProcessor, examples: list[list[dict]], pair_ids: list[list[str]], max_tokens: int | None
) -> list[str]:
    """Cut each example's caption to `max_tokens` LM tokens in place (`PairCapProcessor.truncate_caption`); returns
    the pair ids of the captions cut."""
    if max_tokens is None:
        return []
    cut = []
    for query_examples, query_ids in zip(examples, pair_ids, strict=True):
        for example, pair_id in zip(query_examples, query_ids, strict=True):
            caption = processor.truncate_caption(example["caption"], max_tokens)
            if caption != example["caption"]:
                example["caption"] = caption
                cut.append(pair_id)
    return cut


def fit_examples(
    processor: PairCapProcessor, queries: list[dict], examples: list[list[dict]], max_prompt_length: int | None
) -> tuple[BatchFeature, list[int]]:
    """
    The processor's inputs for `queries` with their `examples`, each prompt keeping its best-ranked examples that fit
    in `max_prompt_length` tokens (a prompt over it loses its last example, and the batch is built again). Returns
    the inputs (torch tensors, on the CPU unless the tokens were elsewhere) and the examples kept per query. A prompt
    over `max_prompt_length` without any example raises a ValueError.
    """
    kept = [len(query_examples) for query_examples in examples]
    while True:
        kept_examples = [query_examples[:count] for query_examples, count in zip(examples, kept, strict=True)]
        inputs = processor(audio=queries, examples=kept_examples, return_tensors="pt")
        if max_prompt_length is None:
            return inputs, kept
        lengths = prompt_lengths(inputs["input_ids"], inputs["attention_mask"])
        over = [row for row, length in enumerate(lengths) if length > max_prompt_length]
        if not over:
            return inputs, kept
        for row in over:
            if kept[row] == 0:
                raise ValueError(
                    f"query {row}: its pass-2 prompt takes {lengths[row]} tokens without any retrieved pair, over "
                    f"the {max_prompt_length} the LM's context leaves after max_new_tokens; lower max_new_tokens"
                )
            kept[row] -= 1


def warn_rows(
    cut: Sequence[str], dropped: Sequence[str], max_caption_tokens: int | None, max_prompt_length: int | None
) -> None:
    """One warning naming the KB rows (pair ids) whose captions were cut, and those dropped from prompts."""
    parts = []
    if cut:
        parts.append(
            f"cut the captions of KB rows {listed(cut)} to {max_caption_tokens} tokens "
            "(config.max_example_caption_tokens)"
        )
    if dropped:
        parts.append(
            f"dropped KB rows {listed(dropped)} from pass-2 prompts, which hold at most {max_prompt_length} tokens "
            "in the LM's context after max_new_tokens"
        )
    if parts:
        logger.warning("PairCap prompt budget: " + "; ".join(parts))


def listed(pair_ids: Sequence[str]) -> str:
    """Distinct pair ids in order, at most `LISTED_ROWS` of them named."""
    unique = list(dict.fromkeys(pair_ids))
    named = ", ".join(repr(pair_id) for pair_id in unique[:LISTED_ROWS])
    return named + (f" and {len(unique) - LISTED_ROWS} more" if len(unique) > LISTED_ROWS else "")


__all__ = [
    "check_prompts_fit",
    "context_size",
    "cut_captions",
    "fit_examples",
    "new_token_count",
    "prompt_lengths",
    "warn_rows",
]
