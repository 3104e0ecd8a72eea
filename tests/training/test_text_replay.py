"""Stage 2's text replay (`text_replay_pairs`): the LM's caption-text loss added to the captioning loss in training
mode, drawn through torch's RNG (which the loop seeds per batch), and a raft setup built with it and a frozen LM head
(`train_lm_head`); the settings both accept."""

import copy

import pytest
import torch
from accelerate import Accelerator
from datasets import Dataset

from paircap.training.config import TrainConfig
from paircap.training.stage_setups import build_setup
from paircap.training.text_replay import TextReplay

TEMPLATE = "USER: {keywords} ASSISTANT: {caption}"


def config(**values) -> TrainConfig:
    return TrainConfig(**{"stage": "raft", "model_name_or_path": "m", "output_dir": "o", "train_pairs": ["p"]} | values)


@pytest.mark.parametrize(
    "values",
    [
        {"text_replay_pairs": ["text"]},  # no weight
        {"text_replay_weight": 1.0},  # no text
        {"text_replay_pairs": ["text"], "text_replay_weight": -1.0},
        {"text_replay_pairs": ["text"], "text_replay_weight": 1.0, "stage": "alignment"},
        {"text_replay_pairs": ["text"], "text_replay_weight": 1.0, "text_replay_batch_size": 0},
        {"train_lm_head": False, "stage": "alignment"},
    ],
)
def test_replay_and_head_settings_are_checked(values):
    with pytest.raises(ValueError, match="text_replay|train_lm_head"):
        config(**values)


def test_the_replayed_text_loss_is_added_in_training_mode_only(tiny_release, sine_wave, tmp_path):
    _, model, processor = tiny_release
    model = copy.deepcopy(model)
    text = tmp_path / "text"
    Dataset.from_dict({"caption": ["a dog barks loudly", "rain falls on a roof", "a frog croaks"]}).save_to_disk(text)
    cfg = config(text_replay_pairs=[str(text)], text_replay_weight=0.5, text_template=TEMPLATE, per_device_batch_size=2)
    replay = TextReplay(cfg, processor.tokenizer)
    assert len(replay.texts) == 3 and replay.batch_size == 2
    batch = processor(audio=[sine_wave(1)], sampling_rate=48000, captions=["a bell rings"])

    def captioning(model, batch):
        return model(**batch).loss

    loss = replay.loss(captioning)
    model.eval()
    with torch.no_grad():
        assert loss(model, batch) == captioning(model, batch)  # the validation loss stays the captions'
        model.train()
        torch.manual_seed(3)
        total = loss(model, batch)
        torch.manual_seed(3)  # the same draws in the same order: the texts' own loss, as the LM stage computes it
        expected = captioning(model, batch)
        texts = replay.batch(torch.device("cpu"))
        assert texts["input_ids"].shape[0] == 2 and (texts["labels"] != -100).any()
        expected = expected + 0.5 * model(**texts).loss
    torch.testing.assert_close(total, expected)
    assert tuple(texts) == ("input_ids", "attention_mask", "labels")


def test_a_raft_setup_replays_its_text_and_can_keep_the_head_frozen(tiny_release, clotho_clips, tmp_path):
    release, _, _ = tiny_release
    rows = [
        {"pair_id": f"clotho/{path.name}", "audio_id": path.name, "caption": captions[0],
         "audio": {"path": str(path), "bytes": None}, "source": "clotho", "duration": None}
        for path, captions in clotho_clips[:2]
    ]  # fmt: skip
    Dataset.from_list(rows).save_to_disk(tmp_path / "pairs")
    Dataset.from_dict({"caption": ["a dog barks", "a frog croaks"]}).save_to_disk(tmp_path / "text")
    cfg = config(
        model_name_or_path=str(release), output_dir=str(tmp_path / "run"), train_pairs=[str(tmp_path / "pairs")],
        text_replay_pairs=[str(tmp_path / "text")], text_replay_weight=1.0, train_lm_head=False, num_workers=0,
    )  # fmt: skip
    setup = build_setup(cfg, Accelerator(cpu=True))
    model = setup.model
    assert not model.get_output_embeddings().weight.requires_grad
    assert any(parameter.requires_grad for name, parameter in model.named_parameters() if "ia3_l" in name)
    batch = setup.collator([setup.train.dataset[0], setup.train.dataset[1]])
    with torch.no_grad():
        captions = model.eval()(**batch).loss
        assert setup.loss(model, batch) == captions  # validation: the captions' loss alone
        assert setup.loss(model.train(), batch) > model(**batch).loss  # training: plus the replayed text's
