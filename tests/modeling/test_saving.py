"""`save_pretrained` / `push_to_hub` of a loaded model write a complete release: the remote code (the pipeline's file
included) and the knowledge base, bundled and checked, or named by hub id; a release saved from a loaded one captions
as the original did, run as remote code in a process that cannot import the repo, and saves completely again."""

import json
import os
import re
import shutil
import textwrap
from pathlib import Path
from types import SimpleNamespace

import huggingface_hub
import pytest
from helpers import BLOCK_REPO_IMPORTS, run_python
from test_generate import build_kb, bundle_kb, pairs_dataset, write_clip
from transformers.dynamic_module_utils import get_relative_import_files

import modeling_paircap
from modeling_paircap import saving_paircap
from modeling_paircap.configuration_paircap import PairCapConfig
from modeling_paircap.kb_format_paircap import KnowledgeBaseError
from modeling_paircap.modeling_paircap import PairCapForConditionalGeneration
from modeling_paircap.processing_paircap import PairCapProcessor
from modeling_paircap.retrieval_paircap import PairCapRetriever

GEN = {"max_new_tokens": 5, "do_sample": False}

REMOTE_SCRIPT = BLOCK_REPO_IMPORTS + textwrap.dedent(
    """
    import json, sys
    import torch
    from transformers import AutoModel, AutoProcessor, pipeline

    folder, queries, resaved, out = sys.argv[1], json.loads(sys.argv[2]), sys.argv[3], sys.argv[4]
    captioner = pipeline(model=folder, trust_remote_code=True, device="cpu")
    piped = [captioner(clip, top_k=2, max_new_tokens=5, do_sample=False) for clip in queries]
    model = AutoModel.from_pretrained(folder, trust_remote_code=True).eval()
    processor = AutoProcessor.from_pretrained(folder, trust_remote_code=True)
    generated = []
    for clip in queries:
        inputs = processor(audio=[clip])
        output = model.generate(**inputs, top_k=2, return_dict_in_generate=True, max_new_tokens=5, do_sample=False)
        generated.append(processor.decode_captions(output.sequences, inputs["input_ids"].shape[1])[0])
    model.save_pretrained(resaved)  # the release's own code saves it again
    processor.save_pretrained(resaved)
    json.dump(
        {
            "piped": piped,
            "generated": generated,
            "model_class": type(model).__module__,
            "repo_modules": sorted(m for m in sys.modules if m.split(".")[0] in BLOCKED),
        },
        open(out, "w"),
    )
    """
)


@pytest.fixture(scope="module")
def clips(tmp_path_factory):
    """Three KB clips and two query clips."""
    folder = tmp_path_factory.mktemp("clips")
    kb = [write_clip(folder / f"kb{i}.wav", s, 200 * (i + 1), i) for i, s in enumerate([3, 5, 4])]
    queries = [write_clip(folder / f"q{i}.wav", s, 210 * (i + 1), 50 + i) for i, s in enumerate([4, 6])]
    return kb, queries


@pytest.fixture(scope="module")
def bundled_release(tiny_release, clips, tmp_path_factory):
    """The tiny release with a KB bundled as `knowledge_base/`, as the toolkit's releases ship it."""
    pairs = pairs_dataset(clips[0], ["A hum.", "A whistle.", "Rain falls."], ["Thunder rumbles far away."])
    kb = build_kb(tiny_release, tmp_path_factory.mktemp("kb") / "kb", pairs, "test")
    return bundle_kb(tiny_release[0], kb, tmp_path_factory.mktemp("bundled") / "release")


@pytest.fixture
def fresh_classes(monkeypatch):
    """The classes as a fresh process has them: registered for no auto class (only assembling a release did so)."""
    for cls in (PairCapConfig, PairCapForConditionalGeneration, PairCapProcessor):
        monkeypatch.setattr(cls, "_auto_class", None)


def remote_code_files() -> set[str]:
    """The files a release's remote code needs: the model's module and everything it imports, the pipeline too."""
    modeling = modeling_paircap.modeling_paircap.__file__
    return {os.path.basename(path) for path in [modeling, *get_relative_import_files(modeling)]}


def kb_files(folder) -> dict[str, bytes]:
    return {
        path.relative_to(folder).as_posix(): path.read_bytes() for path in sorted(folder.rglob("*")) if path.is_file()
    }


def test_a_loaded_release_saved_again_captions_the_same_as_remote_code(bundled_release, clips, tmp_path, fresh_classes):
    retriever = PairCapRetriever.from_pretrained(bundled_release)
    model = PairCapForConditionalGeneration.from_pretrained(bundled_release, retriever=retriever).eval()
    processor = PairCapProcessor.from_pretrained(bundled_release)
    saved, resaved = tmp_path / "saved", tmp_path / "resaved"
    model.save_pretrained(saved)
    processor.save_pretrained(saved)
    assert model.config.knowledge_base == "knowledge_base" and model.retriever is retriever

    names = {path.name for path in saved.iterdir()}
    assert {"pipeline_paircap.py", "processing_paircap.py", "configuration_paircap.py"} <= remote_code_files() <= names
    config = json.loads((saved / "config.json").read_text())
    assert config["knowledge_base"] == "knowledge_base"
    assert config["auto_map"]["AutoModel"] == "modeling_paircap.PairCapForConditionalGeneration"
    assert config["custom_pipelines"]["audio-captioning"]["impl"] == "pipeline_paircap.PairCapCaptioningPipeline"
    processor_config = json.loads((saved / "processor_config.json").read_text())
    assert processor_config["auto_map"] == {"AutoProcessor": "processing_paircap.PairCapProcessor"}
    bundled = kb_files(bundled_release / "knowledge_base")
    assert kb_files(saved / "knowledge_base") == bundled

    queries = clips[1]
    env = {key: value for key, value in os.environ.items() if key != "PYTHONPATH"}
    env.update(HF_HUB_OFFLINE="1", HF_MODULES_CACHE=str(tmp_path / "modules"), TRANSFORMERS_VERBOSITY="error")
    out = tmp_path / "result.json"
    args = ["-c", REMOTE_SCRIPT, str(saved), json.dumps(queries), str(resaved), str(out)]
    result = run_python(args, tmp_path, env)
    assert result.returncode == 0, result.stderr[-3000:]
    remote = json.loads(out.read_text())
    assert remote["repo_modules"] == [] and remote["model_class"].startswith("transformers_modules.")

    expected = []
    for clip in queries:  # the original release, with its retriever, one clip at a time as the pipeline runs
        inputs = processor(audio=[clip])
        output = model.generate(**inputs, top_k=2, return_dict_in_generate=True, **GEN)
        expected.append((processor.decode_captions(output.sequences, inputs["input_ids"].shape[1])[0], output))
    assert remote["generated"] == [caption for caption, _ in expected]
    for piped, (caption, output) in zip(remote["piped"], expected, strict=True):
        assert piped["caption"] == caption and piped["zero_shot_caption"] == output.zero_shot_captions[0]
        assert [n["pair_id"] for n in piped["neighbours"]] == [p["pair_id"] for p in output.retrieved_pairs[0]]

    # saved again by the remote-code classes (their files live in the modules cache): as complete
    assert {path.name for path in resaved.iterdir()} == names
    assert kb_files(resaved / "knowledge_base") == bundled
    assert json.loads((resaved / "config.json").read_text())["custom_pipelines"] == config["custom_pipelines"]


def test_the_kb_is_copied_only_when_needed_and_checked(bundled_release, tmp_path, monkeypatch, fresh_classes):
    model = PairCapForConditionalGeneration.from_pretrained(bundled_release).eval()  # config.knowledge_base only
    target = tmp_path / "saved"
    model.save_pretrained(target)
    metadata = target / "knowledge_base" / "paircap_kb.json"
    assert json.loads((target / "config.json").read_text())["knowledge_base"] == "knowledge_base"
    before = metadata.stat().st_ino
    model.save_pretrained(target)  # the same KB is there: left as it is
    assert metadata.stat().st_ino == before
    model.save_pretrained(bundled_release)  # saved in place: its own KB is not copied onto itself
    assert kb_files(bundled_release / "knowledge_base") == kb_files(target / "knowledge_base")

    warnings = []
    monkeypatch.setattr(saving_paircap.logger, "warning", lambda message, *args: warnings.append(message % args))
    model.name_or_path = "org/paircap"  # as loaded from the hub: its bundled KB was not downloaded
    model.save_pretrained(tmp_path / "unbundled")
    assert len(warnings) == 1 and "names 'knowledge_base', which is not in the saved folder" in warnings[0]

    broken = tmp_path / "broken"
    shutil.copytree(bundled_release, broken)
    index = broken / "knowledge_base" / "index.faiss"
    data = bytearray(index.read_bytes())
    data[-1] ^= 0xFF  # same size, other bytes: only the sha256 record sees it
    index.write_bytes(bytes(data))
    damaged = PairCapForConditionalGeneration.from_pretrained(broken).eval()
    with pytest.raises(KnowledgeBaseError, match=re.escape(f"{index}: sha256")):
        damaged.save_pretrained(tmp_path / "from-broken")
    assert not (tmp_path / "from-broken" / "knowledge_base").exists()


def test_a_hub_kb_is_named_not_copied_and_push_uploads_the_whole_release(
    bundled_release, tmp_path, monkeypatch, fresh_classes
):
    retriever = PairCapRetriever.from_pretrained(bundled_release)
    retriever.knowledge_base.hub_id = "org/paircap-kb"  # as loaded from the hub dataset repo
    model = PairCapForConditionalGeneration.from_pretrained(bundled_release, retriever=retriever).eval()
    model.save_pretrained(tmp_path / "named")
    assert json.loads((tmp_path / "named" / "config.json").read_text())["knowledge_base"] == "org/paircap-kb"
    assert not (tmp_path / "named" / "knowledge_base").exists()

    uploads = []

    def upload_folder(self, repo_id, folder_path, **options):
        files = sorted(path.relative_to(folder_path).as_posix() for path in Path(folder_path).rglob("*"))
        uploads.append((repo_id, files, options))

    def create_repo(self, repo_id, **options):
        return SimpleNamespace(repo_id=repo_id)

    monkeypatch.setattr(huggingface_hub.HfApi, "create_repo", create_repo)
    monkeypatch.setattr(huggingface_hub.HfApi, "upload_folder", upload_folder)
    bundled = PairCapForConditionalGeneration.from_pretrained(bundled_release).eval()
    bundled.push_to_hub("org/paircap", private=True, commit_message="release")
    bundled.save_pretrained(tmp_path / "pushed", push_to_hub=True, repo_id="org/other")
    assert [(repo, options) for repo, _, options in uploads] == [
        ("org/paircap", {"commit_message": "release"}),
        ("org/other", {"commit_message": "Upload PairCap release"}),
    ]
    for _, files, _ in uploads:
        assert {"pipeline_paircap.py", "knowledge_base/paircap_kb.json", "knowledge_base/index.faiss"} <= set(files)
        assert any(name.startswith("knowledge_base/data/") and name.endswith(".parquet") for name in files)
    with pytest.raises(TypeError, match="unknown options"):
        bundled.push_to_hub("org/paircap", tags=["x"])
