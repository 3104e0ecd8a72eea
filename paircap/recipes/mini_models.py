"""The mini recipe's model sizes: a small HTSAT CLAP and a small Llama, chosen to learn on 2 CPU cores in minutes.

Measured on the 2-core CI machine (forward + backward, batch 16): an HTSAT of width 16..128 takes 0.22 s per batch of
10 s windows (8..64: 0.19 s, 24..192: 0.35 s), a 4-layer Llama of width 192 takes 0.11 s per batch of 60 tokens and
0.67 s at 300 tokens (a prompt with four retrieved pairs). The widths below keep every training stage at a few
minutes while leaving room for the LM to learn caption language (~2k-token BPE vocabulary).
"""

from transformers import ClapConfig, LlamaConfig


def mini_clap_config(vocab_size: int) -> ClapConfig:
    """HTSAT with the real 4-stage layout at width 16..128 (64 tokens of 128 per 10 s window), a 2-layer text tower of
    width 64, and a 64-d joint space."""
    return ClapConfig(
        text_config={
            "vocab_size": vocab_size,
            "hidden_size": 64,
            "num_hidden_layers": 2,
            "num_attention_heads": 4,
            "intermediate_size": 256,
            "max_position_embeddings": 80,
            "pad_token_id": 1,
        },
        audio_config={
            "depths": [1, 1, 2, 1],
            "num_attention_heads": [2, 4, 4, 8],
            "patch_embeds_hidden_size": 16,
            "hidden_size": 128,
            "enable_fusion": False,
        },
        projection_dim=64,
    )


def mini_llama_config(vocab_size: int) -> LlamaConfig:
    """A 4-layer Llama of width 192 (RoPE, SwiGLU, RMSNorm, untied head, as Vicuna), 1024 positions."""
    return LlamaConfig(
        vocab_size=vocab_size,
        hidden_size=192,
        intermediate_size=512,
        num_hidden_layers=4,
        num_attention_heads=4,
        num_key_value_heads=4,
        max_position_embeddings=1024,
        bos_token_id=1,
        eos_token_id=2,
        pad_token_id=None,
        tie_word_embeddings=False,
    )
