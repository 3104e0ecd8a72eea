"""The thread policy (`paircap.threads`) and a light start-up: `--threads` on every command that runs a model, passive
OpenMP waiting set before torch loads (the user's own policy kept), one thread for a small decode step unless the user
chose a count, and `paircap --help` without torch."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from paircap import threads
from paircap.cli import build_parser, main
from paircap.threads import threads_for_decoding
from recipes.mini.run import parse_args as parse_mini_args

REPO = Path(__file__).resolve().parents[2]
MODEL_COMMANDS = [
    ["caption", "clip.wav"],
    ["evaluate", "--output-dir", "out"],
    ["demo"],
    ["kb", "build", "--recipe", "base", "--model", "m", "--output", "kb"],
    ["kb", "refine", "--kb", "a", "--train", "b", "--output", "kb"],
    ["kb", "tokens", "--kb", "a", "--model", "m"],
    ["kb", "upgrade", "--kb", "a", "--model", "m"],
]
HEAVY_MODULES = ("torch", "transformers", "datasets", "pandas", "faiss", "gradio", "matplotlib")


@pytest.fixture
def restore_threads(monkeypatch):
    """Put torch's thread count and OMP_NUM_THREADS back after a test that changes them."""
    monkeypatch.setenv("OMP_NUM_THREADS", os.environ.get("OMP_NUM_THREADS", "1"))  # undone by monkeypatch
    count = torch.get_num_threads()
    yield
    torch.set_num_threads(count)


@pytest.mark.parametrize("command", MODEL_COMMANDS, ids=lambda command: " ".join(command[:2]))
def test_every_model_command_takes_threads(command):
    assert build_parser().parse_args([*command, "--threads", "3"]).threads == 3
    assert build_parser().parse_args(command).threads is None  # the default: OMP_NUM_THREADS, else one per core


def test_mini_takes_threads():
    assert parse_mini_args(["--output", "run", "--threads", "2"]).threads == 2
    assert parse_mini_args(["--output", "run"]).threads is None


def test_threads_must_be_positive(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["caption", "clip.wav", "--threads", "0"])
    assert exit_info.value.code == 2
    assert "--threads: expected a whole number of 1 or more, got '0'" in capsys.readouterr().err


def test_the_flag_sets_torch_threads(tmp_path, restore_threads, capsys):
    """Applied before the command runs: here a caption of a missing file, which then fails with exit 2."""
    torch.set_num_threads(1)
    assert main(["caption", str(tmp_path / "missing.wav"), "--threads", "2"]) == 2
    assert torch.get_num_threads() == 2
    assert os.environ["OMP_NUM_THREADS"] == "2"  # for faiss and the processes the command starts
    assert "missing.wav" in capsys.readouterr().err


# In a fresh process: a finder on sys.meta_path notes OMP_WAIT_POLICY when torch is first imported, then the entry point
# runs a command that applies --threads and fails at once (a missing file).
FRESH_PROCESS = """
import json, os, sys

seen = {}

class NoteTorchImport:
    def find_spec(self, name, path=None, target=None):
        if name == "torch" and "policy" not in seen:
            seen["policy"] = os.environ.get("OMP_WAIT_POLICY")

sys.meta_path.insert(0, NoteTorchImport())
from paircap.cli import main

status = main(["caption", "missing.wav", "--threads", "2"])
import torch

print(json.dumps({"status": status, "policy_at_torch_import": seen.get("policy"), "threads": torch.get_num_threads(),
                  "env_threads": os.environ["OMP_NUM_THREADS"]}))
"""


def run_fresh(tmp_path: Path, **env: str) -> dict:
    clean = {k: v for k, v in os.environ.items() if k not in ("OMP_WAIT_POLICY", "OMP_NUM_THREADS")}
    result = subprocess.run(
        [sys.executable, "-c", FRESH_PROCESS],
        env={**clean, "PYTHONPATH": str(REPO), "HF_HUB_OFFLINE": "1", **env},
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout.splitlines()[-1])


def test_passive_waiting_is_set_before_torch_loads(tmp_path):
    seen = run_fresh(tmp_path)
    assert seen == {"status": 2, "policy_at_torch_import": "PASSIVE", "threads": 2, "env_threads": "2"}


def test_the_users_wait_policy_is_kept(tmp_path):
    assert run_fresh(tmp_path, OMP_WAIT_POLICY="ACTIVE")["policy_at_torch_import"] == "ACTIVE"


def test_help_imports_no_heavy_library():
    """`paircap --help` (every subcommand's parser built, the mini recipe's included) loads none of the heavy
    libraries: they load where a command uses them."""
    code = (
        "import sys\nfrom paircap.cli import main\ntry:\n    main(['--help'])\nexcept SystemExit:\n    pass\n"
        f"print([name for name in {HEAVY_MODULES!r} if name in sys.modules])"
    )
    result = subprocess.run(
        [sys.executable, "-c", code],
        env={**os.environ, "PYTHONPATH": str(REPO)},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    assert "caption" in result.stdout and "mini" in result.stdout  # the help was printed, installed commands too
    assert result.stdout.splitlines()[-1] == "[]"


@pytest.fixture
def small_lm():
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(
        vocab_size=64, hidden_size=16, intermediate_size=32, num_hidden_layers=1, num_attention_heads=2
    )
    return LlamaForCausalLM(config)


def test_a_small_decode_step_runs_on_one_thread_when_the_count_is_left_to_the_policy(small_lm, restore_threads):
    os.environ.pop("OMP_NUM_THREADS")
    torch.set_num_threads(2)
    with threads_for_decoding(small_lm, batch_size=8):
        assert torch.get_num_threads() == 1
    assert torch.get_num_threads() == 2


def test_a_large_step_or_a_chosen_count_keeps_the_threads(small_lm, restore_threads, monkeypatch):
    monkeypatch.setattr(threads, "SMALL_DECODE_STEP", small_lm.num_parameters() * 4)
    os.environ.pop("OMP_NUM_THREADS")
    torch.set_num_threads(2)
    assert threads.small_decode_step(small_lm, 3) and not threads.small_decode_step(small_lm, 4)
    assert threads.decoding_threads(small_lm, 3, available=4) == 1
    assert threads.decoding_threads(small_lm, 4, available=4) == 4
    with threads_for_decoding(small_lm, batch_size=4):
        assert torch.get_num_threads() == 2
    os.environ["OMP_NUM_THREADS"] = "2"  # --threads 2
    assert threads.decoding_threads(small_lm, 1, available=2) == 2
    assert threads.decoding_threads(small_lm, 1, available=2, chosen=False) == 1
    with threads_for_decoding(small_lm, batch_size=1):
        assert torch.get_num_threads() == 2
