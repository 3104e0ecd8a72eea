"""CLAP rescoring in the tools: `paircap caption --rescore`, the pipeline, the evaluation plan and tables, the demo."""

import json

import numpy as np
import pytest
import soundfile as sf

from hub_cards.evaluation_tables import method_by_kb_table
from paircap.cli import main
from paircap.evaluation import plan_runs, rescoring_runs

MODES = ["audio2audio", "generative_pair2pair"]


@pytest.fixture(scope="module")
def clips(tmp_path_factory) -> list[str]:
    """Three synthetic tone clips of 3, 5 and 7 s at 48 kHz."""
    folder = tmp_path_factory.mktemp("clips")
    rng = np.random.default_rng(0)
    paths = []
    for i, seconds in enumerate((3, 5, 7)):
        t = np.arange(seconds * 48000) / 48000
        wave = 0.2 * np.sin(2 * np.pi * 200 * (i + 1) * t) + 0.02 * rng.standard_normal(len(t))
        paths.append(str(folder / f"clip{i}.wav"))
        sf.write(paths[-1], wave.astype(np.float32), 48000)
    return paths


def best_of(candidates: list[dict]) -> str:
    return max(candidates, key=lambda candidate: candidate["score"])["caption"]


def test_caption_command_rescores_and_lists_the_candidates(tiny_release, clips, tmp_path):
    folder, model, processor = tiny_release
    output = tmp_path / "captions.jsonl"
    argv = ["caption", *clips, "--model", str(folder), "--output", str(output), "--no-progress"]
    options = ["--rescore", "clap", "--num-candidates", "3", "--rescore-weight", "0.6", "--max-new-tokens", "5"]
    assert main([*argv, *options]) == 0
    records = [json.loads(line) for line in output.read_text().splitlines()]
    assert len(records) == 3
    for record in records:
        assert len(record["candidates"]) == 3 and record["caption"] == best_of(record["candidates"])
        for candidate in record["candidates"]:
            expected = 0.6 * candidate["clap_score"] + 0.4 * candidate["lm_score"]
            assert candidate["score"] == pytest.approx(expected, abs=1e-5)
    inputs = processor(audio=clips)
    direct = model.generate(
        **inputs, rescore="clap", num_candidates=3, rescore_weight=0.6, processor=processor, max_new_tokens=5,
        do_sample=False,
    )  # fmt: skip
    assert [r["caption"] for r in records] == processor.decode_captions(direct, inputs["input_ids"].shape[1])


def test_rescoring_flags_without_rescore_are_one_line(tiny_release, clips, capsys):
    folder, _, _ = tiny_release
    assert main(["caption", clips[0], "--model", str(folder), "--num-candidates", "3", "--no-progress"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["paircap caption: error: --num-candidates set the rescoring: pass --rescore clap"]


def test_fewer_than_two_candidates_are_refused_by_the_parser(capsys):
    from paircap.cli import build_parser

    for command in (["caption", "clip.wav", "--rescore", "clap"], ["evaluate", "--output-dir", "out"], ["demo"]):
        with pytest.raises(SystemExit) as exit_info:
            build_parser().parse_args([*command, "--num-candidates", "1"])
        assert exit_info.value.code == 2
        assert "--num-candidates: must be at least 2" in capsys.readouterr().err


def test_the_pipeline_passes_rescoring_on_and_returns_the_candidates(tiny_release, clips):
    from transformers import pipeline

    from modeling_paircap import register_auto_classes
    from modeling_paircap.pipeline_paircap import PairCapCaptioningPipeline

    folder, _, _ = tiny_release
    register_auto_classes()
    captioner = pipeline(model=str(folder), pipeline_class=PairCapCaptioningPipeline, device="cpu")
    result = captioner(clips[0], rescore="clap", num_candidates=3, max_new_tokens=5, do_sample=False)
    assert len(result["candidates"]) == 3 and result["caption"] == best_of(result["candidates"])
    assert "candidates" not in captioner(clips[0], max_new_tokens=5, do_sample=False)


def test_the_plan_adds_rescored_rows_of_their_own():
    rescoring = rescoring_runs([3], [0.3, 0.5], query=True)
    runs = plan_runs(["kb-a"], MODES, 0.5, 4, [0.9], [], rescoring)
    names = [run.name for run in runs]
    assert len(names) == len(set(names)) == 3 + 3 * 2 + 1
    assert "zero-shot__clap3x0.3" in names and "generative_pair2pair__kb-a__w0.5__k4__clap3qx0.5" in names
    assert "audio2audio__kb-a__w0.5__k4__clap3x0.5" in names  # query rescoring only where there is a zero-shot pass
    rescored = [run for run in runs if run.num_candidates]
    assert all(run.sweeps == ("grid",) for run in rescored)
    assert rescored[0].generation == {
        "rescore": "clap", "num_candidates": 3, "rescore_weight": 0.3, "rescore_query": True
    }  # fmt: skip
    assert all(run.generation == {} for run in runs if not run.num_candidates)
    results = {
        "runs": [
            {**vars(run), "name": run.name, "metrics": {"cider_d": i / 10}} for i, run in enumerate(runs)
        ]
    }  # fmt: skip
    table = method_by_kb_table(results, "cider_d").splitlines()
    assert "| zero-shot + CLAP rescoring (N=3, λ=0.3) | 0.3000 |" in table
    assert any(line.startswith("| generative_pair2pair + CLAP rescoring (N=3, λ=0.5, query too) |") for line in table)
    assert len(table) == 2 + 3 + 6


def test_the_demo_engine_lists_the_rescored_candidates(tiny_release, clips):
    pytest.importorskip("gradio")
    from paircap.demo import DemoEngine, candidates_table

    _, model, processor = tiny_release
    engine = DemoEngine(model, processor, max_new_tokens=5, num_candidates=3, rescore_weight=0.5)
    state = engine.first_pass(engine.load(clips[1]))
    caption, pairs, candidates = engine.second_pass(state, "none", 0.5, 0)
    assert pairs == [] and len(candidates) == 3 and caption == best_of(candidates)
    table = candidates_table(candidates).splitlines()
    assert table[-3].startswith(f"| {caption} |")  # the chosen candidate first, under the header
    assert table[:5] == ["", "", "CLAP rescoring: the caption is the best of these candidates.", "", table[4]]
    assert len(table) == 5 + 1 + 3
    plain = DemoEngine(model, processor, max_new_tokens=5)
    assert plain.second_pass(state, "none", 0.5, 0) == (state.zero_shot, [], [])
