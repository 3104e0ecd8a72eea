"""Smoke test of `benchmarks/prompt_prefix.py`: both workloads run with and without the shared prefix and are written
(no timing asserts)."""

import json

from benchmarks import prompt_prefix


def test_prompt_prefix_benchmark_writes_both_ways(tmp_path):
    prompt_prefix.main(["--lm", "tiny", "--batch-sizes", "2", "--repeats", "1", "--output-dir", str(tmp_path)])
    data = json.loads((tmp_path / "prompt_prefix-cpu-tiny.json").read_text())
    assert data["benchmark"] == "prompt_prefix" and "load_average_start" in data["environment"]
    rows = data["results"]["rows"]
    assert [row["mode"] for row in rows] == ["zero-shot LM", "generative pair2pair"]
    for row in rows:
        assert row["batch_size"] == 2 and 0 < row["prefix_tokens"] < row["prompt_tokens"]
        assert row["plain_s"] > 0 and row["shared_s"] > 0 and row["speedup"] == row["plain_s"] / row["shared_s"]
    assert (tmp_path / "prompt_prefix-cpu-tiny.md").read_text().count("zero-shot LM") == 1
