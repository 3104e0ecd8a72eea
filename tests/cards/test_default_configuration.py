"""The model card reports the release's default configuration (what `generate` does with no arguments), never the best
run of the grid: chosen over a better run, missing (no `model-index`, and the card says why), and how `paircap
evaluate` finds the evaluated knowledge base that is the release's own."""

from pathlib import Path

import pytest
from huggingface_hub import metadata_load

from hub_cards import DefaultConfiguration, release_default, render_model_card
from modeling_paircap.configuration_paircap import PairCapConfig
from paircap.evaluation_report import evaluation_settings

TOY = PairCapConfig(knowledge_base="knowledge_base", retrieval_top_k=4)  # as the mini's packed release


def run(mode: str, kb: str | None, cider: float, weight: float = 0.5, top_k: int = 4, candidates: int = 0) -> dict:
    """A run of `results.json` as `paircap evaluate` writes it."""
    name = "zero-shot" if mode == "none" else f"{mode}__{kb}__w{weight:g}__k{top_k}"
    name += f"__clap{candidates}x0.5" if candidates else ""
    return {
        "name": name, "knowledge_base": None if kb is None else f"/run/kb/{kb}", "mode": mode, "fusion_weight": weight,
        "top_k": 0 if mode == "none" else top_k, "sweeps": ["grid"], "num_candidates": candidates,
        "rescore_weight": 0.5, "rescore_query": False, "items": 60, "failed_items": 0,
        "metrics": {"meteor": cider / 2, "cider_d": cider}, "unavailable": {},
        "mean_audio_similarity": None, "mean_text_similarity": None, "mean_query_text_score": None,
    }  # fmt: skip


# the shipped toy's grid: audio2mixture over `large` (0.201) is its best run, its default scores 0.090
RESULTS = {
    "settings": {"dataset": {"name": "esc50-mixtures", "split": "test"}},
    "runs": [
        run("none", None, 0.156),
        run("audio2mixture", "large", 0.201),
        run("audio2mixture", "refined", 0.168),
        run("generative_pair2pair", "large", 0.115),
        run("generative_pair2pair", "refined", 0.090),
        run("generative_pair2pair", "refined", 0.120, weight=0.9),
        run("generative_pair2pair", "refined", 0.100, candidates=3),
    ],
}


def card_of(config: PairCapConfig, kb: str | None, tmp_path: Path) -> tuple[dict, str]:
    """The model card's metadata and text for a release with `config` whose own KB was evaluated as `kb`."""
    text = str(render_model_card(config, results=RESULTS, default_knowledge_base=kb))
    (tmp_path / "README.md").write_text(text)
    return metadata_load(tmp_path / "README.md"), text


def test_the_default_run_is_reported_over_a_better_one(tmp_path):
    default = release_default(RESULTS, TOY, "refined")
    assert default.run["name"] == "generative_pair2pair__refined__w0.5__k4" and default.reason is None
    metadata, text = card_of(TOY, "refined", tmp_path)
    metrics = metadata["model-index"][0]["results"][0]["metrics"]
    assert {m["config"] for m in metrics} == {"generative_pair2pair__refined__w0.5__k4"}
    assert {m["type"]: m["value"] for m in metrics} == {"meteor": 0.045, "cider_d": 0.09}
    assert metadata["model-index"][0]["results"][0]["dataset"] == {
        "name": "esc50-mixtures", "type": "esc50-mixtures", "split": "test"
    }  # fmt: skip
    described = "generative_pair2pair over KB `knowledge_base` (evaluated as `refined`), W = 0.5, k = 4"
    assert f"**Default configuration:** {described}: what `generate` does out of the box." in text
    assert (
        "| default | 60 | 0.0450 | 0.0900 |" in text and "| zero-shot (no retrieval) | 60 | 0.0780 | 0.1560 |" in text
    )
    assert text.index("| default |") < text.index("### Every setting evaluated") < text.index("### DCASE-2024")
    assert "| audio2mixture | 0.2010 | 0.1680 |" in text  # the grid (KBs large, refined), best run included
    # the KB as given to `paircap evaluate`, or its folder name; rescoring configured: the rescored run
    assert release_default(RESULTS, TOY, "/run/kb/refined").run is default.run
    rescoring = PairCapConfig(knowledge_base="knowledge_base", retrieval_top_k=4, rescore="clap", num_candidates=3)
    assert release_default(RESULTS, rescoring, "refined").run["name"].endswith("__clap3x0.5")
    weight = PairCapConfig(knowledge_base="kb", fusion_weight=0.9, retrieval_top_k=4)
    assert release_default(RESULTS, weight, "refined").run["name"] == "generative_pair2pair__refined__w0.9__k4"


@pytest.mark.parametrize(
    ("config", "kb", "reason"),
    [
        (PairCapConfig(knowledge_base="knowledge_base"), "refined", "its runs of generative_pair2pair over that KB: "
         "`generative_pair2pair__refined__w0.5__k4`, `generative_pair2pair__refined__w0.9__k4`"),  # k = 5
        (TOY, None, "the evaluation did not say which of its knowledge bases (`large`, `refined`) that is"),
        (TOY, "huge", "the evaluation never retrieved from `huge`"),
        (PairCapConfig(knowledge_base="kb", retrieval_mode="audio2audio", retrieval_top_k=4), "refined",
         "it ran no audio2audio over that KB"),
    ],
)  # fmt: skip
def test_a_default_no_run_measured_gets_no_model_index_and_the_card_says_why(config, kb, reason, tmp_path):
    default = release_default(RESULTS, config, kb)
    assert default.run is None and reason in default.reason
    metadata, text = card_of(config, kb, tmp_path)
    assert "model-index" not in metadata and reason in text
    assert "**Not measured:**" in text and "So the model card has no `model-index`" in text
    assert "### Every setting evaluated" in text  # the grid is still there


def test_without_a_knowledge_base_the_default_is_zero_shot(tmp_path):
    metadata, text = card_of(PairCapConfig(), "refined", tmp_path)  # generate retrieves from nothing
    assert {m["config"] for m in metadata["model-index"][0]["results"][0]["metrics"]} == {"zero-shot"}
    assert "**Default configuration:** zero-shot (no knowledge base is configured)" in text
    assert "| zero-shot (no retrieval) |" not in text  # not beside itself
    no_pairs = DefaultConfiguration.from_config(PairCapConfig(knowledge_base="kb", retrieval_top_k=0), "refined")
    assert no_pairs.mode == "none" and no_pairs.describe() == "zero-shot (top-k is 0)"


def test_evaluate_records_the_release_knowledge_base(tmp_path):
    release = tmp_path / "release"
    (release / "knowledge_base").mkdir(parents=True)
    bundled = PairCapConfig(knowledge_base="knowledge_base")
    kbs = [str(tmp_path / "other"), str(release / "knowledge_base")]
    settings = evaluation_settings(bundled, str(release), kbs, None, "clotho", "evaluation")
    assert settings["dataset"] == {"name": "clotho", "split": "evaluation"}
    assert settings["default"]["knowledge_base"] == kbs[1]  # the folder the release's config names
    hub = PairCapConfig(knowledge_base="org/refined-kb")
    assert evaluation_settings(hub, "org/paircap", ["org/base-kb", "org/refined-kb"], None, "c", "e")["default"][
        "knowledge_base"
    ] == "org/refined-kb"  # fmt: skip
    unnamed = evaluation_settings(hub, "org/paircap", ["kbs/a", "kbs/b"], None, "c", "e")["default"]
    assert unnamed["knowledge_base"] is None and unnamed["release_knowledge_base"] == "org/refined-kb"
    named = evaluation_settings(hub, "org/paircap", ["kbs/a", "kbs/b"], "kbs/b", "c", "e")["default"]
    assert named["knowledge_base"] == "kbs/b"
    # the card takes the recorded KB for the same release KB, and not for another
    results = {"settings": {"default": named}, "runs": [run("generative_pair2pair", "b", 0.1, top_k=5)]}
    results["runs"][0]["knowledge_base"] = "kbs/b"
    assert release_default(results, hub).run is results["runs"][0]
    assert release_default(results, PairCapConfig(knowledge_base="org/other-kb")).run is None
