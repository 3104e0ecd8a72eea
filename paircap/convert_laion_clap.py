"""Convert an original LAION-CLAP checkpoint into transformers' :class:`~transformers.ClapModel`.

The original checkpoints (``630k-best.pt``, ``630k-audioset-best.pt``, ... as released by LAION-AI/CLAP) store the
``state_dict`` of ``laion_clap.clap_module.model.CLAP``: an HTS-AT (Swin) audio branch, a RoBERTa text branch, two
``nn.Sequential`` projection MLPs, two training-only ``MLPLayers`` and the two logit scales, usually with the
``module.`` prefix left by ``DistributedDataParallel``. ``laion_clap`` itself is not needed (nor imported): the key
mapping below is written out explicitly against the original module definitions
(``src/laion_clap/clap_module/{model,htsat}.py``) and the installed ``transformers.models.clap.modeling_clap``.

Usage::

    paircap convert-laion-clap 630k-audioset-best.pt converted/clap-htsat-unfused
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from pathlib import Path

import torch
from transformers import ClapConfig, ClapFeatureExtractor, ClapModel

__all__ = [
    "DERIVED_HF_BUFFERS",
    "DROPPED_ORIGINAL_KEYS",
    "convert_laion_clap_checkpoint",
    "convert_laion_clap_state_dict",
    "htsat_clap_config",
    "htsat_unfused_config",
    "laion_clap_feature_extractor",
    "load_clap_config",
    "load_laion_clap_checkpoint",
]

_DDP_PREFIX = "module."
_AUDIO = "audio_model.audio_encoder."

# Original HTS-AT Swin block prefix; groups 1 and 2 are the stage and block indices.
_ORIG_BLOCK = r"audio_branch\.layers\.(\d+)\.blocks\.(\d+)\."
_HF_BLOCK = _AUDIO + r"layers.\1.blocks.\2."

# Original keys (after stripping ``module.``) that ClapModel has no place for, with the reason they can be dropped.
DROPPED_ORIGINAL_KEYS: dict[str, str] = {
    # torchlibrosa ``Spectrogram``: frozen STFT kernels. In transformers the log-mel front end lives outside the model,
    # in ClapFeatureExtractor, which recomputes the same (non-learned) transform.
    r"audio_branch\.spectrogram_extractor\.stft\.conv_(real|imag)\.weight": "frozen STFT kernels (feature extractor)",
    # torchlibrosa ``LogmelFilterBank``: frozen mel filter bank, likewise recomputed by ClapFeatureExtractor.
    r"audio_branch\.logmel_extractor\.melW": "frozen mel filter bank (feature extractor)",
    # Shifted-window attention mask registered as a (persistent) buffer in the original SwinTransformerBlock;
    # ClapAudioLayer.get_attn_mask rebuilds it from the input size at every forward.
    _ORIG_BLOCK + r"attn_mask": "shifted-window attention mask buffer (recomputed on the fly)",
    # HTS-AT token-semantic AudioSet classifier (527 classes): ClapModel only keeps the latent embedding path.
    r"audio_branch\.tscam_conv\.(weight|bias)": "HTS-AT AudioSet token-semantic classifier conv",
    r"audio_branch\.head\.(weight|bias)": "HTS-AT AudioSet classifier head",
    # ``MLPLayers`` applied to the normalised embeddings only inside the training loss; not part of the embedding
    # path (get_text_embedding / get_audio_embedding), and ClapModel has no counterpart.
    r"(text|audio)_transform\.sequential\.\d+\.(weight|bias)": "training-only MLP on top of the joint embeddings",
}

# Deterministic HF buffers that an original checkpoint may legitimately lack, and how they are synthesised.
# - token_type_ids: RoBERTa registers it with persistent=False, so it is never in the original state dict.
# - position_ids: persistent in the transformers release LAION-CLAP trained with, but laion_clap deletes it when
#   loading with transformers >= 4.31, so re-saved checkpoints may not have it.
# - relative_position_index: a persistent buffer in the original HTS-AT (normally present and then copied as is).
DERIVED_HF_BUFFERS: dict[str, str] = {
    r"text_model\.embeddings\.position_ids": "arange(max_position_embeddings)",
    r"text_model\.embeddings\.token_type_ids": "zeros(max_position_embeddings)",
    _AUDIO + r"layers\.\d+\.blocks\.\d+\.attention\.self\.relative_position_index": "Swin relative position index",
}

# (original key pattern, HF key template); patterns are matched in full against the ``module.``-stripped key.
_RENAME_RULES: tuple[tuple[re.Pattern[str], str], ...] = tuple(
    (re.compile(pattern), template)
    for pattern, template in (
        # --- HTS-AT audio branch -------------------------------------------------------------------------------
        (r"audio_branch\.bn0\.(weight|bias|running_mean|running_var|num_batches_tracked)", _AUDIO + r"batch_norm.\1"),
        (r"audio_branch\.patch_embed\.(proj|norm)\.(weight|bias)", _AUDIO + r"patch_embed.\1.\2"),
        # Only present in fused checkpoints (enable_fusion=True); the AFF block keeps its nn.Sequential indices.
        (r"audio_branch\.patch_embed\.(mel_conv2d|fusion_model)\.(.+)", _AUDIO + r"patch_embed.\1.\2"),
        (_ORIG_BLOCK + r"norm1\.(weight|bias)", _HF_BLOCK + r"layernorm_before.\3"),
        (
            _ORIG_BLOCK + r"attn\.relative_position_bias_table",
            _HF_BLOCK + "attention.self.relative_position_bias_table",
        ),
        (_ORIG_BLOCK + r"attn\.relative_position_index", _HF_BLOCK + "attention.self.relative_position_index"),
        (_ORIG_BLOCK + r"attn\.proj\.(weight|bias)", _HF_BLOCK + r"attention.output.dense.\3"),
        (_ORIG_BLOCK + r"norm2\.(weight|bias)", _HF_BLOCK + r"layernorm_after.\3"),
        (_ORIG_BLOCK + r"mlp\.fc1\.(weight|bias)", _HF_BLOCK + r"intermediate.dense.\3"),
        (_ORIG_BLOCK + r"mlp\.fc2\.(weight|bias)", _HF_BLOCK + r"output.dense.\3"),
        (
            r"audio_branch\.layers\.(\d+)\.downsample\.(reduction\.weight|norm\.weight|norm\.bias)",
            _AUDIO + r"layers.\1.downsample.\2",
        ),
        (r"audio_branch\.norm\.(weight|bias)", _AUDIO + r"norm.\1"),
        # --- RoBERTa text branch: ClapTextModel keeps the RobertaModel names (embeddings/encoder/pooler) ---------
        (r"text_branch\.((?:embeddings|encoder|pooler)\..+)", r"text_model.\1"),
        # --- projections: nn.Sequential(Linear, ReLU, Linear) -> ClapProjectionLayer(linear1, act, linear2) -----
        (r"(text|audio)_projection\.0\.(weight|bias)", r"\1_projection.linear1.\2"),
        (r"(text|audio)_projection\.2\.(weight|bias)", r"\1_projection.linear2.\2"),
        (r"logit_scale_(a|t)", r"logit_scale_\1"),
    )
)

# HTS-AT fuses query/key/value into one Linear(dim, 3 * dim); rows are [q; k; v] (see WindowAttention.forward:
# ``qkv.reshape(B, N, 3, heads, C // heads).permute(2, 0, 3, 1, 4)``).
_QKV_RULE = re.compile(_ORIG_BLOCK + r"attn\.qkv\.(weight|bias)")
_QKV_TARGETS = ("query", "key", "value")

_DROPPED_RULES = tuple(re.compile(pattern) for pattern in DROPPED_ORIGINAL_KEYS)


def htsat_clap_config(
    vocab_size: int,
    text_hidden_size: int,
    text_layers: int,
    text_heads: int,
    text_intermediate_size: int,
    max_positions: int,
    depths: list[int],
    audio_heads: list[int],
    patch_embeds_hidden_size: int,
    projection_dim: int,
    *,
    text_options: dict | None = None,
    audio_options: dict | None = None,
    **options,
) -> ClapConfig:
    """A CLAP config of the given size: a RoBERTa text tower (pad id 1) and an unfused HTS-AT (Swin) audio tower,
    whose output width is ``patch_embeds_hidden_size`` doubled at each stage after the first. ``text_options`` and
    ``audio_options`` are further settings of the text and audio configs, ``options`` of the ``ClapConfig``."""
    return ClapConfig(
        text_config={
            "vocab_size": vocab_size,
            "hidden_size": text_hidden_size,
            "num_hidden_layers": text_layers,
            "num_attention_heads": text_heads,
            "intermediate_size": text_intermediate_size,
            "max_position_embeddings": max_positions,
            "pad_token_id": 1,
            **(text_options or {}),
        },
        audio_config={
            "depths": depths,
            "num_attention_heads": audio_heads,
            "patch_embeds_hidden_size": patch_embeds_hidden_size,
            "hidden_size": patch_embeds_hidden_size * 2 ** (len(depths) - 1),  # HTS-AT num_features
            "enable_fusion": False,
            **(audio_options or {}),
        },
        projection_dim=projection_dim,
        **options,
    )


def htsat_unfused_config() -> ClapConfig:
    """Return the :class:`ClapConfig` of ``laion/clap-htsat-unfused`` (HTS-AT tiny + RoBERTa-base, no fusion).

    Every value below coincides with transformers' ``ClapConfig()`` defaults (checked in the tests); they are spelled
    out so that a change of defaults cannot silently change the architecture. The text ``layer_norm_eps`` is set to
    ``1e-5``, the original RoBERTa-base value that LAION-CLAP trained with, not transformers' default ``1e-12`` (which
    the upstream conversion script left in place): against the original LAION code the text tower's last hidden state
    is off by 2.2e-3 with 1e-12 and by 3.5e-6 with 1e-5.
    """
    text = {"hidden_act": "gelu", "type_vocab_size": 1, "bos_token_id": 0, "eos_token_id": 2, "layer_norm_eps": 1e-5}
    audio = {"window_size": 8, "spec_size": 256, "num_mel_bins": 64, "patch_size": 4, "patch_stride": [4, 4]}
    roberta_base, htsat_tiny = (50265, 768, 12, 12, 3072, 514), ([2, 2, 6, 2], [4, 8, 16, 32], 96)
    return htsat_clap_config(
        *roberta_base,
        *htsat_tiny,
        512,
        text_options=text,
        audio_options={**audio, "num_classes": 527},
        projection_hidden_act="relu",
    )


def laion_clap_feature_extractor(config: ClapConfig | None = None) -> ClapFeatureExtractor:
    """Feature extractor matching the original front end (48 kHz, n_fft 1024, hop 480, 64 mels, 50-14000 Hz).

    Unfused models take a single mel crop, so the default truncation is ``"rand_trunc"`` (the ``"fusion"`` default of
    ``ClapFeatureExtractor()`` emits 4 stacked mels that only a fused model accepts).
    """
    enable_fusion = bool(config.audio_config.enable_fusion) if config is not None else False
    return ClapFeatureExtractor(
        feature_size=64 if config is None else config.audio_config.num_mel_bins,
        sampling_rate=48_000,
        hop_length=480,
        max_length_s=10,
        fft_window_size=1024,
        frequency_min=50,
        frequency_max=14_000,
        truncation="fusion" if enable_fusion else "rand_trunc",
        padding="repeatpad",
    )


def _relative_position_index(window_size: int) -> torch.Tensor:
    """Swin relative position index for a ``window_size x window_size`` window (same formula as HTS-AT / HF)."""
    coords = torch.stack(torch.meshgrid(torch.arange(window_size), torch.arange(window_size), indexing="ij"))
    coords = coords.flatten(1)
    relative = (coords[:, :, None] - coords[:, None, :]).permute(1, 2, 0).contiguous()
    relative[:, :, 0] += window_size - 1
    relative[:, :, 1] += window_size - 1
    relative[:, :, 0] *= 2 * window_size - 1
    return relative.sum(-1)


def _derive_buffer(key: str, shape: torch.Size, config: ClapConfig) -> torch.Tensor | None:
    """Synthesise a deterministic HF buffer that the original checkpoint does not carry, or return None."""
    if re.fullmatch(r"text_model\.embeddings\.position_ids", key):
        return torch.arange(shape[-1], dtype=torch.long).expand(shape).clone()
    if re.fullmatch(r"text_model\.embeddings\.token_type_ids", key):
        return torch.zeros(shape, dtype=torch.long)
    if re.fullmatch(re.escape(_AUDIO) + r"layers\.\d+\.blocks\.\d+\.attention\.self\.relative_position_index", key):
        return _relative_position_index(config.audio_config.window_size)
    return None


def _expected_hf_state(config: ClapConfig) -> dict[str, torch.Size]:
    """Persistent state-dict keys and shapes of ``ClapModel(config)``, built on the meta device (no memory cost)."""
    with torch.device("meta"):
        model = ClapModel(config)
    return {key: value.shape for key, value in model.state_dict().items()}


def _rename(key: str) -> list[str] | None:
    """HF key(s) for one ``module.``-stripped original key; None if the key matches no rule."""
    match = _QKV_RULE.fullmatch(key)
    if match:
        stage, block, kind = match.groups()
        return [f"{_AUDIO}layers.{stage}.blocks.{block}.attention.self.{name}.{kind}" for name in _QKV_TARGETS]
    for pattern, template in _RENAME_RULES:
        match = pattern.fullmatch(key)
        if match:
            return [match.expand(template)]
    return None


def convert_laion_clap_state_dict(state_dict: dict[str, torch.Tensor], config: ClapConfig) -> dict[str, torch.Tensor]:
    """Map an original LAION-CLAP state dict onto ``ClapModel(config)``'s state-dict keys.

    Strips ``module.``, renames, splits the fused HTS-AT ``attn.qkv`` into query/key/value and drops the keys listed
    in :data:`DROPPED_ORIGINAL_KEYS`. Raises ``ValueError`` naming every unrecognised original key, every HF key left
    unfilled and every shape mismatch. Deterministic buffers absent from the original (:data:`DERIVED_HF_BUFFERS`) are
    synthesised. Tensors are returned unchanged (qkv thirds are cloned so they do not alias the fused tensor).
    """
    expected = _expected_hf_state(config)
    converted: dict[str, torch.Tensor] = {}
    source: dict[str, str] = {}
    unknown: list[str] = []
    duplicates: list[str] = []
    bad_shapes: list[str] = []
    seen: dict[str, str] = {}

    for original_key, tensor in state_dict.items():
        key = original_key[len(_DDP_PREFIX) :] if original_key.startswith(_DDP_PREFIX) else original_key
        if key in seen:
            duplicates.append(f"{original_key!r} and {seen[key]!r} both map to {key!r}")
            continue
        seen[key] = original_key
        if not isinstance(tensor, torch.Tensor):
            raise ValueError(f"original key {original_key!r} holds a {type(tensor).__name__}, not a tensor")
        if any(rule.fullmatch(key) for rule in _DROPPED_RULES):
            continue
        targets = _rename(key)
        if targets is None or any(target not in expected for target in targets):
            hint = "" if targets is None else f" (would map to {', '.join(t for t in targets if t not in expected)})"
            unknown.append(f"{original_key}{hint}")
            continue
        if len(targets) == 3:  # fused qkv
            if tensor.ndim == 0 or tensor.shape[0] % 3:
                bad_shapes.append(f"{original_key}: fused qkv of shape {tuple(tensor.shape)} is not divisible by 3")
                continue
            values = [part.clone() for part in tensor.chunk(3, dim=0)]
        else:
            values = [tensor]
        for target, value in zip(targets, values, strict=True):
            if target in converted:
                duplicates.append(f"{original_key!r} and {source[target]!r} both map to {target!r}")
                continue
            converted[target] = value
            source[target] = original_key

    for key in expected.keys() - converted.keys():
        derived = _derive_buffer(key, expected[key], config)
        if derived is not None:
            converted[key] = derived
            source[key] = "<derived>"

    for key, value in converted.items():
        if tuple(value.shape) != tuple(expected[key]):
            bad_shapes.append(
                f"{source[key]} -> {key}: got shape {tuple(value.shape)}, ClapModel expects {tuple(expected[key])}"
            )

    missing = sorted(expected.keys() - converted.keys())
    problems: list[str] = []
    if unknown:
        problems.append("unrecognised original keys:\n  " + "\n  ".join(sorted(unknown)))
    if duplicates:
        problems.append("conflicting keys:\n  " + "\n  ".join(duplicates))
    if missing:
        problems.append("ClapModel keys left unfilled:\n  " + "\n  ".join(missing))
    if bad_shapes:
        problems.append("shape mismatches:\n  " + "\n  ".join(sorted(bad_shapes)))
    if problems:
        raise ValueError("cannot convert LAION-CLAP state dict:\n" + "\n".join(problems))
    return {key: converted[key] for key in expected}


def _as_state_dict(obj: object) -> Mapping[str, object] | None:
    """Unwrap ``{"state_dict": ...}`` / ``{"model": ...}`` training checkpoints; None if not a mapping."""
    if not isinstance(obj, Mapping):
        return None
    for wrapper in ("state_dict", "model"):
        inner = obj.get(wrapper)
        if isinstance(inner, Mapping):
            return inner
    return obj


def load_laion_clap_checkpoint(path: str | os.PathLike[str]) -> dict[str, torch.Tensor]:
    """Load an original LAION-CLAP ``.pt`` on CPU (``weights_only=True``) and return its raw state dict.

    Accepts a bare state dict or a training checkpoint wrapping it under ``"state_dict"`` or ``"model"``.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"LAION-CLAP checkpoint not found: {path}")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # pickle/zip/weights-only errors all mean "not a loadable checkpoint"
        raise ValueError(f"{path} is not a loadable PyTorch checkpoint (torch.load weights_only=True): {exc}") from exc
    state = _as_state_dict(obj)
    if not state:
        raise ValueError(f"{path} is not a LAION-CLAP checkpoint: expected a state dict, got {type(obj).__name__}")
    not_tensors = [str(key) for key, value in state.items() if not isinstance(key, str) or not torch.is_tensor(value)]
    if not_tensors:
        shown = ", ".join(not_tensors[:5]) + (" ..." if len(not_tensors) > 5 else "")
        raise ValueError(f"{path} is not a LAION-CLAP checkpoint: non-tensor entries {shown}")
    return dict(state)


def convert_laion_clap_checkpoint(
    checkpoint_path: str | os.PathLike[str],
    output_dir: str | os.PathLike[str],
    config: ClapConfig | None = None,
) -> ClapModel:
    """Convert ``checkpoint_path``; save the ``ClapModel`` (safetensors) and its feature extractor to ``output_dir``."""
    config = htsat_unfused_config() if config is None else config
    converted = convert_laion_clap_state_dict(load_laion_clap_checkpoint(checkpoint_path), config)
    model = ClapModel(config)
    model.load_state_dict(converted, strict=True)
    model.eval()
    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(output_dir)
    laion_clap_feature_extractor(config).save_pretrained(output_dir)
    return model


def load_clap_config(path: str) -> ClapConfig:
    """ClapConfig from a ``config.json`` file or a folder holding one."""
    return ClapConfig.from_pretrained(path) if Path(path).is_dir() else ClapConfig.from_json_file(path)
