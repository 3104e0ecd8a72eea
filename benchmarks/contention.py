"""
The contention row of the captioning benchmark: the same `generate` calls at several CPU thread counts, on a quiet
machine and with one core held busy by a bounded load, against the thread policy's default (`paircap.threads`).

The load is one fresh Python process spinning on the CPU (`busy_core` runs `busy_load.py`). It is started before
and stopped after each contended round, and it stops on its own when its parent process goes away (checked about
every millisecond, so a benchmark killed with SIGKILL leaves nothing behind) or after `max_seconds`. A round whose
load did not last to its end raises instead of recording a quiet round as contended.
"""

from __future__ import annotations

import contextlib
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import torch

from benchmarks.common import synchronize, target_check
from paircap.threads import apply_threads

CONDITIONS = ("quiet", "one core busy")
TARGET = 0.9  # the default's speed >= 0.9 x the best thread count's, in each condition
BUSY_LOAD = Path(__file__).with_name("busy_load.py")


@contextlib.contextmanager
def busy_core(max_seconds: float) -> Iterator[dict]:
    """
    Hold one core busy inside the block: a child process spins until the block ends, this process exits, or
    `max_seconds` pass. Yields a dict that gets `held_s` and `load_cpu_s` (the CPU time the spinner got) at the end;
    raises RuntimeError if the spinner stopped before the block ended.
    """
    command = [sys.executable, "-I", "-S", str(BUSY_LOAD), str(os.getpid()), str(max_seconds)]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, text=True)
    record: dict = {}
    try:
        if process.stdout.readline().strip() != "spinning":
            raise RuntimeError("the busy load did not start")
        start = time.perf_counter()
        yield record
        record["held_s"] = time.perf_counter() - start
        if process.poll() is not None:
            raise RuntimeError(f"the busy load stopped before the round ended ({max_seconds:g} s bound)")
        process.terminate()
        record["load_cpu_s"] = float(process.communicate(timeout=10)[0])
    finally:
        if process.poll() is None:
            process.kill()
        process.wait()


def thread_counts(default: int) -> list[int]:
    """1, 2, the policy's default and every core, each once."""
    return sorted({1, 2, default, os.cpu_count() or 1})


def contention_rows(
    call: Callable[[], torch.Tensor],
    batch_size: int,
    device: str,
    default_threads: int,
    repeats: int,
    max_load_s: float = 600.0,
) -> list[dict]:
    """
    Rows of one workload (`call` returns the generated token ids): per condition and thread count, the median seconds
    over `repeats` rounds (after one untimed round), the speed ratio to the fastest count of the same condition, and
    whether its tokens equal those of one thread on the quiet machine in every round. In each round the conditions
    alternate and the thread counts rotate, so drifts in the machine's load hit every setting alike. Restores the
    default thread count (and an unset `OMP_NUM_THREADS`).
    """
    counts = thread_counts(default_threads)
    seconds = {(condition, n): [] for condition in CONDITIONS for n in counts}
    outputs = {key: [] for key in seconds}
    load = {"held_s": 0.0, "load_cpu_s": 0.0}
    omp_num_threads = os.environ.get("OMP_NUM_THREADS")
    try:
        for round_index in range(repeats + 1):
            order = counts[round_index % len(counts) :] + counts[: round_index % len(counts)]
            for condition in CONDITIONS:
                busy = busy_core(max_load_s) if condition != "quiet" else contextlib.nullcontext({})
                with busy as record:
                    for n in order:
                        apply_threads(n)
                        start = time.perf_counter()
                        tokens = call()
                        synchronize(device)
                        if round_index:
                            seconds[condition, n].append(time.perf_counter() - start)
                        outputs[condition, n].append(tokens.tolist())
                if round_index and record:
                    load = {key: load[key] + record[key] for key in load}
    finally:
        apply_threads(default_threads)
        if omp_num_threads is None:
            os.environ.pop("OMP_NUM_THREADS")
    reference = outputs["quiet", 1][0]
    rows = []
    for condition in CONDITIONS:
        best = min(statistics.median(seconds[condition, n]) for n in counts)
        for n in counts:
            median = statistics.median(seconds[condition, n])
            rows.append(
                {
                    "condition": condition,
                    "batch_size": batch_size,
                    "threads": n,
                    "default": n == default_threads,
                    "latency_s": median,
                    "captions_per_s": batch_size / median,
                    "vs_best": best / median,
                    "same_captions": all(tokens == reference for tokens in outputs[condition, n]),
                    "raw_s": seconds[condition, n],
                }
            )
    for row in rows:
        if row["condition"] != "quiet":
            row["load_cpu_share"] = load["load_cpu_s"] / load["held_s"]
    return rows


def check_default(rows: Sequence[dict]) -> list[dict]:
    """The target rows: the default thread count's speed against the best count's, per batch size and condition."""
    return [
        target_check(
            f"default threads >= {TARGET:g} x the best",
            row["vs_best"],
            TARGET,
            at_least=True,
            batch_size=row["batch_size"],
            condition=row["condition"],
            threads=row["threads"],
        )
        for row in rows
        if row["default"]
    ]
