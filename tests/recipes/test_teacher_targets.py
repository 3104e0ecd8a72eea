"""`paircap mini --teacher`: the teacher's distillation targets are computed once per training clip, in shards a
rerun resumes from, and a cache made with another teacher file is refused."""

import hashlib
import json

import pytest
import torch

from modeling_paircap.audio_loading_paircap import load_audio_file
from paircap.training.distillation import DistillTargets
from recipes.mini.local import teacher_targets
from recipes.mini.local.teacher import EMBEDDING_DIM, NUM_CLASSES, AudioSetTeacher


def random_teacher(path, seed: int):
    torch.manual_seed(seed)
    torch.save(AudioSetTeacher().network.state_dict(), path)
    return path


@pytest.fixture
def clips(write_wav, sine_wave):
    paths = [write_wav(f"clip{i}.wav", sine_wave(1.0, 32000, 300.0 * (i + 1)), 32000) for i in range(5)]
    return [f"clip{i}" for i in range(5)], [str(path) for path in paths]


def test_targets_are_computed_resumed_and_tied_to_the_teacher_file(tmp_path, clips, monkeypatch):
    monkeypatch.setattr(teacher_targets, "SHARD", 2)
    teacher = random_teacher(tmp_path / "teacher.pt", 0)
    folder = tmp_path / "run" / "clap" / "teacher"
    audio_ids, paths = clips
    targets = DistillTargets.load(teacher_targets.compute_targets(folder, teacher, audio_ids, paths))
    assert targets.audio_ids == tuple(audio_ids)
    assert targets.embeddings.shape == (5, EMBEDDING_DIM) and targets.probabilities.shape == (5, NUM_CLASSES)
    torch.testing.assert_close(targets.embeddings.mean(dim=0), torch.zeros(EMBEDDING_DIM), atol=1e-5, rtol=0)
    record = json.loads((folder / "teacher.json").read_text())
    assert record["sha256"] == hashlib.sha256(teacher.read_bytes()).hexdigest()
    logits = AudioSetTeacher.from_file(teacher).logits([load_audio_file(paths[4], 32000)], 32000)
    torch.testing.assert_close(targets.probabilities[4], torch.sigmoid(logits[0]))  # the last, short shard

    # an interrupted run: the last shard and the targets file lost; the rerun computes only that shard
    kept = (folder / "shard-00000.npz").stat().st_mtime_ns
    (folder / "shard-00002.npz").unlink()
    (folder / "targets.npz").unlink()
    resumed = DistillTargets.load(teacher_targets.compute_targets(folder, teacher, audio_ids, paths))
    assert (folder / "shard-00000.npz").stat().st_mtime_ns == kept
    torch.testing.assert_close(resumed.embeddings, targets.embeddings)

    other = random_teacher(tmp_path / "other.pt", 1)
    with pytest.raises(
        ValueError, match=rf"{folder}: teacher targets computed with .*teacher.pt .* not with .*other.pt"
    ):
        teacher_targets.compute_targets(folder, other, audio_ids, paths)
    with pytest.raises(ValueError, match=r"shard-00000.npz: holds other clips"):
        teacher_targets.compute_targets(folder, teacher, audio_ids[::-1], paths[::-1])
