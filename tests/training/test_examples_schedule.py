"""paircap.training.examples_schedule: the progressive schedule's checks, its per-epoch maximum, and the TrainConfig
field through YAML and the command line (the dataset's counts under a schedule: test_training_data.py)."""

import json
from pathlib import Path

import numpy as np
import pytest
import yaml
from accelerate import Accelerator
from datasets import Dataset

from paircap.training.config import TrainConfig, parse_config
from paircap.training.examples_schedule import check_examples_schedule, max_examples_at
from paircap.training.stage_setups import captioning_setup

CONFIGS = Path(__file__).resolve().parents[2] / "configs"


def test_schedule_maximum_per_epoch_holds_the_last():
    schedule = check_examples_schedule([0, 1, 1, 3], 3)
    assert schedule == (0, 1, 1, 3)
    assert [max_examples_at(schedule, epoch) for epoch in range(7)] == [0, 1, 1, 3, 3, 3, 3]
    with pytest.raises(ValueError, match="epoch must be >= 0"):
        max_examples_at(schedule, -1)


@pytest.mark.parametrize(
    ("schedule", "max_examples", "message"),
    [
        ([], 3, "examples_schedule is empty"),
        ([1, 2], 0, r"needs max_examples > 0"),
        ([1, 3, 2, 3], 3, "must never decrease: epoch 2 has maximum 2 after 3"),
        ([1, 4], 3, r"epoch 1 has maximum 4; expected an integer in 0..max_examples=3"),
        ([-1, 3], 3, r"epoch 0 has maximum -1"),
        ([1, 2.5, 3], 3, r"epoch 1 has maximum 2.5"),
        ([True, 3], 3, r"epoch 0 has maximum True"),
        ([1, 2], 3, "must end at max_examples=3 .*, ends at 2"),
    ],
)
def test_bad_schedules_name_the_problem(schedule, max_examples, message):
    with pytest.raises(ValueError, match=message):
        check_examples_schedule(schedule, max_examples)


def test_train_config_checks_the_schedule():
    base = {"stage": "raft", "model_name_or_path": "m", "output_dir": "o", "train_pairs": ["p"], "max_examples": 5}
    assert TrainConfig(**base).examples_schedule == []
    assert TrainConfig(**base, examples_schedule=[1, 3, 5]).examples_schedule == [1, 3, 5]
    with pytest.raises(ValueError, match="must never decrease"):
        TrainConfig(**base, examples_schedule=[2, 1, 5])
    with pytest.raises(ValueError, match="needs max_examples > 0"):
        TrainConfig(**{**base, "max_examples": 0}, examples_schedule=[0])


def test_train_config_checks_the_distractor_share():
    base = {"stage": "raft", "model_name_or_path": "m", "output_dir": "o", "train_pairs": ["p"], "max_examples": 5}
    assert TrainConfig(**base, distractor_share=0.4, shuffle_examples=True).distractor_share == 0.4
    for bad in ({"distractor_share": 1.5}, {"distractor_share": 0.4, "max_examples": 0}):
        with pytest.raises(ValueError, match=r"distractor_share must be in \[0, 1\], and 0 without retrieved pairs"):
            TrainConfig(**{**base, **bad})


def test_schedule_round_trips_through_yaml_and_the_command_line(tmp_path):
    settings = {
        "stage": "raft",
        "model_name_or_path": "m",
        "output_dir": str(tmp_path),
        "train_pairs": ["p"],
        "max_examples": 4,
        "examples_schedule": [1, 2, 2, 4],
    }
    path = tmp_path / "progressive.yaml"
    path.write_text(yaml.safe_dump(settings))
    config = parse_config(["--config", str(path)])
    assert config.examples_schedule == [1, 2, 2, 4] and config.max_examples == 4
    assert yaml.safe_load(yaml.safe_dump({"examples_schedule": config.examples_schedule})) == {
        "examples_schedule": [1, 2, 2, 4]
    }
    assert parse_config(["--config", str(path), "--examples_schedule", "3", "4"]).examples_schedule == [3, 4]
    with pytest.raises(ValueError, match="must end at max_examples=4"):
        parse_config(["--config", str(path), "--examples_schedule", "1", "3"])


def test_shipped_progressive_config_parses():
    config = parse_config(["--config", str(CONFIGS / "stage2_progressive.yaml")])
    assert config.stage == "raft" and config.examples_schedule[-1] == config.max_examples == 5
    assert config.examples_schedule[0] < config.max_examples and len(config.examples_schedule) <= config.num_epochs


def test_stage2_setup_gives_the_training_set_the_schedule_and_distractors(shared_data, tiny_release, tmp_path):
    """The run's setup hands the schedule and the distractor settings to the training set, whose lengths (the
    sampler's) follow them."""
    manifest = json.loads((shared_data / "clotho_eval7" / "manifest.json").read_text())
    rows = [
        {"pair_id": f"clotho/{e['file']}/{k}", "audio_id": e["file"], "caption": e["captions"][k],
         "audio": {"path": str(shared_data / "clotho_eval7" / e["file"]), "bytes": None}, "source": "clotho",
         "split": "train", "duration": None}
        for e in manifest[:4] for k in range(2)
    ]  # fmt: skip
    Dataset.from_list(rows).save_to_disk(str(tmp_path / "pairs"))
    cfg = TrainConfig(
        stage="raft",
        model_name_or_path=str(tiny_release[0]),
        output_dir=str(tmp_path / "run"),
        train_pairs=[str(tmp_path / "pairs")],
        max_examples=2,
        num_neighbors=2,
        examples_schedule=[0, 2],
        distractor_share=0.5,
        shuffle_examples=True,
        num_workers=0,
    )
    setup = captioning_setup(cfg, Accelerator(cpu=True))
    train_set = setup.train.dataset
    assert train_set.examples_schedule == (0, 2) and setup.train.lengths == train_set.estimated_lengths
    assert train_set.distractor_share == 0.5 and train_set.shuffle_examples
    assert not train_set.example_counts(0).any() and train_set.example_counts(1).max() == 2
    zero_shot, scheduled = (np.array(setup.train.lengths(epoch)) for epoch in (0, 1))
    assert (zero_shot <= scheduled).all() and (zero_shot < scheduled).any()
