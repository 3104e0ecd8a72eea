"""The mini report's arithmetic: wall time from stage spans, and the interval of a measured share."""

import pytest

from paircap.statistics import wilson_interval
from recipes.mini.local.report import audio_retrieval_table, wall_seconds, zero_shot_table


def test_wall_time_counts_side_by_side_stages_once_and_skips_the_pause_between_runs():
    records = [
        {"stage": "corpus", "seconds": 10, "started": 0, "finished": 10},
        {"stage": "clap", "seconds": 50, "started": 10, "finished": 60},
        {"stage": "lm", "seconds": 80, "started": 10, "finished": 90},  # beside clap
        {"stage": "stage1", "seconds": 30, "started": 1000, "finished": 1030},  # resumed after a pause
        {"stage": "old", "seconds": 7},  # a record from before spans were kept
    ]
    assert wall_seconds(records) == pytest.approx(90 + 30 + 7)


def test_wilson_interval_of_a_rare_share():
    low, high = wilson_interval(3, 1000)  # the textbook values: 0.102 % to 0.879 %
    assert low == pytest.approx(0.00102, abs=2e-5) and high == pytest.approx(0.00879, abs=2e-5)
    assert wilson_interval(0, 200)[0] == 0.0 and 0 < wilson_interval(0, 200)[1] < 0.02


def test_zero_shot_table_gives_the_count_interval_and_multiple_of_chance():
    scores = {"stage2_phase2": {"test_mixtures": {"both": 0.015, "any": 0.3, "count": 1000}, "cider_d": 0.3,
                                "distinct_captions": 400}}  # fmt: skip
    row = zero_shot_table(scores).splitlines()[-1]
    assert row.startswith("| curriculum (phase 2) | 1.5 % (15 of 1000) | 0.9 % to 2.5 % | 18 | 30.0 % | 0.300 | 400 |")


def test_the_retrieval_table_places_the_pretrained_tower_under_the_clap():
    scores = {"R@1": 0.5, "R@5": 0.7, "R@1_own_recording_excluded": 0.1, "R@5_own_recording_excluded": 0.2}
    retrieval = {"clap_audio_embedding": scores | {"R@1_against_training_clips": 0.4}, "log_mel_statistics": scores}
    tower = {"pooled": scores | {"R@1_against_training_clips": 0.45}, "predicted_teacher_embedding": scores}
    rows = audio_retrieval_table(retrieval, tower).splitlines()[2:]
    assert [row.split(" | ")[0] for row in rows] == [
        "| trained CLAP audio embedding (the KBs' retrieval space)",
        "| its audio tower pretrained on the teacher, before the CLAP stage (`clap_audio`): pooled",
        "| the same tower's prediction of the teacher's embedding",
        "| log-mel mean and deviation per mel bin (nothing learnt)",
    ]
    assert rows[1].split(" | ")[1:3] == ["45.0 %", "n/a"]  # the tower's file has no R@5 against the training clips
    assert len(audio_retrieval_table(retrieval).splitlines()) == 4  # a run without the stage: no tower rows
