"""The `paircap` command line: assemble, caption (per-file errors), params, and the offline message."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
from safetensors.torch import load_file

from paircap.captioning import find_audio_files
from paircap.cli import main
from paircap.release_names import LOCAL_RELEASES

pytestmark = pytest.mark.slow  # a long file: it starts first (tests/conftest.py)


def test_assemble_command_writes_a_loadable_release(tiny_checkpoints, tmp_path):
    clap, llama = tiny_checkpoints
    output = tmp_path / "release"
    assert main(["assemble", "--clap", str(clap), "--lm", str(llama), "--output", str(output)]) == 0
    config = json.loads((output / "config.json").read_text())
    assert config["audio_pool_stride"] == 2
    assert config["auto_map"]["AutoModel"].endswith("PairCapForConditionalGeneration")
    assert json.loads((output / "processor_config.json").read_text())["feature_backend"] == "numpy"


def test_assemble_records_the_torch_feature_backend_for_every_later_stage(tiny_checkpoints, tmp_path):
    from transformers import AutoProcessor

    clap, llama = tiny_checkpoints
    output = tmp_path / "release"
    assert (
        main(["assemble", "--clap", str(clap), "--lm", str(llama), "--output", str(output), "--features", "torch"]) == 0
    )
    processor = AutoProcessor.from_pretrained(output, trust_remote_code=True)
    assert processor.feature_backend == "torch"
    waveform = np.random.default_rng(0).uniform(-0.5, 0.5, 3 * processor.sampling_rate).astype(np.float32)
    torch_features = processor.extract_features([waveform])
    processor.feature_backend = "numpy"
    np.testing.assert_allclose(torch_features, processor.extract_features([waveform]), atol=2e-3)


def test_caption_command_on_real_clips_with_broken_files(tiny_release, shared_data, tmp_path):
    folder, _, _ = tiny_release
    inputs = tmp_path / "inputs"
    (inputs / "nested").mkdir(parents=True)
    for clip in sorted((shared_data / "esc50_cc").glob("*.flac"))[:5]:
        shutil.copy(clip, inputs / clip.name)
    clotho = sorted((shared_data / "clotho_eval7").glob("*.flac"))[0]
    shutil.copy(clotho, inputs / "nested" / "clotho.flac")
    (inputs / "corrupt.wav").write_bytes(b"RIFF\x00\x00\x00\x00WAVEjunk")
    sf.write(inputs / "silent.wav", np.zeros(48000, dtype=np.float32), 48000)
    (inputs / "notes.txt").write_text("not audio and not an audio extension")
    output = tmp_path / "captions.jsonl"
    argv = ["caption", str(inputs), "--model", str(folder), "--batch-size", "3", "--output", str(output)]
    assert main([*argv, "--max-new-tokens", "6", "--no-progress"]) == 0
    records = [json.loads(line) for line in output.read_text().splitlines()]
    files = [os.path.basename(r["file"]) for r in records]
    assert len(records) == 8 and "notes.txt" not in files
    errors = {os.path.basename(r["file"]): r["error"] for r in records if "error" in r}
    assert set(errors) == {"corrupt.wav", "silent.wav"}
    assert "corrupt.wav" in errors["corrupt.wav"] and "silent" in errors["silent.wav"]
    captions = [r for r in records if "caption" in r]
    assert len(captions) == 6 and all(isinstance(r["caption"], str) for r in captions)


def test_find_audio_files_reports_missing_inputs(tmp_path):
    with pytest.raises(FileNotFoundError, match="nowhere.wav"):
        find_audio_files([tmp_path / "nowhere.wav"])


def test_caption_without_a_reachable_model_says_what_to_pass(tmp_path):
    clip = tmp_path / "tone.wav"
    sf.write(clip, (0.1 * np.sin(np.arange(48000) / 10)).astype(np.float32), 48000)
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_HOME": str(tmp_path / "hf")}
    result = subprocess.run(
        [sys.executable, "-m", "paircap.cli", "caption", str(clip), "--model", "org/paircap"],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert "org/paircap: not in the local cache" in result.stderr and "--model DIR" in result.stderr


def test_an_unreachable_hub_fails_in_seconds_and_says_how_to_work_offline(tmp_path):
    """No HF_HUB_OFFLINE, and the Hub endpoint refuses connections: one network check, then offline mode."""
    clip = tmp_path / "tone.wav"
    sf.write(clip, (0.1 * np.sin(np.arange(48000) / 10)).astype(np.float32), 48000)
    env = {k: v for k, v in os.environ.items() if k not in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")}
    env.update(HF_ENDPOINT="http://127.0.0.1:9", HF_HOME=str(tmp_path / "hf"))
    result = subprocess.run(
        [sys.executable, "-m", "paircap.cli", "caption", str(clip), "--model", "org/paircap"],
        capture_output=True, text=True, env=env, timeout=120,
    )  # fmt: skip
    assert result.returncode == 2, result.stderr
    assert result.stderr.strip().splitlines()[-1].startswith("paircap caption: error: org/paircap: not in the local")
    assert "HF_HUB_OFFLINE=1" in result.stderr and "Traceback" not in result.stderr


def test_hub_reachability_check_is_quick_on_a_closed_port():
    from paircap.hub_access import hub_reachable

    assert hub_reachable("http://127.0.0.1:9", timeout=2.0) is False


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        (["--top-k", "3"], "--top-k need a knowledge base, and the release"),
        (["--mode", "audio2audio"], "--mode need a knowledge base"),
        (["--mode", "none", "--top-k", "2"], "--top-k 2 retrieves pairs, but the mode is none"),
        (["--mode", "audio2audio", "--weight", "0.3", "--kb", "KB"], "mode audio2audio does not use it"),
        (["--top-k", "100000", "--kb", "KB"], "more than the LM's context of"),
    ],
)
def test_retrieval_arguments_are_checked_against_the_release_before_it_loads(
    arguments, message, tiny_release, tmp_path, capsys, monkeypatch
):
    import paircap.releases

    def no_model_load(*args, **kwargs):
        raise AssertionError("the model was loaded before the arguments were checked")

    monkeypatch.setattr(paircap.releases, "load_release", no_model_load)
    clip = tmp_path / "tone.wav"
    sf.write(clip, (0.1 * np.sin(np.arange(48000) / 10)).astype(np.float32), 48000)
    arguments = [str(tmp_path) if value == "KB" else value for value in arguments]
    assert main(["caption", str(clip), "--model", str(tiny_release[0]), *arguments]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("paircap caption: error:") and message in err[-1]


def test_debug_shows_the_traceback_of_an_expected_failure(tiny_release, tmp_path):
    from paircap.cli import UsageError

    clip = tmp_path / "tone.wav"
    sf.write(clip, (0.1 * np.sin(np.arange(48000) / 10)).astype(np.float32), 48000)
    with pytest.raises(UsageError, match="--top-k need a knowledge base"):
        main(["caption", str(clip), "--model", str(tiny_release[0]), "--top-k", "3", "--debug"])


def test_a_mismatched_knowledge_base_is_one_line_before_any_audio_is_decoded(tiny_release, tmp_path, capsys):
    (tmp_path / "kb").mkdir()
    (tmp_path / "kb" / "paircap_kb.json").write_text("{}")
    clip = tmp_path / "tone.wav"
    sf.write(clip, (0.1 * np.sin(np.arange(48000) / 10)).astype(np.float32), 48000)
    code = main(["caption", str(clip), "--model", str(tiny_release[0]), "--kb", str(tmp_path / "kb"), "--no-progress"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and err[-1].startswith("paircap caption: error:") and "kb" in err[-1]


def test_batches_group_clips_of_similar_length():
    from paircap.captioning import length_grouped_batches

    durations = [29.0, 5.0, 12.0, 5.0, 28.0, 11.0, 0.0]
    assert length_grouped_batches(durations, 2) == [[6, 1], [3, 5], [2, 4], [0]]


@pytest.mark.parametrize(
    "arguments, message",
    [
        (["--top-k", "-1"], "--top-k: must be 0 or more"),
        (["--weight", "2"], "--weight: must lie in [0, 1]"),
        (["--batch-size", "0"], "--batch-size: must be a positive integer"),
        (["--kb", "./kbs/missing"], "--kb: no such folder: ./kbs/missing"),
        (["--model", "/nowhere/release"], "--model: no such folder: /nowhere/release"),
    ],
)
def test_bad_arguments_fail_before_any_model_loads(arguments, message, capsys):
    """Ranges and missing local paths are refused by the parser: one line naming the flag, exit code 2."""
    from paircap.cli import build_parser

    with pytest.raises(SystemExit) as exit_info:
        build_parser().parse_args(["caption", "clip.wav", *arguments])
    assert exit_info.value.code == 2
    assert message in capsys.readouterr().err


def test_kb_tooling_reports_a_missing_release_in_one_line(tmp_path, capsys):
    assert main(["kb", "upgrade", "--kb", str(tmp_path), "--model", str(tmp_path / "no-release")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [f"paircap kb upgrade: error: {tmp_path / 'no-release'}: no such release folder"]


def broken_copy(release: Path, tmp_path: Path, damage: str) -> Path:
    """A copy of `release` with one file damaged as a user could find it."""
    folder = tmp_path / damage
    shutil.copytree(release, folder)
    if damage == "truncated-tokenizer":
        (folder / "tokenizer.json").write_text((folder / "tokenizer.json").read_text()[:200])
    elif damage == "empty-tokenizer":
        (folder / "tokenizer.json").write_text("{}")
    elif damage == "truncated-clap-tokenizer":  # was silently replaced by the LM's tokenizer
        (folder / "clap_tokenizer" / "tokenizer.json").write_text('{"version": "1.0", "model": ')
    elif damage == "pickle-weights":
        torch.save(load_file(folder / "model.safetensors"), folder / "pytorch_model.bin")
        (folder / "model.safetensors").unlink()
    return folder


@pytest.mark.parametrize(
    ("damage", "file", "message"),
    [
        ("truncated-tokenizer", "tokenizer.json", "not valid JSON (Expecting value: line"),
        ("empty-tokenizer", "tokenizer.json", "not a valid tokenizer"),
        ("truncated-clap-tokenizer", "clap_tokenizer/tokenizer.json", "not valid JSON"),
        ("pickle-weights", "pytorch_model.bin", "pickle weights are refused"),
    ],
)
@pytest.mark.parametrize("command", ["caption", "kb tokens"])
def test_a_damaged_release_is_one_line_naming_the_file(tiny_release, tmp_path, capsys, damage, file, message, command):
    folder = broken_copy(tiny_release[0], tmp_path, damage)
    clip = tmp_path / "tone.wav"
    sf.write(clip, (0.1 * np.sin(np.arange(48000) / 10)).astype(np.float32), 48000)
    argv = ["caption", str(clip), "--no-progress"] if command == "caption" else ["kb", "tokens", "--kb", str(tmp_path)]
    assert main([*argv, "--model", str(folder)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(f"paircap {command}: error: {folder / file}: {message}"), err


def test_a_typo_in_an_input_path_is_one_line(tiny_release, tmp_path, capsys):
    assert main(["caption", str(tmp_path / "clpi.wav"), "--model", str(tiny_release[0])]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [f"paircap caption: error: {tmp_path / 'clpi.wav'}: no such file or folder"]


@pytest.mark.parametrize("command", ["caption", "kb upgrade"])
def test_a_knowledge_base_passed_as_the_model_is_one_line(tmp_path, capsys, command):
    kb = LOCAL_RELEASES["mini"] / "knowledge_base"
    clip = tmp_path / "tone.wav"
    sf.write(clip, (0.1 * np.sin(np.arange(48000) / 10)).astype(np.float32), 48000)
    argv = ["caption", str(clip)] if command == "caption" else ["kb", "upgrade", "--kb", str(kb)]
    assert main([*argv, "--model", str(kb)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [
        f"paircap {command}: error: {kb} is a knowledge base, not a release: pass it as --kb, a release as --model"
    ]


def absent_cuda_device() -> str:
    """A CUDA device this machine does not have: any, without CUDA; one past the last, with it."""
    return f"cuda:{torch.cuda.device_count()}" if torch.cuda.is_available() else "cuda"


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        (["--device", absent_cuda_device()], "argument --device: cuda"),
        (["--device", "gpu"], "argument --device: 'gpu' is not a torch device"),
        (["--audio-root", "esc50"], "argument --audio-root: 'esc50': expected NAME=DIR"),
        (["--audio-root", "esc50=/no/such/folder"], "argument --audio-root: 'esc50=/no/such/folder': no such folder"),
    ],
)
@pytest.mark.parametrize("command", ["caption", "demo"])
def test_a_device_or_audio_root_this_machine_lacks_is_refused_by_the_parser(command, arguments, message, capsys):
    """The last line of the parser's error is `paircap COMMAND: error: argument FLAG: ...`, exit code 2."""
    with pytest.raises(SystemExit) as exit_info:
        main([command, *(["clip.wav"] if command == "caption" else []), *arguments])
    assert exit_info.value.code == 2
    assert capsys.readouterr().err.strip().splitlines()[-1].startswith(f"paircap {command}: error: {message}")


def test_trust_remote_code_runs_the_releases_own_code_only_when_asked(tiny_release, tmp_path):
    """Without the flag the installed classes caption (no remote code is written or imported); with it, the release's
    own files run, and caption the same."""
    clip = tmp_path / "tone.wav"
    sf.write(clip, (0.1 * np.sin(np.arange(48000) / 10)).astype(np.float32), 48000)
    outputs = {}
    for flags in ([], ["--trust-remote-code"]):
        modules = tmp_path / f"modules{len(flags)}"
        env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_MODULES_CACHE": str(modules)}
        result = subprocess.run(
            [sys.executable, "-m", "paircap.cli", "caption", str(clip), "--model", str(tiny_release[0]),
             "--max-new-tokens", "6", "--no-progress", *flags],
            capture_output=True, text=True, env=env, timeout=300,
        )  # fmt: skip
        assert result.returncode == 0, result.stderr[-3000:]
        outputs[bool(flags)] = (result.stdout, sorted(path.name for path in modules.rglob("modeling_paircap.py")))
    assert outputs[False][1] == [] and outputs[True][1] == ["modeling_paircap.py"]
    assert outputs[False][0] == outputs[True][0] and json.loads(outputs[False][0])["caption"]


def test_assemble_offline_says_how_to_work_offline(tmp_path):
    env = {k: v for k, v in os.environ.items() if k not in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")}
    env.update(HF_ENDPOINT="http://127.0.0.1:9", HF_HOME=str(tmp_path / "hf"))
    result = subprocess.run(
        [sys.executable, "-m", "paircap.cli", "assemble", "--output", str(tmp_path / "release")],
        capture_output=True, text=True, env=env, timeout=120,
    )  # fmt: skip
    assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr
    last = result.stderr.strip().splitlines()[-1]
    assert "laion/clap-htsat-unfused or lmsys/vicuna-7b-v1.5: not in the local cache" in last
    assert "local folders instead of hub ids" in last


@pytest.mark.parametrize("command", [["caption", "clip.wav"], ["evaluate", "--output-dir", "out"]])
def test_pair2pair_is_refused_by_the_parser(command, capsys):
    """pair2pair needs a given text per clip, which the command line has not (generative_pair2pair makes it)."""
    from paircap.cli import build_parser

    with pytest.raises(SystemExit) as exit_info:
        build_parser().parse_args([*command, "--mode", "pair2pair"])
    assert exit_info.value.code == 2 and "invalid choice: 'pair2pair'" in capsys.readouterr().err


def test_read_and_mini_pass_their_arguments_on(command_entry_points, monkeypatch):
    """`mini` comes from the mini recipe's `paircap.commands` entry point: the CLI never imports the recipe by name."""
    import datasets_scripts.readers
    import recipes.mini.run

    monkeypatch.syspath_prepend(str(command_entry_points))
    passed = {}
    monkeypatch.setattr(datasets_scripts.readers, "main", lambda argv: passed.setdefault("read", argv) and 0)
    monkeypatch.setattr(recipes.mini.run, "main", lambda argv: passed.setdefault("mini", argv) and 0)
    assert main(["read", "clotho", "/data/clotho", "evaluation", "--text-only", "--debug", "--save-to", "out"]) == 0
    assert main(["mini", "--output", "runs/quick", "--quick", "--stages", "kb", "report"]) == 0
    assert passed == {
        "read": ["clotho", "/data/clotho", "evaluation", "--text-only", "--save-to", "out"],
        "mini": ["--output", "runs/quick", "--quick", "--stages", "kb", "report"],
    }
