"""`paircap metrics download`: the offline message, the sha256 checks of files already in the cache, the lookup."""

import hashlib
import json

import pytest

from paircap import metrics_cli
from paircap.cli import main
from paircap.metrics import SPICE_JARS_ENV, fense_module, spice_jars_missing


@pytest.fixture
def offline(monkeypatch):
    """No network, as on this machine; made explicit so the test does not depend on the machine."""

    def refuse(url, timeout):
        raise metrics_cli.urllib.error.URLError("[Errno -2] Name or service not known")

    monkeypatch.setattr(metrics_cli.urllib.request, "urlopen", refuse)


def run(argv, capsys) -> tuple[int, list[str]]:
    code = main(argv)
    return code, capsys.readouterr().err.strip().splitlines()


def test_offline_is_one_line_and_exit_2(tmp_path, capsys, offline):
    code, lines = run(["metrics", "download", "--cache", str(tmp_path)], capsys)
    assert code == 2
    assert len(lines) == 1
    assert lines[0].startswith("paircap metrics download: error: cannot download https://nlp.stanford.edu/")
    assert "no network here?" in lines[0]


def test_present_echecker_with_a_wrong_sha256_is_refused(tmp_path, capsys, offline):
    (tmp_path / fense_module.ECHECKER_FILE).write_bytes(b"not the published checkpoint")
    code, lines = run(["metrics", "download", "--cache", str(tmp_path), "--only", "fense"], capsys)
    assert code == 2 and len(lines) == 1
    assert f"is not the expected {fense_module.ECHECKER_SHA256}" in lines[0]


def test_present_file_is_checked_not_fetched(tmp_path, capsys, offline):
    path = tmp_path / "weights.bin"
    path.write_bytes(b"weights")
    metrics_cli.fetch_file("https://example.invalid/weights.bin", path, hashlib.sha256(b"weights").hexdigest())
    assert "sha256 ok" in capsys.readouterr().err
    with pytest.raises(metrics_cli.MetricsDownloadError, match="sha256"):
        metrics_cli.fetch_file("https://example.invalid/weights.bin", path, "0" * 64)


def test_present_spice_jars_are_recorded_then_checked(tmp_path, capsys, offline, monkeypatch):
    jars = tmp_path / "spice"
    jars.mkdir()
    for name in metrics_cli.CORENLP_JARS:
        (jars / name).write_bytes(name.encode())
    code, lines = run(["metrics", "download", "--cache", str(tmp_path), "--only", "spice"], capsys)
    assert code == 0
    sums = json.loads((jars / metrics_cli.SUMS_FILE).read_text())
    assert sums == {name: hashlib.sha256(name.encode()).hexdigest() for name in metrics_cli.CORENLP_JARS}
    monkeypatch.delenv(SPICE_JARS_ENV, raising=False)
    monkeypatch.setenv(fense_module.CACHE_ENV, str(tmp_path))
    assert spice_jars_missing() == (jars, [])  # where the metrics look once no folder is named
    (jars / metrics_cli.CORENLP_JARS[0]).write_bytes(b"changed")
    code, lines = run(["metrics", "download", "--cache", str(tmp_path), "--only", "spice"], capsys)
    assert code == 2 and len(lines) == 1 and "sha256" in lines[0]
