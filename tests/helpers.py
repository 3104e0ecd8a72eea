"""What several test modules share that is not a fixture: the repo's and the shared data's folders, the opening of
scripts that must load a release as remote code (any import of the repo's own packages fails there), a fresh
Python process run to completion, a free local port, and a script run under `accelerate launch` on CPU."""

import os
import socket
import subprocess
import sys
import textwrap
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"  # real audio and captions beside the checkout (absent: tests skip)

BLOCK_REPO_IMPORTS = textwrap.dedent(
    """
    import importlib.abc, sys

    BLOCKED = ("modeling_paircap", "paircap", "datasets_scripts", "recipes", "train_accelerate")

    class BlockRepo(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path=None, target=None):
            if name.split(".")[0] in BLOCKED:
                raise ImportError(f"the repo package {name} must not be imported by remote code")
            return None

    sys.meta_path.insert(0, BlockRepo())
    """
)


def run_python(args: list[str], cwd: Path, env: dict[str, str], timeout: float = 300) -> subprocess.CompletedProcess:
    """`python ARGS` in a fresh interpreter, its output captured as text; fails the test past `timeout` seconds."""
    return subprocess.run([sys.executable, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on now."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def accelerate_launch(script: list[str], num_processes: int = 2, timeout: float = 180) -> subprocess.CompletedProcess:
    """`accelerate launch` of the repo script `script` (path and arguments) over `num_processes` CPU processes (gloo),
    one thread each, from the repo root; its output captured as text."""
    command = [
        sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", str(num_processes),
        "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no",
        "--main_process_port", str(free_port()), *script,
    ]  # fmt: skip
    env = {
        **os.environ,
        "ACCELERATE_USE_CPU": "1",
        "OMP_NUM_THREADS": "1",
        "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]),
    }
    return subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=timeout)
