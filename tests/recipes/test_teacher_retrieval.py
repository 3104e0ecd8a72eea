"""recipes.mini.local.teacher_retrieval's search: audio-to-audio in the teacher's space never returns the query's own
recording nor a mixture that holds it, and reads a KB's audio only inside the run's roots. Its run on a finished
quick run is in test_mini_recipe.py."""

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch

from modeling_paircap.audio_locations_paircap import AudioLocationError
from recipes.mini.local.teacher_retrieval import kb_clips, nearest_clips, pooled


def test_nearest_clips_skip_the_querys_recording_and_the_mixtures_that_hold_it():
    kb_ids = ["1-100032-A-0", "2-100032-B-0", "mix-train-00001", "3-20000-A-1"]
    groups = {"mix-train-00001": ["1-100032-A-0", "4-30000-A-2"]}
    kb = torch.eye(4)
    queries = torch.tensor([[1.0, 0.9, 0.8, 0.1], [1.0, 0.9, 0.8, 0.1]])
    # a third take of recording 100032: its other takes and the mixture holding one are skipped, leaving one clip
    assert nearest_clips(queries, ["5-100032-C-0", "5-90000-A-3"], kb, kb_ids, groups, 2) == [[3], [0, 1]]


def test_pooled_compares_every_setting_with_zero_shot_on_the_same_items():
    def run(zero, top1, right):
        return {
            "mixtures": {
                "items": ["a", "b"],
                "zero-shot": {"named": zero, "cider_d": [0.5, 0.5]},
                "refined, top-k 1": {"named": top1, "top_right": right, "cider_d": [1.0, 0.5]},
            }
        }

    table = pooled([run([0.0, 1.0], [1.0, 1.0], [1.0, 0.0]), run([0.0, 0.0], [1.0, 0.0], [1.0, 1.0])])
    row = table["mixtures"]["refined, top-k 1"]
    assert row["named"]["count"] == 3 and row["top_right"]["count"] == 3
    assert row["named_versus_zero_shot"]["per_run"] == [0.5, 0.5]
    assert np.isclose(row["named_versus_zero_shot"]["pooled"], 0.5) and np.isclose(row["cider_d"], 0.75)
    assert np.isclose(row["cider_d_versus_zero_shot"]["pooled"], 0.25)
    zero_shot = table["mixtures"]["zero-shot"]
    assert zero_shot["named"]["count"] == 1 and "named_versus_zero_shot" not in zero_shot


def test_kb_clips_read_audio_only_inside_the_runs_roots(tmp_path, shared_data):
    run, data = tmp_path / "run", shared_data
    clip = next((data / "esc50_cc").glob("*.flac"))
    folder = run / "kb" / "refined"
    (folder / "data").mkdir(parents=True)
    captions = pa.table({"audio_id": [clip.stem, clip.stem], "caption": ["first caption", "second caption"]})
    pq.write_table(captions, folder / "data" / "train-0.parquet")

    def clip_table(path: str) -> None:
        table = pa.table({"audio_id": [clip.stem], "audio_root": ["esc50_cc"], "audio_path": [path]})
        pq.write_table(table, folder / "clips.parquet")

    clip_table(clip.name)
    kb = kb_clips(run, "refined", data)
    assert kb.ids == [clip.stem] and kb.captions == ["first caption"] and kb.paths == [clip.resolve()]
    other = next((data / "esc50_more").glob("*.flac"))
    clip_table(f"../esc50_more/{other.name}")  # an audio file outside its root's folder
    with pytest.raises(AudioLocationError, match="esc50_cc"):
        kb_clips(run, "refined", data)
