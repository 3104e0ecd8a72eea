"""The training loop behind `accelerate launch train_accelerate.py`, the same for every stage (`stage_setups`): stage 1
alignment, stage 2 RAFT, and the CLAP / caption-LM stand-ins for the pretrained parts."""

import json
import math
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from accelerate import Accelerator
from accelerate.utils import set_seed
from torch.utils.data import DataLoader
from tqdm.auto import tqdm
from transformers import get_cosine_schedule_with_warmup
from transformers.utils import logging

from paircap.training.checkpoints import (
    check_starting_point,
    read_trainer_state,
    register_trainable_state,
    resumable_checkpoint,
    save_checkpoint,
    starting_point,
)
from paircap.training.config import TrainConfig
from paircap.training.data import LengthGroupedBatchSampler, balanced_source_weights
from paircap.training.errors import NonFiniteLossError, NonFiniteWeightsError
from paircap.training.stage_setups import DataSplit, StageSetup, build_setup

logger = logging.get_logger(__name__)


@dataclass
class TrainingProgress:
    """Where a run stands; saved with every checkpoint so `--resume` continues on the exact next batch."""

    epoch: int = 0
    batches_done_in_epoch: int = 0
    global_step: int = 0
    skipped_batches: int = 0  # batches whose loss was not finite (nonfinite_loss: skip)

    def state_dict(self) -> dict:
        return asdict(self)

    def load_state_dict(self, state: dict) -> None:
        self.__dict__.update(state)


def build_dataloader(cfg: TrainConfig, split: DataSplit, collator, shuffle: bool):
    weights = balanced_source_weights(split.sources) if cfg.balance_sources and shuffle else None
    sampler = LengthGroupedBatchSampler(
        split.lengths, cfg.per_device_batch_size, seed=cfg.seed, shuffle=shuffle, weights=weights
    )
    loader = DataLoader(
        split.dataset,
        batch_sampler=sampler,
        collate_fn=collator,
        num_workers=cfg.num_workers,
        # Workers start from a clean fork server, once per run: a worker forked from a process whose gloo and OpenMP
        # threads hold locks can deadlock on them (a two-process CPU run once hung so, rank 0 waiting on its worker).
        multiprocessing_context="forkserver" if cfg.num_workers else None,
        persistent_workers=cfg.num_workers > 0,
    )
    return loader, sampler


def epoch_batches(accelerator: Accelerator, loader: DataLoader, sampler, progress: TrainingProgress) -> DataLoader:
    """
    The batches of epoch `progress.epoch` left to train on: the dataset and the sampler draw that epoch's examples and
    order, and a resumed epoch skips the batches done (with a loader of its own, whose workers start again; otherwise
    the persistent workers carry on).
    """
    dataset = loader.dataset
    if hasattr(dataset, "set_epoch"):
        dataset.set_epoch(progress.epoch)
    sampler.set_epoch(progress.epoch)
    skip = progress.batches_done_in_epoch
    loader = accelerator.skip_first_batches(loader, skip) if skip else loader
    if hasattr(loader, "set_epoch"):  # accelerate's loader sets the dataset's epoch to its own count on each pass
        loader.set_epoch(progress.epoch)
    return loader


def finite_everywhere(accelerator: Accelerator, loss: torch.Tensor) -> bool:
    """Whether the loss is finite on every process (all of them must agree to skip a batch)."""
    bad = torch.tensor(0.0 if torch.isfinite(loss.detach()).all() else 1.0, device=accelerator.device)
    return accelerator.reduce(bad, reduction="sum").item() == 0


def check_loss(cfg: TrainConfig, accelerator: Accelerator, loss: torch.Tensor, progress: TrainingProgress) -> bool:
    """
    True when the batch's loss is finite. Otherwise the batch is skipped (no backward, so it adds nothing to the
    gradients) while `nonfinite_loss` is "skip" and fewer than `max_skipped_batches` were skipped, and False is
    returned; or NonFiniteLossError names the step and batch.
    """
    if finite_everywhere(accelerator, loss):
        return True
    where = f"step {progress.global_step + 1} (epoch {progress.epoch}, batch {progress.batches_done_in_epoch})"
    if cfg.nonfinite_loss == "stop" or progress.skipped_batches >= cfg.max_skipped_batches:
        skipped = f" after skipping {progress.skipped_batches} batches" if cfg.nonfinite_loss == "skip" else ""
        raise NonFiniteLossError(
            f"non-finite loss ({loss.detach().float().item()}) at {where}{skipped}; no update was made from it, and "
            f"the last checkpoint in {cfg.checkpoint_dir} is intact (lower the learning rate, check the data, or set "
            "nonfinite_loss: skip with max_skipped_batches)"
        )
    progress.skipped_batches += 1
    logger.warning(f"skipped a batch with a non-finite loss at {where} ({progress.skipped_batches} skipped)")
    return False


def check_finite_weights(model: torch.nn.Module) -> None:
    """Refuse to export NaN or infinite trained weights."""
    for name, parameter in model.named_parameters():
        if parameter.requires_grad and not torch.isfinite(parameter.detach()).all():
            raise NonFiniteWeightsError(f"trained parameter {name} holds NaN or infinite values; no release exported")


@torch.no_grad()
def validation_loss(setup: StageSetup, model, loader, accelerator: Accelerator) -> float:
    """Mean validation loss (weighted by the stage's `loss_weight`: label tokens, or rows), gathered over processes."""
    model.eval()
    total = torch.zeros(2, device=accelerator.device)
    for batch in loader:
        if batch is None:
            continue
        weight = setup.loss_weight(batch).float()
        total += torch.stack([setup.loss(model, batch).float() * weight, weight])
    setup.training_mode(accelerator.unwrap_model(model))
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
    setup = build_setup(cfg, accelerator)
    train_loader, train_sampler = build_dataloader(cfg, setup.train, setup.collator, shuffle=True)
    val_loader = None
    if setup.validation is not None:
        val_loader, _ = build_dataloader(cfg, setup.validation, setup.collator, shuffle=False)
    model = setup.model
    optimizer = torch.optim.AdamW(setup.parameter_groups, weight_decay=cfg.weight_decay)
    batches_per_epoch = math.ceil(len(train_sampler) / accelerator.num_processes)
    steps_per_epoch = math.ceil(batches_per_epoch / cfg.gradient_accumulation_steps)
    total_steps = cfg.max_steps or steps_per_epoch * cfg.num_epochs
    scheduler = get_cosine_schedule_with_warmup(optimizer, int(cfg.warmup_ratio * total_steps), total_steps)
    model, optimizer, train_loader = accelerator.prepare(model, optimizer, train_loader)
    register_trainable_state(accelerator)
    if val_loader is not None:
        val_loader = accelerator.prepare(val_loader)
    progress = TrainingProgress()
    checkpoint = resumable_checkpoint(cfg.checkpoint_dir) if cfg.resume else None
    if checkpoint is not None:
        state = read_trainer_state(checkpoint)
        check_starting_point(checkpoint, state, cfg.model_name_or_path)
        accelerator.load_state(str(checkpoint))
        progress.load_state_dict(state["progress"])
        scheduler.load_state_dict(state["scheduler"])
        if accelerator.is_main_process:
            logger.info(f"resumed from {checkpoint} at step {progress.global_step}")
    if cfg.report_to:
        accelerator.init_trackers("paircap", config={k: str(v) for k, v in asdict(cfg).items()})

    run_steps, stopped_early = 0, False
    bar = tqdm(total=total_steps, initial=progress.global_step, disable=not accelerator.is_main_process, desc=cfg.stage)
    window = {"loss": 0.0, "tokens": 0, "start": time.perf_counter(), "batches": 0}
    setup.training_mode(accelerator.unwrap_model(model))
    while progress.global_step < total_steps and not stopped_early:
        for batch in epoch_batches(accelerator, train_loader, train_sampler, progress):
            seed_batch(cfg.seed, accelerator.process_index, progress)
            with accelerator.accumulate(model):
                loss = setup.loss(model, batch)
                finite = check_loss(cfg, accelerator, loss, progress)
                if finite:
                    accelerator.backward(loss)
                if accelerator.sync_gradients:
                    accelerator.clip_grad_norm_(model.parameters(), cfg.max_grad_norm)
                optimizer.step()
                optimizer.zero_grad()
            progress.batches_done_in_epoch += 1
            if finite:
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
                log_window(cfg, accelerator, window, scheduler, progress, bar)
            if val_loader is not None and cfg.eval_every and progress.global_step % cfg.eval_every == 0:
                log_validation(cfg, setup, model, val_loader, accelerator, progress.global_step)
            stopped_early = run_steps == cfg.stop_after_steps and progress.global_step < total_steps
            if progress.global_step % cfg.save_every == 0 or progress.global_step == total_steps or stopped_early:
                state = {
                    "progress": progress.state_dict(),
                    "scheduler": scheduler.state_dict(),
                    "model_name_or_path": starting_point(cfg.model_name_or_path),
                }
                save_checkpoint(accelerator, cfg.checkpoint_dir, progress.global_step, state, cfg.save_total_limit)
            if progress.global_step >= total_steps or stopped_early:
                break
        else:  # the epoch ran out
            progress.epoch += 1
            progress.batches_done_in_epoch = 0
    bar.close()
    if stopped_early:
        if accelerator.is_main_process:
            logger.info(f"stopped after {run_steps} steps at step {progress.global_step}; continue with --resume")
        accelerator.end_training()
        return Path(cfg.output_dir)
    if val_loader is not None:
        log_validation(cfg, setup, model, val_loader, accelerator, progress.global_step)
    result = export_release(cfg, setup, accelerator, model, progress.global_step) if cfg.export else cfg.output_dir
    accelerator.end_training()
    return Path(result)


def seed_batch(seed: int, process_index: int, progress: TrainingProgress) -> None:
    """
    Seed torch's RNG (dropout) from the run seed, the process and the batch's place in the data: a resumed run then
    draws the same dropout masks as an uninterrupted one, however many data loaders either created on the way.
    """
    state = np.random.SeedSequence([seed, process_index, progress.epoch, progress.batches_done_in_epoch])
    torch.manual_seed(int(state.generate_state(1, dtype=np.uint64)[0] >> np.uint64(1)))


def write_log_line(cfg: TrainConfig, record: dict) -> None:
    """A JSON line to the log (info level) and to `<output_dir>/log.jsonl` (kept across `--resume`)."""
    line = json.dumps(record)
    logger.info(line)
    Path(cfg.output_dir).mkdir(parents=True, exist_ok=True)
    with open(Path(cfg.output_dir) / "log.jsonl", "a", encoding="utf-8") as handle:
        handle.write(line + "\n")


def log_validation(cfg: TrainConfig, setup: StageSetup, model, loader, accelerator: Accelerator, step: int) -> None:
    loss = validation_loss(setup, model, loader, accelerator)
    accelerator.log({"validation_loss": loss}, step=step)
    if accelerator.is_main_process:
        write_log_line(cfg, {"step": step, "validation_loss": loss})


def log_window(cfg: TrainConfig, accelerator: Accelerator, window: dict, scheduler, progress: TrainingProgress, bar):
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
        write_log_line(cfg, {"step": progress.global_step, **values})
    window.update(loss=0.0, tokens=0, batches=0, start=time.perf_counter())


def export_release(cfg: TrainConfig, setup: StageSetup, accelerator: Accelerator, model, step: int) -> Path:
    """
    Write the trained model as a release folder (for PairCap: IA3 merged, loadable with trust_remote_code). Every
    process takes part in gathering the full state dict (FSDP / DeepSpeed ZeRO-3 shard the weights); the main process
    saves it.
    """
    accelerator.wait_for_everyone()
    check_finite_weights(model)
    state_dict = accelerator.get_state_dict(model)
    if accelerator.is_main_process:
        folder = setup.export(accelerator.unwrap_model(model), state_dict, step)
        logger.info(f"exported the trained model to {folder}")
    accelerator.wait_for_everyone()
    return cfg.export_dir
