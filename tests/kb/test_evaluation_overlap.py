"""Evaluation clips stay out of knowledge bases: one clip identity across corpora, the overlap filter on real ids."""

import csv
import json
import shutil
from pathlib import Path

import pytest
from datasets import Dataset, concatenate_datasets
from helpers import SHARED_DATA

from datasets_scripts.evaluation_overlap import (
    EvaluationOverlapWarning,
    clotho_sound_ids,
    drop_evaluation_overlap,
    evaluation_clip_ids,
)
from datasets_scripts.readers import read_corpus
from modeling_paircap.clip_ids_paircap import normalise_clip_id

CAPTIONS = SHARED_DATA / "captions"
# One row of Clotho v2.1's clotho_metadata_evaluation.csv (the Freesound sound of "Radio Garble.wav" is 80399)
RADIO_GARBLE = (
    "Radio Garble.wav",
    "garble;police;café",
    "80399",
    "https://freesound.org/people/Benboncan/sounds/80399",
)
WAVCAPS = ["AudioSet_SL", "FreeSound", "BBC_Sound_Effects"]
METADATA_COLUMNS = ("file_name", "keywords", "sound_id", "sound_link", "start_end_samples", "manufacturer", "license")


@pytest.mark.parametrize(
    ("audio_id", "source", "expected"),
    [
        ("7fmOlUlwoNg", "audiocaps", "youtube:7fmOlUlwoNg"),  # AudioCaps youtube_id
        ("YQSuFyFm3Lc", "audiocaps", "youtube:YQSuFyFm3Lc"),  # an 11-char id that starts with Y keeps it
        ("Y7fmOlUlwoNg", None, "youtube:7fmOlUlwoNg"),  # Auto-ACD / PANNs "Y" prefix
        ("Y7fmOlUlwoNg.wav", None, "youtube:7fmOlUlwoNg"),  # WavCaps AudioSet_SL raw id and blacklist entry
        ("--0w1YA1Hm4_000030", "autoacd", "youtube:--0w1YA1Hm4"),  # Auto-ACD VGGSound <id>_<start>
        ("7fmOlUlwoNg_30", None, "youtube:7fmOlUlwoNg"),
        ("7fmOlUlwoNg_30.000", None, "youtube:7fmOlUlwoNg"),
        ("7fmOlUlwoNg_30000", None, "youtube:7fmOlUlwoNg"),
        ("Y7fmOlUlwoNg_30.000_40.000", None, "youtube:7fmOlUlwoNg"),
        ("7fmOlUlwoNg_30000_40000", None, "youtube:7fmOlUlwoNg"),
        ("80399", "wavcaps/FreeSound", "freesound:80399"),  # WavCaps FreeSound id, Clotho metadata sound_id
        ("80399", None, "freesound:80399"),
        ("freesound_80399", None, "freesound:80399"),
        ("80399.flac", "wavcaps/FreeSound", "freesound:80399"),
        ("07035039", "wavcaps/BBC_Sound_Effects", "bbc:7035039"),  # numbers of other sites are not Freesound ids
        ("1234", "wavcaps/SoundBible", "soundbible:1234"),
        (" Santa Motor.wav ", "clotho", "santa motor.wav"),  # Clotho file_name
        ("100121.wav", None, "100121.wav"),  # real Clotho file names that look like ids are file names
        ("1.wav", "clotho", "1.wav"),
        ("Lade-Stereo_2012.wav", None, "lade-stereo_2012.wav"),
        ("Waves_00512.wav", None, "waves_00512.wav"),
        ("1-100032-A-0", "esc50", "freesound:100032"),  # ESC-50 {fold}-{src_file}-{take}-{target}: the recording
        ("1-100032-B-0.wav", None, "freesound:100032"),  # another take of it, as a file name
        ("5-9032-AB-49.flac", None, "freesound:9032"),
        ("1-10003-A-0", None, "freesound:10003"),  # 11 chars: not read as a YouTube id
        ("6-100032-A-0", None, "6-100032-a-0"),  # fold 6, take "a" or target 50 are no ESC-50 stems
        ("1-100032-a-0", None, "1-100032-a-0"),
        ("1-100032-A-50", None, "1-100032-a-50"),
        ("youtube:7fmOlUlwoNg", None, "youtube:7fmOlUlwoNg"),  # idempotent
        ("freesound:80399", None, "freesound:80399"),
    ],
)
def test_normalise_clip_id(audio_id, source, expected):
    assert normalise_clip_id(audio_id, source) == expected


def test_reader_ids_of_one_youtube_clip_agree(tmp_path):
    """The ids the readers write for the same AudioSet clip in AudioCaps, Auto-ACD and WavCaps normalise alike."""
    (tmp_path / "audiocaps").mkdir()
    (tmp_path / "audiocaps" / "train.csv").write_text("audiocap_id,youtube_id,start_time,caption\n1,7fmOlUlwoNg,20,a\n")
    (tmp_path / "autoacd").mkdir()
    (tmp_path / "autoacd" / "train.csv").write_text("youtube_id,caption\nY7fmOlUlwoNg,a\n7fmOlUlwoNg_000020,b\n")
    subset = tmp_path / "wavcaps" / "json_files" / "AudioSet_SL"
    subset.mkdir(parents=True)
    (subset / "as_final.json").write_text(json.dumps({"data": [{"id": "Y7fmOlUlwoNg.wav", "caption": "c"}]}))
    options = {"text_only": True, "max_duration": None}
    pairs = concatenate_datasets(
        [
            read_corpus("audiocaps", tmp_path / "audiocaps", "train", **options),
            read_corpus("autoacd", tmp_path / "autoacd", "train", **options),
            read_corpus("wavcaps", tmp_path / "wavcaps", "train", subsets="as", blacklist=None, **options),
        ]
    )
    assert sorted(pairs["audio_id"]) == ["7fmOlUlwoNg", "7fmOlUlwoNg", "7fmOlUlwoNg", "7fmOlUlwoNg_000020"]
    clips = {normalise_clip_id(a, s) for a, s in zip(pairs["audio_id"], pairs["source"], strict=True)}
    assert clips == {"youtube:7fmOlUlwoNg"}


def test_clotho_sound_ids_read_iso_8859_1_metadata(tmp_path):
    write_metadata(tmp_path / "clotho_csv_files" / "clotho_metadata_evaluation.csv", [RADIO_GARBLE])
    name, keywords, _, link = RADIO_GARBLE
    write_metadata(tmp_path / "clotho_metadata_validation.csv", [("x.wav", keywords, "", link), ("y.wav", "", "", "")])
    assert clotho_sound_ids(tmp_path) == {
        ("evaluation", name): "freesound:80399",
        ("validation", "x.wav"): "freesound:80399",  # from sound_link when sound_id is empty
    }


@pytest.fixture(scope="module")
def roots(tmp_path_factory) -> dict[str, Path]:
    """AudioCaps and Clotho folders laid out as distributed, holding the real caption CSVs of every split."""
    if not CAPTIONS.is_dir():
        pytest.skip(f"real caption CSVs {CAPTIONS} are absent (they sit beside the repo in the project workspace)")
    root = tmp_path_factory.mktemp("corpora")
    (root / "audiocaps").mkdir()
    (root / "clotho").mkdir()
    for split in ("train", "val", "test"):
        shutil.copy(CAPTIONS / f"audiocaps_{split}.csv", root / "audiocaps" / f"{split}.csv")
    for split in ("development", "validation", "evaluation"):
        shutil.copy(CAPTIONS / f"clotho_{split}.csv", root / "clotho" / f"clotho_captions_{split}.csv")
    write_metadata(root / "clotho" / "clotho_metadata_evaluation.csv", [RADIO_GARBLE])
    made_up = ("Paper_Parchment_Rustling.wav", "", "80399", "")  # a development clip of an evaluation clip's sound
    write_metadata(root / "clotho" / "clotho_metadata_development.csv", [made_up])
    return {"audiocaps": root / "audiocaps", "clotho": root / "clotho"}


@pytest.fixture(scope="module")
def banned(roots) -> dict[str, set[str]]:
    with pytest.warns(EvaluationOverlapWarning, match="clotho/validation: no clotho_metadata_validation.csv"):
        return evaluation_clip_ids(roots)


def test_evaluation_clip_ids_of_the_real_splits(banned):
    assert {name: len(ids) for name, ids in banned.items()} == {
        "audiocaps/val": 495,
        "audiocaps/test": 975,
        "clotho/validation": 1045,
        "clotho/evaluation": 1045 + 1,  # file names and the one Freesound id the metadata gives
    }
    assert "youtube:7fmOlUlwoNg" in banned["audiocaps/test"] and "freesound:80399" in banned["clotho/evaluation"]
    assert "radio garble.wav" in banned["clotho/evaluation"]


def test_missing_roots_and_files_are_reported_not_checked(roots, tmp_path):
    (tmp_path / "val.csv").write_bytes((roots["audiocaps"] / "val.csv").read_bytes())
    with pytest.warns(EvaluationOverlapWarning, match="audiocaps/test overlap is not checked"):
        banned = evaluation_clip_ids({"audiocaps": tmp_path, "wavcaps": tmp_path})
    assert list(banned) == ["audiocaps/val"]
    _, report = drop_evaluation_overlap(Dataset.from_dict({"audio_id": ["7fmOlUlwoNg"]}), banned)
    assert report.not_checked == ["audiocaps/test", "clotho/validation", "clotho/evaluation"]
    assert report.rows_dropped == 0


def test_drop_evaluation_overlap_on_real_ids(roots, banned, tmp_path):
    test_ids = list(dict.fromkeys(row["youtube_id"] for row in read_rows(roots["audiocaps"] / "test.csv")))
    val_ids = list(dict.fromkeys(row["youtube_id"] for row in read_rows(roots["audiocaps"] / "val.csv")))
    autoacd = tmp_path / "autoacd"
    autoacd.mkdir()
    with open(autoacd / "train.csv", "w", newline="") as handle:  # AudioSet and VGGSound forms of AudioCaps test clips
        rows = [[f"Y{i}", "a"] for i in test_ids[:10]] + [[f"{i}_000030", "b"] for i in test_ids[10:20]]
        csv.writer(handle).writerows([["youtube_id", "caption"], *rows, ["Y0123456789a", "not an evaluation clip"]])
    wavcaps = tmp_path / "wavcaps" / "json_files"
    write_wavcaps(wavcaps / "AudioSet_SL" / "as_final.json", [f"Y{val_ids[0]}.wav", "Y0123456789b.wav"])
    write_wavcaps(wavcaps / "FreeSound" / "fsd_final.json", ["80399", "12345"])
    write_wavcaps(wavcaps / "BBC_Sound_Effects" / "bbc_final.json", ["80399"])  # a BBC number, not Freesound 80399
    options = {"text_only": True, "max_duration": None}
    parts = {
        "audiocaps train": read_corpus("audiocaps", roots["audiocaps"], "train", **options).select(range(500)),
        "audiocaps test": read_corpus("audiocaps", roots["audiocaps"], "test", **options).select(range(50)),
        "clotho development": read_corpus("clotho", roots["clotho"], "development", **options),
        "clotho evaluation": read_corpus("clotho", roots["clotho"], "evaluation", **options).select(range(25)),
        "autoacd": read_corpus("autoacd", autoacd, "train", **options),
        "wavcaps": read_corpus("wavcaps", wavcaps.parent, "train", subsets=WAVCAPS, blacklist=None, **options),
    }
    pairs = concatenate_datasets(list(parts.values()))

    kept, report = drop_evaluation_overlap(pairs, banned, clotho_sound_ids(roots["clotho"]))

    # Clotho development: 3 file names Clotho reuses in validation / evaluation (one up to case), and a Freesound id
    sources = {"clotho": 4 * 5, "autoacd": 20, "wavcaps/AudioSet_SL": 1, "wavcaps/FreeSound": 1}
    assert report.dropped_by_source == sources
    by_split = {"audiocaps/val": 1, "audiocaps/test": 20, "clotho/validation": 5, "clotho/evaluation": 3 * 5 + 1}
    assert report.dropped_by_evaluation_split == by_split
    assert report.kept_evaluation_rows == {"audiocaps/test": 50, "clotho/evaluation": 25}
    assert report.rows_checked == len(pairs) and len(kept) == len(pairs) - report.rows_dropped == len(pairs) - 42
    assert report.not_checked == [] and report.without_freesound_ids == ["clotho/validation"]
    assert json.loads(json.dumps(report.to_dict())) == report.to_dict()
    dropped_clotho = set(parts["clotho development"]["audio_id"]) - set(kept.filter(is_clotho_dev)["audio_id"])
    assert dropped_clotho == {
        "FREEZER_DOOR_OPEN_CLOSE.wav",  # also in evaluation
        "City Ambience w_ Car Passing_1-2.wav",  # also in validation
        "Ambience Birds.wav",  # " Ambience Birds.wav" in development, "Ambience birds.wav" in evaluation
        "Paper_Parchment_Rustling.wav",  # the same Freesound sound as "Radio Garble.wav" (made-up metadata)
    }
    for row in kept.select_columns(["audio_id", "source", "split"]):
        own = f"{row['source']}/{row['split']}"
        clip = normalise_clip_id(row["audio_id"], row["source"])
        assert not any(clip in ids for name, ids in banned.items() if name != own), row


def test_nothing_to_drop_returns_the_dataset_itself(banned):
    pairs = Dataset.from_dict({"audio_id": ["0123456789a", "Y0123456789a"], "source": ["autoacd"] * 2})
    kept, report = drop_evaluation_overlap(pairs, banned)
    assert kept is pairs and report.rows_dropped == 0 and report.rows_checked == 2


def is_clotho_dev(row: dict) -> bool:
    return row["source"] == "clotho" and row["split"] == "development"


def read_rows(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle))


def write_metadata(path: Path, rows: list[tuple]) -> None:
    """A Clotho v2 metadata CSV, in ISO-8859-1 as Clotho writes them."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="", encoding="iso-8859-1") as handle:
        writer = csv.writer(handle)
        writer.writerow(METADATA_COLUMNS)
        writer.writerows([*row, "", "", ""][: len(METADATA_COLUMNS)] for row in rows)


def write_wavcaps(path: Path, ids: list[str]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"data": [{"id": i, "caption": f"clip {i}", "duration": 10.0} for i in ids]}))
