"""The CPU thread policy of the commands that run a model.

OpenMP threads that wait for each other by spinning turn a busy CPU into a 2-20x slowdown (an LM decode step of the
mini release took 14 ms at one thread, 154 ms at two under load). So:

- the `paircap` entry point sets `OMP_WAIT_POLICY=PASSIVE` (waiting threads sleep) before torch is imported, unless
  the user set a policy;
- the thread count stays torch's default (`OMP_NUM_THREADS`, else one per core), which a large model needs; `--threads
  N` sets it for torch, faiss and the processes a command starts.

Checked by the captioning benchmark's contention row (`python -m benchmarks.captioning --contention-batch-sizes 1 8`:
generative pair-to-pair with the mini recipe's LM shape at 1, 2, the default and all-cores threads, quiet and beside a
bounded busy core; `benchmarks/results/captioning-cpu-tiny.json`, figures in `docs/speed.md`). On the 2-core
development machine the default of two passive threads gave the same tokens at every count and ran at 0.95-1.00x the
best count's speed at batch 8, quiet and beside the busy core, but at batch 1 one thread was faster (0.68x quiet, 0.73x
busy: a single caption of this small LM is too little work to share); libgomp's own spin-then-sleep wait loses under
load (0.04-0.20x).
"""

import argparse
import os

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
