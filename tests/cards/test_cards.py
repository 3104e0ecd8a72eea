"""Model and dataset cards: YAML front matter parsed back with huggingface_hub's card classes and checked against the
Hub's allowed values, licences derived from the language model and the data, results tables from `paircap evaluate`.
(`RepoCard.validate()` posts the card to the Hub, so it cannot run offline.)"""

import json
import re
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
import yaml
from datasets import Dataset
from huggingface_hub import DatasetCard, DatasetCardData, ModelCard, metadata_load

from hub_cards import (
    SIZE_CATEGORIES,
    clip_licence_terms,
    load_evaluation,
    release_licence,
    render_dataset_card,
    render_model_card,
    size_category,
    source_terms,
)
from modeling_paircap.configuration_paircap import PairCapConfig
from modeling_paircap.kb_format_paircap import KnowledgeBaseMetadata
from paircap.cli import main
from paircap.context_probe import paired_naming, share
from paircap.evaluation_report import evaluation_settings
from paircap.training.stage_setups import export_card
from recipes.mini.local.esc50 import read_esc50_manifests
from recipes.mini.local.release import clip_terms, mini_card

# Licence ids of https://huggingface.co/docs/hub/repositories-licenses that a PairCap card may carry.
HUB_LICENSES = {
    "apache-2.0",
    "mit",
    "llama2",
    "cc0-1.0",
    "cc-by-3.0",
    "cc-by-4.0",
    "cc-by-nc-3.0",
    "cc-by-nc-4.0",
    "other",
}
# Task ids of https://huggingface.co/tasks (huggingface.js `pipelines.ts`) the cards may name.
HUB_TASKS = {"audio-text-to-text", "feature-extraction", "text-retrieval", "audio-classification"}
HUB_METRICS = {"bleu", "meteor", "rouge", "cider", "spice", "spider"}
VICUNA = "lmsys/vicuna-7b-v1.5"


def parsed(card, tmp_path: Path, card_class=ModelCard) -> tuple[dict, object]:
    """The card's YAML front matter as `metadata_load` reads it, and the card as `card_class.load` parses it."""
    text = str(card)
    assert "{{" not in text and "{%" not in text  # every template field was filled
    path = tmp_path / "README.md"
    path.write_text(text)
    metadata = metadata_load(path)
    loaded = card_class.load(path)  # raises on invalid YAML or an invalid model-index
    assert loaded.data.to_dict() == metadata
    return metadata, loaded


def check_hub_values(metadata: dict) -> None:
    licences = metadata["license"] if isinstance(metadata["license"], list) else [metadata["license"]]
    assert set(licences) <= HUB_LICENSES
    if "other" in licences:
        assert re.fullmatch(r"[a-z0-9-]+", metadata["license_name"])  # the Hub wants a slug with `other`
    for task in [metadata.get("pipeline_tag"), *metadata.get("task_categories", [])]:
        assert task is None or task in HUB_TASKS
    assert set(metadata.get("metrics", [])) <= HUB_METRICS


# the release these evaluations measured: generative pair-to-pair over its KB (evaluated as /kbs/refined) at W 0.5, k 2
RELEASE_CONFIG = PairCapConfig(knowledge_base="org/refined-audio-kb", retrieval_top_k=2)
DEFAULT_RUN = "generative_pair2pair__refined__w0.5__k2"


def evaluation_results(folder: Path) -> Path:
    """
    A `paircap evaluate` output folder: results.json (as `rescore` writes it) of `RELEASE_CONFIG`, its own KB named
    /kbs/refined; audio2audio over /kbs/base (CIDEr-D 0.5) beats the default configuration's run (0.4).
    """
    folder.mkdir(parents=True, exist_ok=True)

    def run(mode, kb, cider, sweeps=("grid",)):
        name = "zero-shot" if mode == "none" else f"{mode}__{kb}__w0.5__k2"
        return {
            "name": name, "knowledge_base": None if kb is None else f"/kbs/{kb}", "mode": mode, "fusion_weight": 0.5,
            "top_k": 2, "sweeps": list(sweeps), "items": 200, "failed_items": 0,
            "metrics": {"bleu_4": cider / 10, "cider_d": cider, "spice": None, "spider": None},
            "unavailable": {"spice": "the SPICE jars are missing"},
            "mean_audio_similarity": 0.8, "mean_text_similarity": 0.4, "mean_query_text_score": 0.5,
        }  # fmt: skip

    cider = {("audio2audio", "refined"): 0.3, ("audio2audio", "base"): 0.5, ("generative_pair2pair", "refined"): 0.4}
    runs = [run("none", None, 0.2)]
    runs += [run(mode, kb, cider.get((mode, kb), 0.35)) for mode in ("audio2audio", "generative_pair2pair")
             for kb in ("refined", "base")]  # fmt: skip
    kbs = ["/kbs/refined", "/kbs/base"]
    settings = {"model": "m", **evaluation_settings(RELEASE_CONFIG, "m", kbs, "/kbs/refined", "clotho", "evaluation")}
    (folder / "results.json").write_text(json.dumps({"settings": settings, "runs": runs}))
    return folder


def test_vicuna_release_card(tmp_path):
    card = render_model_card(
        RELEASE_CONFIG,
        base_models=["laion/clap-htsat-unfused", VICUNA],
        language_model=VICUNA,
        training_sources={"audiocaps": 49838, "clotho": 19195},
        **load_evaluation(evaluation_results(tmp_path / "evaluation")),
    )
    metadata, loaded = parsed(card, tmp_path)
    check_hub_values(metadata)
    assert metadata["license"] == "llama2" and "license_name" not in metadata
    assert metadata["datasets"] == ["org/refined-audio-kb", "audiocaps", "clotho"]
    assert metadata["metrics"] == ["bleu", "cider"]  # what the evaluation computed; SPICE was unavailable
    assert metadata["pipeline_tag"] == "audio-text-to-text" and "custom_code" in metadata["tags"]
    assert metadata["base_model"] == ["laion/clap-htsat-unfused", VICUNA]
    results = loaded.data.eval_results  # the default configuration's run, not audio2audio over base (0.5)
    assert {r.metric_type for r in results} == {"bleu_4", "cider_d"} and results[0].dataset_name == "clotho"
    assert {r.metric_config for r in results} == {DEFAULT_RUN}
    assert next(r for r in results if r.metric_type == "cider_d").metric_value == 0.4
    body = loaded.text
    assert "| generative_pair2pair | 0.4000 | 0.3500 |" in body and "| zero-shot | 0.2000 | 0.2000 |" in body
    assert "| audio2audio | 0.3000 | 0.5000 |" in body  # the grid beside it
    assert "Not computed: spice" in body and "on clotho (evaluation)" in body
    assert "| training | `clotho` | 19,195 |" in body and "**Non-commercial data.** AudioCaps, Clotho are" in body


def test_knowledge_base_sources_enter_the_model_card(tmp_path):
    kb = tmp_path / "release" / "knowledge_base"
    kb.mkdir(parents=True)
    KnowledgeBaseMetadata("r" * 64, 16, 16, 40, 8, sources={"clotho": 25, "audiocaps": 15}).save(kb)
    config = PairCapConfig(knowledge_base="knowledge_base")  # bundled in the release folder, as the mini's
    metadata, loaded = parsed(render_model_card(config, language_model=VICUNA, release_dir=kb.parent), tmp_path)
    assert metadata["license"] == "llama2" and metadata["datasets"] == ["audiocaps", "clotho"]
    assert "| knowledge base | `clotho` | 25 |" in loaded.text and "**Non-commercial data.**" in loaded.text
    (kb / "paircap_kb.json").write_text("{}")  # unreadable: the card points at the knowledge base's own card
    metadata, loaded = parsed(render_model_card(config, language_model=VICUNA, release_dir=kb.parent), tmp_path)
    assert "datasets" not in metadata and "the knowledge base's\nown card lists its sources" in loaded.text


def test_language_models_of_unknown_or_local_licence(tmp_path, tiny_release, tiny_checkpoints):
    metadata, _ = parsed(render_model_card(PairCapConfig(), language_model="someone/new-lm"), tmp_path)
    check_hub_values(metadata)
    assert metadata["license"] == "other" and metadata["license_link"] == "https://huggingface.co/someone/new-lm"
    assert "datasets" not in metadata  # nothing recorded

    local_lm = tmp_path / "my-lm"
    local_lm.mkdir()
    (local_lm / "README.md").write_text("---\nlicense: mit\n---\n# an LM\n")
    metadata, _ = parsed(render_model_card(PairCapConfig(), language_model=str(local_lm)), tmp_path)
    assert metadata["license"] == "mit"

    folder, _, _ = tiny_release  # assembled from a local LM folder without a card
    metadata, loaded = parsed(ModelCard.load(folder / "README.md"), tmp_path)
    check_hub_values(metadata)
    assert metadata["license"] == "other" and "license_link" not in metadata
    assert str(tiny_checkpoints[1]) not in json.dumps(metadata)  # the metadata names the LM folder, not its path
    assert "language model `llama`, not known here" in loaded.text


def test_licence_of_weights_trained_here(shared_data):
    cc_clips = read_esc50_manifests([shared_data / "esc50_cc"])
    cc = clip_licence_terms("ESC-50 clips", [c.licence for c in cc_clips], "", "esc50")
    assert cc.commercial and cc.license == "cc-by-3.0" and "CC-BY: 45, CC0: 54" in cc.terms
    assert release_licence(None, [cc]).license == "cc-by-4.0"
    assert release_licence(None, [clip_licence_terms("clips", ["CC0"], "", "x")]).license == "cc0-1.0"
    nc_clips = read_esc50_manifests([shared_data / "esc50_more"])  # the ESC-50 licence: CC BY-NC 3.0
    nc = clip_licence_terms("ESC-50 clips", [c.licence for c in nc_clips], "", "esc50")
    assert not nc.commercial and release_licence(None, [cc, nc]).license == "cc-by-nc-4.0"
    with_clotho = release_licence(None, [cc, source_terms("clotho")])
    assert with_clotho.license == "cc-by-nc-4.0" and "Clotho" in with_clotho.summary
    assert release_licence(None, [source_terms("someone/new-corpus")]).license == "cc-by-nc-4.0"  # unknown terms


def test_source_names_map_to_their_corpora():
    assert source_terms("wavcaps/FreeSound").name == "WavCaps"
    assert source_terms("esc50_mix_noisy").license == "cc-by-nc-3.0"
    assert source_terms("audiocaps").commercial is False
    assert source_terms("esc50_mix", {"esc50": source_terms("audiocaps")}).name == "AudioCaps"  # an override wins
    assert source_terms("newcorpus").commercial is None


def test_size_categories_are_the_hub_buckets():
    documented = DatasetCardData.__doc__.split("size_categories")[1].split("source_datasets")[0]
    assert [*SIZE_CATEGORIES, "n>1T", "other"] == re.findall(r"'([^']+)'", documented)
    cases = {0: "n<1K", 999: "n<1K", 1000: "1K<n<10K", 127_000: "100K<n<1M", 2_200_000: "1M<n<10M", 10**13: "n>1T"}
    assert {count: size_category(count) for count in cases} == cases


def test_dataset_card(tmp_path):
    sources = {"clotho": 5000, "audiocaps": 7000, "wavcaps/FreeSound": 345, "esc50_mix": 1000}
    metadata = KnowledgeBaseMetadata(
        retrieval_fingerprint="r" * 64, audio_dim=512, text_dim=512, num_pairs=13345, num_clips=900,
        sources=sources, build_id="abc123",
    )  # fmt: skip
    card = render_dataset_card(metadata, "org/refined-audio-kb", "org/paircap")
    meta, loaded = parsed(card, tmp_path, DatasetCard)
    check_hub_values(meta)
    assert meta["license"] == ["cc-by-nc-3.0", "other"] and meta["license_name"] == "per-source-terms"
    assert meta["size_categories"] == "10K<n<100K" and meta["task_categories"] == [
        "audio-text-to-text",
        "feature-extraction",
    ]
    assert meta["configs"][0]["data_files"][0]["path"] == "data/train-abc123-*.parquet"
    body = loaded.text
    assert "| `clotho` | 5,000 | [Clotho](https://zenodo.org/records/4783391) |" in body
    assert "| `esc50_mix` | 1,000 | [ESC-50]" in body and "`cc-by-nc-3.0` | **no** |" in body
    assert "This knowledge base holds their captions" in body

    one_source = KnowledgeBaseMetadata("r" * 64, 16, 16, 12, 3, sources={"clotho": 12}, build_id="b")
    meta, _ = parsed(render_dataset_card(one_source, "org/kb", "org/paircap"), tmp_path, DatasetCard)
    assert meta["license"] == "other" and meta["license_link"] == "https://zenodo.org/records/4783391"
    assert meta["size_categories"] == "n<1K"


def test_an_exported_release_keeps_its_provenance(tmp_path):
    source = tmp_path / "assembled"
    source.mkdir()
    render_model_card(PairCapConfig(), base_models=[VICUNA], language_model=VICUNA).save(source / "README.md")
    cfg = SimpleNamespace(model_name_or_path=str(source))
    card = export_card(cfg, SimpleNamespace(config=PairCapConfig()), "trained: stage `raft`", ["clotho"] * 3)
    metadata, loaded = parsed(card, tmp_path)
    assert metadata["license"] == "llama2" and metadata["base_model"] == [VICUNA]
    assert metadata["paircap"]["training_sources"] == {"clotho": 3} and "trained: stage `raft`" in loaded.text
    (source / "README.md").write_text(str(card))  # a second stage on other data keeps the first's sources
    again = export_card(cfg, SimpleNamespace(config=PairCapConfig()), "stage 2", ["audiocaps", "clotho"])
    metadata, _ = parsed(again, tmp_path)
    assert metadata["license"] == "llama2" and metadata["paircap"]["training_sources"] == {"clotho": 3, "audiocaps": 1}


def fake_mini_recipe(root: Path, data: Path, text_sources: list[str], teacher: bool) -> SimpleNamespace:
    """What `mini_card` reads of a mini run: the corpus summary, the caption text, the evaluation, and (`teacher`) the
    CLAP stage's config naming distillation targets, with the teacher's record."""
    (root / "corpus").mkdir(parents=True)
    summary = {"clips": {"train": 60, "test": 20}, "pairs": {"train": 480}}
    (root / "corpus" / "summary.json").write_text(json.dumps(summary))
    Dataset.from_dict({"source": text_sources, "caption": ["a dog barks"] * len(text_sources)}).save_to_disk(
        str(root / "pairs" / "text")
    )
    evaluation_results(root / "evaluation" / "stage2_phase2")
    (root / "clap" / "teacher").mkdir(parents=True)
    targets = {"distill_targets": str(root / "clap" / "teacher" / "targets.npz")} if teacher else {}
    (root / "clap" / "config.yaml").write_text(yaml.safe_dump({"distill_weight": 20.0, **targets}))
    if teacher:
        (root / "clap" / "teacher" / "teacher.json").write_text(json.dumps({"file": "t.pt", "sha256": "899a8c62"}))
        (root / "clap_audio" / "clap").mkdir(parents=True)  # stage clap_audio ran: the tower pretrained first
        (root / "clap_audio" / "clap" / "config.json").write_text("{}")
        probed_captions(root)
    return SimpleNamespace(
        path=lambda *parts: root.joinpath(*parts),
        pairs=lambda name: root / "pairs" / name,
        data=data,
        clip_folders=("esc50_cc",),
        mixtures_dir=root / "mixtures",
        scale=SimpleNamespace(max_examples=2, clap_audio_steps=2000, clap_audio_mixtures=1000),
    )


def probed_captions(root: Path) -> None:
    """Four test mixtures' events, their zero-shot and default captions (the default names a dog in two more, both
    events in one), and the curriculum model's context probe."""
    events = [("dog", "rain"), ("dog", "rain"), ("cat", "rain"), ("cat", "siren")]
    (root / "mixtures").mkdir()
    mixtures = [{"audio_id": f"mix-test-{i}", "events": list(pair)} for i, pair in enumerate(events)]
    (root / "mixtures" / "mixtures.jsonl").write_text("".join(json.dumps(m) + "\n" for m in mixtures))
    captions = {
        "zero-shot": ["a dog barks", "wind blows", "wind blows", "wind blows"],
        DEFAULT_RUN: ["a dog barks", "a dog barks in the rain", "a cat meows", "wind blows"],
    }
    predictions = root / "evaluation" / "stage2_phase2" / "predictions"
    predictions.mkdir()
    for name, texts in captions.items():
        records = [{"run": {"mode": name}}]  # the header line `paircap evaluate` writes
        pairs = [[{"caption": "a dog barks in the rain"}]] * 2 + [[{"caption": "wind"}], []]  # zero-shot: none
        records += [
            {
                "audio_id": f"mix-test-{i}",
                "caption": text,
                "references": ["x"],
                "retrieved": pairs[i] * (name != "zero-shot"),
            }
            for i, text in enumerate(texts)
        ]
        (predictions / f"{name}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    probe = {
        "measure": "names_label",
        "conditions": {
            "none": {"names_label": share([True, False, False, False]), "pulled": None, "copy": None},
            "oracle": {"names_label": share([True, True, True, False]), "pulled": None, "copy": share([False] * 4)},
        },
        "versus_none": {"oracle": paired_naming([True, True, True, False], [True, False, False, False])},
    }
    (root / "mechanism" / "stage2_phase2").mkdir(parents=True)
    (root / "mechanism" / "stage2_phase2" / "context_probe.json").write_text(json.dumps(probe))


@pytest.mark.parametrize(("with_lm_text", "with_teacher"), [(True, False), (False, True)])
def test_mini_card(shared_data, tmp_path, with_lm_text, with_teacher):
    text = ["audiocaps"] * 4 + ["clotho"] * 3 + ["esc50_mix"] * 5 if with_lm_text else ["esc50_mix"] * 5
    recipe = fake_mini_recipe(tmp_path / "run", shared_data, text, with_teacher)
    kb = tmp_path / "kb"
    kb.mkdir()
    KnowledgeBaseMetadata("r" * 64, 16, 16, 30, 6, sources={"esc50": 10, "esc50_mix": 20}).save(kb)
    clips = read_esc50_manifests([shared_data / "esc50_cc"])
    model = torch.nn.Linear(1000, 100)
    model.config = PairCapConfig(knowledge_base="knowledge_base", retrieval_top_k=2)  # as `pack_release` sets it
    card = mini_card(recipe, model, clips, kb, "refined")
    metadata, loaded = parsed(card, tmp_path)
    check_hub_values(metadata)
    assert metadata["license"] == ("cc-by-nc-4.0" if with_lm_text else "cc-by-4.0")
    assert "toy-model" in metadata["tags"] and metadata["metrics"] == ["bleu", "cider"]
    assert set(metadata["datasets"]) == ({"audiocaps", "clotho", "esc50"} if with_lm_text else {"esc50"})
    assert {r.metric_config for r in loaded.data.eval_results} == {DEFAULT_RUN}  # not the grid's best
    body = loaded.text
    default = "generative_pair2pair over KB `knowledge_base` (evaluated as `refined`), W = 0.5, k = 2"
    assert f"**Default configuration:** {default}" in body and f"| default: {default} | 0.400 / n/a |" in body
    assert "| zero-shot (no retrieval) | 0.200 / n/a |" in body
    assert body.index("**Default configuration:**") < body.index("### Every setting evaluated")
    assert "\nIt retrieves `generative_pair2pair` by default.\n" in body  # the paper's mode: no note on why not
    assert ("distilled from an AudioSet-pretrained tagger" in body) == with_teacher
    assert ("EfficientAT `mn04_as`" in body and "MIT licence" in body and "sha256 `899a8c62`" in body) == with_teacher
    tower = "its audio tower was first pretrained to match the embeddings and AudioSet tags of EfficientAT `mn04_as`"
    assert (tower in body and "clips and 1000 waveform-augmented mixtures of them (2000 steps" in body) == with_teacher
    assert ("## Does retrieval change what it says?" in body) == with_teacher  # only with the files it reads
    if with_teacher:
        assert "| zero-shot (no retrieval) | 25 % [5-70] | 0 % [0-49] |" in body
        assert "| default | 75 % [30-95] | 25 % [5-70] |" in body
        gains = "| 2 gained, 0 lost (McNemar p 0.5) | 1 gained, 0 lost (McNemar p 1) |"
        assert f"| default against zero-shot, same mixtures {gains}" in body
        assert "| the default's top retrieved pair (its caption) | 50 % [15-85] | 50 % [15-85] |" in body
        assert "| oracle | 75 % [30-95] | n/a | 0 % [0-49] |" in body and "| oracle | +0.500 |" in body
    assert "0.1 M-parameter" in body and "(CC-BY: 45, CC0: 54;" in body
    assert "| knowledge base | `esc50_mix` | 20 | [ESC-50 clips]" in body
    assert ("**Non-commercial data.** AudioCaps, Clotho are" in body) == with_lm_text
    assert all(f"| {clip.audio_id} | {clip.category} |" in body for clip in clips)  # attribution of every clip
    assert clip_terms(clips)["esc50"].license == "cc-by-3.0"


def test_the_card_command_rewrites_a_release_card_for_its_repo_with_results(tmp_path, capsys):
    release = tmp_path / "release"
    RELEASE_CONFIG.save_pretrained(release)
    status = "trained: stage `raft` for 12 steps"
    provenance = {"base_models": [VICUNA], "language_model": VICUNA, "training_sources": {"clotho": 3}}
    render_model_card(PairCapConfig(), training_status=status, **provenance).save(release / "README.md")
    evaluation = evaluation_results(tmp_path / "eval")
    assert main(["card", str(release), "--repo-id", "org/my-paircap", "--evaluation", str(evaluation)]) == 0
    metadata, loaded = parsed((release / "README.md").read_text(), tmp_path)
    assert metadata["license"] == "llama2" and metadata["base_model"] == [VICUNA]
    assert metadata["paircap"]["training_sources"] == {"clotho": 3}
    assert metadata["model-index"][0]["name"] == "my-paircap"
    assert metadata["model-index"][0]["results"][0]["dataset"]["name"] == "clotho"
    assert metadata["model-index"][0]["results"][0]["metrics"][0]["config"] == DEFAULT_RUN
    assert status in loaded.text and '"org/my-paircap"' in loaded.text
    assert "### Every setting evaluated: cider_d by retrieval method and knowledge base" in loaded.text
    assert f"model-index: run `{DEFAULT_RUN}`" in capsys.readouterr().out

    argv = ["card", str(release), "--repo-id", "org/my-paircap", "--evaluation", str(evaluation)]
    assert main([*argv, "--default-kb", "base"]) == 0  # the user says the release's KB is the one evaluated as base
    metadata = metadata_load(release / "README.md")
    assert metadata["model-index"][0]["results"][0]["metrics"][0]["config"] == "generative_pair2pair__base__w0.5__k2"
    assert main(["card", str(release), "--repo-id", "org/x", "--default-kb", "base"]) == 2
    assert "--default-kb names a knowledge base of an evaluation: pass --evaluation" in capsys.readouterr().err

    with pytest.raises(SystemExit) as exit_status:
        main(["card", str(tmp_path / "eval"), "--repo-id", "org/x"])
    assert exit_status.value.code == 2
    assert f"{tmp_path / 'eval'}: no config.json; not a release folder" in capsys.readouterr().err
