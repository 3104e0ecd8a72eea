"""pyproject.toml declares every third-party library the shipped packages import, and FAISS is an extra: `cpu` or
`gpu`, one of two wheels, with an error naming both where it is missing."""

import ast
import re
import subprocess
import sys
import textwrap
from importlib.metadata import packages_distributions
from pathlib import Path

import pytest

tomllib = pytest.importorskip("tomllib")  # Python 3.11+

REPO = Path(__file__).resolve().parents[1]
SHIPPED = ("modeling_paircap", "paircap", "datasets_scripts", "hub_cards", "recipes", "metrics", "train_accelerate.py")


def canonical(name: str) -> str:
    """A distribution name as packaging normalises it (PEP 503)."""
    return re.sub(r"[-_.]+", "-", name).lower()


def requirement_name(requirement: str) -> str:
    return canonical(re.match(r"[A-Za-z0-9._-]+", requirement).group())


def imported_top_levels(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    names = {alias.name for node in ast.walk(tree) if isinstance(node, ast.Import) for alias in node.names}
    names |= {node.module for node in ast.walk(tree) if isinstance(node, ast.ImportFrom) and node.level == 0}
    return {name.split(".")[0] for name in names}


def test_every_third_party_import_is_declared():
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    requirements = project["dependencies"] + [r for extra in project["optional-dependencies"].values() for r in extra]
    declared = {requirement_name(r) for r in requirements}
    ours = {Path(name).stem for name in SHIPPED}
    files = [p for name in SHIPPED for p in ([REPO / name] if name.endswith(".py") else (REPO / name).rglob("*.py"))]
    distributions = packages_distributions()
    undeclared = {}
    for path in files:
        for name in imported_top_levels(path) - set(sys.stdlib_module_names) - ours:
            if not {canonical(d) for d in distributions.get(name, [name])} & declared:
                undeclared.setdefault(name, str(path.relative_to(REPO)))
    assert not undeclared, f"imported but not declared in pyproject.toml: {undeclared}"


def test_faiss_is_an_extra_of_two_alternatives():
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    names = {extra: {requirement_name(r) for r in reqs} for extra, reqs in project["optional-dependencies"].items()}
    assert not any(requirement_name(r).startswith("faiss") for r in project["dependencies"])
    assert names["cpu"] == {"faiss-cpu"} and names["gpu"] == {"faiss-gpu-cu12"}


def test_missing_faiss_names_both_extras():
    script = textwrap.dedent(
        """
        import sys
        sys.modules["faiss"] = None  # as if neither faiss wheel were installed
        try:
            import datasets_scripts.faiss_index
        except ImportError as error:
            print(error)
        """
    )
    result = subprocess.run([sys.executable, "-c", script], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    assert 'pip install "paircap[cpu]"' in result.stdout and 'pip install "paircap[gpu]"' in result.stdout


# huggingface_hub and safetensors are transformers' own requirements
REMOTE_CODE_LIBRARIES = {"torch", "transformers", "numpy", "huggingface_hub", "safetensors"}
REMOTE_CODE_GUARDED = {"faiss", "datasets", "pyarrow", "av"}  # imported inside a try or a function, with a clear error


def unguarded_top_levels(path: Path) -> set[str]:
    """Libraries a module imports at module level, outside any try block (what importing it needs)."""
    names = set()
    for node in ast.parse(path.read_text()).body:
        if isinstance(node, ast.Import):
            names |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0:
            names.add(node.module.split(".")[0])
    return names


@pytest.mark.parametrize("module", sorted(p.name for p in (REPO / "modeling_paircap").glob("*.py")))
def test_remote_code_imports_only_torch_transformers_numpy_and_guarded_faiss_datasets(module):
    """`modeling_paircap/` is copied into model repos as remote code: nothing from the rest of this repo, and faiss /
    datasets (with pyarrow) only where guarded."""
    path = REPO / "modeling_paircap" / module
    third_party = imported_top_levels(path) - set(sys.stdlib_module_names) - {"modeling_paircap"}
    assert third_party <= REMOTE_CODE_LIBRARIES | REMOTE_CODE_GUARDED, third_party
    assert unguarded_top_levels(path) - set(sys.stdlib_module_names) <= REMOTE_CODE_LIBRARIES
