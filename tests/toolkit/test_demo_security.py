"""The demo as an attacker sees it (issue `secure`): a knowledge base whose clip table names files outside its audio
root (an absolute path, a `../` escape, links out of the root, a non-audio file inside it) exposes none of them over
HTTP, while its legitimate neighbours still play; uploads over the size limit are refused and not kept; a request
past its time limit stops; an error names the uploaded file, not the server's folders; `app.py` listens on 127.0.0.1
off a Space even when `GRADIO_SERVER_NAME` says 0.0.0.0."""

import os
import subprocess
import sys
from pathlib import Path
from urllib.parse import quote, urljoin

import httpx
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import soundfile as sf
from conftest import REPO
from datasets import Dataset
from gradio import utils as gradio_utils
from gradio_client import Client, handle_file
from gradio_client.exceptions import AppError
from test_demo import free_port, wait_for_server

from datasets_scripts.build_kb import build_knowledge_base
from modeling_paircap.file_io_paircap import file_record
from modeling_paircap.kb_format_paircap import CLIPS_FILE, KnowledgeBaseMetadata
from paircap.demo import MAX_UPLOAD, NOT_AVAILABLE, DemoEngine, build_blocks, launch_demo, space_host
from paircap.demo_audio import NEIGHBOUR_ROUTE

SECRET = b"HF_TOKEN=hf_not_a_real_token_but_a_secret\n"
SR = 48000
# audio id -> (audio_root, audio_path) written into the clip table after the build, as an attacker would
CRAFTED = {
    "good": ("corpus", "good.wav"),
    "inside": ("corpus", "inside.wav"),  # a link inside the root: plays
    "absolute": ("", "{outside}/secret.txt"),
    "escape": ("corpus", "../outside/secret.txt"),
    "link_secret": ("corpus", "link_secret.wav"),
    "link_audio": ("corpus", "link_out.flac"),  # audio, but outside the root
    "disguised": ("corpus", "notes.wav"),  # inside the root, not audio
}
PLAYS = {"good", "inside"}


def tone(frequency: float, seconds: float = 1.0) -> np.ndarray:
    t = np.arange(int(seconds * SR)) / SR
    return (0.2 * np.sin(2 * np.pi * frequency * t)).astype(np.float32)


@pytest.fixture(scope="module")
def crafted(tiny_release, tmp_path_factory) -> dict:
    """A KB built by the tiny release from real clips, then its clip table and its size/sha256 record rewritten."""
    _, model, processor = tiny_release
    base = tmp_path_factory.mktemp("crafted")
    build, root, outside = base / "build", base / "root", base / "outside"
    for folder in (build, root, outside):
        folder.mkdir()
    rows = []
    for i, audio_id in enumerate(CRAFTED):
        sf.write(build / f"{audio_id}.wav", tone(200 + 150 * i), SR)
        rows.append({"pair_id": f"syn/train/{audio_id}/0", "audio_id": audio_id, "caption": f"sound {audio_id}",
                     "audio": {"path": str(build / f"{audio_id}.wav"), "bytes": None}, "source": "syn",
                     "split": "train", "duration": None})  # fmt: skip
    kb = build_knowledge_base(
        Dataset.from_list(rows), model, processor, base / "kb", {"name": "crafted"}, roots={"build": build},
        shard_size=8, num_workers=0, progress=False,
    )  # fmt: skip
    sf.write(root / "good.wav", tone(300), SR)
    sf.write(root / "sub.flac", tone(500), SR, format="FLAC")
    (root / "inside.wav").symlink_to(root / "sub.flac")
    (outside / "secret.txt").write_bytes(SECRET)
    sf.write(outside / "other.flac", tone(700), SR, format="FLAC")
    (root / "link_secret.wav").symlink_to(outside / "secret.txt")
    (root / "link_out.flac").symlink_to(outside / "other.flac")
    (root / "notes.wav").write_bytes(SECRET)

    clips = pq.read_table(kb / CLIPS_FILE)
    locations = [CRAFTED[audio_id] for audio_id in clips.column("audio_id").to_pylist()]
    for column, values in (("audio_root", [r for r, _ in locations]), ("audio_path", [p for _, p in locations])):
        values = [value.format(outside=outside) for value in values]
        clips = clips.set_column(clips.schema.get_field_index(column), column, pa.array(values, pa.string()))
    pq.write_table(clips, kb / CLIPS_FILE)
    metadata = KnowledgeBaseMetadata.load(kb)
    metadata.files[CLIPS_FILE] = file_record(kb / CLIPS_FILE)  # the manifest is integrity, not authentication
    metadata.save(kb)
    files = {"good": root / "good.wav", "inside": root / "sub.flac"}
    return {"kb": kb, "root": root, "outside": outside, "files": files, "query": build / "good.wav"}


@pytest.fixture(scope="module")
def served(tiny_release, crafted):
    """(engine, url) of the demo on 127.0.0.1 over the crafted KB, its one root given (no absolute opt-in)."""
    folder, _, _ = tiny_release
    engine = DemoEngine.from_release(
        str(folder), str(crafted["kb"]), {"corpus": crafted["root"]}, device="cpu", max_new_tokens=4
    )
    demo = build_blocks(engine)
    url = launch_demo(demo, "127.0.0.1", free_port(), block=False)
    yield engine, url
    demo.close()


def players(table: dict) -> dict[str, str]:
    """audio id -> the audio cell of each row."""
    return {row[6]: row[5] for row in table["data"]}


def source(cell: str) -> str:
    return cell.split('src="')[1].split('"')[0]


def assert_not_served(url: str, path: str) -> None:
    response = httpx.get(urljoin(url, path), timeout=30)
    assert response.status_code != 200 and SECRET not in response.content, (path, response.status_code)


def test_a_crafted_kb_exposes_no_file_outside_its_root_and_its_good_neighbours_play(served, crafted):
    engine, url = served
    client = Client(url, verbose=False)
    _, _, table, _ = client.predict(
        handle_file(str(crafted["query"])), "audio2audio", 0.5, len(CRAFTED), api_name="/caption"
    )
    cells = players(table)
    assert set(cells) == set(CRAFTED)
    for audio_id, cell in cells.items():
        if audio_id in PLAYS:
            assert cell.startswith(f'<audio controls preload="metadata" src="{NEIGHBOUR_ROUTE}'), cell
            response = httpx.get(urljoin(url, source(cell)), timeout=30)
            assert response.status_code == 200 and response.content == crafted["files"][audio_id].read_bytes()
            assert response.headers["x-content-type-options"] == "nosniff"
        else:
            assert NOT_AVAILABLE in cell and "gradio_api" not in cell, (audio_id, cell)
    assert "--audio-root absolute=DIR" in cells["absolute"]
    assert "outside root" in cells["escape"] and "symbolic link out" in cells["link_secret"]
    assert "symbolic link out" in cells["link_audio"] and "not an audio file" in cells["disguised"]

    outside, root = crafted["outside"], crafted["root"]
    for path in [outside / "secret.txt", outside / "other.flac", root / "notes.wav", root / "link_secret.wav",
                 root / "good.wav", crafted["kb"] / "paircap_kb.json", Path("/etc/passwd")]:  # fmt: skip
        assert_not_served(url, "gradio_api/file=" + str(path))
        assert_not_served(url, "gradio_api/file=" + quote(str(path)))
        assert_not_served(url, "gradio_api/file/" + str(path))
    assert_not_served(url, f"gradio_api/file={root}/../outside/secret.txt")
    for token in ["", "x", "..", "..%2F..%2Fetc%2Fpasswd", quote(str(outside / "secret.txt"), safe="")]:
        assert_not_served(url, NEIGHBOUR_ROUTE + token)

    # a session's next table ends the tokens of the one before
    before = source(cells["good"])
    table, _ = client.predict("audio2audio", 0.5, len(CRAFTED) - 1, api_name="/rerank")
    after = source(players(table)["good"])
    assert after != before and httpx.get(urljoin(url, after), timeout=30).status_code == 200
    assert httpx.get(urljoin(url, before), timeout=30).status_code == 404
    # a token checks its file again when served: a clip swapped for a link out of the root stops playing
    good = crafted["files"]["good"]
    saved = good.read_bytes()
    try:
        good.unlink()
        good.symlink_to(outside / "other.flac")
        assert httpx.get(urljoin(url, after), timeout=30).status_code == 404
    finally:
        good.unlink()
        good.write_bytes(saved)


def test_the_absolute_opt_in_plays_absolute_clips_only_under_its_folder(served, crafted):
    engine, _ = served
    kb = engine.kb
    row = next(r for r in range(len(kb)) if kb.clips.column("audio_id")[int(kb.clip_index[r])].as_py() == "absolute")
    assert "--audio-root absolute=DIR" in engine.audio_cell(row)
    roots = dict(kb.audio_roots)
    try:
        kb.audio_roots = {**roots, "absolute": crafted["root"]}
        assert "outside the folder allowed for absolute paths" in engine.audio_cell(row)
        kb.audio_roots = {**roots, "absolute": "/"}
        assert "not an audio file" in engine.audio_cell(row)  # allowed everywhere, and still only audio
    finally:
        kb.audio_roots = roots


def upload(url: str, path: Path) -> httpx.Response | None:
    """POST a file to Gradio's upload route; None when the server closed the connection before reading it all."""
    try:
        with open(path, "rb") as handle:
            return httpx.post(urljoin(url, "gradio_api/upload"), files={"files": (path.name, handle)}, timeout=120)
    except (httpx.WriteError, httpx.RemoteProtocolError, httpx.ReadError):
        return None


def test_uploads_over_the_limit_are_refused_and_not_kept(served, tmp_path):
    _, url = served
    limit = gradio_utils._parse_file_size(MAX_UPLOAD)
    upload_dir = Path(gradio_utils.get_upload_folder())
    kept = set(upload_dir.rglob("*")) if upload_dir.exists() else set()
    over = tmp_path / "over.wav"
    over.touch()
    os.truncate(over, limit + 1)  # sparse: no disk used
    response = upload(url, over)
    assert response is not None and response.status_code == 413, response
    assert "maximum allowed size" in response.text
    huge = tmp_path / "huge.wav"
    huge.touch()
    os.truncate(huge, 2 * 2**30)  # the 2 GB upload the issue sent
    response = upload(url, huge)
    assert response is None or response.status_code == 413
    left = {path for path in upload_dir.rglob("*") if path.is_file()} - kept
    assert not [path for path in left if path.stat().st_size > limit], left
    small = tmp_path / "small.wav"
    sf.write(small, tone(440), SR)
    response = upload(url, small)
    assert response is not None and response.status_code == 200  # a clip under the limit still uploads
    assert httpx.get(url, timeout=30).status_code == 200


def test_a_request_past_its_time_limit_stops_and_an_error_names_only_the_upload(served, crafted, tmp_path,
                                                                                monkeypatch):  # fmt: skip
    engine, url = served
    client = Client(url, verbose=False)
    runs = engine.pass_one_runs
    monkeypatch.setattr(engine, "time_limit", 1e-6)
    with pytest.raises(AppError, match="ran past its time limit of 1e-06 s"):
        client.predict(handle_file(str(crafted["query"])), "audio2audio", 0.5, 2, api_name="/caption")
    assert engine.pass_one_runs == runs
    monkeypatch.undo()
    broken = tmp_path / "broken.wav"
    broken.write_bytes(b"RIFF\x00\x00\x00\x00WAVEjunk")
    with pytest.raises(AppError) as error:
        client.predict(handle_file(str(broken)), "audio2audio", 0.5, 2, api_name="/caption")
    message = str(error.value)
    assert "broken.wav" in message and str(Path(gradio_utils.get_upload_folder())) not in message
    assert os.sep + "broken.wav" not in message, message


def test_the_space_listens_on_this_machine_only_unless_it_is_a_space():
    assert space_host({}) == "127.0.0.1"
    assert space_host({"GRADIO_SERVER_NAME": "0.0.0.0"}) == "127.0.0.1"  # meant for another app: ignored
    assert space_host({"PAIRCAP_HOST": "0.0.0.0"}) == "0.0.0.0"  # asked for by name
    assert space_host({"SYSTEM": "spaces", "SPACE_ID": "org/demo", "GRADIO_SERVER_NAME": "0.0.0.0"}) == "0.0.0.0"


def listening_addresses(port: int) -> set[str]:
    """The IPv4 addresses a socket listens on at `port`, from /proc/net/tcp (state 0A: LISTEN)."""
    addresses = set()
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        local, state = line.split()[1], line.split()[3]
        host, local_port = local.split(":")
        if state == "0A" and int(local_port, 16) == port:
            addresses.add(".".join(str(int(host[i : i + 2], 16)) for i in (6, 4, 2, 0)))
    return addresses


def test_app_py_with_a_leaked_gradio_server_name_listens_on_127_0_0_1(tiny_release, crafted, tmp_path):
    folder, _, _ = tiny_release
    port = free_port()
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    env.update(PAIRCAP_MODEL=str(folder), PAIRCAP_KB=str(crafted["kb"]), GRADIO_SERVER_NAME="0.0.0.0")
    env.update(GRADIO_SERVER_PORT=str(port), PAIRCAP_AUDIO_ROOTS=f"corpus={crafted['root']}")
    env.pop("SYSTEM", None)
    log = tmp_path / "server.log"
    with open(log, "w") as output:
        server = subprocess.Popen(
            [sys.executable, str(REPO / "app.py")], env=env, cwd=tmp_path, stdout=output, stderr=subprocess.STDOUT
        )
    try:
        assert "PairCap" in wait_for_server(f"http://127.0.0.1:{port}/", server, log)
        assert listening_addresses(port) == {"127.0.0.1"}
        assert "GRADIO_SERVER_NAME=0.0.0.0 is ignored off a Space" in log.read_text()
    finally:
        server.terminate()
        server.wait(timeout=30)
