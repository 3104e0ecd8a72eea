"""The mini recipe's claims table: paired comparisons of two settings' per-item scores on the same test mixtures,
per run and pooled over runs (seeds), with a verdict from the pooled bootstrap interval."""

import json
from pathlib import Path

import pytest

from paircap.evaluation import EvaluationRun, plan_runs, rescoring_runs
from recipes.mini.local import claims

SCENES = [  # (events, a caption naming both); CIDEr-D weighs n-grams by rarity, so the items differ
    (("dog", "rain"), "a dog barks while rain falls"),
    (("cat", "rooster"), "a cat meows as a rooster crows"),
    (("cow", "wind"), "a cow moos in the wind"),
]
EVENTS = {f"mix-test-{i:05d}": SCENES[i % 3][0] for i in range(12)}
GOOD = [SCENES[i % 3][1] for i in range(12)]
BAD = ["a clock ticks"] * 12


def write_run(
    folder: Path, better: list[str], other: list[str], settings: tuple = (claims.P2P, claims.ZERO_SHOT)
) -> Path:
    """A run folder (the full scale's top-k 4 and 4 rescoring candidates) with the mixtures' events and two
    predictions files: by default generative pair-to-pair and zero-shot."""
    mixtures = folder / "corpus" / "mixtures"
    mixtures.mkdir(parents=True)
    lines = [json.dumps({"audio_id": clip, "events": list(events)}) for clip, events in EVENTS.items()]
    (mixtures / "mixtures.jsonl").write_text("\n".join(lines) + "\n")
    (folder / "settings.json").write_text(json.dumps({"scale": {"max_examples": 4, "rescore_candidates": 4}}))
    for setting, captions in zip(settings, (better, other), strict=True):
        path = setting.path(folder)
        path.parent.mkdir(parents=True, exist_ok=True)
        records = [
            {"audio_id": clip, "caption": caption, "references": [reference, "there is " + reference]}
            for clip, caption, reference in zip(EVENTS, captions, GOOD, strict=True)
        ]
        records.append({"audio_id": "mix-test-99999", "references": GOOD[:1], "error": "unreadable"})  # not scored
        path.write_text("\n".join(json.dumps(line) for line in [{"settings": {}}, *records]) + "\n")
    return folder


def test_retrieval_that_names_more_events_reproduces_the_claim(tmp_path):
    run = write_run(tmp_path / "seed0", GOOD[:10] + BAD[:2], BAD[:10] + GOOD[10:])
    (row,) = claims.compare([run], resamples=500)
    assert row["claim"].startswith("retrieval helps")
    named = row["both_named"]
    assert named["items"] == 12
    assert named["pooled"][0] == pytest.approx((10 - 2) / 12)
    assert named["verdict"] == "reproduces"
    assert row["cider_d"]["verdict"] == "reproduces" and row["cider_d"]["pooled"][0] > 0


def test_pooled_over_seeds_and_no_difference_cannot_tell(tmp_path):
    better, other = GOOD[:6] + BAD[6:], BAD[:6] + GOOD[6:]  # six items won each way
    runs = [write_run(tmp_path / name, better, other) for name in ("seed0", "seed1")]
    (row,) = claims.compare(runs, resamples=500)
    named = row["both_named"]
    assert named["items"] == 24 and len(named["per_run"]) == 2
    assert named["pooled"][0] == 0.0 and named["verdict"] == "cannot tell at this scale"
    table = claims.markdown([row])
    assert "| retrieval helps" in table and "cannot tell at this scale" in table


def test_naming_one_event_of_each_mixture_counts_apart_from_naming_both(tmp_path):
    one_event = [f"a sound of {SCENES[i % 3][0][0]}" for i in range(12)]  # "a sound of dog": the first event only
    run = write_run(tmp_path / "seed0", one_event, BAD)
    (row,) = claims.compare([run], resamples=500)
    assert row["an_event_named"]["pooled"][0] == pytest.approx(1.0)
    assert row["an_event_named"]["verdict"] == "reproduces"
    assert row["both_named"]["pooled"] == [0.0, 0.0, 0.0]
    assert row["both_named"]["verdict"] == "cannot tell at this scale"
    cells = claims.markdown([row]).splitlines()[-1].split(" | ")
    assert cells[5:11] == ["+100.0 [+100.0, +100.0]", "+100.0", "reproduces", "+0.0 [+0.0, +0.0]", "+0.0"] + [
        "cannot tell at this scale |"
    ]


def test_verdicts_follow_the_interval():
    assert claims.verdict(0.01, 0.2) == "reproduces"
    assert claims.verdict(-0.3, -0.01) == "does not"
    assert claims.verdict(-0.1, 0.1) == "cannot tell at this scale"


def test_the_field_comparisons_name_the_runs_paircap_evaluate_writes(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    (run / "settings.json").write_text(json.dumps({"scale": {"max_examples": 2, "rescore_candidates": 3}}))
    planned = plan_runs(
        [str(tmp_path / "kb" / "refined")],
        ["generative_pair2pair"],
        top_k=2,
        rescoring=[
            *rescoring_runs([3], [0.5], False),
            *rescoring_runs([3], [0.5], True),
            *rescoring_runs([3], [0], False),
        ],
    )
    names = {planned_run.name for planned_run in planned}
    for _, better, other in claims.FIELD_COMPARISONS:
        for setting in (better, other):
            if setting.captioner == claims.RESCORING:
                assert setting.path(run).stem in names
    assert claims.RESCORED_P2P.path(run).name == "generative_pair2pair__refined__w0.5__k2__clap3x0.5.jsonl"
    query = EvaluationRun(
        str(tmp_path / "refined"), "generative_pair2pair", 0.5, 2, num_candidates=3, rescore_query=True
    )
    assert claims.RESCORED_BOTH.path(run).stem == query.name  # both passes rescored


def test_the_trainable_set_comparisons_read_what_the_variant_evaluation_writes(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    (run / "settings.json").write_text(json.dumps({"scale": {"max_examples": 4}}))
    # what `context_ablations.evaluate_variant` plans: zero-shot, audio-to-audio and pair-to-pair on refined
    planned = plan_runs([str(tmp_path / "kb" / "refined")], ["audio2audio", "generative_pair2pair"], top_k=4)
    names = {"zero-shot"} | {planned_run.name for planned_run in planned}
    variant = run / "evaluation" / "context_ablations" / "whole_lm" / "predictions"
    for _, better, other in claims.TRAINABLE_SET_COMPARISONS:
        assert better.captioner == claims.CURRICULUM and better.name.format(top_k=4) == other.path(run).stem
        assert other.path(run).parent == variant and other.path(run).stem in names


def test_runs_against_baseline_runs_pair_the_same_items_and_refuse_other_test_sets(tmp_path):
    runs = [write_run(tmp_path / name, GOOD[:10] + BAD[10:], GOOD) for name in ("new0", "new1")]
    baselines = [write_run(tmp_path / name, BAD, GOOD) for name in ("old0", "old1")]
    rows = claims.compare_with_baselines(runs, baselines, resamples=500)
    (row,) = [row for row in rows if row["better"]["name"] == claims.P2P.name]  # the runs hold p2p and zero-shot
    assert row["claim"] == (
        "generative pair-to-pair (generative_pair2pair__refined__w0.5__k4): these runs vs the baselines"
    )
    assert row["both_named"]["items"] == 24 and row["both_named"]["pooled"][0] == pytest.approx(10 / 12)
    assert row["both_named"]["verdict"] == "better"
    zero_shot = next(row for row in rows if row["better"]["name"] == "zero-shot")
    assert zero_shot["cider_d"]["pooled"][0] == 0.0 and zero_shot["cider_d"]["verdict"] == "cannot tell at this scale"
    other = write_run(tmp_path / "other", BAD, GOOD)
    path = claims.P2P.path(other)
    path.write_text(path.read_text().replace("there is", "here is"))  # another test set: other references
    with pytest.raises(ValueError, match="other references"):
        claims.compare_with_baselines([runs[0]], [other], resamples=100)
    with pytest.raises(ValueError, match="2 runs for 1 baseline runs"):
        claims.compare_with_baselines(runs, baselines[:1])
