"""Shared by every benchmark script: command line, timing, peak memory, environment, and the result files."""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import platform
import resource
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import torch
import transformers

from benchmarks.processes import proc_status, reset_peak_rss

RESULTS_DIR = Path(__file__).resolve().parent / "results"
SIZES = ("tiny", "full")
DEVICES = ("cpu", "cuda")


def parse_args(
    description: str,
    argv: Sequence[str] | None,
    add_arguments: Callable[[argparse.ArgumentParser], None] | None = None,
) -> argparse.Namespace:
    """`--size tiny|full`, `--device cpu|cuda`, `--output-dir`, plus the script's own options."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--size", choices=SIZES, default="tiny", help="tiny: CPU smoke size; full: the real shapes")
    parser.add_argument("--device", choices=DEVICES, default="cpu")
    parser.add_argument("--output-dir", type=Path, default=RESULTS_DIR, help="where the JSON and markdown go")
    if add_arguments is not None:
        add_arguments(parser)
    args = parser.parse_args(argv)
    if args.device == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda needs a CUDA GPU, and torch sees none")
    return args


class ListOrNone(argparse.Action):
    """
    A list option (`nargs="*"`) whose values convert with `item_type`; no values or the single word `none` give an
    empty list (that part of the benchmark is skipped). Declare it with `action=ListOrNone, item_type=int`.
    """

    def __init__(self, option_strings, dest, item_type: Callable[[str], object] = str, **kwargs):
        super().__init__(option_strings, dest, nargs="*", **kwargs)
        self.item_type = item_type

    def __call__(self, parser, namespace, values, option_string=None) -> None:
        if [value.lower() for value in values] == ["none"]:
            values = []
        try:
            setattr(namespace, self.dest, [self.item_type(value) for value in values])
        except ValueError:
            kind = getattr(self.item_type, "__name__", "valid")
            parser.error(f"{option_string}: expected {kind} values or none, got {' '.join(values)}")


def synchronize(device: str) -> None:
    """Wait for queued GPU work, so wall-clock timings cover it."""
    if device == "cuda":
        torch.cuda.synchronize()


@dataclass
class Timing:
    """Wall-clock seconds of the measured repeats (warm-up excluded)."""

    seconds: list[float]

    @property
    def median(self) -> float:
        return statistics.median(self.seconds)

    def to_dict(self) -> dict:
        return {"median_s": self.median, "min_s": min(self.seconds), "raw_s": self.seconds}


def measure(fn: Callable[[], object], device: str, warmup: int = 1, repeats: int = 5) -> Timing:
    """Call `fn` `warmup` times untimed, then `repeats` times timed (each call synchronised on the device)."""
    for _ in range(warmup):
        fn()
    synchronize(device)
    seconds = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        synchronize(device)
        seconds.append(time.perf_counter() - start)
    return Timing(seconds)


def reset_peak_memory(device: str) -> None:
    """Restart peak-memory tracking: the CUDA allocator's peak, or the process's peak RSS (Linux `clear_refs`)."""
    if device == "cuda":
        torch.cuda.reset_peak_memory_stats()
    else:
        reset_peak_rss()


def peak_memory_bytes(device: str) -> int:
    """Peak since `reset_peak_memory`: `torch.cuda.max_memory_allocated`, or the peak resident set size (VmHWM)."""
    if device == "cuda":
        return torch.cuda.max_memory_allocated()
    if peak := proc_status().get("VmHWM"):
        return peak
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # never reset: the whole process's peak


def measure_with_peak(fn: Callable[[], object], device: str, warmup: int = 1, repeats: int = 5) -> tuple[Timing, int]:
    """`measure`, and the peak memory in bytes over the warm-up and the repeats (`peak_memory_bytes`)."""
    reset_peak_memory(device)
    timing = measure(fn, device, warmup, repeats)
    return timing, peak_memory_bytes(device)


def _cpu_name() -> str:
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()


def environment(device: str) -> dict:
    """What the numbers were measured on: device name, CPU, library versions, the thread settings (torch's threads,
    `OMP_NUM_THREADS`, `OMP_WAIT_POLICY`, libgomp's `GOMP_SPINCOUNT`: see `paircap.threads`) and the machine's load."""
    info = {
        "device": device,
        "device_name": torch.cuda.get_device_name() if device == "cuda" else _cpu_name(),
        "cpu": _cpu_name(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "omp_num_threads": os.environ.get("OMP_NUM_THREADS", "unset"),
        "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY", "unset"),
        "gomp_spincount": os.environ.get("GOMP_SPINCOUNT", "unset"),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "numpy": np.__version__,
        "load_average_start": list(os.getloadavg()),
    }
    if device == "cuda":
        info["cuda"] = torch.version.cuda
    return info


def target_check(target: str, measured: float, limit: float, at_least: bool = False, **context) -> dict:
    """A row of a targets table: what the target applies to (`context`), the target, the measured value against the
    limit, and whether it is met (`measured <= limit`, or `>=` with `at_least`)."""
    met = measured >= limit if at_least else measured <= limit
    return {**context, "target": target, "measured": measured, "limit": limit, "met": bool(met)}


def format_value(value: object) -> str:
    """A table cell: numbers with a sensible number of digits, lists joined, the rest as text."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return " / ".join(map(format_value, value)) if isinstance(value, list) else str(value)
    if isinstance(value, int):
        return f"{value:,}"
    if not math.isfinite(value) or value == 0:
        return str(value)
    return f"{value:,.0f}" if abs(value) >= 100 else f"{value:.3g}"


def markdown_table(title: str, rows: Sequence[dict], columns: Sequence[str]) -> str:
    """A titled markdown table of `rows` (dicts) over `columns`; missing cells stay empty."""
    lines = [f"### {title}", "", "| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(format_value(row[c]) if c in row else "" for c in columns) + " |" for row in rows]
    return "\n".join(lines)


def write_results(
    args: argparse.Namespace,
    benchmark: str,
    env: dict,
    settings: dict,
    results: dict,
    tables: Sequence[str],
    path: Path | None = None,
    echo: bool = True,
) -> dict:
    """
    Write `<benchmark>-<device>-<size>.json` (environment, settings, results) and `.md` (the tables) into
    `args.output_dir` (or `path` and its `.md` sibling), print the markdown (unless `echo` is false), and return the
    JSON payload.
    """
    payload = {
        "benchmark": benchmark,
        "size": args.size,
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "environment": {**env, "torch_threads_end": torch.get_num_threads(), "load_average_end": list(os.getloadavg())},
        "settings": settings,
        "results": results,
    }
    path = path or args.output_dir / f"{benchmark}-{args.device}-{args.size}.json"
    stem = path.stem
    header = (
        f"## {benchmark} ({args.size}, {env['device_name']})\n\n"
        f"torch {env['torch']}, transformers {env['transformers']}, {env['cpu_count']} CPU cores, "
        f"{torch.get_num_threads()} torch threads, OMP_WAIT_POLICY {env['omp_wait_policy']}, load average "
        f"{env['load_average_start'][0]:.1f} at the start; medians after warm-up; `{stem}.json` has the raw timings."
    )
    markdown = "\n\n".join([header, *tables]) + "\n"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(payload, indent=2) + "\n")
    path.with_suffix(".md").write_text(markdown)
    if echo:
        print(markdown)
    return payload
