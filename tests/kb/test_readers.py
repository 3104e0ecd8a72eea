"""Tests for datasets_scripts/readers/.

Most tests build corpus folders in the ORIGINAL distribution layouts (Clotho v2, AudioCaps,
WavCaps, Auto-ACD) in a temporary folder from the real data in ``../shared/data`` (real caption
CSVs, 7 real Clotho evaluation clips, real ESC-50 clips) and skip when that folder is absent. A few
tests use only synthetic audio and always run.
"""

from __future__ import annotations

import contextlib
import csv
import json
import re
import shutil
import time
import warnings
from collections import defaultdict
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from datasets import Audio, Dataset
from helpers import SHARED_DATA

from datasets_scripts.readers import (
    FEATURES,
    ReaderReport,
    ReaderWarning,
    read_audiocaps,
    read_autoacd,
    read_clotho,
    read_corpus,
    read_wavcaps,
)

SHARED = SHARED_DATA
CAPTIONS = SHARED / "captions"
CLOTHO7 = SHARED / "clotho_eval7"
ESC50 = SHARED / "esc50_cc"

needs_data = pytest.mark.skipif(
    not (CAPTIONS.is_dir() and CLOTHO7.is_dir() and ESC50.is_dir()),
    reason=f"real test data not found at {SHARED} (captions/, clotho_eval7/, esc50_cc/); it is not part of the repo",
)

WAVCAPS_ZIP_INNER = "mnt/fast/nobackup/scratch4weeks/xm00178/WavCaps/data/waveforms"


# ------------------------------------------------------------------------------ fixture helpers


def read_csv_rows(path: Path) -> tuple[list[str], list[dict[str, str]]]:
    with open(path, encoding="utf-8-sig", newline="") as handle:
        reader = csv.DictReader(handle)
        return list(reader.fieldnames or []), list(reader)


def write_csv_rows(path: Path, fieldnames: list[str], rows: list[dict[str, str]]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", encoding="utf-8", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=fieldnames)
        writer.writeheader()
        writer.writerows(rows)


def convert_audio(src: Path, dst: Path, fmt: str | None = None) -> float:
    """Write real audio ``src`` to ``dst`` (format from the extension); return its duration."""
    data, sr = sf.read(src, dtype="int16")
    dst.parent.mkdir(parents=True, exist_ok=True)
    sf.write(dst, data, sr, subtype="PCM_16", format=fmt)
    return len(data) / sr


def concat_audio(sources: list[Path], dst: Path) -> float:
    parts = [sf.read(p, dtype="int16") for p in sources]
    sr = parts[0][1]
    assert all(p[1] == sr for p in parts)
    data = np.concatenate([p[0] for p in parts])
    dst.parent.mkdir(parents=True, exist_ok=True)
    sf.write(dst, data, sr, subtype="PCM_16")
    return len(data) / sr


def esc50_clips(n: int) -> list[Path]:
    clips = sorted(ESC50.glob("*.flac"))
    assert len(clips) >= n
    return clips[:n]


def clotho_manifest() -> list[dict]:
    return json.loads((CLOTHO7 / "manifest.json").read_text(encoding="utf-8"))


def report_of(ds: Dataset) -> ReaderReport:
    rep = ReaderReport.from_dataset(ds)
    assert rep.rows_read == rep.rows_kept + rep.dropped, rep
    assert rep.rows_kept == len(ds)
    return rep


def col(ds: Dataset, name: str) -> list:
    """A whole column as a list (``ds[name]`` is a lazy Column in datasets >= 4)."""
    return ds.data.column(name).to_pylist()


def rows(ds: Dataset) -> list[dict]:
    return [ds[i] for i in range(len(ds))]


@contextlib.contextmanager
def no_reader_warnings():
    """Turn any ReaderWarning into an error."""
    with warnings.catch_warnings():
        warnings.simplefilter("error", ReaderWarning)
        yield


# ----------------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="session")
def clotho_root(tmp_path_factory) -> Path:
    """Clotho v2 layout: clotho_captions_evaluation.csv + evaluation/<file_name>.wav.

    The CSV holds the real rows of the 7 real clips plus the first 2 real rows of the evaluation CSV,
    whose audio is absent.
    """
    root = tmp_path_factory.mktemp("clotho_v2")
    fieldnames, all_rows = read_csv_rows(CAPTIONS / "clotho_evaluation.csv")
    by_name = {r["file_name"]: r for r in all_rows}
    names = [m["source_wav"] for m in clotho_manifest()]
    extra = [r for r in all_rows if r["file_name"] not in names][:2]
    write_csv_rows(root / "clotho_captions_evaluation.csv", fieldnames, [by_name[n] for n in names] + extra)
    for m in clotho_manifest():
        convert_audio(CLOTHO7 / m["file"], root / "evaluation" / m["source_wav"])
    return root


@pytest.fixture(scope="session")
def audiocaps_root(tmp_path_factory) -> dict:
    """AudioCaps layout: {train,val,test}.csv (full real files) + val/<clip> for 3 val clips."""
    root = tmp_path_factory.mktemp("audiocaps")
    for split in ("train", "val", "test"):
        shutil.copyfile(CAPTIONS / f"audiocaps_{split}.csv", root / f"{split}.csv")
    _, val_rows = read_csv_rows(root / "val.csv")
    clips: list[tuple[str, str]] = []
    for r in val_rows:
        if r["youtube_id"] not in [c[0] for c in clips]:
            clips.append((r["youtube_id"], r["start_time"]))
        if len(clips) == 3:
            break
    names = [f"{clips[0][0]}.wav", f"Y{clips[1][0]}.wav", f"{clips[2][0]}_{clips[2][1]}.wav"]
    for src, name in zip(esc50_clips(3), names, strict=True):
        convert_audio(src, root / "val" / name)
    return {"root": root, "clips": [c[0] for c in clips], "val_rows": val_rows}


@pytest.fixture(scope="session")
def wavcaps_root(tmp_path_factory) -> dict:
    """WavCaps release layout: json_files/<subset>/<name>.json, json_files/blacklist/..., flac audio.

    AudioSet_SL audio is where the release's zip archives extract it, FreeSound audio under
    Audio/FreeSound/ (aac-datasets layout), SoundBible under waveforms/SoundBible_flac/; the BBC
    clip has no audio.
    """
    root = tmp_path_factory.mktemp("WavCaps")
    jdir = root / "json_files"
    esc = esc50_clips(16)
    _, ac_test = read_csv_rows(CAPTIONS / "audiocaps_test.csv")
    _, ac_train = read_csv_rows(CAPTIONS / "audiocaps_train.csv")
    as_ids = {
        "blacklisted": ac_test[0]["youtube_id"],  # an AudioCaps test clip
        "ok1": ac_train[0]["youtube_id"],
        "ok2": ac_train[1]["youtube_id"],
        "long": ac_train[2]["youtube_id"],
    }
    as_dir = root / "Zip_files" / "AudioSet_SL" / WAVCAPS_ZIP_INNER / "AudioSet_SL_flac"
    as_data = []
    for i, (key, yid) in enumerate(as_ids.items()):
        flac = as_dir / f"Y{yid}.flac"
        if key == "long":
            dur = concat_audio(esc[4:13], flac.with_suffix(".wav"))  # 9 x 5 s = 45 s
            convert_audio(flac.with_suffix(".wav"), flac, "FLAC")
            flac.with_suffix(".wav").unlink()
        else:
            dur = convert_audio(esc[i], flac, "FLAC")
        as_data.append(
            {
                "id": f"Y{yid}.wav",
                "caption": f"Sound number {i} of the AudioSet subset.",
                "audio": f"/{WAVCAPS_ZIP_INNER}/AudioSet_SL_flac/Y{yid}.flac",
                "duration": dur,
            }
        )
    fsd_data = []
    fsd_dir = root / "Audio" / "FreeSound"
    for j, fid in enumerate(["80399", "12345", "67890"]):
        dur = convert_audio(esc[13 + j], fsd_dir / f"{fid}.flac", "FLAC")
        fsd_data.append(
            {
                "id": fid,
                "file_name": f"clip_{fid}.wav",
                "href": f"https://freesound.org/s/{fid}/",
                "tags": ["field-recording"],
                "description": "raw description",
                "author": "someone",
                "duration": dur,
                "download_link": f"https://freesound.org/download/{fid}",
                "caption": f"  FreeSound clip {fid} is heard.  ",
                "audio": f"/mnt/.../FreeSound_flac/{fid}.flac",
            }
        )
    sb_dur = convert_audio(esc[3], root / "waveforms" / "SoundBible_flac" / "2219.flac", "FLAC")
    sb_data = [
        {
            "title": "Airplane Landing Airport",
            "description": "Large commercial airplane landing at an airport runway.",
            "author": "Daniel Simion",
            "href": "2219-Airplane-Landing-Airport.html",
            "caption": "An airplane is landing.",
            "id": "2219",
            "duration": 14.1424375,
        },
        {
            "title": "Heavy Rain Wind",
            "description": "Super heavy rainstorm and wind pouring down.",
            "author": "Daniel Simion",
            "href": "2217-Heavy-Rain-Wind.html",
            "caption": "It is raining heavily and windy.",
            "id": "2217",
            "duration": 86.42671875,
        },
    ]
    bbc_data = [
        {"id": "07070156", "description": "Birds", "category": "['Nature']", "caption": "Birds sing.", "duration": 30.0}
    ]
    for subset, name, data in [
        ("AudioSet_SL", "as_final.json", as_data),
        ("FreeSound", "fsd_final.json", fsd_data),
        ("SoundBible", "sb_final.json", sb_data),
        ("BBC_Sound_Effects", "bbc_final.json", bbc_data),
    ]:
        (jdir / subset).mkdir(parents=True)
        (jdir / subset / name).write_text(json.dumps({"num_captions_per_audio": 1, "data": data}), encoding="utf-8")
    (jdir / "blacklist").mkdir()
    blacklist = {
        "AudioSet": [f"Y{as_ids['blacklisted']}.wav", "YvfY_TJq7n_U.wav"],
        "FreeSound": ["80399", "Not found", "203"],
    }
    (jdir / "blacklist" / "blacklist_exclude_test_ac.json").write_text(json.dumps(blacklist, indent=4))
    return {"root": root, "as_ids": as_ids, "sb_duration": sb_dur}


@pytest.fixture(scope="session")
def autoacd_root(tmp_path_factory) -> dict:
    """Auto-ACD layout: train.csv (youtube_id,caption) + train/<clip> for some clips."""
    root = tmp_path_factory.mktemp("Auto-ACD")
    _, ac_test = read_csv_rows(CAPTIONS / "audiocaps_test.csv")
    ac_clip = ac_test[0]["youtube_id"]
    rows = [
        {"youtube_id": f"Y{ac_clip}", "caption": "A machine rattles with sharp vibrations, in a workshop."},
        {"youtube_id": "oPRC3zComfA_000117", "caption": "A dog barks repeatedly, in a backyard."},
        {"youtube_id": "oPRC3zComfA_000117", "caption": "A dog barks while birds chirp, outdoors."},
        {"youtube_id": "Y--4gqARaEJE", "caption": "A pet squeaks, indoors."},
        {"youtube_id": "zzvSVusPPgM_000030", "caption": "  Wind blows hard, on a beach.  "},
        {"youtube_id": "YvfY_TJq7n_U", "caption": ""},
    ]
    write_csv_rows(root / "train.csv", ["youtube_id", "caption"], rows)
    write_csv_rows(root / "test.csv", ["youtube_id", "caption"], rows[:2])
    esc = esc50_clips(2)
    convert_audio(esc[0], root / "train" / f"Y{ac_clip}.wav")
    convert_audio(esc[1], root / "train" / "oPRC3zComfA_000117.wav")
    return {"root": root, "ac_clip": ac_clip, "ac_test_ids": {r["youtube_id"] for r in ac_test}}


@pytest.fixture(scope="session")
def full_caption_roots(tmp_path_factory) -> dict:
    """The FULL real AudioCaps and Clotho caption CSVs, in the original file names."""
    base = tmp_path_factory.mktemp("full_captions")
    ac, cl = base / "audiocaps" / "dataset", base / "clotho_v2"
    ac.mkdir(parents=True)
    cl.mkdir(parents=True)
    for split in ("train", "val", "test"):
        (ac / f"{split}.csv").symlink_to(CAPTIONS / f"audiocaps_{split}.csv")
    for split in ("development", "validation", "evaluation"):
        (cl / f"clotho_captions_{split}.csv").symlink_to(CAPTIONS / f"clotho_{split}.csv")
    return {"audiocaps": ac.parent, "clotho": cl}


# ------------------------------------------------------------------------------------- Clotho


@needs_data
def test_clotho_real_clips_five_captions_each(clotho_root):
    with pytest.warns(ReaderWarning, match="dropped 10 of 45 rows whose audio file is missing"):
        ds = read_clotho(clotho_root, "evaluation")
    assert ds.features == FEATURES
    assert isinstance(ds.features["audio"], Audio) and ds.features["audio"].decode is False
    assert len(ds) == 35
    by_clip = defaultdict(list)
    for r in rows(ds):
        by_clip[r["audio_id"]].append(r)
    manifest = {m["source_wav"]: m for m in clotho_manifest()}
    assert set(by_clip) == set(manifest)
    for name, clip_rows in by_clip.items():
        assert [r["caption"] for r in clip_rows] == manifest[name]["captions"]
        assert [r["pair_id"] for r in clip_rows] == [f"clotho/evaluation/{name}/{i}" for i in range(5)]
        for r in clip_rows:
            assert r["source"] == "clotho" and r["split"] == "evaluation"
            path = Path(r["audio"]["path"])
            assert path.is_absolute() and path.is_file() and path.parent == clotho_root / "evaluation"
            assert r["audio"]["bytes"] is None
            assert r["duration"] == pytest.approx(manifest[name]["duration_s"], abs=0.01)
    rep = report_of(ds)
    assert (rep.corpus, rep.split, rep.rows_read, rep.rows_kept) == ("clotho", "evaluation", 45, 35)
    assert rep.dropped_missing_audio == 10 and rep.clips_kept == 7
    assert rep.dropped_too_long == rep.dropped_unreadable_audio == rep.dropped_eval_overlap == 0


@needs_data
def test_clotho_pair_ids_stable_across_reads_and_locations(clotho_root, tmp_path):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ReaderWarning)
        first = read_clotho(clotho_root, "evaluation")
        second = read_clotho(clotho_root, "eval")  # alias of the same split
        moved = tmp_path / "elsewhere"
        shutil.copytree(clotho_root, moved)
        third = read_clotho(moved, "evaluation")
    assert col(first, "pair_id") == col(second, "pair_id") == col(third, "pair_id")
    assert rows(first) == rows(second)
    assert len(set(col(first, "pair_id"))) == len(first)
    assert {Path(a["path"]).parent for a in col(third, "audio")} == {moved / "evaluation"}


@needs_data
def test_clotho_max_duration(clotho_root):
    durations = {m["source_wav"]: m["duration_s"] for m in clotho_manifest()}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ReaderWarning)
        short = read_clotho(clotho_root, "evaluation", max_duration=20.0)
        unlimited = read_clotho(clotho_root, "evaluation", max_duration=None)
        default = read_clotho(clotho_root, "evaluation")
    expected = {n for n, d in durations.items() if d <= 20.0}
    assert len(expected) == 3
    assert set(col(short, "audio_id")) == expected and len(short) == 15
    assert max(col(short, "duration")) <= 20.0
    rep = report_of(short)
    assert rep.dropped_too_long == 20 and rep.max_duration == 20.0
    assert len(unlimited) == len(default) == 35  # all 7 real clips are under 40 s
    assert report_of(unlimited).max_duration is None


@needs_data
def test_clotho_corrupt_audio_dropped_with_warning(clotho_root, tmp_path):
    root = tmp_path / "clotho_corrupt"
    (root / "evaluation").mkdir(parents=True)
    fieldnames, csv_rows = read_csv_rows(clotho_root / "clotho_captions_evaluation.csv")
    names = [m["source_wav"] for m in clotho_manifest()]
    write_csv_rows(root / "clotho_captions_evaluation.csv", fieldnames, csv_rows[:7])
    for name in names:
        shutil.copyfile(clotho_root / "evaluation" / name, root / "evaluation" / name)
    garbage, empty = names[1], names[4]
    (root / "evaluation" / garbage).write_bytes(b"RIFF\x00\x10\x00\x00WAVEjunk" + bytes(range(256)) * 8)
    (root / "evaluation" / empty).write_bytes(b"")
    with pytest.warns(ReaderWarning) as record:
        ds = read_clotho(root, "evaluation")
    messages = [str(w.message) for w in record]
    assert any(re.search(re.escape(garbage), m) for m in messages)
    assert any(re.search(re.escape(empty), m) for m in messages)
    assert len(ds) == 25 and garbage not in col(ds, "audio_id") and empty not in col(ds, "audio_id")
    rep = report_of(ds)
    assert rep.dropped_unreadable_audio == 10 and rep.dropped_missing_audio == 0
    assert sorted(Path(p).name for p in rep.unreadable_files) == sorted([garbage, empty])


@needs_data
def test_clotho_finds_converted_flac_and_verify_decode(clotho_root, tmp_path):
    root = tmp_path / "clotho_flac"
    (root / "evaluation").mkdir(parents=True)
    shutil.copyfile(clotho_root / "clotho_captions_evaluation.csv", root / "clotho_captions_evaluation.csv")
    for m in clotho_manifest():  # the real 48 kHz FLAC clips, under the CSV's stem
        (root / "evaluation" / m["file"]).symlink_to(CLOTHO7 / m["file"])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ReaderWarning)
        ds = read_clotho(root, "evaluation", verify_decode=True)
    assert len(ds) == 35
    assert all(a["path"].endswith(".flac") for a in col(ds, "audio"))
    assert all(name.endswith(".wav") for name in col(ds, "audio_id"))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ReaderWarning)
        wav = read_clotho(clotho_root, "evaluation")
    assert col(ds, "pair_id") == col(wav, "pair_id")
    assert col(ds, "duration") == pytest.approx(col(wav, "duration"), abs=1e-3)


# ----------------------------------------------------------------------------------- AudioCaps


@needs_data
def test_audiocaps_missing_audio_counted_and_dropped(audiocaps_root):
    root, clips = audiocaps_root["root"], audiocaps_root["clips"]
    with pytest.warns(ReaderWarning, match=r"dropped 2460 of 2475 rows whose audio file is missing"):
        ds = read_audiocaps(root, "val")
    assert len(ds) == 15 and set(col(ds, "audio_id")) == set(clips)
    rep = report_of(ds)
    assert rep.rows_read == 2475 and rep.dropped_missing_audio == 2460 and rep.clips_kept == 3
    expected = defaultdict(list)
    for r in audiocaps_root["val_rows"]:
        expected[r["youtube_id"]].append(r)
    names = {Path(a["path"]).name for a in col(ds, "audio")}
    assert names == {f"{clips[0]}.wav", f"Y{clips[1]}.wav", f"{clips[2]}_{expected[clips[2]][0]['start_time']}.wav"}
    for r in rows(ds):
        assert r["source"] == "audiocaps" and r["split"] == "val"
        assert r["duration"] == pytest.approx(5.0, abs=0.01)
        assert Path(r["audio"]["path"]).parent == root / "val"
    for yid in clips:
        got = {int(r["pair_id"].rsplit("/", 1)[1]): r["caption"] for r in rows(ds) if r["audio_id"] == yid}
        ordered = sorted(expected[yid], key=lambda r: int(r["audiocap_id"]))
        assert got == {i: r["caption"].strip() for i, r in enumerate(ordered)}


@needs_data
def test_audiocaps_text_only_keeps_everything(audiocaps_root):
    with no_reader_warnings():
        ds = read_audiocaps(audiocaps_root["root"], "validation", text_only=True)
    assert len(ds) == 2475 and set(col(ds, "split")) == {"val"}
    assert all(a is None for a in col(ds, "audio")) and all(d is None for d in col(ds, "duration"))
    assert len(set(col(ds, "pair_id"))) == 2475
    per_clip = defaultdict(set)
    for pid in col(ds, "pair_id"):
        _, _, yid, idx = pid.split("/")
        per_clip[yid].add(int(idx))
    assert len(per_clip) == 495 and all(v == {0, 1, 2, 3, 4} for v in per_clip.values())
    rep = report_of(ds)
    assert rep.text_only and rep.dropped == 0


@needs_data
def test_audiocaps_custom_patterns_and_exclusion(audiocaps_root, tmp_path):
    root = tmp_path / "ac"
    root.mkdir()
    shutil.copyfile(audiocaps_root["root"] / "test.csv", root / "test.csv")
    _, test_rows = read_csv_rows(root / "test.csv")
    yid, start = test_rows[0]["youtube_id"], test_rows[0]["start_time"]
    convert_audio(esc50_clips(1)[0], root / "clips" / f"{yid}-{start}.flac", "FLAC")
    with pytest.warns(ReaderWarning, match="missing"):
        ds = read_audiocaps(root, "test", audio_dir="clips", filename_patterns=["{youtube_id}-{start_time}.flac"])
    assert len(ds) == 5 and set(col(ds, "audio_id")) == {yid}
    with pytest.warns(ReaderWarning, match="missing"):
        none_left = read_audiocaps(root, "test", audio_dir="clips", exclude_ids=[f"Y{yid}.wav"])
    rep = report_of(none_left)
    assert len(none_left) == 0 and rep.dropped_eval_overlap == 5 and rep.dropped_missing_audio == 4870


# ------------------------------------------------------------------------------------- WavCaps


@needs_data
def test_wavcaps_blacklist_duration_and_missing(wavcaps_root):
    root, as_ids = wavcaps_root["root"], wavcaps_root["as_ids"]
    with pytest.warns(ReaderWarning, match="missing"):
        ds = read_wavcaps(root)
    rep = report_of(ds)
    assert (rep.rows_read, rep.rows_kept) == (10, 5)
    assert rep.dropped_eval_overlap == 2 and rep.dropped_too_long == 1 and rep.dropped_missing_audio == 2
    assert any(f.endswith("blacklist_exclude_test_ac.json") for f in rep.overlap_filters)
    ids = set(col(ds, "pair_id"))
    assert ids == {
        f"wavcaps/AudioSet_SL/train/{as_ids['ok1']}/0",
        f"wavcaps/AudioSet_SL/train/{as_ids['ok2']}/0",
        "wavcaps/FreeSound/train/12345/0",
        "wavcaps/FreeSound/train/67890/0",
        "wavcaps/SoundBible/train/2219/0",
    }
    assert as_ids["blacklisted"] not in col(ds, "audio_id") and "80399" not in col(ds, "audio_id")
    assert as_ids["long"] not in col(ds, "audio_id")
    by_id = {r["audio_id"]: r for r in rows(ds)}
    assert by_id["12345"]["caption"] == "FreeSound clip 12345 is heard."
    assert by_id["12345"]["source"] == "wavcaps/FreeSound"
    assert Path(by_id[as_ids["ok1"]]["audio"]["path"]).name == f"Y{as_ids['ok1']}.flac"
    assert WAVCAPS_ZIP_INNER in by_id[as_ids["ok1"]]["audio"]["path"]
    # the real duration of the audio, not the JSON metadata (14.14 s)
    assert by_id["2219"]["duration"] == pytest.approx(wavcaps_root["sb_duration"], abs=0.01)

    with pytest.warns(ReaderWarning, match="missing"):
        unfiltered = read_wavcaps(root, blacklist=None, max_duration=None)
    rep = report_of(unfiltered)
    assert rep.rows_kept == 8 and rep.dropped_eval_overlap == 0 and rep.overlap_filters == []
    long_row = [r for r in rows(unfiltered) if r["audio_id"] == as_ids["long"]][0]
    assert long_row["duration"] == pytest.approx(45.0, abs=0.01)


@needs_data
def test_wavcaps_text_only_and_explicit_ids(wavcaps_root):
    root, as_ids = wavcaps_root["root"], wavcaps_root["as_ids"]
    with no_reader_warnings():
        text = read_wavcaps(root, text_only=True)
    rep = report_of(text)
    # max_duration applies to the JSON durations: the 45 s AudioSet clip and the 86 s SoundBible one
    assert (rep.rows_kept, rep.dropped_eval_overlap, rep.dropped_too_long) == (6, 2, 2)
    assert all(a is None for a in col(text, "audio")) and all(d is None for d in col(text, "duration"))
    assert "wavcaps/BBC_Sound_Effects/train/07070156/0" in col(text, "pair_id")

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ReaderWarning)
        explicit = read_wavcaps(
            root, blacklist=None, exclude_ids={"AudioSet_SL": [f"Y{as_ids['ok1']}"], "fsd": ["12345"]}
        )
        flat = read_wavcaps(root, blacklist=None, exclude_ids=[as_ids["ok1"], "12345"])
    for ds in (explicit, flat):
        assert report_of(ds).dropped_eval_overlap == 2
        assert as_ids["ok1"] not in col(ds, "audio_id") and "12345" not in col(ds, "audio_id")
        assert as_ids["blacklisted"] in col(ds, "audio_id")

    with no_reader_warnings():  # every FreeSound clip has its audio
        fsd = read_corpus("wavcaps/FreeSound", root, "train", blacklist="test_ac")
    assert col(fsd, "pair_id") == ["wavcaps/FreeSound/train/12345/0", "wavcaps/FreeSound/train/67890/0"]
    assert report_of(fsd).rows_read == 3


def test_wavcaps_auto_blacklist_warns_when_absent(tmp_path):
    sb = tmp_path / "json_files" / "SoundBible"
    sb.mkdir(parents=True)
    entries = [{"id": "2219", "caption": "An airplane is landing.", "duration": 14.1}]
    (sb / "sb_final.json").write_text(json.dumps(entries))  # the bare-list form of the GitHub copy
    with pytest.warns(ReaderWarning, match="NOT removed"):
        ds = read_wavcaps(tmp_path, subsets="sb", text_only=True)
    assert col(ds, "pair_id") == ["wavcaps/SoundBible/train/2219/0"]
    with pytest.raises(FileNotFoundError):
        read_wavcaps(tmp_path, subsets="sb", text_only=True, blacklist="all_ac")
    with pytest.raises(FileNotFoundError):
        read_wavcaps(tmp_path, subsets="FreeSound", text_only=True, blacklist=None)


# ------------------------------------------------------------------------------------ Auto-ACD


@needs_data
def test_autoacd_ids_missing_audio_and_text_only(autoacd_root):
    root, ac_clip = autoacd_root["root"], autoacd_root["ac_clip"]
    with pytest.warns(ReaderWarning, match="missing"):
        ds = read_autoacd(root, "train")
    rep = report_of(ds)
    assert (rep.rows_read, rep.rows_kept, rep.dropped_missing_audio, rep.dropped_empty_caption) == (6, 3, 2, 1)
    assert col(ds, "pair_id") == [
        f"autoacd/train/{ac_clip}/0",
        "autoacd/train/oPRC3zComfA_000117/0",
        "autoacd/train/oPRC3zComfA_000117/1",
    ]
    assert col(ds, "audio")[1]["path"] == col(ds, "audio")[2]["path"]
    assert Path(col(ds, "audio")[0]["path"]).name == f"Y{ac_clip}.wav"

    text = read_autoacd(root, "train", text_only=True)
    assert col(text, "audio_id") == [
        ac_clip,
        "oPRC3zComfA_000117",
        "oPRC3zComfA_000117",
        "--4gqARaEJE",
        "zzvSVusPPgM_000030",
    ]
    assert col(text, "caption")[-1] == "Wind blows hard, on a beach."

    # the same AudioSet clip has the same audio_id as in AudioCaps: exclude the AudioCaps test clips
    no_overlap = read_autoacd(root, "train", text_only=True, exclude_ids=autoacd_root["ac_test_ids"])
    assert ac_clip not in col(no_overlap, "audio_id") and report_of(no_overlap).dropped_eval_overlap == 1

    test = read_corpus("auto-acd", root, "test", text_only=True)
    assert len(test) == 2 and set(col(test, "split")) == {"test"}


# ------------------------------------------------------------------------ full real caption CSVs


@needs_data
def test_text_only_over_full_real_audiocaps_and_clotho(full_caption_roots):
    expected = {
        ("audiocaps", "train"): 49_838,
        ("audiocaps", "val"): 2_475,
        ("audiocaps", "test"): 4_875,
        ("clotho", "development"): 3_839 * 5,
        ("clotho", "validation"): 1_045 * 5,
        ("clotho", "evaluation"): 1_045 * 5,
    }
    start = time.perf_counter()
    all_ids: list[str] = []
    with no_reader_warnings():
        for (name, split), count in expected.items():
            ds = read_corpus(name, full_caption_roots[name], split, text_only=True)
            rep = report_of(ds)
            assert len(ds) == count and rep.rows_read == count and rep.dropped == 0
            all_ids.extend(col(ds, "pair_id"))
            if name == "clotho":
                per_clip = defaultdict(int)
                for a in col(ds, "audio_id"):
                    per_clip[a] += 1
                assert set(per_clip.values()) == {5}
    elapsed = time.perf_counter() - start
    total = sum(expected.values())
    assert len(all_ids) == len(set(all_ids)) == total == 86_833
    print(f"\ntext-only read of the full AudioCaps + Clotho caption CSVs: {total} pairs in {elapsed:.2f} s")
    assert elapsed < 30

    again = read_audiocaps(full_caption_roots["audiocaps"], "train", text_only=True)
    assert col(again, "pair_id") == all_ids[:49_838]
    assert again[0] == {
        "pair_id": "audiocaps/train/r1nicOVtvkQ/0",
        "audio_id": "r1nicOVtvkQ",
        "audio": None,
        "caption": "A woman talks nearby as water pours",
        "source": "audiocaps",
        "split": "train",
        "duration": None,
    }


# ------------------------------------------------------------------ always run (synthetic audio)


def _synthetic_clotho(root: Path, durations: dict[str, float]) -> None:
    sr = 16_000
    rows_ = []
    for i, (name, dur) in enumerate(durations.items()):
        t = np.arange(int(sr * dur)) / sr
        sf.write(root / "development" / name, 0.1 * np.sin(2 * np.pi * (220 + 50 * i) * t), sr)
        rows_.append({"file_name": name, **{f"caption_{k}": f"tone {i} caption {k} " for k in range(1, 6)}})
    write_csv_rows(
        root / "clotho_captions_development.csv", ["file_name"] + [f"caption_{k}" for k in range(1, 6)], rows_
    )


def test_synthetic_clotho_and_report_roundtrip(tmp_path):
    (tmp_path / "development").mkdir()
    _synthetic_clotho(tmp_path, {"a.wav": 1.0, "b b.wav": 2.5, "long.wav": 41.0})
    with no_reader_warnings():
        ds = read_corpus("Clotho", tmp_path, "dev")
    assert len(ds) == 10 and set(col(ds, "split")) == {"development"}
    assert col(ds, "pair_id")[:5] == [f"clotho/development/a.wav/{i}" for i in range(5)]
    assert col(ds, "caption")[0] == "tone 0 caption 1"
    assert col(ds, "duration")[5] == pytest.approx(2.5)
    rep = report_of(ds)
    assert rep.dropped_too_long == 5 and rep.clips_kept == 2

    again = ReaderReport.from_json(rep.to_json())
    assert again == rep
    total = rep + again
    assert total.rows_read == 30 and total.dropped_too_long == 10 and total.corpus == "clotho"

    saved = tmp_path / "saved"
    ds.select(range(3)).save_to_disk(str(saved))
    assert ReaderReport.from_dataset(Dataset.load_from_disk(str(saved))) == rep


def test_dispatch_and_argument_errors(tmp_path):
    with pytest.raises(ValueError, match="unknown corpus"):
        read_corpus("macs", tmp_path, "train")
    with pytest.raises(ValueError, match="unknown AudioCaps split"):
        read_corpus("audiocaps", tmp_path, "dev")
    with pytest.raises(FileNotFoundError):
        read_corpus("audiocaps", tmp_path, "train", text_only=True)
    with pytest.raises(FileNotFoundError):
        read_corpus("clotho", tmp_path, "evaluation", text_only=True)
    with pytest.raises(ValueError, match="unknown WavCaps subset"):
        read_corpus("wavcaps/MACS", tmp_path, "train")
    (tmp_path / "train.csv").write_text("id,text\nabc,hello\n")
    with pytest.raises(ValueError, match="missing column"):
        read_corpus("autoacd", tmp_path, "train", text_only=True)
    with pytest.raises(ValueError, match="no reader report"):
        ReaderReport.from_dataset(Dataset.from_dict({"x": [1]}))


def test_save_to_keeps_audio_paths_and_embeds_no_bytes(corpora, tmp_path, capsys):
    """`--save-to` must not embed the corpus (an `Audio` column's bytes) nor cut paths to file names: knowledge bases
    built from the saved folder record the clips' locations from those paths."""
    from datasets import load_from_disk

    from datasets_scripts.readers import main

    assert main(["clotho", str(corpora["clotho"]), "evaluation", "--save-to", str(tmp_path / "saved")]) == 0
    saved = load_from_disk(str(tmp_path / "saved"))
    audio = saved.with_format("arrow")["audio"].to_pylist()
    assert len(audio) == 35
    assert all(
        item["bytes"] is None and Path(item["path"]).is_absolute() and Path(item["path"]).is_file() for item in audio
    )
