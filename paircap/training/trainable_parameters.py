"""Which parameters train in each stage of the paper's recipe (§3.2, §4.1), and parameter counts per component."""

from collections import OrderedDict
from collections.abc import Sequence

import torch
from peft import IA3Config, IA3Model, inject_adapter_in_model

from modeling_paircap.configuration_paircap import PairCapConfig
from modeling_paircap.modeling_paircap import PairCapForConditionalGeneration

# peft's default IA3 targets for Llama: rescale keys, values and the feed-forward input of the down projection
IA3_TARGET_MODULES = ("k_proj", "v_proj", "down_proj")
IA3_FEEDFORWARD_MODULES = ("down_proj",)


def configure_stage1(model: PairCapForConditionalGeneration) -> None:
    """Stage 1, alignment: only the projector trains; CLAP and the language model are frozen."""
    model.requires_grad_(False)
    model.multi_modal_projector.requires_grad_(True)


def ia3_config() -> IA3Config:
    return IA3Config(
        target_modules=list(IA3_TARGET_MODULES), feedforward_modules=list(IA3_FEEDFORWARD_MODULES), task_type=None
    )


def add_ia3(model: PairCapForConditionalGeneration) -> None:
    """Inject IA3 scaling vectors into the language model (in place; idempotent)."""
    if not any("ia3_l" in name for name, _ in model.language_model.named_parameters()):
        inject_adapter_in_model(ia3_config(), model.language_model)


def configure_stage2(
    model: PairCapForConditionalGeneration,
    train_audio_encoder: bool = True,
    train_language_model: bool = False,
    train_lm_head: bool = True,
) -> None:
    """
    Stage 2, RAFT: IA3 on the language model, its LM head, the projector and (unfrozen, paper §4.1) the captioning
    audio tower (HTSAT) train; input embeddings and the LM's own weights stay frozen, and so does the whole CLAP, the
    retrieval space: the trained tower is a separate copy of the CLAP's audio tower (`separate_audio_tower`), so every
    knowledge base's embeddings stay valid. `train_language_model` also trains the LM's own weights (not the paper's
    recipe: for a small LM trained from scratch, whose IA3 rescaling alone does not learn to read audio tokens);
    `train_lm_head` false keeps the LM head frozen (so no word the training captions never use is trained away).
    """
    add_ia3(model)
    model.requires_grad_(False)
    model.multi_modal_projector.requires_grad_(True)
    for name, parameter in model.language_model.named_parameters():
        if "ia3_l" in name:
            parameter.requires_grad_(True)
    if train_language_model:  # a small LM trained from scratch (the mini recipe): its decoder learns too
        model.language_model.requires_grad_(True)
        model.get_input_embeddings().requires_grad_(False)
    model.get_output_embeddings().requires_grad_(train_lm_head)
    if train_audio_encoder:
        model.separate_audio_tower().requires_grad_(True)


def component_parameter_counts(model: PairCapForConditionalGeneration) -> "OrderedDict[str, int]":
    """Parameters per component (IA3 vectors counted separately when present)."""
    clap, lm = model.clap, model.language_model
    embeddings, head = model.get_input_embeddings(), model.get_output_embeddings()
    ia3 = sum(p.numel() for name, p in lm.named_parameters() if "ia3_l" in name)
    counts = OrderedDict(
        clap_audio_tower=count(clap.audio_model) + count(clap.audio_projection),
        clap_text_tower=count(clap.text_model) + count(clap.text_projection),
        clap_logit_scales=clap.logit_scale_a.numel() + clap.logit_scale_t.numel(),
        separate_audio_tower=count(model.audio_tower) if model.config.separate_audio_tower else 0,
        projector=count(model.multi_modal_projector),
        lm_input_embeddings=count(embeddings),
        lm_decoder=count(lm) - count(embeddings) - count(head) - ia3,
        lm_head=count(head),
        ia3=ia3,
    )
    counts["total"] = sum(counts.values())
    return counts


def trainable_parameter_count(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def count(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def merge_ia3(config: PairCapConfig, state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """
    The full `state_dict` of a trained release with its IA3 vectors folded into the weights they scale (peft's
    `merge_and_unload`): the plain layers' state dict, for export. The model it is merged in is built on the meta
    device and takes the given tensors, so no second copy of the weights is made; `state_dict` without IA3 comes back
    as it is.
    """
    if not any(".ia3_l." in name for name in state_dict):
        return state_dict
    with torch.device("meta"):
        model = PairCapForConditionalGeneration(config)
        tuner = IA3Model(model.language_model, ia3_config(), "default")
    model.load_state_dict(state_dict, assign=True)
    tuner.merge_and_unload()
    return model.state_dict()


def set_training_mode(model: PairCapForConditionalGeneration) -> None:
    """Train mode for the parts that learn and eval mode for frozen ones (stage 1 freezes CLAP; stage 2 never trains
    the CLAP text tower)."""
    parts = (
        model.clap.audio_model,
        model.clap.text_model,
        model.get_audio_tower(),
        model.multi_modal_projector,
        model.language_model,
    )
    train_with_frozen_parts_in_eval(model, parts)


def train_with_frozen_parts_in_eval(model: torch.nn.Module, parts: Sequence[torch.nn.Module]) -> None:
    """Train mode for `model`, eval mode for each of `parts` that has no trainable parameter, so a frozen encoder's
    batch-norm statistics and dropout never change."""
    model.train()
    for part in parts:
        if not any(parameter.requires_grad for parameter in part.parameters()):
            part.eval()
