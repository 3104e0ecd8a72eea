"""`paircap kb build`, `kb refine` and `kb tokens` under `accelerate launch` with two CPU processes (gloo), as the
full recipe runs them: the processes share the work, the language model is never built in any process (building it
raises there, and the models each process built are recorded), and the corpus is read once: its caption file and its
audio headers by the main process alone, each clip's audio decoded once over both processes."""

import csv
import json
import shutil
from collections import Counter
from pathlib import Path

import pytest
from helpers import accelerate_launch

from datasets_scripts.build_kb import refine_knowledge_base_folder
from datasets_scripts.embed import ERRORS_FILE
from modeling_paircap.knowledge_base_paircap import PairCapKnowledgeBase

SPLIT = "development"  # a training split: refinement never keeps rows of evaluation splits


@pytest.fixture
def development_corpus(shared_data, tmp_path) -> Path:
    """A Clotho folder whose development split holds the 7 real clips (copied, so every read of them lies inside)."""
    root = tmp_path / "clotho"
    (root / SPLIT).mkdir(parents=True)
    manifest = json.loads((shared_data / "clotho_eval7" / "manifest.json").read_text())
    names = {entry["source_wav"]: entry["file"] for entry in manifest}
    with open(shared_data / "captions" / "clotho_evaluation.csv", newline="") as source:
        reader = csv.DictReader(source)
        rows = [row for row in reader if row["file_name"] in names]
        with open(root / f"clotho_captions_{SPLIT}.csv", "w", newline="") as target:
            writer = csv.DictWriter(target, fieldnames=reader.fieldnames)
            writer.writeheader()
            writer.writerows(rows)
    for wav_name, flac_name in names.items():
        shutil.copyfile(shared_data / "clotho_eval7" / flac_name, root / SPLIT / (Path(wav_name).stem + ".flac"))
    return root


def test_build_refine_and_tokens_under_accelerate_launch_never_build_the_lm_and_read_the_corpus_once(
    tiny_release, development_corpus, tmp_path
):
    folder, model, _ = tiny_release
    candidates, refined, results = tmp_path / "kb-candidates", tmp_path / "kb-refined", tmp_path / "results"
    results.mkdir()
    common = ["--model", str(folder), "--num-workers", "0", "--shard-size", "4"]
    commands = [
        ["kb", "build", "--corpus", f"clotho:{SPLIT}", "--root", f"clotho={development_corpus}", "--index-only",
         "--output", str(candidates), *common],
        # the candidates refined against their own pairs (each keeps its clip's other captions and its neighbours)
        ["kb", "refine", "--kb", str(candidates), "--train", str(candidates), "--output", str(refined),
         "--top-k", "2", "--chunk-size", "16"],
        ["kb", "tokens", "--kb", str(refined), "--root", f"clotho={development_corpus}", *common],
    ]  # fmt: skip
    (tmp_path / "commands.json").write_text(json.dumps(commands))
    lm_type = model.config.text_config.model_type
    script = ["tests/kb_launch_script.py", str(tmp_path / "commands.json"), str(development_corpus), lm_type]
    run = accelerate_launch([*script, str(results)])
    logs = [json.loads((results / f"process-{rank}.json").read_text()) for rank in (0, 1)]
    built = [(rank, log["command"][1], *made) for rank in (0, 1) for log in logs[rank] for made in log["models"]]
    assert not [entry for entry in built if entry[3] == lm_type or entry[2].endswith("ForConditionalGeneration")]
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    assert [[log["status"] for log in process] for process in logs] == [[0, 0, 0], [0, 0, 0]]
    build, refine, tokens = zip(*logs, strict=True)  # per command: the records of process 0 and of process 1
    for process in (0, 1):  # the recording sees what is built: the encoders with their CLAP, and for refine nothing
        for log in (build[process], tokens[process]):
            assert [name for name, _ in log["models"]][:2] == ["PairCapEncoders", "ClapModel"]
        assert refine[process]["models"] == []

    clips = sorted(path.relative_to(development_corpus).as_posix() for path in development_corpus.rglob("*.flac"))
    # build: the main process alone reads the caption file and probes the clips, each once
    assert sorted(build[0]["probed"]) == clips and build[1]["probed"] == []
    assert set(opened_with_open(build[0]).elements()) == {f"clotho_captions_{SPLIT}.csv"}
    assert not opened_with_open(build[1])
    # ... and each clip is decoded once, by the process whose clip shard holds it (shards of 4: 4 clips, then 3)
    decoded = [decoded_files(log) for log in build]
    assert sorted((decoded[0] + decoded[1]).elements()) == clips and decoded[1].total() == 3
    # refine opens no audio
    assert refine[0]["opened"] == refine[1]["opened"] == refine[0]["probed"] == refine[1]["probed"] == []
    # tokens: the main process checks each kept clip's location (its first bytes); each is decoded once over both
    kb = PairCapKnowledgeBase.from_pretrained(refined)
    kept = sorted(kb.clips.column("audio_path").to_pylist())
    assert len(kept) > 4  # two token shards: both processes have work
    assert sorted(opened_with_open(tokens[0]).elements()) == kept and not opened_with_open(tokens[1])
    decoded = [decoded_files(log) for log in tokens]
    assert sorted((decoded[0] + decoded[1]).elements()) == kept and decoded[1].total() == len(kept) - 4
    assert tokens[0]["probed"] == tokens[1]["probed"] == []

    # what they wrote: the refinement the two processes shared is the one a single process makes; every clip has tokens
    single = refine_knowledge_base_folder(candidates, candidates, tmp_path / "single", top_k=2, chunk_size=16)
    alone = PairCapKnowledgeBase.from_pretrained(single)
    assert kb.rows["pair_id"] == alone.rows["pair_id"]
    assert kb.metadata.recipe["refinement"] == alone.metadata.recipe["refinement"]
    assert kb.metadata.recipe["refinement"]["queries"] == 35
    assert len(kb.tokens) == len(kept) and (refined / ERRORS_FILE).read_text() == ""
    assert run.stdout.count("refreshed the tokens of 7 clips") == 1  # printed by the main process only


def opened_with_open(log: dict) -> Counter:
    """The watched files a command opened with `open()`: caption files, and the first bytes of audio checked."""
    return Counter(name for name, mode in log["opened"] if mode is not None)


def decoded_files(log: dict) -> Counter:
    """The watched files a command opened with `os.open`: the audio decoder's reads."""
    return Counter(name for name, mode in log["opened"] if mode is None)
