"""`paircap caption --output F` never empties or truncates a complete F before its replacement is whole, and `--resume`
finishes a stopped run without captioning its files again: a real `kill -9` mid-run, an exception after N items, and
the writer's own rules (unfinished last line, error lines, malformed lines)."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

import paircap.captioning
import paircap.releases
from paircap.caption_output import CaptionOutput, CaptionOutputError, partial_path
from paircap.cli import main

REPO = Path(__file__).resolve().parents[2]
CAPTION_WAVEFORMS = paircap.captioning.caption_waveforms
# A child `paircap caption` whose captioning stalls after its first two batches, until it is killed.
STALLING_CHILD = """
import sys, time
import paircap.captioning as captioning
real, calls = captioning.caption_waveforms, []
def stalling(*args, **kwargs):
    calls.append(1)
    if len(calls) > 2:
        time.sleep(600)
    return real(*args, **kwargs)
captioning.caption_waveforms = stalling
from paircap.cli import main
sys.exit(main(sys.argv[1:]))
"""


@pytest.fixture
def clips(tmp_path) -> list[Path]:
    """Six tones of different lengths (so length-grouped batches are not in input order)."""
    folder = tmp_path / "clips"
    folder.mkdir()
    paths = []
    for i, seconds in enumerate([3.0, 1.0, 2.5, 1.5, 2.0, 0.5]):
        t = np.arange(int(seconds * 16_000)) / 16_000
        path = folder / f"clip{i}.wav"
        sf.write(path, (0.2 * np.sin(2 * np.pi * (200 + 70 * i) * t)).astype(np.float32), 16_000)
        paths.append(path)
    return paths


def caption_argv(release: Path, clips: list[Path], output: Path, *extra: str) -> list[str]:
    return ["caption", str(clips[0].parent), "--model", str(release), "--output", str(output), "--batch-size", "1",
            "--max-new-tokens", "4", "--no-progress", *extra]  # fmt: skip


def records(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def count_captioned(monkeypatch, fail_after: int | None = None) -> list[int]:
    """Count the batches captioned (one file each at batch size 1); raise after `fail_after` of them."""
    calls = []

    def counting(*args, **kwargs):
        if fail_after is not None and len(calls) == fail_after:
            raise RuntimeError("injected failure")
        calls.append(1)
        return CAPTION_WAVEFORMS(*args, **kwargs)

    monkeypatch.setattr(paircap.captioning, "caption_waveforms", counting)
    return calls


def test_an_exception_mid_run_leaves_the_old_file_and_resume_finishes(tiny_release, clips, tmp_path, monkeypatch):
    release = tiny_release[0]
    output = tmp_path / "captions.jsonl"
    assert main(caption_argv(release, clips, output)) == 0
    complete = output.read_bytes()
    assert [Path(r["file"]).name for r in records(output)] == [p.name for p in clips]  # input order

    count_captioned(monkeypatch, fail_after=4)
    with pytest.raises(RuntimeError, match="injected failure"):
        main(caption_argv(release, clips, output))
    assert output.read_bytes() == complete  # before: 0 bytes, the file was emptied before any work
    assert len(records(partial_path(output))) == 4  # each batch's line is on disk as soon as it is done

    calls = count_captioned(monkeypatch)
    assert main(caption_argv(release, clips, output, "--resume")) == 0
    assert calls == []  # every file has its caption in F already
    assert [Path(r["file"]).name for r in records(output)] == [p.name for p in clips]

    count_captioned(monkeypatch, fail_after=4)
    output.unlink()  # a first run, stopped after 4 files
    with pytest.raises(RuntimeError, match="injected failure"):
        main(caption_argv(release, clips, output))
    assert not output.exists() and len(records(partial_path(output))) == 4
    calls = count_captioned(monkeypatch)
    assert main(caption_argv(release, clips, output, "--resume")) == 0
    assert len(calls) == 2  # only the two files the stopped run had not captioned
    assert [Path(r["file"]).name for r in records(output)] == [p.name for p in clips]
    assert not partial_path(output).exists()


def test_kill_9_mid_run_leaves_the_old_file_and_resume_finishes(tiny_release, clips, tmp_path, monkeypatch):
    release = tiny_release[0]
    output = tmp_path / "captions.jsonl"
    output.write_text('{"file": "an earlier, complete run", "caption": "kept until the new file is whole"}\n')
    before = output.read_bytes()
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    child = subprocess.Popen(
        [sys.executable, "-c", STALLING_CHILD, *caption_argv(release, clips, output)],
        cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    partial = partial_path(output)
    deadline = time.monotonic() + 300
    while not (partial.is_file() and partial.read_text().count("\n") >= 2):
        assert child.poll() is None and time.monotonic() < deadline, "the child ended before its partial file had 2"
        time.sleep(0.05)
    child.send_signal(signal.SIGKILL)
    assert child.wait(timeout=60) == -signal.SIGKILL
    assert output.read_bytes() == before
    assert len(records(partial)) == 2

    calls = count_captioned(monkeypatch)
    assert main(caption_argv(release, clips, output, "--resume")) == 0
    assert len(calls) == 4
    finished = records(output)
    assert [Path(r["file"]).name for r in finished] == [p.name for p in clips]
    assert all(isinstance(r["caption"], str) for r in finished)


def test_resume_of_a_complete_file_loads_no_model(tiny_release, clips, tmp_path, monkeypatch, capsys):
    release = tiny_release[0]
    output = tmp_path / "captions.jsonl"
    assert main(caption_argv(release, clips, output)) == 0
    complete = output.read_bytes()
    monkeypatch.setattr(paircap.releases, "load_release", lambda *args: pytest.fail("loaded the model"))
    assert main(caption_argv(release, clips, output, "--resume")) == 0
    assert output.read_bytes() == complete
    assert "captioned 0 files, 0 failed, 0 skipped, 6 kept from" in capsys.readouterr().err


def test_output_problems_are_one_line_before_the_model_loads(tiny_release, clips, tmp_path, monkeypatch, capsys):
    release = tiny_release[0]
    monkeypatch.setattr(paircap.releases, "load_release", lambda *args: pytest.fail("loaded the model"))
    capsys.readouterr()
    assert main(["caption", str(clips[0]), "--model", str(release), "--resume"]) == 2
    assert (
        capsys.readouterr().err == "paircap caption: error: --resume continues an --output file: pass --output FILE\n"
    )
    missing = tmp_path / "no" / "captions.jsonl"
    assert main(caption_argv(release, clips, missing)) == 2
    assert capsys.readouterr().err == (
        f"paircap caption: error: --output {missing}: cannot write there (No such file or directory)\n"
    )
    broken = tmp_path / "broken.jsonl"
    broken.write_text('{"file": "a.wav", "caption": "fine"}\nnot json\n')
    assert main(caption_argv(release, clips, broken, "--resume")) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"paircap caption: error: {broken}:2: not a JSON line") and err.count("\n") == 1
    assert broken.read_text().endswith("not json\n")


def test_writer_keeps_captions_retries_errors_and_drops_an_unfinished_line(tmp_path):
    files = [tmp_path / f"{name}.wav" for name in "abcde"]
    output = tmp_path / "out.jsonl"
    line = {name: json.dumps({"file": str(tmp_path / f"{name}.wav"), "caption": name}) + "\n" for name in "abcde"}
    output.write_text(line["a"] + line["b"] + json.dumps({"file": str(files[2]), "error": "unreadable"}) + "\n")
    partial_path(output).write_text(line["d"] + line["e"][:-5])  # e: cut short by a kill
    with CaptionOutput(output, files, resume=True) as writer:
        assert writer.kept == 3 and writer.todo == [files[2], files[4]]
        assert writer.write([{"file": str(files[4]), "caption": "e"}, {"file": str(files[2]), "caption": "c"}]) == (
            2, 0,
        )  # fmt: skip
        writer.finish()
    assert output.read_text() == "".join(line[name] for name in "abcde")
    assert not partial_path(output).exists()

    with CaptionOutput(output, files) as writer:  # no --resume: every file again; leaving without finish keeps F
        assert writer.kept == 0 and writer.todo == files
        writer.write([{"file": str(files[0]), "caption": "new"}])
    assert output.read_text() == "".join(line[name] for name in "abcde")
    assert records(partial_path(output)) == [{"file": str(files[0]), "caption": "new"}]

    (tmp_path / "list.jsonl").write_text('["not", "a", "record"]\n')
    with pytest.raises(CaptionOutputError, match=r"list\.jsonl:1: not a caption record"):
        CaptionOutput(tmp_path / "list.jsonl", files, resume=True)
