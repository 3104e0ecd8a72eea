"""The opening of scripts that load a release in a fresh process as remote code: any import of the repo's own
packages fails, so the release folder alone must be enough."""

import textwrap

BLOCK_REPO_IMPORTS = textwrap.dedent(
    """
    import importlib.abc, sys

    BLOCKED = ("modeling_paircap", "paircap", "datasets_scripts", "train_accelerate")

    class BlockRepo(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path=None, target=None):
            if name.split(".")[0] in BLOCKED:
                raise ImportError(f"the repo package {name} must not be imported by remote code")
            return None

    sys.meta_path.insert(0, BlockRepo())
    """
)
