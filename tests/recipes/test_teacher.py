"""The mini recipe's AudioSet teacher (EfficientAT mn04_as, own module) and the audio->audio retrieval yardstick."""

import math
import re

import numpy as np
import pytest
import torch
from helpers import REPO, SHARED_DATA

from recipes.mini.local.retrieval_yardstick import reachable_share, recall_against_pool, recall_at_k, retrieval_scores
from recipes.mini.local.teacher import (
    EMBEDDING_DIM,
    NUM_CLASSES,
    AudioSetTeacher,
    KaldiMelFrontEnd,
    TeacherWeightsError,
    kaldi_mel_banks,
)

TEACHER_WEIGHTS = REPO.parent / "shared" / "models" / "efficientat_mn04_as" / "mn04_as_mAP_432.pt"
SIREN_CLIP = SHARED_DATA / "esc50_cc" / "4-111671-A-42.flac"
POLICE_CAR_SIREN, SIREN = 323, 396  # AudioSet class_labels_indices.csv order


def kaldi_weight(row: int, fft_bin: int) -> float:
    """Kaldi's mel filter weight, written out for one (filter, FFT bin) of the teacher's 128 x 1024 @ 32 kHz layout."""

    def mel(hz: float) -> float:
        return 1127.0 * math.log(1.0 + hz / 700.0)

    step = (mel(15000.0) - mel(0.0)) / 129
    left, centre, right = row * step, (row + 1) * step, (row + 2) * step
    m = mel(fft_bin * 32000 / 1024)
    return max(0.0, min((m - left) / (centre - left), (right - m) / (right - centre)))


def test_mel_banks_follow_the_kaldi_formula():
    banks = kaldi_mel_banks(128, 1024, 32000, 0.0, 15000.0)
    assert banks.shape == (128, 513)
    for row, fft_bin in [(0, 1), (1, 1), (63, 81), (63, 82), (63, 83), (127, 468), (127, 479)]:
        assert banks[row, fft_bin].item() == pytest.approx(kaldi_weight(row, fft_bin), abs=1e-6)
    # filter 63 is centred on 2575.39 Hz (mel 64 x 3505.34 / 129), nearest FFT bin 82 (31.25 Hz apart)
    assert int(banks[63].argmax()) == 82
    assert int(banks[127].argmax()) == 468  # centre 14626 Hz
    # a wide triangle holds half its Hz width in FFT bins: (14999.99 - 14260.87) / 2 / 31.25 = 11.83
    assert banks[127].sum().item() == pytest.approx(11.826, rel=2e-3)
    assert (banks.sum(dim=1) > 0).all()  # every filter covers some FFT bin, the lowest ones included
    assert banks[:, 481:].abs().sum() == 0  # nothing above 15 kHz, nor in the padded Nyquist column


def test_front_end_frames_and_a_tone_in_its_mel_bin():
    front_end = KaldiMelFrontEnd()
    t = torch.arange(32000) / 32000
    mels = front_end(torch.sin(2 * math.pi * 2575.39 * t)[None])
    assert mels.shape == (1, 128, (32000 - 1) // 320 + 1)  # pre-emphasis drops a sample, the STFT is centred
    assert int(mels[0, :, 5:-5].mean(dim=1).argmax()) == 63


def test_random_teacher_round_trips_through_a_strict_state_dict(tmp_path):
    torch.manual_seed(0)
    teacher = AudioSetTeacher()
    for module in teacher.modules():  # BatchNorm statistics away from their defaults, so loading them shows
        if isinstance(module, torch.nn.BatchNorm2d):
            module.running_mean.normal_()
            module.running_var.uniform_(0.5, 2.0)
    path = tmp_path / "teacher.pt"
    torch.save(teacher.network.state_dict(), path)
    assert len(teacher.network.state_dict()) == 312
    loaded = AudioSetTeacher.from_file(path)
    clips = [np.random.default_rng(1).standard_normal(48000).astype(np.float32) * 0.1 for _ in range(2)]
    logits, embeddings = loaded.outputs(clips, 48000)
    assert logits.shape == (2, NUM_CLASSES) and embeddings.shape == (2, EMBEDDING_DIM)
    torch.testing.assert_close(logits, teacher.logits(clips, 48000))
    torch.testing.assert_close(embeddings, teacher.embed(clips, 48000))
    assert not loaded.training and not any(p.requires_grad for p in loaded.parameters())
    torch.nn.Sequential(loaded).train()  # a frozen teacher inside a model being trained stays in eval mode
    assert not any(module.training for module in loaded.modules())
    with pytest.raises(ValueError, match="clips of 500 samples at 32 kHz are too short"):
        loaded.embed([np.ones(500, dtype=np.float32)], 32000)


@pytest.mark.parametrize(
    "change, message",
    [
        (lambda s: s.pop("classifier.5.bias"), "missing keys 1: classifier.5.bias"),
        (lambda s: s.update(extra=torch.zeros(1)), "unexpected keys 1: extra"),
        (lambda s: s.update({"classifier.5.bias": torch.zeros(10)}), "wrong shapes 1: classifier.5.bias (10,)"),
    ],
)
def test_wrong_weights_name_the_file(tmp_path, change, message):
    state = AudioSetTeacher().network.state_dict()
    change(state)
    path = tmp_path / "wrong.pt"
    torch.save(state, path)
    with pytest.raises(
        TeacherWeightsError, match=rf"^{re.escape(str(path))}: not the EfficientAT mn04_as weights \("
    ) as error:
        AudioSetTeacher.from_file(path)
    assert message in str(error.value)


def test_missing_or_unreadable_weights_name_the_file(tmp_path):
    with pytest.raises(
        TeacherWeightsError, match=rf"^{re.escape(str(tmp_path / 'absent.pt'))}: no such file .*EfficientAT/releases"
    ):
        AudioSetTeacher.from_file(tmp_path / "absent.pt")
    garbage = tmp_path / "garbage.pt"
    garbage.write_bytes(b"not a checkpoint")
    with pytest.raises(
        TeacherWeightsError, match=rf"^{re.escape(str(garbage))}: cannot be read as a PyTorch state_dict"
    ):
        AudioSetTeacher.from_file(garbage)
    tensor = tmp_path / "tensor.pt"
    torch.save(torch.zeros(3), tensor)
    with pytest.raises(TeacherWeightsError, match=rf"^{re.escape(str(tensor))}: not a state_dict of tensors"):
        AudioSetTeacher.from_file(tensor)


def test_real_teacher_tags_a_siren_clip():
    if not TEACHER_WEIGHTS.is_file():
        pytest.skip(f"teacher weights {TEACHER_WEIGHTS} are absent (they sit beside the repo in the workspace)")
    if not SIREN_CLIP.is_file():
        pytest.skip(f"real clip {SIREN_CLIP} is absent (../shared/data sits beside the repo in the workspace)")
    from modeling_paircap.audio_loading_paircap import load_audio_file

    teacher = AudioSetTeacher.from_file(TEACHER_WEIGHTS)
    waveform = load_audio_file(SIREN_CLIP, 48000)
    probabilities = torch.sigmoid(teacher.logits([waveform], 48000))[0]
    assert set(probabilities.topk(2).indices.tolist()) == {POLICE_CAR_SIREN, SIREN}
    # the teacher's README: "Police car (siren)" 0.80, "Siren" 0.69 on this clip
    assert probabilities[POLICE_CAR_SIREN].item() == pytest.approx(0.80, abs=0.02)
    assert probabilities[SIREN].item() == pytest.approx(0.69, abs=0.02)


def test_recall_at_k_leave_one_out_and_own_recording_excluded():
    # a and a' are takes of one recording of class x; b is another recording of x; c is class y
    embeddings = torch.tensor([[1.0, 0.0], [0.99, 0.1], [0.6, 0.8], [0.7, -0.7]])
    labels = ["x", "x", "x", "y"]
    recordings = ["r1", "r1", "r2", "r3"]
    # nearest others: a -> a', a' -> a, b -> a' (cosine .68 vs .60 for a), c -> a (.71)
    assert recall_at_k(embeddings, labels, k=1) == 0.75
    # own takes out: a -> c (.71 beats b's .60), a' -> b (.68 beats c's .63), b -> a' (.68), c -> a
    assert recall_at_k(embeddings, labels, recordings, k=1) == 0.5
    assert recall_at_k(embeddings, labels, recordings, k=2) == 0.75  # c never has a same-class candidate
    assert reachable_share(labels, recordings) == 0.75
    scores = retrieval_scores(torch.randn(12, 4), ["p", "q"] * 6, [str(i // 2) for i in range(12)])
    assert set(scores) == {
        "R@1",
        "R@5",
        "R@1_own_recording_excluded",
        "R@5_own_recording_excluded",
        "own_recording_excluded_ceiling",
    }
    with pytest.raises(ValueError, match="3 embeddings for 4 labels"):
        recall_at_k(embeddings[:3], labels)


def test_recall_against_pool_counts_a_class_hit_among_the_nearest_pool_clips():
    pool = torch.tensor([[1.0, 0.0], [0.0, 1.0], [0.7, 0.7]])
    pool_labels = ["x", "y", "z"]
    queries = torch.tensor([[0.9, 0.1], [0.1, 0.9], [1.0, 0.05]])
    # nearest pool clips: q0 -> x (hit), q1 -> y (miss: its class is z), q2 -> x (miss: its class is y; y is 3rd)
    assert recall_against_pool(queries, ["x", "z", "y"], pool, pool_labels, k=1) == pytest.approx(1 / 3)
    assert recall_against_pool(queries, ["x", "z", "y"], pool, pool_labels, k=2) == pytest.approx(2 / 3)
    with pytest.raises(ValueError, match="3 pool clips for 2 labels"):
        recall_against_pool(queries, ["x", "z", "y"], pool, pool_labels[:2])
