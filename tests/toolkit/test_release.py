"""The release folder: assembly, files on disk, and a remote-code round trip in a process that cannot see the repo."""

import json
import os
import textwrap

import numpy as np
import pytest
import torch
from helpers import BLOCK_REPO_IMPORTS, SHARED_DATA, run_python
from safetensors.torch import load_file

from modeling_paircap.modeling_paircap import PairCapForConditionalGeneration

REMOTE_SCRIPT = BLOCK_REPO_IMPORTS + textwrap.dedent(
    """
    import json, sys
    import numpy as np, torch
    from transformers import AutoModel, AutoModelForCausalLM, AutoProcessor

    folder, audio_json, out = sys.argv[1], sys.argv[2], sys.argv[3]
    audio = json.loads(audio_json)
    model = AutoModel.from_pretrained(folder, trust_remote_code=True).eval()
    causal = AutoModelForCausalLM.from_pretrained(folder, trust_remote_code=True).eval()
    processor = AutoProcessor.from_pretrained(folder, trust_remote_code=True)
    inputs = processor(audio=audio)
    with torch.no_grad():
        logits = model(**inputs).logits
        causal_logits = causal(**inputs).logits
        generated = model.generate(**inputs, max_new_tokens=8, do_sample=False)
    np.save(out + "/logits.npy", logits.numpy())
    json.dump(
        {
            "captions": processor.decode_captions(generated, inputs["input_ids"].shape[1]),
            "model_class": type(model).__module__ + "." + type(model).__name__,
            "causal_class": type(causal).__name__,
            "processor_class": type(processor).__module__ + "." + type(processor).__name__,
            "causal_equal": bool(torch.equal(logits, causal_logits)),
            "repo_modules": sorted(m for m in sys.modules if m.split(".")[0] in BLOCKED),
        },
        open(out + "/result.json", "w"),
    )
    """
)


@pytest.fixture(scope="module")
def roundtrip_audio(tmp_path_factory) -> list[str]:
    """A synthetic clip, plus two real Clotho clips (multi-window) when the shared data is present."""
    import soundfile as sf

    folder = tmp_path_factory.mktemp("audio")
    t = np.arange(48000 * 4) / 48000
    sf.write(folder / "chirp.wav", (0.2 * np.sin(2 * np.pi * (200 + 300 * t) * t)).astype(np.float32), 48000)
    audio = [str(folder / "chirp.wav")]
    clotho = SHARED_DATA / "clotho_eval7"
    audio += [str(path) for path in sorted(clotho.glob("*.flac"))[:2]]
    return audio


def test_assembly_writes_a_complete_release(tiny_release, tiny_checkpoints):
    folder, model, processor = tiny_release
    names = {path.name for path in folder.iterdir()}
    assert {"config.json", "model.safetensors", "generation_config.json", "processor_config.json"} <= names
    assert {"configuration_paircap.py", "modeling_paircap.py", "processing_paircap.py", "encoders_paircap.py"} <= names
    audio = {"arrays", "decoding", "files", "loading", "pyav", "reader", "windows"}
    assert {f"audio_{job}_paircap.py" for job in audio} <= names  # what the processor imports, followed through
    assert not any(name.endswith((".bin", ".pt", ".pth")) for name in names)
    card = (folder / "README.md").read_text()
    assert "library_name: transformers" in card and "untrained: assembled from" in card
    config = json.loads((folder / "config.json").read_text())
    assert config["auto_map"] == {
        "AutoConfig": "configuration_paircap.PairCapConfig",
        "AutoModel": "modeling_paircap.PairCapForConditionalGeneration",
        "AutoModelForCausalLM": "modeling_paircap.PairCapForConditionalGeneration",
        "PairCapEncoders": "encoders_paircap.PairCapEncoders",
    }
    assert json.loads((folder / "processor_config.json").read_text())["auto_map"] == {
        "AutoProcessor": "processing_paircap.PairCapProcessor"
    }
    tokenizer = processor.tokenizer
    assert model.config.audio_token_id == tokenizer.convert_tokens_to_ids("<audio>") == len(tokenizer) - 2
    assert model.config.long_audio_token_id == len(tokenizer) - 1
    assert model.get_input_embeddings().weight.shape[0] == len(tokenizer) == model.config.text_config.vocab_size
    # the pretrained LM and CLAP weights are carried over unchanged; only the new token rows are added
    _, llama = tiny_checkpoints
    lm_weights = load_file(llama / "model.safetensors")
    old_rows = lm_weights["model.embed_tokens.weight"]
    torch.testing.assert_close(model.get_input_embeddings().weight[: len(old_rows)], old_rows)
    torch.testing.assert_close(model.language_model.lm_head.weight[: len(old_rows)], lm_weights["lm_head.weight"])
    projector = model.multi_modal_projector
    assert projector.linear_1.weight.std().item() == pytest.approx(model.config.text_config.initializer_range, rel=0.1)
    assert (projector.linear_1.bias == 0).all()


def test_remote_code_round_trip_in_a_clean_process(tiny_release, roundtrip_audio, tmp_path):
    folder, model, processor = tiny_release
    env = {key: value for key, value in os.environ.items() if key != "PYTHONPATH"}
    env.update(HF_HUB_OFFLINE="1", HF_MODULES_CACHE=str(tmp_path / "modules"), TRANSFORMERS_VERBOSITY="error")
    result = run_python(["-c", REMOTE_SCRIPT, str(folder), json.dumps(roundtrip_audio), str(tmp_path)], tmp_path, env)
    assert result.returncode == 0, result.stderr[-3000:]
    remote = json.loads((tmp_path / "result.json").read_text())
    assert remote["repo_modules"] == []
    assert remote["model_class"].startswith("transformers_modules.")
    assert remote["model_class"].endswith("modeling_paircap.PairCapForConditionalGeneration")
    assert remote["processor_class"].startswith("transformers_modules.")
    assert remote["causal_class"] == "PairCapForConditionalGeneration" and remote["causal_equal"]

    inputs = processor(audio=roundtrip_audio)
    with torch.no_grad():
        logits = model(**inputs).logits
        generated = model.generate(**inputs, max_new_tokens=8, do_sample=False)
    np.testing.assert_allclose(np.load(tmp_path / "logits.npy"), logits.numpy(), rtol=1e-5, atol=1e-5)
    assert remote["captions"] == processor.decode_captions(generated, inputs["input_ids"].shape[1])


def test_reload_in_process_keeps_weights(tiny_release):
    folder, model, _ = tiny_release
    reloaded = PairCapForConditionalGeneration.from_pretrained(folder).eval()
    for (name, original), (_, loaded) in zip(model.state_dict().items(), reloaded.state_dict().items(), strict=True):
        torch.testing.assert_close(loaded, original, msg=name)


def test_registered_classes_load_a_release_without_its_remote_code(tiny_release, sine_wave):
    """After `register_auto_classes()` the Auto API gives the installed classes, with or without
    `trust_remote_code=True` (transformers prefers registered local classes), and the pipeline task is known."""
    from transformers import AutoConfig, AutoModel, AutoModelForCausalLM, AutoProcessor
    from transformers.pipelines import PIPELINE_REGISTRY

    from modeling_paircap import register_auto_classes
    from modeling_paircap.configuration_paircap import PairCapConfig
    from modeling_paircap.pipeline_paircap import PairCapCaptioningPipeline
    from modeling_paircap.processing_paircap import PairCapProcessor

    folder, model, processor = tiny_release
    register_auto_classes()
    assert type(AutoConfig.from_pretrained(folder)) is PairCapConfig
    assert type(AutoProcessor.from_pretrained(folder)) is PairCapProcessor
    inputs = processor(audio=[sine_wave(2)], sampling_rate=48000)
    for auto_class, trust in ((AutoModel, False), (AutoModelForCausalLM, False), (AutoModel, True)):
        loaded = auto_class.from_pretrained(folder, trust_remote_code=trust).eval()
        assert type(loaded) is PairCapForConditionalGeneration
        with torch.no_grad():
            torch.testing.assert_close(loaded(**inputs).logits, model(**inputs).logits)
    assert PIPELINE_REGISTRY.check_task("audio-captioning")[1]["impl"] is PairCapCaptioningPipeline


def test_the_command_line_runs_a_releases_own_code_only_when_trusted(tiny_release, sine_wave):
    """`load_release`: the installed classes by default; the release's own files with `trust_remote_code`, even in
    a process where the installed classes are registered. Both give the same logits."""
    from modeling_paircap import register_auto_classes
    from modeling_paircap.processing_paircap import PairCapProcessor
    from paircap.releases import load_release

    folder, model, processor = tiny_release
    register_auto_classes()
    installed, installed_processor = load_release(str(folder))
    remote, remote_processor = load_release(str(folder), trust_remote_code=True)
    assert type(installed) is PairCapForConditionalGeneration and type(installed_processor) is PairCapProcessor
    for loaded in (remote, remote_processor):
        assert type(loaded).__module__.startswith("transformers_modules.")
    wave = sine_wave(2)
    with torch.no_grad():
        expected = model(**processor(audio=[wave], sampling_rate=48000)).logits
        for loaded, loaded_processor in ((installed, installed_processor), (remote, remote_processor)):
            inputs = loaded_processor(audio=[wave], sampling_rate=48000)
            torch.testing.assert_close(loaded(**inputs).logits, expected)


def test_the_release_holds_the_decoding_defaults_and_a_plain_generate_does_not_warn(tiny_release, sine_wave):
    """`generation_config.json` carries `max_new_tokens` (as `paircap caption`), greedy: a reloaded release generates
    without length arguments and without transformers' warning about its model-agnostic default `max_length`."""
    import warnings

    from modeling_paircap.pipeline_paircap import DEFAULT_MAX_NEW_TOKENS

    folder, _, processor = tiny_release
    saved = json.loads((folder / "generation_config.json").read_text())
    assert saved["max_new_tokens"] == DEFAULT_MAX_NEW_TOKENS and saved.get("num_beams", 1) == 1
    assert not saved.get("do_sample", False)
    model = PairCapForConditionalGeneration.from_pretrained(folder).eval()
    inputs = processor(audio=[sine_wave(2)], sampling_rate=48000)
    with warnings.catch_warnings(record=True) as caught, torch.no_grad():
        warnings.simplefilter("always")
        generated = model.generate(**inputs)
    length_warnings = [str(w.message) for w in caught if "max_length" in str(w.message)]
    assert length_warnings == []
    assert 0 < generated.shape[1] - inputs["input_ids"].shape[1] <= DEFAULT_MAX_NEW_TOKENS
