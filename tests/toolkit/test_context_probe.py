"""The context probe: its conditions, metrics on hand-made predictions, and captioning with a tiny release."""

import json

import numpy as np
import pytest
import torch

from paircap.context_probe import (
    ProbeItem,
    Shot,
    derangement,
    encode_clips,
    probe_metrics,
    probe_table,
    reference_conditions,
    run_context_probe,
    write_context_probe,
)


def names(caption: str, label: str) -> bool:
    return label in caption


def test_derangement_moves_every_item_and_is_seeded():
    for seed in range(5):
        order = derangement(6, seed)
        assert sorted(order) == list(range(6)) and all(i != j for i, j in enumerate(order))
    assert derangement(6, 1) == derangement(6, 1)
    with pytest.raises(ValueError, match="2 items"):
        derangement(1)


def test_reference_conditions():
    items = [ProbeItem(f"c{i}", None, [f"ref {i} a", f"ref {i} b"]) for i in range(5)]
    conditions = reference_conditions(items, control_k=2, seed=7)
    assert conditions == reference_conditions(items, control_k=2, seed=7)  # deterministic adversarial choice
    assert conditions["none"] == [[]] * 5
    assert conditions["oracle"] == [[Shot(i, f"ref {i} a")] for i in range(5)]  # its own clip, its first reference
    for i, (shot,) in enumerate(conditions["adversarial"]):
        assert shot.clip == i and shot.caption != f"ref {i} a" and shot.caption.endswith(" a")
    for i, shots in enumerate(conditions["control"]):
        assert len(shots) == 2 and all(shot.clip != i and shot.caption == f"ref {shot.clip} a" for shot in shots)
    with pytest.raises(ValueError, match="control k"):
        reference_conditions(items, control_k=5)


def test_metrics_on_hand_made_predictions():
    items = [
        ProbeItem(str(i), None, [f"a {label} sound"], label) for i, label in enumerate(["dog", "cat", "cow", "pig"])
    ]
    conditions = {
        "none": [[]] * 4,
        "oracle": [[Shot(i, f"a {item.label} barks", item.label)] for i, item in enumerate(items)],
        "adversarial": [[Shot(i, "a hen clucks", "hen")] for i in range(4)],
        "control": [[Shot(4, "a hen clucks", "hen"), Shot(5, "rain falls", "rain")] for _ in range(4)],
    }
    predictions = {
        "none": ["a dog", "noise", "noise", "noise"],
        "oracle": ["a dog barks", "the cat", "a cow", "noise"],  # one verbatim copy, 3 of 4 named
        "adversarial": ["A hen clucks!", "a hen", "cow", "noise"],  # pulled: 2 of 4
        "control": ["rain", "a cat", "noise", "noise"],
    }
    result = probe_metrics(items, conditions, predictions, names)
    rows = result["conditions"]
    assert rows["none"]["names_label"]["count"] == 1 and rows["none"]["copy"] is None
    assert rows["none"]["pulled"] is None and rows["oracle"]["pulled"] is None  # nothing foreign was shown
    assert rows["oracle"]["names_label"]["count"] == 3 and rows["oracle"]["copy"]["count"] == 1
    assert rows["adversarial"]["pulled"]["count"] == 2 and rows["adversarial"]["copy"]["count"] == 1
    assert rows["control"]["pulled"]["count"] == 1 and rows["control"]["names_label"]["share"] == 0.25
    low, high = rows["oracle"]["names_label"]["low"], rows["oracle"]["names_label"]["high"]
    assert low < 0.75 < high
    oracle = result["versus_none"]["oracle"]
    assert (oracle["a_only"], oracle["b_only"]) == (2, 0) and oracle["difference"] == pytest.approx(0.5)
    assert oracle["mcnemar_p"] == pytest.approx(0.5)
    assert "| oracle | 75 % [" in probe_table(result)


def test_unlabelled_metrics_pull_by_content_words_and_cider():
    items = [ProbeItem("0", None, ["a dog barks loudly"]), ProbeItem("1", None, ["rain falls on a roof"])]
    conditions = {
        "none": [[], []],
        "oracle": [[Shot(0, "a dog barks loudly")], [Shot(1, "rain falls on a roof")]],
        "adversarial": [[Shot(0, "rain falls on a roof")], [Shot(1, "a dog barks loudly")]],
    }
    predictions = {
        "none": ["a dog", "rain"],
        "oracle": ["a dog barks loudly", "rain"],
        "adversarial": ["rain falls on a roof", "rain falls"],  # item 0 pulled and copied; item 1 keeps its words
    }
    cider = {"none": [0.5, 0.5], "oracle": [2.0, 0.5], "adversarial": [0.0, 0.4]}
    result = probe_metrics(items, conditions, predictions, cider=cider)
    rows = result["conditions"]
    assert result["measure"] == "cider_d" and rows["oracle"]["cider_d"] == 1.25
    assert rows["adversarial"]["pulled"]["count"] == 1 and rows["adversarial"]["copy"]["count"] == 1
    assert rows["oracle"]["pulled"] is None and rows["oracle"]["copy"]["count"] == 1
    assert result["versus_none"]["oracle"]["difference"] == pytest.approx(0.75)


@pytest.fixture(scope="module")
def tones(tiny_release):
    rate = 48000
    t = np.arange(3 * rate) / rate
    return [{"array": (0.3 * np.sin(2 * np.pi * f * t)).astype(np.float32), "sampling_rate": rate}
            for f in (220, 440, 880, 1760)]  # fmt: skip


def test_clip_tokens_are_the_query_path_tokens(tiny_release, tones):
    _, model, processor = tiny_release
    (encoded,) = encode_clips(model, processor, tones[:1])
    inputs = processor(audio=tones[:1])
    with torch.no_grad():
        query = model.encode_audio(inputs["input_features"], inputs["audio_window_counts"]).audio_tokens
    torch.testing.assert_close(encoded["audio_tokens"], query.flatten(0, 1))
    assert encoded["is_long"] is False


class RecordingProcessor:
    """The processor, recording what each call put in the prompts."""

    def __init__(self, processor):
        self.processor, self.calls = processor, []

    def __call__(self, **kwargs):
        self.calls.append(kwargs)
        return self.processor(**kwargs)

    def __getattr__(self, name):
        return getattr(self.processor, name)


def test_the_probe_captions_every_condition_with_the_query_s_own_tokens(tiny_release, tones, tmp_path):
    _, model, processor = tiny_release
    items = [ProbeItem(f"tone{i}", tone, [f"a tone number {i}"], label) for i, (tone, label) in
             enumerate(zip(tones[:3], ["low", "mid", "high"], strict=True))]  # fmt: skip
    conditions = reference_conditions(items, control_k=1, seed=0)
    conditions["control_pool"] = [[Shot(3, "a very high tone", "top")] for _ in items]
    recording = RecordingProcessor(processor)
    result = run_context_probe(
        model, recording, items, conditions, pool=tones[3:], names_label=names, batch_size=2, max_new_tokens=3,
        do_sample=False,
    )  # fmt: skip
    assert len(recording.calls) == 2 * len(conditions)  # 3 items in batches of 2, per condition
    oracle_calls = recording.calls[2:4]
    for call in oracle_calls:
        for query, (example,) in zip(call["audio"], call["examples"], strict=True):
            assert example["audio_tokens"] is query["audio_tokens"]  # the query's own tokens, not a re-encoding
    pool_example = recording.calls[-1]["examples"][0][0]
    torch.testing.assert_close(
        pool_example["audio_tokens"], encode_clips(model, processor, tones[3:])[0]["audio_tokens"]
    )
    records = result["records"]
    assert [r["item_id"] for r in records] == ["tone0", "tone1", "tone2"]
    assert records[1]["oracle"]["injected"] == ["a tone number 1"] and records[1]["oracle"]["own_clip"] == [True]
    assert records[0]["control_pool"]["injected_labels"] == ["top"]
    assert all(isinstance(r[name]["prediction"], str) for r in records for name in conditions)
    assert set(result["conditions"]) == set(conditions) and set(result["versus_none"]) == set(conditions) - {"none"}
    json_path, table_path = write_context_probe(result, tmp_path)
    assert json.loads(json_path.read_text())["settings"]["items"] == 3
    assert "| control_pool |" in table_path.read_text()


def test_a_shot_outside_the_items_and_pool_is_refused(tiny_release, tones):
    _, model, processor = tiny_release
    items = [ProbeItem("a", tones[0], ["x"]), ProbeItem("b", tones[1], ["y"])]
    with pytest.raises(ValueError, match="shot clip 5"):
        run_context_probe(model, processor, items, {"control": [[Shot(5, "z")], []]}, max_new_tokens=2)


def test_evaluate_context_probe_on_a_tiny_release(tiny_release, corpora, tmp_path, capsys):
    from datasets_scripts.readers import read_corpus
    from paircap.cli import main as paircap_main

    data = tmp_path / "clotho_evaluation"
    read_corpus("clotho", corpora["clotho"], "evaluation").save_to_disk(str(data))
    argv = [
        "evaluate", "--model", str(tiny_release[0]), "--data", str(data), "--context-probe", "--probe-examples", "2",
        "--limit", "3", "--batch-size", "3", "--max-new-tokens", "4", "--output-dir", str(tmp_path / "probe"),
    ]  # fmt: skip
    assert paircap_main(argv) == 0
    assert "| oracle |" in capsys.readouterr().out
    result = json.loads((tmp_path / "probe" / "context_probe.json").read_text())
    assert result["measure"] == "cider_d" and result["settings"]["items"] == 3
    assert set(result["conditions"]) == {"none", "oracle", "adversarial", "control"}
    assert all(row["cider_d"] >= 0 for row in result["conditions"].values())
    assert all(len(record["control"]["injected"]) == 2 for record in result["records"])
    assert set(result["versus_none"]) == {"oracle", "adversarial", "control"}


@pytest.mark.parametrize(
    "extra, message",
    [(["--kb", "kb"], "drop --kb"), (["--probe-examples", "9"], "more clips than --probe-examples 9")],
)
def test_evaluate_context_probe_refuses_what_it_cannot_do(tiny_release, corpora, tmp_path, capsys, extra, message):
    from datasets_scripts.readers import read_corpus
    from paircap.cli import main as paircap_main

    data = tmp_path / "clotho_evaluation"
    read_corpus("clotho", corpora["clotho"], "evaluation").save_to_disk(str(data))
    argv = ["evaluate", "--model", str(tiny_release[0]), "--data", str(data), "--context-probe", "--limit", "3",
            "--output-dir", str(tmp_path / "probe"), *extra]  # fmt: skip
    assert paircap_main(argv) == 2
    error = capsys.readouterr().err.strip().splitlines()
    assert error[-1].startswith("paircap evaluate: error:") and message in error[-1]
