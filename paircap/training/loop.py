"""The training loop behind `accelerate launch train_accelerate.py`: stage 1 alignment and stage 2 RAFT."""

import json
import math
import shutil
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from accelerate import Accelerator
from accelerate.utils import set_seed
from datasets import Dataset
from torch.utils.data import DataLoader
from tqdm.auto import tqdm
from transformers import get_cosine_schedule_with_warmup

from datasets_scripts.embed import embed_pairs
from datasets_scripts.neighbors import compute_training_neighbors, load_neighbors, save_neighbors
from modeling_paircap.modeling_paircap import PairCapForConditionalGeneration
from modeling_paircap.processing_paircap import PairCapProcessor
from paircap.assembly import save_release
from paircap.caption_data import load_pairs
from paircap.cards import render_model_card
from paircap.stages import configure_stage1, configure_stage2, merge_ia3, set_training_mode
from paircap.training.config import TrainConfig
from paircap.training.data import (
    CaptionTrainingSet,
    LengthGroupedBatchSampler,
    PairCapCollator,
    balanced_source_weights,
)


@dataclass
class TrainingProgress:
    """Where a run stands; saved with every checkpoint so `--resume` continues on the exact next batch."""

    epoch: int = 0
    batches_done_in_epoch: int = 0
    global_step: int = 0

    def state_dict(self) -> dict:
        return asdict(self)

    def load_state_dict(self, state: dict) -> None:
        self.__dict__.update(state)


def retrieved_examples(cfg: TrainConfig, pairs: Dataset, model, processor, accelerator: Accelerator):
    """
    The training pairs' own audio-to-audio neighbours (paper §3.2), one pair per neighbouring clip: the pairs are
    embedded once in the frozen retrieval space with the clips' tokens from the run's starting token encoder
    (resumable), and their neighbour table stored under `retrieval_dir`, never recomputed per epoch.
    """
    folder = Path(cfg.retrieval_dir or Path(cfg.output_dir) / "retrieval")
    embedded = embed_pairs(
        pairs, model, processor, folder / "embedded", accelerator=accelerator, progress=accelerator.is_main_process
    )
    path = folder / "neighbors.npz"
    if accelerator.is_main_process and not path.is_file():
        save_neighbors(path, embedded.rows, compute_training_neighbors(embedded.rows, cfg.num_neighbors))
    accelerator.wait_for_everyone()
    return embedded, load_neighbors(path, embedded.rows)


def build_dataloader(cfg: TrainConfig, dataset: CaptionTrainingSet, processor, sources, shuffle: bool):
    weights = balanced_source_weights(sources) if cfg.balance_sources and shuffle else None
    sampler = LengthGroupedBatchSampler(
        dataset.estimated_lengths, cfg.per_device_batch_size, seed=cfg.seed, shuffle=shuffle, weights=weights
    )
    loader = DataLoader(
        dataset,
        batch_sampler=sampler,
        collate_fn=PairCapCollator(processor),
        num_workers=cfg.num_workers,
        persistent_workers=False,
    )
    return loader, sampler


def optimizer_groups(cfg: TrainConfig, model: PairCapForConditionalGeneration) -> list[dict]:
    """Stage 2 trains the audio tower and LM head at `encoder_lr_scale` x the learning rate (paper §4.1)."""
    slow_prefixes = ("audio_tower.", "language_model.lm_head.")
    fast, slow = [], []
    for name, parameter in model.named_parameters():
        if parameter.requires_grad:
            (slow if cfg.stage == "raft" and name.startswith(slow_prefixes) else fast).append(parameter)
    groups = [{"params": fast, "lr": cfg.learning_rate}]
    if slow:
        groups.append({"params": slow, "lr": cfg.learning_rate * cfg.encoder_lr_scale})
    return groups


def latest_checkpoint(cfg: TrainConfig) -> Path | None:
    checkpoints = sorted(cfg.checkpoint_dir.glob("step-*"))
    return checkpoints[-1] if checkpoints else None


def save_checkpoint(cfg: TrainConfig, accelerator: Accelerator, step: int) -> None:
    accelerator.save_state(str(cfg.checkpoint_dir / f"step-{step:08d}"))
    if accelerator.is_main_process:
        for old in sorted(cfg.checkpoint_dir.glob("step-*"))[: -cfg.save_total_limit]:
            shutil.rmtree(old)
    accelerator.wait_for_everyone()


@torch.no_grad()
def validation_loss(model, loader, accelerator: Accelerator) -> float:
    """Token-weighted mean loss over the validation set, gathered over processes."""
    model.eval()
    total = torch.zeros(2, device=accelerator.device)
    for batch in loader:
        tokens = (batch["labels"][:, 1:] != -100).sum()
        total += torch.stack([model(**batch).loss.float() * tokens, tokens.float()])
    set_training_mode(accelerator.unwrap_model(model))
    total = accelerator.reduce(total, reduction="sum")
    return (total[0] / total[1].clamp(min=1)).item()


def train(cfg: TrainConfig) -> Path:
    """Run one stage or curriculum phase; returns the exported release folder (or the output folder)."""
    accelerator = Accelerator(
        mixed_precision=cfg.mixed_precision,
        gradient_accumulation_steps=cfg.gradient_accumulation_steps,
        log_with=cfg.report_to or None,
        project_dir=cfg.output_dir,
    )
    set_seed(cfg.seed)
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
    )
    train_loader, train_sampler = build_dataloader(cfg, train_set, processor, pairs["source"], shuffle=True)
    val_loader = None
    if cfg.validation_pairs:
        val_pairs = load_pairs(cfg.validation_pairs)
        val_set = CaptionTrainingSet(val_pairs, processor, seed=cfg.seed)
        val_loader, _ = build_dataloader(cfg, val_set, processor, val_pairs["source"], shuffle=False)

    if cfg.stage == "alignment":
        configure_stage1(model)
    else:
        configure_stage2(model, train_audio_encoder=cfg.train_audio_encoder)
    if cfg.gradient_checkpointing:
        model.language_model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    optimizer = torch.optim.AdamW(optimizer_groups(cfg, model), weight_decay=cfg.weight_decay)
    batches_per_epoch = math.ceil(len(train_sampler) / accelerator.num_processes)
    steps_per_epoch = math.ceil(batches_per_epoch / cfg.gradient_accumulation_steps)
    total_steps = cfg.max_steps or steps_per_epoch * cfg.num_epochs
    scheduler = get_cosine_schedule_with_warmup(optimizer, int(cfg.warmup_ratio * total_steps), total_steps)
    model, optimizer, train_loader = accelerator.prepare(model, optimizer, train_loader)
    if val_loader is not None:
        val_loader = accelerator.prepare(val_loader)
    progress = TrainingProgress()
    accelerator.register_for_checkpointing(scheduler, progress)
    checkpoint = latest_checkpoint(cfg) if cfg.resume else None
    if checkpoint is not None:
        accelerator.load_state(str(checkpoint))
        accelerator.print(f"resumed from {checkpoint} at step {progress.global_step}")
    if cfg.report_to:
        accelerator.init_trackers("paircap", config={k: str(v) for k, v in asdict(cfg).items()})

    run_steps, stopped_early = 0, False
    bar = tqdm(total=total_steps, initial=progress.global_step, disable=not accelerator.is_main_process, desc=cfg.stage)
    window = {"loss": 0.0, "tokens": 0, "start": time.perf_counter(), "batches": 0}
    set_training_mode(accelerator.unwrap_model(model))
    while progress.global_step < total_steps and not stopped_early:
        train_set.set_epoch(progress.epoch)
        train_sampler.set_epoch(progress.epoch)
        for batch in accelerator.skip_first_batches(train_loader, progress.batches_done_in_epoch):
            seed_batch(cfg.seed, accelerator.process_index, progress)
            with accelerator.accumulate(model):
                loss = model(**batch).loss
                accelerator.backward(loss)
                if accelerator.sync_gradients:
                    accelerator.clip_grad_norm_(model.parameters(), cfg.max_grad_norm)
                optimizer.step()
                optimizer.zero_grad()
            progress.batches_done_in_epoch += 1
            window["loss"] += loss.detach().float().item()
            window["tokens"] += int(batch["attention_mask"].sum())
            window["batches"] += 1
            if not accelerator.sync_gradients:
                continue
            scheduler.step()
            progress.global_step += 1
            run_steps += 1
            bar.update(1)
            if progress.global_step % cfg.log_every == 0 or progress.global_step == total_steps:
                log_window(accelerator, window, scheduler, progress, bar)
            if val_loader is not None and cfg.eval_every and progress.global_step % cfg.eval_every == 0:
                log_validation(model, val_loader, accelerator, progress.global_step)
            stopped_early = run_steps == cfg.stop_after_steps and progress.global_step < total_steps
            if progress.global_step % cfg.save_every == 0 or progress.global_step == total_steps or stopped_early:
                save_checkpoint(cfg, accelerator, progress.global_step)
            if progress.global_step >= total_steps or stopped_early:
                break
        else:  # the epoch ran out
            progress.epoch += 1
            progress.batches_done_in_epoch = 0
    bar.close()
    if stopped_early:
        accelerator.print(f"stopped after {run_steps} steps at step {progress.global_step}; continue with --resume")
        accelerator.end_training()
        return Path(cfg.output_dir)
    if val_loader is not None:
        log_validation(model, val_loader, accelerator, progress.global_step)
    result = export_release(cfg, accelerator, model, processor, progress.global_step) if cfg.export else cfg.output_dir
    accelerator.end_training()
    return Path(result)


def seed_batch(seed: int, process_index: int, progress: TrainingProgress) -> None:
    """
    Seed torch's RNG (dropout) from the run seed, the process and the batch's place in the data: a resumed run then
    draws the same dropout masks as an uninterrupted one, however many data loaders either created on the way.
    """
    state = np.random.SeedSequence([seed, process_index, progress.epoch, progress.batches_done_in_epoch])
    torch.manual_seed(int(state.generate_state(1, dtype=np.uint64)[0] >> np.uint64(1)))


def log_validation(model, loader, accelerator: Accelerator, step: int) -> None:
    loss = validation_loss(model, loader, accelerator)
    accelerator.log({"validation_loss": loss}, step=step)
    if accelerator.is_main_process:
        print(json.dumps({"step": step, "validation_loss": loss}), flush=True)


def log_window(accelerator: Accelerator, window: dict, scheduler, progress: TrainingProgress, bar) -> None:
    """Mean loss, learning rate and tokens/s since the last log line, to the trackers and the progress bar."""
    seconds = time.perf_counter() - window["start"]
    tokens = accelerator.reduce(torch.tensor(window["tokens"], device=accelerator.device), reduction="sum").item()
    values = {
        "loss": window["loss"] / max(window["batches"], 1),
        "lr": scheduler.get_last_lr()[0],
        "tokens_per_second": tokens / max(seconds, 1e-9),
        "epoch": progress.epoch,
    }
    accelerator.log(values, step=progress.global_step)
    bar.set_postfix(loss=f"{values['loss']:.4f}", lr=f"{values['lr']:.2e}", tok_s=f"{values['tokens_per_second']:.0f}")
    if accelerator.is_main_process:
        print(json.dumps({"step": progress.global_step, **values}), flush=True)
    window.update(loss=0.0, tokens=0, batches=0, start=time.perf_counter())


def export_release(cfg: TrainConfig, accelerator: Accelerator, model, processor, step: int) -> Path:
    """Write the trained model as a release folder (IA3 merged into the weights), loadable with trust_remote_code."""
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        model = accelerator.unwrap_model(model)
        merge_ia3(model)
        model.eval()
        status = f"trained: stage `{cfg.stage}` for {step} steps from `{cfg.model_name_or_path}`."
        save_release(model, processor, cfg.export_dir, render_model_card(model.config, training_status=status))
        print(f"exported the trained release to {cfg.export_dir}", flush=True)
    accelerator.wait_for_everyone()
    return cfg.export_dir
