"""`modeling_paircap` exports its public classes, and importing the package itself loads none of the heavy libraries."""

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]

SCRIPT = textwrap.dedent(
    """
    import importlib, json, sys

    import modeling_paircap

    heavy = ("torch", "transformers", "datasets", "faiss", "numpy")
    at_import = sorted(name for name in heavy if name in sys.modules)
    from modeling_paircap import PairCapConfig

    after_config = sorted(name for name in ("faiss", "datasets") if name in sys.modules)
    resolved = {}
    for name in modeling_paircap.__all__:
        value = getattr(modeling_paircap, name)
        module = modeling_paircap._EXPORTS[name]
        resolved[name] = value is getattr(importlib.import_module(f"modeling_paircap.{module}"), name)
    try:
        from modeling_paircap import NoSuchName
        missing = "imported"
    except ImportError as error:
        missing = str(error)
    print(json.dumps({
        "at_import": at_import, "after_config": after_config, "resolved": resolved, "missing": missing,
        "in_dir": sorted(set(modeling_paircap.__all__) - set(dir(modeling_paircap))),
        "config": PairCapConfig.__name__,
    }))
    """
)


def test_public_names_resolve_lazily():
    result = subprocess.run(
        [sys.executable, "-c", SCRIPT], cwd=REPO, capture_output=True, text=True, timeout=300, check=True
    )
    out = json.loads(result.stdout.strip().splitlines()[-1])
    assert out["at_import"] == []  # `import modeling_paircap` loads no torch, transformers, datasets, faiss, numpy
    assert out["after_config"] == []  # the config needs transformers only
    assert out["resolved"] and all(out["resolved"].values())  # each name is the object its module defines
    expected = {
        "PairCapConfig", "PairCapForConditionalGeneration", "PairCapProcessor", "TorchClapFeatures",
        "PairCapKnowledgeBase", "KnowledgeBaseError", "PairCapIndex", "PairCapRetriever", "PairCapRetrieverOutput",
        "RetrievedPair", "AudioInputError", "PairCapCaptioningPipeline",
    }  # fmt: skip
    assert expected <= set(out["resolved"])
    assert "NoSuchName" in out["missing"] and out["in_dir"] == []
    assert out["config"] == "PairCapConfig"


def test_exported_errors_are_the_ones_raised():
    from modeling_paircap import AudioInputError, KnowledgeBaseError, PairCapKnowledgeBase, load_audio

    with pytest.raises(KnowledgeBaseError, match="paircap_kb.json"):
        PairCapKnowledgeBase.from_pretrained(REPO / "hub_cards")  # a folder, but not a knowledge base
    with pytest.raises(AudioInputError, match="pyproject.toml"):
        load_audio(REPO / "pyproject.toml", 48000)
