"""Checkpoints are checked before they are trusted: `--resume` takes the newest intact one (or refuses), a resumed run
ends bit-identical to an uninterrupted one, a non-finite loss stops the run with its step named, and nothing of ours
is pickled. Runs the `lm_text` stage in-process: the same loop and checkpoint code as every stage."""

import dataclasses
import json
import shutil
from pathlib import Path

import pytest
import torch
from datasets import Dataset
from safetensors.torch import load_file

import train_accelerate
from paircap.training import loop
from paircap.training.checkpoints import MANIFEST_NAME, TRAINER_STATE_NAME, checkpoint_problem
from paircap.training.config import TrainConfig
from paircap.training.errors import CheckpointError, NonFiniteLossError, NonFiniteWeightsError
from paircap.training.loop import check_finite_weights, train

CAPTIONS = [
    "A dog barks in the distance while birds chirp.",
    "Rain falls on a metal roof as thunder rumbles.",
    "A car engine starts and then idles.",
    "Water is flowing from a tap into a sink.",
    "A woman laughs while children play.",
    "Footsteps on a wooden floor and a door closes.",
    "A train passes by with a horn blowing.",
    "Wind blows through trees and leaves rustle.",
]
STEPS, SAVE_EVERY, STOP_AT = 8, 3, 6  # the interrupted run leaves step-00000003 and step-00000006


@pytest.fixture(scope="module")
def caption_text(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("text") / "captions"
    rows = [{"pair_id": f"t/{i}", "caption": c, "source": "text", "audio": None} for i, c in enumerate(CAPTIONS)]
    Dataset.from_list(rows).save_to_disk(str(folder))
    return folder


def config(output_dir: Path, llama: Path, captions: Path, **overrides) -> TrainConfig:
    settings = {
        "stage": "lm_text", "model_name_or_path": str(llama), "train_pairs": [str(captions)], "max_steps": STEPS,
        "per_device_batch_size": 4, "num_workers": 0, "warmup_ratio": 0.0, "log_every": 1, "save_every": SAVE_EVERY,
        "learning_rate": 3e-3, **overrides,
    }  # fmt: skip
    return TrainConfig(output_dir=str(output_dir), **settings)


@pytest.fixture(scope="module")
def runs(tiny_checkpoints, caption_text, tmp_path_factory):
    """(config maker, uninterrupted release weights, folder of a run stopped after STOP_AT steps)."""
    _, llama = tiny_checkpoints
    root = tmp_path_factory.mktemp("runs")

    def make(output_dir: Path, **overrides) -> TrainConfig:
        return config(output_dir, llama, caption_text, **overrides)

    whole = load_file(str(train(make(root / "whole")) / "model.safetensors"))
    train(make(root / "stopped", stop_after_steps=STOP_AT))
    return make, whole, root / "stopped"


def resume_copy(runs, tmp_path: Path) -> Path:
    _, _, stopped = runs
    folder = tmp_path / "run"
    shutil.copytree(stopped, folder)
    return folder


def assert_same_weights(release: Path, expected: dict) -> None:
    actual = load_file(str(release / "model.safetensors"))
    assert actual.keys() == expected.keys()
    assert all(torch.equal(actual[name], expected[name]) for name in expected)


def flip_bytes(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[len(data) // 2 : len(data) // 2 + 16] = bytes(b ^ 0xFF for b in data[len(data) // 2 : len(data) // 2 + 16])
    path.write_bytes(bytes(data))


def truncate(path: Path) -> None:
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


def empty_folder(folder: Path) -> None:
    shutil.rmtree(folder)
    folder.mkdir()


CORRUPTIONS = {
    "flipped model bytes": (lambda c: flip_bytes(c / "model.safetensors"), "does not match its sha256"),
    "truncated model": (lambda c: truncate(c / "model.safetensors"), "model.safetensors is"),
    "missing optimizer": (lambda c: (c / "optimizer.bin").unlink(), "missing optimizer.bin"),
    "empty folder": (empty_folder, f"no {MANIFEST_NAME}"),
    "no manifest": (lambda c: (c / MANIFEST_NAME).unlink(), f"no {MANIFEST_NAME}"),
    "edited trainer state": (
        lambda c: (c / TRAINER_STATE_NAME).write_text((c / TRAINER_STATE_NAME).read_text().replace("6", "7")),
        f"{TRAINER_STATE_NAME} does not match",
    ),
    "extra pickle": (lambda c: (c / "custom_checkpoint_0.pkl").write_bytes(b"x"), "not in the manifest"),
}


def test_a_checkpoint_is_json_state_plus_a_manifest_of_every_file(runs):
    _, _, stopped = runs
    checkpoints = sorted(p.name for p in (stopped / "checkpoints").iterdir())
    assert checkpoints == ["step-00000003", "step-00000006"]  # no partial folder is left behind
    latest = stopped / "checkpoints" / "step-00000006"
    manifest = json.loads((latest / MANIFEST_NAME).read_text())
    files = {str(p.relative_to(latest)) for p in latest.rglob("*") if p.is_file()} - {MANIFEST_NAME}
    assert set(manifest["files"]) == files and manifest["step"] == STOP_AT
    assert all(record["size"] == (latest / name).stat().st_size for name, record in manifest["files"].items())
    state = json.loads((latest / TRAINER_STATE_NAME).read_text())
    assert state["progress"]["global_step"] == STOP_AT and state["scheduler"]["last_epoch"] == STOP_AT
    assert not list(latest.glob("custom_checkpoint_*"))  # progress and schedule are not pickled
    assert checkpoint_problem(latest) is None


@pytest.mark.parametrize("case", sorted(CORRUPTIONS))
def test_resume_skips_a_corrupted_latest_checkpoint_and_ends_bit_identical(case, runs, tmp_path, caplog):
    make, whole, _ = runs
    folder = resume_copy(runs, tmp_path)
    corrupt, reason = CORRUPTIONS[case]
    corrupt(folder / "checkpoints" / "step-00000006")
    assert reason in checkpoint_problem(folder / "checkpoints" / "step-00000006")
    release = train(make(folder, resume=True))
    assert_same_weights(release, whole)
    log = [json.loads(line) for line in (folder / "log.jsonl").read_text().splitlines()]
    resumed_steps = [line["step"] for line in log if "loss" in line][STOP_AT:]
    assert resumed_steps == list(range(SAVE_EVERY + 1, STEPS + 1))  # steps 4.. were trained again from step-3


def test_resume_refuses_when_no_checkpoint_verifies(runs, tmp_path):
    make, _, _ = runs
    folder = resume_copy(runs, tmp_path)
    flip_bytes(folder / "checkpoints" / "step-00000006" / "model.safetensors")
    (folder / "checkpoints" / "step-00000003" / "optimizer.bin").unlink()
    with pytest.raises(CheckpointError) as error:
        train(make(folder, resume=True))
    message = str(error.value)
    assert "step-00000006: model.safetensors does not match" in message
    assert "step-00000003: missing optimizer.bin" in message and "without --resume" in message
    assert not (folder / "release").exists()


def test_an_interrupted_save_is_ignored_and_cleaned_up(runs, tmp_path):
    make, whole, _ = runs
    folder = resume_copy(runs, tmp_path)
    partial = folder / "checkpoints" / ".partial-step-00000009"
    partial.mkdir()
    (partial / "model.safetensors").write_bytes(b"half")
    assert_same_weights(train(make(folder, resume=True)), whole)
    assert not partial.exists()


def inject_nan_loss(monkeypatch, at_call: int) -> None:
    """Make the stage's loss NaN on its `at_call`-th training batch (1-based)."""
    build_setup = loop.build_setup
    calls = {"n": 0}

    def patched(cfg, accelerator):
        setup = build_setup(cfg, accelerator)

        def loss(model, batch):
            value = setup.loss(model, batch)
            if model.training:
                calls["n"] += 1
                if calls["n"] == at_call:
                    return value * float("nan")
            return value

        return dataclasses.replace(setup, loss=loss)

    monkeypatch.setattr(loop, "build_setup", patched)


def test_a_nan_loss_stops_the_run_naming_the_step(runs, monkeypatch, tmp_path):
    make, _, _ = runs
    inject_nan_loss(monkeypatch, at_call=5)
    with pytest.raises(NonFiniteLossError, match=r"non-finite loss \(nan\) at step 5 \(epoch 2, batch 0\)"):
        train(make(tmp_path / "run"))
    assert not (tmp_path / "run" / "release").exists()
    checkpoints = sorted(p.name for p in (tmp_path / "run" / "checkpoints").iterdir())
    assert checkpoints == ["step-00000003"]  # the one before the bad batch, intact
    assert checkpoint_problem(tmp_path / "run" / "checkpoints" / "step-00000003") is None


def test_skip_policy_drops_nan_batches_up_to_its_limit(runs, monkeypatch, tmp_path):
    make, _, _ = runs
    inject_nan_loss(monkeypatch, at_call=5)
    release = train(make(tmp_path / "skip", nonfinite_loss="skip", max_skipped_batches=1))
    weights = load_file(str(release / "model.safetensors"))
    assert all(torch.isfinite(value).all() for value in weights.values())
    state = json.loads((tmp_path / "skip" / "checkpoints" / "step-00000008" / TRAINER_STATE_NAME).read_text())
    assert state["progress"]["skipped_batches"] == 1
    inject_nan_loss(monkeypatch, at_call=2)
    with pytest.raises(NonFiniteLossError, match="after skipping 0 batches"):
        train(make(tmp_path / "no-skips", nonfinite_loss="skip", max_skipped_batches=0))


def test_nan_weights_are_never_exported():
    model = torch.nn.Linear(2, 2)
    check_finite_weights(model)
    with torch.no_grad():
        model.weight[0, 0] = float("nan")
    with pytest.raises(NonFiniteWeightsError, match="weight"):
        check_finite_weights(model)


def test_train_accelerate_reports_an_expected_failure_in_one_line(runs, tmp_path, capsys):
    make, _, _ = runs
    folder = resume_copy(runs, tmp_path)
    for checkpoint in (folder / "checkpoints").iterdir():
        (checkpoint / MANIFEST_NAME).unlink()
    cfg = make(folder, resume=True)
    argv = [f"--{k}={v}" for k, v in dataclasses.asdict(cfg).items() if not isinstance(v, list) and v is not None]
    argv += ["--train_pairs", *cfg.train_pairs]
    assert train_accelerate.main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("error: no checkpoint in") and "Traceback" not in "\n".join(err)
