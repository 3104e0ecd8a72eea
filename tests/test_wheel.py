"""The wheel works away from the checkout: built from the sources, installed (without dependencies, offline) into a
fresh virtual environment over this one's packages, and imported from another folder, it scores captions with
`paircap.metrics`, renders a model card from its templates and runs its command, `mini` included (the recipe's entry
point, with its conf/ files). Inside a virtualenv or outside one."""

import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
OFFLINE = {"HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "PIP_NO_INDEX": "1", "PIP_DISABLE_PIP_VERSION_CHECK": "1"}

SCRIPT = textwrap.dedent(
    """
    import json, sys

    import datasets_scripts.build_kb, datasets_scripts.faiss_index, datasets_scripts.readers.audiocaps, hub_cards
    import modeling_paircap.modeling_paircap
    import paircap.cli, paircap.evaluation, paircap.training.loop, recipes.mini
    from modeling_paircap.configuration_paircap import PairCapConfig
    from hub_cards import render_model_card
    from paircap.metrics import MODULE_FILE, compute_caption_metrics, find_java

    result = {
        "files": {
            name: sys.modules[name].__file__ for name in ("paircap", "modeling_paircap", "datasets_scripts", "recipes")
        },
        "metric_module": str(MODULE_FILE),
        "card": "PairCap" in str(render_model_card(PairCapConfig())),
    }
    if sys.argv[1] == "java":
        references = [["a man speaks.", "a man is speaking"], ["rain is falling hard on a surface"]]
        scores = compute_caption_metrics(["a man is speaking", "rain falls"], references, metrics=["bleu_1", "cider_d"])
        result["scores"] = scores.corpus
    print(json.dumps(result))
    """
)


def run(command: list, **kwargs) -> subprocess.CompletedProcess:
    result = subprocess.run(command, capture_output=True, text=True, timeout=600, **kwargs)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return result


def source_copy(folder: Path) -> Path:
    """The checkout's files (tracked, or untracked and not ignored): a build leaves `build/` and egg-info there."""
    listing = subprocess.run(
        ["git", "ls-files", "--cached", "--others", "--exclude-standard", "-z"], cwd=REPO, capture_output=True
    )
    if listing.returncode != 0:
        pytest.skip("building the wheel from its sources needs a git checkout")
    for name in filter(None, listing.stdout.decode().split("\0")):
        if (REPO / name).is_file():
            (folder / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(REPO / name, folder / name)
    return folder


@pytest.fixture(scope="module")
def installed(tmp_path_factory) -> Path:
    """The Python of a virtual environment (this environment's packages visible) with the paircap wheel installed."""
    root = tmp_path_factory.mktemp("wheel")
    sources = source_copy(root / "src")
    env = {**os.environ, **OFFLINE}
    run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-w", str(root / "dist"), "."],
        cwd=sources, env=env)  # fmt: skip
    (wheel,) = (root / "dist").glob("paircap-*.whl")
    run([sys.executable, "-m", "venv", "--without-pip", str(root / "venv")])
    python = root / "venv" / "bin" / "python"
    see_these_packages(python)
    # the venv's pip is this environment's; --ignore-installed: a checkout may be installed too
    run([str(python), "-m", "pip", "install", "--no-deps", "--ignore-installed", str(wheel)], env=env)
    return python


def see_these_packages(python: Path) -> None:
    """Let the venv of `python` import this environment's packages, after its own: a `.pth` file listing this
    interpreter's site-packages folders. `venv --system-site-packages` would not do: run inside a virtualenv, it
    shows the base Python's packages, not the virtualenv's. Plain folders, so their own `.pth` files (an editable
    install of the checkout) are not run."""
    folders = [path for path in sys.path if path.endswith(("site-packages", "dist-packages"))]
    site_packages = run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"])
    Path(site_packages.stdout.strip(), "outer_environment.pth").write_text("\n".join(folders) + "\n")


def test_the_wheel_imports_and_scores_away_from_the_checkout(installed, tmp_path):
    java = shutil.which("java") or os.environ.get("JAVA_HOME")  # where paircap.metrics.find_java looks
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"} | OFFLINE
    result = run([str(installed), "-c", SCRIPT, "java" if java else "no-java"], cwd=tmp_path, env=env)
    out = json.loads(result.stdout.strip().splitlines()[-1])
    venv = installed.parents[1]
    assert all(Path(path).is_relative_to(venv) for path in out["files"].values()), out["files"]
    assert Path(out["metric_module"]) == Path(out["files"]["paircap"]).parent / "_metric_module" / (
        "paircap_caption_metrics.py"
    )
    assert out["card"]
    if java:
        assert 0 < out["scores"]["bleu_1"] <= 1 and out["scores"]["cider_d"] > 0
    command = run([str(installed.parent / "paircap"), "--help"], cwd=tmp_path, env=env)
    assert "caption" in command.stdout and "mini" in command.stdout
    mini = run([str(installed.parent / "paircap"), "mini", "--help"], cwd=tmp_path, env=env)
    assert "--scale {full,quick,release}" in mini.stdout  # conf/scales/*.yaml, read from the installed package
