"""The distillation probe's students: every variant builds the student it names and maps a batch of the mini CLAP's
log-mel windows to the teacher's embedding and tag widths."""

from __future__ import annotations

import pytest
import torch

from recipes.mini.local.distill_probe import VARIANTS, CnnStudent, htsat_student

WINDOW = (1, 251, 64)  # one channel, 10 s at the mini feature extractor's 40 ms hop, 64 mels


@pytest.mark.parametrize("name", sorted(name for name, variant in VARIANTS.items() if variant.student == "htsat"))
def test_htsat_variants_build_the_shape_they_name(name):
    variant = VARIANTS[name]
    torch.manual_seed(0)
    student = htsat_student(variant).eval()
    config = student.tower.config
    assert config.depths == list(variant.depths) and config.patch_size == variant.patch_size
    assert config.patch_embeds_hidden_size == variant.width and config.drop_path_rate == variant.dropout
    with torch.no_grad():
        embedding, tags, _ = student(torch.randn(2, *WINDOW))
    assert embedding.shape == (2, 384) and tags.shape == (2, 527)
    assert torch.isfinite(embedding).all() and torch.isfinite(tags).all()


def test_cnn_student_reads_the_window_it_is_given():
    torch.manual_seed(0)
    student = CnnStudent().eval()
    with torch.no_grad():
        embedding, tags, hidden = student(torch.randn(3, *WINDOW))
    assert embedding.shape == (3, 384) and tags.shape == (3, 527) and hidden.shape == (3, 512)
