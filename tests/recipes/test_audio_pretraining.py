"""Stage `clap_audio`: the CLAP stand-in's audio tower pretrained on teacher targets, resumable, exported whole."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from transformers import ClapAudioModel, ClapModel

from modeling_paircap.feature_extraction_paircap import TorchClapFeatures
from recipes.mini.local import audio_pretraining
from recipes.mini.local.audio_pretraining import (
    TowerWithTeacherHeads,
    clap_start,
    export_clap,
    labelled_bank,
    pretrain_audio_tower,
    tower_from,
    train_tower,
)
from recipes.mini.local.layout import MiniRun
from recipes.mini.local.models import mini_clap_config, mini_feature_extractor
from recipes.mini.local.scales import load_scale

STEPS = 4


@pytest.fixture
def init_clap(tmp_path):
    """A mini CLAP folder as stage `init` writes it (model and feature extractor; the tokenizer is not read here)."""
    folder = tmp_path / "init" / "clap"
    torch.manual_seed(0)
    ClapModel(mini_clap_config(100)).save_pretrained(folder)
    mini_feature_extractor().save_pretrained(folder)
    return folder


def tiny_bank(rows: int = 6) -> dict:
    features = TorchClapFeatures(mini_feature_extractor())
    shape = features(features.pad_windows([np.zeros(4800, dtype=np.float32)])[0]).shape[1:]
    generator = torch.Generator().manual_seed(1)
    return {
        "inputs": torch.randn(rows, *shape, generator=generator).half(),
        "logits": torch.randn(rows, 5, generator=generator),
        "embeddings": torch.randn(rows, 8, generator=generator),
    }


def fresh_model(init_clap) -> TowerWithTeacherHeads:
    torch.manual_seed(0)
    return TowerWithTeacherHeads(tower_from(init_clap), 8, 5)


def test_training_resumes_from_its_checkpoint_with_the_same_weights(init_clap, tmp_path, monkeypatch):
    bank = tiny_bank()
    whole = fresh_model(init_clap)
    train_tower(whole, bank, STEPS, seed=0, checkpoint=tmp_path / "whole.pt")

    monkeypatch.setattr(audio_pretraining, "CHECKPOINT_EVERY", 2)
    mask, calls = audio_pretraining.mask, []

    def interrupted_mask(inputs, generator):
        calls.append(1)
        if len(calls) == 3:  # killed during step 3, after the checkpoint of step 2
            raise KeyboardInterrupt
        return mask(inputs, generator)

    monkeypatch.setattr(audio_pretraining, "mask", interrupted_mask)
    with pytest.raises(KeyboardInterrupt):
        train_tower(fresh_model(init_clap), bank, STEPS, seed=0, checkpoint=tmp_path / "resumed.pt")
    assert torch.load(tmp_path / "resumed.pt", weights_only=True)["step"] == 2
    resumed = fresh_model(init_clap)
    train_tower(resumed, bank, STEPS, seed=0, checkpoint=tmp_path / "resumed.pt")

    assert len(calls) == STEPS + 1  # steps 1-2, the interrupted 3, then 3-4 again: steps 1-2 were not redone
    for (name, value), other in zip(whole.state_dict().items(), resumed.state_dict().values(), strict=True):
        torch.testing.assert_close(value, other, msg=name)


def test_a_checkpoint_of_another_length_is_refused(init_clap, tmp_path):
    bank, checkpoint = tiny_bank(), tmp_path / "checkpoint.pt"
    train_tower(fresh_model(init_clap), bank, 2, seed=0, checkpoint=checkpoint)
    with pytest.raises(ValueError, match="a run of 2 steps, not 4"):
        train_tower(fresh_model(init_clap), bank, 4, seed=0, checkpoint=checkpoint)


def test_pretraining_turns_dropout_off_and_the_export_carries_the_tower(init_clap, tmp_path):
    tower = tower_from(init_clap)
    assert tower.config.hidden_dropout_prob == tower.config.drop_path_rate == 0.0
    with torch.no_grad():
        for parameter in tower.parameters():
            parameter.add_(1.0)
    export_clap(init_clap, tower, tmp_path / "clap_audio" / "clap")

    exported = ClapModel.from_pretrained(tmp_path / "clap_audio" / "clap")
    initial = ClapModel.from_pretrained(init_clap)
    for name, value in exported.audio_model.state_dict().items():
        torch.testing.assert_close(value, tower.state_dict()[name], msg=name)
    for name, value in exported.text_model.state_dict().items():  # only the audio tower changed
        torch.testing.assert_close(value, initial.text_model.state_dict()[name], msg=name)
    assert exported.config.audio_config.hidden_dropout_prob == 0.2  # the CLAP stage trains with its own dropout
    assert (tmp_path / "clap_audio" / "clap" / "preprocessor_config.json").is_file()
    assert not (tmp_path / "clap_audio" / "clap.tmp").exists()


def test_the_clap_stage_starts_from_the_pretrained_tower_once_it_exists(init_clap, tmp_path):
    run = MiniRun(tmp_path, tmp_path, load_scale("full"))
    assert clap_start(run) == init_clap
    tower = ClapAudioModel(ClapModel.from_pretrained(init_clap).config.audio_config)
    export_clap(init_clap, tower, run.path("clap_audio", "clap"))
    assert clap_start(run) == run.path("clap_audio", "clap")


def test_without_a_teacher_the_stage_writes_nothing(init_clap, tmp_path):
    run = MiniRun(tmp_path, tmp_path, load_scale("full"))
    pretrain_audio_tower(run)
    assert not run.path("clap_audio").exists() and clap_start(run) == init_clap


def test_a_bank_of_another_seed_or_size_is_refused(tmp_path):
    run = MiniRun(tmp_path, tmp_path, load_scale("full"), seed=1)
    bank = tiny_bank() | {"settings": {"seed": 1, "mixtures": run.scale.clap_audio_mixtures}}
    torch.save(bank, tmp_path / "bank.pt")
    assert labelled_bank(run, tmp_path / "bank.pt", None)["settings"]["seed"] == 1
    torch.save(bank | {"settings": {"seed": 0, "mixtures": 8}}, tmp_path / "bank.pt")
    with pytest.raises(ValueError, match="bank.pt: a bank for {'seed': 0, 'mixtures': 8}"):
        labelled_bank(run, tmp_path / "bank.pt", None)
