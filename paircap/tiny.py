"""Tiny random CLAP and Llama checkpoints in Hugging Face layout, with tokenizers trained locally.

Tests and CPU smoke benchmarks use them in place of `laion/clap-htsat-unfused` and `lmsys/vicuna-7b-v1.5`: the folders
are loaded through the same `from_pretrained` paths as the real checkpoints.
"""

import string
from collections.abc import Sequence
from pathlib import Path

import torch
from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers
from transformers import (
    ClapConfig,
    ClapFeatureExtractor,
    ClapModel,
    LlamaConfig,
    LlamaForCausalLM,
    PreTrainedTokenizerFast,
)

from paircap.convert_laion_clap import htsat_clap_config
from paircap.lm_configs import caption_lm_config

# Caption-like sentences: the tokenizers' training text, so captions tokenize into real sub-words.
CORPUS = [
    "A dog barks in the distance while birds chirp.",
    "A man is speaking and a crowd is cheering loudly.",
    "Rain falls on a metal roof as thunder rumbles.",
    "A car engine starts and then idles before driving away.",
    "Water is flowing from a tap into a sink.",
    "A woman laughs while children play in the background.",
    "Footsteps on a wooden floor and a door closes.",
    "Pages of a book are turned slowly and quickly.",
    "A train passes by with a horn blowing.",
    "Wind blows through trees and leaves rustle.",
    "An elevator voice announces the floor in a hospital.",
    "A pug struggles to breathe and snorts.",
    "People talk in a busy market with music playing.",
    "A roller coaster rattles while people scream.",
    "Someone types on a keyboard and clicks a mouse.",
    "A cat meows and purrs near a humming fridge.",
    "Waves crash on the shore as seagulls call.",
    "A bell rings several times in a church.",
    "An airplane flies overhead with a loud roar.",
    "Glass breaks and shatters on a hard floor.",
    "A chat between a curious user and an artificial intelligence assistant.",
    "The assistant gives helpful, detailed, and polite answers to the user's questions.",
    "USER: Describe the audio in one sentence. ASSISTANT:",
]


def train_lm_tokenizer(vocab_size: int = 400, corpus: Sequence[str] = CORPUS * 4) -> PreTrainedTokenizerFast:
    """A Llama-style tokenizer (metaspace BPE, `<s>` prepended, `</s>` as end of sequence) trained on `corpus`."""
    tokenizer = Tokenizer(models.BPE(unk_token="<unk>", fuse_unk=True, byte_fallback=False))
    tokenizer.normalizer = normalizers.NFKC()
    tokenizer.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="first")
    tokenizer.decoder = decoders.Metaspace(replacement="▁", prepend_scheme="first")
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=["<unk>", "<s>", "</s>"],
        initial_alphabet=list(string.printable.strip()),
        show_progress=False,
    )
    tokenizer.train_from_iterator(corpus, trainer=trainer)
    tokenizer.post_processor = processors.TemplateProcessing(single="<s> $A", special_tokens=[("<s>", 1)])
    return PreTrainedTokenizerFast(
        tokenizer_object=tokenizer, bos_token="<s>", eos_token="</s>", unk_token="<unk>", model_max_length=4096
    )


def train_clap_tokenizer(vocab_size: int = 300, corpus: Sequence[str] = CORPUS * 4) -> PreTrainedTokenizerFast:
    """A RoBERTa-style tokenizer (byte-level BPE, `<s> ... </s>`, pad id 1) trained on `corpus`."""
    special = ["<s>", "<pad>", "</s>", "<unk>", "<mask>"]
    tokenizer = Tokenizer(models.BPE(unk_token="<unk>"))
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=special,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tokenizer.train_from_iterator(corpus, trainer=trainer)
    tokenizer.post_processor = processors.RobertaProcessing(("</s>", 2), ("<s>", 0))
    return PreTrainedTokenizerFast(
        tokenizer_object=tokenizer,
        bos_token="<s>",
        eos_token="</s>",
        unk_token="<unk>",
        pad_token="<pad>",
        cls_token="<s>",
        sep_token="</s>",
        mask_token="<mask>",
        model_max_length=77,
    )


def tiny_clap_config(vocab_size: int) -> ClapConfig:
    """HTSAT with 4 one-block stages of width 8..64 (the real stage layout, 64 tokens per window) and a 2-layer text
    tower."""
    return htsat_clap_config(vocab_size, 32, 2, 2, 37, 80, [1, 1, 1, 1], [1, 2, 2, 4], 8, 16)


def tiny_llama_config(vocab_size: int) -> LlamaConfig:
    """
    A two-layer Llama with the real architecture's options (RoPE, SwiGLU, RMSNorm, untied head). Its weights start at
    std 0.2 rather than 0.02: at hidden size 48 a 0.02 head bounds every logit near 0, which pins the loss at
    ln(vocab) whatever the projector does; 0.2 gives the wide logit range a pretrained LM has, so training can fit.
    """
    return caption_lm_config(vocab_size, 48, 96, 2, 4, 2048, pad_token_id=None, initializer_range=0.2)


def save_tiny_clap(path: str | Path, seed: int = 0) -> Path:
    """Write a tiny random CLAP checkpoint (model, feature extractor, tokenizer) like `laion/clap-htsat-unfused`."""
    path = Path(path)
    tokenizer = train_clap_tokenizer()
    torch.manual_seed(seed)
    model = ClapModel(tiny_clap_config(len(tokenizer))).eval()
    spread_text_embeddings(model)
    model.save_pretrained(path)
    ClapFeatureExtractor().save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


def spread_text_embeddings(model: ClapModel, std: float = 0.3) -> None:
    """
    Re-draw the text tower's matrices at a larger scale. At the default 0.02 a tiny random RoBERTa's pooled output is
    dominated by the first-position token, so every caption embeds to nearly one direction (pairwise cosine > 0.99)
    and text-side retrieval would rank by noise; at 0.3 captions spread out (mean cosine about 0.7) and related ones
    stay closer, like a trained CLAP text tower.
    """
    with torch.no_grad():
        for module in (model.text_model, model.text_projection):
            for parameter in module.parameters():
                if parameter.dim() > 1:
                    parameter.normal_(0.0, std)


def save_tiny_llama(path: str | Path, seed: int = 0) -> Path:
    """Write a tiny random Llama causal LM with its tokenizer, like `lmsys/vicuna-7b-v1.5`."""
    path = Path(path)
    tokenizer = train_lm_tokenizer()
    torch.manual_seed(seed)
    LlamaForCausalLM(tiny_llama_config(len(tokenizer))).eval().save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path
