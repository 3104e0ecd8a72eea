"""
The figures `docs/speed.md` quotes, computed from the committed results files in `benchmarks/results/`:
`python -m benchmarks.speed_figures` prints each one with its file, and `tests/benchmarks/test_speed_figures.py`
checks that the page quotes every figure as printed, in a paragraph that names its results file. A rerun that changes
a figure fails that test until the page is updated from this output.
"""

from __future__ import annotations

import json
import statistics
from collections.abc import Callable, Iterable
from pathlib import Path

from benchmarks.common import RESULTS_DIR
from benchmarks.contention import POLICY

SPINNING = "libgomp-default-wait"  # the captioning benchmark run with GOMP_SPINCOUNT=300000 (libgomp's own default)
SWEEP_KB = 127_000
KB_SEARCH = "PairCapKnowledgeBase.search"


def span(values: Iterable[float], digits: int = 2, unit: str = "x") -> str:
    """`0.93x`, or `0.91-0.97x` when the values differ at that precision (`-3 to 7 %` across zero)."""
    values = list(values)
    low, high = (f"{value:.{digits}f}" for value in (min(values), max(values)))
    return f"{low}{unit}" if low == high else f"{low}{' to ' if min(values) < 0 else '-'}{high}{unit}"


def threads(data: dict) -> str:
    """The thread policy's speed (in runs before it, the default count's) against the best setting's, quiet and
    beside a busy core, over batch sizes."""
    rows = data["results"]["contention"]
    quiet = [row["vs_best"] for row in rows if row["default"] and row["condition"] == "quiet"]
    busy = [row["vs_best"] for row in rows if row["default"] and row["condition"] != "quiet"]
    policy = any(row["threads"] == POLICY for row in rows)
    setting = "the thread policy" if policy else f"the default of {data['settings']['default_threads']} threads"
    return f"{setting} ran at {span(quiet)} the best setting's speed quiet, {span(busy)} beside it"


def one_thread_busy(data: dict) -> str:
    """One thread's speed against the best count's beside a busy core, over batch sizes."""
    rows = data["results"]["contention"]
    ratios = [row["vs_best"] for row in rows if row["threads"] == 1 and row["condition"] != "quiet"]
    return f"one thread ran at {span(ratios)}"


def startup(data: dict) -> str:
    help_s, import_s = (row["median_s"] for row in data["results"]["rows"])
    return f"{help_s:.2f} s against {import_s:.2f} s for `import torch, transformers`"


def front_end(data: dict) -> str:
    """The processor's front end against the libraries alone (30 s clip, 3 windows of log-mels)."""
    row = next(row for row in data["results"]["frontend"] if row["case"].startswith("front end"))
    return f"{row['ours_ms']:.0f} ms against {row['library_ms']:.0f} ms"


def sweep(data: dict, batch: int, method: str) -> dict:
    rows = data["results"]["batch_sweep"]
    return next(row for row in rows if row["kb_size"] == SWEEP_KB and row["batch"] == batch and row["method"] == method)


def batch_64(data: dict) -> str:
    ours = sweep(data, 64, KB_SEARCH)
    return f"{ours['median_ms']:.0f} ms against {ours['median_ms'] / ours['over_faiss_defaults']:.0f} ms"


def single_query_threads(data: dict) -> str:
    """One OpenMP thread for a single query against faiss's own count: `1.2x faster` or `1.8x slower`."""
    ratio = sweep(data, 1, KB_SEARCH)["median_ms"] / sweep(data, 1, f"{KB_SEARCH}, single_query_threads=1")["median_ms"]
    return f"{ratio:.1f}x faster" if ratio >= 1 else f"{1 / ratio:.1f}x slower"


def over_faiss(data: dict) -> str:
    """What `PairCapKnowledgeBase.search` adds to raw faiss with the same settings, over the batch sizes (percent)."""
    rows = [row for row in data["results"]["batch_sweep"] if row["kb_size"] == SWEEP_KB and row["method"] == KB_SEARCH]
    return span((100 * (row["over_faiss_same_settings"] - 1) for row in rows), digits=0, unit=" %")


def prompt_prefix(data: dict) -> str:
    speedup = {(row["mode"], row["batch_size"]): row["speedup"] for row in data["results"]["rows"]}
    batch_1 = [value for (_, batch), value in speedup.items() if batch == 1]
    return (
        f"{speedup['zero-shot LM', 8]:.2f}x captions/s zero-shot and {speedup['generative pair2pair', 8]:.2f}x for "
        f"both passes end to end at batch 8, {span(batch_1)} at batch 1"
    )


def load_average(data: dict) -> str:
    """The one-minute load average at the start and end of the run that wrote `data`."""
    env = data["environment"]
    return f"load {statistics.mean([env['load_average_start'][0], env['load_average_end'][0]]):.1f}"


FIGURES: dict[str, tuple[str, Callable[[dict], str]]] = {
    "threads": ("captioning-cpu-tiny.json", threads),
    "one thread beside a busy core": ("captioning-cpu-tiny.json", one_thread_busy),
    "libgomp's own wait": (f"{SPINNING}/captioning-cpu-tiny.json", threads),
    "paircap --help": ("startup-cpu.json", startup),
    "front end": ("audio_frontend-cpu.json", front_end),
    "search at batch 64": ("retrieval-cpu-full.json", batch_64),
    "single_query_threads=1": ("retrieval-cpu-full.json", single_query_threads),
    "over raw faiss": ("retrieval-cpu-full.json", over_faiss),
    "shared prompt prefix": ("prompt_prefix-cpu-mini.json", prompt_prefix),
}


def figures(results_dir: Path = RESULTS_DIR) -> dict[str, tuple[str, str, str]]:
    """Each figure's results file, its text, and the load average of the run (`load 1.2`)."""
    table = {}
    for name, (file, compute) in FIGURES.items():
        data = json.loads((results_dir / file).read_text())
        table[name] = (file, compute(data), load_average(data))
    return table


if __name__ == "__main__":
    for name, (file, text, load) in figures().items():
        print(f"{name} ({file}, {load}): {text}")
