"""Models and synthetic data the benchmarks run on: tiny checkpoints (CPU smoke size) or the 7B-shaped release."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import torch
from transformers import GenerationConfig, LlamaForCausalLM

from benchmarks.synthetic_kb import SyntheticKB, write_synthetic_kb
from modeling_paircap.configuration_paircap import PairCapConfig
from modeling_paircap.knowledge_base_paircap import PairCapKnowledgeBase
from modeling_paircap.modeling_paircap import PairCapAudioProjector, PairCapForConditionalGeneration
from modeling_paircap.processing_paircap import PairCapProcessor
from paircap.assembly import AUDIO_TOKEN, LONG_AUDIO_TOKEN, assemble_release, build_processor
from paircap.lm_configs import caption_lm_config
from paircap.param_report import release_config
from paircap.tiny import CORPUS, save_tiny_clap, save_tiny_llama

SAMPLING_RATE = 48_000
CAPTIONS = CORPUS[:20]  # caption-like sentences (the rest of CORPUS is prompt text)


def model_dtype(device: str) -> torch.dtype:
    """bfloat16 on a GPU (as the release runs), float32 on the CPU."""
    return torch.bfloat16 if device == "cuda" else torch.float32


def waveform(seconds: float, seed: int) -> np.ndarray:
    """A decoded 48 kHz mono clip: a rising tone in noise (float32)."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * SAMPLING_RATE)) / SAMPLING_RATE
    tone = np.sin(2 * np.pi * (200 + 50 * (seed % 16)) * t * (1 + 0.2 * t / seconds))
    return (0.2 * tone + 0.02 * rng.standard_normal(len(t))).astype(np.float32)


@contextlib.contextmanager
def default_dtype(dtype: torch.dtype) -> Iterator[None]:
    """Create floating-point tensors in `dtype` inside the block."""
    previous = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        yield
    finally:
        torch.set_default_dtype(previous)


def random_model(config: PairCapConfig, device: str) -> PairCapForConditionalGeneration:
    """A randomly initialised model whose weights are created directly in `model_dtype(device)` on `device`: no
    float32 copy of a 7B model is ever allocated."""
    with torch.device(device), default_dtype(model_dtype(device)):
        model = PairCapForConditionalGeneration(config)
    return model.eval()


def tiny_release(folder: Path, device: str) -> tuple[PairCapForConditionalGeneration, PairCapProcessor]:
    """The tiny random release (`paircap/tiny.py` checkpoints through `assemble_release`) on `device`."""
    clap, llama = save_tiny_clap(folder / "clap"), save_tiny_llama(folder / "llama")
    model, processor = assemble_release(str(clap), str(llama))
    return model.to(device=device, dtype=model_dtype(device)), processor


def full_release(folder: Path, device: str) -> tuple[PairCapForConditionalGeneration, PairCapProcessor]:
    """
    The release shape (CLAP HTSAT + Vicuna-7B, `release_config()`) with random weights built on `device`. No real
    tokenizer can be downloaded, so the processor uses the tiny locally trained tokenizers (ids fit the 32,002-row
    vocabulary; the `<audio>` ids are set to theirs). Prompts are a little longer than with Vicuna's tokenizer.
    """
    clap, llama = save_tiny_clap(folder / "clap"), save_tiny_llama(folder / "llama")
    model = random_model(release_config(), device)
    processor = build_processor(str(clap), str(llama), model.config)
    tokenizer = processor.tokenizer
    model.config.audio_token_id = tokenizer.convert_tokens_to_ids(AUDIO_TOKEN)
    model.config.long_audio_token_id = tokenizer.convert_tokens_to_ids(LONG_AUDIO_TOKEN)
    model.generation_config = GenerationConfig(bos_token_id=1, eos_token_id=2, pad_token_id=tokenizer.pad_token_id)
    return model, processor


def release(size: str, folder: Path, device: str) -> tuple[PairCapForConditionalGeneration, PairCapProcessor]:
    """The tiny or the full-size random release on `device`."""
    return tiny_release(folder, device) if size == "tiny" else full_release(folder, device)


def use_mini_lm(model: PairCapForConditionalGeneration) -> None:
    """Replace the language model by a random one of the mini recipe's shape (same vocabulary), and the projector by
    one of its width."""
    config = caption_lm_config(model.config.text_config.vocab_size, 192, 512, 4, 4, 1024, pad_token_id=None)
    model.language_model = LlamaForCausalLM(config).to(model.device).eval()
    model.config.text_config = config
    model.multi_modal_projector = PairCapAudioProjector(model.config).to(model.device).eval()


def synthetic_knowledge_base(
    model: PairCapForConditionalGeneration,
    folder: Path,
    num_pairs: int,
    seconds: float,
    captions_per_clip: int = 5,
    seed: int = 0,
) -> PairCapKnowledgeBase:
    """
    A format-2 knowledge base of `num_pairs` synthetic pairs in `model`'s retrieval space (`synthetic_kb`: no audio
    is decoded or encoded, so 127 k pairs take seconds): random unit embeddings of its CLAP's width, `CAPTIONS`,
    random float16 pooled tokens of the shape `model`'s token encoder gives a `seconds` clip, `model`'s fingerprints.
    Loaded back with `PairCapKnowledgeBase.from_pretrained`.
    """
    config, dim = model.config, model.clap.config.projection_dim
    windows = min(config.max_audio_windows, max(1, int(np.ceil(seconds / config.audio_window_seconds))))
    spec = SyntheticKB(
        num_pairs=num_pairs,
        audio_dim=dim,
        text_dim=dim,
        captions_per_clip=captions_per_clip,
        tokens_per_clip=windows * config.audio_tokens_per_window,
        tokens_per_window=config.audio_tokens_per_window,
        token_dim=config.encoder_hidden_size,
        clip_seconds=seconds,
        window_seconds=config.audio_window_seconds,
        captions=CAPTIONS,
        retrieval_fingerprint=model.retrieval_fingerprint(),
        token_fingerprint=model.token_fingerprint(),
        seed=seed,
    )
    write_synthetic_kb(folder, spec, staging=folder.with_name(f"{folder.name}.staging.arrow"))
    return PairCapKnowledgeBase.from_pretrained(folder, retrieval_fingerprint=model.retrieval_fingerprint())
