"""The CPU thread policy of the commands that run a model.

OpenMP threads that wait for each other by spinning turn a busy CPU into a 2-20x slowdown (an LM decode step of the
mini release took 14 ms at one thread, 154 ms at two under load). So:

- the `paircap` entry point sets `OMP_WAIT_POLICY=PASSIVE` (waiting threads sleep) before torch is imported, unless
  the user set a policy;
- the thread count stays torch's default (`OMP_NUM_THREADS`, else one per core), which a large model needs; `--threads
  N` sets it for torch, faiss and the processes a command starts;
- where the count was left to it, a CPU `generate` call whose decode steps are small (the model's parameters x the
  batch under `SMALL_DECODE_STEP`) runs on one thread (`threads_for_decoding`): too little work to share.

Checked by the captioning benchmark's contention row (`python -m benchmarks.captioning --contention-batch-sizes 1 2 4
8`: generative pair-to-pair with the mini recipe's LM shape at 1, 2 and all-cores threads and with the policy, quiet
and beside a bounded busy core; `benchmarks/results/captioning-cpu-tiny.json`, figures in `docs/speed.md`). On the
2-core development machine, before the small-step rule, two passive threads ran at 0.95-1.00x the best count's speed at
batch 8, quiet and busy, but at 0.68x (quiet) and 0.73x (busy) at batch 1, where one thread was fastest; with it the
policy ran at 0.94-1.00x at batch 1, 2, 4 and 8, quiet and busy. libgomp's own spin-then-sleep wait loses under load
(0.04-0.20x).
"""

import argparse
import contextlib
import os
from collections.abc import Iterator

SMALL_DECODE_STEP = 10_000_000
"""Model parameters x batch rows under which a CPU `generate` call runs on one thread. A model of the mini release's
size (3.5 M parameters, 2.5 M of them its LM) captioned faster on one thread than on two at batch 1, slower at batch 8
on a quiet machine."""

THREADS_HELP = "CPU threads of torch and faiss (default: OMP_NUM_THREADS if set, else one per core)"


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
    processes as they start); None keeps the default."""
    if threads is None:
        return
    import torch  # after prefer_passive_waiting, in the entry point

    os.environ["OMP_NUM_THREADS"] = str(threads)
    torch.set_num_threads(threads)


def thread_count_chosen() -> bool:
    """Whether the user chose the thread count (`--threads` or `OMP_NUM_THREADS`), which the policy then keeps."""
    return "OMP_NUM_THREADS" in os.environ


def small_decode_step(model, batch_size: int) -> bool:
    """Whether `model` decodes `batch_size` rows on the CPU with too little work to share between threads."""
    return model.device.type == "cpu" and model.num_parameters() * batch_size < SMALL_DECODE_STEP


def decoding_threads(model, batch_size: int, available: int, chosen: bool | None = None) -> int:
    """The torch threads a decode step of `batch_size` rows runs on where `available` are set: one for a small step
    (`small_decode_step`) when the count was left to the policy (`chosen`, by default `thread_count_chosen()`), else
    `available`."""
    chosen = thread_count_chosen() if chosen is None else chosen
    return 1 if small_decode_step(model, batch_size) and not chosen else available


@contextlib.contextmanager
def threads_for_decoding(model, batch_size: int) -> Iterator[None]:
    """`decoding_threads` torch threads inside the block (one for a small decode step when the thread count was left
    to the policy); otherwise no change."""
    import torch

    previous = torch.get_num_threads()
    count = decoding_threads(model, batch_size, previous)
    if count == previous:
        yield
        return
    torch.set_num_threads(count)
    try:
        yield
    finally:
        torch.set_num_threads(previous)
