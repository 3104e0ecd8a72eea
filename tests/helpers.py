"""What several test modules share that is not a fixture: the repo's and the shared data's folders, the opening of
scripts that must load a release as remote code (any import of the repo's own packages fails there), and a fresh
Python process run to completion."""

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
