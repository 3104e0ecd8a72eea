"""
`paircap metrics download`: fetch what the optional caption metrics need into one cache folder, where the metric
module looks for it: the Stanford CoreNLP 3.6.0 jars of SPICE (`spice/`), FENSE's error detector (checked against
its published sha256) with its encoder's config and tokenizer, and FENSE's SBERT model. Files already there are
checked, not fetched again. Without a network it says so in one line and exits 2.
"""

import argparse
import functools
import hashlib
import io
import json
import shutil
import sys
import urllib.error
import urllib.request
import zipfile
from pathlib import Path

CORENLP_URL = "https://nlp.stanford.edu/software/stanford-corenlp-full-2015-12-09.zip"
CORENLP_JARS = ("stanford-corenlp-3.6.0.jar", "stanford-corenlp-3.6.0-models.jar")
SPICE_DIR = "spice"
SUMS_FILE = "SHA256SUMS.json"  # the sha256 of files with no published one, recorded when first fetched
TIMEOUT_S = 60
CACHE_HELP = "the cache folder (default: $PAIRCAP_METRICS_CACHE or ~/.cache/paircap/metrics)"


class MetricsDownloadError(Exception):
    """No network, a failed download, or a cached file whose sha256 does not match."""


def add_metrics_commands(commands, common: argparse.ArgumentParser) -> None:
    """Add `metrics` and its subcommand `download` to the `paircap` subcommands `commands`."""
    metrics = commands.add_parser("metrics", help="fetch what the SPICE, SPIDEr and FENSE caption metrics need")
    add_command = functools.partial(
        metrics.add_subparsers(dest="metrics_command", required=True).add_parser, parents=[common]
    )
    download = add_command("download", help="fetch the CoreNLP jars and the FENSE weights into one cache folder")
    download.add_argument(
        "--cache",
        default=None,
        help=CACHE_HELP,
    )
    download.add_argument(
        "--only", choices=["spice", "fense"], default=None, help="fetch only the SPICE jars or only the FENSE weights"
    )
    download.set_defaults(run=run_download)


def run_download(args: argparse.Namespace) -> int:
    from paircap.metrics import fense_module  # the metric module's imports (evaluate, pycocoevalcap): only when run

    cache = Path(args.cache).expanduser() if args.cache else fense_module.metrics_cache()
    try:
        cache.mkdir(parents=True, exist_ok=True)
        if args.only in (None, "spice"):
            fetch_corenlp_jars(cache)
        if args.only in (None, "fense"):
            fetch_fense(cache)
    except MetricsDownloadError as error:
        print(f"paircap metrics download: error: {error}", file=sys.stderr)
        return 2
    print(f"caption metric files are in {cache}", file=sys.stderr)
    if args.cache:
        print(f"set {fense_module.CACHE_ENV}={cache} for the metrics to find them", file=sys.stderr)
    return 0


def sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def check_sha256(path: Path, expected: str) -> None:
    """Raises MetricsDownloadError when `path`'s sha256 is not `expected`."""
    found = sha256(path)
    if found != expected:
        raise MetricsDownloadError(
            f"{path}: sha256 {found} is not the expected {expected}; delete the file and run the command again"
        )


def fetch(url: str) -> bytes:
    """The bytes at `url`; MetricsDownloadError with a one-line reason when the network is not there."""
    try:
        with urllib.request.urlopen(url, timeout=TIMEOUT_S) as response:
            return response.read()
    except (urllib.error.URLError, OSError) as error:
        reason = getattr(error, "reason", error)
        raise MetricsDownloadError(
            f"cannot download {url} ({reason}): no network here? Run the command where the network allows, or put "
            "the files into the cache folder yourself"
        ) from None


def fetch_file(url: str, path: Path, expected_sha256: str | None) -> None:
    """Fetch `url` to `path` unless it is there; a present or fetched file is checked against the sha256 (the
    published one, else the one recorded in the cache's SHA256SUMS.json when it was first fetched)."""
    sums_path = path.parent / SUMS_FILE
    sums = json.loads(sums_path.read_text()) if sums_path.is_file() else {}
    expected = expected_sha256 or sums.get(path.name)
    if not path.is_file():
        data = fetch(url)
        partial = path.with_name(path.name + ".partial")
        partial.write_bytes(data)
        if expected:
            check_sha256(partial, expected)
        partial.replace(path)
    if expected:
        check_sha256(path, expected)
    else:
        sums[path.name] = sha256(path)
        sums_path.write_text(json.dumps(sums, indent=2))
    print(f"{path}: sha256 ok", file=sys.stderr)


def fetch_corenlp_jars(cache: Path) -> None:
    """The two CoreNLP 3.6.0 jars SPICE needs, out of stanford-corenlp-full-2015-12-09.zip, into `cache/spice/`."""
    from paircap.metrics import SPICE_JARS_ENV

    folder = cache / SPICE_DIR
    folder.mkdir(parents=True, exist_ok=True)
    sums_path = folder / SUMS_FILE
    sums = json.loads(sums_path.read_text()) if sums_path.is_file() else {}
    if all((folder / name).is_file() for name in CORENLP_JARS):
        for name in CORENLP_JARS:
            if name in sums:
                check_sha256(folder / name, sums[name])
    else:
        with zipfile.ZipFile(io.BytesIO(fetch(CORENLP_URL))) as archive:
            for name in CORENLP_JARS:
                member = next((m for m in archive.namelist() if m.endswith("/" + name)), None)
                if member is None:
                    raise MetricsDownloadError(f"{CORENLP_URL} holds no {name}")
                with archive.open(member) as source, open(folder / name, "wb") as target:
                    shutil.copyfileobj(source, target)
    for name in CORENLP_JARS:
        sums.setdefault(name, sha256(folder / name))
    sums_path.write_text(json.dumps(sums, indent=2))
    print(f"{folder}: the SPICE jars are there (or set {SPICE_JARS_ENV} to a folder holding them)", file=sys.stderr)


def fetch_fense(cache: Path) -> None:
    """FENSE's error detector (published sha256), its encoder's config and tokenizer, and its SBERT model."""
    import torch

    from paircap.metrics import fense_module

    checkpoint = cache / fense_module.ECHECKER_FILE
    fetch_file(fense_module.ECHECKER_URL, checkpoint, fense_module.ECHECKER_SHA256)
    model_type = torch.load(checkpoint, map_location="cpu", weights_only=False)["model_type"]
    hub_snapshot(model_type, cache / model_type, ["*.json", "*.txt"])
    hub_snapshot(fense_module.SBERT_REPO, cache / fense_module.SBERT_REPO.split("/")[1], None)


def hub_snapshot(repo: str, folder: Path, patterns: list[str] | None) -> None:
    """A Hub repository's files into `folder` (the Hub client checks what it downloads)."""
    from huggingface_hub import snapshot_download

    try:
        snapshot_download(repo, local_dir=folder, allow_patterns=patterns)
    except Exception as error:  # the hub client's connection errors have no common base
        if (folder / "config.json").is_file():
            print(f"{folder}: present (not re-checked against the Hub: {type(error).__name__})", file=sys.stderr)
            return
        reason = str(error).splitlines()[0] if str(error) else type(error).__name__
        raise MetricsDownloadError(
            f"cannot download {repo} from the Hugging Face Hub ({reason}): no network here?"
        ) from None
