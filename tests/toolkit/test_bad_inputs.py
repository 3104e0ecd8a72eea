"""Bad input never costs a batch: one `paircap caption` run over good clips mixed with every kind of bad path or file,
and the same bad files in a knowledge-base build (errors.jsonl) and in training data loading.

The caption run is a subprocess under an address-space limit (RLIMIT_AS): the virtual peak of a run over the good
clips alone plus 1 GiB. In that run a 2-hour 8 kHz file is captioned too; decoding it whole would take ~1.6 GB more
(57.6 M samples, then 345.6 M at 48 kHz), so it only fits because just its three windows are decoded.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import socket
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest
import soundfile as sf
import soxr
from conftest import CHMOD_BLOCKS
from datasets import Dataset
from helpers import SHARED_DATA

from datasets_scripts.embed import embed_pairs
from datasets_scripts.readers import FEATURES
from modeling_paircap import audio_arrays_paircap
from modeling_paircap.audio_arrays_paircap import AudioInputError
from modeling_paircap.audio_windows_paircap import WindowedWaveform
from paircap.captioning import load_batch, walk_audio_inputs
from paircap.training.data import CaptionTrainingSet, PairCapCollator

REPO = Path(__file__).resolve().parents[2]
ESC50 = SHARED_DATA / "esc50_cc"
GIB = 2**30


# The run script: an optional address-space limit, then `paircap caption`; reports the peak virtual size on stderr.
RUNNER = textwrap.dedent(
    """
    import resource, sys
    limit = int(sys.argv[1])
    if limit:
        resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    from paircap.cli import main
    code = main(sys.argv[2:])
    peak = [line.split()[1] for line in open("/proc/self/status") if line.startswith("VmPeak:")]
    print(f"VMPEAK_KB {peak[0]}", file=sys.stderr)
    sys.exit(code)
    """
)


def _good_clips(folder: Path) -> list[Path]:
    """Real ESC-50 clips (5 s, 48 kHz mono) and versions of them at odd rates, stereo 44.1 kHz and 8 kHz; generated
    tones when the shared data folder is absent."""
    folder.mkdir(parents=True, exist_ok=True)
    sources = sorted(ESC50.glob("*.flac"))[:4]
    if sources:
        clips = [sf.read(path, dtype="float32")[0] for path in sources]
        paths = [Path(shutil.copy(path, folder / f"esc_{i}.flac")) for i, path in enumerate(sources)]
    else:  # pragma: no cover - the shared data sits beside the repo in the project workspace
        t = np.arange(5 * 48000) / 48000
        clips = [(0.3 * np.sin(2 * np.pi * f * t)).astype(np.float32) for f in (220.0, 440.0, 660.0, 880.0)]
        paths = []
        for i, clip in enumerate(clips):
            sf.write(folder / f"tone_{i}.flac", clip, 48000)
            paths.append(folder / f"tone_{i}.flac")
    for rate, clip, name in [(11127, clips[0], "odd_11127.wav"), (16001, clips[1], "odd_16001.wav"),
                             (8000, clips[3], "low_8000.wav")]:  # fmt: skip
        sf.write(folder / name, soxr.resample(clip, 48000, rate), rate, subtype="PCM_16")
        paths.append(folder / name)
    at_44k = soxr.resample(clips[2], 48000, 44100)
    sf.write(folder / "stereo_44100.wav", np.stack([at_44k, 0.5 * at_44k], axis=1), 44100, subtype="PCM_24")
    paths.append(folder / "stereo_44100.wav")
    return paths


def _long_file(path: Path, hours: float = 2.0, sr: int = 8000) -> Path:
    """A 2-hour 8 kHz mono WAV (115 MB), written a minute at a time."""
    minute = np.arange(60 * sr) / sr
    with sf.SoundFile(path, "w", sr, 1, subtype="PCM_16") as handle:
        for m in range(int(hours * 60)):
            handle.write((0.2 * np.sin(2 * np.pi * (300 + 5 * (m % 40)) * minute)).astype(np.float32))
    return path


def _bad_inputs(root: Path) -> tuple[dict[str, str], list[str], list[Path]]:
    """Write the bad entries into `root/corpus` (and a few beside it, passed by name). Returns the expected error
    fragment of each bad item (by path), the entries the walk must skip, and the bad items passed by name."""
    corpus = root / "corpus"
    corpus.mkdir(parents=True, exist_ok=True)
    errors: dict[str, str] = {}

    def expect(path: Path, fragment: str) -> None:
        errors[str(path)] = fragment

    os.mkfifo(corpus / "pipe.wav")
    expect(corpus / "pipe.wav", "is a FIFO (named pipe), not a regular file")
    (corpus / "dangling.wav").symlink_to(root / "gone.wav")
    expect(corpus / "dangling.wav", "broken symbolic link")
    (corpus / "loop.wav").symlink_to(corpus / "loop.wav")
    expect(corpus / "loop.wav", "symbolic link loop")
    tone = (0.3 * np.sin(np.arange(8 * 48000) / 7)).astype(np.float32)  # 8 s: one window, like the good clips
    sf.write(root / "whole.flac", tone, 48000)
    blob = (root / "whole.flac").read_bytes()
    (corpus / "truncated.flac").write_bytes(blob[:300])  # the header, and no decodable audio
    expect(corpus / "truncated.flac", "could not decode audio (soundfile: Error : flac decoder lost sync.)")
    (corpus / "empty.wav").write_bytes(b"")
    expect(corpus / "empty.wav", "could not decode audio: the file is empty (0 bytes)")
    (corpus / "notes.wav").write_text("this is a caption, not a RIFF header\n" * 20)
    expect(corpus / "notes.wav", "could not decode audio (soundfile: Format not recognised.; PyAV: Invalid data found")
    (corpus / "null.wav").symlink_to("/dev/null")
    expect(corpus / "null.wav", "is a character device, not a regular file")
    (corpus / "folder.wav").mkdir()  # a folder with an audio name is walked like any folder
    (corpus / "folder.wav" / "readme.txt").write_text("not audio")
    skipped = [str(corpus / "folder.wav" / "readme.txt")]
    sock = corpus / "sock.wav"
    if len(str(sock)) < 100:  # AF_UNIX addresses are short
        server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        server.bind(str(sock))
        server.close()  # the socket file stays
        expect(sock, "is a socket, not a regular file")
    if CHMOD_BLOCKS:
        sf.write(corpus / "locked.wav", tone[:48000], 48000)
        (corpus / "locked.wav").chmod(0)
        expect(corpus / "locked.wav", "permission denied (the file is not readable)")
        (corpus / "closed").mkdir()
        sf.write(corpus / "closed" / "inside.wav", tone[:48000], 48000)
        (corpus / "closed").chmod(0)
        expect(corpus / "closed", "cannot be listed: permission denied")
    (corpus / "notes.txt").write_text("not audio")
    (corpus / "doc.txt").symlink_to(root / "gone.txt")
    (corpus / "linked_dir").symlink_to(root / "outside", target_is_directory=True)
    (root / "outside").mkdir()
    sf.write(root / "outside" / "elsewhere.wav", tone[:48000], 48000)
    skipped += [str(corpus / name) for name in ("notes.txt", "doc.txt", "linked_dir")]
    named = [root / "named_dangling.wav", root / "named_loop.wav", root / "named_pipe.wav"]
    named[0].symlink_to(root / "nowhere.wav")
    expect(named[0], "broken symbolic link")
    named[1].symlink_to(root / "named_loop_b.wav")
    (root / "named_loop_b.wav").symlink_to(named[1])
    expect(named[1], "symbolic link loop")
    os.mkfifo(named[2])
    expect(named[2], "is a FIFO (named pipe)")
    return errors, skipped, named


def _caption(release: Path, inputs: list[Path], output: Path, limit: int, batch_size: int, timeout: int = 600):
    """`paircap caption` in a subprocess (optionally under RLIMIT_AS): (records, stderr, exit code, peak VM bytes)."""
    argv = ["caption", *map(str, inputs), "--model", str(release), "--batch-size", str(batch_size)]
    argv += ["--output", str(output)]
    argv += ["--max-new-tokens", "6", "--no-progress", "--verbose"]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(REPO)}
    result = subprocess.run(
        [sys.executable, "-c", RUNNER, str(limit), *argv], capture_output=True, text=True, env=env, timeout=timeout
    )
    records = [json.loads(line) for line in output.read_text().splitlines()] if output.exists() else []
    peaks = [int(line.split()[1]) * 1024 for line in result.stderr.splitlines() if line.startswith("VMPEAK_KB ")]
    return records, result.stderr, result.returncode, (peaks[0] if peaks else 0)


def test_one_caption_run_over_good_and_bad_inputs(tiny_release, tmp_path, request):
    folder, _, _ = tiny_release
    good = _good_clips(tmp_path / "corpus")
    reference_dir = tmp_path / "reference"
    shutil.copytree(tmp_path / "corpus", reference_dir)
    errors, skipped, named = _bad_inputs(tmp_path)
    if CHMOD_BLOCKS:  # let pytest clean up
        request.addfinalizer(lambda: (tmp_path / "corpus" / "closed").chmod(0o755))
    cut = tmp_path / "corpus" / "cut.flac"  # truncated, but most of it decodes: captioned from what is there
    blob = (tmp_path / "whole.flac").read_bytes()
    cut.write_bytes(blob[: int(len(blob) * 0.7)])
    long = _long_file(tmp_path / "long_2h.wav")

    inputs = [tmp_path / "corpus", *named, long]
    found = walk_audio_inputs(inputs)
    assert found.files[-1] == long
    # a batch size that leaves the long file (3 windows, a longer prompt) alone in the last batch, so it pads no
    # short clip's prompt: every other item has one window
    batch_size = next((b for b in (3, 4, 2, 5, 6) if (len(found.files) - 1) % b == 0), 1)

    # without the bad ones (nor the long file): the reference captions, and the memory baseline
    reference, stderr, code, reference_peak = _caption(
        folder, [reference_dir], tmp_path / "reference.jsonl", 0, batch_size
    )
    assert code == 0, stderr[-3000:]
    assert [Path(r["file"]).name for r in reference] == [p.name for p in sorted(good)]
    assert all("caption" in r for r in reference) and reference_peak > 0

    limit = reference_peak + GIB
    records, stderr, code, peak = _caption(folder, inputs, tmp_path / "captions.jsonl", limit, batch_size)
    assert code == 0, stderr[-3000:]
    assert "MemoryError" not in stderr and "Traceback" not in stderr, stderr[-3000:]
    assert 0 < peak <= limit

    # one line per item, in input order: the folder (sorted, walked recursively), then the named items
    expected_items = [str(p) for p in found.files]
    assert [r["file"] for r in records] == expected_items
    assert len(records) == len(good) + 1 + len(errors) + 1  # good clips, cut.flac, the bad items, the long file
    by_file = {r["file"]: r for r in records}
    for path, fragment in errors.items():
        record = by_file[path]
        assert "caption" not in record, path
        assert record["error"].startswith(f"{path}: ") and fragment in record["error"], record
    # good clips (odd rates included) captioned exactly as without the bad ones
    reference_captions = {Path(r["file"]).name: r["caption"] for r in reference}
    for path in good:
        assert by_file[str(path)]["caption"] == reference_captions[path.name], path.name
    assert isinstance(by_file[str(cut)]["caption"], str)
    assert f"{cut}: the header claims 384000 frames but" in stderr  # the truncation is reported, not hidden
    assert isinstance(by_file[str(long)]["caption"], str) and by_file[str(long)]["caption"]
    # --verbose lists what the walk skipped; the summary counts it
    for path in skipped:
        assert f"skipped {path}: " in stderr, path
    summary = next(line for line in stderr.splitlines() if line.startswith("captioned "))
    n_failed = len(errors)
    assert summary.startswith(f"captioned {len(good) + 2} files, {n_failed} failed, {len(skipped)} skipped"), summary


UNREADABLE_SKIP = (
    "running as root: chmod 000 does not stop root from reading, so the unreadable file and folder cases cannot be "
    "set up (the caption run above leaves them out too)"
)


@pytest.mark.skipif(not CHMOD_BLOCKS, reason=UNREADABLE_SKIP)
def test_unreadable_file_and_folder_become_error_lines(tiny_release, tmp_path):
    _, _, processor = tiny_release
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    tone = (0.3 * np.sin(np.arange(48000) / 7)).astype(np.float32)
    sf.write(corpus / "locked.wav", tone, 48000)
    (corpus / "locked.wav").chmod(0)
    (corpus / "closed").mkdir()
    sf.write(corpus / "closed" / "inside.wav", tone, 48000)
    (corpus / "closed").chmod(0)
    try:
        found = walk_audio_inputs([corpus, corpus / "closed" / "inside.wav"])
        expected = [corpus / "closed", corpus / "locked.wav", corpus / "closed" / "inside.wav"]
        assert found.files == expected and not found.skipped
        loaded = load_batch(processor, [str(path) for path in found.files])
        assert all(isinstance(item, AudioInputError) for item in loaded)
        assert "cannot be listed: permission denied" in str(loaded[0])
        assert "permission denied (the file is not readable)" in str(loaded[1])
        assert "permission denied (a folder on the path cannot be searched)" in str(loaded[2])
    finally:
        (corpus / "closed").chmod(0o755)
        (corpus / "locked.wav").chmod(0o644)


def test_a_loader_that_raises_costs_only_its_file(tmp_path):
    """`load_batch` (the captioner's loader) turns any exception of one file into that file's error."""
    good = tmp_path / "good.wav"
    sf.write(good, (0.3 * np.sin(np.arange(48000) / 5)).astype(np.float32), 48000)

    class Raising:
        def load_audio(self, paths):
            if len(paths) > 1 or paths[0].endswith("bad.wav"):
                raise RuntimeError("decoder crashed")
            return [np.zeros(10, np.float32)]

    loaded = load_batch(Raising(), [str(good), str(tmp_path / "bad.wav")])
    assert isinstance(loaded[0], np.ndarray)
    assert loaded[1] == f"{tmp_path / 'bad.wav'}: could not load audio (RuntimeError: decoder crashed)"


# ---- the same bad inputs in a KB build and in training ----------------------------------------------------------


def _pair(pair_id: str, path: Path, caption: str, duration: float) -> dict:
    return dict(pair_id=pair_id, audio_id=path.stem, audio={"path": str(path), "bytes": None}, caption=caption,
                source="test", split="train", duration=duration)  # fmt: skip


def _failing_rows(tmp_path: Path, monkeypatch) -> tuple[list[dict], dict[str, str]]:
    """Rows over good clips (odd rates, a 45 s clip) and bad ones, including a clip whose resampling fails (soxr is
    made to raise for 22050 Hz input) and one whose decoder fails mid-read. Returns the rows and the expected
    error fragment by file."""
    good = _good_clips(tmp_path / "clips")
    sf.write(tmp_path / "long.wav", (0.2 * np.sin(np.arange(45 * 16000) / 3)).astype(np.float32), 16000)
    sf.write(tmp_path / "resample_fails.wav", (0.2 * np.sin(np.arange(22050) / 3)).astype(np.float32), 22050)
    os.mkfifo(tmp_path / "pipe.wav")
    (tmp_path / "dangling.wav").symlink_to(tmp_path / "gone.wav")
    (tmp_path / "notes.wav").write_text("not audio\n" * 20)
    real = audio_arrays_paircap._soxr_resample

    def flaky(x, orig_sr, target_sr):
        if orig_sr == 22050:
            raise RuntimeError("soxr: out of coefficients")
        return real(x, orig_sr, target_sr)

    monkeypatch.setattr(audio_arrays_paircap, "_soxr_resample", flaky)
    bad = {
        str(tmp_path / "resample_fails.wav"): "could not resample 22050 Hz -> 48000 Hz (RuntimeError",
        str(tmp_path / "pipe.wav"): "FIFO",
        str(tmp_path / "dangling.wav"): "broken symbolic link",
        str(tmp_path / "notes.wav"): "could not decode audio",
    }
    paths = [*good[:2], *map(Path, bad), *good[2:], tmp_path / "long.wav"]
    rows = [_pair(f"p/{i}", path, f"caption {i}.", 5.0) for i, path in enumerate(paths)]
    return rows, bad


def test_kb_build_logs_each_bad_clip_and_keeps_the_rest(tiny_release, tmp_path, monkeypatch):
    _, model, processor = tiny_release
    rows, bad = _failing_rows(tmp_path, monkeypatch)
    pairs = Dataset(pa.Table.from_pylist(rows, schema=FEATURES.arrow_schema))
    output = tmp_path / "kb"
    embedded = embed_pairs(pairs, model, processor, output, shard_size=4, batch_size=3, num_workers=0, progress=False)
    logged = [json.loads(line) for line in (output / "errors.jsonl").read_text().splitlines()]
    assert [error["file"] for error in logged] == list(bad)  # one line per bad clip, in input order
    for error in logged:
        assert bad[error["file"]] in error["error"], error
    kept = [row["pair_id"] for row in rows if row["audio"]["path"] not in bad]
    assert embedded.rows["pair_id"] == kept
    long_row = embedded.rows.to_list()[-1]
    assert long_row["is_long"]  # 45 s: three windows read, the length flag set


def test_training_loader_skips_each_bad_clip_with_a_warning(tiny_release, tmp_path, monkeypatch):
    _, _, processor = tiny_release
    rows, bad = _failing_rows(tmp_path, monkeypatch)
    dataset = CaptionTrainingSet(Dataset(pa.Table.from_pylist(rows, schema=FEATURES.arrow_schema)), processor)
    samples = []
    for index, row in enumerate(rows):
        path = row["audio"]["path"]
        if path in bad:
            with pytest.warns(UserWarning, match=re.escape(f"{path}: ") + ".*" + re.escape(bad[path])):
                assert dataset[index] is None
        else:
            samples.append(dataset[index])
            assert samples[-1] is not None
    assert isinstance(samples[-1]["waveform"], WindowedWaveform)  # the 45 s clip: only its windows
    batch = PairCapCollator(processor)(samples)
    assert batch["input_ids"].shape[0] == len(samples)
    assert int(batch["audio_window_counts"].sum()) == len(samples) - 1 + 3


def test_every_bad_item_is_an_audio_input_error(tiny_release, tmp_path, monkeypatch):
    """What every consumer relies on: the processor's loader gives an AudioInputError, never raises, for each."""
    _, _, processor = tiny_release
    rows, bad = _failing_rows(tmp_path, monkeypatch)
    loaded = processor.load_audio([row["audio"]["path"] for row in rows])
    for row, item in zip(rows, loaded, strict=True):
        path = row["audio"]["path"]
        assert isinstance(item, AudioInputError) == (path in bad), path
        if path in bad:
            assert item.item == path and bad[path] in str(item)
