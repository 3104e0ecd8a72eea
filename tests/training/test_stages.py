"""Trainable parameter sets of each stage, and full-size counts on the meta device."""

import copy

import pytest
import torch

from modeling_paircap.modeling_paircap import PairCapForConditionalGeneration
from paircap.param_report import parameter_report
from paircap.training.config import TrainConfig
from paircap.training.stage_setups import optimizer_groups
from paircap.training.trainable_parameters import (
    configure_stage1,
    configure_stage2,
    merge_ia3,
    trainable_parameter_count,
)


def trainable_names(model) -> set[str]:
    return {name for name, parameter in model.named_parameters() if parameter.requires_grad}


@pytest.fixture
def fresh_model(tiny_release):
    _, model, _ = tiny_release
    return copy.deepcopy(model)


def test_stage1_trains_only_the_projector(fresh_model):
    configure_stage1(fresh_model)
    names = trainable_names(fresh_model)
    assert names == {name for name, _ in fresh_model.named_parameters() if name.startswith("multi_modal_projector.")}
    assert len(names) == 4


def test_stage2_trains_ia3_head_projector_and_audio_tower(fresh_model):
    clap_before = {name: tensor.clone() for name, tensor in fresh_model.clap.state_dict().items()}
    retrieval_fingerprint = fresh_model.retrieval_fingerprint()
    configure_stage2(fresh_model)
    names = trainable_names(fresh_model)
    ia3 = {n for n in names if "ia3_l" in n}
    layers = fresh_model.config.text_config.num_hidden_layers
    assert len(ia3) == 3 * layers  # k_proj, v_proj, down_proj per layer
    assert {n.split(".")[-3] for n in ia3} == {"k_proj", "v_proj", "down_proj"}
    # the captioning tower trains as a separate copy of the CLAP's audio tower; the whole CLAP (retrieval) is frozen
    expected_prefixes = ("multi_modal_projector.", "language_model.lm_head.", "audio_tower.")
    assert names - ia3 == {n for n, _ in fresh_model.named_parameters() if n.startswith(expected_prefixes)}
    assert not any(n.startswith("clap.") for n in names)
    frozen_markers = ("embed_tokens", "text_model", "audio_projection", "text_projection", "q_proj.base_layer")
    assert not any(marker in n for marker in frozen_markers for n in names)
    tower, clap_tower = fresh_model.audio_tower, fresh_model.clap.audio_model
    assert fresh_model.config.separate_audio_tower and fresh_model.get_audio_tower() is tower
    clap_tensors = {tensor.data_ptr() for tensor in clap_tower.state_dict().values()}
    for name, tensor in tower.state_dict().items():  # a copy: equal weights, storage of its own
        torch.testing.assert_close(tensor, clap_tower.state_dict()[name], rtol=0, atol=0)
        assert tensor.data_ptr() not in clap_tensors, name
    with torch.no_grad():  # training the tower leaves the retrieval space (and every KB embedded in it) untouched
        for parameter in tower.parameters():
            parameter.add_(0.01)
    assert fresh_model.retrieval_fingerprint() == retrieval_fingerprint
    for name, tensor in fresh_model.clap.state_dict().items():
        torch.testing.assert_close(tensor, clap_before[name], rtol=0, atol=0)
    configure_stage2(fresh_model, train_audio_encoder=False)
    assert not any(n.startswith(("clap.", "audio_tower.")) for n in trainable_names(fresh_model))
    # IA3 starts as the identity: outputs are unchanged until it trains
    assert all(torch.all(p == 1) for n, p in fresh_model.named_parameters() if "ia3_l" in n)


def test_stage2_trains_its_audio_tower_and_lm_head_at_the_encoder_rate(fresh_model, tiny_release, tmp_path):
    def config(stage: str) -> TrainConfig:
        folder = str(tiny_release[0])
        return TrainConfig(
            stage, folder, output_dir=str(tmp_path), train_pairs=[folder], learning_rate=1e-3, encoder_lr_scale=0.1
        )

    configure_stage2(fresh_model)
    fast, slow = optimizer_groups(config("raft"), fresh_model)
    names = {id(parameter): name for name, parameter in fresh_model.named_parameters()}
    assert fast["lr"] == 1e-3 and slow["lr"] == pytest.approx(1e-4)
    slow_names = {names[id(parameter)] for parameter in slow["params"]}
    assert slow_names and all(name.startswith(("audio_tower.", "language_model.lm_head.")) for name in slow_names)
    assert {name.split(".")[0] for name in slow_names} == {"audio_tower", "language_model"}
    assert {names[id(p)] for p in fast["params"]} | slow_names == trainable_names(fresh_model)
    configure_stage1(fresh_model)  # stage 1 has one rate: its projector's
    (group,) = optimizer_groups(config("alignment"), fresh_model)
    assert group["lr"] == 1e-3 and {names[id(p)] for p in group["params"]} == trainable_names(fresh_model)


def test_stage2_can_keep_the_lm_head_frozen(fresh_model):
    configure_stage2(fresh_model, train_lm_head=False)  # IA3 only in the LM: the paper's set less the head
    names = trainable_names(fresh_model)
    assert not any(n.startswith("language_model.lm_head.") for n in names)
    assert {n for n in names if n.startswith("language_model.")} == {n for n in names if "ia3_l" in n}
    configure_stage2(fresh_model, train_language_model=True, train_lm_head=False)  # the decoder, not its head
    names = trainable_names(fresh_model)
    assert any(".layers.0.mlp." in n for n in names) and not any("lm_head" in n or "embed_tokens" in n for n in names)


def test_stage2_ia3_is_identity_at_start(tiny_release, fresh_model, sine_wave):
    _, model, processor = tiny_release
    configure_stage2(fresh_model)
    inputs = processor(audio=[sine_wave(2)], sampling_rate=48000)
    with torch.no_grad():
        torch.testing.assert_close(fresh_model(**inputs).logits, model(**inputs).logits)


def test_merged_ia3_gives_the_logits_of_the_peft_wrapped_model(fresh_model, tiny_release, sine_wave):
    _, _, processor = tiny_release
    configure_stage2(fresh_model)
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():  # trained-looking IA3 vectors, so the merge has something to fold in
        for name, parameter in fresh_model.named_parameters():
            if "ia3_l" in name:
                parameter.copy_(1 + 0.5 * torch.randn(parameter.shape, generator=generator))
    fresh_model.eval()
    merged = merge_ia3(fresh_model.config, fresh_model.state_dict())
    assert not any("ia3_l" in name or "base_layer" in name for name in merged)
    plain = PairCapForConditionalGeneration(fresh_model.config).eval()
    plain.load_state_dict(merged, strict=True)
    inputs = processor(audio=[sine_wave(2)], sampling_rate=48000)
    with torch.no_grad():
        torch.testing.assert_close(plain(**inputs).logits, fresh_model(**inputs).logits)
    assert any("ia3_l" in name for name in fresh_model.state_dict())  # the trained model itself is left as it was


def test_full_size_counts_on_the_meta_device():
    report = parameter_report()
    components, trainable = report["components"], report["trainable"]
    hidden, layers, intermediate, vocab = 4096, 32, 11008, 32002
    assert components["lm_head"] == components["lm_input_embeddings"] == vocab * hidden
    assert components["ia3"] == layers * (hidden + hidden + intermediate)
    assert components["projector"] == 768 * hidden + hidden + hidden * hidden + hidden
    assert 6.4e9 < components["lm_decoder"] < 6.6e9
    assert 27e6 < components["clap_audio_tower"] < 29e6
    assert trainable["stage1_projector"] == components["projector"]
    assert trainable["stage2_projector_ia3_lm_head"] == components["projector"] + components["ia3"] + vocab * hidden
    audio_projection = 768 * 512 + 512 + 512 * 512 + 512  # CLAP's projection: not part of the captioning tower
    assert components["separate_audio_tower"] == components["clap_audio_tower"] - audio_projection
    assert trainable["stage2_with_audio_encoder"] == (
        trainable["stage2_projector_ia3_lm_head"] + components["separate_audio_tower"]
    )
    assert components["total"] == sum(v for k, v in components.items() if k != "total")
    assert trainable_parameter_count(torch.nn.Linear(2, 2)) == 6


def test_frozen_parts_stay_in_eval_mode(fresh_model):
    from paircap.training.trainable_parameters import set_training_mode

    configure_stage1(fresh_model)
    set_training_mode(fresh_model)
    assert fresh_model.multi_modal_projector.training
    assert not fresh_model.clap.audio_model.training and not fresh_model.language_model.training
    configure_stage2(fresh_model)
    set_training_mode(fresh_model)
    assert fresh_model.audio_tower.training and fresh_model.language_model.training
    # the CLAP is the frozen retrieval space: both of its towers stay in eval mode
    assert not fresh_model.clap.audio_model.training and not fresh_model.clap.text_model.training
