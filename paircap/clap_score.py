"""CLAP score: a reference-free caption score from a release's own CLAP, the cosine of a clip's audio embedding and
its caption's text embedding (both L2-normalised, in the frozen retrieval space)."""

from collections.abc import Sequence

import numpy as np
import torch


@torch.no_grad()
def clap_scores(model, processor, waveforms: Sequence[np.ndarray], captions: Sequence[str]) -> list[float]:
    """Per clip: <a, t>, its CLAP audio embedding a (all windows pooled) and its caption's CLAP text embedding t."""
    if len(waveforms) != len(captions):
        raise ValueError(f"{len(waveforms)} clips but {len(captions)} captions: give one caption per clip")
    if not waveforms:
        return []
    inputs = processor(audio=list(waveforms), sampling_rate=processor.sampling_rate).to(model.device)
    audio = model.encode_audio(inputs["input_features"], inputs["audio_window_counts"]).audio_embeds
    text = model.embed_texts(**processor.clap_text_inputs(list(captions)).to(model.device))
    return (audio.float() * text.float()).sum(dim=-1).cpu().tolist()


def mean_clap_score(records: Sequence[dict]) -> float | None:
    """The mean `clap_score` of the records that have one (predictions saved before it existed have none)."""
    values = [record["clap_score"] for record in records if record.get("clap_score") is not None]
    return float(np.mean(values)) if values else None
