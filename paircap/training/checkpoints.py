"""Training checkpoints that are checked before they are trusted.

A checkpoint is `accelerator.save_state` (model and optimizer) plus `trainer_state.json` (where the run stands and the
lr schedule, as JSON: nothing of ours is pickled), written into a temporary folder, closed by `manifest.json` (every
file's size and sha256) and only then renamed to `step-XXXXXXXX`. `--resume` takes the newest checkpoint whose manifest
verifies and says which ones it skipped and why.
"""

import json
import os
import shutil
from pathlib import Path

from accelerate import Accelerator
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
