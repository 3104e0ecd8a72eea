"""Shared fixtures: a tiny PairCap release assembled from locally built CLAP / Llama folders, and the real data. The
suite runs in parallel (pytest-xdist, `-n auto` in pyproject.toml): one worker per core, at most four, each test file
on one worker so its module fixtures are built once; each worker and what it starts get an equal share of the cores."""

import os

if "PYTEST_XDIST_WORKER_COUNT" in os.environ:  # set before torch starts its thread pool
    os.environ["OMP_NUM_THREADS"] = str(
        max(1, len(os.sched_getaffinity(0)) // int(os.environ["PYTEST_XDIST_WORKER_COUNT"]))
    )

import csv
import json
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from helpers import REPO, SHARED_DATA

from paircap.assembly import assemble_release
from paircap.tiny import save_tiny_clap, save_tiny_llama


def chmod_000_blocks_reading() -> bool:
    """False where chmod 000 does not stop this process from reading (root, or CAP_DAC_OVERRIDE)."""
    with tempfile.TemporaryDirectory() as folder:
        probe = Path(folder, "probe")
        probe.write_bytes(b"x")
        probe.chmod(0)
        try:
            probe.open("rb").close()
        except PermissionError:
            return True
        finally:
            probe.chmod(0o600)
    return False


CHMOD_BLOCKS = chmod_000_blocks_reading()


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Files holding slow tests run first: a file stays on one worker, so a long file left to the end would run alone
    while the other workers wait."""
    slow = {item.path for item in items if item.get_closest_marker("slow")}
    items.sort(key=lambda item: item.path not in slow)  # stable: each file's tests keep their order


def pytest_xdist_auto_num_workers(config: pytest.Config) -> int:
    """`-n auto`: one worker per core this process may use, at most 4 (each holds torch and its own tiny models)."""
    return max(1, min(4, len(os.sched_getaffinity(0))))


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """The real clips and captions beside the repo (`../shared/data`); tests needing them skip when it is absent."""
    if not (SHARED_DATA / "clotho_eval7" / "manifest.json").is_file():
        pytest.skip(f"real data folder {SHARED_DATA} is absent (it sits beside the repo in the project workspace)")
    return SHARED_DATA


@pytest.fixture(scope="session")
def clotho_clips(shared_data) -> list[tuple[Path, list[str]]]:
    """The 7 real Clotho evaluation clips (15.7-29.5 s, 48 kHz) with their 5 reference captions each."""
    manifest = json.loads((shared_data / "clotho_eval7" / "manifest.json").read_text())
    return sorted((shared_data / "clotho_eval7" / entry["file"], entry["captions"]) for entry in manifest)


@pytest.fixture(scope="session")
def tiny_checkpoints(tmp_path_factory) -> tuple[Path, Path]:
    """Tiny random CLAP and Llama checkpoint folders in Hugging Face layout."""
    root = tmp_path_factory.mktemp("checkpoints")
    return save_tiny_clap(root / "clap"), save_tiny_llama(root / "llama")


@pytest.fixture(scope="session")
def tiny_release(tiny_checkpoints, tmp_path_factory):
    """(folder, model, processor): an untrained release assembled from the tiny checkpoints and saved to disk."""
    clap, llama = tiny_checkpoints
    folder = tmp_path_factory.mktemp("release") / "paircap-tiny"
    model, processor = assemble_release(str(clap), str(llama), folder)
    return folder, model, processor


@pytest.fixture
def sine_wave():
    """Return a helper making a float32 sine clip at a given rate and length."""

    def make(seconds: float, sampling_rate: int = 48000, frequency: float = 440.0, channels: int = 1) -> np.ndarray:
        t = np.arange(int(seconds * sampling_rate)) / sampling_rate
        wave = (0.3 * np.sin(2 * np.pi * frequency * t)).astype(np.float32)
        return wave if channels == 1 else np.stack([wave] * channels, axis=1)

    return make


@pytest.fixture
def write_wav(tmp_path):
    """Return a helper writing an array to a wav file in tmp_path."""

    def write(name: str, data: np.ndarray, sampling_rate: int = 48000, subtype: str | None = None) -> Path:
        path = tmp_path / name
        sf.write(path, data, sampling_rate, subtype=subtype)
        return path

    return write


@pytest.fixture(scope="session")
def corpora(shared_data, tmp_path_factory) -> dict[str, Path]:
    """Clotho v2 layout holding the 7 real evaluation clips, and the real AudioCaps val captions (text only)."""
    root = tmp_path_factory.mktemp("corpora")
    manifest = json.loads((shared_data / "clotho_eval7" / "manifest.json").read_text())
    wanted = {entry["source_wav"]: entry["file"] for entry in manifest}
    (root / "clotho" / "evaluation").mkdir(parents=True)
    with open(shared_data / "captions" / "clotho_evaluation.csv", newline="") as handle:
        reader = csv.DictReader(handle)
        rows = [row for row in reader if row["file_name"] in wanted]
        fields = reader.fieldnames
    with open(root / "clotho" / "clotho_captions_evaluation.csv", "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=fields)
        writer.writeheader()
        writer.writerows(rows)
    for wav_name, flac_name in wanted.items():
        (root / "clotho" / "evaluation" / (Path(wav_name).stem + ".flac")).symlink_to(
            shared_data / "clotho_eval7" / flac_name
        )
    (root / "audiocaps").mkdir()
    (root / "audiocaps" / "val.csv").write_bytes((shared_data / "captions" / "audiocaps_val.csv").read_bytes())
    return {"clotho": root / "clotho", "audiocaps": root / "audiocaps"}


@pytest.fixture(scope="session")
def real_kb(tiny_release, corpora, tmp_path_factory) -> Path:
    folder, _, _ = tiny_release
    output = tmp_path_factory.mktemp("kb") / "clotho-audiocaps-kb"
    command = [
        sys.executable, "-m", "paircap.cli", "kb", "build",
        "--corpus", "clotho:evaluation", "--corpus", "audiocaps:val:text",
        "--root", f"clotho={corpora['clotho']}", "--root", f"audiocaps={corpora['audiocaps']}",
        "--model", str(folder), "--output", str(output), "--num-workers", "0", "--shard-size", "512",
    ]  # fmt: skip
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(REPO)}
    result = subprocess.run(command, capture_output=True, text=True, env=env, cwd=REPO, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "pairs/s" in result.stdout + result.stderr
    return output


@pytest.fixture(scope="session")
def command_entry_points(tmp_path_factory) -> Path:
    """A folder with this checkout's package metadata (`paircap-*.dist-info`, entry points from pyproject.toml). On
    `sys.path` or `PYTHONPATH` before the installed `paircap` metadata, it gives `paircap` the commands this checkout
    registers (`[project.entry-points."paircap.commands"]`: the mini recipe's `mini`), as installing it would, whatever
    checkout the environment's editable install points at."""
    tomllib = pytest.importorskip("tomllib")  # Python 3.11+
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    info = tmp_path_factory.mktemp("metadata") / f"paircap-{project['version']}.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: paircap\nVersion: {project['version']}\n")
    groups = [
        f"[{group}]\n" + "".join(f"{name} = {target}\n" for name, target in entries.items())
        for group, entries in project["entry-points"].items()
    ]
    (info / "entry_points.txt").write_text("\n".join(groups))
    return info.parent
