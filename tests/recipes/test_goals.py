"""The `proof` goals pooled over seeds: the context probe's records and the novel-events results of two runs, scored
per item and pooled with paired intervals."""

import json
from pathlib import Path

import pytest

from recipes.mini.local.goals import A2A, CONTROL, TOP1, ZERO_SHOT, markdown, measure


def probe_record(item: str, none: str, oracle: str, adversarial: str) -> dict:
    return {
        "item_id": item,
        "label": "dog",
        "none": {"prediction": none, "injected": [], "injected_labels": []},
        "oracle": {"prediction": oracle, "injected": ["a dog barks"], "injected_labels": ["dog"]},
        "adversarial": {"prediction": adversarial, "injected": ["rain falls"], "injected_labels": ["rain"]},
    }


def write_run(
    folder: Path, records: list[dict], novel: dict[str, list[int]], variant: str | None = None, top: list[str] = ()
) -> None:
    """A run's context probe and novel-events result; `top`: the clip ids audio2audio retrieved first per novel clip
    (ESC-50 ids, whose last field is the class)."""
    base = folder / "context_ablations" / variant if variant else folder
    probe = base / "mechanism" / ("" if variant else "stage2_phase2") / "context_probe.json"
    probe.parent.mkdir(parents=True, exist_ok=True)
    probe.write_text(json.dumps({"records": records}))
    items = [f"1-10{i}-A-5" for i in range(len(next(iter(novel.values()))))]  # class 5
    settings = [
        {"label": label, "run": label.replace(" ", "_"), "novel": {"items": dict(zip(items, flags, strict=True))}}
        for label, flags in novel.items()
    ]
    results = base / "novel" / "results.json"
    results.parent.mkdir(parents=True, exist_ok=True)
    results.write_text(json.dumps({"items": {"novel": items}, "settings": settings}))
    if top:
        predictions = base / "novel" / "evaluation" / "predictions" / f"{A2A.replace(' ', '_')}.jsonl"
        predictions.parent.mkdir(parents=True)
        lines = [{"run": {}}] + [
            {"audio_id": item, "retrieved": [{"audio_id": first}]} for item, first in zip(items, top, strict=True)
        ]
        predictions.write_text("\n".join(map(json.dumps, lines)))


def test_goals_pool_the_seeds_items_with_paired_differences(tmp_path):
    control = CONTROL.format("audio2audio")
    seed0 = [
        probe_record("a", "a cat meows", "a dog barks", "rain falls"),
        probe_record("b", "a dog barks", "a dog", "a dog barks"),
    ]
    seed1 = [
        probe_record("c", "wind blows", "a dog barks loudly", "wind blows"),
        probe_record("d", "birds", "birds", "heavy rain"),
    ]
    novel0 = {ZERO_SHOT: [0, 0], A2A: [1, 0], control: [0, 0]}
    novel1 = {ZERO_SHOT: [0, 0], A2A: [1, 1], control: [0, 1], TOP1.format(A2A): [1, 1]}  # a setting s0 lacks
    write_run(tmp_path / "s0", seed0, novel0, top=["2-200-A-7", "2-201-A-5"])  # another class first, then class 5
    write_run(tmp_path / "s1", seed1, novel1, top=["2-202-A-5", "2-203-B-5"])
    write_run(tmp_path / "s0", seed0, novel0, variant="whole_lm")  # a variant of one run only: left out
    result = measure([tmp_path / "s0", tmp_path / "s1"], resamples=200)

    assert list(result["mechanism"]) == ["curriculum"]
    mechanism = result["mechanism"]["curriculum"]
    assert mechanism["none"]["count"] == 1 and mechanism["none"]["n"] == 4  # only item b names its dog zero-shot
    gain = mechanism["oracle_gain"]  # oracle names the dog for a, b, c: 3 of 4 against 1 of 4
    assert gain["per_run"] == [0.5, 0.5] and gain["pooled"] == pytest.approx(0.5) and gain["n"] == 4
    assert mechanism["pulled"]["count"] == 2 and mechanism["pulled_per_run"] == [0.5, 0.5]  # items a and d say rain

    novel = result["novel"]["curriculum"]
    assert novel["settings"][A2A]["count"] == 3 and novel["settings"][ZERO_SHOT]["count"] == 0
    assert TOP1.format(A2A) not in novel["settings"]  # pooled only where every run has it
    versus = {(row["setting"], row["versus"]): row for row in novel["comparisons"]}
    assert versus[A2A, ZERO_SHOT]["per_run"] == [0.5, 1.0] and versus[A2A, ZERO_SHOT]["pooled"] == pytest.approx(0.75)
    assert versus[A2A, control]["pooled"] == pytest.approx(0.5)
    retrieval = novel["retrieval"][A2A]  # 3 of 4 clips had their class first; 2 of those 3 were named
    assert retrieval["top1_same_class"]["count"] == 3 and retrieval["named_when_top1_same_class"]["count"] == 2
    assert list(novel["retrieval"]) == [A2A]  # no predictions file for the other settings
    table = markdown(result)
    assert "+50.0 [" in table and "75 % (3 of 4;" in table


def test_a_variant_every_run_trained_gets_its_rows(tmp_path):
    records = [probe_record("a", "a cat meows", "a dog barks", "rain falls")]
    for run in ("s0", "s1"):
        write_run(tmp_path / run, records, {ZERO_SHOT: [0], A2A: [1]})
        write_run(tmp_path / run, records, {ZERO_SHOT: [0], A2A: [0]}, variant="whole_lm")
    result = measure([tmp_path / "s0", tmp_path / "s1"], resamples=50)
    assert list(result["mechanism"]) == ["curriculum", "whole_lm"]
    assert result["novel"]["whole_lm"]["settings"][A2A]["count"] == 0


def test_right_pair_and_control_conditions_get_their_rows_where_every_run_has_them(tmp_path):
    def record(item: str, none: str, right_first: str, right_last: str) -> dict:
        conditions = {"right_first_k4": right_first, "right_last_k4": right_last, "control_k4": "rain falls"}
        return probe_record(item, none, "a dog barks", "rain falls") | {
            name: {"prediction": prediction, "injected": [], "injected_labels": []}
            for name, prediction in conditions.items()
        }

    novel = {ZERO_SHOT: [0]}
    seed0 = [record("a", "birds", "rain", "a dog barks"), record("b", "a dog", "a dog", "a dog")]
    seed1 = [record("c", "wind", "rain", "a dog barks")]
    write_run(tmp_path / "s0", seed0, novel)
    write_run(tmp_path / "s1", seed1, novel)
    old = [probe_record("a", "birds", "a dog barks", "rain falls")]  # a probe from before these conditions
    write_run(tmp_path / "s0", old, novel, variant="whole_lm")
    write_run(tmp_path / "s1", seed1, novel, variant="whole_lm")
    result = measure([tmp_path / "s0", tmp_path / "s1"], resamples=50)

    picking = result["mechanism"]["curriculum"]["picking"]
    assert list(picking) == ["right_first_k4", "right_last_k4", "control_k4"]
    last, first, control = picking["right_last_k4"], picking["right_first_k4"], picking["control_k4"]
    assert last["named"]["count"] == 3 and last["pooled"] == pytest.approx(2 / 3)  # b named the dog zero-shot too
    assert first["per_run"] == [0.0, 0.0] and control["pooled"] == pytest.approx(-1 / 3)
    assert result["mechanism"]["whole_lm"]["picking"] == {}  # one run's probe lacks them
    table = markdown(result)
    assert "| curriculum | right_last_k4 | 100 % (3 of 3;" in table and "| whole_lm | right_" not in table


def test_the_oracle_and_a_right_pair_are_split_by_known_and_novel_classes(tmp_path):
    def record(item: str, label: str, none: str, oracle: str, right: str) -> dict:
        return probe_record(item, none, oracle, "rain falls") | {
            "label": label,
            "right_k1": {"prediction": right, "injected": [], "injected_labels": []},
        }

    seed0 = [
        record("a", "dog", "birds", "a dog barks", "a dog barks"),  # known: the oracle and the right pair name it
        record("b", "frog", "birds", "a frog croaks", "birds"),  # novel: only the oracle names it
    ]
    seed1 = [record("c", "frog", "a frog", "a frog", "a frog")]  # named zero-shot already: no gain
    for name, records in (("s0", seed0), ("s1", seed1)):
        write_run(tmp_path / name, records, {ZERO_SHOT: [0]})
        corpus = tmp_path / name / "corpus"
        corpus.mkdir()
        (corpus / "novel_classes.json").write_text(json.dumps({"classes": ["frog"]}))
    result = measure([tmp_path / "s0", tmp_path / "s1"], resamples=50)

    known, novel = result["mechanism"]["curriculum"]["by_class"].values()
    assert known["none"]["n"] == 1 and known["oracle"]["pooled"] == 1.0 and known["right_k1"]["pooled"] == 1.0
    assert known["oracle"]["per_run"] == [1.0] and novel["oracle"]["per_run"] == [1.0, 0.0]  # s1 has no known clip
    assert novel["none"]["n"] == 2 and novel["none"]["count"] == 1
    assert novel["oracle"]["pooled"] == 0.5 and novel["right_k1"]["pooled"] == 0.0
    assert list(result["mechanism"]["curriculum"]["by_class"]) == ["known", "novel"]
    assert "| curriculum | novel | 50 % (1 of 2;" in markdown(result)
