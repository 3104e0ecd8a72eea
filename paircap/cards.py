"""Model cards rendered from the templates in `hub_cards/`."""

import json
import os
from importlib.resources import files
from pathlib import Path

from huggingface_hub import EvalResult, ModelCard, ModelCardData

from modeling_paircap.configuration_paircap import PairCapConfig


def render_model_card(
    config: PairCapConfig,
    repo_id: str = "org/paircap",
    training_status: str | None = None,
    parameter_table: str | None = None,
    base_models: list[str] | None = None,
    eval_results: list[EvalResult] | None = None,
) -> ModelCard:
    """
    Fill `hub_cards/model_card.md` from a PairCap config, with an optional status line, parameter table and the
    `model-index` results that `paircap evaluate` writes (`load_eval_results(".../model_index.json")`).
    """
    text = config.text_config
    card_data = ModelCardData(
        language="en",
        license="apache-2.0",
        library_name="transformers",
        pipeline_tag="audio-text-to-text",
        tags=["audio-captioning", "retrieval-augmented-generation", "clap", "custom_code"],
        base_model=base_models,
        model_name=repo_id.split("/")[-1],
        eval_results=eval_results,
    )
    return ModelCard.from_template(
        card_data,
        template_path=str(files("hub_cards") / "model_card.md"),
        model_name=repo_id.split("/")[-1],
        repo_id=repo_id,
        training_status=training_status,
        parameter_table=parameter_table,
        encoder_hidden_size=config.encoder_hidden_size,
        encoder_tokens_per_window=config.encoder_tokens_per_window,
        window_seconds=config.audio_window_seconds,
        audio_pool_stride=config.audio_pool_stride,
        audio_tokens_per_window=config.audio_tokens_per_window,
        max_audio_windows=config.max_audio_windows,
        separate_audio_tower=config.separate_audio_tower,
        max_seconds=config.max_audio_windows * config.audio_window_seconds,
        projector_hidden_act=config.projector_hidden_act,
        lm_description=f"{text.model_type}, {text.num_hidden_layers} layers, hidden {text.hidden_size}, "
        f"vocabulary {text.vocab_size}",
        retrieval_mode=config.retrieval_mode,
        fusion_weight=config.fusion_weight,
        retrieval_top_k=config.retrieval_top_k,
        knowledge_base=config.knowledge_base or "none set",
    )


def load_eval_results(path: str | os.PathLike) -> list[EvalResult]:
    """The results `paircap evaluate` saved in `model_index.json`, ready for `render_model_card(eval_results=...)`."""
    return [EvalResult(**entry) for entry in json.loads(Path(path).read_text())]
