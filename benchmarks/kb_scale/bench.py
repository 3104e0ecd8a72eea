"""The KB scale benchmark's runs: each KB built, loaded and searched in fresh processes, collected as result rows."""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import tempfile
from pathlib import Path

from benchmarks.kb_scale import (
    AUDIO_DIM,
    BATCH,
    CAPTIONS_PER_CLIP,
    LOADERS,
    SAME_SETTINGS,
    TEXT_DIM,
    TOKEN_DIM,
    TOKENS_PER_CLIP,
    WORKER,
)
from benchmarks.processes import run_worker

# every KB is loaded these ways, interleaved: (loader, cold)
VARIANTS = (("paircap", True), ("paircap", False), ("libraries", True), ("libraries", False))


def folder_files(folder: Path) -> dict[str, int]:
    """Every file under `folder` with its size."""
    if not folder.exists():
        return {}
    return {str(path.relative_to(folder)): path.stat().st_size for path in folder.rglob("*") if path.is_file()}


def evict(folder: Path) -> None:
    """Drop `folder`'s files from the page cache (written back first), so the next read comes from the disk."""
    for path in folder.rglob("*"):
        if path.is_file():
            fd = os.open(path, os.O_RDONLY)
            try:
                os.fsync(fd)
                os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
            finally:
                os.close(fd)


def mem_available() -> int | None:
    """MemAvailable of /proc/meminfo in bytes, or None."""
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def kb_name(num_pairs: int, tokens: bool) -> str:
    return f"{num_pairs // 1000}k{' + tokens' if tokens else ''}"


class Bench:
    """Builds, loads and searches every KB of the run (`sizes`, `token_sizes`), collecting result rows."""

    def __init__(self, args: argparse.Namespace, sizes: list[int], token_sizes: list[int]):
        self.args, self.sizes, self.token_sizes = args, sizes, token_sizes
        self.work = Path(tempfile.mkdtemp(prefix="kb_scale-", dir=args.work_dir)).resolve()
        self.builds, self.loads, self.searches, self.skipped = [], [], [], []

    def build(self, num_pairs: int, tokens: bool) -> Path:
        folder = self.work / f"kb-{num_pairs}{'-tokens' if tokens else ''}"
        staging = self.work / "staging.arrow"
        task = {"task": "build", "folder": str(folder), "staging": str(staging), "num_pairs": num_pairs, "seed": 0}
        result = run_worker(WORKER, {**task, "tokens": tokens})
        files = folder_files(folder)
        part = {"rows": 0, "index": 0, "tokens": 0, "clips": 0, "other": 0}
        kinds = {"index.faiss": "index", "tokens.safetensors": "tokens", "clips.parquet": "clips"}
        for name, size in files.items():
            part["rows" if name.startswith("data/") else kinds.get(name, "other")] += size
        row = {
            "kb": kb_name(num_pairs, tokens),
            "format": 2,
            "num_pairs": num_pairs,
            "num_clips": num_pairs // CAPTIONS_PER_CLIP,
            "disk_bytes": sum(files.values()),
            "rows_bytes": part["rows"],
            "index_bytes": part["index"],
            "clips_bytes": part["clips"],
            "raw_vector_bytes": num_pairs * (AUDIO_DIM + TEXT_DIM) * 4,
            "generate_s": result["generate_s"],
            "write_s": result["write_s"],
            "build_peak_rss_bytes": result["peak_rss_bytes"],
            "build_sampled_peak_anon_bytes": result["sampled_peak_anon_bytes"],
        }
        if tokens:
            row.update(tokens_bytes=part["tokens"], tokens_write_s=result["tokens_write_s"])
            row["per_row_layout_token_bytes"] = num_pairs * TOKENS_PER_CLIP * TOKEN_DIM * 2  # tokens in every row
        self.builds.append(row)
        print(f"built {row['kb']}: {row['disk_bytes'] / 1e9:.2f} GB in {row['write_s']:.1f} s", flush=True)
        return folder

    def load_once(self, folder: Path, loader: str, cold: bool, search: bool = False) -> dict:
        cache = self.work / "datasets-cache"
        shutil.rmtree(cache, ignore_errors=True)
        before = folder_files(folder)
        if cold:
            evict(folder)
        task = {"task": "load", "folder": str(folder), "loader": loader, "search": search}
        task.update(repeats=self.args.repeats, single_queries=self.single_queries(folder))
        result = run_worker(WORKER, task, env={"HF_DATASETS_CACHE": str(cache)})
        result["cache_bytes"] = sum(folder_files(cache).values())
        result["folder_unchanged"] = folder_files(folder) == before
        shutil.rmtree(cache, ignore_errors=True)
        return result

    def single_queries(self, folder: Path) -> int:
        if self.args.single_queries is not None:
            return self.args.single_queries
        return 20 if int(folder.name.split("-")[1]) <= 500_000 else 8

    def measure_loads(self, folder: Path, num_pairs: int, tokens: bool) -> dict:
        """
        `repeats` fresh-process loads of each (loader, cold) variant, interleaved; one row per variant, PairCap's with
        its time over the libraries' in the same cache state. The last warm PairCap load goes on to measure search
        (after its load figures were taken); returns that search result.
        """
        runs = {variant: [] for variant in VARIANTS}
        search = None
        for repeat in range(self.args.repeats):
            for variant in VARIANTS:
                last_warm = repeat == self.args.repeats - 1 and variant == ("paircap", False)
                runs[variant].append(self.load_once(folder, *variant, search=last_warm))
                search = runs[variant][-1].get("search", search)
        raw_vectors = num_pairs * (AUDIO_DIM + TEXT_DIM) * 4
        for (loader, cold), results in runs.items():
            peak = statistics.median(r["peak_rss_bytes"] for r in results)
            increase = statistics.median(r["peak_rss_bytes"] - r["rss_before_bytes"] for r in results)
            load_s = [r["load_s"] for r in results]
            row = {
                "kb": kb_name(num_pairs, tokens),
                "loader": LOADERS[loader],
                "cache": "cold" if cold else "warm",
                "num_pairs": num_pairs,
                "load_s": statistics.median(load_s),
                "peak_rss_bytes": peak,
                "peak_rss_over_vectors": peak / raw_vectors,
                "load_rss_increase_bytes": increase,
                "sampled_peak_anon_bytes": statistics.median(r["sampled_peak_anon_bytes"] for r in results),
                "rss_after_bytes": statistics.median(r["rss_after_bytes"] for r in results),
                "datasets_cache_bytes": max(r["cache_bytes"] for r in results),
                "kb_folder_unchanged": all(r["folder_unchanged"] for r in results),
                "raw_load_s": load_s,
                "raw_peak_rss_bytes": [r["peak_rss_bytes"] for r in results],
            }
            if loader == "paircap":
                libraries = [r["load_s"] for r in runs["libraries", cold]]
                row["over_libraries"] = row["load_s"] / statistics.median(libraries)
                # the loads of one round ran back to back: the machine's load weighs on both sides of each ratio
                row["paired_over_libraries"] = statistics.median(a / b for a, b in zip(load_s, libraries, strict=True))
            self.loads.append(row)
            print(
                f"  {row['kb']} {row['loader']} {row['cache']}: {row['load_s']:.2f} s, peak RSS "
                f"{row['peak_rss_bytes'] / 1e9:.2f} GB ({row['peak_rss_over_vectors']:.2f}x vectors)",
                flush=True,
            )
        return search

    def add_search(self, result: dict, num_pairs: int, tokens: bool) -> None:
        """Search rows from a worker's search result: per method and batch size, medians and ratios to faiss."""
        name = kb_name(num_pairs, tokens)
        for kind, batch in (("single", 1), ("batch", BATCH)):
            timings = result["timings"][kind]
            reference = timings[SAME_SETTINGS]
            for method, seconds in timings.items():
                median_ms = 1000 * statistics.median(seconds)
                row = {"kb": name, "num_pairs": num_pairs, "batch": batch, "method": method, "median_ms": median_ms}
                row.update(per_query_ms=median_ms / batch, repeats=len(seconds), raw_s=seconds)
                row["over_faiss_same_settings"] = statistics.median(seconds) / statistics.median(reference)
                # the ratio of the same round's calls, so the noise of the machine hits both alike
                row["paired_median_over_faiss"] = statistics.median(
                    ours / raw for ours, raw in zip(seconds, reference, strict=True)
                )
                if method == "kb.search":
                    row.update(same_rows_as_faiss=result["same_rows"], max_score_diff=result["max_score_diff"])
                    row["fetched_per_query"] = result["fetched_per_query"]
                    if "examples_s" in result and batch == BATCH:
                        row["examples_first_ms"] = 1000 * result["examples_s"][0]
                        row["examples_ms"] = 1000 * statistics.median(result["examples_s"][1:] or result["examples_s"])
                self.searches.append(row)

    def run(self) -> None:
        plan = sorted({(n, False) for n in self.sizes} | {(n, True) for n in self.token_sizes})
        for num_pairs, tokens in plan:
            if (reason := self.cannot_build(num_pairs, tokens)) is not None:
                self.skipped.append({"kb": kb_name(num_pairs, tokens), "reason": reason})
                print(reason, flush=True)
                continue
            folder = self.build(num_pairs, tokens)
            self.add_search(self.measure_loads(folder, num_pairs, tokens), num_pairs, tokens)
            self.remove(folder)

    def cannot_build(self, num_pairs: int, tokens: bool) -> str | None:
        raw = num_pairs * (AUDIO_DIM + TEXT_DIM) * 4
        need_disk = 3.2 * raw + (num_pairs * TOKENS_PER_CLIP * TOKEN_DIM * 2 * 2.2 if tokens else 0)
        free_disk = shutil.disk_usage(self.work).free
        available = mem_available()
        name = kb_name(num_pairs, tokens)
        if free_disk < need_disk:
            return f"{name}: skipped, needs ~{need_disk / 1e9:.0f} GB of disk ({free_disk / 1e9:.0f} free)"
        if available and available < 1.3 * raw:
            return f"{name}: skipped, needs ~{1.3 * raw / 1e9:.0f} GB of RAM ({available / 1e9:.0f} available)"
        return None

    def remove(self, folder: Path) -> None:
        if not self.args.keep:
            shutil.rmtree(folder, ignore_errors=True)

    def close(self) -> None:
        if not self.args.keep:
            shutil.rmtree(self.work, ignore_errors=True)
