"""The mini report's arithmetic: wall time from stage spans, and the interval of a measured share."""

import pytest

from paircap.statistics import wilson_interval
from recipes.mini.local.report import wall_seconds, zero_shot_table


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
