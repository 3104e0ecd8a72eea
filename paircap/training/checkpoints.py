"""Training checkpoints that are checked before they are trusted.

A checkpoint is `accelerator.save_state` (the model's trainable state and the optimizer) plus `trainer_state.json`
(where the run stands, the lr schedule and the release it started from, as JSON: nothing of ours is pickled), written
into a temporary folder, closed by `manifest.json` (every file's size and sha256) and only then renamed to
`step-XXXXXXXX`. `--resume` takes the newest checkpoint whose manifest verifies and says which ones it skipped and why.

The model file holds only what training changes: the trainable parameters and the buffers (batch-norm statistics of a
trained tower; a few kB), never the frozen weights, which a resumed run reads again from the release it starts from
(`register_trainable_state` filters the save and loads it back, key for key).
"""

import json
import os
import shutil
from pathlib import Path

import torch
from accelerate import Accelerator
from accelerate.utils import SAFE_MODEL_NAME
from safetensors.torch import load_file
from transformers.utils import logging

from modeling_paircap.file_io_paircap import file_record
from paircap.training.errors import CheckpointError

logger = logging.get_logger(__name__)

MANIFEST_NAME = "manifest.json"
TRAINER_STATE_NAME = "trainer_state.json"
CHECKPOINT_PREFIX = "step-"
PARTIAL_PREFIX = ".partial-"


def checkpoint_name(step: int) -> str:
    return f"{CHECKPOINT_PREFIX}{step:08d}"


def _files(folder: Path) -> list[str]:
    return sorted(str(path.relative_to(folder)) for path in folder.rglob("*") if path.is_file())


def frozen_parameter_names(model: torch.nn.Module) -> set[str]:
    """State-dict names of the frozen parameters (tied names included)."""
    return {name for name, p in model.named_parameters(remove_duplicate=False) if not p.requires_grad}


def trainable_state_names(model: torch.nn.Module) -> set[str]:
    """What a checkpoint holds of `model`: its state dict without the frozen parameters."""
    return set(model.state_dict()) - frozen_parameter_names(model)


def register_trainable_state(accelerator: Accelerator) -> None:
    """
    Make `accelerator.save_state` write only the trainable state of each prepared model, and `load_state` read it
    back, refusing a model file whose names are not exactly the ones this run trains. Applies where accelerate hands
    the state dict to hooks (one process, DDP); FSDP and DeepSpeed save through their own engines, in full.
    """

    def keep_trainable(models: list[torch.nn.Module], weights: list[dict], output_dir: str) -> None:
        for model, state in zip(models, weights, strict=False):  # FSDP, DeepSpeed: no state dicts are handed over
            for name in frozen_parameter_names(model) & set(state):
                del state[name]

    def load_trainable(models: list[torch.nn.Module], input_dir: str) -> None:
        for index, model in enumerate(models):
            path = Path(input_dir) / f"{SAFE_MODEL_NAME}{f'_{index}' if index else ''}.safetensors"
            state = load_file(str(path))
            expected = trainable_state_names(model)
            if set(state) != expected:
                extra, missing = sorted(set(state) - expected), sorted(expected - set(state))
                raise CheckpointError(
                    f"{path}: holds {len(extra)} tensors this run does not train ({', '.join(extra[:3])}) and lacks "
                    f"{len(missing)} it does ({', '.join(missing[:3])}); resume with the settings it was saved with"
                )
            model.load_state_dict(state, strict=False)
        models.clear()  # loaded here: accelerate loads no model file itself

    accelerator.register_save_state_pre_hook(keep_trainable)
    accelerator.register_load_state_pre_hook(load_trainable)


def save_checkpoint(accelerator: Accelerator, checkpoint_dir: Path, step: int, trainer_state: dict, keep: int) -> Path:
    """
    Write the checkpoint of `step`: state into `.partial-step-XXXXXXXX`, then the manifest, then a rename, so that a
    crash at any point leaves either the complete checkpoint or none under its name. Keeps the newest `keep`
    checkpoints and removes leftovers of interrupted saves.
    """
    final = checkpoint_dir / checkpoint_name(step)
    partial = checkpoint_dir / f"{PARTIAL_PREFIX}{final.name}"
    if accelerator.is_main_process:
        shutil.rmtree(partial, ignore_errors=True)
        partial.mkdir(parents=True)
    accelerator.wait_for_everyone()
    accelerator.save_state(str(partial))
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        (partial / TRAINER_STATE_NAME).write_text(json.dumps(trainer_state, indent=1), encoding="utf-8")
        manifest = {"step": step, "files": {name: file_record(partial / name) for name in _files(partial)}}
        (partial / MANIFEST_NAME).write_text(json.dumps(manifest, indent=1), encoding="utf-8")
        if final.exists():  # a rerun of the same step after a resume
            shutil.rmtree(final)
        os.replace(partial, final)
        for old in sorted(checkpoint_dir.glob(f"{CHECKPOINT_PREFIX}*"))[:-keep]:
            shutil.rmtree(old)
        for leftover in checkpoint_dir.glob(f"{PARTIAL_PREFIX}*"):
            shutil.rmtree(leftover)
    accelerator.wait_for_everyone()
    return final


def checkpoint_problem(folder: Path) -> str | None:
    """Why `folder` cannot be resumed from (missing, resized, altered or unlisted files), or None if it verifies."""
    manifest_path = folder / MANIFEST_NAME
    if not manifest_path.is_file():
        return f"no {MANIFEST_NAME} (a save that did not finish, or a checkpoint of an older PairCap)"
    try:
        recorded = json.loads(manifest_path.read_text(encoding="utf-8"))["files"]
        recorded = {str(name): (int(r["size"]), str(r["sha256"])) for name, r in recorded.items()}
    except (ValueError, KeyError, TypeError) as error:
        return f"{MANIFEST_NAME} is unreadable ({type(error).__name__}: {error})"
    present = set(_files(folder)) - {MANIFEST_NAME}
    if missing := sorted(set(recorded) - present):
        return f"missing {', '.join(missing)}"
    if extra := sorted(present - set(recorded)):
        return f"files not in the manifest: {', '.join(extra)}"
    if TRAINER_STATE_NAME not in recorded:
        return f"the manifest lists no {TRAINER_STATE_NAME}"
    for name, (size, _) in recorded.items():
        if (actual := (folder / name).stat().st_size) != size:
            return f"{name} is {actual} bytes, the manifest says {size}"
    for name, (_, sha256) in recorded.items():
        if file_record(folder / name)["sha256"] != sha256:
            return f"{name} does not match its sha256 in the manifest (the file was altered or corrupted)"
    return None


def resumable_checkpoint(checkpoint_dir: Path) -> Path | None:
    """
    The newest checkpoint that verifies, logging each newer one skipped with its reason; None when the run has no
    checkpoint yet.

    Raises:
        CheckpointError: there are checkpoints, and none verifies (each is named with its reason).
    """
    candidates = sorted(checkpoint_dir.glob(f"{CHECKPOINT_PREFIX}*"), reverse=True) if checkpoint_dir.is_dir() else []
    problems = []
    for folder in candidates:
        problem = checkpoint_problem(folder)
        if problem is None:
            return folder
        logger.warning(f"skipping checkpoint {folder}: {problem}")
        problems.append(f"{folder.name}: {problem}")
    if problems:
        raise CheckpointError(
            f"no checkpoint in {checkpoint_dir} can be resumed from ({'; '.join(problems)}); run without --resume to "
            "start over, or restore an intact checkpoint"
        )
    return None


def read_trainer_state(folder: Path) -> dict:
    return json.loads((folder / TRAINER_STATE_NAME).read_text(encoding="utf-8"))


def starting_point(model_name_or_path: str) -> str:
    """The release a run starts from, as a checkpoint records it: a folder's absolute path, or the hub id."""
    path = Path(model_name_or_path)
    return str(path.resolve()) if path.exists() else model_name_or_path


def check_starting_point(folder: Path, state: dict, model_name_or_path: str) -> None:
    """
    Raises:
        CheckpointError: the checkpoint was trained from another release than `model_name_or_path` (it holds only the
            trained weights: the frozen ones come from the release the run starts from).
    """
    recorded, current = state.get("model_name_or_path"), starting_point(model_name_or_path)
    if recorded != current:
        raise CheckpointError(
            f"{folder} was trained from {recorded}, not {current}; it holds only the trained weights, so resume from "
            "the release it started from"
        )
