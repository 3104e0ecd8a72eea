"""
Start-up: seconds from a fresh interpreter to `paircap --help` (`python -m paircap.cli --help`) against `python -c
"import torch, transformers"`, the libraries every model command needs, measured in the same run (alternating, after
one untimed round that warms the page cache; medians). The target: `paircap --help` at most 1.5x the import.

    python -m benchmarks.startup [--repeats 7] [--output-dir benchmarks/results]

Writes `results/startup-cpu.json` / `.md`.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from benchmarks.common import environment, markdown_table, parse_args, target_check, write_results

REPO = Path(__file__).resolve().parents[1]
COMMANDS = {
    "paircap --help": ["-m", "paircap.cli", "--help"],
    "import torch, transformers": ["-c", "import torch, transformers"],
}
TARGET = 1.5  # paircap --help / the import


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--repeats", type=int, default=7, help="timed runs of each command (default 7)")


def run_once(arguments: list[str]) -> float:
    """Wall-clock seconds of one fresh `python ARGUMENTS` run from the repository root (it must succeed)."""
    start = time.perf_counter()
    subprocess.run([sys.executable, *arguments], cwd=REPO, check=True, capture_output=True)
    return time.perf_counter() - start


def main(argv: Sequence[str] | None = None) -> dict:
    """Run the benchmark and write `startup-cpu.json/.md`."""
    args = parse_args(__doc__.strip().splitlines()[0], argv, add_arguments)
    env = environment("cpu")
    seconds = {name: [] for name in COMMANDS}
    for round_index in range(args.repeats + 1):
        for name, arguments in COMMANDS.items():
            elapsed = run_once(arguments)
            if round_index:
                seconds[name].append(elapsed)
    baseline = statistics.median(seconds["import torch, transformers"])
    rows = [
        {"command": name, "median_s": statistics.median(values), "vs_import": statistics.median(values) / baseline}
        for name, values in seconds.items()
    ]
    for row in rows:
        row["raw_s"] = seconds[row["command"]]
    targets = [target_check(f"paircap --help <= {TARGET:g} x the import", rows[0]["vs_import"], TARGET)]
    settings = {"repeats": args.repeats, "python": sys.executable, "timing": "alternating, one untimed round first"}
    tables = [
        markdown_table("Seconds from a fresh interpreter", rows, ["command", "median_s", "vs_import"]),
        markdown_table("Start-up target", targets, ["target", "measured", "met"]),
    ]
    results = {"rows": rows, "targets": targets}
    return write_results(args, "startup", env, settings, results, tables, path=args.output_dir / "startup-cpu.json")


if __name__ == "__main__":
    main()
