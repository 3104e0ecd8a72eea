"""Smoke test of `benchmarks/startup.py`: fresh interpreters timed, the ratio and its target written."""

import json

from benchmarks import startup


def test_startup_times_paircap_help_against_the_import(tmp_path, monkeypatch):
    """The real `paircap --help`, against a cheap stand-in for the torch import (seconds here, not the point)."""
    monkeypatch.setitem(startup.COMMANDS, "import torch, transformers", ["-c", "import json"])
    data = startup.main(["--repeats", "1", "--output-dir", str(tmp_path)])
    assert data == json.loads((tmp_path / "startup-cpu.json").read_text())
    rows = data["results"]["rows"]
    assert [row["command"] for row in rows] == ["paircap --help", "import torch, transformers"]
    assert all(row["median_s"] > 0 and len(row["raw_s"]) == 1 for row in rows) and rows[1]["vs_import"] == 1
    (target,) = data["results"]["targets"]
    assert target["measured"] == rows[0]["vs_import"] and target["limit"] == 1.5
    assert "### Start-up target" in (tmp_path / "startup-cpu.md").read_text()
