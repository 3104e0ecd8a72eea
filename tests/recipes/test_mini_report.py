"""The mini report's arithmetic: wall time from stage spans, the interval of a measured share, and what the caption
and the top retrieved pair name."""

import json
from types import SimpleNamespace

import pytest

from paircap.statistics import wilson_interval
from recipes.mini.local.evaluation import event_scores
from recipes.mini.local.report import Evaluation, audio_retrieval_table, search_table, wall_seconds, zero_shot_table


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


def test_the_search_table_sets_what_the_top_pair_names_beside_what_the_caption_names(tmp_path):
    mixtures = tmp_path / "corpus" / "mixtures"
    mixtures.mkdir(parents=True)
    events = {"mix-test-00000": ["dog", "rain"], "mix-test-00001": ["cat", "rooster"]}
    lines = [json.dumps({"audio_id": clip, "events": pair}) for clip, pair in events.items()]
    (mixtures / "mixtures.jsonl").write_text("\n".join(lines) + "\n")
    evaluation = tmp_path / "evaluation"
    (evaluation / "predictions").mkdir(parents=True)

    def write(name: str, settings: dict, records: list[dict]) -> None:
        text = "\n".join(json.dumps(line) for line in [settings, *records])
        (evaluation / "predictions" / f"{name}.jsonl").write_text(text + "\n")

    write("zero-shot", {}, [{"audio_id": "mix-test-00000", "caption": "a dog barks"},
                            {"audio_id": "mix-test-00001", "caption": "wind blows"}])  # fmt: skip
    pairs = [[{"caption": "a cat meows"}, {"caption": "a dog barks"}], [{"caption": "a rooster crows"}]]
    write(
        "audio2audio__refined__w0.5__k4",
        {},
        [
            {"audio_id": "mix-test-00000", "caption": "a dog barks", "retrieved": pairs[0]},  # top pair: a cat, wrong
            {"audio_id": "mix-test-00001", "caption": "a cat meows", "retrieved": pairs[1]},
            {"audio_id": "mix-test-00002", "error": "unreadable"},  # failed items are not scored
        ],
    )
    scores = event_scores(SimpleNamespace(mixtures_dir=mixtures), evaluation)
    assert scores["zero-shot"]["final"]["any"] == 0.5 and scores["zero-shot"]["top_pair"] is None
    assert scores["audio2audio__refined__w0.5__k4"]["final"]["any"] == 1.0
    assert scores["audio2audio__refined__w0.5__k4"]["top_pair"] == {"both": 0.0, "any": 0.5, "count": 2}
    (evaluation / "events.json").write_text(json.dumps(scores))
    runs = [
        {"name": "zero-shot", "mode": "none", "knowledge_base": None, "fusion_weight": 0.5, "top_k": 0},
        {"name": "audio2audio__refined__w0.5__k4", "mode": "audio2audio", "knowledge_base": "kb/refined",
         "fusion_weight": 0.5, "top_k": 4},
    ]  # fmt: skip
    (evaluation / "results.json").write_text(json.dumps({"runs": runs}))
    rows = search_table(Evaluation(evaluation), ["refined"], 0.5, 4).splitlines()
    assert rows[2] == "| zero-shot | 50.0 % |" and rows[3] == "| audio2audio | 100.0 % / 50.0 % |"
    assert rows[4] == "| audio2mixture | n/a / n/a |"
