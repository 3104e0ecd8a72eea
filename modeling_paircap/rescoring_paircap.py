"""CLAP-Refine (SLAM-AAC): decode several candidate captions per query and keep the one whose combined score

    λ · cos(a_q, t_c) + (1 − λ) · LM score

is best, where a_q is the query's CLAP audio embedding, t_c the CLAP text embedding of the candidate and the LM score
its length-normalised log-probability. The candidates are the `num_candidates` best hypotheses of one beam search
(`num_beams = max(num_candidates, num_beams)`, `num_return_sequences = num_candidates`); the LM score is the beam
search's own sequence score: the sum of its token log-probabilities divided by its length ** `length_penalty` (1.0 by
default: the mean token log-probability). The CLAP text tower embeds every candidate of a batch in one pass.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import torch

from .prompt_prefix_paircap import generation_setting
from .rescore_methods_paircap import check_rescoring


@dataclass(frozen=True)
class RescoreSettings:
    """A `generate` call's rescoring: candidates per query, the weight λ of the CLAP similarity, and whether the
    zero-shot pass (the text query of generative pair-to-pair retrieval) is rescored too."""

    num_candidates: int
    weight: float
    query: bool


@dataclass
class RescoredCandidates:
    r"""
    chosen (`torch.LongTensor` of shape `(batch,)`): the index of each query's chosen candidate.
    sequences (`torch.LongTensor` of shape `(batch, length)`): the chosen candidates' rows of the generate output.
    captions (`list[list[str]]`): per query, its candidates decoded, best beam first.
    scores, clap_scores, lm_scores (`torch.Tensor` of shape `(batch, num_candidates)`): the combined score, the CLAP
        cosine similarity with the query audio and the length-normalised LM log-probability of every candidate.
    """

    chosen: torch.LongTensor
    sequences: torch.LongTensor
    captions: list[list[str]]
    scores: torch.Tensor
    clap_scores: torch.Tensor
    lm_scores: torch.Tensor


def rescore_settings(
    model,
    method: str | None,
    num_candidates: int | None,
    weight: float | None,
    query: bool | None,
    kwargs: Mapping[str, Any],
) -> RescoreSettings | None:
    """The checked rescoring of a `generate` call, its arguments defaulting to `model.config`'s (None: off), refusing
    decoding it cannot rescore."""
    config, generation_config = model.config, model.generation_config
    method = config.rescore if method is None else method
    if method is None:
        return None
    num_candidates = config.num_candidates if num_candidates is None else num_candidates
    weight = config.rescore_weight if weight is None else weight
    check_rescoring(method, num_candidates, weight)
    if generation_setting(kwargs, generation_config, "do_sample"):
        raise ValueError("rescore='clap' ranks beam-search candidates: leave do_sample off")
    if (generation_setting(kwargs, generation_config, "num_return_sequences") or 1) > 1:
        raise ValueError("rescore='clap' returns one caption per query: leave num_return_sequences at 1")
    return RescoreSettings(num_candidates, weight, config.rescore_query if query is None else query)


def candidate_kwargs(kwargs: Mapping[str, Any], generation_config, num_candidates: int) -> dict:
    """Generation arguments decoding `num_candidates` beam hypotheses per query, with their sequence scores."""
    beams = generation_setting(kwargs, generation_config, "num_beams") or 1
    return {
        **kwargs,
        "num_beams": max(num_candidates, beams),
        "num_return_sequences": num_candidates,
        "return_dict_in_generate": True,
        "output_scores": True,
        "output_logits": False,
    }


def combined_scores(
    audio_embeds: torch.Tensor, text_embeds: torch.Tensor, lm_scores: torch.Tensor, weight: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """
    The combined scores `(batch, N)` and CLAP similarities of `batch * N` candidates (query-major): `audio_embeds`
    `(batch, d)` and `text_embeds` `(batch * N, d)` L2-normalised, `lm_scores` `(batch * N,)`.
    """
    batch = audio_embeds.shape[0]
    text = text_embeds.reshape(batch, -1, text_embeds.shape[-1]).float()
    clap = torch.einsum("bd,bnd->bn", audio_embeds.float().to(text.device), text)
    lm = lm_scores.reshape(batch, -1).float().to(clap.device)
    return weight * clap + (1.0 - weight) * lm, clap


def rescore_candidates(
    model, processor, output, audio_embeds: torch.Tensor, prompt_length: int, settings: RescoreSettings
) -> RescoredCandidates:
    """
    Keep each query's best candidate of `output` (a beam search's `num_candidates` sequences per query, with
    `sequences_scores`, from `candidate_kwargs`) by the combined score; the candidates' captions follow
    `prompt_length` prompt tokens, `processor` decodes them and CLAP-tokenizes them for `model.embed_texts`.
    """
    sequences, lm_scores = output.sequences, output.sequences_scores
    captions = processor.decode_captions(sequences, prompt_length)
    text_embeds = model.embed_texts(**processor.clap_text_inputs(captions).to(model.device))
    scores, clap = combined_scores(audio_embeds, text_embeds, lm_scores, settings.weight)
    chosen = scores.argmax(dim=1)
    n = settings.num_candidates
    rows = torch.arange(len(chosen), device=chosen.device) * n + chosen
    return RescoredCandidates(
        chosen=chosen,
        sequences=sequences[rows.to(sequences.device)],
        captions=[captions[i : i + n] for i in range(0, len(captions), n)],
        scores=scores,
        clap_scores=clap,
        lm_scores=lm_scores.reshape(len(chosen), n).float(),
    )


__all__ = [
    "RescoreSettings",
    "RescoredCandidates",
    "candidate_kwargs",
    "combined_scores",
    "rescore_candidates",
    "rescore_settings",
]
