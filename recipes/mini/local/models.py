"""The mini recipe's model sizes: a small HTSAT CLAP and a small Llama, chosen to learn on 2 CPU cores in minutes.

On a 2-core CPU the HTSAT's input size, not its width, sets the cost of a step, so the mini CLAP reads a 128x128
input (a hop of 1920 samples: 251 frames per 10 s window, Swin windows of 4) instead of HTSAT's 256x256: a 10 s window
gives 16 encoder tokens (8 prompt tokens at stride 2), which also keeps every captioning prompt short. The Llama's
width leaves room to learn caption language (a ~2k-token BPE vocabulary). `recipes/mini/RESULTS.md` has the
measurements behind these choices.
"""

from transformers import ClapConfig, ClapFeatureExtractor, LlamaConfig

from paircap.convert_laion_clap import htsat_clap_config
from paircap.lm_configs import caption_lm_config

HOP_LENGTH = 1920  # 40 ms at 48 kHz: 251 frames per 10 s window, within the 128x128 HTSAT input (2 x 128 frames)


def mini_clap_config(vocab_size: int) -> ClapConfig:
    """HTSAT with the real 4-stage layout at width 16..128 on a 128x128 input (16 tokens of 128 per 10 s window),
    dropout and stochastic depth of 0.2 against memorising ~200 training clips, a 2-layer text tower of width 64, and
    a 64-d joint space."""
    audio = {"spec_size": 128, "window_size": 4, "hidden_dropout_prob": 0.2, "drop_path_rate": 0.2}
    return htsat_clap_config(vocab_size, 64, 2, 4, 256, 80, [1, 1, 2, 1], [2, 4, 4, 8], 16, 64, audio_options=audio)


def mini_llama_config(vocab_size: int) -> LlamaConfig:
    """A 4-layer Llama of width 192 (RoPE, SwiGLU, RMSNorm, untied head, as Vicuna), 1024 positions."""
    return caption_lm_config(vocab_size, 192, 512, 4, 4, 1024, pad_token_id=None)


def mini_feature_extractor() -> ClapFeatureExtractor:
    """CLAP's log-mel features (64 mels, 48 kHz, 10 s windows) at a 40 ms hop with a 2048-sample FFT."""
    return ClapFeatureExtractor(hop_length=HOP_LENGTH, fft_window_size=2048)
