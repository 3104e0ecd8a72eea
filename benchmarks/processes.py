"""
Fresh-process workers, for the benchmarks that measure what one job costs a process (load time, peak memory): the
parent runs `python -m MODULE --worker TASK` (TASK a JSON object), samples the child's memory from outside, and reads
the result the child prints. Standard library only, so a worker imports nothing before its job but what the job needs.
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

RESULT_PREFIX = "BENCHMARK_RESULT "
WORKER_FLAG = "--worker"
MEMORY_KEYS = ("VmRSS", "VmHWM", "RssAnon", "RssFile")
SAMPLE_INTERVAL_S = 0.02


def proc_status(pid: int | str = "self") -> dict[str, int]:
    """The memory lines of /proc/<pid>/status in bytes (VmRSS, VmHWM: the peak, RssAnon, RssFile); {} if unreadable."""
    values = {}
    with contextlib.suppress(OSError, ValueError, IndexError):
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            key, _, rest = line.partition(":")
            if key in MEMORY_KEYS:
                values[key] = int(rest.split()[0]) * 1024
    return values


def reset_peak_rss() -> None:
    """Restart this process's peak resident set size (VmHWM := VmRSS, Linux `clear_refs`); a no-op elsewhere."""
    with contextlib.suppress(OSError):
        Path("/proc/self/clear_refs").write_text("5")


def run_worker(module: str, task: dict, env: dict[str, str] | None = None, timeout: float = 3600) -> dict:
    """
    Run `task` in a fresh `python -m module --worker TASK` process (offline, plus `env`) and return its result, with the
    peaks of its RssAnon and RssFile sampled from here every 20 ms. A worker that fails or prints no result raises a
    RuntimeError whose last line is the worker's last line of stderr.
    """
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", **(env or {})}
    command = [sys.executable, "-m", module, WORKER_FLAG, json.dumps(task)]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    peaks = {"RssAnon": 0, "RssFile": 0}
    start = time.perf_counter()
    while process.poll() is None:
        for key, value in proc_status(process.pid).items():
            if key in peaks:
                peaks[key] = max(peaks[key], value)
        if time.perf_counter() - start > timeout:
            process.kill()
        time.sleep(SAMPLE_INTERVAL_S)
    stdout, stderr = process.communicate()
    lines = [line for line in stdout.splitlines() if line.startswith(RESULT_PREFIX)]
    if process.returncode != 0 or not lines:
        raise RuntimeError(f"worker {module} failed ({process.returncode}):\n{stdout[-2000:]}\n{stderr[-4000:]}")
    result = json.loads(lines[-1][len(RESULT_PREFIX) :])
    result.update(sampled_peak_anon_bytes=peaks["RssAnon"], sampled_peak_file_bytes=peaks["RssFile"])
    return result


def worker_task(argv: list[str] | None = None) -> dict | None:
    """The task of a worker call (`--worker TASK`), or None for an ordinary run of the module."""
    argv = sys.argv[1:] if argv is None else argv
    return json.loads(argv[1]) if len(argv) == 2 and argv[0] == WORKER_FLAG else None


def serve(job: Callable[[dict], dict], task: dict) -> None:
    """The worker side: run `job` on `task` and print its result for `run_worker`."""
    print(RESULT_PREFIX + json.dumps(job(task)), flush=True)
