"""The web demo on the tiny release and a KB of real Clotho clips: its HTTP API, and the page in a real browser
(Debian's chromium and chromium-driver through selenium): upload a real ESC-50 clip, caption it, read both captions
and the neighbour table, play a neighbour's audio, move W and see the table re-ranked without a new pass 1.

Random tiny weights caption nonsense: the tests check structure and scores, not words."""

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from urllib.parse import urljoin

import httpx
import pyarrow as pa
import pytest
from conftest import REPO
from gradio_client import Client, handle_file
from gradio_client.exceptions import AppError
from helpers import free_port
from selenium import webdriver
from selenium.common.exceptions import TimeoutException, WebDriverException
from selenium.webdriver.common.by import By
from selenium.webdriver.common.keys import Keys
from selenium.webdriver.support.ui import WebDriverWait

from paircap.captioning import caption_waveforms
from paircap.cli import main
from paircap.demo import HEADERS, NOT_AVAILABLE, TEXT_ONLY, DemoEngine, build_blocks, launch_demo
from paircap.demo_audio import NEIGHBOUR_ROUTE

INSTALL = "install it with: apt-get install -y chromium chromium-driver && pip install selenium"
MODE = "generative_pair2pair"
TOP_K = 4
CELLS = """
const rows = {};
for (const cell of document.querySelectorAll('#neighbours [role=gridcell][data-row]')) {
  (rows[cell.dataset.row] ??= [])[Number(cell.dataset.col)] = cell.innerText.trim();
}
return Object.keys(rows).sort((a, b) => a - b).map(row => rows[row]);
"""
PLAYERS = """
return Array.from(document.querySelectorAll('#neighbours [role=gridcell] audio'))
  .map(audio => [audio.getAttribute('src'), audio.readyState, audio.duration]);
"""


@pytest.fixture(scope="module")
def demo_app(tiny_release, real_kb, shared_data):
    """(engine, url): the demo served on 127.0.0.1 in this process. The KB records its clips' absolute paths (links
    into the real Clotho clips): they play only with the opt-in `absolute` root, inside the folder it names."""
    folder, _, _ = tiny_release
    roots = {"absolute": shared_data / "clotho_eval7"}
    engine = DemoEngine.from_release(str(folder), str(real_kb), roots, device="cpu", max_new_tokens=8)
    demo = build_blocks(engine)
    url = launch_demo(demo, "127.0.0.1", free_port(), block=False)
    yield engine, url
    demo.close()


@pytest.fixture(scope="module")
def esc50_clip(shared_data) -> Path:
    return sorted((shared_data / "esc50_cc").glob("*.flac"))[0]


def check_ranking(rows: list, weight: float, top_k: int) -> None:
    """k rows of float scores, sorted by S, and S = W·S_A + (1−W)·S_T (each shown to 4 decimals)."""
    assert len(rows) == top_k
    scores = [[float(value) for value in row[1:4]] for row in rows]
    assert [s for s, _, _ in scores] == sorted((s for s, _, _ in scores), reverse=True)
    for s, s_a, s_t in scores:
        assert s == pytest.approx(weight * s_a + (1 - weight) * s_t, abs=2e-4)


def audio_bytes(engine: DemoEngine, url: str, source: str) -> bytes:
    """GET a player's source from the app: a token of the neighbour route that serves the KB clip's own file."""
    response = httpx.get(urljoin(url, source), timeout=30)
    assert response.status_code == 200, response.text[:300]
    assert source.startswith(NEIGHBOUR_ROUTE)
    path, media_type = engine.audio.file(source.removeprefix(NEIGHBOUR_ROUTE))
    assert response.content == path.read_bytes() and response.headers["content-type"] == media_type
    return response.content


def test_the_http_api_captions_reranks_and_recaptions_without_a_new_pass_1(demo_app, esc50_clip, real_kb):
    engine, url = demo_app
    client = Client(url, verbose=False)
    first, second = engine.pass_one_runs, engine.pass_two_runs
    zero_shot, caption, table, status = client.predict(
        handle_file(str(esc50_clip)), MODE, 0.5, TOP_K, api_name="/caption"
    )
    assert (engine.pass_one_runs, engine.pass_two_runs) == (first + 1, second + 1)
    assert isinstance(zero_shot, str) and zero_shot and isinstance(caption, str) and caption
    assert table["headers"] == HEADERS and "Pass 2 captioned" in status
    assert all(isinstance(value, float) for row in table["data"] for value in row[1:4])
    check_ranking(table["data"], 0.5, TOP_K)
    players = [row[5] for row in table["data"] if row[5].startswith("<audio")]
    assert players, table["data"]
    source = players[0].split('src="')[1].split('"')[0]
    assert audio_bytes(engine, url, source)[:4] == b"fLaC"
    clip = engine.audio.file(source.removeprefix(NEIGHBOUR_ROUTE))[0]
    for path in (clip, real_kb / "paircap_kb.json"):  # Gradio's own file route serves no KB file, not even the clip
        assert httpx.get(urljoin(url, "gradio_api/file=" + str(path))).status_code == 403

    table, status = client.predict(MODE, 0.0, TOP_K, api_name="/rerank")
    check_ranking(table["data"], 0.0, TOP_K)
    assert "pass 1 did not run again" in status
    assert (engine.pass_one_runs, engine.pass_two_runs) == (first + 1, second + 1)
    recaption, retable, _ = client.predict(MODE, 0.0, TOP_K, api_name="/recaption")
    assert isinstance(recaption, str) and recaption and retable["data"] == table["data"]
    assert (engine.pass_one_runs, engine.pass_two_runs) == (first + 1, second + 2)
    table, status = client.predict("none", 0.0, TOP_K, api_name="/rerank")
    assert table["headers"] == HEADERS and not any(table["data"]) and "zero-shot caption" in status
    assert client.predict("none", 0.0, TOP_K, api_name="/recaption")[0] == zero_shot


def test_the_demo_splits_generative_pair2pair_into_its_two_passes_exactly(demo_app, esc50_clip):
    """Pass 1, the kept embeddings and pass 2 alone give generate's own captions and neighbours."""
    engine, _ = demo_app
    waveform = engine.load(str(esc50_clip))
    whole = caption_waveforms(
        engine.model, engine.processor, [waveform], retriever=engine.retriever, retrieval_mode=MODE, fusion_weight=0.3,
        top_k=3, max_pairs_per_clip=1, **engine.generation,
    )[0]  # fmt: skip
    state = engine.first_pass(waveform)
    caption, pairs, candidates = engine.second_pass(state, MODE, 0.3, 3)
    assert candidates == []  # no rescoring
    assert (state.zero_shot, caption) == (whole["zero_shot_caption"], whole["caption"])
    assert pairs == whole["retrieved"] == engine.neighbours(state, MODE, 0.3, 3)


def test_an_unreadable_upload_gets_the_loaders_reason(demo_app, tmp_path):
    engine, url = demo_app
    (tmp_path / "broken.wav").write_bytes(b"RIFF\x00\x00\x00\x00WAVEjunk")
    runs = engine.pass_one_runs
    with pytest.raises(AppError, match="broken.wav"):
        Client(url, verbose=False).predict(handle_file(str(tmp_path / "broken.wav")), MODE, 0.5, 2, api_name="/caption")
    assert engine.pass_one_runs == runs


def test_each_neighbour_plays_where_its_audio_is_reachable_and_says_so_where_not(demo_app, corpora, shared_data,
                                                                                monkeypatch):  # fmt: skip
    engine, _ = demo_app
    kb = engine.kb
    text_only, with_audio = int((kb.clip_index < 0).nonzero()[0][0]), int((kb.clip_index >= 0).nonzero()[0][0])
    clip = int(kb.clip_index[with_audio])
    assert engine.audio_cell(text_only) == TEXT_ONLY
    assert engine.audio_cell(with_audio) == clip  # served through a token of the table's session
    assert engine.table([{"row": with_audio, "score": 1.0, "audio_score": 1.0, "text_score": 1.0, "caption": "c",
                          "audio_id": "a"}], "session")[0][5].startswith(
        f'<audio controls preload="metadata" src="{NEIGHBOUR_ROUTE}'
    )  # fmt: skip
    monkeypatch.setattr(kb, "audio_roots", {})
    assert "--audio-root absolute=DIR" in engine.audio_cell(with_audio)  # absolute paths: only when opted in
    # the clips recorded under a root name, as a KB built with `--root clotho=DIR` records them
    clips = kb.clips.set_column(
        kb.clips.schema.get_field_index("audio_root"), "audio_root", pa.array(["clotho"] * kb.clips.num_rows)
    )
    names = [Path(path).resolve().name for path in clips.column("audio_path").to_pylist()]
    monkeypatch.setattr(
        kb, "clips", clips.set_column(clips.schema.get_field_index("audio_path"), "audio_path", [names])
    )
    unmapped = engine.audio_cell(with_audio)
    assert NOT_AVAILABLE in unmapped and "--audio-root clotho=DIR" in unmapped
    monkeypatch.setattr(kb, "audio_roots", {"clotho": shared_data / "clotho_eval7"})
    assert engine.audio_cell(with_audio) == clip
    monkeypatch.setattr(kb, "audio_roots", {"clotho": corpora["clotho"]})  # the wrong folder: no such file
    assert NOT_AVAILABLE in engine.audio_cell(with_audio) and "no such file" in engine.audio_cell(with_audio)
    monkeypatch.setattr(kb, "audio_roots", {"clotho": shared_data})  # a parent folder: still inside, no such file
    assert "no such file" in engine.audio_cell(with_audio)
    for url, cell in [
        ("https://freesound.org/s/17/", '<a href="https://freesound.org/s/17/"'),
        ("https://example.org/clip.flac", '<audio controls preload="metadata" src="https://example.org/clip.flac">'),
    ]:
        urls = kb.clips.set_column(kb.clips.schema.get_field_index("audio_path"), "audio_path", [[url] * len(names)])
        monkeypatch.setattr(
            kb, "clips", urls.set_column(urls.schema.get_field_index("audio_root"), "audio_root", [[""] * len(names)])
        )
        assert engine.audio_cell(with_audio).startswith(cell)


@pytest.mark.parametrize("trust", [False, True])
def test_the_demo_command_serves_the_page(tiny_release, real_kb, monkeypatch, trust):
    """`paircap demo --model --kb --port`, in this process: the launch is made non-blocking to read the page. The
    installed classes run the release, its own code only with `--trust-remote-code`."""
    import paircap.demo

    folder, _, _ = tiny_release
    launched, real_launch = [], paircap.demo.launch_demo

    def launch(demo, host, port, share):
        launched.append((demo, host, port, share, real_launch(demo, host, port, share, block=False)))

    monkeypatch.setattr(paircap.demo, "launch_demo", launch)
    port = free_port()
    argv = ["demo", "--model", str(folder), "--kb", str(real_kb), "--port", str(port), "--max-new-tokens", "4"]
    assert main(argv + ["--trust-remote-code"] * trust) == 0
    demo, host, _, share, url = launched[0]
    try:
        assert (host, share, url) == ("127.0.0.1", False, f"http://127.0.0.1:{port}/")
        assert "PairCap" in httpx.get(url, timeout=30).text
        engine = demo.engine
        module = type(engine.model).__module__
        assert module.startswith("transformers_modules.") if trust else module == "modeling_paircap.modeling_paircap"
    finally:
        demo.close()


def test_the_space_entry_point_serves_the_page_as_it_is(tiny_release, real_kb, tmp_path):
    """`python app.py` in a process, its settings from the environment as on a Space."""
    folder, _, _ = tiny_release
    port = free_port()
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    env.update(PAIRCAP_MODEL=str(folder), PAIRCAP_KB=str(real_kb), GRADIO_SERVER_NAME="127.0.0.1")
    env["GRADIO_SERVER_PORT"] = str(port)
    log = tmp_path / "server.log"
    with open(log, "w") as output:
        server = subprocess.Popen(
            [sys.executable, str(REPO / "app.py")], env=env, cwd=tmp_path, stdout=output, stderr=subprocess.STDOUT
        )
    try:
        page = wait_for_server(f"http://127.0.0.1:{port}/", server, log)
        assert "PairCap" in page
    finally:
        server.terminate()
        server.wait(timeout=30)


def wait_for_server(url: str, server: subprocess.Popen, log: Path, timeout: float = 120) -> str:
    """The page's HTML once the server answers; the server's output if it exits or never answers."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if server.poll() is not None:
            pytest.fail(f"the demo exited with status {server.returncode}:\n{log.read_text()[-3000:]}")
        try:
            response = httpx.get(url, timeout=5)
        except httpx.TransportError:
            time.sleep(0.5)
            continue
        assert response.status_code == 200
        return response.text
    pytest.fail(f"the demo did not answer on {url} within {timeout} s:\n{log.read_text()[-3000:]}")


def start_chromium() -> webdriver.Chrome:
    """Headless chromium through Debian's chromedriver; a failure to start fails the test, naming the install."""
    driver_path = shutil.which("chromedriver")
    if driver_path is None:
        pytest.fail(f"chromedriver is not on PATH: the browser test needs Debian's chromium; {INSTALL}")
    options = webdriver.ChromeOptions()
    for argument in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu"):
        options.add_argument(argument)
    options.add_argument("--window-size=1400,1300")
    if browser := shutil.which("chromium"):
        options.binary_location = browser
    try:
        return webdriver.Chrome(service=webdriver.ChromeService(driver_path), options=options)
    except WebDriverException as error:
        pytest.fail(f"headless chromium could not start ({error.msg}); {INSTALL}")


def wait_for(driver, condition, what: str, timeout: float = 60):
    try:
        return WebDriverWait(driver, timeout, poll_frequency=0.2).until(lambda _: condition())
    except TimeoutException:
        pytest.fail(f"the page never showed {what} within {timeout} s")


def value_of(driver, selector: str) -> str:
    return driver.find_element(By.CSS_SELECTOR, selector).get_attribute("value")


def test_the_page_in_a_real_browser(demo_app, esc50_clip, tmp_path):
    engine, url = demo_app
    driver = start_chromium()
    try:
        driver.get(url)
        wait_for(driver, lambda: driver.find_elements(By.CSS_SELECTOR, "#clip input[type=file]"), "the upload")
        driver.find_element(By.CSS_SELECTOR, "#clip input[type=file]").send_keys(str(esc50_clip))
        wait_for(driver, lambda: "0:05" in driver.find_element(By.ID, "clip").text, "the uploaded 5 s clip")
        first = engine.pass_one_runs
        driver.find_element(By.ID, "caption-button").click()
        wait_for(driver, lambda: value_of(driver, "#final textarea"), "the final caption")
        zero_shot = value_of(driver, "#zero-shot textarea")
        assert zero_shot and engine.pass_one_runs == first + 1
        top_k = engine.default_top_k
        rows = wait_for(driver, lambda: len(driver.execute_script(CELLS)) == top_k and driver.execute_script(CELLS),
                        "the neighbour table")  # fmt: skip
        assert [len(row) for row in rows] == [len(HEADERS)] * top_k
        check_ranking(rows, engine.model.config.fusion_weight, top_k)

        players = wait_for(
            driver, lambda: [p for p in driver.execute_script(PLAYERS) if p[1] >= 1 and p[2] > 0], "a loaded player"
        )
        audio_bytes(engine, url, players[0][0])
        assert driver.save_screenshot(str(tmp_path / "demo.png")) and (tmp_path / "demo.png").stat().st_size > 10_000

        weight = driver.find_element(By.CSS_SELECTOR, "#weight input[type=number]")
        weight.clear()
        weight.send_keys("0", Keys.ENTER)
        wait_for(driver, lambda: "W = 0.00" in driver.find_element(By.ID, "status").text, "the re-ranked table")
        rows = driver.execute_script(CELLS)
        check_ranking(rows, 0.0, top_k)
        assert all(float(row[2]) == 0 for row in rows if row[5] == TEXT_ONLY)  # a text-only entry: no audio half
        assert value_of(driver, "#zero-shot textarea") == zero_shot and engine.pass_one_runs == first + 1
        driver.save_screenshot(str(tmp_path / "demo-reranked.png"))
    finally:
        driver.quit()
