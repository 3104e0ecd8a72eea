"""How the command line reads a release name, without loading torch or transformers: the named local releases
(`--model mini`), names written as paths, and the `--trust-remote-code` help."""

from pathlib import Path

from paircap.hub_access import ModelLoadError

REPO = Path(__file__).resolve().parents[1]
LOCAL_RELEASES = {"mini": REPO / "releases" / "paircap-mini-esc50cc"}
PATH_PREFIXES = ("./", "../", "/", "~")  # a name written as a path is a folder, never a hub id
TRUST_REMOTE_CODE_HELP = (
    "run the release's own Python files instead of the installed PairCap classes (they run on load: only for a "
    "release you trust)"
)


def resolve_model(name: str) -> str:
    """A local release name (`mini`) becomes its folder; anything else (a folder or a hub id) is returned as given."""
    if name not in LOCAL_RELEASES:
        return name
    folder = LOCAL_RELEASES[name]
    if not (folder / "config.json").is_file():
        raise ModelLoadError(
            f"--model {name}: the release folder {folder} is missing (it ships in a git checkout of the repo, not in "
            "the wheel). Build one with: paircap mini --output runs/mini-cc --scale release "
            f"--clips esc50_cc --pack-release {folder}"
        )
    return str(folder)
