"""What each training stage trains, on which data, and what it exports; `loop.train` runs every stage the same way.

- `alignment` (stage 1) and `raft` (stage 2): a PairCap release, on caption pairs with retrieved examples (§3.2, §4.1).
- `clap_contrastive`: a `ClapModel` folder, on (audio, caption) pairs with CLAP's contrastive loss.
- `lm_text`: a causal language model folder, on caption text (next-token loss).

The last two stand in for the pretrained CLAP and Vicuna where they cannot be downloaded (the mini recipe), and adapt
them to a domain at full scale.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import torch
from accelerate import Accelerator
from datasets import Dataset
from huggingface_hub import ModelCard
from transformers import AutoFeatureExtractor, AutoModelForCausalLM, AutoTokenizer, ClapModel

from datasets_scripts.columns import column
from datasets_scripts.embed import embed_pairs
from hub_cards import earlier_provenance, render_model_card
from modeling_paircap.modeling_paircap import PairCapForConditionalGeneration
from modeling_paircap.processing_paircap import PairCapProcessor
from paircap.assembly import save_release
from paircap.caption_data import load_pairs
from paircap.training.adapters import save_adapter
from paircap.training.clip_groups import load_clip_groups
from paircap.training.config import TrainConfig
from paircap.training.data import CaptionTrainingSet, PairCapCollator
from paircap.training.distillation import ClapWithDistillation, DistillTargets, clap_state_dict, distillation_loss
from paircap.training.neighbors import (
    compute_training_neighbors,
    load_neighbors,
    neighbor_settings,
    save_neighbors,
    stored_settings,
)
from paircap.training.pretraining_data import (
    CaptionTextCollator,
    CaptionTextSet,
    ClapPairCollator,
    ClapPairSet,
    LogMelAugmentation,
)
from paircap.training.text_replay import TextReplay
from paircap.training.trainable_parameters import (
    configure_stage1,
    configure_stage2,
    merge_ia3,
    set_training_mode,
    train_with_frozen_parts_in_eval,
)


def model_loss(model, batch) -> torch.Tensor:
    return model(**batch).loss


def contrastive_loss(model, batch) -> torch.Tensor:
    return model(**batch, return_loss=True).loss


def label_tokens(batch) -> torch.Tensor:
    """Tokens the next-token loss covers (validation means are weighted by them)."""
    return (batch["labels"][:, 1:] != -100).sum()


def batch_rows(batch) -> torch.Tensor:
    return torch.tensor(batch["input_features"].shape[0], device=batch["input_features"].device)


@dataclass
class DataSplit:
    """A torch dataset with the lengths the batch sampler groups by and each sample's source."""

    dataset: torch.utils.data.Dataset
    lengths: Sequence[int] | Callable[[int], Sequence[int]]
    sources: Sequence[str]


@dataclass
class StageSetup:
    """Everything the loop needs from a stage: the model with its trainable parameters set, data, loss and export."""

    model: torch.nn.Module
    train: DataSplit
    validation: DataSplit | None
    collator: Callable
    parameter_groups: list[dict]
    # (unwrapped model, its full state dict, final step) -> cfg.export_dir; main process
    export: Callable[[torch.nn.Module, dict[str, torch.Tensor], int], Path]
    training_mode: Callable[[torch.nn.Module], None] = torch.nn.Module.train
    loss: Callable = model_loss
    loss_weight: Callable = label_tokens


def build_setup(cfg: TrainConfig, accelerator: Accelerator) -> StageSetup:
    builders = {
        "alignment": captioning_setup,
        "raft": captioning_setup,
        "clap_contrastive": clap_contrastive_setup,
        "lm_text": lm_text_setup,
    }
    return builders[cfg.stage](cfg, accelerator)


# ---- stage 1 and stage 2 ------------------------------------------------------------------------------------------


def retrieved_examples(cfg: TrainConfig, pairs: Dataset, model, processor, accelerator: Accelerator):
    """
    The training pairs' own neighbours (paper §3.2: audio-to-audio; or `neighbor_mode` pair2pair), one pair per
    neighbouring clip, none sharing audio with the pair (`clip_groups`): the pairs are embedded once in the frozen
    retrieval space with the clips' tokens from the run's starting token encoder (resumable), and their neighbour table
    stored under `retrieval_dir` with the settings that shaped it, recomputed only when those change.
    """
    folder = Path(cfg.retrieval_dir or Path(cfg.output_dir) / "retrieval")
    embedded = embed_pairs(
        pairs,
        model,
        processor,
        folder / "embedded",
        num_workers=cfg.num_workers,
        accelerator=accelerator,
        progress=accelerator.is_main_process,
    )
    path = folder / "neighbors.npz"
    groups = load_clip_groups(cfg.clip_groups) if cfg.clip_groups else None
    settings = neighbor_settings(cfg.num_neighbors, cfg.neighbor_mode, cfg.neighbor_weight, groups)
    if accelerator.is_main_process and stored_settings(path) != settings:
        neighbors = compute_training_neighbors(
            embedded.rows,
            cfg.num_neighbors,
            mode=cfg.neighbor_mode,
            fusion_weight=cfg.neighbor_weight,
            clip_groups=groups,
        )
        save_neighbors(path, embedded.rows, neighbors, settings)
    accelerator.wait_for_everyone()
    return embedded, load_neighbors(path, embedded.rows, settings)


def optimizer_groups(cfg: TrainConfig, model: PairCapForConditionalGeneration) -> list[dict]:
    """Stage 2 trains the audio tower and LM head at `encoder_lr_scale` x the learning rate (paper §4.1)."""
    slow_prefixes = ("audio_tower.", "language_model.lm_head.")
    fast, slow = [], []
    for name, parameter in model.named_parameters():
        if parameter.requires_grad:
            (slow if cfg.stage == "raft" and name.startswith(slow_prefixes) else fast).append(parameter)
    return rate_groups(fast, slow, cfg.learning_rate, cfg.encoder_lr_scale)


def rate_groups(
    fast: list[torch.nn.Parameter], slow: list[torch.nn.Parameter], learning_rate: float, scale: float
) -> list[dict]:
    """Optimizer groups: `fast` at the learning rate and, when there are any, `slow` at `scale` x it."""
    groups = [{"params": fast, "lr": learning_rate}]
    if slow:
        groups.append({"params": slow, "lr": learning_rate * scale})
    return groups


def captioning_setup(cfg: TrainConfig, accelerator: Accelerator) -> StageSetup:
    """Stage 1 (projector only) or stage 2 (IA3, head, projector, separate audio tower; with `text_replay_pairs`, their
    text loss added) on a PairCap release."""
    model = PairCapForConditionalGeneration.from_pretrained(cfg.model_name_or_path)
    processor = PairCapProcessor.from_pretrained(cfg.model_name_or_path, trust_remote_code=True)
    model.to(accelerator.device)
    pairs = load_pairs(cfg.train_pairs)
    embedded, neighbors = (None, None)
    if cfg.max_examples:
        embedded, neighbors = retrieved_examples(cfg, pairs, model, processor, accelerator)
    train_set = CaptionTrainingSet(
        pairs,
        processor,
        embedded and embedded.rows,
        neighbors,
        cfg.max_examples,
        cfg.seed,
        cfg.zero_shot_fraction,
        example_tokens=embedded and embedded.tokens,
        query_dropout=cfg.query_dropout,
        examples_schedule=cfg.examples_schedule or None,
        distractor_share=cfg.distractor_share,
        shuffle_examples=cfg.shuffle_examples,
        clip_groups=load_clip_groups(cfg.clip_groups) if cfg.clip_groups else None,
    )
    validation = None
    if cfg.validation_pairs:
        val_set = CaptionTrainingSet(load_pairs(cfg.validation_pairs), processor, seed=cfg.seed)
        validation = DataSplit(val_set, val_set.estimated_lengths, val_set.sources)
    if cfg.stage == "alignment":
        configure_stage1(model)
    else:
        configure_stage2(model, cfg.train_audio_encoder, cfg.train_language_model, cfg.train_lm_head)
    if cfg.gradient_checkpointing:
        model.language_model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})

    return StageSetup(
        model=model,
        train=DataSplit(train_set, train_set.estimated_lengths, train_set.sources),
        validation=validation,
        collator=PairCapCollator(processor),
        parameter_groups=optimizer_groups(cfg, model),
        export=release_export(cfg, processor, train_set.sources),
        training_mode=set_training_mode,
        loss=TextReplay(cfg, processor.tokenizer).loss(model_loss) if cfg.text_replay_pairs else model_loss,
    )


def release_export(
    cfg: TrainConfig, processor: PairCapProcessor, sources: Sequence[str]
) -> Callable[[PairCapForConditionalGeneration, dict[str, torch.Tensor], int], Path]:
    """
    Export the trained weights (IA3 merged) as a release folder with its processor and card; stage 2 also writes them
    as a peft adapter for its input release into `cfg.adapter_dir` (not when it trained the whole LM decoder).
    """

    def export(trained: PairCapForConditionalGeneration, state_dict: dict[str, torch.Tensor], step: int) -> Path:
        status = f"trained: stage `{cfg.stage}` for {step} steps from `{cfg.model_name_or_path}`."
        card = export_card(cfg, trained, status, sources)
        save_release(trained, processor, cfg.export_dir, card, state_dict=merge_ia3(trained.config, state_dict))
        if cfg.stage == "raft" and not cfg.train_language_model:
            save_adapter(trained, state_dict, cfg.adapter_dir, cfg.model_name_or_path)
        return cfg.export_dir

    return export


def export_card(
    cfg: TrainConfig, trained: PairCapForConditionalGeneration, status: str, sources: Sequence[str]
) -> ModelCard:
    """
    The exported release's card: the provenance its source release's card recorded (base models, the LM's licence,
    training pairs per source) carried over, with this stage's pairs per source (the larger count where both name one).
    """
    earlier = earlier_provenance(cfg.model_name_or_path)
    counts = dict(earlier.get("training_sources") or {})
    for source, count in Counter(sources).items():
        counts[source] = max(count, counts.get(source, 0))
    return render_model_card(
        trained.config,
        training_status=status,
        base_models=earlier.get("base_model"),
        language_model_license=earlier.get("language_model_license"),
        training_sources=counts,
        release_dir=cfg.model_name_or_path,
    )


# ---- stand-ins for the pretrained parts ---------------------------------------------------------------------------


def folder_export(cfg: TrainConfig, *companions) -> Callable[[torch.nn.Module, dict[str, torch.Tensor], int], Path]:
    """Export the trained model with its companions (tokenizer, feature extractor) as a `from_pretrained` folder."""

    def export(trained: torch.nn.Module, state_dict: dict[str, torch.Tensor], step: int) -> Path:
        trained.save_pretrained(cfg.export_dir, state_dict=state_dict)
        for companion in companions:
            companion.save_pretrained(cfg.export_dir)
        return cfg.export_dir

    return export


def all_parameters(cfg: TrainConfig, model: torch.nn.Module) -> list[dict]:
    return [{"params": [p for p in model.parameters() if p.requires_grad], "lr": cfg.learning_rate}]


def clap_parameter_groups(cfg: TrainConfig, model: torch.nn.Module, clap: ClapModel) -> list[dict]:
    """Every trainable parameter at the learning rate, but `clap`'s audio tower at `audio_tower_lr_scale` x it."""
    if cfg.audio_tower_lr_scale in (0.0, 1.0):  # at 0 the setup has frozen the tower
        return all_parameters(cfg, model)
    tower = {id(parameter) for parameter in clap.audio_model.parameters()}
    trainable = [parameter for parameter in model.parameters() if parameter.requires_grad]
    fast, slow = [p for p in trainable if id(p) not in tower], [p for p in trainable if id(p) in tower]
    return rate_groups(fast, slow, cfg.learning_rate, cfg.audio_tower_lr_scale)


def clap_contrastive_setup(cfg: TrainConfig, accelerator: Accelerator) -> StageSetup:
    """A `ClapModel` folder (model, feature extractor, tokenizer) trained with `ClapModel`'s contrastive loss, plus,
    with `distill_targets`, the distillation terms (`distillation.py`) through heads that are not exported."""
    clap = ClapModel.from_pretrained(cfg.model_name_or_path)
    feature_extractor = AutoFeatureExtractor.from_pretrained(cfg.model_name_or_path)
    tokenizer = AutoTokenizer.from_pretrained(cfg.model_name_or_path)
    targets = DistillTargets.load(cfg.distill_targets) if cfg.distill_targets else None

    def split(sources: list[str], augmentation: LogMelAugmentation | None = None, distill: bool = False) -> DataSplit:
        pairs = load_pairs(sources)
        rows = targets.rows_for(column(pairs, "audio_id"), cfg.distill_targets) if distill and targets else None
        dataset = ClapPairSet(
            pairs, feature_extractor, cfg.seed, augmentation, cache_features=cfg.cache_features, targets=rows
        )
        # every sample is one 10 s window and captions are short: batches are random draws, not length groups,
        # because the phrasings of one class have similar lengths and grouping by length would make them each
        # other's in-batch negatives
        return DataSplit(dataset, [1] * len(dataset), dataset.sources)

    if cfg.audio_tower_lr_scale == 0:
        clap.audio_model.requires_grad_(False)  # and in eval mode while training (`training_mode`)
    loss, model, export = contrastive_loss, clap, folder_export(cfg, feature_extractor, tokenizer)
    if targets is not None:
        dims = targets.embeddings.shape[1], None if targets.probabilities is None else targets.probabilities.shape[1]
        model = ClapWithDistillation(clap, *dims, cfg.distill_weight, cfg.distill_tag_weight)
        loss = distillation_loss
        export = distilled_export(export)
    model.to(accelerator.device)
    return StageSetup(
        model=model,
        # the validation loss stays CLAP's contrastive loss (comparable with and without a teacher)
        train=split(cfg.train_pairs, LogMelAugmentation(cfg.augment_gain_db, cfg.augment_time_shift), distill=True),
        validation=split(cfg.validation_pairs) if cfg.validation_pairs else None,
        collator=ClapPairCollator(tokenizer),
        parameter_groups=clap_parameter_groups(cfg, model, clap),
        training_mode=partial(train_with_frozen_parts_in_eval, parts=(clap.audio_model,)),
        export=export,
        loss=loss,
        loss_weight=batch_rows,
    )


def distilled_export(export: Callable) -> Callable[[ClapWithDistillation, dict[str, torch.Tensor], int], Path]:
    """Export the `ClapModel` of a `ClapWithDistillation`, without its heads."""

    def export_clap(trained: ClapWithDistillation, state_dict: dict[str, torch.Tensor], step: int) -> Path:
        return export(trained.clap, clap_state_dict(state_dict), step)

    return export_clap


def lm_text_setup(cfg: TrainConfig, accelerator: Accelerator) -> StageSetup:
    """A causal language model folder trained on the `caption` column of `train_pairs` (text-only rows welcome)."""
    model = AutoModelForCausalLM.from_pretrained(cfg.model_name_or_path).to(accelerator.device)
    tokenizer = AutoTokenizer.from_pretrained(cfg.model_name_or_path)
    if cfg.gradient_checkpointing:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})

    def split(sources: list[str]) -> DataSplit:
        pairs = load_pairs(sources)
        dataset = CaptionTextSet(pairs["caption"], tokenizer, cfg.text_template, cfg.max_text_tokens, cfg.seed)
        return DataSplit(dataset, dataset.lengths, pairs["source"])

    return StageSetup(
        model=model,
        train=split(cfg.train_pairs),
        validation=split(cfg.validation_pairs) if cfg.validation_pairs else None,
        collator=CaptionTextCollator(tokenizer),
        parameter_groups=all_parameters(cfg, model),
        export=folder_export(cfg, tokenizer),
    )
