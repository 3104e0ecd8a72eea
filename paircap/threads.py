"""The CPU thread policy of the commands that run a model.

OpenMP threads that wait for each other by spinning turn a busy CPU into a 2-20x slowdown (measured on 2 cores: an LM
decode step 14 ms at one thread, 154 ms at two under load). So:

- the `paircap` entry point sets `OMP_WAIT_POLICY=PASSIVE` (waiting threads sleep) before torch is imported, unless
  the user set a policy;
- `--threads N` sets the threads of torch, faiss and the processes a command starts (`OMP_NUM_THREADS`);
- without either, a model under `SMALL_MODEL_PARAMETERS` on the CPU runs on one thread (a second thread gains almost
  nothing on a quiet machine and costs much on a busy one), a larger one on torch's default, one thread per core.
"""

from __future__ import annotations

import argparse
import os
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch

SMALL_MODEL_PARAMETERS = 100_000_000  # the mini release has 3.5M; a full one 7B (Vicuna) plus CLAP's 150M
THREADS_HELP = (
    "CPU threads of torch and faiss (default: OMP_NUM_THREADS if set, else 1 for a model under 100M parameters on the "
    "CPU, else one per core)"
)


def prefer_passive_waiting() -> None:
    """`OMP_WAIT_POLICY=PASSIVE` unless the environment names a policy; OpenMP reads it once, when torch loads."""
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")


def positive_threads(text: str) -> int:
    if not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"expected a whole number of 1 or more, got {text!r}")
    return int(text)


def add_threads_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--threads", type=positive_threads, default=None, metavar="N", help=THREADS_HELP)


def apply_threads(threads: int | None) -> None:
    """Use `threads` CPU threads in this process and the ones it starts (`OMP_NUM_THREADS`, read by faiss and by child
    processes as they start); None leaves the choice to `fit_threads`."""
    if threads is None:
        return
    import torch  # after prefer_passive_waiting, in the entry point

    os.environ["OMP_NUM_THREADS"] = str(threads)
    torch.set_num_threads(threads)


def fit_threads(model: torch.nn.Module) -> int:
    """The default thread count for `model` once it is loaded (unless `--threads` or `OMP_NUM_THREADS` chose one): one
    thread for a small model on the CPU. Returns the threads torch uses."""
    import torch

    on_cpu = all(parameter.device.type == "cpu" for parameter in model.parameters())
    small = sum(parameter.numel() for parameter in model.parameters()) < SMALL_MODEL_PARAMETERS
    if "OMP_NUM_THREADS" not in os.environ and on_cpu and small:
        torch.set_num_threads(1)
    return torch.get_num_threads()
