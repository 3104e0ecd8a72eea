"""
KB embedding: clips/s from decoded waveforms to stored embeddings + tokens.

Both paths window the clips, compute CLAP log-mels, run the CLAP audio encoder (`model.encode_audio`) and move the
pooled tokens (float16) and clip embeddings (float32) to the CPU, as a knowledge base stores them. They differ in the
features only: transformers' numpy `ClapFeatureExtractor` called as the processor calls it (the baseline) against the
batched torch extractor `extract_clap_features` on the model's device (ours).

    python -m benchmarks.kb_embedding [--size tiny|full] [--device cpu|cuda] [--output-dir benchmarks/results]
"""

from __future__ import annotations

import argparse
from collections.abc import Callable, Sequence

import numpy as np
import torch
from transformers import ClapFeatureExtractor

from benchmarks.common import environment, markdown_table, measure, parse_args, write_results
from benchmarks.workloads import SAMPLING_RATE, model_dtype, random_model, waveform
from modeling_paircap.configuration_paircap import PairCapConfig
from modeling_paircap.feature_extraction_paircap import extract_clap_features
from modeling_paircap.modeling_paircap import PairCapForConditionalGeneration
from modeling_paircap.processing_paircap import split_into_windows
from paircap.convert_laion_clap import htsat_unfused_config, laion_clap_feature_extractor
from paircap.tiny import tiny_clap_config, tiny_llama_config

DEFAULTS = {"tiny": {"clips": 4, "repeats": 3}, "full": {"clips": 64, "repeats": 5}}
Featurizer = Callable[[list[np.ndarray]], torch.Tensor]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--clips", type=int, help="clips per batch (tiny 4, full 64)")
    parser.add_argument("--clip-seconds", type=float, default=10.0, help="clip length; over 10 s gives more windows")


def encoder_model(size: str, device: str) -> PairCapForConditionalGeneration:
    """A random model with the tiny or the release CLAP (HTSAT unfused); its language model is tiny, being unused."""
    clap = htsat_unfused_config() if size == "full" else tiny_clap_config(vocab_size=300)
    return random_model(PairCapConfig(clap_config=clap, text_config=tiny_llama_config(vocab_size=402)), device)


def numpy_featurizer(extractor: ClapFeatureExtractor, device: str) -> Featurizer:
    """The baseline: the numpy extractor as `PairCapProcessor.extract_features` calls it, then to the device."""

    def featurize(windows: list[np.ndarray]) -> torch.Tensor:
        features = extractor(
            windows, sampling_rate=SAMPLING_RATE, truncation="rand_trunc", padding="repeatpad", return_tensors="np"
        )["input_features"]
        return torch.from_numpy(features).to(device)

    return featurize


def torch_featurizer(extractor: ClapFeatureExtractor, device: str) -> Featurizer:
    """Ours: the batched torch extractor, computed on the device."""
    return lambda windows: extract_clap_features(windows, extractor, device=device)


def window_clips(clips: Sequence[np.ndarray], model: PairCapForConditionalGeneration) -> tuple[list, torch.Tensor]:
    """All encoder windows of the clips, and the window count of each clip."""
    window_samples = int(model.config.audio_window_seconds * SAMPLING_RATE)
    per_clip = [split_into_windows(clip, window_samples, model.config.max_audio_windows)[0] for clip in clips]
    return [window for windows in per_clip for window in windows], torch.tensor([len(w) for w in per_clip])


@torch.inference_mode()
def encode_and_store(model, features: torch.Tensor, counts: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Encode windows and bring tokens and embeddings to the CPU in their stored dtypes."""
    encoding = model.encode_audio(features, counts.to(features.device))
    return encoding.audio_tokens.to("cpu", torch.float16), encoding.audio_embeds.to("cpu", torch.float32)


def embed_clips(model, clips: Sequence[np.ndarray], featurize: Featurizer) -> None:
    """The whole measured path: decoded waveforms to stored tokens and embeddings."""
    windows, counts = window_clips(clips, model)
    encode_and_store(model, featurize(windows), counts)


def path_row(name: str, total, features, clips: int, windows: int) -> dict:
    return {
        "path": name,
        "clips": clips,
        "windows": windows,
        "total_s": total.median,
        "clips_per_s": clips / total.median,
        "features_s": features.median,
        "feature_clips_per_s": clips / features.median,
        "raw_total_s": total.seconds,
        "raw_features_s": features.seconds,
    }


def main(argv: Sequence[str] | None = None) -> dict:
    """Run the benchmark and write `kb_embedding-<device>-<size>.json/.md`."""
    args = parse_args(__doc__.strip().splitlines()[0], argv, add_arguments)
    env = environment(args.device)
    defaults = DEFAULTS[args.size]
    num_clips, repeats = args.clips or defaults["clips"], defaults["repeats"]
    model = encoder_model(args.size, args.device)
    extractor = laion_clap_feature_extractor()
    clips = [waveform(args.clip_seconds, seed=i) for i in range(num_clips)]
    windows, counts = window_clips(clips, model)

    rows = {}
    for name, featurize in (
        ("numpy ClapFeatureExtractor + encoder", numpy_featurizer(extractor, args.device)),
        ("torch extract_clap_features + encoder", torch_featurizer(extractor, args.device)),
    ):
        total = measure(lambda f=featurize: embed_clips(model, clips, f), args.device, repeats=repeats)
        features = measure(lambda f=featurize: f(windows), args.device, repeats=repeats)
        rows[name] = path_row(name, total, features, num_clips, len(windows))
    baseline, project = rows.values()
    project["speedup_vs_baseline"] = baseline["total_s"] / project["total_s"]
    project["feature_speedup_vs_baseline"] = baseline["features_s"] / project["features_s"]
    precomputed = torch_featurizer(extractor, args.device)(windows)
    encoder = measure(lambda: encode_and_store(model, precomputed, counts), args.device, repeats=repeats)
    encoder_row = {"clips": num_clips, "windows": len(windows), **encoder.to_dict()}
    encoder_row["clips_per_s"] = num_clips / encoder.median

    settings = {
        "clips": num_clips,
        "clip_seconds": args.clip_seconds,
        "windows": len(windows),
        "encoder": "CLAP HTSAT unfused (release shape)" if args.size == "full" else "tiny HTSAT",
        "encoder_dtype": str(model_dtype(args.device)),
        "warmup": 1,
        "repeats": repeats,
        "stored": "audio_tokens float16, audio_embeds float32, on the CPU",
    }
    results = {"project": [project], "baseline": [baseline], "encoder_only": encoder_row}
    columns = ["path", "clips", "windows", "total_s", "clips_per_s", "features_s", "feature_clips_per_s"]
    tables = [
        markdown_table("Decoded waveforms to stored tokens + embeddings", [baseline, project], columns)
        + f"\n\nSpeed-up of ours over the numpy baseline: {project['speedup_vs_baseline']:.2f}x overall, "
        f"{project['feature_speedup_vs_baseline']:.2f}x on the features.",
        markdown_table(
            "Encoder + store only (features precomputed)", [encoder_row], ["clips", "median_s", "clips_per_s"]
        ),
    ]
    return write_results(args, "kb_embedding", env, settings, results, tables)


if __name__ == "__main__":
    main()
