"""
The contention row of the captioning benchmark: the same `generate` calls at several CPU thread counts, on a quiet
machine and with one core held busy by a bounded load, against the thread policy (`paircap.threads`: the default
count, one thread for small decode steps).

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
POLICY = "policy"  # the setting left to the thread policy: the default count, no OMP_NUM_THREADS
TARGET = 0.9  # the policy's speed >= 0.9 x the best thread count's, in each condition
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


def thread_counts() -> list[int]:
    """1, 2 and every core, each once."""
    return sorted({1, 2, os.cpu_count() or 1})


def use_setting(setting: int | str, default_threads: int) -> None:
    """A thread count set as `--threads` sets it, or the policy's setting (`default_threads`, OMP_NUM_THREADS unset)."""
    if setting == POLICY:
        os.environ.pop("OMP_NUM_THREADS", None)
        torch.set_num_threads(default_threads)
    else:
        apply_threads(setting)


def contention_rows(
    call: Callable[[], torch.Tensor],
    batch_size: int,
    device: str,
    default_threads: int,
    repeats: int,
    max_load_s: float = 600.0,
) -> list[dict]:
    """
    Rows of one workload (`call` returns the generated token ids, under the thread policy's
    `threads_for_decoding`): per condition and setting (each thread count, and the policy's), the median seconds over
    `repeats` rounds (after one untimed round), the speed ratio to the fastest setting of the same condition, and
    whether its tokens equal those of one thread on the quiet machine in every round. In each round the conditions
    alternate and the settings rotate, so drifts in the machine's load hit every setting alike. Restores the default
    thread count (and an unset `OMP_NUM_THREADS`).
    """
    settings = [*thread_counts(), POLICY]
    seconds = {(condition, setting): [] for condition in CONDITIONS for setting in settings}
    outputs = {key: [] for key in seconds}
    load = {"held_s": 0.0, "load_cpu_s": 0.0}
    omp_num_threads = os.environ.get("OMP_NUM_THREADS")
    try:
        for round_index in range(repeats + 1):
            order = settings[round_index % len(settings) :] + settings[: round_index % len(settings)]
            for condition in CONDITIONS:
                busy = busy_core(max_load_s) if condition != "quiet" else contextlib.nullcontext({})
                with busy as record:
                    for setting in order:
                        use_setting(setting, default_threads)
                        start = time.perf_counter()
                        tokens = call()
                        synchronize(device)
                        if round_index:
                            seconds[condition, setting].append(time.perf_counter() - start)
                        outputs[condition, setting].append(tokens.tolist())
                if round_index and record:
                    load = {key: load[key] + record[key] for key in load}
    finally:
        apply_threads(default_threads)
        if omp_num_threads is None:
            os.environ.pop("OMP_NUM_THREADS")
    reference = outputs["quiet", 1][0]
    rows = []
    for condition in CONDITIONS:
        best = min(statistics.median(seconds[condition, setting]) for setting in settings)
        for setting in settings:
            median = statistics.median(seconds[condition, setting])
            rows.append(
                {
                    "condition": condition,
                    "batch_size": batch_size,
                    "threads": setting,
                    "default": setting == POLICY,
                    "latency_s": median,
                    "captions_per_s": batch_size / median,
                    "vs_best": best / median,
                    "same_captions": all(tokens == reference for tokens in outputs[condition, setting]),
                    "raw_s": seconds[condition, setting],
                }
            )
    for row in rows:
        if row["condition"] != "quiet":
            row["load_cpu_share"] = load["load_cpu_s"] / load["held_s"]
    return rows


def check_default(rows: Sequence[dict]) -> list[dict]:
    """The target rows: the thread policy's speed against the best setting's, per batch size and condition."""
    return [
        target_check(
            f"thread policy >= {TARGET:g} x the best",
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
