"""The `proof` goals pooled over seeds: the context probe's records and the novel-events results of two runs, scored
per item and pooled with paired intervals."""

import json
from pathlib import Path

import pytest

from recipes.mini.local.goals import A2A, CONTROL, ZERO_SHOT, markdown, measure


def probe_record(item: str, none: str, oracle: str, adversarial: str) -> dict:
    return {
        "item_id": item,
        "label": "dog",
        "none": {"prediction": none, "injected": [], "injected_labels": []},
        "oracle": {"prediction": oracle, "injected": ["a dog barks"], "injected_labels": ["dog"]},
        "adversarial": {"prediction": adversarial, "injected": ["rain falls"], "injected_labels": ["rain"]},
    }


def write_run(folder: Path, records: list[dict], novel: dict[str, list[int]], variant: str | None = None) -> None:
    base = folder / "context_ablations" / variant if variant else folder
    probe = base / "mechanism" / ("" if variant else "stage2_phase2") / "context_probe.json"
    probe.parent.mkdir(parents=True, exist_ok=True)
    probe.write_text(json.dumps({"records": records}))
    items = [f"clip-{i}" for i in range(len(next(iter(novel.values()))))]
    settings = [
        {"label": label, "novel": {"items": dict(zip(items, flags, strict=True))}} for label, flags in novel.items()
    ]
    results = base / "novel" / "results.json"
    results.parent.mkdir(parents=True, exist_ok=True)
    results.write_text(json.dumps({"items": {"novel": items}, "settings": settings}))


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
    novel1 = {ZERO_SHOT: [0, 0], A2A: [1, 1], control: [0, 1]}
    write_run(tmp_path / "s0", seed0, novel0)
    write_run(tmp_path / "s1", seed1, novel1)
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
    versus = {(row["setting"], row["versus"]): row for row in novel["comparisons"]}
    assert versus[A2A, ZERO_SHOT]["per_run"] == [0.5, 1.0] and versus[A2A, ZERO_SHOT]["pooled"] == pytest.approx(0.75)
    assert versus[A2A, control]["pooled"] == pytest.approx(0.5)
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
