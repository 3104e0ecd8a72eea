"""PyTorch PairCap model: CLAP audio encoder -> pooled audio tokens -> MLP projector -> causal language model."""

import os
import tempfile
from collections.abc import Collection
from dataclasses import asdict, dataclass

import torch
from torch import nn
from transformers import AutoModelForCausalLM, ClapAudioModel, ClapModel, GenerationMixin, PreTrainedModel
from transformers.activations import ACT2FN
from transformers.modeling_outputs import CausalLMOutputWithPast
from transformers.utils import ModelOutput

from .configuration_paircap import PairCapConfig
from .encoders_paircap import PairCapEncoderMixin
from .prompt_budget_paircap import check_prompts_fit, context_size, new_token_count, prompt_lengths
from .prompt_prefix_paircap import PromptPrefixCache, generation_setting, shared_prefix_inputs
from .rescoring_paircap import (
    RescoredCandidates,
    RescoreSettings,
    candidate_kwargs,
    rescore_candidates,
    rescore_settings,
)
from .retrieval_modes_paircap import check_retrieval_mode
from .retrieval_paircap import PairCapRetriever, search_device
from .saving_paircap import (
    HUB_OPTIONS,
    KB_FOLDER,
    bundle_knowledge_base,
    configured_knowledge_base,
    knowledge_base_to_save,
    register_remote_code,
    upload_release,
    warn_unresolved_knowledge_base,
)


@dataclass
class PairCapGenerateOutput(ModelOutput):
    r"""
    sequences (`torch.LongTensor` of shape `(batch * num_return_sequences, prompt_length + new_tokens)`):
        The prompts given to `generate` followed by the caption tokens of the final pass, so that
        `processor.decode_captions(sequences, input_ids.shape[1])` works with or without retrieval.
    zero_shot_captions (`list[str]`): the pass-1 captions used as text queries (generative pair-to-pair).
    retrieved_pairs (`list[list[dict]]`): per query, the retrieved pairs with `pair_id`, `audio_id`, `caption`, `row`,
        `score` (S), `audio_score` (S_A) and `text_score` (S_T), best first.
    scores, logits, sequences_scores: those of the final pass, when requested; with rescoring, `sequences_scores` are
        the chosen captions' LM scores and `scores` / `logits` are not kept.
    candidates (`list[list[str]]`): with rescoring, per query, the final pass's candidate captions, best beam first.
    candidate_scores, candidate_clap_scores, candidate_lm_scores (`torch.Tensor` of shape `(batch, num_candidates)`):
        with rescoring, each candidate's combined score, CLAP audio-text cosine similarity and length-normalised LM
        log-probability; the chosen caption is the one of the highest combined score.
    """

    sequences: torch.LongTensor | None = None
    zero_shot_captions: list[str] | None = None
    retrieved_pairs: list[list[dict]] | None = None
    scores: tuple[torch.Tensor, ...] | None = None
    logits: tuple[torch.Tensor, ...] | None = None
    sequences_scores: torch.Tensor | None = None
    candidates: list[list[str]] | None = None
    candidate_scores: torch.Tensor | None = None
    candidate_clap_scores: torch.Tensor | None = None
    candidate_lm_scores: torch.Tensor | None = None


class PairCapAudioProjector(nn.Module):
    """Two-layer MLP mapping pooled CLAP encoder tokens into the language model's embedding space."""

    def __init__(self, config: PairCapConfig):
        super().__init__()
        text_hidden = config.text_config.hidden_size
        self.linear_1 = nn.Linear(config.encoder_hidden_size, text_hidden, bias=config.projector_bias)
        self.act = ACT2FN[config.projector_hidden_act]
        self.linear_2 = nn.Linear(text_hidden, text_hidden, bias=config.projector_bias)

    def forward(self, audio_tokens: torch.Tensor) -> torch.Tensor:
        return self.linear_2(self.act(self.linear_1(audio_tokens)))


class PairCapPreTrainedModel(PreTrainedModel):
    config: PairCapConfig
    config_class = PairCapConfig
    base_model_prefix = "model"
    input_modalities = ("audio", "text")
    supports_gradient_checkpointing = True
    _no_split_modules = ["LlamaDecoderLayer", "ClapAudioLayer", "ClapTextLayer"]
    _skip_keys_device_placement = ["past_key_values"]
    _supports_flash_attn = True
    _supports_sdpa = True
    _supports_attention_backend = True

    def _init_weights(self, module: nn.Module) -> None:
        if isinstance(module, PairCapAudioProjector):
            std = getattr(self.config.text_config, "initializer_range", 0.02)
            for linear in (module.linear_1, module.linear_2):
                nn.init.normal_(linear.weight, mean=0.0, std=std)
                if linear.bias is not None:
                    nn.init.zeros_(linear.bias)
        else:
            super()._init_weights(module)


class PairCapForConditionalGeneration(PairCapEncoderMixin, PairCapPreTrainedModel, GenerationMixin):
    """
    PairCap: the CLAP model (the frozen retrieval space: audio and text towers with their projections), the captioning
    audio tower (HTSAT, whose pooled tokens fill the prompts; the CLAP's own audio tower until stage 2 separates it),
    the audio projector and a causal language model. A prompt may hold several audio segments (retrieved pairs
    interleaved before the query); each segment's `<audio>` placeholders are filled, in order, either with projected
    tokens of the windows in `input_features` or with pre-computed pooled tokens from `audio_tokens` (positions in
    `audio_tokens_mask`). Retrieval in `generate` goes through a `PairCapRetriever` (`set_retriever`, or
    `from_pretrained(..., retriever=...)`); without one, `config.knowledge_base` is loaded on first use.
    """

    def __init__(self, config: PairCapConfig):
        super().__init__(config)
        self.clap = ClapModel(config.clap_config)
        if config.separate_audio_tower:
            self.audio_tower = ClapAudioModel(config.clap_config.audio_config)
        self.multi_modal_projector = PairCapAudioProjector(config)
        self.language_model = AutoModelForCausalLM.from_config(config.text_config)
        self.retriever: PairCapRetriever | None = None
        self._configured_retriever: tuple[tuple, PairCapRetriever] | None = None  # built from config.knowledge_base
        self.prompt_prefix_cache = PromptPrefixCache()  # KV caches of the prompts' shared system text
        self.post_init()

    @classmethod
    def from_pretrained(cls, *args, retriever: PairCapRetriever | None = None, **kwargs):
        """`PreTrainedModel.from_pretrained`, then `set_retriever(retriever)` when one is given."""
        model = super().from_pretrained(*args, **kwargs)
        if retriever is not None:
            model.set_retriever(retriever)
        return model

    def save_pretrained(self, save_directory: str | os.PathLike, *args, push_to_hub: bool = False, **kwargs) -> None:
        """
        `PreTrainedModel.save_pretrained`, writing a complete release (`saving_paircap.py`) however the model was
        loaded: also the remote code (every file the model imports and the pipeline's) with `auto_map` and
        `custom_pipelines`, and the knowledge base it retrieves from (its retriever's, else `config.knowledge_base`'s),
        bundled as `knowledge_base/` and checked against the KB's records, or named by hub id for a hub KB.
        `push_to_hub=True` then uploads the folder (hub options as in `push_to_hub`; `repo_id` defaults to the
        folder's name).
        """
        hub = {key: kwargs.pop(key) for key in ("repo_id", *HUB_OPTIONS) if key in kwargs} if push_to_hub else {}
        register_remote_code(self)
        source, configured = knowledge_base_to_save(self)
        with configured_knowledge_base(self, configured):
            super().save_pretrained(save_directory, *args, **kwargs)
        if not self.should_save_on_this_rank(kwargs.get("is_main_process", True)):
            return
        if source is not None:
            bundle_knowledge_base(source, os.path.join(save_directory, KB_FOLDER))
        else:
            warn_unresolved_knowledge_base(save_directory, configured)
        if push_to_hub:
            repo_id = hub.pop("repo_id", os.path.basename(os.path.normpath(save_directory)))
            upload_release(save_directory, repo_id, token=kwargs.get("token"), **hub)

    def push_to_hub(self, repo_id: str, *, max_shard_size: int | str = "50GB", token: str | None = None, **options):
        """
        Upload the release `save_pretrained` writes (knowledge base included) to the hub model repo `repo_id`, whole
        (`HfApi.upload_folder`); `options`: `private`, `commit_message`, `commit_description`, `revision`,
        `create_pr`. Returns the commit info.
        """
        with tempfile.TemporaryDirectory() as work:
            self.save_pretrained(work, max_shard_size=max_shard_size)
            return upload_release(work, repo_id, token=token, **options)

    def set_retriever(self, retriever: PairCapRetriever | None) -> None:
        """
        Retrieve with `retriever` in `generate` (None: with `config.knowledge_base` again). Its knowledge base is
        checked against this model's fingerprints now (`PairCapRetriever.check_model`), and again whenever the
        encoder weights changed.
        """
        if retriever is not None:
            retriever.check_model(self)
        self.retriever = retriever

    def get_retriever(self) -> PairCapRetriever:
        """
        The retriever `generate` uses: the one set, else one built once from `config.knowledge_base` with the processor
        of this model's release (`name_or_path`); searched on the model's GPU when it has one.
        """
        if self.retriever is not None:
            return self.retriever
        source = self.config.knowledge_base
        if source is None:
            raise ValueError(
                "No knowledge base to retrieve from: give the model a retriever (model.set_retriever("
                "PairCapRetriever.from_pretrained(...)) or from_pretrained(..., retriever=...)), or set "
                "config.knowledge_base, or use retrieval_mode='none'"
            )
        key = (str(self.name_or_path), source)
        if self._configured_retriever is None or self._configured_retriever[0] != key:
            if not self.name_or_path:
                raise ValueError(
                    f"config.knowledge_base is {source!r} but the model has no release to load its processor from "
                    "(name_or_path): give it a retriever with model.set_retriever(...)"
                )
            retriever = PairCapRetriever.from_pretrained(
                self.name_or_path, knowledge_base=source, device=search_device(self)
            )
            self._configured_retriever = (key, retriever)
        return self._configured_retriever[1]

    def get_input_embeddings(self) -> nn.Module:
        return self.language_model.get_input_embeddings()

    def set_input_embeddings(self, value: nn.Module) -> None:
        self.language_model.set_input_embeddings(value)

    def get_output_embeddings(self) -> nn.Module:
        return self.language_model.get_output_embeddings()

    def set_output_embeddings(self, value: nn.Module) -> None:
        self.language_model.set_output_embeddings(value)

    def get_decoder(self) -> nn.Module:
        return self.language_model.get_decoder()

    def merge_audio_tokens(
        self,
        input_ids: torch.LongTensor,
        inputs_embeds: torch.Tensor,
        encoded_tokens: torch.Tensor | None,
        audio_tokens: torch.Tensor | None,
        audio_tokens_mask: torch.Tensor | None,
    ) -> torch.Tensor:
        """Project pooled audio tokens and scatter them into `inputs_embeds` at the `<audio>` placeholders."""
        placeholders = input_ids == self.config.audio_token_id
        if audio_tokens_mask is not None:
            precomputed = audio_tokens_mask.bool()
        elif audio_tokens is not None and encoded_tokens is None:
            precomputed = placeholders
        elif audio_tokens is not None:
            raise ValueError("Pass audio_tokens_mask to say which <audio> positions audio_tokens fill")
        else:
            precomputed = torch.zeros_like(placeholders)
        if (precomputed & ~placeholders).any():
            raise ValueError("audio_tokens_mask marks positions that are not <audio> placeholders")
        for mask, tokens, origin in (
            (placeholders & ~precomputed, encoded_tokens, "input_features"),
            (precomputed, audio_tokens, "audio_tokens"),
        ):
            tokens = None if tokens is None else tokens.reshape(-1, tokens.shape[-1])
            n_positions, n_tokens = int(mask.sum()), 0 if tokens is None else tokens.shape[0]
            if n_positions != n_tokens:
                raise ValueError(
                    f"The prompts hold {n_positions} <audio> placeholders for {origin} but {origin} gives {n_tokens} "
                    "audio tokens: build the inputs with PairCapProcessor so placeholders match the audio segments"
                )
            if n_tokens:
                projected = self.multi_modal_projector(tokens.to(self._projector_dtype))
                inputs_embeds = inputs_embeds.masked_scatter(mask.unsqueeze(-1), projected.to(inputs_embeds.dtype))
        return inputs_embeds

    @property
    def _projector_dtype(self) -> torch.dtype:
        return self.multi_modal_projector.linear_1.weight.dtype

    def build_inputs_embeds(
        self,
        input_ids: torch.LongTensor,
        input_features: torch.Tensor | None = None,
        audio_tokens: torch.Tensor | None = None,
        audio_tokens_mask: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Embed `input_ids` and fill the `<audio>` placeholders from encoded windows and/or pre-computed tokens."""
        inputs_embeds = self.get_input_embeddings()(input_ids)
        if input_features is None and audio_tokens is None:
            if (input_ids == self.config.audio_token_id).any():
                raise ValueError("The prompts hold <audio> placeholders but neither input_features nor audio_tokens")
            return inputs_embeds
        encoded = self.pooled_audio_tokens(input_features) if input_features is not None else None
        return self.merge_audio_tokens(input_ids, inputs_embeds, encoded, audio_tokens, audio_tokens_mask)

    def forward(
        self,
        input_ids: torch.LongTensor | None = None,
        input_features: torch.Tensor | None = None,
        audio_window_counts: torch.Tensor | None = None,
        audio_tokens: torch.Tensor | None = None,
        audio_tokens_mask: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        position_ids: torch.LongTensor | None = None,
        past_key_values=None,
        inputs_embeds: torch.Tensor | None = None,
        labels: torch.LongTensor | None = None,
        logits_to_keep: int | torch.Tensor = 0,
        **kwargs,
    ) -> CausalLMOutputWithPast:
        r"""
        input_features (`torch.Tensor` of shape `(num_windows, 1, frames, mel_bins)`):
            Log-mel windows of the audio segments given as waveforms, in prompt order (from `PairCapProcessor`).
        audio_window_counts (`torch.LongTensor` of shape `(num_clips,)`):
            Windows per clip; only needed for clip embeddings, accepted here so processor outputs can be passed whole.
        audio_tokens (`torch.Tensor` of shape `(num_tokens, encoder_hidden_size)`):
            Pre-computed pooled audio tokens (e.g. retrieved knowledge-base pairs), in prompt order.
        audio_tokens_mask (`torch.BoolTensor` of shape `(batch, seq_len)`):
            The `<audio>` positions filled from `audio_tokens`; the others are filled from `input_features`.
        labels (`torch.LongTensor` of shape `(batch, seq_len)`):
            Targets for every caption in the sequence (paper eq. 1), -100 elsewhere.
        """
        if (input_ids is None) == (inputs_embeds is None):
            raise ValueError("Pass exactly one of input_ids or inputs_embeds")
        if inputs_embeds is None:
            inputs_embeds = self.build_inputs_embeds(input_ids, input_features, audio_tokens, audio_tokens_mask)
        return self.language_model(
            inputs_embeds=inputs_embeds,
            attention_mask=attention_mask,
            position_ids=position_ids,
            past_key_values=past_key_values,
            labels=labels,
            logits_to_keep=logits_to_keep,
            **kwargs,
        )

    @torch.no_grad()
    def generate(
        self,
        input_ids: torch.LongTensor | None = None,
        input_features: torch.Tensor | None = None,
        audio_window_counts: torch.Tensor | None = None,
        audio_tokens: torch.Tensor | None = None,
        audio_tokens_mask: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        retrieval_mode: str | None = None,
        fusion_weight: float | None = None,
        top_k: int | None = None,
        exclude_ids: "list[Collection[str]] | None" = None,
        text_queries: list[str] | None = None,
        retriever: PairCapRetriever | None = None,
        max_pairs_per_clip: int | None = 1,
        query_max_new_tokens: int | None = None,
        share_prefix: bool | None = None,
        rescore: str | None = None,
        num_candidates: int | None = None,
        rescore_weight: float | None = None,
        rescore_query: bool | None = None,
        processor=None,
        **kwargs,
    ):
        r"""
        Caption audio, with generative pair-to-pair retrieval when the model has a retriever or a configured knowledge
        base: encode the query audio once; pass 1 captions it zero-shot; the retriever searches the knowledge base
        with the caption's CLAP text embedding t_q and the audio embedding a_q, `[W·a_q ; (1−W)·t_q]` (paper eq. 4-6),
        and builds the pass-2 prompts; pass 2 captions again with the top-k (audio tokens, caption) pairs interleaved
        before the query. Both passes run as batches.

        Args:
            retrieval_mode: `none`, `audio2audio`, `audio2text`, `audio2mixture`, `pair2pair` (needs `text_queries`) or
                `generative_pair2pair`; default `config.retrieval_mode` when a retriever or knowledge base is set, else
                `none`.
            fusion_weight: W of eq. 4 (default `config.fusion_weight`). top_k: pairs per query (0 = zero-shot).
            exclude_ids: per query, pair ids or audio ids never to retrieve (e.g. the query's own clip).
            text_queries: the text half of `pair2pair` queries.
            retriever: this call's `PairCapRetriever` instead of the model's (`get_retriever`), e.g. another KB.
            max_pairs_per_clip: retrieved pairs of one clip at most (its best captions); None: no limit.
            query_max_new_tokens: tokens pass 1 (the zero-shot caption that only feeds retrieval) decodes at most;
                default `config.query_max_new_tokens`, None: as pass 2.
            share_prefix: start every prompt of both passes from the cached KV of the system text the batch shares
                (`prompt_prefix_paircap`; same tokens as without); default `config.share_prompt_prefix`. Calls with a
                static or quantized cache, a cache of their own or assisted decoding run without it.
            rescore: `clap` rescores the final captions (CLAP-Refine, `rescoring_paircap.py`): `num_candidates` beam
                candidates per query (`num_beams = max(num_candidates, num_beams)`), the one kept maximising
                `rescore_weight` x cos(CLAP audio embedding of the query, CLAP text embedding of the candidate)
                + (1 - `rescore_weight`) x its length-normalised LM log-probability; `rescore_query`: the zero-shot
                pass (the text query) too. Defaults: `config.rescore` (None: off), `config.num_candidates`,
                `config.rescore_weight`, `config.rescore_query`. Needs one clip per prompt and beam search (no
                sampling, one sequence per query). With `return_dict_in_generate=True`, a `PairCapGenerateOutput`
                with the candidates and their scores.
            processor: the `PairCapProcessor` that decodes and CLAP-tokenizes candidates for rescoring; default the
                retriever's (the call's or the model's; needed without one).
            kwargs: generation arguments (beams, `max_new_tokens`, sampling...), applied to both passes; pass 1 keeps
                one sequence per query. With `return_dict_in_generate=True` and retrieval, a `PairCapGenerateOutput`.

        Prompts plus `max_new_tokens` must fit the LM's context (`text_config.max_position_embeddings`): a prompt given
        that does not raises a ValueError; pass-2 prompts hold retrieved captions cut to
        `config.max_example_caption_tokens` tokens and drop their lowest-ranked pairs until they fit, with one warning
        naming the KB rows cut or dropped.
        """
        if input_ids is None:
            raise ValueError("generate needs input_ids: build them with PairCapProcessor")
        new_tokens, context = new_token_count(kwargs, self.generation_config), context_size(self.config)
        check_prompts_fit(prompt_lengths(input_ids, attention_mask), context, new_tokens)
        mode = self._resolve_retrieval_mode(retrieval_mode, retriever)
        top_k = self.config.retrieval_top_k if top_k is None else top_k
        kwargs["share_prefix"] = self.config.share_prompt_prefix if share_prefix is None else share_prefix
        rescoring = rescore_settings(self, rescore, num_candidates, rescore_weight, rescore_query, kwargs)
        return_dict = bool(generation_setting(kwargs, self.generation_config, "return_dict_in_generate"))
        retrieves = mode != "none" and top_k != 0
        if not retrieves and rescoring is None:
            return self._generate_filled(
                input_ids, attention_mask, input_features, audio_tokens, audio_tokens_mask, **kwargs
            )
        counts = self._retrieval_window_counts(
            mode, input_ids, input_features, audio_window_counts, audio_tokens, text_queries
        )
        encoding = self.encode_audio(input_features, counts)
        if not retrieves:
            processor = self._rescoring_processor(processor, retriever)
            output = self._generate_embedded(
                input_ids, self._embed_query_prompts(input_ids, encoding.audio_tokens), attention_mask,
                **candidate_kwargs(kwargs, self.generation_config, rescoring.num_candidates),
            )  # fmt: skip
            rescored = rescore_candidates(self, processor, output, encoding.audio_embeds, input_ids.shape[1], rescoring)
            return package_output(output, input_ids, input_ids.shape[1], None, None, rescored, return_dict)
        retriever = retriever if retriever is not None else self.get_retriever()
        processor = processor if processor is not None else retriever.processor
        zero_shot_ids = None
        if mode == "generative_pair2pair":
            query_budget = self.config.query_max_new_tokens if query_max_new_tokens is None else query_max_new_tokens
            if query_budget is not None and query_budget > new_tokens:
                check_prompts_fit(prompt_lengths(input_ids, attention_mask), context, query_budget)
            first_pass = first_pass_kwargs(kwargs, query_budget)
            query_rescoring = rescoring if rescoring is not None and rescoring.query else None
            zero_shot_ids = self._zero_shot_ids(
                input_ids, attention_mask, encoding, first_pass, query_rescoring, processor
            )
        retrieved = retriever(
            self,
            encoding.audio_embeds,
            encoding.audio_tokens.split(counts.tolist()),
            (input_ids == self.config.long_audio_token_id).any(dim=1).tolist(),
            zero_shot_ids=zero_shot_ids,
            text_queries=text_queries,
            mode=mode,
            fusion_weight=self.config.fusion_weight if fusion_weight is None else fusion_weight,
            top_k=top_k,
            exclude_ids=exclude_ids,
            max_pairs_per_clip=max_pairs_per_clip,
            max_caption_tokens=self.config.max_example_caption_tokens,
            max_prompt_length=None if context is None else context - new_tokens,
        )
        second = retrieved.inputs
        length = second["input_ids"].shape[1]
        if rescoring is None:
            output = self._generate_filled(**second, **kwargs)
            return package_output(output, input_ids, length, retrieved.zero_shot_captions, retrieved.hits)
        output = self._generate_filled(
            **second, **candidate_kwargs(kwargs, self.generation_config, rescoring.num_candidates)
        )
        rescored = rescore_candidates(self, processor, output, encoding.audio_embeds, length, rescoring)
        return package_output(
            output, input_ids, length, retrieved.zero_shot_captions, retrieved.hits, rescored, return_dict
        )

    def _rescoring_processor(self, processor, retriever: PairCapRetriever | None):
        """The processor that decodes and CLAP-tokenizes candidates without retrieval: the one given, else the
        retriever's (the call's or the model's)."""
        retriever = retriever if retriever is not None else self.retriever
        if processor is None and retriever is None:
            raise ValueError(
                "rescore='clap' without retrieval needs the processor to decode and CLAP-tokenize the candidates: "
                "generate(..., processor=processor)"
            )
        return processor if processor is not None else retriever.processor

    def _resolve_retrieval_mode(self, retrieval_mode: str | None, retriever: PairCapRetriever | None) -> str:
        """The mode asked for; by default `config.retrieval_mode` when a retriever or knowledge base is set, else
        `none`."""
        if retrieval_mode is None:
            configured = retriever is not None or self.retriever is not None or self.config.knowledge_base is not None
            return self.config.retrieval_mode if configured else "none"
        return check_retrieval_mode(retrieval_mode)

    def _retrieval_window_counts(
        self, mode: str, input_ids, input_features, audio_window_counts, audio_tokens, text_queries
    ) -> torch.Tensor:
        """Windows per query clip, once the inputs are checked to be zero-shot prompts of one clip each (and one text
        each for `pair2pair`)."""
        if input_features is None or audio_tokens is not None:
            raise ValueError(
                "Retrieval-augmented or rescored generate takes zero-shot prompts built by PairCapProcessor from "
                "audio (one clip per prompt); for prompts with your own examples use retrieval_mode='none' and no "
                "rescore"
            )
        counts = torch.ones(len(input_ids), dtype=torch.long) if audio_window_counts is None else audio_window_counts
        if len(counts) != len(input_ids):
            raise ValueError(
                f"Retrieval and rescoring need one clip per prompt: {len(counts)} clips for {len(input_ids)} prompts"
            )
        if mode == "pair2pair" and (text_queries is None or len(text_queries) != len(input_ids)):
            raise ValueError("retrieval_mode='pair2pair' needs text_queries: one text per prompt")
        return counts

    def _generate_filled(
        self, input_ids, attention_mask, input_features=None, audio_tokens=None, audio_tokens_mask=None, **kwargs
    ):
        """`GenerationMixin.generate` on prompts whose `<audio>` placeholders are filled (see `build_inputs_embeds`)."""
        inputs_embeds = self.build_inputs_embeds(input_ids, input_features, audio_tokens, audio_tokens_mask)
        return self._generate_embedded(input_ids, inputs_embeds, attention_mask, **kwargs)

    def _generate_embedded(self, input_ids, inputs_embeds, attention_mask, share_prefix: bool = False, **kwargs):
        """`GenerationMixin.generate` on embedded prompts; with `share_prefix`, from the cached KV of the prefix the
        prompts share where the call allows (`shared_prefix_inputs`), the output's prompts being the caller's."""
        shared = shared_prefix_inputs(self, input_ids, inputs_embeds, attention_mask, kwargs) if share_prefix else None
        if shared is None:
            return super().generate(
                input_ids=input_ids, inputs_embeds=inputs_embeds, attention_mask=attention_mask, **kwargs
            )
        inputs, layout = shared
        return layout.restore(super().generate(**inputs, **kwargs), input_ids)

    def _embed_query_prompts(self, input_ids, audio_tokens: torch.Tensor) -> torch.Tensor:
        """The embedded zero-shot prompts, their `<audio>` placeholders filled with the queries' encoded tokens."""
        return self.merge_audio_tokens(input_ids, self.get_input_embeddings()(input_ids), audio_tokens, None, None)

    def _zero_shot_ids(
        self, input_ids, attention_mask, encoding, kwargs: dict, rescoring: RescoreSettings | None, processor
    ) -> torch.Tensor:
        """Pass 1: the ids of the queries' zero-shot captions (after the prompts), from their already encoded tokens
        (`kwargs` from `first_pass_kwargs`); with `rescoring`, each the best of its candidates."""
        inputs_embeds = self._embed_query_prompts(input_ids, encoding.audio_tokens)
        if rescoring is None:
            first_pass = self._generate_embedded(input_ids, inputs_embeds, attention_mask, **kwargs)
        else:
            candidates = candidate_kwargs(kwargs, self.generation_config, rescoring.num_candidates)
            output = self._generate_embedded(input_ids, inputs_embeds, attention_mask, **candidates)
            prompt = input_ids.shape[1]
            first_pass = rescore_candidates(self, processor, output, encoding.audio_embeds, prompt, rescoring).sequences
        return first_pass[:, input_ids.shape[1] :]


def first_pass_kwargs(kwargs: dict, max_new_tokens: int | None = None) -> dict:
    """Generation arguments for pass 1: the same decoding, one plain sequence per query, and at most `max_new_tokens`
    tokens when given (`min_new_tokens` lowered to it)."""
    first = {
        **kwargs,
        "num_return_sequences": 1,
        "return_dict_in_generate": False,
        "output_scores": False,
        "output_logits": False,
    }
    if max_new_tokens is not None:
        first["max_new_tokens"] = max_new_tokens
        first.pop("max_length", None)
        if first.get("min_new_tokens") is not None:
            first["min_new_tokens"] = min(first["min_new_tokens"], max_new_tokens)
    return first


def package_output(
    output,
    prompt_ids: torch.LongTensor,
    second_prompt_length: int,
    zero_shot_captions,
    hits,
    rescored: RescoredCandidates | None = None,
    return_dict: bool = False,
):
    """Final-pass caption tokens (the `rescored` choices when given) after the caller's own prompts; with
    `return_dict_in_generate` (`return_dict` when rescored), the retrieval and rescoring details."""
    sequences = output if isinstance(output, torch.Tensor) else output.sequences
    if rescored is not None:
        sequences = rescored.sequences
    copies = sequences.shape[0] // prompt_ids.shape[0]
    sequences = torch.cat([prompt_ids.repeat_interleave(copies, dim=0), sequences[:, second_prompt_length:]], dim=1)
    if isinstance(output, torch.Tensor) or (rescored is not None and not return_dict):
        return sequences
    retrieved_pairs = None if hits is None else [[asdict(hit) for hit in query] for query in hits]
    if rescored is None:
        return PairCapGenerateOutput(
            sequences=sequences,
            zero_shot_captions=zero_shot_captions,
            retrieved_pairs=retrieved_pairs,
            scores=output.scores,
            logits=output.logits,
            sequences_scores=getattr(output, "sequences_scores", None),
        )
    return PairCapGenerateOutput(
        sequences=sequences,
        zero_shot_captions=zero_shot_captions,
        retrieved_pairs=retrieved_pairs,
        sequences_scores=rescored.lm_scores.gather(1, rescored.chosen[:, None]).squeeze(1),
        candidates=rescored.captions,
        candidate_scores=rescored.scores,
        candidate_clap_scores=rescored.clap_scores,
        candidate_lm_scores=rescored.lm_scores,
    )


__all__ = [
    "PairCapAudioProjector",
    "PairCapForConditionalGeneration",
    "PairCapGenerateOutput",
    "PairCapPreTrainedModel",
]
