"""The mini release committed in `releases/` (what `--model mini` names): small, honest about what it is, without a
copy of the model code (the installed classes run it; an exported copy carries the code), and captioning real audio
offline from a fresh checkout."""

import json
import os
import subprocess
import textwrap
from pathlib import Path

import pyarrow.parquet as pq
import torch
from helpers import BLOCK_REPO_IMPORTS, run_python
from huggingface_hub import DatasetCard, ModelCard

from modeling_paircap.audio_locations_paircap import is_absolute
from modeling_paircap.knowledge_base_paircap import PairCapKnowledgeBase
from modeling_paircap.pipeline_paircap import DEFAULT_MAX_NEW_TOKENS
from paircap.assembly import save_release
from paircap.release_names import LOCAL_RELEASES
from paircap.releases import load_release

REPO = Path(__file__).resolve().parents[2]
RELEASE = LOCAL_RELEASES["mini"]
MAX_BYTES = 20 * 2**20  # issue 12: at most 20 MB with its knowledge base
GENERATION = {"max_new_tokens": 12, "do_sample": False}
REMOTE_CAPTION = BLOCK_REPO_IMPORTS + textwrap.dedent(
    f"""
    import json, sys
    import torch
    from transformers import AutoModel, AutoProcessor

    folder, clip, out = sys.argv[1:4]
    model = AutoModel.from_pretrained(folder, trust_remote_code=True).eval()
    processor = AutoProcessor.from_pretrained(folder, trust_remote_code=True)
    inputs = processor(audio=[clip])
    with torch.no_grad():
        output = model.generate(**inputs, return_dict_in_generate=True, **{GENERATION!r})
    json.dump(
        {{
            "captions": processor.decode_captions(output.sequences, inputs["input_ids"].shape[1]),
            "zero_shot": output.zero_shot_captions,
            "pairs": [[pair["pair_id"] for pair in pairs] for pairs in output.retrieved_pairs],
            "model_class": type(model).__module__,
            "repo_modules": sorted(m for m in sys.modules if m.split(".")[0] in BLOCKED),
        }},
        open(out, "w"),
    )
    """
)


def test_the_shipped_release_is_small_and_says_what_it_is():
    size = sum(path.stat().st_size for path in RELEASE.rglob("*") if path.is_file())
    assert 0 < size <= MAX_BYTES, size
    card = ModelCard.load(RELEASE / "README.md")
    assert "50-event toy" in card.text and "not a useful audio captioner" in card.text
    assert card.data.license == "cc-by-nc-4.0" and "toy-model" in card.data.tags  # its LM learned Clotho's captions
    assert card.data.eval_results  # the results table of its own evaluation
    # held-out naming, zero-shot against the default on the same mixtures, and the context probe's oracle
    assert "| default against zero-shot, same mixtures |" in card.text and "| oracle |" in card.text
    kb_card = DatasetCard.load(RELEASE / "knowledge_base" / "README.md").data
    clips = json.loads((RELEASE / "knowledge_base" / "paircap_kb.json").read_text())
    assert kb_card.license and clips["num_pairs"] > 0


def test_the_shipped_release_holds_the_decoding_defaults():
    """Its `generation_config.json` matches what `save_release` writes now: 40 new tokens, greedy."""
    saved = json.loads((RELEASE / "generation_config.json").read_text())
    assert saved["max_new_tokens"] == DEFAULT_MAX_NEW_TOKENS and not saved["_from_model_config"]
    assert saved.get("num_beams", 1) == 1 and not saved.get("do_sample", False)


def test_the_shipped_release_carries_no_copy_of_the_model_code():
    """The repo keeps the toy's data; `modeling_paircap/` is its one copy of the code (`--model mini` runs that)."""
    tracked = subprocess.run(
        ["git", "ls-files", "releases"], cwd=REPO, capture_output=True, text=True, check=True
    ).stdout.split()
    assert any(name.endswith("model.safetensors") for name in tracked)
    assert [name for name in tracked if name.endswith(".py")] == []


def test_an_exported_copy_loads_as_remote_code_in_a_clean_process(shared_data, tmp_path):
    """Exporting writes the remote code into the copy, and a process that cannot import the repo captions with it,
    retrieving from the bundled KB, exactly as the installed classes caption the shipped folder."""
    clip = str(sorted((shared_data / "esc50_cc").glob("*.flac"))[0])
    model, processor = load_release(str(RELEASE))
    export = save_release(model, processor, tmp_path / "export", ModelCard.load(RELEASE / "README.md"))
    bundled = RELEASE / "knowledge_base"  # saving the loaded release bundles its KB
    names = ["paircap_kb.json", "index.faiss", "tokens.safetensors", "clips.parquet"]
    assert all((export / "knowledge_base" / name).read_bytes() == (bundled / name).read_bytes() for name in names)
    code = sorted(path.name for path in export.glob("*.py"))
    assert "modeling_paircap.py" in code and "pipeline_paircap.py" in code
    for name in code:  # the code as it is now, not an older copy
        assert (export / name).read_bytes() == (REPO / "modeling_paircap" / name).read_bytes(), name

    env = {key: value for key, value in os.environ.items() if key != "PYTHONPATH"}
    env.update(HF_HUB_OFFLINE="1", HF_MODULES_CACHE=str(tmp_path / "modules"), TRANSFORMERS_VERBOSITY="error")
    out = tmp_path / "remote.json"
    result = run_python(["-c", REMOTE_CAPTION, str(export), clip, str(out)], tmp_path, env)
    assert result.returncode == 0, result.stderr[-3000:]
    remote = json.loads(out.read_text())
    assert remote["repo_modules"] == [] and remote["model_class"].startswith("transformers_modules.")

    inputs = processor(audio=[clip])
    with torch.no_grad():
        local = model.generate(**inputs, return_dict_in_generate=True, **GENERATION)
    assert type(model).__module__ == "modeling_paircap.modeling_paircap"
    assert remote["captions"] == processor.decode_captions(local.sequences, inputs["input_ids"].shape[1])
    assert remote["zero_shot"] == local.zero_shot_captions
    assert remote["pairs"] == [[pair["pair_id"] for pair in pairs] for pairs in local.retrieved_pairs]
    assert remote["pairs"][0]  # it retrieved from the bundled knowledge base


def test_model_mini_captions_real_audio_offline(shared_data, tmp_path):
    clips = sorted((shared_data / "esc50_cc").glob("*.flac"))[:2]
    modules = tmp_path / "modules"  # where transformers would put a release's remote code
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(REPO), "HF_MODULES_CACHE": str(modules)}
    result = run_python(
        ["-m", "paircap.cli", "caption", *map(str, clips), "--model", "mini", "--no-progress"], tmp_path, env
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert not list(modules.rglob("*.py"))  # the installed classes ran, no remote code
    records = [json.loads(line) for line in result.stdout.splitlines()]
    assert [record["file"] for record in records] == [str(clip) for clip in clips]
    for record in records:
        assert record["caption"] and record["zero_shot_caption"] and record["retrieved"]
        assert all(pair["caption"] and pair["audio_id"] for pair in record["retrieved"])


def test_the_shipped_kb_records_clips_under_named_roots_and_they_play_from_the_shared_data(shared_data):
    """No build-machine path: each clip lives under a root name (`esc50_cc` for the real clips, `esc50_mini` for the
    mini run's mixtures), so `--audio-root esc50_cc=../shared/data/esc50_cc` finds the real ones anywhere."""
    folder = RELEASE / "knowledge_base"
    clips = pq.read_table(folder / "clips.parquet")
    roots, paths = clips.column("audio_root").to_pylist(), clips.column("audio_path").to_pylist()
    assert set(roots) == {"esc50_cc", "esc50_mini"} and not any(is_absolute(path) for path in paths)
    kb = PairCapKnowledgeBase.from_pretrained(folder, audio_roots={"esc50_cc": shared_data / "esc50_cc"})
    real = [clip for clip, root in enumerate(roots) if root == "esc50_cc"]
    assert len(real) == 64
    assert all(Path(kb.audio_location(clip)).parent == (shared_data / "esc50_cc").resolve() for clip in real)
