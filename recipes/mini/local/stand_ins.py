"""Stages `init`, `clap`, `lm` and `assemble`: the stand-ins for the pretrained parts (laion/clap-htsat-unfused and
Vicuna, which cannot be downloaded here), trained from scratch, and the untrained PairCap release built from them."""

from __future__ import annotations

import json

import torch
from datasets import load_from_disk
from transformers import ClapModel, LlamaForCausalLM

from modeling_paircap.prompting_paircap import DEFAULT_PROMPT_TEMPLATE, PromptFormat
from paircap.assembly import assemble_release
from paircap.tiny import train_clap_tokenizer, train_lm_tokenizer
from recipes.mini.local.audio_pretraining import clap_start
from recipes.mini.local.augmented_clips import write_augmented_clips
from recipes.mini.local.layout import MiniRun
from recipes.mini.local.models import mini_clap_config, mini_feature_extractor, mini_llama_config
from recipes.mini.local.probe import clap_retrieval
from recipes.mini.local.teacher_targets import teacher_targets
from recipes.mini.local.training import train_stage

SINGLE_CLIP_REPEATS = 9  # + the copy in the training pairs: 10 x 752 single-clip rows beside 7,500 mixture rows


def lm_text_template(template: dict = DEFAULT_PROMPT_TEMPLATE) -> str:
    """The caption as the assistant's answer to one prompt turn whose audio's place holds the caption's keywords,
    shuffled: the LM learns the chat frame of PairCap's prompts (Vicuna's role), caption language, and to write what
    the turn holds. Trained on an empty turn, it learnt to ignore the turn, and later its audio tokens (RESULTS.md)."""
    prompt = PromptFormat.from_template(template)
    return prompt.preamble + prompt.turn("{keywords}") + " {caption}"


def init_models(run: MiniRun) -> None:
    """Tokenizers trained on the caption text; a small random CLAP and Llama in Hugging Face layout."""
    corpus = list(load_from_disk(str(run.pairs("text")))["caption"])
    lm_corpus = [lm_text_template().format(caption=caption, keywords="") for caption in corpus[:2000]] + corpus
    lm_tokenizer = train_lm_tokenizer(vocab_size=2000, corpus=lm_corpus)
    clap_tokenizer = train_clap_tokenizer(vocab_size=1000, corpus=corpus)
    torch.manual_seed(run.seed)
    ClapModel(mini_clap_config(len(clap_tokenizer))).save_pretrained(run.path("init", "clap"))
    mini_feature_extractor().save_pretrained(run.path("init", "clap"))
    clap_tokenizer.save_pretrained(run.path("init", "clap"))
    LlamaForCausalLM(mini_llama_config(len(lm_tokenizer))).save_pretrained(run.path("init", "lm"))
    lm_tokenizer.save_pretrained(run.path("init", "lm"))


def train_clap(run: MiniRun) -> None:
    """The CLAP stand-in (`conf/train/clap.yaml`) on the training clips, the scale's augmented takes of them
    (`augmented_clips.py`; none at the full scale) and the training mixtures, with a teacher (`--teacher`) also
    distilled from it (its targets computed first, `teacher_targets.py`), then how well it retrieves test captions
    (`clap/retrieval.json`)."""
    augmented = write_augmented_clips(run)
    takes = [] if augmented is None else [str(augmented)]
    # single clips and training mixtures about half and half: trained on single clips only, its embedding of a
    # mixture names at most one event. The single clips (also in `train`) are listed again, not drawn by source
    # weights (`balance_sources`): a row drawn twice in an epoch gets the same augmentation, a repeated row its own.
    # Each augmented take stands in for one of those repeats
    repeats = max(0, SINGLE_CLIP_REPEATS - run.scale.clap_augmented_takes)
    train_pairs = [str(run.pairs("train_clips"))] * repeats + takes + [str(run.pairs("train"))]
    distill = (
        {} if run.teacher is None else {"distill_targets": str(teacher_targets(run, list(dict.fromkeys(train_pairs))))}
    )
    train_stage(
        run,
        "clap",
        model_name_or_path=str(clap_start(run)),
        train_pairs=train_pairs,
        validation_pairs=run.validation_pairs(),
        max_steps=run.scale.clap_steps,
        per_device_batch_size=run.scale.clap_batch_size,
        **distill,
    )
    run.path("clap", "retrieval.json").write_text(json.dumps(clap_retrieval(run), indent=2))


def train_lm(run: MiniRun) -> None:
    """The language model stand-in (`conf/train/lm.yaml`) on the caption text."""
    train_stage(
        run,
        "lm",
        model_name_or_path=str(run.path("init", "lm")),
        train_pairs=[str(run.pairs("text"))],
        text_template=lm_text_template(),
        max_steps=run.scale.lm_steps,
        per_device_batch_size=run.scale.lm_batch_size,
    )


def assemble(run: MiniRun) -> None:
    """The untrained PairCap release (`assembled/`) from the trained CLAP and LM."""
    # torch log-mels (the same features as ClapFeatureExtractor's): the numpy extractor took 3x the model's time
    # in a training step on 2 cores, and every stage, knowledge base and release after this one inherits it
    assemble_release(
        str(run.release("clap")), str(run.release("lm")), run.path("assembled"), seed=run.seed, feature_backend="torch"
    )
