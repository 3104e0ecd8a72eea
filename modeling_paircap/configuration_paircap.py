"""PairCap model configuration."""

from huggingface_hub.dataclasses import strict
from transformers import AutoConfig, PreTrainedConfig
from transformers.configuration_utils import SubConfigSpec

from .rescore_methods_paircap import check_rescoring
from .retrieval_modes_paircap import check_retrieval_mode


@strict
class PairCapConfig(PreTrainedConfig):
    r"""
    Configuration of [`PairCapForConditionalGeneration`]: a CLAP (HTSAT) audio encoder whose pooled tokens are projected
    into a Llama (Vicuna) language model, with generative pair-to-pair retrieval over a knowledge base of
    (audio, caption) pairs.

    Args:
        clap_config (`dict` or `ClapConfig`):
            The whole CLAP configuration: the frozen retrieval space (audio and text towers with their projections),
            and the shape of the captioning audio tower.
        text_config (`dict` or `PreTrainedConfig`):
            The language model configuration (`llama` by default).
        audio_token_id (`int`):
            Id of the `<audio>` placeholder token; the processor repeats it once per pooled audio token.
        long_audio_token_id (`int`):
            Id of the length token placed before the audio tokens of a clip longer than
            `max_audio_windows * audio_window_seconds` (paper §3.1).
        audio_pool_stride (`int`):
            Average-pooling stride (and kernel) over the 64 encoder tokens of each 10 s window.
        audio_window_seconds (`float`):
            Length of one encoder window.
        max_audio_windows (`int`):
            Windows encoded per clip at most; longer clips get evenly spaced windows and the length token.
        separate_audio_tower (`bool`):
            Whether the captioning audio encoder (the HTSAT that makes prompt tokens, `audio_tower`) has weights of its
            own. False (untrained releases, stage 1): it is the CLAP's audio tower itself. Stage 2 with the encoder
            unfrozen separates it, so the CLAP, which makes every retrieval embedding, stays the pretrained one.
        projector_hidden_act (`str`), projector_bias (`bool`):
            The two-layer MLP projector's activation and bias.
        retrieval_mode, fusion_weight, retrieval_top_k, knowledge_base:
            Retrieval defaults read by `generate` (mode, the weight W of eq. 4, the number of retrieved pairs, and the
            knowledge base's hub id or local path).
        max_example_caption_tokens (`int`, *optional*):
            LM tokens a retrieved caption keeps in a pass-2 prompt at most (longer ones are cut on a token boundary,
            with a warning naming their KB rows); None: no cut. The default, 192, is above every AudioCaps and Clotho
            caption, which take at most 161 tokens even with the tiny test tokenizer's 400-token vocabulary.
        query_max_new_tokens (`int`, *optional*):
            Tokens the zero-shot pass of generative pair-to-pair retrieval (whose caption only feeds retrieval) decodes
            at most; None: as many as the final pass (`max_new_tokens`).
        share_prompt_prefix (`bool`):
            Whether `generate` computes the KV cache of the system text every prompt starts with once and starts every
            prompt of both passes from it (same tokens; `generate(..., share_prefix=False)` turns it off per call).
        rescore (`str`, *optional*), num_candidates (`int`), rescore_weight (`float`), rescore_query (`bool`):
            Caption rescoring defaults read by `generate`: None (off), or `clap` (CLAP-Refine: `num_candidates` beam
            candidates per query, the best by `rescore_weight` x CLAP audio-text similarity + (1 - `rescore_weight`)
            x length-normalised LM log-probability; `rescore_query`: the zero-shot pass too).
    """

    model_type = "paircap"
    sub_configs_defaults = {
        "clap_config": SubConfigSpec(config_class=AutoConfig, model_type="clap"),
        "text_config": SubConfigSpec(config_class=AutoConfig, model_type="llama"),
    }

    clap_config: dict | PreTrainedConfig | None = None
    text_config: dict | PreTrainedConfig | None = None
    audio_token_id: int = 32000
    long_audio_token_id: int = 32001
    audio_pool_stride: int = 2
    audio_window_seconds: float = 10.0
    max_audio_windows: int = 3
    separate_audio_tower: bool = False
    projector_hidden_act: str = "gelu"
    projector_bias: bool = True
    retrieval_mode: str = "generative_pair2pair"
    fusion_weight: float = 0.5
    retrieval_top_k: int = 5
    knowledge_base: str | None = None
    max_example_caption_tokens: int | None = 192
    query_max_new_tokens: int | None = None
    share_prompt_prefix: bool = True
    rescore: str | None = None
    num_candidates: int = 5
    rescore_weight: float = 0.5
    rescore_query: bool = False
    tie_word_embeddings: bool = False

    def __post_init__(self, **kwargs):
        super().__post_init__(**kwargs)
        check_retrieval_mode(self.retrieval_mode)
        if not 0.0 <= self.fusion_weight <= 1.0:
            raise ValueError(f"fusion_weight must lie in [0, 1], got {self.fusion_weight}")
        check_rescoring(self.rescore, self.num_candidates, self.rescore_weight)
        if self.max_example_caption_tokens is not None and self.max_example_caption_tokens < 1:
            raise ValueError(
                "max_example_caption_tokens must be at least 1 (or None: no cut), got "
                f"{self.max_example_caption_tokens}"
            )
        if self.query_max_new_tokens is not None and self.query_max_new_tokens < 1:
            raise ValueError(
                f"query_max_new_tokens must be at least 1 (or None: as max_new_tokens), got {self.query_max_new_tokens}"
            )
        if self.encoder_tokens_per_window % self.audio_pool_stride:
            raise ValueError(
                f"audio_pool_stride={self.audio_pool_stride} must divide the {self.encoder_tokens_per_window} "
                "encoder tokens of a window"
            )

    @property
    def encoder_hidden_size(self) -> int:
        """Width of the CLAP audio encoder's last hidden state (768 for HTSAT-tiny)."""
        audio = self.clap_config.audio_config
        return audio.patch_embeds_hidden_size * 2 ** (len(audio.depths) - 1)

    @property
    def encoder_tokens_per_window(self) -> int:
        """Tokens in the encoder's last hidden state per window: (spec_size / (patch * 2^(stages-1)))^2 = 64."""
        audio = self.clap_config.audio_config
        side = audio.spec_size // (audio.patch_stride[0] * 2 ** (len(audio.depths) - 1))
        return side * side

    @property
    def audio_tokens_per_window(self) -> int:
        """Pooled tokens one window contributes to the language model prompt."""
        return self.encoder_tokens_per_window // self.audio_pool_stride


__all__ = ["PairCapConfig"]
