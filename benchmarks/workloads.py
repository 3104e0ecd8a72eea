"""Models and synthetic data the benchmarks run on: tiny checkpoints (CPU smoke size) or the 7B-shaped release."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pyarrow as pa
import torch
from datasets import Dataset
from transformers import GenerationConfig

from modeling_paircap.configuration_paircap import PairCapConfig
from modeling_paircap.kb_format_paircap import KnowledgeBaseMetadata, kb_row_features, write_knowledge_base
from modeling_paircap.knowledge_base_paircap import PairCapKnowledgeBase
from modeling_paircap.modeling_paircap import PairCapForConditionalGeneration
from modeling_paircap.processing_paircap import PairCapProcessor
from modeling_paircap.tokens_paircap import TOKENS_FILE, ClipTokenStore, write_clip_tokens
from paircap.assembly import AUDIO_TOKEN, LONG_AUDIO_TOKEN, assemble_release, build_processor
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


def synthetic_knowledge_base(
    model: PairCapForConditionalGeneration,
    folder: Path,
    num_pairs: int,
    seconds: float,
    captions_per_clip: int = 5,
    seed: int = 0,
) -> PairCapKnowledgeBase:
    """
    A format-2 knowledge base of `num_pairs` synthetic pairs in `model`'s retrieval space, written directly with
    `write_knowledge_base` and `write_clip_tokens` (no audio is decoded or encoded, so 127 k pairs take seconds):
    random unit audio and text embeddings (the `captions_per_clip` captions of a clip share its audio embedding),
    random float16 pooled tokens of the shape `model`'s token encoder gives a `seconds` clip, `model`'s fingerprints.
    Loaded back with `PairCapKnowledgeBase.from_pretrained`.
    """
    config, rng = model.config, np.random.default_rng(seed)
    dim = model.clap.config.projection_dim
    windows = min(config.max_audio_windows, max(1, int(np.ceil(seconds / config.audio_window_seconds))))
    tokens_per_clip, token_dim = windows * config.audio_tokens_per_window, config.encoder_hidden_size
    num_clips = -(-num_pairs // captions_per_clip)
    clip_of = np.arange(num_pairs) // captions_per_clip

    def unit(rows: int) -> np.ndarray:
        vectors = rng.standard_normal((rows, dim), dtype=np.float32)
        return vectors / np.linalg.norm(vectors, axis=1, keepdims=True)

    audio_ids = [f"synthetic_{clip:07d}.wav" for clip in range(num_clips)]
    rows = {
        "pair_id": [f"synthetic/train/{audio_ids[clip]}/{row % captions_per_clip}" for row, clip in enumerate(clip_of)],
        "audio_id": [audio_ids[clip] for clip in clip_of],
        "caption": [CAPTIONS[row % len(CAPTIONS)] for row in range(num_pairs)],
        "source": ["synthetic"] * num_pairs,
        "split": ["train"] * num_pairs,
        "duration": np.full(num_pairs, seconds, dtype=np.float32),
        "has_audio": np.ones(num_pairs, dtype=bool),
        "clip_index": clip_of.astype(np.int32),
        "audio_embedding": unit(num_clips)[clip_of],
        "text_embedding": unit(num_pairs),
    }
    schema = kb_row_features(dim, dim).arrow_schema
    table = pa.table(
        {
            name: pa.FixedSizeListArray.from_arrays(pa.array(values.reshape(-1)), dim)
            if np.ndim(values) == 2
            else pa.array(values, schema.field(name).type)
            for name, values in rows.items()
        },
        schema=schema,
    )
    is_long = seconds > config.audio_window_seconds
    clips = pa.table(
        {
            "audio_id": audio_ids,
            "is_long": [is_long] * num_clips,
            "duration": np.full(num_clips, seconds, dtype=np.float32),
            "audio_root": ["synthetic"] * num_clips,
            "audio_path": audio_ids,
        }
    )
    folder.mkdir(parents=True, exist_ok=True)
    token_blocks = (
        rng.standard_normal((tokens_per_clip, token_dim), dtype=np.float32).astype(np.float16) for _ in range(num_clips)
    )
    fingerprint = model.token_fingerprint()
    write_clip_tokens(folder / TOKENS_FILE, [tokens_per_clip] * num_clips, token_blocks, token_dim, fingerprint)
    metadata = KnowledgeBaseMetadata(
        retrieval_fingerprint=model.retrieval_fingerprint(),
        audio_dim=dim,
        text_dim=dim,
        num_pairs=num_pairs,
        num_clips=num_clips,
        token_fingerprint=fingerprint,
        token_dim=token_dim,
        audio_tokens_per_window=config.audio_tokens_per_window,
        sources={"synthetic": num_pairs},
        recipe={"name": "benchmark", "synthetic_pairs": num_pairs, "clip_seconds": seconds},
    )
    tokens = ClipTokenStore(folder / TOKENS_FILE, num_clips=num_clips)
    write_knowledge_base(folder, Dataset(table), clips, metadata, tokens=tokens)
    return PairCapKnowledgeBase.from_pretrained(folder, retrieval_fingerprint=model.retrieval_fingerprint())
