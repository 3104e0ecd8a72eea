"""datasets_scripts.embed: KB rows, clip table and per-clip tokens from real Clotho / ESC-50 clips, bad audio, resume,
job checks, index-only jobs, multi-process."""

import copy
import csv
import functools
import json
import shutil
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import soundfile as sf
import torch
from datasets import Dataset, Value
from helpers import accelerate_launch

from datasets_scripts import embed
from datasets_scripts.embed import EmbeddedPairs, embed_pairs, shard_path
from datasets_scripts.readers import FEATURES
from modeling_paircap.kb_format_paircap import clip_schema, kb_row_features
from modeling_paircap.tokens_paircap import TOKENS_FILE, ClipTokenStore

pytestmark = pytest.mark.slow  # a long file: it starts first (tests/conftest.py)

SHARD_SIZE = 8
# bad audio and the problem each must be reported with
BAD_FILES = {
    "corrupt.flac": "could not decode",
    "missing.flac": "file not found",
    "empty.wav": "could not decode",
    "silent.wav": "silent",
}


def pair(pair_id: str, audio_id: str, path, caption: str, source: str, duration) -> dict:
    audio = None if path is None else {"path": str(path), "bytes": None}
    return dict(
        pair_id=pair_id, audio_id=audio_id, audio=audio, caption=caption, source=source, split="test", duration=duration
    )


@pytest.fixture(scope="module")
def pairs(clotho_clips, shared_data, tmp_path_factory) -> Dataset:
    """28 pairs in shards of 8: 3 Clotho clips x 5 captions, 6 ESC-50 clips, 3 text-only rows, and a corrupt, a
    missing, an empty and a silent file."""
    bad = tmp_path_factory.mktemp("bad_audio")
    (bad / "corrupt.flac").write_bytes(b"fLaC this is not audio" * 50)
    (bad / "empty.wav").write_bytes(b"")
    sf.write(bad / "silent.wav", np.zeros(48000, np.float32), 48000)
    clotho = [
        [
            pair(f"clotho/{path.stem}/{i}", path.stem, path, caption, "clotho", sf.info(path).duration)
            for i, caption in enumerate(captions)
        ]
        for path, captions in clotho_clips[:3]
    ]
    with open(shared_data / "esc50_cc" / "manifest.csv", newline="") as handle:
        entries = list(csv.DictReader(handle))[:6]
    esc = [
        pair(
            f"esc50/{stem}/0",
            stem,
            shared_data / "esc50_cc" / f"{stem}.flac",
            f"the sound of a {e['category']}",
            "esc50",
            5.0,
        )
        for e in entries
        for stem in [Path(e["filename"]).stem]
    ]
    text = [
        pair(f"text/{i}", f"text{i}", None, caption, "text", None)
        for i, caption in enumerate(
            ["A dog barks in the distance.", "Rain falls on a metal roof.", "A train passes by with a horn blowing."]
        )
    ]
    corrupt, missing, empty, silent = (
        pair(f"bad/{name}/0", name, bad / name, "A broken clip.", "bad", 1.0) for name in BAD_FILES
    )
    shards = [
        clotho[0] + esc[:2] + text[:1],
        [corrupt, *clotho[1], esc[2], missing],
        [*esc[3:5], text[1], empty, *clotho[2][:4]],
        [*clotho[2][4:], text[2], esc[5], silent],  # the last Clotho clip straddles shards 2 and 3
    ]
    rows = [row for shard in shards for row in shard]
    return Dataset(pa.Table.from_pylist(rows, schema=FEATURES.arrow_schema))


@pytest.fixture(scope="module")
def reference(pairs, tiny_release, tmp_path_factory) -> tuple[EmbeddedPairs, Path]:
    """An uninterrupted run with DataLoader workers: (embedded, output_dir). Tests must not change its folder."""
    _, model, processor = tiny_release
    output_dir = tmp_path_factory.mktemp("embed") / "reference"
    embedded = embed_pairs(pairs, model, processor, output_dir, shard_size=SHARD_SIZE, batch_size=4, num_workers=2)
    return embedded, output_dir


def row_features(model):
    """What `embed_pairs` rows hold: the KB row columns, plus the clip's length flag and location."""
    dim = model.config.clap_config.projection_dim
    features = kb_row_features(dim, dim)
    features["is_long"] = Value("bool")
    features["audio_path"] = Value("string")
    return features


def clip_tokens(embedded: EmbeddedPairs) -> list[np.ndarray]:
    """Every clip's tokens from the store, in clip order."""
    return [tokens.numpy() for tokens in embedded.tokens.get(range(len(embedded.tokens)))]


def assert_same_tokens(got: EmbeddedPairs, want: EmbeddedPairs) -> None:
    assert len(got.tokens) == len(want.tokens) and got.tokens.fingerprint == want.tokens.fingerprint
    for a, b in zip(clip_tokens(got), clip_tokens(want), strict=True):
        np.testing.assert_array_equal(a, b)


def direct_encoding(model, processor, path: str) -> tuple[np.ndarray, np.ndarray, bool, int]:
    """(tokens, embedding, is_long, windows) of one clip straight through processor + model."""
    windows, is_long = processor.window_audio(processor.load_audio([path])[0])
    features = torch.from_numpy(processor.extract_features(windows))
    with torch.no_grad():
        encoding = model.encode_audio(features, torch.tensor([len(windows)]))
    return encoding.audio_tokens.flatten(0, 1).numpy(), encoding.audio_embeds[0].numpy(), is_long, len(windows)


def distinct_clips(pairs: Dataset) -> list[str]:
    """The audio paths of `pairs` in order of first appearance (bad files included): the job's clips."""
    return list(dict.fromkeys(audio["path"] for audio in pairs["audio"] if audio))


def windows_of(processor, paths: list[str]) -> int:
    """Windows the encoder must see to encode each of `paths` once (bad files have none)."""
    good = [path for path in paths if Path(path).name not in BAD_FILES]
    return sum(len(processor.window_audio(processor.load_audio([path])[0])[0]) for path in good)


def read_shards(output_dir: Path, count: int) -> list[pa.Table]:
    return [pq.read_table(shard_path(output_dir, shard)) for shard in range(count)]


def test_rows_match_the_model_called_directly(reference, pairs, tiny_release):
    _, model, processor = tiny_release
    embedded, output_dir = reference
    dataset = embedded.rows
    config = model.config
    tokens_per_window, token_dim = config.audio_tokens_per_window, config.encoder_hidden_size
    assert dataset.features == row_features(model) and "audio_tokens" not in dataset.column_names
    assert embedded.clips.schema == clip_schema()
    assert isinstance(embedded.tokens, ClipTokenStore) and embedded.tokens.path == output_dir / TOKENS_FILE
    assert embedded.tokens.token_dim == token_dim and embedded.tokens.fingerprint == model.token_fingerprint()
    rows = dataset.with_format("numpy")[:]
    with torch.no_grad():
        texts = model.embed_texts(**processor.clap_text_inputs(list(rows["caption"]))).numpy()
    np.testing.assert_allclose(rows["text_embedding"], texts, atol=1e-5)
    np.testing.assert_allclose(np.linalg.norm(rows["text_embedding"], axis=1), 1.0, atol=1e-5)

    paths = {row["audio_id"]: row["audio"]["path"] for row in pairs if row["audio"] and row["source"] != "bad"}
    direct = {audio_id: direct_encoding(model, processor, path) for audio_id, path in paths.items()}
    clips = embedded.clips.to_pylist()
    for row in dataset.with_format("numpy"):
        if not row["has_audio"]:
            assert row["source"] == "text" and not row["is_long"]
            assert row["clip_index"] == -1 and row["audio_path"] is None
            assert not row["audio_embedding"].any()
            continue
        tokens, embedding, is_long, windows = direct[row["audio_id"]]
        clip = clips[row["clip_index"]]
        assert clip["audio_id"] == row["audio_id"] and clip["audio_path"] == row["audio_path"] == paths[row["audio_id"]]
        assert clip["is_long"] == row["is_long"] and clip["duration"] == pytest.approx(row["duration"])
        stored = embedded.tokens.get([row["clip_index"]])[0]
        assert stored.dtype == torch.float16 and stored.shape == (windows * tokens_per_window, token_dim)
        np.testing.assert_allclose(stored.numpy(), tokens.astype(np.float16), rtol=1e-3, atol=1e-3)
        np.testing.assert_allclose(row["audio_embedding"], embedding, atol=1e-5)
        assert np.linalg.norm(row["audio_embedding"]) == pytest.approx(1.0, abs=1e-5)
        assert row["is_long"] == is_long
        assert (windows == 1) == (row["source"] == "esc50")  # 5 s ESC-50 clips: one window; Clotho (15-30 s): more


def test_bad_audio_is_logged_and_every_other_row_kept_in_order(reference, pairs, tiny_release):
    embedded, output_dir = reference
    dataset = embedded.rows
    errors = [json.loads(line) for line in (output_dir / "errors.jsonl").read_text().splitlines()]
    bad_rows = [row for row in pairs if row["source"] == "bad"]  # input order: corrupt, missing, empty, silent
    assert [error["pair_id"] for error in errors] == [row["pair_id"] for row in bad_rows]
    assert [error["file"] for error in errors] == [row["audio"]["path"] for row in bad_rows]
    assert all(BAD_FILES[error["audio_id"]] in error["error"] for error in errors)
    assert dataset["pair_id"] == [p for p in pairs["pair_id"] if not p.startswith("bad/")]
    stats = json.loads((output_dir / "embed_stats.json").read_text())
    assert stats["pairs"] == len(pairs) == 28 and stats["rows_out"] == 24 and stats["errors"] == 4
    # each distinct clip loaded once (bad files included), the Clotho clip straddling row shards 2 and 3 too
    assert stats["unique_clips"] == len(distinct_clips(pairs)) == 13
    assert stats["windows"] == windows_of(tiny_release[2], distinct_clips(pairs))
    assert stats["clips_per_s"] > 0 and stats["pairs_per_s"] > stats["clips_per_s"]
    # the clip table: the 9 loaded clips (3 Clotho, 6 ESC-50) in order of first appearance; bad files have none
    first_seen = list(dict.fromkeys(row["audio_id"] for row in pairs if row["audio"] and row["source"] != "bad"))
    assert embedded.clips.column("audio_id").to_pylist() == first_seen and len(first_seen) == 9


def test_resume_skips_finished_shards_and_matches_an_uninterrupted_run(
    reference, pairs, tiny_release, tmp_path, monkeypatch
):
    """Killed in the clip pass, then in the row pass, then resumed: each clip is encoded once over the three runs."""
    _, model, processor = tiny_release
    output_dir = tmp_path / "resumed"
    encode_audio, windows_seen = model.encode_audio, []

    def counting(input_features, audio_window_counts=None):
        windows_seen.append(len(input_features))
        return encode_audio(input_features, audio_window_counts)

    monkeypatch.setattr(model, "encode_audio", counting)
    encode_clip_shard, write_shard, written = embed.encode_clip_shard, embed._write_shard, []

    def killed_at_clip_shard_1(embedder, pairs, plan, output_dir, shard, *bounds):
        if shard == 1:
            raise KeyboardInterrupt("killed")
        return encode_clip_shard(embedder, pairs, plan, output_dir, shard, *bounds)

    def killed_after_two(output_dir, shard, *args):
        if len(written) == 2:
            raise KeyboardInterrupt("killed")
        write_shard(output_dir, shard, *args)
        written.append(shard)

    run = functools.partial(embed_pairs, pairs, model, processor, output_dir, shard_size=SHARD_SIZE, batch_size=4)
    clips = distinct_clips(pairs)  # 13: clip shard 0 holds the first 8, clip shard 1 the other 5
    with monkeypatch.context() as patch, pytest.raises(KeyboardInterrupt):
        patch.setattr(embed, "encode_clip_shard", killed_at_clip_shard_1)
        run(num_workers=0)
    assert sum(windows_seen) == windows_of(processor, clips[:SHARD_SIZE]) and not shard_path(output_dir, 0).exists()
    with monkeypatch.context() as patch, pytest.raises(KeyboardInterrupt):
        patch.setattr(embed, "_write_shard", killed_after_two)
        run(num_workers=0)
    assert sum(windows_seen) == windows_of(processor, clips)  # only clip shard 1 was encoded
    assert written == [0, 1] and not shard_path(output_dir, 2).exists()
    temp = shard_path(output_dir, 2).with_name(".shard-00002.tmp.parquet")
    temp.write_bytes(b"half-written")  # as if killed while writing
    mtimes = [shard_path(output_dir, shard).stat().st_mtime_ns for shard in (0, 1)]

    windows_seen.clear()
    resumed = run(num_workers=0)
    assert [shard_path(output_dir, shard).stat().st_mtime_ns for shard in (0, 1)] == mtimes
    assert windows_seen == []  # every clip was encoded before the row pass
    assert not temp.exists()
    stats = json.loads((output_dir / "embed_stats.json").read_text())
    assert (stats["shards_computed"], stats["shards_reused"]) == (2, 2) and stats["unique_clips"] == 0

    expected, reference_dir = reference
    assert resumed.rows.data.table.equals(expected.rows.data.table)
    assert resumed.clips.equals(expected.clips)
    assert_same_tokens(resumed, expected)
    assert all(a.equals(b) for a, b in zip(read_shards(output_dir, 4), read_shards(reference_dir, 4), strict=True))
    assert (output_dir / "errors.jsonl").read_text() == (reference_dir / "errors.jsonl").read_text()


def test_a_different_job_in_the_same_folder_is_refused_unless_overwrite(reference, pairs, tiny_release, tmp_path):
    _, model, processor = tiny_release
    output_dir = tmp_path / "kb"
    shutil.copytree(reference[1], output_dir)
    other_clap = copy.deepcopy(model)  # another retrieval space
    with torch.no_grad():
        weight = other_clap.clap.audio_projection.linear1.weight
        weight.add_(0.1 * torch.randn(weight.shape, generator=torch.Generator().manual_seed(0)))
    other_tower = perturbed_tower(model)  # the same retrieval space, another token encoder

    for job, reason in [
        (dict(model=other_clap, pairs=pairs, shard_size=SHARD_SIZE), "another retrieval CLAP"),
        (dict(model=other_tower, pairs=pairs, shard_size=SHARD_SIZE), "another token encoder"),
        (dict(model=model, pairs=pairs, shard_size=SHARD_SIZE, with_tokens=False), "tokens on/off"),
        (dict(model=model, pairs=pairs.select(range(10)), shard_size=SHARD_SIZE), "other pairs"),
        (dict(model=model, pairs=pairs, shard_size=4), "shard_size"),
    ]:
        with pytest.raises(ValueError, match=reason) as error:
            embed_pairs(
                job["pairs"], job["model"], processor, output_dir, shard_size=job["shard_size"], num_workers=0,
                with_tokens=job.get("with_tokens", True),
            )  # fmt: skip
        assert str(output_dir) in str(error.value) and "overwrite=True" in str(error.value)
    assert json.loads((output_dir / "embed_state.json").read_text()) == json.loads(
        (reference[1] / "embed_state.json").read_text()
    )  # a refused job leaves the folder's job as it was

    subset = pairs.select(range(5))  # one Clotho clip, five captions
    embedded = embed_pairs(subset, other_clap, processor, output_dir, overwrite=True, num_workers=0, progress=False)
    assert embedded.rows["pair_id"] == subset["pair_id"]
    state = json.loads((output_dir / "embed_state.json").read_text())
    assert state["retrieval_fingerprint"] == other_clap.retrieval_fingerprint() != model.retrieval_fingerprint()
    assert state["token_fingerprint"] == other_clap.token_fingerprint() == model.token_fingerprint()
    assert "encoder_fingerprint" not in state
    assert sorted(p.name for p in (output_dir / "shards").glob("*.parquet")) == [
        "clips-00000.parquet",
        "shard-00000.parquet",
    ]
    assert len(embedded.clips) == len(embedded.tokens) == 1
    assert (output_dir / "errors.jsonl").read_text() == ""
    assert not np.allclose(embedded.rows[0]["audio_embedding"], reference[0].rows[0]["audio_embedding"])


def perturbed_tower(model):
    """A copy of `model` with a separate captioning audio tower (stage 2) whose weights moved: same retrieval CLAP,
    another token encoder."""
    other = copy.deepcopy(model)
    generator = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for parameter in other.separate_audio_tower().parameters():
            parameter.add_(0.05 * torch.randn(parameter.shape, generator=generator))
    assert other.retrieval_fingerprint() == model.retrieval_fingerprint()
    assert other.token_fingerprint() != model.token_fingerprint()
    return other


def test_each_clip_tokens_are_stored_once(reference, pairs, tiny_release):
    """Five captions per Clotho clip (one clip straddling shards 2 and 3): one token entry per distinct clip."""
    _, model, processor = tiny_release
    embedded, output_dir = reference
    rows = embedded.rows.to_list()
    clips_of_rows = [row["audio_id"] for row in rows if row["has_audio"]]
    distinct = list(dict.fromkeys(clips_of_rows))
    assert len(clips_of_rows) == 3 * 5 + 6 and len(distinct) == 9
    assert len(embedded.tokens) == len(embedded.clips) == len(distinct)
    assert embedded.clips.column("audio_id").to_pylist() == distinct
    for row in rows:  # all captions of a clip point at its one entry
        assert row["clip_index"] == (distinct.index(row["audio_id"]) if row["has_audio"] else -1)
    windows = 0
    for clip, entry in enumerate(embedded.clips.to_pylist()):
        tokens, _, _, clip_windows = direct_encoding(model, processor, entry["audio_path"])
        np.testing.assert_allclose(
            embedded.tokens.get([clip])[0].numpy(), tokens.astype(np.float16), rtol=1e-3, atol=1e-3
        )
        windows += clip_windows
    # the token file holds each clip's rows once, not once per caption
    assert embedded.tokens.offsets[-1] == windows * model.config.audio_tokens_per_window
    assert ClipTokenStore(output_dir / TOKENS_FILE).offsets.tolist() == embedded.tokens.offsets.tolist()


def test_tokens_come_from_the_captioning_tower_and_embeddings_from_the_clap(reference, pairs, tiny_release, tmp_path):
    """After stage 2 separates (and trains) the captioning tower, the retrieval embeddings stay the CLAP's."""
    _, model, processor = tiny_release
    expected, _ = reference
    trained = perturbed_tower(model)
    subset = pairs.select(range(8))  # shard 0: one Clotho clip x 5 captions, two ESC-50 clips, one text-only row
    embedded = embed_pairs(subset, trained, processor, tmp_path / "trained", num_workers=0, progress=False)
    assert embedded.tokens.fingerprint == trained.token_fingerprint()
    np.testing.assert_allclose(
        np.asarray(embedded.rows["audio_embedding"]), np.asarray(expected.rows["audio_embedding"][:8]), atol=1e-5
    )
    np.testing.assert_allclose(
        np.asarray(embedded.rows["text_embedding"]), np.asarray(expected.rows["text_embedding"][:8]), atol=1e-5
    )
    assert len(embedded.tokens) == 3
    for clip, path in enumerate(embedded.clips.column("audio_path").to_pylist()):
        tokens, _, _, _ = direct_encoding(trained, processor, path)
        got = embedded.tokens.get([clip])[0].numpy()
        np.testing.assert_allclose(got, tokens.astype(np.float16), rtol=1e-3, atol=1e-3)
        assert not np.allclose(got, expected.tokens.get([clip])[0].numpy(), atol=1e-2)


def test_index_only_job_writes_no_token_file(reference, pairs, tiny_release, tmp_path):
    _, model, processor = tiny_release
    expected, _ = reference
    output_dir = tmp_path / "index-only"
    embedded = embed_pairs(
        pairs, model, processor, output_dir, shard_size=SHARD_SIZE, batch_size=4, num_workers=0, progress=False,
        with_tokens=False,
    )  # fmt: skip
    assert embedded.tokens is None
    assert not (output_dir / TOKENS_FILE).exists() and not list(output_dir.rglob("*.safetensors"))
    clip_shards = list((output_dir / "shards").glob("clips-*.parquet"))
    assert clip_shards and all("tokens" not in pq.read_schema(path).names for path in clip_shards)
    assert json.loads((output_dir / "embed_state.json").read_text())["token_fingerprint"] is None
    # the same rows and clip table as a job with tokens
    assert embedded.rows.data.table.equals(expected.rows.data.table)
    assert embedded.clips.equals(expected.clips)


def test_two_processes_under_accelerate_launch_match_one_process(pairs, tiny_release, tmp_path):
    folder, model, processor = tiny_release
    subset = pairs.select(range(16))  # shards of 4: 0, 2 on process 0 and 1, 3 on process 1; two bad files
    single_dir = tmp_path / "single"
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as in the launched processes (OMP_NUM_THREADS=1), so float sums add up in the same order
    try:
        single = embed_pairs(subset, model, processor, single_dir, shard_size=4, num_workers=0, progress=False)
    finally:
        torch.set_num_threads(threads)
    pq.write_table(subset.data.table, tmp_path / "pairs.parquet")
    multi_dir, results = tmp_path / "multi", tmp_path / "results"
    results.mkdir()
    script = [
        "tests/embed_launch_script.py", str(folder), str(tmp_path / "pairs.parquet"), str(multi_dir), str(results), "4"
    ]  # fmt: skip
    run = accelerate_launch(script)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    assert run.stderr.count("embedded 16 pairs") == 1  # the throughput line, from the main process only

    assert all(a.equals(b) for a, b in zip(read_shards(multi_dir, 4), read_shards(single_dir, 4), strict=True))
    for process in (0, 1):  # every process gets the same rows, clip table and tokens
        assert pq.read_table(results / f"rows-{process}.parquet").equals(single.rows.data.table)
        assert pq.read_table(results / f"clips-{process}.parquet").equals(single.clips)
        got = json.loads((results / f"tokens-{process}.json").read_text())
        assert got == {"path": str(multi_dir / TOKENS_FILE), "num_clips": len(single.tokens)}
    assert (multi_dir / TOKENS_FILE).read_bytes() == (single_dir / TOKENS_FILE).read_bytes()
    assert (multi_dir / "clips.parquet").is_file()
    for shard in range(4):
        record = json.loads(shard_path(multi_dir, shard).with_suffix(".json").read_text())
        assert record["process_index"] == shard % 2
    assert (multi_dir / "errors.jsonl").read_text() == (single_dir / "errors.jsonl").read_text()
    assert len((multi_dir / "errors.jsonl").read_text().splitlines()) == 2


def test_features_on_the_model_device_match_the_processor_path(reference, pairs, tiny_release, tmp_path):
    """Workers only decode and pad; log-mels are computed by TorchClapFeatures next to the encoder."""
    _, model, processor = tiny_release
    expected, reference_dir = reference
    on_device = embed_pairs(
        pairs, model, processor, tmp_path / "device", shard_size=SHARD_SIZE, num_workers=0, progress=False,
        features_on_device=True,
    )  # fmt: skip
    got_rows, want_rows = on_device.rows, expected.rows
    assert got_rows["pair_id"] == want_rows["pair_id"] and got_rows["is_long"] == want_rows["is_long"]
    assert got_rows["clip_index"] == want_rows["clip_index"] and on_device.clips.equals(expected.clips)
    audio = np.asarray(got_rows["audio_embedding"]) - np.asarray(want_rows["audio_embedding"])
    assert np.abs(audio).max() < 1e-3  # the two log-mel paths differ by < 0.02 dB
    assert len(on_device.tokens) == len(expected.tokens)
    for got, want in zip(clip_tokens(on_device), clip_tokens(expected), strict=True):
        np.testing.assert_allclose(got.astype(np.float32), want.astype(np.float32), atol=2e-2, rtol=0)
    assert json.loads((tmp_path / "device" / "embed_state.json").read_text())["features"] == "device"
    with pytest.raises(ValueError, match="log-mel features from"):
        embed_pairs(
            pairs, model, processor, reference_dir, shard_size=SHARD_SIZE, features_on_device=True, progress=False
        )
