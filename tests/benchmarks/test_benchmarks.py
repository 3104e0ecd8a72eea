"""Smoke tests of `benchmarks/`: each one runs at tiny size on the CPU and writes its results (no timing asserts)."""

import argparse
import itertools
import json
import math
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from benchmarks import contention, gpu_check, retrieval
from benchmarks.audio_frontend import frontend_timings

pytestmark = pytest.mark.slow  # a long file: it starts first (tests/conftest.py)

REPO = Path(__file__).resolve().parents[2]
# keys every project and baseline row of a benchmark must carry; the first names the row in the markdown table
ROW_KEYS = {
    "kb_embedding": ("path", "clips", "total_s", "clips_per_s", "features_s"),
    "retrieval": ("method", "kb_size", "single_query_ms", "batch_ms", "queries_per_s"),
    "captioning": ("mode", "batch_size", "prompt_tokens", "latency_s", "captions_per_s"),
    "training": ("stage", "trainable_parameters", "step_s", "samples_per_s", "peak_memory_bytes"),
}


def run_module(name: str, output: Path, *options: str) -> subprocess.CompletedProcess:
    """`python -m benchmarks.<name> --size tiny --device cpu --output-dir output ...` from the repo root."""
    command = [sys.executable, "-m", f"benchmarks.{name}", "--size", "tiny", "--device", "cpu"]
    command += ["--output-dir", str(output), *options]
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    result = subprocess.run(command, capture_output=True, text=True, cwd=REPO, env=env, timeout=600)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-4000:]
    return result


@pytest.fixture(scope="module")
def results_dir(tmp_path_factory) -> Path:
    """The output folder of one `python -m benchmarks.run_all --size tiny --device cpu` run."""
    output = tmp_path_factory.mktemp("benchmark-results")
    run_module("run_all", output)
    return output


def numbers(value) -> Iterator[float]:
    """Every number in a JSON value (booleans are flags, not numbers; `*_diff` differences may be 0)."""
    if isinstance(value, dict):
        value = [item for key, item in value.items() if not key.endswith("_diff")]
    if isinstance(value, list):
        for item in value:
            yield from numbers(item)
    elif isinstance(value, (int, float)) and not isinstance(value, bool):
        yield value


def load(results_dir: Path, name: str) -> dict:
    data = json.loads((results_dir / f"{name}-cpu-tiny.json").read_text())
    assert data["benchmark"] == name and data["size"] == "tiny"
    return data


@pytest.mark.parametrize("name", sorted(ROW_KEYS))
def test_writes_results_with_a_measured_baseline(results_dir, name):
    data = load(results_dir, name)
    recorded = {"device", "device_name", "cpu", "torch", "transformers", "load_average_start", "load_average_end"}
    recorded |= {"torch_threads", "torch_threads_end", "omp_num_threads", "omp_wait_policy"}  # the thread policy
    assert recorded <= set(data["environment"])
    assert data["settings"]
    results = data["results"]
    assert results["project"] and results["baseline"]
    rows = results["project"] + results["baseline"]
    for row in rows:
        assert set(ROW_KEYS[name]) <= set(row), row
    for row in results["project"]:
        assert any(key.endswith("speedup_vs_baseline") for key in row), row
    values = list(numbers(results))
    assert values and all(math.isfinite(value) and value > 0 for value in values)

    markdown = (results_dir / f"{name}-cpu-tiny.md").read_text()
    assert f"## {name} (tiny" in markdown and "|---|" in markdown
    assert all(row[ROW_KEYS[name][0]] in markdown for row in rows)


def test_retrieval_sweeps_batch_sizes_against_raw_faiss_and_numpy(results_dir):
    results = load(results_dir, "retrieval")["results"]
    sweep = results["batch_sweep"]
    assert sorted({row["batch"] for row in sweep}) == [1, 8, 32, 64, 256]
    assert {row["method"] for row in sweep} == {
        "PairCapKnowledgeBase.search",
        "PairCapKnowledgeBase.search, single_query_threads=1",
        "faiss index.search, faiss defaults",
        "faiss index.search, the index's settings",
        "numpy matmul + argpartition (float32)",
    }
    assert all(row["same_results_as_faiss"] and row["max_score_diff"] < 1e-5 for row in sweep)
    assert all(row["speedup_vs_numpy"] > 0 and row["over_faiss_same_settings"] > 0 for row in sweep)
    assert results["batch_sweep_targets"] == []  # the targets are for 127 k pairs


def test_the_sweep_pauses_after_each_call_outside_the_timed_span():
    calls = []

    def method(audio, text):
        calls.append(time.perf_counter())
        return [[0]], [[1.0]]

    halves = [np.zeros((4, 2), np.float32), np.zeros((4, 2), np.float32)]
    names = (retrieval.FAISS_DEFAULT, "other")
    seconds, agree = retrieval.interleaved(dict.fromkeys(names, method), halves, 1, 2, settle_s=0.05)
    assert len(calls) == 6 and all(later - earlier >= 0.05 for earlier, later in itertools.pairwise(calls))
    assert all(len(values) == 2 and max(values) < 0.05 for values in seconds.values())  # the pause is not timed
    assert all(same for same, _ in agree.values())


def test_retrieval_reports_recall_of_the_approximate_indexes(results_dir):
    project = load(results_dir, "retrieval")["results"]["project"]
    approximate = [row for row in project if not row["exact"]]
    assert {row["index"]["type"] for row in approximate} == {"IndexHNSWFlat", "IndexIVFFlat"}
    assert all(0 < row["recall_at_10"] <= 1 for row in approximate)


def test_captioning_reports_decode_against_the_bandwidth_floor(results_dir):
    data = load(results_dir, "captioning")
    assert {row["mode"] for row in data["results"]["project"]} == {"zero-shot", "generative pair2pair"}
    assert [row["batch_size"] for row in data["results"]["project"][::2]] == [1, 2, 4]
    for row in data["results"]["decode"]:
        assert {"decode_ms_per_step", "floor_ms_per_step", "weights_bytes", "kv_cache_bytes"} <= set(row)
    assert data["settings"]["pass2_prompt_tokens"] > data["results"]["project"][0]["prompt_tokens"]
    sweep = data["results"]["files_sweep"]
    assert {(row["path"], row["mode"]) for row in sweep} == {
        (path, mode) for path in ("files", "generate") for mode in ("none", "generative pair2pair")
    }
    assert all(row["kb_size"] == 2000 and row["batch_size"] == 4 for row in sweep)
    assert all(row["files_per_s_vs_none"] == 1 for row in sweep if row["mode"] == "none")


def test_captioning_times_thread_counts_quiet_and_beside_a_busy_core(results_dir):
    """The contention row: every thread count and the thread policy in both conditions, the same tokens as one quiet
    thread, the policy's ratio to the best setting as its target (no timing asserts)."""
    data = load(results_dir, "captioning")
    default = data["settings"]["default_threads"]
    assert default == data["environment"]["torch_threads"] == data["environment"]["torch_threads_end"]
    rows = data["results"]["contention"]
    settings = [*contention.thread_counts(), contention.POLICY]
    assert [(row["condition"], row["threads"]) for row in rows] == [
        (c, setting) for c in contention.CONDITIONS for setting in settings
    ]
    assert all(row["batch_size"] == 1 and row["same_captions"] and len(row["raw_s"]) == 2 for row in rows)
    for condition in contention.CONDITIONS:
        ratios = [row["vs_best"] for row in rows if row["condition"] == condition]
        assert max(ratios) == 1 and all(0 < ratio <= 1 for ratio in ratios)
    policy = [row for row in rows if row["default"]]
    assert [row["threads"] for row in policy] == [contention.POLICY] * 2
    assert all(row["policy_threads"] == 1 for row in policy)  # the tiny model at batch 1: a small decode step
    assert all(row["load_cpu_share"] > 0 for row in rows if row["condition"] != "quiet")
    targets = data["results"]["contention_targets"]
    assert [(row["condition"], row["threads"], row["limit"]) for row in targets] == [
        (condition, contention.POLICY, 0.9) for condition in contention.CONDITIONS
    ]
    assert "### Contention target" in (results_dir / "captioning-cpu-tiny.md").read_text()


def test_training_compares_stage_2_with_stage_1(results_dir):
    baseline, project = (load(results_dir, "training")["results"][key][0] for key in ("baseline", "project"))
    assert baseline["stage"].startswith("stage 1") and project["stage"].startswith("stage 2")
    assert project["trainable_parameters"] > baseline["trainable_parameters"]


def test_a_benchmark_runs_on_its_own_with_its_options(tmp_path):
    run_module("retrieval", tmp_path, "--kb-sizes", "3000", "--indexes", "IVF16,Flat")
    rows = json.loads((tmp_path / "retrieval-cpu-tiny.json").read_text())["results"]["project"]
    assert {row["kb_size"] for row in rows} == {3000}
    assert [row["method"] for row in rows if not row["exact"]] == ["PairCapIndex, IVF16,Flat, nprobe=16"]


@pytest.mark.parametrize("word", ["none", "NONE"])
def test_retrieval_skips_the_approximate_indexes_and_the_sweep_given_none(tmp_path, word):
    """`--indexes none` (as its help says) measures the exact methods alone; `--batch-sizes none` skips the sweep."""
    options = ["--size", "tiny", "--kb-sizes", "2000", "--indexes", word, "--batch-sizes", word]
    data = retrieval.main([*options, "--output-dir", str(tmp_path)])
    assert data["settings"]["indexes"] == [] and data["settings"]["batch_sizes"] == []
    assert [row["method"] for row in data["results"]["project"]] == [
        "PairCapIndex, faiss Flat (default)",
        "PairCapIndex, torch exact (cpu)",
    ]
    assert "batch_sweep" not in data["results"]
    assert (tmp_path / "retrieval-cpu-tiny.json").is_file()


def test_a_list_option_rejects_other_words(capsys):
    with pytest.raises(SystemExit) as exit_info:
        retrieval.main(["--batch-sizes", "8", "nine"])
    assert exit_info.value.code == 2
    assert "--batch-sizes: expected int values or none, got 8 nine" in capsys.readouterr().err


def test_audio_frontend_times_ours_against_the_libraries_alone(tiny_release, tmp_path):
    folder, _, _ = tiny_release
    rows, agreement = frontend_timings(str(folder), tmp_path, repeats=1)
    assert [(row["case"], row["library"]) for row in rows] == [
        ("resample only", "soxr.resample (HQ)"),
        ("front end (file -> log-mels)", "soundfile + soxr + numpy ClapFeatureExtractor"),
    ]
    assert all(row["ours_ms"] > 0 and row["library_ms"] > 0 and row["speedup_vs_baseline"] > 0 for row in rows)
    # the processor's torch log-mels of its three 10 s windows match transformers' numpy extractor on the same windows
    assert agreement["ours_shape"] == agreement["library_shape"] == [3, 1, 1001, 64]
    assert agreement["max_abs_diff_db"] < 0.05
    assert not list(tmp_path.iterdir())  # the clip is deleted


def test_kb_scale_builds_loads_and_searches_a_tiny_kb(tmp_path):
    output = tmp_path / "kb_scale.json"
    options = ["--sizes", "--token-sizes", "1000", "--repeats", "1", "--single-queries", "2"]
    run_module("kb_scale", tmp_path, *options, "--output", str(output), "--work-dir", str(tmp_path))
    data = json.loads(output.read_text())
    assert data["benchmark"] == "kb_scale" and data["environment"]["faiss"]
    results = data["results"]
    assert [(row["kb"], row["format"]) for row in results["builds"]] == [("1k + tokens", 2)]
    assert results["builds"][0]["tokens_bytes"] < results["builds"][0]["per_row_layout_token_bytes"]
    loads = {(row["loader"].split()[0], row["cache"]): row for row in results["loads"]}
    loaders = ("PairCapKnowledgeBase.from_pretrained", "libraries:")
    assert set(loads) == {(loader, cache) for loader in loaders for cache in ("cold", "warm")}
    assert all(row["datasets_cache_bytes"] == 0 and row["kb_folder_unchanged"] for row in loads.values())
    assert all(row["load_s"] > 0 and row["peak_rss_bytes"] > 0 for row in loads.values())
    ours = [row for (loader, _), row in loads.items() if loader.startswith("PairCap")]
    assert all(row["over_libraries"] > 0 and row["paired_over_libraries"] > 0 for row in ours)
    searches = results["searches"]
    assert {(row["batch"], row["method"]) for row in searches} >= {(1, "kb.search"), (64, "kb.search")}
    assert all(
        row["same_rows_as_faiss"] and row["max_score_diff"] < 1e-5 for row in searches if row["method"] == "kb.search"
    )
    assert results["targets"] and not list(tmp_path.glob("kb_scale-*/"))  # the synthetic KBs are deleted
    assert "### Loads" in (tmp_path / "kb_scale.md").read_text()


def test_gpu_check_dry_run_measures_every_section_at_tiny_size(tmp_path):
    """`python -m benchmarks.gpu_check --size tiny --device cpu` (in process): the GPU check's code paths, each
    section ok, in seconds."""
    data = gpu_check.main(["--size", "tiny", "--device", "cpu", "--output-dir", str(tmp_path)])
    assert data == json.loads((tmp_path / "gpu_check-cpu-tiny.json").read_text())
    assert data["benchmark"] == "gpu_check" and data["size"] == "tiny"
    env, results = data["environment"], data["results"]
    assert {"device_name", "torch", "transformers", "peft", "torch_threads", "torch_interop_threads"} <= set(env)
    assert [s["status"] for s in results["sections"]] == ["ok"] * len(gpu_check.SECTIONS) and results["skipped"] == []
    generation = results["generation"]
    assert {(row["cache"], row["batch_size"]) for row in generation} == {
        (cache, batch) for cache in ("eager", "static") for batch in (1, 4)
    }
    assert all(row["captions_per_s"] > 0 and len(row["prompt_tokens"]) == 2 for row in generation)
    assert [row["queries"] for row in results["search"]] == [1, 4, 64]
    assert all(row["kb_pairs"] == 20_000 and row["recall_vs_matmul"] == 1 for row in results["search"])
    assert [row["path"] for row in results["kb_embedding"]] == ["waveforms -> stored rows", "encoder + store only"]
    (step,) = results["stage2"]
    assert step["trainable_parameters"] > 0 and step["peak_memory_bytes"] > 0 and step["step_s"] > 0
    assert len(results["targets"]) == 4 and {row["anchor"] for row in results["targets"]} >= {"HF eager ~1.44 s"}
    markdown = (tmp_path / "gpu_check-cpu-tiny.md").read_text()
    assert "## gpu_check (tiny" in markdown and "Tiny dry run" in markdown and "Not measured: none." in markdown


def test_gpu_check_records_a_failing_or_overrunning_section_and_runs_the_rest():
    """Each section is guarded: an error, an overrun (stopped by the alarm), a missing model and a spent budget are
    recorded with their reason; the sections after them still run."""

    def fails(state):
        raise RuntimeError("static cache unsupported")

    def overruns(state):
        time.sleep(30)

    def works(state):
        return [{"value": 1}]

    args = argparse.Namespace(size="tiny", device="cpu")
    state = gpu_check.CheckState(args, gpu_check.SETTINGS["tiny"], Path("."))
    sections = [
        gpu_check.Section("fails", fails, "rows", cap_s=10, needs_model=False),
        gpu_check.Section("overruns", overruns, "rows", cap_s=0.6, needs_model=False),
        gpu_check.Section("needs_model", works, "rows", cap_s=10),
        gpu_check.Section("optional", works, "rows", cap_s=10, needs_model=False, optional=True),
        gpu_check.Section("works", works, "rows", cap_s=60, needs_model=False),
    ]
    start = time.perf_counter()
    statuses = {s["section"]: s for s in gpu_check.run_sections(state, sections, budget_s=66)}
    assert time.perf_counter() - start < 30  # the overrunning section's 30 s sleep was cut short
    assert statuses["fails"]["status"] == "error" and "static cache unsupported" in statuses["fails"]["detail"]
    assert "RuntimeError" in statuses["fails"]["traceback"]
    assert statuses["overruns"]["status"] == "stopped" and 0.5 < statuses["overruns"]["seconds"] < 5
    assert statuses["needs_model"]["detail"] == "no model: the build did not finish"
    assert (
        statuses["optional"]["status"] == "skipped"
        and "kept for the sections after it" in statuses["optional"]["detail"]
    )
    assert statuses["works"]["status"] == "ok" and state.results["rows"] == [{"value": 1}]
    (spent,) = gpu_check.run_sections(state, sections[-1:], budget_s=0)
    assert spent["status"] == "skipped" and spent["detail"].startswith("budget:")


def test_gpu_check_runs_chosen_sections_with_the_build_they_need():
    names = [section.name for section in gpu_check.SECTIONS]
    assert [section.name for section in gpu_check.selected_sections(None)] == names
    assert [section.name for section in gpu_check.selected_sections(["search"])] == ["search"]
    chosen = gpu_check.selected_sections(["stage2", "search"])
    assert [section.name for section in chosen] == ["build", "search", "stage2"]
