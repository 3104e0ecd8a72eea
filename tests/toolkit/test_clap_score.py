"""The CLAP score of `paircap evaluate`: cos(CLAP audio embedding, CLAP text embedding of the caption)."""

import numpy as np
import pytest
import torch

from paircap.clap_score import clap_scores, mean_clap_score


def test_clap_score_is_the_cosine_and_independent_of_the_batch(tiny_release, sine_wave):
    _, model, processor = tiny_release
    waves = [sine_wave(3.0), sine_wave(12.0, frequency=880.0)]  # one window and several
    captions = ["a tone is playing", "a high beep"]
    together = clap_scores(model, processor, waves, captions)
    alone = [clap_scores(model, processor, [wave], [caption])[0] for wave, caption in zip(waves, captions, strict=True)]
    assert together == pytest.approx(alone, abs=1e-5)
    assert all(-1.0 <= score <= 1.0 for score in together)
    with torch.no_grad():
        text = model.embed_texts(**processor.clap_text_inputs(captions[:1]))
    assert float(torch.linalg.norm(text)) == pytest.approx(1.0, abs=1e-5)  # unit vectors: the dot is the cosine
    with pytest.raises(ValueError, match="one caption per clip"):
        clap_scores(model, processor, waves, captions[:1])


def test_mean_clap_score_skips_records_without_one():
    records = [{"clap_score": 0.2}, {"clap_score": 0.4}, {"caption": "older predictions file"}]
    assert mean_clap_score(records) == pytest.approx(0.3)
    assert mean_clap_score([{"caption": "x"}]) is None
    assert np.isfinite(mean_clap_score(records))
