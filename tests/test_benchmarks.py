"""Smoke tests of `benchmarks/`: each script runs at tiny size on the CPU and writes its results (no timing asserts)."""

import json
import math
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
# keys every project and baseline row of a benchmark must carry; the first names the row in the markdown table
ROW_KEYS = {
    "kb_embedding": ("path", "clips", "total_s", "clips_per_s", "features_s"),
    "retrieval": ("method", "kb_size", "single_query_ms", "batch_ms", "queries_per_s"),
    "captioning": ("mode", "batch_size", "prompt_tokens", "latency_s", "captions_per_s"),
    "training": ("stage", "trainable_parameters", "step_s", "samples_per_s", "peak_memory_bytes"),
}


def run_script(script: str, output: Path, *options: str) -> subprocess.CompletedProcess:
    command = [sys.executable, str(REPO / "benchmarks" / script), "--size", "tiny", "--device", "cpu"]
    command += ["--output-dir", str(output), *options]
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    result = subprocess.run(command, capture_output=True, text=True, cwd=REPO, env=env, timeout=300)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-4000:]
    return result


@pytest.fixture(scope="module")
def results_dir(tmp_path_factory) -> Path:
    """The output folder of one `run_all.py --size tiny --device cpu` run."""
    output = tmp_path_factory.mktemp("benchmark-results")
    run_script("run_all.py", output)
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
    assert {"device", "device_name", "cpu", "torch", "transformers", "load_average_start"} <= set(data["environment"])
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


def test_retrieval_sweeps_batch_sizes_against_format_1_and_raw_faiss(results_dir):
    results = load(results_dir, "retrieval")["results"]
    sweep = results["batch_sweep"]
    assert sorted({row["batch"] for row in sweep}) == [1, 8, 32, 64, 256]
    methods = {row["method"] for row in sweep}
    assert {"PairCapKnowledgeBase.search", "PairCapKnowledgeBase.search, single_query_threads=1"} <= methods
    assert any(method.startswith("format 1") for method in methods) and any("faiss defaults" in m for m in methods)
    assert all(row["same_results_as_faiss"] and row["max_score_diff"] < 1e-5 for row in sweep)
    assert results["batch_sweep_targets"] == []  # the targets are for 127 k pairs


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


def test_training_compares_stage_2_with_stage_1(results_dir):
    baseline, project = (load(results_dir, "training")["results"][key][0] for key in ("baseline", "project"))
    assert baseline["stage"].startswith("stage 1") and project["stage"].startswith("stage 2")
    assert project["trainable_parameters"] > baseline["trainable_parameters"]


def test_a_script_runs_on_its_own_with_its_options(tmp_path):
    run_script("retrieval.py", tmp_path, "--kb-sizes", "3000", "--indexes", "IVF16,Flat")
    rows = json.loads((tmp_path / "retrieval-cpu-tiny.json").read_text())["results"]["project"]
    assert {row["kb_size"] for row in rows} == {3000}
    assert [row["method"] for row in rows if not row["exact"]] == ["PairCapIndex, IVF16,Flat, nprobe=16"]


def test_kb_scale_builds_loads_and_searches_a_tiny_kb(tmp_path):
    output = tmp_path / "kb_scale.json"
    options = ["--sizes", "--token-sizes", "1000", "--old-sizes", "--old-token-sizes", "1000", "--repeats", "1"]
    run_script(
        "kb_scale.py", tmp_path, *options, "--single-queries", "2", "--output", str(output), "--work-dir", str(tmp_path)
    )
    data = json.loads(output.read_text())
    assert data["benchmark"] == "kb_scale" and data["environment"]["faiss"]
    results = data["results"]
    assert [(row["kb"], row["format"]) for row in results["builds"]] == [
        ("1k + tokens", 2),
        ("1k + tokens (format 1)", 1),
    ]
    assert results["builds"][0]["tokens_bytes"] < results["builds"][0]["per_row_layout_token_bytes"]
    loads = {(row["loader"].split()[1], row["cache"]): row for row in results["loads"]}
    assert set(loads) == {("2", "cold"), ("2", "warm"), ("1", "cold")}
    assert loads["2", "cold"]["datasets_cache_bytes"] == 0 < loads["1", "cold"]["datasets_cache_bytes"]
    assert all(row["kb_folder_unchanged"] and row["load_s"] > 0 and row["peak_rss_bytes"] > 0 for row in loads.values())
    searches = results["searches"]
    assert {(row["batch"], row["method"]) for row in searches} >= {(1, "kb.search"), (64, "kb.search")}
    assert all(
        row["same_rows_as_faiss"] and row["max_score_diff"] < 1e-5 for row in searches if row["method"] == "kb.search"
    )
    assert results["targets"] and not list(tmp_path.glob("kb_scale-*/"))  # the synthetic KBs are deleted
    assert "### Loads" in (tmp_path / "kb_scale.md").read_text()
