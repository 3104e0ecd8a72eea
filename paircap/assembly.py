"""Assemble an untrained PairCap release folder from a CLAP checkpoint and a causal language model checkpoint."""

from pathlib import Path

import torch
from huggingface_hub import ModelCard
from transformers import AutoFeatureExtractor, AutoModelForCausalLM, AutoTokenizer, ClapModel
from transformers.tokenization_utils_base import AddedToken

from hub_cards import render_model_card
from modeling_paircap.configuration_paircap import PairCapConfig
from modeling_paircap.modeling_paircap import PairCapAudioProjector, PairCapForConditionalGeneration
from modeling_paircap.pipeline_paircap import DEFAULT_MAX_NEW_TOKENS
from modeling_paircap.processing_paircap import PairCapProcessor

AUDIO_TOKEN = "<audio>"
LONG_AUDIO_TOKEN = "<long_audio>"


def build_processor(clap_path: str, lm_path: str, config: PairCapConfig | None = None, **processor_kwargs):
    """Load both tokenizers and the feature extractor; add the audio and length tokens to the LM tokenizer."""
    tokenizer = AutoTokenizer.from_pretrained(lm_path)
    tokenizer.add_tokens(
        [AddedToken(token, special=True, normalized=False) for token in (AUDIO_TOKEN, LONG_AUDIO_TOKEN)],
        special_tokens=True,
    )
    if tokenizer.pad_token is None:  # Llama / Vicuna have none; batches are padded with unk and masked
        tokenizer.pad_token = tokenizer.unk_token
    if config is not None:
        processor_kwargs.setdefault("audio_tokens_per_window", config.audio_tokens_per_window)
        processor_kwargs.setdefault("window_seconds", config.audio_window_seconds)
        processor_kwargs.setdefault("max_audio_windows", config.max_audio_windows)
    return PairCapProcessor(
        feature_extractor=AutoFeatureExtractor.from_pretrained(clap_path),
        tokenizer=tokenizer,
        clap_tokenizer=AutoTokenizer.from_pretrained(clap_path),
        audio_token=AUDIO_TOKEN,
        long_audio_token=LONG_AUDIO_TOKEN,
        **processor_kwargs,
    )


def assemble_release(
    clap: str,
    language_model: str,
    output_dir: str | Path | None = None,
    dtype: torch.dtype = torch.float32,
    seed: int = 0,
    feature_backend: str = "numpy",
    **config_kwargs,
) -> tuple[PairCapForConditionalGeneration, PairCapProcessor]:
    """
    Build an untrained PairCap model from `clap` (a ClapModel checkpoint: hub id or folder, e.g.
    `laion/clap-htsat-unfused`) and `language_model` (a causal LM: e.g. `lmsys/vicuna-7b-v1.5`). Adds `<audio>` and
    `<long_audio>` to the tokenizer, resizes the LM embeddings (new rows at the mean of the old ones), initialises the
    projector, and writes the release folder (weights, config with `auto_map`, processor, remote code) when
    `output_dir` is given. `feature_backend` is the processor's log-mel implementation (`numpy`: transformers'
    `ClapFeatureExtractor`; `torch`: the same features, batched, several times faster on CPU), which every stage and
    release made from this one inherits. `config_kwargs` set PairCapConfig fields such as `audio_pool_stride` or
    `knowledge_base`.
    """
    clap_model = ClapModel.from_pretrained(clap, dtype=dtype)
    lm = AutoModelForCausalLM.from_pretrained(language_model, dtype=dtype)
    text_config = lm.config
    probe = PairCapConfig(clap_config=clap_model.config, text_config=text_config, **config_kwargs)
    processor = build_processor(clap, language_model, probe, feature_backend=feature_backend)
    config = PairCapConfig(
        clap_config=clap_model.config,
        text_config=text_config,
        audio_token_id=processor.tokenizer.convert_tokens_to_ids(AUDIO_TOKEN),
        long_audio_token_id=processor.tokenizer.convert_tokens_to_ids(LONG_AUDIO_TOKEN),
        **config_kwargs,
    )
    with torch.device("meta"):
        model = PairCapForConditionalGeneration(config)
    model.clap = clap_model
    model.language_model = lm
    torch.manual_seed(seed)
    model.multi_modal_projector = PairCapAudioProjector(config).to(dtype)
    model._init_weights(model.multi_modal_projector)
    model.resize_token_embeddings(len(processor.tokenizer), mean_resizing=True)
    model.config.text_config.vocab_size = len(processor.tokenizer)
    model.generation_config = lm.generation_config
    model.generation_config.pad_token_id = processor.tokenizer.pad_token_id
    set_decoding_defaults(model)
    model.eval()
    if output_dir is not None:
        status = f"untrained: assembled from `{clap}` and `{language_model}`; the projector is randomly initialised."
        card = render_model_card(
            model.config,
            training_status=status,
            base_models=hub_ids(clap, language_model),
            language_model=language_model,
        )
        save_release(model, processor, output_dir, card)
    return model, processor


def set_decoding_defaults(model: PairCapForConditionalGeneration) -> None:
    """
    Give the model's generation config the release's decoding defaults where it has none, so a plain `generate()`
    needs no length argument: `max_new_tokens` as `paircap caption` (40), greedy (the papers state no beam search).
    The config is marked as the release's own rather than derived from the model config.
    """
    generation = model.generation_config
    if generation.max_new_tokens is None:
        generation.max_new_tokens = DEFAULT_MAX_NEW_TOKENS
    generation._from_model_config = False


def hub_ids(*names: str) -> list[str] | None:
    """The names that are hub ids rather than local folders (for the card's `base_model`)."""
    ids = [name for name in names if not Path(name).exists() and name.count("/") == 1]
    return ids or None


def save_release(
    model: PairCapForConditionalGeneration,
    processor: PairCapProcessor,
    output_dir: str | Path,
    card: ModelCard | None = None,
    state_dict: dict[str, torch.Tensor] | None = None,
) -> Path:
    """
    Write weights (safetensors; `state_dict` instead of the model's own, e.g. a gathered full one), generation config
    (with the decoding defaults of `set_decoding_defaults`, set on the model too), processor and card; the model's and
    processor's `save_pretrained` add the remote code with `auto_map` and `custom_pipelines`, and the model's knowledge
    base.
    """
    set_decoding_defaults(model)
    output_dir = Path(output_dir)
    model.save_pretrained(output_dir, state_dict=state_dict)
    processor.save_pretrained(output_dir)
    (card or render_model_card(model.config)).save(output_dir / "README.md")
    return output_dir
