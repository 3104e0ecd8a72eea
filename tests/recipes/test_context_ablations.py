"""Which `context_ablations` variants a run trains, from which release and with which settings each phase trains, and
a rerun of a stage whose record lacks a part the run asks for (a variant added after the run)."""

import json
from pathlib import Path

import pytest

from recipes.mini.local import context_ablations
from recipes.mini.local.context_ablations import VARIANTS, selected, train_variant, variant_names
from recipes.mini.local.layout import MiniRun
from recipes.mini.local.scales import load_scale
from recipes.mini.run import finished


def run_at(tmp_path: Path, scale: str = "full", variants: tuple[str, ...] = ()) -> MiniRun:
    return MiniRun(tmp_path, tmp_path, load_scale(scale), stages=("context_ablations",), variants=variants)


def test_a_run_trains_the_variants_asked_for(tmp_path):
    assert selected(run_at(tmp_path)) == VARIANTS
    assert variant_names(run_at(tmp_path, "quick")) == load_scale("quick").context_variants
    assert variant_names(run_at(tmp_path, "quick", ("ia3_and_head",))) == ("ia3_and_head",)  # --variants
    with pytest.raises(ValueError, match="unknown \\['nope'\\]"):
        selected(run_at(tmp_path, variants=("nope",)))


def test_a_stage_record_without_a_part_asked_for_is_not_finished(tmp_path):
    run = run_at(tmp_path, variants=("paper_raft", "ia3_and_head"))
    record = run.stage_record("context_ablations")
    assert not finished(run, "context_ablations")
    record.parent.mkdir()
    record.write_text(json.dumps({"stage": "context_ablations", "seconds": 1}))  # a run from before the parts
    assert not finished(run, "context_ablations")
    record.write_text(json.dumps({"stage": "context_ablations", "seconds": 1, "parts": ["ia3_and_head"]}))
    assert not finished(run, "context_ablations") and finished(
        run_at(tmp_path, variants=("ia3_and_head",)), "context_ablations"
    )
    record.write_text(json.dumps({"stage": "context_ablations", "seconds": 1, "parts": ["ia3_and_head", "paper_raft"]}))
    assert finished(run, "context_ablations")


def test_a_variant_trains_its_phase_1_from_stage_1_then_phase_2_from_it(tmp_path, monkeypatch):
    calls = []
    monkeypatch.setattr(context_ablations, "train_captioner", lambda run, name, start, *args, **kw: calls.append(
        (name, start, kw)))  # fmt: skip
    run = run_at(tmp_path)
    variants = {variant.name: variant for variant in VARIANTS}
    train_variant(run, variants["text_replay"])
    (phase1, start1, settings1), (phase2, start2, settings2) = calls
    folder = tmp_path / "context_ablations" / "text_replay"
    assert (phase1, start1, settings1["output"]) == ("stage2_phase1", run.release("stage1"), folder / "phase1")
    assert (phase2, start2, settings2["output"]) == ("stage2_phase2", folder / "phase1" / "release", folder)
    for settings in (settings1, settings2):  # both phases replay the `lm` stage's text, written as it wrote it
        assert settings["text_replay_pairs"] == [str(run.pairs("text"))] and settings["text_replay_weight"] > 0
        assert "{keywords}" in settings["text_template"]
    calls.clear()
    train_variant(run, variants["whole_lm"])  # the earlier recipe: the whole decoder and its head, in both phases
    assert [(kw["train_language_model"], kw["train_lm_head"]) for _, _, kw in calls] == [(True, True)] * 2
    assert "text_replay_pairs" not in calls[0][2]
    calls.clear()
    (folder.parent / "no_query_dropout" / "release").mkdir(parents=True)
    (folder.parent / "no_query_dropout" / "release" / "README.md").write_text("exported")
    train_variant(run, variants["no_query_dropout"])  # exported: not trained again
    assert calls == []
