"""Stage 2 in-process on the tiny release: its peft adapter on the untrained release gives the merged export's logits
and captions, its checkpoints hold only the trainable state (with the byte ratio against a whole-model save), and a
resume from them ends bit-identical."""

import copy
import json
import shutil
from pathlib import Path

import pytest
import torch
from datasets import Dataset
from peft import PeftModel
from safetensors.torch import load_file, save_model

from modeling_paircap.modeling_paircap import PairCapForConditionalGeneration
from modeling_paircap.processing_paircap import PairCapProcessor
from paircap.param_report import checkpoint_bytes, parameter_report
from paircap.training.adapters import (
    ADAPTER_CONFIG_NAME,
    ADAPTER_WEIGHTS_NAME,
    adapter_state_dict,
    load_adapter,
    trained_modules,
)
from paircap.training.checkpoints import checkpoint_problem
from paircap.training.config import TrainConfig
from paircap.training.errors import CheckpointError
from paircap.training.loop import train
from paircap.training.trainable_parameters import configure_stage2

STEPS, SAVE_EVERY, STOP_AT = 4, 2, 2


@pytest.fixture(scope="module")
def clotho_pairs(clotho_clips, tmp_path_factory) -> Path:
    rows = [
        {"pair_id": f"clotho/train/{path.name}/0", "audio_id": path.name, "caption": captions[0],
         "audio": {"path": str(path), "bytes": None}, "source": "clotho", "split": "train", "duration": None}
        for path, captions in clotho_clips[:4]
    ]  # fmt: skip
    folder = tmp_path_factory.mktemp("pairs") / "train"
    Dataset.from_list(rows).save_to_disk(str(folder))
    return folder


@pytest.fixture(scope="module")
def runs(tiny_release, clotho_pairs, tmp_path_factory):
    """(config maker, folder of an uninterrupted stage-2 run, folder of one stopped after STOP_AT steps)."""
    release, _, _ = tiny_release
    root = tmp_path_factory.mktemp("raft")

    def make(output_dir: Path, **overrides) -> TrainConfig:
        settings = {
            "stage": "raft", "model_name_or_path": str(release), "train_pairs": [str(clotho_pairs)],
            "max_steps": STEPS, "save_every": SAVE_EVERY, "per_device_batch_size": 2, "num_workers": 0,
            "warmup_ratio": 0.0, "log_every": 1, "learning_rate": 1e-2, **overrides,
        }  # fmt: skip
        return TrainConfig(output_dir=str(output_dir), **settings)

    train(make(root / "whole"))
    train(make(root / "stopped", stop_after_steps=STOP_AT))
    return make, root / "whole", root / "stopped"


def clip_inputs(processor: PairCapProcessor, clotho_clips) -> dict:
    return processor(audio=[str(clotho_clips[0][0])])


def test_the_adapter_on_the_untrained_release_gives_the_merged_exports_outputs(tiny_release, runs, clotho_clips):
    release, untrained, processor = tiny_release
    _, whole, _ = runs
    adapter = whole / "adapter"
    config = json.loads((adapter / ADAPTER_CONFIG_NAME).read_text())
    assert config["peft_type"] == "IA3" and config["base_model_name_or_path"] == str(release)
    assert config["modules_to_save"] == ["multi_modal_projector", "language_model.lm_head", "audio_tower"]
    merged = PairCapForConditionalGeneration.from_pretrained(whole / "release").eval()
    inputs = clip_inputs(processor, clotho_clips)
    with torch.no_grad():
        expected, before = merged(**inputs).logits, untrained.eval()(**inputs).logits
    assert (expected - before).abs().max() > 1e-2  # the adapter has trained something to carry
    # the untrained release has no separate audio tower yet: load_adapter makes it, then PeftModel.from_pretrained
    with_helper = load_adapter(PairCapForConditionalGeneration.from_pretrained(release), adapter).eval()
    base = PairCapForConditionalGeneration.from_pretrained(release)
    base.separate_audio_tower()
    plain = PeftModel.from_pretrained(base, adapter).eval()
    for model in (with_helper, plain):
        with torch.no_grad():
            torch.testing.assert_close(model(**inputs).logits, expected, rtol=1e-4, atol=1e-4)
    greedy = {"max_new_tokens": 8, "do_sample": False}
    with torch.no_grad():
        assert torch.equal(with_helper.generate(**inputs, **greedy), merged.generate(**inputs, **greedy))
    # the trained tower is the separate one: the CLAP, the retrieval space every knowledge base lives in, is untouched
    assert with_helper.get_base_model().retrieval_fingerprint() == untrained.retrieval_fingerprint()
    tensors = load_file(adapter / ADAPTER_WEIGHTS_NAME)
    assert not any(name.startswith("base_model.model.clap.") or "base_layer" in name for name in tensors)


def test_a_checkpoint_holds_the_trainable_state_only(tiny_release, runs, capsys):
    release, _, _ = tiny_release
    _, whole, _ = runs
    checkpoint = whole / "checkpoints" / f"step-{STEPS:08d}"
    assert checkpoint_problem(checkpoint) is None
    saved = load_file(checkpoint / "model.safetensors")
    model = PairCapForConditionalGeneration.from_pretrained(release)
    configure_stage2(model)  # the model the run trained: IA3 injected, the audio tower separated
    trainable = {name for name, parameter in model.named_parameters() if parameter.requires_grad}
    frozen = {name for name, parameter in model.named_parameters() if not parameter.requires_grad}
    assert frozen and not any("ia3_l" in name for name in frozen)
    buffers = {name for name, _ in model.named_buffers()}
    assert trainable <= saved.keys() <= trainable | buffers and not saved.keys() & frozen
    decoder = [n for n in saved if n.startswith("language_model.model.")]
    assert decoder and all(n.endswith(".ia3_l.default") for n in decoder)  # no LM weight but the IA3 vectors
    assert not any(n.startswith("clap.") and n not in buffers for n in saved)
    # bytes against today's whole-model save: the same optimizer and RNG files, the model file with every weight
    lean = sum(path.stat().st_size for path in checkpoint.iterdir())
    save_model(model, str(checkpoint.parent / "whole-model.safetensors"))
    whole_model = lean - (checkpoint / "model.safetensors").stat().st_size
    whole_model += (checkpoint.parent / "whole-model.safetensors").stat().st_size
    report = parameter_report()
    full = report["stage2_checkpoint_bytes"]
    assert full == checkpoint_bytes(report["components"]["total"], report["trainable"]["stage2_with_audio_encoder"])
    with capsys.disabled():
        print(
            f"\nstage-2 checkpoint, tiny: {lean:,} B vs {whole_model:,} B whole-model (ratio {lean / whole_model:.3f});"
            f" full size (estimate): {full['trainable_state'] / 1e9:.2f} GB vs {full['whole_model'] / 1e9:.2f} GB"
            f" (ratio {full['trainable_state'] / full['whole_model']:.3f})"
        )
    # what the lean checkpoint leaves out is exactly the frozen weights (up to the file header's entries for them)
    frozen_bytes = sum(model.get_parameter(name).nbytes for name in frozen)
    assert 0 <= (whole_model - lean) - frozen_bytes < 200 * len(frozen)
    assert full["trainable_state"] / full["whole_model"] < 0.1


def test_resume_from_a_trainable_state_checkpoint_ends_bit_identical(runs, tmp_path):
    make, whole, stopped = runs
    folder = tmp_path / "run"
    shutil.copytree(stopped, folder)
    assert not (folder / "release").exists()
    train(make(folder, resume=True))
    for name in ("release/model.safetensors", "adapter/adapter_model.safetensors"):
        resumed, expected = load_file(folder / name), load_file(whole / name)
        assert resumed.keys() == expected.keys()
        assert all(torch.equal(resumed[key], expected[key]) for key in expected), name


def test_resume_refuses_another_release_or_other_trained_parts(tiny_release, runs, tmp_path):
    release, _, _ = tiny_release
    make, _, stopped = runs
    folder = tmp_path / "run"
    shutil.copytree(stopped, folder)
    other = tmp_path / "other-release"
    shutil.copytree(release, other)
    with pytest.raises(CheckpointError, match=f"was trained from {release}, not {other}"):
        train(make(folder, resume=True, model_name_or_path=str(other)))
    with pytest.raises(CheckpointError, match=r"model.safetensors: holds \d+ tensors this run does not train"):
        train(make(folder, resume=True, train_audio_encoder=False))


def test_an_adapter_refuses_trained_weights_it_cannot_hold(tiny_release):
    _, untrained, _ = tiny_release
    model = copy.deepcopy(untrained)
    configure_stage2(model, train_language_model=True)  # the whole decoder trains: only the merged export holds it
    with pytest.raises(ValueError, match="outside IA3"):
        adapter_state_dict(model, model.state_dict(), trained_modules(model))
