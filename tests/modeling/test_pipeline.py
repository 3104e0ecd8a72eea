"""`pipeline(model=release, trust_remote_code=True)`: the release's own `audio-captioning` pipeline, run as remote code
in a process that cannot import the repo, on a real ESC-50 clip, without retrieval and with a real knowledge base."""

import json
import os
import subprocess
import sys
import textwrap

import pytest
import torch
from helpers import BLOCK_REPO_IMPORTS
from transformers import AutoConfig

from modeling_paircap.retrieval_paircap import PairCapRetriever

SCRIPT = BLOCK_REPO_IMPORTS + textwrap.dedent(
    """
    import json, sys
    import soundfile as sf
    from transformers import pipeline

    folder, clip, kb, out = sys.argv[1:5]
    captioner = pipeline(model=folder, trust_remote_code=True, device="cpu")
    generation = {"max_new_tokens": 6, "do_sample": False}
    array, rate = sf.read(clip, dtype="float32")
    results = {
        "class": type(captioner).__module__ + "." + type(captioner).__name__,
        "task": captioner.task,
        "off": captioner(clip, **generation),
        "array": captioner(array, sampling_rate=rate, **generation),
        "asr_dict": captioner({"raw": array, "sampling_rate": rate}, **generation),
        "list": captioner([clip, clip], **generation),
        "generative": captioner(clip, knowledge_base=kb, top_k=2, **generation),
        "audio2audio": captioner(clip, knowledge_base=kb, retrieval_mode="audio2audio", top_k=3, **generation),
    }
    try:
        captioner([clip, clip], batch_size=2)
    except ValueError as error:
        results["batched"] = str(error)
    json.dump(results, open(out, "w"))
    """
)


@pytest.fixture(scope="module")
def esc50_clip(shared_data):
    return sorted((shared_data / "esc50_cc").glob("*.flac"))[0]


def test_releases_record_the_pipeline(tiny_release):
    folder, _, _ = tiny_release
    assert (folder / "pipeline_paircap.py").is_file()
    entry = {"impl": "pipeline_paircap.PairCapCaptioningPipeline", "pt": ["AutoModel"], "type": "multimodal"}
    assert json.loads((folder / "config.json").read_text())["custom_pipelines"] == {"audio-captioning": entry}
    assert AutoConfig.from_pretrained(folder, trust_remote_code=True).custom_pipelines == {"audio-captioning": entry}


def test_pipeline_runs_as_remote_code(tiny_release, real_kb, esc50_clip, tmp_path):
    folder, model, processor = tiny_release
    env = {key: value for key, value in os.environ.items() if key != "PYTHONPATH"}
    env.update(HF_HUB_OFFLINE="1", HF_MODULES_CACHE=str(tmp_path / "modules"), TRANSFORMERS_VERBOSITY="error")
    out = tmp_path / "results.json"
    result = subprocess.run(
        [sys.executable, "-c", SCRIPT, str(folder), str(esc50_clip), str(real_kb), str(out)],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    remote = json.loads(out.read_text())
    assert remote["class"].startswith("transformers_modules.")
    assert remote["class"].endswith("pipeline_paircap.PairCapCaptioningPipeline")
    assert remote["task"] == "audio-captioning"
    assert "one clip per pass" in remote["batched"]

    # retrieval off: the caption is the zero-shot caption; a path, an array and an ASR-style dict give the same one
    inputs = processor(audio=[str(esc50_clip)])
    with torch.no_grad():
        plain = model.generate(**inputs, max_new_tokens=6, do_sample=False)
    expected = processor.decode_captions(plain, inputs["input_ids"].shape[1])[0]
    off = {"caption": expected, "zero_shot_caption": expected, "neighbours": []}
    assert remote["off"] == remote["array"] == remote["asr_dict"] == off
    assert remote["list"] == [off, off]

    # with the knowledge base: what `generate` returns, with the retrieved pairs and their scores as neighbours
    retriever = PairCapRetriever.from_pretrained(real_kb, processor)
    for name, mode, top_k in (("generative", "generative_pair2pair", 2), ("audio2audio", "audio2audio", 3)):
        with torch.no_grad():
            output = model.generate(
                **inputs, retriever=retriever, retrieval_mode=mode, top_k=top_k,
                return_dict_in_generate=True, max_new_tokens=6, do_sample=False,
            )  # fmt: skip
        got = remote[name]
        assert got["caption"] == processor.decode_captions(output.sequences, inputs["input_ids"].shape[1])[0]
        neighbours = got["neighbours"]
        assert [n["pair_id"] for n in neighbours] == [p["pair_id"] for p in output.retrieved_pairs[0]]
        assert len(neighbours) == top_k and all(n["caption"] for n in neighbours)
        scores = [n["score"] for n in neighbours]
        assert scores == sorted(scores, reverse=True)
        for mine, theirs in zip(neighbours, output.retrieved_pairs[0], strict=True):
            assert mine["score"] == pytest.approx(float(theirs["score"]), abs=1e-5)
            assert {"audio_id", "audio_score", "text_score", "row"} <= set(mine)
    assert remote["generative"]["zero_shot_caption"] == expected  # pass 1 is the plain zero-shot caption
    assert remote["audio2audio"]["zero_shot_caption"] is None  # audio-to-audio retrieval makes no zero-shot pass
    for neighbour in remote["audio2audio"]["neighbours"]:
        assert neighbour["score"] == pytest.approx(neighbour["audio_score"], abs=1e-5)  # S = S_A in audio2audio


def test_the_pipeline_runs_with_the_installed_classes(tiny_release, esc50_clip):
    """With the classes registered, `pipeline(model=release, pipeline_class=...)` needs no remote code."""
    from transformers import pipeline

    from modeling_paircap import register_auto_classes
    from modeling_paircap.modeling_paircap import PairCapForConditionalGeneration
    from modeling_paircap.pipeline_paircap import PairCapCaptioningPipeline

    folder, model, processor = tiny_release
    register_auto_classes()
    captioner = pipeline(model=str(folder), pipeline_class=PairCapCaptioningPipeline, device="cpu")
    assert type(captioner) is PairCapCaptioningPipeline and type(captioner.model) is PairCapForConditionalGeneration
    inputs = processor(audio=[str(esc50_clip)])
    with torch.no_grad():
        plain = model.generate(**inputs, max_new_tokens=6, do_sample=False)
    expected = processor.decode_captions(plain, inputs["input_ids"].shape[1])[0]
    assert captioner(str(esc50_clip), max_new_tokens=6, do_sample=False)["caption"] == expected
