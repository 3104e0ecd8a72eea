"""Hub access for the command line: without network, fail within seconds (not minutes of retries) and say how to work
offline; cached copies still load."""

import os
import socket
from collections.abc import Iterable
from pathlib import Path
from urllib.parse import urlparse

import huggingface_hub

OFFLINE_HINT = (
    "to work offline, pass local folders instead of hub ids (a release: --model DIR, and `paircap mini` "
    "trains one here), and set HF_HUB_OFFLINE=1 to skip the network check"
)


class ModelLoadError(OSError):
    """A release, or its configuration, could not be loaded (the message names it and says what to do)."""


def is_hub_id(name: str | os.PathLike | None) -> bool:
    """Whether `name` would be fetched from the Hub: a string that is no existing local path."""
    return isinstance(name, str) and not Path(name).expanduser().exists()


def hub_reachable(endpoint: str | None = None, timeout: float = 3.0) -> bool:
    """Whether a TCP connection to the Hub endpoint (`HF_ENDPOINT`, default huggingface.co) opens within `timeout`."""
    url = urlparse(endpoint or huggingface_hub.constants.ENDPOINT)
    port = url.port or (443 if url.scheme == "https" else 80)
    try:
        with socket.create_connection((url.hostname, port), timeout=timeout):
            return True
    except OSError:
        return False


def offline_mode() -> bool:
    return bool(huggingface_hub.constants.HF_HUB_OFFLINE)


def go_offline_if_unreachable(names: Iterable[str | os.PathLike | None]) -> bool:
    """
    When any of `names` is a hub id and the Hub cannot be reached, switch this process to offline mode (huggingface_hub,
    transformers and datasets), so loads use the local cache at once instead of retrying. Returns whether the process
    is offline; does nothing (no network check) under HF_HUB_OFFLINE=1 or when every name is a local path.
    """
    if offline_mode():
        return True
    if not any(is_hub_id(name) for name in names) or hub_reachable():
        return False
    import datasets  # only here: importing it takes a second

    huggingface_hub.constants.HF_HUB_OFFLINE = True
    datasets.config.HF_HUB_OFFLINE = True
    return True


def load_failure(error: Exception, *names: str) -> ModelLoadError:
    """The error to raise when loading `names` failed: offline with hub ids among them, or the loader's own reason."""
    hub_ids = [name for name in names if is_hub_id(name)]
    if hub_ids and offline_mode():
        return ModelLoadError(
            f"{' or '.join(hub_ids)}: not in the local cache, and the Hub cannot be reached; {OFFLINE_HINT}"
        )
    return ModelLoadError(f"could not load {' / '.join(names)}: {error}")
