"""`paircap evaluate` end to end on the real Clotho clips (5 references each) with two knowledge bases."""

import json
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from datasets import load_dataset
from huggingface_hub import ModelCard

from datasets_scripts.readers import read_corpus
from hub_cards import load_evaluation, render_model_card
from paircap.cli import main as paircap_main
from paircap.evaluation import add_reference_text_scores, mean_pair_field, plan_runs, query_exclusions

MODES = ["audio2audio", "audio2text", "generative_pair2pair"]


@pytest.fixture(scope="module")
def clotho_eval(corpora, tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("eval") / "clotho_evaluation"
    read_corpus("clotho", corpora["clotho"], "evaluation").save_to_disk(str(folder))
    return folder


@pytest.fixture(scope="module")
def text_kb(tiny_release, corpora, tmp_path_factory) -> Path:
    """A second KB: the AudioCaps validation captions alone, as RECAP's text-only datastore."""
    from datasets_scripts.build_kb import build_knowledge_base

    _, model, processor = tiny_release
    output = tmp_path_factory.mktemp("kb") / "audiocaps-text"
    pairs = read_corpus("audiocaps", corpora["audiocaps"], "val", text_only=True).select(range(300))
    build_knowledge_base(
        pairs, model, processor, output, {"name": "text"}, shard_size=512, num_workers=0, progress=False
    )
    return output


@pytest.fixture(scope="module")
def evaluation(tiny_release, clotho_eval, real_kb, text_kb, tmp_path_factory) -> Path:
    folder, _, _ = tiny_release
    output = tmp_path_factory.mktemp("evaluation")
    argv = [
        "evaluate", "--model", str(folder), "--data", str(clotho_eval), "--data-name", "clotho",
        "--kb", str(real_kb), str(text_kb), "--mode", *MODES, "--weight-sweep", "0.9", "--top-k-sweep", "2",
        "--limit", "3", "--batch-size", "3", "--max-new-tokens", "6", "--output-dir", str(output), "--no-progress",
    ]  # fmt: skip
    assert paircap_main(argv) == 0
    return output


def test_plan_covers_the_paper_tables_and_sweeps():
    runs = plan_runs(["kb-a", "kb-b"], [*MODES, "audio2mixture"], 0.5, 4, [0.1, 0.5, 0.9], [1, 2, 4])
    assert runs[0].mode == "none" and len(runs) == 1 + 8 + 2 + 2
    assert len([r for r in runs if "grid" in r.sweeps and r.mode != "none"]) == 8
    # the sweeps' points that coincide with the grid run (W = 0.5, k = 4) are evaluated once and belong to all three
    assert sorted(r.fusion_weight for r in runs if "weight" in r.sweeps) == [0.1, 0.5, 0.9]
    assert sorted(r.top_k for r in runs if "top_k" in r.sweeps) == [1, 2, 4]
    shared = [r for r in runs if len(r.sweeps) == 3]
    assert len(shared) == 1 and (shared[0].knowledge_base, shared[0].mode) == ("kb-a", "generative_pair2pair")
    assert all(r.sweeps == ("grid",) for r in plan_runs(["kb-a"], MODES))


def test_results_json_has_every_run_with_metrics_and_similarities(evaluation):
    results = json.loads((evaluation / "results.json").read_text())
    names = [run["name"] for run in results["runs"]]
    assert "zero-shot" in names and len(names) == 1 + 6 + 1 + 1
    for run in results["runs"]:
        assert run["items"] == 3 and run["failed_items"] == 0
        for metric in ("bleu_1", "bleu_4", "meteor", "rouge_l", "cider_d"):
            assert isinstance(run["metrics"][metric], float)
        assert run["metrics"]["spice"] is None and run["metrics"]["spider"] is None
        assert "spice" in run["unavailable"]
        assert isinstance(run["metrics"]["vocab"], float) and -1 <= run["metrics"]["clap_score"] <= 1
        assert run["metrics"]["fense"] is None and {"fense", "spider_fl"} <= run["unavailable"].keys()  # no weights
        similarities = [run["mean_audio_similarity"], run["mean_text_similarity"]]
        assert similarities == [None, None] if run["mode"] == "none" else None not in similarities
    text_only = [r for r in results["runs"] if r["knowledge_base"] and "audiocaps-text" in r["knowledge_base"]]
    assert all(r["mean_audio_similarity"] == 0.0 for r in text_only)
    pair_runs = [r for r in results["runs"] if r["mode"] == "generative_pair2pair"]
    assert all(r["mean_query_text_score"] is not None for r in pair_runs)


def test_text_similarity_is_the_mean_over_references_of_t_ref_dot_t_k(evaluation, tiny_release, real_kb):
    """S_T of paper Fig. 1, by hand: each reference caption embedded alone, t_k read from the KB's parquet rows."""
    from paircap.releases import load_release

    model, processor = load_release(str(tiny_release[0]), torch.device("cpu"), torch.float32)
    files = sorted(str(path) for path in (real_kb / "data").glob("*.parquet"))
    kb_texts = np.asarray(load_dataset("parquet", data_files=files, split="train")["text_embedding"], np.float32)
    name = f"generative_pair2pair__{real_kb.name}__w0.5__k4"
    records = [json.loads(line) for line in (evaluation / "predictions" / f"{name}.jsonl").read_text().splitlines()[1:]]
    expected = []
    for record in records:
        with torch.no_grad():
            refs = [model.embed_texts(**processor.clap_text_inputs([ref]))[0].numpy() for ref in record["references"]]
        for pair in record["retrieved"]:
            expected.append(np.mean([float(ref @ kb_texts[pair["row"]]) for ref in refs]))
            assert pair["reference_text_score"] == pytest.approx(expected[-1], abs=1e-5)
    run = next(r for r in json.loads((evaluation / "results.json").read_text())["runs"] if r["name"] == name)
    assert len(expected) == 3 * 4 and run["mean_text_similarity"] == pytest.approx(np.mean(expected), abs=1e-5)


class FakeKnowledgeBase:
    """What evaluation reads from a knowledge base: `metadata.audio_dim` and `pair_vectors(rows)` = [a_k ; t_k]."""

    def __init__(self, vectors: np.ndarray, audio_dim: int):
        self.vectors = vectors
        self.metadata = SimpleNamespace(audio_dim=audio_dim)

    def pair_vectors(self, rows) -> np.ndarray:
        return self.vectors[list(rows)]


def test_reference_text_scores_by_hand():
    kb = FakeKnowledgeBase(np.array([[1, 0, 1, 0], [0, 1, 0, 1], [0, 0, 0.6, 0.8]], np.float32), audio_dim=2)
    references = np.array([[0.8, 0.4], [0.0, 1.0], [1.0, 0.0]])  # mean of [1, 0] and [0.6, 0.8]; ...
    records = [
        {"retrieved": [{"row": 2, "audio_score": 0.0, "text_score": 0.9}, {"row": 1, "audio_score": 0.5}]},
        {"error": "unreadable"},
        {"retrieved": [{"row": 0, "audio_score": 1.0, "text_score": float("nan")}]},
    ]
    add_reference_text_scores(records, kb, references)
    scores = [pair["reference_text_score"] for record in records for pair in record.get("retrieved", [])]
    assert scores == pytest.approx([0.6 * 0.8 + 0.8 * 0.4, 0.4, 1.0])
    pairs = [pair for record in records for pair in record.get("retrieved", [])]
    assert mean_pair_field(pairs, "reference_text_score") == pytest.approx((0.8 + 0.4 + 1.0) / 3)
    assert mean_pair_field(pairs, "audio_score") == pytest.approx(0.5)
    assert mean_pair_field(pairs, "text_score") == pytest.approx(0.9)  # NaN and missing values are left out
    assert mean_pair_field([], "audio_score") is None


def test_a_query_excludes_its_clip_by_raw_id_and_clip_identity():
    assert query_exclusions("7fmOlUlwoNg") == {"7fmOlUlwoNg", "youtube:7fmOlUlwoNg"}
    assert query_exclusions("Santa Motor.wav") == {"Santa Motor.wav", "santa motor.wav"}


def test_no_query_retrieves_its_own_clip(evaluation):
    for path in (evaluation / "predictions").glob("*.jsonl"):
        lines = path.read_text().splitlines()
        records = [json.loads(line) for line in lines[1:]]
        assert len(records) == 3
        for record in records:
            assert len(record["references"]) == 5
            assert all(pair["audio_id"] != record["audio_id"] for pair in record["retrieved"])


def test_report_tables_plots_and_model_index(evaluation, real_kb):
    report = (evaluation / "results.md").read_text()
    assert report.index("**Default configuration:** zero-shot (no knowledge base is configured)") < report.index(
        "## cider_d by retrieval method"
    )  # the tiny release names no KB: generate captions zero-shot
    assert "## cider_d by retrieval method and knowledge base" in report  # SPIDEr is unavailable here
    header = next(line for line in report.splitlines() if line.startswith("| method |"))
    assert "clotho-audiocaps-kb" in header and "audiocaps-text" in header
    assert all(f"| {mode} |" in report for mode in MODES) and "`spice` unavailable" in report
    for plot in ("weight_sweep.png", "top_k_sweep.png"):
        assert (evaluation / plot).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    results_json = json.loads((evaluation / "results.json").read_text())
    from paircap.evaluation_report import sweep_points

    assert [x for x, _ in sweep_points(results_json, "weight", "cider_d")] == [0.5, 0.9]
    assert [x for x, _ in sweep_points(results_json, "top_k", "cider_d")] == [2, 4]
    assert results_json["settings"]["dataset"] == {"name": "clotho", "split": "evaluation"}
    assert results_json["settings"]["default"]["mode"] == "none"
    from modeling_paircap.configuration_paircap import PairCapConfig

    card = render_model_card(PairCapConfig(), **load_evaluation(evaluation))
    results = card.data.eval_results
    assert {r.metric_config for r in results} == {"zero-shot"} and results[0].dataset_name == "clotho"
    text = str(card)
    assert "CIDEr-D" in text and "### Every setting evaluated: cider_d by retrieval method and knowledge base" in text
    assert "| zero-shot |" in text and "Not computed: fense, spice, spider, spider_fl" in text
    assert "### DCASE-2024 metrics" in text and "| SPIDEr-FL | FENSE | Vocab | CLAP score |" in text
    # a release that retrieves from the real KB by default (k = 4, the grid's): its generative pair-to-pair run
    retrieving = PairCapConfig(knowledge_base="org/clotho-audiocaps-kb", retrieval_top_k=4)
    card = render_model_card(retrieving, default_knowledge_base=str(real_kb), **load_evaluation(evaluation))
    assert {r.metric_config for r in card.data.eval_results} == {"generative_pair2pair__clotho-audiocaps-kb__w0.5__k4"}
    assert ModelCard(str(card)).data.eval_results  # the card parses back with its model-index


def test_rescore_reproduces_the_results(evaluation, tmp_path):
    before = json.loads((evaluation / "results.json").read_text())
    assert paircap_main(["evaluate", "--rescore", "--output-dir", str(evaluation)]) == 0
    after = json.loads((evaluation / "results.json").read_text())
    assert after["runs"] == before["runs"] and after["settings"] == before["settings"]


def test_default_kb_must_be_an_evaluated_kb_of_a_release_that_retrieves(tiny_release, tmp_path, capsys):
    kbs = [tmp_path / "kb-a", tmp_path / "kb-b"]
    for kb in kbs:
        kb.mkdir()
    argv = ["evaluate", "--model", str(tiny_release[0]), "--data", str(tmp_path), "--kb", *map(str, kbs)]
    argv += ["--output-dir", str(tmp_path / "out")]
    assert paircap_main([*argv, "--default-kb", str(tmp_path / "kb-c")]) == 2
    assert f"--default-kb {tmp_path / 'kb-c'} is not one of the --kb evaluated" in capsys.readouterr().err
    assert paircap_main([*argv, "--default-kb", str(kbs[1])]) == 2  # the tiny release names no KB
    assert "names no knowledge base, so it captions zero-shot" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exit_status:
        paircap_main(["evaluate", "--rescore", "--default-kb", "x", "--output-dir", str(tmp_path)])
    assert exit_status.value.code == 2 and "not allowed with argument --rescore" in capsys.readouterr().err


def test_zero_shot_of_a_release_with_a_bundled_kb_does_not_retrieve(tiny_release, clotho_eval, real_kb, tmp_path):
    """The zero-shot run says `retrieval_mode="none"`: a release whose config names a KB (as the shipped toy's does)
    retrieves by default, and its zero-shot row used to be its default retrieval's captions."""
    import shutil

    release = tmp_path / "with-kb"
    shutil.copytree(tiny_release[0], release)
    shutil.copytree(real_kb, release / "knowledge_base")
    config = json.loads((release / "config.json").read_text())
    (release / "config.json").write_text(json.dumps({**config, "knowledge_base": "knowledge_base"}))
    argv = [
        "evaluate", "--model", str(release), "--data", str(clotho_eval), "--kb", str(real_kb), "--mode",
        "audio2audio", "--limit", "3", "--batch-size", "3", "--max-new-tokens", "6", "--output-dir",
        str(tmp_path / "out"), "--no-progress",
    ]  # fmt: skip
    assert paircap_main(argv) == 0
    lines = (tmp_path / "out" / "predictions" / "zero-shot.jsonl").read_text().splitlines()[1:]
    records = [json.loads(line) for line in lines]
    assert len(records) == 3 and all(r["retrieved"] == [] and r["zero_shot_caption"] is None for r in records)
    lines = (tmp_path / "out" / "predictions" / "audio2audio__clotho-audiocaps-kb__w0.5__k4.jsonl").read_text()
    assert all(json.loads(line)["retrieved"] for line in lines.splitlines()[1:])  # the retrieval run retrieves


def test_a_rerun_with_fewer_modes_reports_only_its_own_runs(
    evaluation, tiny_release, clotho_eval, real_kb, tmp_path, capsys
):
    """The earlier run's predictions stay in the folder, but results.json, results.md and --rescore leave them out
    (before: every predictions file in the folder was reported, so the dropped modes reappeared)."""
    import shutil

    folder = tmp_path / "rerun"
    shutil.copytree(evaluation, folder)
    earlier = sorted(path.stem for path in (folder / "predictions").glob("*.jsonl"))
    argv = [
        "evaluate", "--model", str(tiny_release[0]), "--data", str(clotho_eval), "--kb", str(real_kb),
        "--mode", "audio2audio", "--limit", "3", "--batch-size", "3", "--max-new-tokens", "6",
        "--output-dir", str(folder), "--no-progress",
    ]  # fmt: skip
    capsys.readouterr()
    assert paircap_main(argv) == 0
    ours = ["audio2audio__clotho-audiocaps-kb__w0.5__k4", "zero-shot"]
    left_out = [name for name in earlier if name not in ours]
    assert len(left_out) == 7 and "generative_pair2pair__clotho-audiocaps-kb__w0.5__k4" in left_out
    assert f"left out 7 predictions file(s) in {folder / 'predictions'} of runs not in this evaluation: " in (
        capsys.readouterr().err
    )
    results = json.loads((folder / "results.json").read_text())
    assert [run["name"] for run in results["runs"]] == ours
    report = (folder / "results.md").read_text()
    assert "| audio2audio |" in report and "generative_pair2pair" not in report and "audiocaps-text" not in report
    assert sorted(path.stem for path in (folder / "predictions").glob("*.jsonl")) == earlier  # nothing deleted

    assert paircap_main(["evaluate", "--rescore", "--output-dir", str(folder)]) == 0
    assert [run["name"] for run in json.loads((folder / "results.json").read_text())["runs"]] == ours
