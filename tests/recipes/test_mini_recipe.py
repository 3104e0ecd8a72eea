"""`paircap mini --quick`: every stage of the mini recipe on real ESC-50 audio, a few steps each; a
rerun (`python -m recipes.mini.run`, the same command) skips every finished stage; the packed release captions a real
clip offline. `paircap` finds `mini` through the `paircap.commands` entry point that pyproject.toml declares."""

import json
import logging
import os
import shutil
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from datasets import load_from_disk
from huggingface_hub import DatasetCard, ModelCard
from transformers import pipeline

from modeling_paircap.knowledge_base_paircap import PairCapKnowledgeBase
from paircap.caption_data import EvaluationItem, group_references, load_pairs
from paircap.evaluation import previous_results, rescore
from paircap.releases import load_release
from recipes.mini.local import claims, teacher_retrieval
from recipes.mini.local.context_ablations import VARIANTS
from recipes.mini.local.evaluation import add_clap_scores, read_predictions, reusable_predictions
from recipes.mini.local.event_captions import names_event
from recipes.mini.local.mixtures import mixture_events
from recipes.mini.local.novel_events import SETTINGS, evaluate_release, evaluation_runs
from recipes.mini.local.scales import load_scale, scale_names
from recipes.mini.run import (
    ABLATIONS,
    NOVEL,
    STAGES,
    mini_run,
    parse_args,
    run_stages,
    stage_command,
    stage_names,
    warn_of_changed_settings,
)

pytestmark = pytest.mark.slow  # a long file: it starts first (tests/conftest.py)

REPO = Path(__file__).resolve().parents[2]
TEACHER_WEIGHTS = REPO.parent / "shared" / "models" / "efficientat_mn04_as" / "mn04_as_mAP_432.pt"
QUICK_STAGES = [  # every stage, in the order it runs
    "corpus", "init", "clap_audio", "clap", "lm", "assemble", "stage1", "probe", "kb", "stage2_phase1", "stage2_phase2",
    "raft_only", "evaluate", "evaluate_raft_only", "evaluate_stage1", "fit", "zero_shot", "novel", "novel_words",
    "mechanism", "context_ablations", "rescoring", "progressive", "report",
]  # fmt: skip


@pytest.fixture(scope="module")
def environment(command_entry_points) -> dict[str, str]:
    """The subprocesses' environment: offline, this checkout and its entry points (`paircap mini`) first."""
    path = os.pathsep.join([str(command_entry_points), str(REPO)])
    return {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false", "PYTHONPATH": path}


def run(args: list[str], cwd: Path, env: dict[str, str]) -> subprocess.CompletedProcess:
    result = subprocess.run([sys.executable, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-5000:]
    return result


@pytest.fixture(scope="module")
def quick_run(shared_data, environment, tmp_path_factory) -> Path:
    if not (shared_data / "esc50_more" / "manifest.csv").is_file():
        pytest.skip(f"{shared_data / 'esc50_more'} is absent")
    output = tmp_path_factory.mktemp("mini") / "quick"
    args = ["-m", "paircap.cli", "mini", "--output", str(output), "--quick", "--data", str(shared_data), "--jobs", "1"]
    # the CLAP distilled from the AudioSet teacher where its weights sit beside the data (the workspace), else not
    run(args + (["--teacher", str(TEACHER_WEIGHTS)] if TEACHER_WEIGHTS.is_file() else []), REPO, environment)
    return output


def assert_quick_probe_conditions(probe: dict) -> None:
    """The quick scale's context probe conditions: the controls of 1 and max_examples (2) clips, then the right-pair
    conditions, which need a pool clip of every test clip's class (30 training clips may lack some)."""
    conditions = list(probe["conditions"])
    assert conditions[:5] == ["none", "oracle", "adversarial", "control_k1", "control_k2"]
    assert conditions[5:] in ([], ["right_k1", "right_first_k2", "right_last_k2"])


def test_every_stage_runs_and_the_report_has_every_table(quick_run):
    for stage in QUICK_STAGES:
        assert json.loads((quick_run / "stages" / f"{stage}.json").read_text())["seconds"] >= 0
    report = (quick_run / "RESULTS.md").read_text()
    for heading in (
        "Method x knowledge base", "Search against reading", "W sweep", "Top-k sweep", "Training ablation",
        "own training data", "paper's claims",
    ):  # fmt: skip
        assert heading in report
    results = json.loads((quick_run / "evaluation" / "stage2_phase2" / "results.json").read_text())
    names = {run["name"] for run in results["runs"]}
    assert "zero-shot" in names and len(names) >= 10  # zero-shot, 3 modes x 3 KBs, the sweep points
    assert all(run["items"] == 6 and run["failed_items"] == 0 for run in results["runs"])
    events = json.loads((quick_run / "evaluation" / "stage2_phase2" / "events.json").read_text())
    assert set(events) == names and all(0 <= e["final"]["both"] <= 1 for e in events.values())
    assert events["zero-shot"]["top_pair"] is None  # the top retrieved pair's caption, where a run retrieved
    assert all(e["top_pair"]["count"] == 6 for name, e in events.items() if name != "zero-shot")
    clap = json.loads((quick_run / "clap" / "retrieval.json").read_text())
    assert clap["test_clips"] == 6 and 0 <= clap["audio_to_caption_recall@1"] <= clap["audio_to_caption_recall@10"]
    assert 0 <= clap["zero_shot_top2_both_events"] <= 1
    probes = json.loads((quick_run / "clap" / "probes.json").read_text())
    for representation in ("clap_audio_embedding", "log_mel_statistics", "log_mel_statistics_frequency_sorted"):
        scores = probes[representation]
        assert 0 <= scores["test_mixtures_both_events"] <= scores["test_mixtures_any_event"] <= 1
        assert 0 <= scores["held_out_clip_accuracy"] <= 1
    retrieval = probes["audio_to_audio_retrieval"]
    spaces = {"clap_audio_embedding", "log_mel_statistics"} | ({"teacher"} if TEACHER_WEIGHTS.is_file() else set())
    assert retrieval["clips"] == 30 and spaces <= set(retrieval)
    assert all(0 <= retrieval[name]["R@1_own_recording_excluded"] <= retrieval[name]["R@1"] for name in spaces)
    assert "R@1, own recording excluded" in report
    takes = load_from_disk(str(quick_run / "clap" / "augmented_clips" / "pairs"))  # one augmented take per clip
    assert len(set(takes["audio_id"])) == 30 and all(name.endswith("~aug0") for name in takes["audio_id"])
    assert "augmented_clips/pairs" in (quick_run / "clap" / "config.yaml").read_text()
    if TEACHER_WEIGHTS.is_file():  # its targets: every training clip, take and mixture once
        targets = np.load(quick_run / "clap" / "teacher" / "targets.npz")
        assert len(targets["audio_ids"]) == 30 + 30 + 24 and targets["probabilities"].shape == (84, 527)
        assert "distill_targets" in (quick_run / "clap" / "config.yaml").read_text()
        # the CLAP started from the audio tower pretrained on the teacher (stage clap_audio)
        assert (
            f"model_name_or_path: {quick_run / 'clap_audio' / 'clap'}"
            in (quick_run / "clap" / "config.yaml").read_text()
        )
        tower = json.loads((quick_run / "clap_audio" / "retrieval.json").read_text())
        assert set(tower) == {"predicted_teacher_embedding", "pooled"}
        assert all(0 <= scores["R@1_own_recording_excluded"] <= scores["R@1"] <= 1 for scores in tower.values())
    fit = json.loads((quick_run / "evaluation" / "fit.json").read_text())
    assert set(fit) == {"stage1", "stage2_phase1", "stage2_phase2", "raft_only"}
    captioner_train = load_from_disk(str(quick_run / "corpus" / "pairs" / "captioner_train"))
    sources = zip(captioner_train["audio_id"], captioner_train["source"], strict=True)
    trained_clips = {clip for clip, source in sources if source == "esc50"}
    for scores in fit.values():  # of the 30 training clips, those of known classes; and 4 training mixtures
        assert scores["train_clips"]["count"] == len(trained_clips) < 30 and scores["train_mixtures"]["count"] == 4
        assert 0 <= scores["train_mixtures"]["both"] <= scores["train_mixtures"]["any"] <= 1
        assert 1 <= scores["distinct_captions"] <= 34
    zero_shot = json.loads((quick_run / "evaluation" / "zero_shot.json").read_text())
    assert set(zero_shot) == set(fit)  # the grid's 6 test mixtures and 2 more
    assert all(scores["test_mixtures"]["count"] == 8 and scores["cider_d"] >= 0 for scores in zero_shot.values())
    assert "Zero-shot event accuracy on 8 test mixtures" in report
    for captioner in fit:  # the context probe: every captioner on the 30 held-out test clips, once per condition
        probe = json.loads((quick_run / "mechanism" / captioner / "context_probe.json").read_text())
        assert_quick_probe_conditions(probe)
        assert probe["settings"]["items"] == 30 and len(probe["records"]) == 30
        assert all(row["names_label"]["n"] == 30 for row in probe["conditions"].values())
        assert 0 <= probe["versus_none"]["oracle"]["mcnemar_p"] <= 1
    assert "Does each captioner read its prompt?" in report and "| curriculum (phase 2) | oracle |" in report
    quick = [variant for variant in VARIANTS if variant.name in load_scale("quick").context_variants]
    assert json.loads((quick_run / "stages" / "context_ablations.json").read_text())["parts"] == sorted(
        variant.name for variant in quick
    )
    for variant in quick:  # phase 2 again with settings changed (the LM frozen but IA3), with its probes
        folder = quick_run / "context_ablations" / variant.name
        config = yaml.safe_load((folder / "config.yaml").read_text())
        assert config.items() >= variant.settings.items() and config["max_steps"] == load_scale("quick").phase2_steps
        start = folder / "phase1" / "release" if variant.phase1 is not None else quick_run / "stage2_phase1" / "release"
        assert config["model_name_or_path"] == str(start)
        assert bool(config.get("text_replay_pairs")) == variant.text_replay
        probe = json.loads((folder / "mechanism" / "context_probe.json").read_text())
        assert_quick_probe_conditions(probe)  # the captioners' conditions
        assert f"| phase 2, {variant.label} | oracle |" in report
        assert len(json.loads((folder / "novel" / "results.json").read_text())["settings"]) == len(SETTINGS)
        assert (folder / "novel" / "words" / "novel_words.json").is_file()
    assert "### Novel events by training variant" in report and f"| {quick[0].name} |" in report
    for stage in ("clap", "lm", "stage1", "stage2_phase2", "raft_only"):
        assert any("loss" in json.loads(line) for line in (quick_run / stage / "log.jsonl").read_text().splitlines())


def test_rescoring_and_the_progressive_schedule_are_compared_with_their_baselines(quick_run):
    n, p2p = load_scale("quick").rescore_candidates, "generative_pair2pair__refined__w0.5__k2"
    rescoring = quick_run / "evaluation" / "rescoring"
    results = json.loads((rescoring / "results.json").read_text())
    rescored = {
        f"{name}__clap{n}{query}x{weight}" for name in ("zero-shot", p2p) for query, weight in (("", 0.5), ("", 0))
    }
    assert {run["name"] for run in results["runs"]} == {"zero-shot", p2p, f"{p2p}__clap{n}qx0.5", *rescored}
    assert all(run["items"] == 6 and run["failed_items"] == 0 for run in results["runs"])
    assert results["settings"]["copied_from"]["runs"] == ["zero-shot", p2p]  # the `evaluate` stage's, not made again
    for name in ("zero-shot", p2p):
        copy, made = (
            read_predictions(folder / "predictions" / f"{name}.jsonl")
            for folder in (rescoring, rescoring.parent / "stage2_phase2")
        )
        assert [r["caption"] for r in copy] == [r["caption"] for r in made] and all("clap_score" in r for r in copy)
    for record in read_predictions(rescoring / "predictions" / f"{p2p}__clap{n}x0.5.jsonl"):
        assert len(record["candidates"]) == n and record["caption"] in [c["caption"] for c in record["candidates"]]
    assert set(json.loads((rescoring / "events.json").read_text())) == {run["name"] for run in results["runs"]}
    # the progressive schedule: phase 2's training config but for the schedule, evaluated as the curriculum is
    progressive, phase2 = (
        yaml.safe_load((quick_run / stage / "config.yaml").read_text()) for stage in ("progressive", "stage2_phase2")
    )
    assert progressive.pop("examples_schedule") == [1, 2] and progressive.pop("output_dir") != phase2.pop("output_dir")
    assert progressive == phase2
    predictions = quick_run / "evaluation" / "progressive" / "predictions"
    assert sorted(path.stem for path in predictions.glob("*.jsonl")) == [p2p, "zero-shot"]
    report = (quick_run / "RESULTS.md").read_text()  # each comparison paired on the 6 test mixtures
    assert "## What the field added since the paper" in report
    assert all(f"| {claim} | 6 |" in report for claim, _, _ in claims.FIELD_COMPARISONS)
    assert "| curriculum, generative pair-to-pair, CLAP rescoring |" in report


def test_copied_predictions_get_the_clap_score_their_release_gives(quick_run):
    made = quick_run / "evaluation" / "stage2_phase2" / "predictions" / "zero-shot.jsonl"
    records = read_predictions(made)
    stripped = [{key: value for key, value in record.items() if key != "clap_score"} for record in records]
    audio = {
        item.audio_id: item.audio
        for item in group_references(load_pairs([str(quick_run / "corpus" / "pairs" / "test")]))
    }
    captioner, processor = load_release(
        str(quick_run / "stage2_phase2" / "release"), torch.device("cpu"), torch.float32
    )
    add_clap_scores(stripped, captioner, processor, audio, batch_size=4)
    assert [r["clap_score"] for r in stripped] == pytest.approx([r["clap_score"] for r in records], abs=1e-5)
    assert [r["caption"] for r in stripped] == [r["caption"] for r in records]


def test_predictions_are_reused_only_for_the_same_items_and_decoding(tmp_path):
    items = [EvaluationItem(f"mix-{i}", {}, ["a dog barks"]) for i in range(3)]
    generation = {"max_new_tokens": 6, "num_beams": 1, "do_sample": False}
    (tmp_path / "predictions").mkdir()
    (tmp_path / "results.json").write_text(json.dumps({"settings": {"generation": generation, "batch_size": 4}}))
    for name, ids in (("zero-shot", ["mix-0", "mix-1", "mix-2"]), ("other-items", ["mix-0", "mix-2", "mix-1"])):
        lines = [{"run": {}}, *({"audio_id": clip, "caption": "a dog"} for clip in ids)]
        (tmp_path / "predictions" / f"{name}.jsonl").write_text("\n".join(map(json.dumps, lines)) + "\n")
    names = ["zero-shot", "other-items", "never-made"]
    assert reusable_predictions(tmp_path, names, items, generation, 4) == ["zero-shot"]
    assert reusable_predictions(tmp_path, names, items, generation | {"max_new_tokens": 24}, 4) == []
    assert reusable_predictions(tmp_path, names, items, generation, 16) == []
    assert reusable_predictions(tmp_path / "absent", names, items, generation, 4) == []


def test_knowledge_bases_are_base_large_and_refined(quick_run):
    kbs = {name: PairCapKnowledgeBase.from_pretrained(quick_run / "kb" / name) for name in ("base", "large", "refined")}
    base, large, refined = (len(kbs[name].rows) for name in ("base", "large", "refined"))
    assert large > base and large >= refined > 0
    sources = set(kbs["large"].rows.unique("source"))
    assert {"esc50", "esc50_mix", "esc50_mix_noisy"} <= sources
    assert "esc50_mix_noisy" not in set(kbs["base"].rows.unique("source"))


def test_novel_classes_stay_out_of_the_captioners_pairs_but_not_the_kbs(quick_run):
    novel = json.loads((quick_run / "corpus" / "novel_classes.json").read_text())["classes"]
    assert len(novel) == 2 and json.loads((quick_run / "corpus" / "summary.json").read_text())["novel_classes"] == novel
    events = mixture_events(quick_run / "corpus" / "mixtures")

    def novel_pairs(rows) -> int:  # single clips' captions name their class; a mixture's events are recorded
        pairs = zip(rows["audio_id"], rows["caption"], strict=True)
        return sum(any(names_event(caption, c) or c in events.get(clip, ()) for c in novel) for clip, caption in pairs)

    for name in ("captioner_train", "captioner_validation"):
        assert novel_pairs(load_from_disk(str(quick_run / "corpus" / "pairs" / name))) == 0
    for stage in ("stage1", "stage2_phase1", "stage2_phase2", "raft_only"):
        config = (quick_run / stage / "config.yaml").read_text()
        assert "captioner_train" in config and "pairs/train\n" not in config
    assert novel_pairs(load_from_disk(str(quick_run / "corpus" / "pairs" / "train"))) > 0  # the CLAP's and KBs'
    kbs = {
        name: PairCapKnowledgeBase.from_pretrained(quick_run / "kb" / name)
        for name in ("base", "refined", "refined_without_novel", "text_only")
    }
    assert novel_pairs(kbs["base"].rows) > 0 and novel_pairs(kbs["refined"].rows) > 0
    control = kbs["refined_without_novel"].rows
    assert novel_pairs(control) == 0 and 0 < len(control) < len(kbs["refined"].rows)
    assert set(control["pair_id"]) < set(kbs["refined"].rows["pair_id"])
    text = kbs["text_only"].rows  # the distinct training captions, no audio
    assert not any(text["has_audio"]) and len(kbs["text_only"].clips) == 0 and novel_pairs(text) > 0
    assert len(set(text["caption"])) == len(text)


def test_the_novel_stage_scores_every_setting_on_the_same_clips(quick_run):
    results = json.loads((quick_run / "novel" / "results.json").read_text())
    assert [row["label"] for row in results["settings"]] == [setting.label for setting in SETTINGS]
    assert {results["classes"][clip] for clip in results["items"]["novel"]} <= set(results["novel_classes"])
    assert not {results["classes"][clip] for clip in results["items"]["known"]} & set(results["novel_classes"])
    for row in results["settings"]:
        for group in ("novel", "known"):
            scores = row[group]
            assert list(scores["items"]) == results["items"][group] and scores["count"] == len(scores["items"]) > 0
            assert scores["named"] == sum(scores["items"].values()) and set(scores["items"].values()) <= {0, 1}
    report = (quick_run / "RESULTS.md").read_text()
    assert report.index("## Data") < report.index("## Novel events") < report.index("## Wall time")
    words = json.loads((quick_run / "novel" / "words" / "stage2_phase2" / "novel_words.json").read_text())
    # every novel clip; the known ones whose class has a training clip (30 clips per split leave some without)
    assert (
        set(results["items"]["novel"])
        <= set(words["records"])
        <= set(results["items"]["novel"]) | set(results["items"]["known"])
    )
    for condition in ("zero-shot", "same-class example"):
        summary = words["conditions"][condition]
        assert summary["novel"]["count"] == len(results["items"]["novel"]) and summary["novel"]["log_prob"] < 0
    assert "| assembled (the `lm` stand-in) |" in report and "| curriculum (phase 2) |" in report


def test_the_novel_stage_captions_only_the_settings_it_has_not_scored(quick_run, shared_data, tmp_path):
    """A setting added since a run's `novel` stage (here: its results and predictions of the top-k 1 audio-to-audio
    setting removed) is captioned on a rerun; the settings already scored are not captioned again."""
    recipe = mini_run(parse_args(["--output", str(quick_run), "--data", str(shared_data), "--quick"]))
    added = evaluation_runs(recipe)["audio2audio, refined KB, top-k 1"]
    evaluation = tmp_path / "novel" / "evaluation"
    shutil.copytree(quick_run / "novel" / "evaluation", evaluation)
    (evaluation / "predictions" / f"{added.name}.jsonl").unlink()
    rescore(evaluation, names=[r["name"] for r in previous_results(evaluation)["runs"] if r["name"] != added.name])
    kept = {path.name: path.stat().st_mtime_ns for path in (evaluation / "predictions").glob("*.jsonl")}
    evaluate_release(recipe, recipe.release("stage2_phase2"), tmp_path / "novel")
    again = {path.name: path.stat().st_mtime_ns for path in (evaluation / "predictions").glob("*.jsonl")}
    assert {k: again[k] for k in kept} == kept and set(again) - set(kept) == {f"{added.name}.jsonl"}
    records = [r for r in read_predictions(evaluation / "predictions" / f"{added.name}.jsonl") if "caption" in r]
    assert added.top_k == 1 and records and all(len(record["retrieved"]) == 1 for record in records)
    results = json.loads((tmp_path / "novel" / "results.json").read_text())
    assert [row["label"] for row in results["settings"]] == [setting.label for setting in SETTINGS]
    assert len(previous_results(evaluation)["runs"]) == len(SETTINGS)


def test_teacher_retrieval_captions_the_test_mixtures_and_the_novel_clips(quick_run, shared_data, tmp_path):
    if not TEACHER_WEIGHTS.is_file():
        pytest.skip(f"{TEACHER_WEIGHTS} is absent: the diagnostic searches in the AudioSet teacher's embedding space")
    output = tmp_path / "teacher_retrieval.md"
    args = [str(quick_run), "--data", str(shared_data), "--teacher", str(TEACHER_WEIGHTS), "--output", str(output)]
    assert teacher_retrieval.main([*args, "--top-k", "1", "2", "--threads", "1"]) == 0
    result = json.loads(output.with_suffix(".json").read_text())["per_run"][0]
    mixtures = group_references(load_pairs([str(quick_run / "corpus" / "pairs" / "test")]))
    assert sorted(result["mixtures"]["items"]) == sorted(item.audio_id for item in mixtures)
    assert set(result["mixtures"]) == {"items", "zero-shot", "refined, top-k 1", "refined, top-k 2"}
    novel = json.loads((quick_run / "novel" / "results.json").read_text())["items"]["novel"]
    assert result["novel"]["items"] == novel and {"refined, top-k 2", "refined_without_novel, top-k 1"} < set(
        result["novel"]
    )
    for task in ("mixtures", "novel"):
        for setting, flags in result[task].items():
            if setting != "items":
                assert len(flags["named"]) == len(result[task]["items"]) and set(flags["named"]) <= {0.0, 1.0}
    assert "| mixtures | refined, top-k 1 |" in output.read_text()


@pytest.mark.parametrize("scale", scale_names())
def test_every_stage_lists_its_inputs_and_they_come_before_it(scale):
    settings = load_scale(scale)
    names = stage_names(settings)
    # the release scale trains no ablation and holds no class out
    expected = [name for name in QUICK_STAGES if settings.ablations or name not in ABLATIONS]
    assert names == tuple(name for name in expected if settings.novel_classes or name not in NOVEL)
    assert set(STAGES["report"].inputs) == set(STAGES) - {"report"}
    for index, name in enumerate(names):
        assert all(stage in STAGES for stage in STAGES[name].inputs)
        assert all(names.index(stage) < index for stage in STAGES[name].inputs if stage in names)


def test_a_stage_process_is_started_with_the_runs_settings(tmp_path):
    """With `--jobs 2` each stage runs in a process of its own, started by `stage_command`, which must describe the
    same run (the scheduler's order: test_concurrent_stages.py; a real stage process: the failing stage below)."""
    teacher = tmp_path / "teacher.pt"
    teacher.write_bytes(b"weights")
    argv = ["--output", str(tmp_path / "run"), "--data", str(tmp_path / "data"), "--quick", "--clips", "esc50_cc",
            "--seed", "3", "--teacher", str(teacher), "--variants", "whole_lm", "--jobs", "2"]  # fmt: skip
    run = mini_run(parse_args(argv))
    command = stage_command(run, "init")
    assert command[:3] == [sys.executable, "-m", "recipes.mini.run"]
    stage_args = parse_args(command[3:])
    assert mini_run(stage_args) == run and stage_args.stages == ["init"] and stage_args.jobs == 1


def test_a_failed_stage_names_its_log_and_the_stages_left_unrun(environment, tmp_path):
    args = ["--output", str(tmp_path / "run"), "--quick", "--data", str(tmp_path / "no-data"), "--jobs", "2"]
    command = [sys.executable, "-m", "paircap.cli", "mini", *args, "--stages", "corpus", "init"]
    result = subprocess.run(command, cwd=tmp_path, env=environment, capture_output=True, text=True, timeout=300)
    assert result.returncode == 1
    assert (
        "corpus failed (exit status" in result.stderr and str(tmp_path / "run" / "logs" / "corpus.log") in result.stderr
    )
    assert "no-data" in result.stderr  # the end of the corpus stage's log: the missing folder
    assert "init did not run" in result.stderr and not (tmp_path / "run" / "stages" / "corpus.json").exists()


def test_a_rerun_skips_every_finished_stage(quick_run, caplog):
    caplog.set_level(logging.INFO, logger="recipes.mini.run")
    run_stages(mini_run(parse_args(["--output", str(quick_run), "--quick", "--jobs", "1"])))
    skipped = [record for record in caplog.records if "done earlier, skipped" in record.getMessage()]
    assert len(skipped) == len(QUICK_STAGES) - 1  # the report is always rewritten
    assert not any("the scale changed" in record.getMessage() for record in caplog.records)


def test_a_run_resumed_with_other_scale_settings_is_warned_of_each(tmp_path, caplog):
    run = mini_run(parse_args(["--output", str(tmp_path / "run"), "--quick"]))
    run.output.mkdir()
    run.write_settings()
    warn_of_changed_settings(run)
    assert not caplog.records
    changed = replace(run, scale=replace(run.scale, clap_steps=run.scale.clap_steps + 1, weight_sweep=(0.2,)))
    warn_of_changed_settings(changed)
    (message,) = [record.getMessage() for record in caplog.records]
    assert f"clap_steps: {run.scale.clap_steps} -> {run.scale.clap_steps + 1}" in message
    assert f"weight_sweep: {list(run.scale.weight_sweep)} -> [0.2]" in message and "max_examples" not in message


def test_the_packed_release_captions_real_audio_offline(quick_run, shared_data, environment, tmp_path):
    release = tmp_path / "release"
    args = ["-m", "paircap.cli", "mini", "--output", str(quick_run), "--quick", "--pack-release", str(release)]
    run([*args, "--release-mode", "audio2audio"], REPO, environment)  # not the paper's mode: the card says how
    assert (release / "knowledge_base" / "paircap_kb.json").is_file()
    text = (release / "README.md").read_text()
    assert "50-event toy" in text and "**Default configuration:** audio2audio over KB `knowledge_base`" in text
    assert "It retrieves `audio2audio` by default (the paper's generative pair-to-pair is `generate(" in text
    assert ("distilled from an AudioSet-pretrained tagger" in text) == TEACHER_WEIGHTS.is_file()  # as the run was
    clip = sorted((shared_data / "esc50_cc").glob("*.flac"))[0]
    result = run(
        ["-m", "paircap.cli", "caption", str(clip), "--model", str(release), "--no-progress"], tmp_path, environment
    )
    record = json.loads(result.stdout.splitlines()[0])
    # a quick-run model may stop at once: the caption is a string, possibly empty; audio-to-audio has no zero-shot pass
    assert isinstance(record["caption"], str) and record["zero_shot_caption"] is None and record["retrieved"]
    card = ModelCard.load(release / "README.md").data
    assert card.license == "cc-by-nc-4.0" and "toy-model" in card.tags  # its LM learned Clotho's captions
    assert {"audiocaps", "clotho", "esc50"} <= set(card.datasets)
    top_k = json.loads((release / "config.json").read_text())["retrieval_top_k"]
    default_run = f"audio2audio__refined__w0.5__k{top_k}"  # what generate does out of the box
    assert card.eval_results and {r.metric_config for r in card.eval_results} == {default_run}
    kb_card = DatasetCard.load(release / "knowledge_base" / "README.md").data
    assert kb_card.license == "cc-by-nc-3.0" and kb_card.size_categories  # esc50_more: the ESC-50 licence
    captioner = pipeline(model=str(release), trust_remote_code=True, device="cpu")  # retrieves from the bundled KB
    out = captioner(str(clip), max_new_tokens=8, retrieval_mode="generative_pair2pair")  # the paper's, per call
    assert isinstance(out["caption"], str) and out["zero_shot_caption"] is not None
    assert 0 < len(out["neighbours"]) <= top_k
    assert all(pair["caption"] and pair["audio_id"] for pair in out["neighbours"])
