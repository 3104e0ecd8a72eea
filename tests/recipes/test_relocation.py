"""A mini run moved, copied or hard-linked elsewhere, or given another data folder: its saved pair sets point at the
folders it has now before any stage reads them, and the original run is left as it was."""

import json
import os
import shutil
from pathlib import Path

from datasets import Dataset, load_from_disk

from recipes.mini.local.corpus import save
from recipes.mini.local.layout import MiniRun
from recipes.mini.local.relocation import relocate_pair_sets
from recipes.mini.local.scales import load_scale


def make_run(output: Path, data: Path) -> MiniRun:
    """A run whose training pairs name a corpus mixture and an ESC-50 clip, and whose fit sample names the clip."""
    run = MiniRun(output, data, load_scale("quick"), ("esc50_cc",))
    mixture = output / "corpus" / "mixtures" / "audio" / "mix-train-00000.flac"
    clip = data / "esc50_cc" / "1-100038-A-14.flac"
    rows = {
        "audio_id": ["mix-train-00000", "1-100038-A-14", "text-only"],
        "audio": [{"bytes": None, "path": str(mixture)}, {"bytes": None, "path": str(clip)}, None],
        "caption": ["a dog barks while rain falls", "birds chirp", "a caption without audio"],
    }
    save(Dataset.from_dict(rows), run.pairs("train"))
    save(Dataset.from_dict({k: v[1:2] for k, v in rows.items()}), output / "evaluation" / "fit" / "train")
    save(Dataset.from_dict({"caption": ["text only"]}), run.pairs("text"))
    return run


def paths(folder: Path) -> list[str | None]:
    return [audio and audio["path"] for audio in load_from_disk(str(folder))["audio"]]


def test_a_moved_run_and_data_folder_point_their_pair_sets_at_the_new_folders(tmp_path):
    run = make_run(tmp_path / "runs" / "mini", tmp_path / "data")
    run.write_settings(location=relocate_pair_sets(run))
    assert json.loads(run.path("settings.json").read_text())["location"] == run.location()
    assert relocate_pair_sets(run) == run.location()  # nothing moved: nothing rewritten
    shutil.move(run.output, tmp_path / "elsewhere")
    moved = MiniRun(tmp_path / "elsewhere", tmp_path / "shared" / "data", run.scale, run.clip_folders)
    assert relocate_pair_sets(moved) == moved.location()
    assert paths(moved.pairs("train")) == [
        str(tmp_path / "elsewhere" / "corpus" / "mixtures" / "audio" / "mix-train-00000.flac"),
        str(tmp_path / "shared" / "data" / "esc50_cc" / "1-100038-A-14.flac"),
        None,
    ]
    assert paths(moved.path("evaluation", "fit", "train")) == [
        str(tmp_path / "shared" / "data" / "esc50_cc" / "1-100038-A-14.flac")
    ]
    assert load_from_disk(str(moved.pairs("train")))["caption"][0] == "a dog barks while rain falls"


def test_a_hard_linked_copy_of_a_run_from_before_the_location_was_recorded_leaves_the_original_as_it_was(tmp_path):
    run = make_run(tmp_path / "original", tmp_path / "data")  # no location in settings.json: its folders are inferred
    run.write_settings()
    before, settings = paths(run.pairs("train")), run.path("settings.json").read_text()
    shutil.copytree(run.output, tmp_path / "copy", copy_function=os.link)
    copy = MiniRun(tmp_path / "copy", run.data, run.scale, run.clip_folders)
    copy.write_settings(location=relocate_pair_sets(copy))  # as `run_stages` starts
    assert json.loads(copy.path("settings.json").read_text())["location"] == copy.location()
    assert paths(copy.pairs("train"))[0] == str(
        tmp_path / "copy" / "corpus" / "mixtures" / "audio" / "mix-train-00000.flac"
    )
    assert paths(copy.pairs("train"))[1] == before[1]  # the data folder did not move
    assert paths(run.pairs("train")) == before and run.path("settings.json").read_text() == settings


def test_pair_sets_whose_folders_cannot_be_told_are_left_and_no_location_is_claimed(tmp_path, caplog):
    run = MiniRun(tmp_path / "run", tmp_path / "data", load_scale("quick"), ("esc50_cc",))
    assert relocate_pair_sets(run) == run.location()  # a new run: no pair sets yet
    save(Dataset.from_dict({"audio": [{"bytes": None, "path": "/somewhere/clip.flac"}]}), run.pairs("train"))
    assert relocate_pair_sets(run) is None
    assert "cannot tell which folders" in caplog.text and paths(run.pairs("train")) == ["/somewhere/clip.flac"]
