"""The `audio-captioning` pipeline: one clip in, its caption, zero-shot caption and retrieved neighbours out.

    from transformers import pipeline

    captioner = pipeline(model="org/paircap", trust_remote_code=True)  # the task comes from config.custom_pipelines
    captioner("clip.wav")  # {"caption": ..., "zero_shot_caption": ..., "neighbours": [{"caption", "score", ...}]}

A release records this class in `config.custom_pipelines` and ships this file beside the model code. It is Hugging
Face remote code: it imports only torch, numpy and transformers (and, for a `knowledge_base=` argument, the retriever
shipped beside it), and drives the model and processor it is given.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from transformers import Pipeline

TASK = "audio-captioning"
DEFAULT_MAX_NEW_TOKENS = 40  # as `paircap caption`
# the retrieval arguments of `PairCapForConditionalGeneration.generate` (top_k: retrieved pairs, not sampling)
RETRIEVAL_ARGUMENTS = ("retrieval_mode", "fusion_weight", "top_k", "max_pairs_per_clip")


class PairCapCaptioningPipeline(Pipeline):
    """
    Caption audio with a PairCap release. Inputs: a path, encoded bytes, a numpy array or torch tensor (with
    `sampling_rate=`), or an audio dict (`{"array"|"raw", "sampling_rate"}` or `{"path"}`); a list of them gives a
    list of results. Output per clip:

    - `caption`: the final caption;
    - `zero_shot_caption`: the caption without retrieved pairs (pass 1 of generative pair-to-pair retrieval; the
      caption itself when retrieval is off; None for modes that make no zero-shot pass);
    - `neighbours`: the retrieved pairs, best first, with `pair_id`, `audio_id`, `caption`, `row`, `score` (S),
      `audio_score` (S_A) and `text_score` (S_T); empty without retrieval;
    - `candidates`, with rescoring only: the final pass's candidate captions, best beam first, each with its combined
      `score`, `clap_score` and `lm_score` (the caption is the candidate of the highest `score`).

    Retrieval arguments as in `model.generate`: `retrieval_mode`, `fusion_weight` (W), `top_k` (pairs retrieved),
    `max_pairs_per_clip`, and `text_query` for `pair2pair`; `knowledge_base` (a folder or hub dataset id) retrieves
    from that KB instead of the model's, through a retriever with this pipeline's processor (loaded once per KB).
    Rescoring arguments as in `model.generate` (`rescore="clap"`, `num_candidates`, `rescore_weight`, `rescore_query`;
    default the model config's), with this pipeline's processor decoding the candidates. Other keyword arguments (or
    `generate_kwargs`) go to `generate`; `max_new_tokens` defaults to 40.
    """

    _load_processor = True
    _load_tokenizer = False
    _load_feature_extractor = False
    _load_image_processor = False

    def __init__(self, *args: Any, **kwargs: Any):
        self._retrievers: dict[str, Any] = {}  # knowledge base -> its retriever (`retriever_for`)
        super().__init__(*args, **kwargs)

    def __call__(self, inputs: Any, **kwargs: Any) -> dict | list[dict]:
        """Caption one clip (a dict) or a list of clips (a list of dicts, one clip per forward pass)."""
        if (kwargs.get("batch_size") or self._batch_size or 1) > 1:
            raise ValueError("the audio-captioning pipeline captions one clip per pass: leave batch_size at 1")
        return super().__call__(inputs, **kwargs)

    def _sanitize_parameters(
        self,
        sampling_rate: int | None = None,
        text_query: str | None = None,
        knowledge_base: str | None = None,
        generate_kwargs: dict | None = None,
        **kwargs: Any,
    ) -> tuple[dict, dict, dict]:
        kwargs.pop("local_files_only", None)  # `pipeline()` passes its hub arguments on; they are not generation ones
        preprocess: dict[str, Any] = {}
        if sampling_rate is not None:
            preprocess["sampling_rate"] = sampling_rate
        forward: dict[str, Any] = {name: kwargs.pop(name) for name in RETRIEVAL_ARGUMENTS if name in kwargs}
        if text_query is not None:
            forward["text_queries"] = [text_query]
        if knowledge_base is not None:
            forward["retriever"] = self.retriever_for(knowledge_base)
        generation = {**(generate_kwargs or {}), **kwargs}
        if generation:
            forward["generate_kwargs"] = generation
        return preprocess, forward, {}

    def preprocess(self, inputs: Any, sampling_rate: int | None = None) -> dict:
        if isinstance(inputs, dict) and "raw" in inputs:  # the ASR pipeline's dict form
            inputs = {"array": inputs["raw"], "sampling_rate": inputs.get("sampling_rate")}
        if isinstance(inputs, (list, tuple)):
            raise TypeError("one clip per item: pass a list of clips, not a clip given as a list")
        return dict(self.processor(audio=[inputs], sampling_rate=sampling_rate))

    def _forward(self, model_inputs: dict, generate_kwargs: dict | None = None, **retrieval: Any) -> dict:
        generation = dict(generate_kwargs or {})
        if "max_new_tokens" not in generation and "max_length" not in generation:
            generation["max_new_tokens"] = self.model.generation_config.max_new_tokens or DEFAULT_MAX_NEW_TOKENS
        if (generation.get("rescore") or self.model.config.rescore) is not None:
            generation["processor"] = self.processor  # decodes and CLAP-tokenizes the candidates
        output = self.model.generate(**model_inputs, return_dict_in_generate=True, **retrieval, **generation)
        retrieved = getattr(output, "retrieved_pairs", None)
        return {
            "sequences": output.sequences,
            "prompt_length": model_inputs["input_ids"].shape[1],
            "zero_shot_captions": getattr(output, "zero_shot_captions", None),
            "retrieved": retrieved,
            "candidates": candidates_of(output),
        }

    def retriever_for(self, knowledge_base: str):
        """A retriever over `knowledge_base` with this pipeline's processor, loaded on first use and kept."""
        from .retrieval_paircap import PairCapRetriever

        if str(knowledge_base) not in self._retrievers:
            retriever = PairCapRetriever.from_pretrained(knowledge_base, self.processor)
            retriever.check_model(self.model)
            self._retrievers[str(knowledge_base)] = retriever
        return self._retrievers[str(knowledge_base)]

    def postprocess(self, model_outputs: dict) -> dict:
        captions = self.processor.decode_captions(model_outputs["sequences"], model_outputs["prompt_length"])
        caption = captions[0]
        retrieved = model_outputs["retrieved"]
        rescored = {} if model_outputs["candidates"] is None else {"candidates": model_outputs["candidates"]}
        if retrieved is None:  # no retrieval ran: the caption is the zero-shot caption
            return {"caption": caption, "zero_shot_caption": caption, "neighbours": [], **rescored}
        zero_shot = model_outputs["zero_shot_captions"]
        return {
            "caption": caption,
            "zero_shot_caption": zero_shot[0] if zero_shot else None,
            "neighbours": [plain(pair) for pair in retrieved[0]],
            **rescored,
        }


def candidates_of(output) -> list[dict] | None:
    """The first query's rescored candidates (`caption`, `score`, `clap_score`, `lm_score`), None without rescoring."""
    if getattr(output, "candidates", None) is None:
        return None
    scores = {
        "score": output.candidate_scores[0],
        "clap_score": output.candidate_clap_scores[0],
        "lm_score": output.candidate_lm_scores[0],
    }
    return [
        {"caption": caption, **{name: float(values[index]) for name, values in scores.items()}}
        for index, caption in enumerate(output.candidates[0])
    ]


def plain(pair: dict) -> dict:
    """A retrieved pair with Python numbers (JSON-ready), not numpy scalars."""
    return {
        key: value.item() if isinstance(value, (np.generic, torch.Tensor)) else value for key, value in pair.items()
    }


__all__ = ["PairCapCaptioningPipeline", "TASK"]
