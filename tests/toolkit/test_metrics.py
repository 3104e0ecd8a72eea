"""Caption metrics: the COCO caption tools' values reproduced through `paircap.metrics` and the `evaluate` module."""

import ast
import csv
import json
import math
import os
import pickle
import stat
import sys
import warnings
from pathlib import Path

import pytest
from helpers import SHARED_DATA

from paircap.metrics import (
    MODULE_FILE,
    SPICE_JARS_ENV,
    CaptionScores,
    JavaNotFoundError,
    compute_caption_metrics,
    find_java,
    ptb_tokenize,
    spice_jars_missing,
)

REPO = Path(__file__).resolve().parents[2]
METRIC_DIR = REPO / "metrics" / "paircap_caption_metrics"
SHARED_METRICS = SHARED_DATA / "metrics"
EXAMPLES = ("aacm_readme_example", "aacm_example_0", "aacm_example_1")

# aac-metrics README example, with its published values (BLEU-1 0.4278, CIDEr-D 0.9614; per item 1.3641, 0.5587)
README_PREDICTIONS = ["a man is speaking", "rain falls"]
README_REFERENCES = [
    ["a man speaks.", "someone speaks.", "a man is speaking while a bird is chirping in the background"],
    ["rain is falling hard on a surface"],
]
# aac-metrics' 3-candidate test example (tests/test_compare_cet.py, `_get_example_0`)
EXAMPLE_0_PREDICTIONS = ["a man is speaking", "birds chirping", "rain is falling in the background"]
EXAMPLE_0_REFERENCES = [
    ["man speaks", "man is speaking", "a man speaks", "man talks", "someone is talking"],
    ["a bird is chirping"] * 5,
    ["heavy rain noise"] * 5,
]


def _java_or_none() -> str | None:
    try:
        return find_java()
    except JavaNotFoundError:
        return None


JAVA = _java_or_none()
needs_java = pytest.mark.skipif(JAVA is None, reason="no Java runtime: the COCO caption tools are Java programs")
posix_only = pytest.mark.skipif(sys.platform == "win32", reason="the stand-in java is a script run by its shebang")


def read_aacm_csv(path: Path) -> tuple[list[str], list[list[str]]]:
    with open(path, newline="", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    return [row["caption_predicted"] for row in rows], [[row[f"caption_{i}"] for i in range(1, 6)] for row in rows]


@pytest.fixture(scope="module")
def reference_values() -> dict:
    path = SHARED_METRICS / "reference_values.json"
    if not path.is_file():
        pytest.skip(f"reference values {path} are absent (the shared data folder sits beside the repo)")
    return json.loads(path.read_text())


@pytest.fixture(scope="module")
def examples(reference_values) -> dict[str, tuple[list[str], list[list[str]]]]:
    inputs = {
        "aacm_readme_example": (README_PREDICTIONS, README_REFERENCES),
        "aacm_example_0": (EXAMPLE_0_PREDICTIONS, EXAMPLE_0_REFERENCES),
        "aacm_example_1": read_aacm_csv(SHARED_METRICS / "aacm_example_1.csv"),
    }
    for name, (predictions, _) in inputs.items():
        assert reference_values[name]["n_candidates"] == len(predictions)
    return inputs


@pytest.fixture(scope="module")
def function_scores(examples) -> dict[str, CaptionScores]:
    if JAVA is None:
        pytest.skip("no Java runtime")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # SPICE's unavailability warning is tested on its own
        return {name: compute_caption_metrics(*inputs) for name, inputs in examples.items()}


@pytest.fixture(scope="module")
def metric_module():
    evaluate = pytest.importorskip("evaluate")
    return evaluate.load(str(METRIC_DIR))


@pytest.fixture(scope="module")
def evaluate_scores(examples, metric_module) -> dict[str, dict]:
    if JAVA is None:
        pytest.skip("no Java runtime")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return {
            name: metric_module.compute(predictions=p, references=r, return_sentence_scores=True)
            for name, (p, r) in examples.items()
        }


def assert_matches(expected: dict, corpus: dict, sentence: dict) -> None:
    """Every reference value to 1e-4; a reference sentence list may cover the first items only."""
    assert set(expected["corpus"]) == {"bleu_1", "bleu_2", "bleu_3", "bleu_4", "meteor", "rouge_l", "cider_d"}
    for metric, value in expected["corpus"].items():
        assert corpus[metric] == pytest.approx(value, abs=1e-4), metric
    for metric, values in expected["sentence"].items():
        assert len(sentence[metric]) == expected["n_candidates"]
        assert sentence[metric][: len(values)] == pytest.approx(values, abs=1e-4), metric


@needs_java
@pytest.mark.parametrize("name", EXAMPLES)
def test_function_reproduces_reference_values(name, reference_values, function_scores):
    scores = function_scores[name]
    assert_matches(reference_values[name], scores.corpus, scores.sentence)
    assert all(isinstance(scores.corpus[m], float) for m in reference_values[name]["corpus"])


@needs_java
@pytest.mark.parametrize("name", EXAMPLES)
def test_evaluate_module_reproduces_reference_values(name, reference_values, evaluate_scores):
    results = evaluate_scores[name]
    assert_matches(reference_values[name], results, results["sentence"])


@needs_java
def test_readme_example_published_values():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        scores = compute_caption_metrics(README_PREDICTIONS, README_REFERENCES, metrics=["bleu_1", "cider_d"])
    assert list(scores.corpus) == ["bleu_1", "cider_d"] and scores.unavailable == {}
    assert scores.corpus["bleu_1"] == pytest.approx(0.4278, abs=1e-4)
    assert scores.corpus["cider_d"] == pytest.approx(0.9614, abs=1e-4)
    assert scores.sentence["cider_d"] == pytest.approx([1.3641, 0.5587], abs=1e-4)
    assert pickle.loads(pickle.dumps(scores)) == scores


@needs_java
def test_one_tokenizer_run_matches_pycocoevalcap_tokenizer():
    """The whole corpus tokenised in one run gives the library's PTBTokenizer output (run per side, as COCOEvalCap)."""
    path = SHARED_METRICS / "aacm_example_2.csv"
    if not path.is_file():
        pytest.skip(f"{path} is absent")
    from pycocoevalcap.tokenizer.ptbtokenizer import PTBTokenizer

    predictions, references = read_aacm_csv(path)
    predictions[:4] = ['A dog barks, "loudly"!', "it's (maybe) a car...", "Rain; wind -- thunder?", "don't stop"]
    library = PTBTokenizer()
    res = library.tokenize({i: [{"caption": p}] for i, p in enumerate(predictions)})
    gts = library.tokenize({i: [{"caption": r} for r in refs] for i, refs in enumerate(references)})
    ours = ptb_tokenize(predictions + [r for refs in references for r in refs], JAVA)
    # (lower-casing happens before the library's punctuation filter, so "-lrb-" survives it: the tools' behaviour)
    assert ours[: len(predictions)] == [res[i][0] for i in range(len(predictions))]
    assert ours[len(predictions) :] == [r for i in range(len(references)) for r in gts[i]]
    assert ours[:4] == ["a dog barks loudly", "it 's -lrb- maybe -rrb- a car", "rain wind thunder", "do n't stop"]


@needs_java
def test_spice_and_spider_unavailable_here(function_scores, evaluate_scores):
    folder, missing = spice_jars_missing()
    if not missing and not os.environ.get(SPICE_JARS_ENV):
        pytest.skip(f"the Stanford CoreNLP jars are present in {folder}")
    scores = function_scores["aacm_readme_example"]
    assert scores.corpus["spice"] is None and scores.corpus["spider"] is None
    assert scores.sentence["spice"] is None and scores.sentence["spider"] is None
    assert "stanford-corenlp-3.6.0.jar" in scores.unavailable["spice"] and str(folder) in scores.unavailable["spice"]
    assert "SPICE" in scores.unavailable["spider"]
    assert scores.to_dict()["spice"] is None and "spice" in scores.to_dict()["unavailable"]
    results = evaluate_scores["aacm_readme_example"]
    assert results["spice"] is None and results["spider"] is None
    assert "stanford-corenlp-3.6.0-models.jar" in results["unavailable"]["spice"]


@needs_java
def test_spice_jar_folder_without_jars_is_unavailable_with_one_warning(tmp_path, monkeypatch):
    monkeypatch.setenv(SPICE_JARS_ENV, str(tmp_path))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        first = compute_caption_metrics(README_PREDICTIONS, README_REFERENCES, metrics=["cider_d", "spice", "spider"])
        second = compute_caption_metrics(["rain"], [["rain falls"]], metrics=["spice"])
    spice_warnings = [w for w in caught if "SPICE" in str(w.message)]
    assert len(spice_warnings) == 1
    message = str(spice_warnings[0].message)
    assert str(tmp_path) in message and "stanford-corenlp-3.6.0-models.jar" in message and SPICE_JARS_ENV in message
    for scores in (first, second):
        assert scores.corpus["spice"] is None and str(tmp_path) in scores.unavailable["spice"]
    assert first.corpus["spider"] is None and first.corpus["cider_d"] == pytest.approx(0.9614, abs=1e-4)
    assert list(second.corpus) == ["spice"] and list(second.unavailable) == ["spice"]


def _fake_java(tmp_path: Path, spice_exit: int = 0) -> Path:
    """A `java` that answers SPICE with per-item scores 0.1 * (id + 1) and runs every other jar with the real Java."""
    log = tmp_path / "spice_call.json"
    script = tmp_path / "fake-java"
    script.write_text(
        f"#!{sys.executable}\n"
        "import json, os, sys\n"
        "args = sys.argv[1:]\n"
        "if 'edu.anu.spice.SpiceScorer' not in args:\n"
        f"    os.execv({JAVA!r}, [{JAVA!r}, *args])\n"
        f"json.dump({{'args': args, 'jdk_options': os.environ.get('JDK_JAVA_OPTIONS', '')}}, open({str(log)!r}, 'w'))\n"
        f"if {spice_exit}:\n"
        "    sys.stderr.write('Exception in thread main: SPICE broke\\n')\n"
        f"    sys.exit({spice_exit})\n"
        "items = json.load(open(args[args.index('edu.anu.spice.SpiceScorer') + 1]))\n"
        "out = [{'image_id': it['image_id'], 'test': it['test'], 'refs': it['refs'],\n"
        "        'scores': {'All': {'f': 0.1 * (it['image_id'] + 1), 'pr': 0.0, 're': 0.0}}} for it in items]\n"
        "json.dump(out, open(args[args.index('-out') + 1], 'w'))\n"
    )
    script.chmod(script.stat().st_mode | stat.S_IXUSR)
    return script


@pytest.fixture
def corenlp_jars(tmp_path, monkeypatch) -> Path:
    """Empty Stanford CoreNLP jars where SPICE_JARS_ENV points (the fake java never opens them)."""
    jars = tmp_path / "corenlp"
    jars.mkdir()
    for name in ("stanford-corenlp-3.6.0.jar", "stanford-corenlp-3.6.0-models.jar"):
        (jars / name).write_bytes(b"")
    monkeypatch.setenv(SPICE_JARS_ENV, str(jars))
    return jars


@posix_only
@needs_java
def test_spice_runs_where_the_jars_are_and_spider_is_the_mean(tmp_path, corenlp_jars):
    java = _fake_java(tmp_path)
    scores = compute_caption_metrics(
        README_PREDICTIONS, README_REFERENCES, metrics=["cider_d", "spice", "spider"], java=str(java)
    )
    assert scores.unavailable == {}
    assert scores.sentence["spice"] == pytest.approx([0.1, 0.2])
    assert scores.corpus["spice"] == pytest.approx(0.15)
    assert scores.sentence["spider"] == pytest.approx([(1.3640549 + 0.1) / 2, (0.5586545 + 0.2) / 2], abs=1e-6)
    assert scores.corpus["spider"] == pytest.approx((0.9613547 + 0.15) / 2, abs=1e-6)
    call = json.loads((tmp_path / "spice_call.json").read_text())
    classpath = call["args"][call["args"].index("-cp") + 1].split(os.pathsep)
    assert str(corenlp_jars / "stanford-corenlp-3.6.0.jar") in classpath and classpath[0].endswith("spice-1.0.jar")
    assert {"-subset", "-silent", "-cache"} <= set(call["args"])
    assert "--add-opens=java.base/java.lang=ALL-UNNAMED" in call["jdk_options"]


@posix_only
@needs_java
def test_spice_failure_is_reported_unavailable_not_zero(tmp_path, corenlp_jars):
    with pytest.warns(UserWarning, match="SPICE broke"):
        scores = compute_caption_metrics(["rain"], [["rain falls"]], ["spice", "spider"], java=_fake_java(tmp_path, 1))
    assert scores.corpus == {"spice": None, "spider": None}
    assert "SPICE broke" in scores.unavailable["spice"] and "SPICE broke" in scores.unavailable["spider"]


def test_length_mismatch_is_a_clear_error():
    with pytest.raises(ValueError, match="3 predictions but 2 reference lists"):
        compute_caption_metrics(["a", "b", "c"], [["a"], ["b"]])
    with pytest.raises(ValueError, match="item 1 has no reference"):
        compute_caption_metrics(["a", "b"], [["a"], []])
    with pytest.raises(TypeError, match="not a single string"):
        compute_caption_metrics("a dog barks", [["a dog barks"]])
    with pytest.raises(ValueError, match="Unknown metric"):
        compute_caption_metrics(["a"], [["a"]], metrics=["bleu"])


@needs_java
def test_empty_prediction_unicode_and_ragged_references():
    predictions = ["", "Un café crème, s'il vous plaît — 東京", "a dog\u2028barks\r\nloudly", "rain falls"]
    references = [
        ["a man speaks", "someone talks"],
        ["un café crème, s'il vous plaît — 東京"],
        ["a dog barks loudly", "dog barking", "a dog barks", "barking"],
        "rain falls on a roof",  # a single string is one reference
    ]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        scores = compute_caption_metrics(predictions, references)
    for metric in ("bleu_1", "bleu_4", "meteor", "rouge_l", "cider_d"):
        assert len(scores.sentence[metric]) == 4 and all(math.isfinite(v) for v in scores.sentence[metric])
        assert scores.sentence[metric][0] == 0.0, metric  # the empty prediction scores 0, and scoring goes on
        assert math.isfinite(scores.corpus[metric])
    # the unicode caption equals its reference and the line separators did not shift any item onto another
    assert scores.sentence["rouge_l"][1] == pytest.approx(1.0)
    assert scores.sentence["bleu_1"][1] == pytest.approx(1.0)
    assert scores.sentence["rouge_l"][2] == pytest.approx(1.0)
    assert scores.sentence["meteor"][1] > 0.9 and scores.sentence["meteor"][2] > 0.9
    assert 0 < scores.sentence["rouge_l"][3] < 1


def test_missing_java_is_a_clear_error(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path))
    monkeypatch.delenv("JAVA_HOME", raising=False)
    with pytest.raises(JavaNotFoundError, match="install a Java runtime"):
        compute_caption_metrics(["a dog barks"], [["a dog barks"]])
    monkeypatch.setenv("JAVA_HOME", str(tmp_path / "jdk"))
    with pytest.raises(JavaNotFoundError, match="has no bin/java"):
        find_java()
    with pytest.raises(JavaNotFoundError, match="not an executable Java runtime"):
        compute_caption_metrics(["a dog barks"], [["a dog barks"]], java=str(tmp_path / "nowhere" / "java"))


@posix_only
def test_java_home_comes_before_path(tmp_path, monkeypatch):
    java = tmp_path / "jdk" / "bin" / "java"
    java.parent.mkdir(parents=True)
    java.write_text("#!/bin/sh\n")
    java.chmod(0o755)
    monkeypatch.setenv("JAVA_HOME", str(tmp_path / "jdk"))
    assert find_java() == str(java)
    if JAVA is not None:
        assert find_java(JAVA) == JAVA


def test_evaluate_module_is_self_contained():
    """The Hub copy cannot import this repository; paircap.metrics loads the very same file."""
    tree = ast.parse(MODULE_FILE.read_text())
    imported = {
        alias.name.split(".")[0] for node in ast.walk(tree) if isinstance(node, ast.Import) for alias in node.names
    }
    imported |= {node.module.split(".")[0] for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)}
    assert not imported & {"paircap", "modeling_paircap", "datasets_scripts", "hub_cards"}
    assert MODULE_FILE == METRIC_DIR / "paircap_caption_metrics.py"
    assert (METRIC_DIR / "README.md").is_file()


def test_evaluate_module_info(metric_module):
    nested, flat = metric_module.features  # references: a list of captions per item, or one caption per item
    assert nested["predictions"].dtype == "string" and nested["references"].feature.dtype == "string"
    assert flat["references"].dtype == "string"
    assert "SPICE" in metric_module.description and "vedantam2015cider" in metric_module.citation
