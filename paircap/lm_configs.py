"""The Llama configs of the caption LMs PairCap builds (Vicuna-7B's shape for the full release, the mini recipe's and
the tests' small stand-ins), with what they all share: Llama's RoPE, SwiGLU and RMSNorm, an untied head, as many
key/value heads as attention heads, and Llama's bos/eos ids."""

from transformers import LlamaConfig


def caption_lm_config(
    vocab_size: int,
    hidden_size: int,
    intermediate_size: int,
    num_layers: int,
    num_heads: int,
    max_positions: int,
    **options,
) -> LlamaConfig:
    """A Llama config of the given size; `options` are further `LlamaConfig` settings (pad id, init range, ...)."""
    return LlamaConfig(
        vocab_size=vocab_size,
        hidden_size=hidden_size,
        intermediate_size=intermediate_size,
        num_hidden_layers=num_layers,
        num_attention_heads=num_heads,
        num_key_value_heads=num_heads,
        max_position_embeddings=max_positions,
        bos_token_id=1,
        eos_token_id=2,
        tie_word_embeddings=False,
        **options,
    )
