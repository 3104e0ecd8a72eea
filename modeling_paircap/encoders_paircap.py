"""The encoders of a PairCap model: the CLAP (the retrieval space: audio and text towers with their projections) and the
captioning audio tower (HTSAT, whose pooled tokens fill the prompts; the CLAP's own until stage 2 separates it).
`PairCapEncoderMixin` holds what they compute (clip embeddings, pooled tokens, text embeddings, fingerprints), shared
by the full model and by `PairCapEncoders`, the encoders alone: what building, tokenising or upgrading a knowledge base
needs. `PairCapEncoders.from_pretrained(release)` reads only the `clap.` and `audio_tower.` tensors of a release's
weights and never builds the language model.

    encoders = PairCapEncoders.from_pretrained("org/paircap", dtype=torch.bfloat16).to("cuda")
    encoding = encoders.encode_audio(processor(audio=clips)["input_features"].to("cuda"))
"""

import copy
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from transformers import ClapAudioModel, ClapModel, PreTrainedModel
from transformers.utils import ModelOutput

from .configuration_paircap import PairCapConfig
from .fingerprints_paircap import weights_fingerprint


@dataclass
class PairCapAudioEncoding(ModelOutput):
    r"""
    audio_tokens (`torch.Tensor` of shape `(num_windows, audio_tokens_per_window, encoder_hidden_size)`):
        Average-pooled CLAP encoder tokens of every window, before the projector: what a knowledge base stores per pair.
    audio_embeds (`torch.Tensor` of shape `(num_clips, projection_dim)`):
        L2-normalised CLAP audio embedding of every clip (the mean of its windows' embeddings, normalised again).
    """

    audio_tokens: torch.Tensor | None = None
    audio_embeds: torch.Tensor | None = None


class PairCapEncoderMixin:
    """The encoders' computations, for a model with `config` (a `PairCapConfig`), `clap` and, once separated,
    `audio_tower`."""

    def get_audio_tower(self) -> nn.Module:
        """The captioning audio encoder: the separate `audio_tower` once stage 2 made one, else the CLAP's."""
        return self.audio_tower if self.config.separate_audio_tower else self.clap.audio_model

    def separate_audio_tower(self) -> nn.Module:
        """
        Give the captioning audio tower weights of its own (a copy of the CLAP's), so that training it leaves the
        retrieval space, and every knowledge base embedded in it, untouched. Idempotent; returns the tower.
        """
        if not self.config.separate_audio_tower:
            self.audio_tower = copy.deepcopy(self.clap.audio_model)
            self.config.separate_audio_tower = True
        return self.audio_tower

    def retrieval_fingerprint(self) -> str:
        """
        SHA-256 of the retrieval space: the CLAP weights (rounded to bfloat16, so float32 and bfloat16 loads agree) and
        the windowing that turns a clip into its embedding. A KB's index and embeddings are valid for every model with
        this fingerprint, before and after fine-tuning.
        """
        windowing = {
            "audio_window_seconds": self.config.audio_window_seconds,
            "max_audio_windows": self.config.max_audio_windows,
        }
        return weights_fingerprint(self.clap, windowing)

    def token_fingerprint(self) -> str:
        """SHA-256 of the token encoder (the captioning audio tower) and the token settings: what a KB's clip tokens
        were made with. Equal for a separate tower and the CLAP's own while their weights are equal."""
        settings = {
            "audio_pool_stride": self.config.audio_pool_stride,
            "audio_window_seconds": self.config.audio_window_seconds,
            "max_audio_windows": self.config.max_audio_windows,
        }
        return weights_fingerprint(self.get_audio_tower(), settings)

    def pool_encoder_tokens(self, last_hidden_state: torch.Tensor) -> torch.Tensor:
        """`(W, C, 2, 32)` CLAP last hidden state -> `(W, 64 / stride, C)` tokens in time order, average-pooled."""
        # dim 2 holds the frequency bins, dim 3 the time steps: order tokens by time, then frequency
        tokens = last_hidden_state.permute(0, 3, 2, 1).flatten(1, 2)
        stride = self.config.audio_pool_stride
        if stride > 1:
            tokens = F.avg_pool1d(tokens.transpose(1, 2), kernel_size=stride, stride=stride).transpose(1, 2)
        return tokens

    def pooled_audio_tokens(self, input_features: torch.Tensor) -> torch.Tensor:
        """Pooled tokens `(num_windows, tokens_per_window, hidden)` of log-mel windows from the captioning audio tower:
        the prompt path, which needs neither the CLAP projection nor the clip embedding."""
        tower = self.get_audio_tower()
        hidden = tower(input_features=input_features.to(self._encoder_dtype)).last_hidden_state
        return self.pool_encoder_tokens(hidden)

    @property
    def _encoder_dtype(self) -> torch.dtype:
        return self.clap.audio_projection.linear1.weight.dtype

    def encode_audio(
        self, input_features: torch.Tensor, audio_window_counts: torch.Tensor | None = None
    ) -> PairCapAudioEncoding:
        """
        Encode `(num_windows, 1, frames, mels)` log-mel windows into pooled prompt tokens (pre-projector, from the
        captioning tower) and the L2-normalised CLAP audio embedding of each clip (retrieval space; one encoder pass
        while the two towers are one); `audio_window_counts` groups consecutive windows into clips (one window per
        clip when omitted).
        """
        outputs = self.clap.get_audio_features(input_features=input_features.to(self._encoder_dtype))
        if self.config.separate_audio_tower:
            audio_tokens = self.pooled_audio_tokens(input_features)
        else:
            audio_tokens = self.pool_encoder_tokens(outputs.last_hidden_state)
        window_embeds = outputs.pooler_output
        if audio_window_counts is None:
            return PairCapAudioEncoding(audio_tokens=audio_tokens, audio_embeds=window_embeds)
        counts = audio_window_counts.to(window_embeds.device)
        if int(counts.sum()) != window_embeds.shape[0]:
            raise ValueError(
                f"audio_window_counts adds up to {int(counts.sum())} windows but input_features holds "
                f"{window_embeds.shape[0]}"
            )
        clip_index = torch.repeat_interleave(torch.arange(len(counts), device=counts.device), counts)
        clip_sums = torch.zeros(len(counts), window_embeds.shape[1], dtype=window_embeds.dtype, device=counts.device)
        clip_sums.index_add_(0, clip_index, window_embeds)
        return PairCapAudioEncoding(audio_tokens=audio_tokens, audio_embeds=F.normalize(clip_sums, dim=-1))

    def embed_texts(
        self, clap_input_ids: torch.Tensor, clap_attention_mask: torch.Tensor | None = None
    ) -> torch.Tensor:
        """L2-normalised CLAP text embeddings `(batch, projection_dim)` of captions tokenized by the CLAP tokenizer."""
        return self.clap.get_text_features(input_ids=clap_input_ids, attention_mask=clap_attention_mask).pooler_output


class PairCapEncoders(PairCapEncoderMixin, PreTrainedModel):
    """
    The CLAP and the captioning audio tower of a PairCap release, without its projector and language model. Its
    encoding methods are the full model's own (`PairCapEncoderMixin`), so both give the same embeddings, pooled tokens
    and fingerprints.
    """

    config: PairCapConfig
    config_class = PairCapConfig
    base_model_prefix = "model"
    main_input_name = "input_features"
    _no_split_modules = ["ClapAudioLayer", "ClapTextLayer"]
    _supports_sdpa = True
    # the rest of a release's weights: skipped on load, without a warning
    _keys_to_ignore_on_load_unexpected = [r"^language_model\.", r"^multi_modal_projector\."]

    def __init__(self, config: PairCapConfig):
        super().__init__(config)
        self.clap = ClapModel(config.clap_config)
        if config.separate_audio_tower:
            self.audio_tower = ClapAudioModel(config.clap_config.audio_config)
        self.post_init()


__all__ = ["PairCapAudioEncoding", "PairCapEncoderMixin", "PairCapEncoders"]
