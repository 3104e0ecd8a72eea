"""The DCASE-2024 metrics (FENSE, SPIDEr-FL, Vocab, SPIDEr-max) with tiny random stand-ins for the FENSE weights."""

import sys
import warnings
from pathlib import Path

import pytest
import torch
from transformers import BertConfig, BertModel, BertTokenizerFast

from paircap.metrics import compute_caption_metrics, find_java

fense = sys.modules["paircap._caption_metrics_package.paircap_fense"]
metric_module = sys.modules["paircap._caption_metrics_package.paircap_caption_metrics"]
WORDS = [
    "a",
    "man",
    "is",
    "speaking",
    "speaks",
    "rain",
    "falls",
    "falling",
    "bird",
    "birds",
    "chirping",
    "dog",
    "barks",
    "loudly",
    "the",
]


def tiny_bert(folder: Path) -> BertModel:
    """A 2-layer random BERT with a word-level vocabulary, saved with its tokenizer (a sentence-transformers folder
    holds the same files at its root)."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "vocab.txt").write_text("\n".join(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *WORDS]) + "\n")
    BertTokenizerFast(vocab_file=str(folder / "vocab.txt")).save_pretrained(folder)
    torch.manual_seed(0)
    config = BertConfig(
        vocab_size=len(WORDS) + 5, hidden_size=16, num_hidden_layers=2, num_attention_heads=2, intermediate_size=32
    )
    model = BertModel(config)
    model.save_pretrained(folder)
    return model


@pytest.fixture
def fense_weights(tmp_path, monkeypatch):
    """Stand-in SBERT folder and error detector; returns a function writing the detector with a given head bias."""
    sbert = tmp_path / "sbert"
    tiny_bert(sbert)
    encoder_dir = tmp_path / "echecker_encoder"
    encoder = tiny_bert(encoder_dir)

    def write_echecker(bias: float) -> Path:
        head = torch.nn.Linear(16, 5)
        torch.nn.init.zeros_(head.weight)
        torch.nn.init.constant_(head.bias, bias)
        state = {f"encoder.{k}": v for k, v in encoder.state_dict().items()}
        state |= {f"clf.{k}": v for k, v in head.state_dict().items()}
        path = tmp_path / f"echecker_{bias}.ckpt"
        torch.save({"model_type": str(encoder_dir), "num_classes": 5, "state_dict": state}, path)
        monkeypatch.setenv(fense.ECHECKER_ENV, str(path))
        return path

    monkeypatch.setenv(fense.SBERT_ENV, str(sbert))
    return write_echecker


def scores(*args, **kwargs):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # SPICE's unavailability warning is tested in test_metrics.py
        return compute_caption_metrics(*args, **kwargs)


def test_fense_on_stand_in_weights(fense_weights):
    """A caption equal to its only reference has SBERT similarity 1: FENSE 1 when fluent, 1 - 0.9 when flagged."""
    predictions, references = ["a man is speaking", "rain falls"], [["a man is speaking"], ["rain falls"]]
    fense_weights(bias=-20.0)  # error probability ~0 < 0.9
    fluent = scores(predictions, references, metrics=["fense"])
    assert fluent.corpus["fense"] == pytest.approx(1.0, abs=1e-5)
    assert fluent.sentence["fense"] == pytest.approx([1.0, 1.0], abs=1e-5)
    fense_weights(bias=20.0)  # error probability ~1 > 0.9
    flagged = scores(predictions, references, metrics=["fense"])
    assert flagged.corpus["fense"] == pytest.approx(0.1, abs=1e-5)
    assert flagged.unavailable == {}


def test_sbert_similarity_is_the_mean_cosine_over_references(fense_weights):
    folder = Path(fense.find_sbert()[0])
    embeds = fense.embed_sentences(["a man is speaking", "a dog barks", "rain falls"], folder)
    assert torch.linalg.norm(torch.from_numpy(embeds), dim=1) == pytest.approx(torch.ones(3), abs=1e-5)
    sims = fense.sbert_similarities(["a man is speaking"], [["a dog barks", "rain falls"]], folder)
    assert sims[0] == pytest.approx(float((embeds[1] @ embeds[0] + embeds[2] @ embeds[0]) / 2), abs=1e-5)


def test_fense_and_spider_fl_formula(monkeypatch):
    """score x (1 - 0.9 x [p > 0.9]), the threshold itself not flagged; SPIDEr-FL applies it to SPIDEr per item."""
    assert fense.fluency_penalised([0.8, 0.5, 0.4], [0.95, 0.2, 0.9]) == pytest.approx([0.08, 0.5, 0.4])
    monkeypatch.setattr(metric_module, "find_sbert", lambda: (Path("sbert"), ""))
    monkeypatch.setattr(metric_module, "find_echecker", lambda: (Path("echecker"), ""))
    monkeypatch.setattr(metric_module, "sbert_similarities", lambda *args: [0.8, 0.5])
    monkeypatch.setattr(metric_module, "error_probabilities", lambda *args: [0.95, 0.2])
    sentence = {"spider": [1.2, 0.6]}
    out = metric_module._dcase2024(["x", "y"], [["x"], ["y"]], ["x", "y"], {"fense", "spider_fl"}, sentence, {})
    assert out["fense"][0] == pytest.approx(0.29)
    assert out["fense"][1] == pytest.approx([0.08, 0.5])
    assert out["spider_fl"][1] == pytest.approx([0.12, 0.6])
    assert out["spider_fl"][0] == pytest.approx(0.36)


def test_unavailable_without_weights_never_zero(tmp_path, monkeypatch):
    monkeypatch.setenv(fense.CACHE_ENV, str(tmp_path / "empty-cache"))
    monkeypatch.setenv(fense.SBERT_ENV, str(tmp_path / "no-sbert"))
    monkeypatch.delenv(fense.ECHECKER_ENV, raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    out = scores(["a man is speaking"], [["a man speaks"]], metrics=["fense", "spider_fl", "spider_max"])
    assert out.corpus == {"fense": None, "spider_fl": None, "spider_max": None}
    assert "no-sbert" in out.unavailable["fense"] and "echecker_clotho_audiocaps_base.ckpt" in out.unavailable["fense"]
    assert "SPICE" in out.unavailable["spider_fl"]
    assert "candidates" in out.unavailable["spider_max"]


def test_vocab_counts_distinct_tokens_of_the_candidates():
    out = scores(["A man is speaking.", "a man, a dog", ""], [["x"], ["y"], ["z"]], metrics=["vocab", "bleu_1"])
    assert out.corpus["vocab"] == 5.0  # a, man, is, speaking, dog (lower-cased, punctuation removed)
    assert out.sentence["vocab"] is None


def test_spider_max_needs_spice_here_and_checks_candidates():
    find_java()
    out = scores(["rain"], [["rain falls"]], metrics=["spider_max"], candidates=[["rain", "rain falls"]])
    assert out.corpus["spider_max"] is None and "SPICE" in out.unavailable["spider_max"]
    with pytest.raises(ValueError, match="candidates"):
        scores(["rain"], [["rain falls"]], metrics=["spider_max"], candidates=[[]])


def test_an_echecker_whose_encoder_is_not_cached_is_unavailable_not_an_error(fense_weights, tmp_path):
    path = fense_weights(bias=0.0)
    states = torch.load(path, weights_only=False)
    states["model_type"] = str(tmp_path / "no-such-encoder")
    torch.save(states, path)
    out = scores(["a man is speaking"], [["a man speaks"]], metrics=["fense"])
    assert out.corpus["fense"] is None and "cannot be loaded" in out.unavailable["fense"]
