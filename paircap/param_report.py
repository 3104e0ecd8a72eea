"""Full-size parameter counts without weights: the release configuration built on the meta device."""

import torch
from transformers import LlamaConfig

from modeling_paircap.configuration_paircap import PairCapConfig
from modeling_paircap.modeling_paircap import PairCapForConditionalGeneration
from paircap.convert_laion_clap import htsat_unfused_config
from paircap.lm_configs import caption_lm_config
from paircap.training.trainable_parameters import (
    component_parameter_counts,
    configure_stage1,
    configure_stage2,
    trainable_parameter_count,
)

VICUNA_VOCAB = 32000
ADDED_TOKENS = 2  # <audio> and <long_audio>
FP32_BYTES = 4  # training keeps fp32 weights (mixed precision computes in bf16)
ADAM_STATES = 2  # AdamW's exp_avg and exp_avg_sq per trained parameter, fp32


def vicuna_7b_v1_5_config() -> LlamaConfig:
    """`lmsys/vicuna-7b-v1.5` (Llama-2-7B shape) with the two PairCap tokens added to its vocabulary."""
    return caption_lm_config(VICUNA_VOCAB + ADDED_TOKENS, 4096, 11008, 32, 32, 4096, rms_norm_eps=1e-5, pad_token_id=0)


def release_config(**kwargs) -> PairCapConfig:
    """The release configuration: CLAP HTSAT unfused + Vicuna-7B v1.5, audio tokens appended to the vocabulary."""
    return PairCapConfig(
        clap_config=htsat_unfused_config(),
        text_config=vicuna_7b_v1_5_config(),
        audio_token_id=VICUNA_VOCAB,
        long_audio_token_id=VICUNA_VOCAB + 1,
        **kwargs,
    )


def parameter_report(config: PairCapConfig | None = None) -> dict:
    """Per-component counts and the trainable count of each stage, computed on the meta device (no memory)."""
    with torch.device("meta"):
        model = PairCapForConditionalGeneration(config or release_config())
        configure_stage1(model)
        stage1 = trainable_parameter_count(model)
        configure_stage2(model, train_audio_encoder=False)
        stage2_frozen_encoder = trainable_parameter_count(model)
        configure_stage2(model, train_audio_encoder=True)
        stage2 = trainable_parameter_count(model)
    components = dict(component_parameter_counts(model))
    return {
        "components": components,
        "trainable": {
            "stage1_projector": stage1,
            "stage2_projector_ia3_lm_head": stage2_frozen_encoder,
            "stage2_with_audio_encoder": stage2,
        },
        "paper_reported_trainable": 145_000_000,
        "stage2_checkpoint_bytes": checkpoint_bytes(components["total"], stage2),
    }


def checkpoint_bytes(parameters: int, trainable: int) -> dict[str, int]:
    """
    Bytes of one training checkpoint (fp32 weights, AdamW state): `trainable_state` as PairCap saves it (trained
    weights and optimizer) and `whole_model` as a plain `accelerator.save_state` would (every weight and optimizer).
    """
    optimizer = trainable * FP32_BYTES * ADAM_STATES
    return {"trainable_state": trainable * FP32_BYTES + optimizer, "whole_model": parameters * FP32_BYTES + optimizer}


def format_report(report: dict) -> str:
    """A markdown table of the report."""
    lines = ["| component | parameters |", "|---|---:|"]
    lines += [f"| {name} | {value:,} |" for name, value in report["components"].items()]
    lines += ["", "| trainable set | parameters |", "|---|---:|"]
    lines += [f"| {name} | {value:,} |" for name, value in report["trainable"].items()]
    lines.append(f"| paper (Table 1) | ~{report['paper_reported_trainable']:,} |")
    lines += ["", "| stage-2 checkpoint (fp32, AdamW) | GB |", "|---|---:|"]
    lines += [f"| {name} | {value / 1e9:.2f} |" for name, value in report["stage2_checkpoint_bytes"].items()]
    return "\n".join(lines)
