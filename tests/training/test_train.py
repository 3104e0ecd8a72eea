"""`accelerate launch train_accelerate.py` on CPU with two processes: stage 1, both curriculum phases of stage 2,
exact resume, and the exported release loaded through remote code."""

import csv
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from datasets import Dataset
from safetensors.torch import load_file

from modeling_paircap.modeling_paircap import PairCapForConditionalGeneration
from modeling_paircap.tokens_paircap import TOKENS_FILE, ClipTokenStore

pytestmark = pytest.mark.slow  # a long file: it starts first (tests/conftest.py)

REPO = Path(__file__).resolve().parents[2]
COMMON = ["--per_device_batch_size", "4", "--log_every", "2", "--warmup_ratio", "0"]


def launch(args: list[str], cwd: Path) -> list[dict]:
    """
    Run train_accelerate.py under `accelerate launch --multi_gpu --num_processes 2` on CPU (no loading workers unless
    `args` asks for them); return the log lines it appended to `<output_dir>/log.jsonl`.
    """
    log = Path(args[args.index("--output_dir") + 1]) / "log.jsonl"
    logged_before = len(log.read_text().splitlines()) if log.is_file() else 0
    command = [
        sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
        "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no",
        str(REPO / "train_accelerate.py"), *args, *COMMON,
        *([] if "--num_workers" in args else ["--num_workers", "0"]),  # loading workers: stage 1's run only
    ]  # fmt: skip
    env = {
        **os.environ,
        "ACCELERATE_USE_CPU": "1",
        "OMP_NUM_THREADS": "1",
        "PYTHONPATH": str(REPO),
        "HF_HUB_OFFLINE": "1",
        "TOKENIZERS_PARALLELISM": "false",
    }
    result = subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-4000:]
    return [json.loads(line) for line in log.read_text().splitlines()[logged_before:]]


def losses(log: list[dict]) -> list[float]:
    return [entry["loss"] for entry in log if "loss" in entry]


@pytest.fixture(scope="module")
def train_pairs(shared_data, tmp_path_factory) -> Path:
    """Real clips: the 7 Clotho clips with two captions each, and 8 ESC-50 clips captioned by their category."""
    manifest = json.loads((shared_data / "clotho_eval7" / "manifest.json").read_text())
    rows = [
        {"pair_id": f"clotho/train/{e['file']}/{k}", "audio_id": e["file"], "caption": e["captions"][k],
         "audio": {"path": str(shared_data / "clotho_eval7" / e["file"]), "bytes": None}, "source": "clotho"}
        for e in manifest for k in range(2)
    ]  # fmt: skip
    with open(shared_data / "esc50_cc" / "manifest.csv", newline="") as handle:
        esc = list(csv.DictReader(handle))[:8]
    rows += [
        {"pair_id": f"esc50/train/{r['filename']}/0", "audio_id": r["filename"],
         "caption": f"The sound of a {r['category'].replace('_', ' ')}.",
         "audio": {"path": str(shared_data / "esc50_cc" / r["filename"].replace(".wav", ".flac")), "bytes": None},
         "source": "esc50"}
        for r in esc
    ]  # fmt: skip
    folder = tmp_path_factory.mktemp("pairs") / "train"
    Dataset.from_list([{**r, "split": "train", "duration": None} for r in rows]).save_to_disk(str(folder))
    return folder


@pytest.fixture(scope="module")
def overfit_pairs(train_pairs, tmp_path_factory) -> Path:
    """Eight of the real pairs (four Clotho, four ESC-50): every step of 2 processes x 4 sees all of them."""
    from datasets import load_from_disk

    pairs = load_from_disk(str(train_pairs))
    folder = tmp_path_factory.mktemp("pairs") / "overfit"
    pairs.select([0, 2, 4, 6, 14, 15, 16, 17]).save_to_disk(str(folder))
    return folder


@pytest.fixture(scope="module")
def stage1(tiny_release, overfit_pairs, tmp_path_factory):
    release, _, _ = tiny_release
    output = tmp_path_factory.mktemp("stage1")
    log = launch(
        ["--stage", "alignment", "--model_name_or_path", str(release), "--output_dir", str(output),
         "--train_pairs", str(overfit_pairs), "--validation_pairs", str(overfit_pairs),
         "--learning_rate", "1e-2", "--max_steps", "30", "--save_every", "15", "--num_workers", "1"],
        output,
    )  # fmt: skip
    return output, log


def weights(folder: Path) -> dict:
    return load_file(folder / "model.safetensors")


def test_stage1_overfits_and_changes_only_the_projector(tiny_release, stage1):
    release, _, _ = tiny_release
    output, log = stage1
    trained = losses(log)
    assert len(trained) >= 10 and trained[-1] < trained[0] - 1.0, trained  # at least one nat lower
    assert any("validation_loss" in entry for entry in log)
    assert all(entry["tokens_per_second"] > 0 for entry in log if "loss" in entry)
    before, after = weights(release), weights(output / "release")
    changed = {name for name in before if not (before[name] == after[name]).all()}
    assert changed == {name for name in before if name.startswith("multi_modal_projector.")}


@pytest.fixture(scope="module")
def curriculum(stage1, overfit_pairs, tmp_path_factory):
    stage1_out, _ = stage1
    phase1 = tmp_path_factory.mktemp("phase1")
    log1 = launch(
        ["--stage", "raft", "--model_name_or_path", str(stage1_out / "release"), "--output_dir", str(phase1),
         "--train_pairs", str(overfit_pairs), "--balance_sources", "--learning_rate", "1e-2", "--max_steps", "12",
         "--gradient_accumulation_steps", "2", "--gradient_checkpointing"],
        phase1,
    )  # fmt: skip
    phase2 = tmp_path_factory.mktemp("phase2")
    log2 = launch(
        ["--stage", "raft", "--model_name_or_path", str(phase1 / "release"), "--output_dir", str(phase2),
         "--train_pairs", str(overfit_pairs), "--max_examples", "3", "--num_neighbors", "4",
         "--learning_rate", "1e-2", "--max_steps", "12", "--save_every", "6"],
        phase2,
    )  # fmt: skip
    return (phase1, log1), (phase2, log2)


def test_stage2_phases_train_the_paper_parameter_set(tiny_release, stage1, curriculum):
    """Phase 1 also runs with gradient accumulation (2 batches per step) and gradient checkpointing."""
    _, model, _ = tiny_release
    stage1_out, _ = stage1
    (phase1, log1), (phase2, log2) = curriculum
    trained = losses(log1)
    assert trained[-1] < trained[0] - 0.5, trained  # half a nat lower at least
    # phase 2 draws each epoch's own example counts and neighbours, so its steps' prompts differ: halves are compared
    trained = losses(log2)
    half = len(trained) // 2
    assert sum(trained[half:]) / (len(trained) - half) < sum(trained[:half]) / half - 0.1, trained
    before, after = weights(stage1_out / "release"), weights(phase1 / "release")
    changed = {name for name in before if not (before[name] == after[name]).all()}
    # IA3 is merged into the weights it scales (k, v, down projections); the head, projector and audio tower train
    assert {n for n in changed if n.startswith("language_model.model.layers.")} == {
        n
        for n in before
        if n.startswith("language_model.model.layers.") and n.split(".")[-2] in ("k_proj", "v_proj", "down_proj")
    }
    assert "language_model.lm_head.weight" in changed
    assert any(n.startswith("multi_modal_projector.") for n in changed)
    # the captioning tower trains as a separate copy of the CLAP's audio tower; the CLAP (retrieval space) is frozen
    tower = {n for n in after if n.startswith("audio_tower.")}
    assert tower and after.keys() - before.keys() == tower
    assert json.loads((phase1 / "release" / "config.json").read_text())["separate_audio_tower"] is True
    clap_copy = {n: "clap.audio_model." + n.removeprefix("audio_tower.") for n in tower}
    assert any(not (after[n] == before[clap_copy[n]]).all() for n in tower)  # trained away from the CLAP's
    assert not any(n.startswith("clap.") or "embed_tokens" in n for n in changed)
    phase2_weights = weights(phase2 / "release")
    assert all((phase2_weights[n] == before[n]).all() for n in before if n.startswith("clap."))
    assert any(not (phase2_weights[n] == after[n]).all() for n in tower)
    assert (phase2 / "retrieval" / "neighbors.npz").is_file()
    assert not any(name.endswith(".ia3_l.default") for name in phase2_weights)
    # phase 2 embedded its training pairs in the frozen CLAP space, with tokens of the phase-1 captioning tower
    embedded = phase2 / "retrieval" / "embedded"
    state = json.loads((embedded / "embed_state.json").read_text())
    phase1_model = PairCapForConditionalGeneration.from_pretrained(phase1 / "release")
    assert state["retrieval_fingerprint"] == phase1_model.retrieval_fingerprint() == model.retrieval_fingerprint()
    assert state["token_fingerprint"] == phase1_model.token_fingerprint() != model.token_fingerprint()
    tokens = ClipTokenStore(embedded / TOKENS_FILE)
    assert tokens.fingerprint == state["token_fingerprint"] and len(tokens) == 8  # 8 pairs of 8 distinct clips


def test_an_interrupted_run_resumes_to_the_same_weights(curriculum, overfit_pairs, tmp_path):
    (phase1, _), (phase2, _) = curriculum
    args = ["--stage", "raft", "--model_name_or_path", str(phase1 / "release"), "--output_dir", str(tmp_path),
            "--train_pairs", str(overfit_pairs), "--max_examples", "3", "--num_neighbors", "4",
            "--learning_rate", "1e-2", "--max_steps", "12", "--save_every", "6"]  # fmt: skip
    first = launch([*args, "--stop_after_steps", "5"], tmp_path)
    assert not (tmp_path / "release").exists() and (tmp_path / "checkpoints" / "step-00000005").is_dir()
    second = launch([*args, "--resume"], tmp_path)
    assert losses(first)[0] == pytest.approx(losses(curriculum[1][1])[0])
    resumed, uninterrupted = weights(tmp_path / "release"), weights(phase2 / "release")
    assert resumed.keys() == uninterrupted.keys()
    for name in resumed:
        assert (resumed[name] == uninterrupted[name]).all(), name
    assert second[-1]["step"] == 12


CAPTION = textwrap.dedent(
    """
    import json, sys
    from transformers import AutoModel, AutoProcessor
    folder, clip = sys.argv[1], sys.argv[2]
    model = AutoModel.from_pretrained(folder, trust_remote_code=True).eval()
    processor = AutoProcessor.from_pretrained(folder, trust_remote_code=True)
    inputs = processor(audio=[clip])
    ids = model.generate(**inputs, max_new_tokens=8, do_sample=False)
    caption = processor.decode_captions(ids, inputs["input_ids"].shape[1])
    print(json.dumps({"module": type(model).__module__, "caption": caption}))
    """
)


def test_exported_release_captions_through_remote_code(curriculum, shared_data, tmp_path):
    (_, _), (phase2, _) = curriculum
    clip = sorted((shared_data / "clotho_eval7").glob("*.flac"))[0]
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env.update(HF_HUB_OFFLINE="1", HF_MODULES_CACHE=str(tmp_path / "modules"), TRANSFORMERS_VERBOSITY="error")
    result = subprocess.run(
        [sys.executable, "-c", CAPTION, str(phase2 / "release"), str(clip)],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    out = json.loads(result.stdout.strip().splitlines()[-1])
    assert out["module"].startswith("transformers_modules.") and isinstance(out["caption"][0], str)
    card = (phase2 / "release" / "README.md").read_text()
    assert "trained: stage `raft` for 12 steps" in card
