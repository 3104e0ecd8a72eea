"""The stand-in stages for the pretrained parts, `clap_contrastive` and `lm_text`: they learn on real data through the
same loop as stages 1 and 2, resume bit-identically, and export folders that load with `from_pretrained`; the CLAP
stage's teacher distillation (a checked targets file, the loss's extra terms, heads that are not exported)."""

import csv
import json

import numpy as np
import pytest
import torch
from datasets import Dataset, load_from_disk
from safetensors.torch import load_file
from transformers import AutoModelForCausalLM, AutoTokenizer, ClapFeatureExtractor, ClapModel

from paircap.training.config import TrainConfig
from paircap.training.distillation import ClapWithDistillation, DistillTargets
from paircap.training.loop import train
from paircap.training.pretraining_data import (
    CaptionTextCollator,
    CaptionTextSet,
    ClapPairCollator,
    ClapPairSet,
    LogMelAugmentation,
    caption_keywords,
)
from paircap.training.stage_setups import clap_parameter_groups

pytestmark = pytest.mark.slow  # a long file: it starts first (tests/conftest.py)

CAPTIONS = [
    "A dog barks in the distance while birds chirp.",
    "Rain falls on a metal roof as thunder rumbles.",
    "A car engine starts and then idles before driving away.",
    "Water is flowing from a tap into a sink.",
    "A woman laughs while children play in the background.",
    "Footsteps on a wooden floor and a door closes.",
    "A train passes by with a horn blowing.",
    "Wind blows through trees and leaves rustle.",
]


@pytest.fixture(scope="module")
def esc_pairs(shared_data, tmp_path_factory):
    """Eight real ESC-50 clips of different classes, each captioned by its class."""
    with open(shared_data / "esc50_cc" / "manifest.csv", newline="") as handle:
        rows, seen = [], set()
        for row in csv.DictReader(handle):
            if row["category"] not in seen and len(rows) < 8:
                seen.add(row["category"])
                rows.append(row)
    records = [
        {
            "pair_id": f"esc50/train/{i}/0",
            "audio_id": row["filename"],
            "audio": {"path": str(shared_data / "esc50_cc" / row["filename"].replace(".wav", ".flac")), "bytes": None},
            "caption": f"the sound of a {row['category'].replace('_', ' ')}",
            "source": "esc50",
        }
        for i, row in enumerate(rows)
    ]
    folder = tmp_path_factory.mktemp("esc") / "pairs"
    Dataset.from_list(records).save_to_disk(str(folder))
    return folder


@pytest.fixture(scope="module")
def caption_text(tmp_path_factory):
    folder = tmp_path_factory.mktemp("text") / "captions"
    rows = [{"pair_id": f"t/{i}", "caption": c, "source": "text", "audio": None} for i, c in enumerate(CAPTIONS)]
    Dataset.from_list(rows).save_to_disk(str(folder))
    return folder


def stage_config(tmp_path, name: str, **overrides) -> TrainConfig:
    settings = {
        "per_device_batch_size": 8, "num_workers": 0, "warmup_ratio": 0.0, "log_every": 1, "save_every": 5,
        "learning_rate": 3e-3, **overrides,
    }  # fmt: skip
    return TrainConfig(output_dir=str(tmp_path / name), **settings)


def logged_losses(folder) -> list[float]:
    lines = [json.loads(line) for line in (folder / "log.jsonl").read_text().splitlines()]
    return [line["loss"] for line in lines if "loss" in line]


def weights(folder) -> dict[str, torch.Tensor]:
    return load_file(str(folder / "model.safetensors"))


def test_clap_contrastive_learns_and_exports_a_clap_folder(tiny_checkpoints, esc_pairs, tmp_path):
    clap, _ = tiny_checkpoints
    cfg = stage_config(
        tmp_path, "clap", stage="clap_contrastive", model_name_or_path=str(clap), train_pairs=[str(esc_pairs)],
        validation_pairs=[str(esc_pairs)], max_steps=25, eval_every=25,
    )  # fmt: skip
    release = train(cfg)
    losses = logged_losses(tmp_path / "clap")
    assert losses[-1] < 0.5 * losses[0], losses  # 8 pairs of 8 classes: the contrastive loss falls from ~ln 8
    validation = [json.loads(line) for line in (tmp_path / "clap" / "log.jsonl").read_text().splitlines()]
    assert any("validation_loss" in line for line in validation)
    model = ClapModel.from_pretrained(release)
    ClapFeatureExtractor.from_pretrained(release), AutoTokenizer.from_pretrained(release)
    start = ClapModel.from_pretrained(clap)
    moved = [n for n, p in model.named_parameters() if not torch.equal(p, start.state_dict()[n])]
    assert any(n.startswith("audio_model.") for n in moved) and any(n.startswith("text_model.") for n in moved)


def test_lm_text_learns_captions_and_exports_a_causal_lm(tiny_checkpoints, caption_text, tmp_path):
    _, llama = tiny_checkpoints
    template = "USER: describe the audio. ASSISTANT: {caption}"
    cfg = stage_config(
        tmp_path, "lm", stage="lm_text", model_name_or_path=str(llama), train_pairs=[str(caption_text)],
        max_steps=30, text_template=template,
    )  # fmt: skip
    release = train(cfg)
    losses = logged_losses(tmp_path / "lm")
    assert losses[-1] < 0.5 * losses[0], losses
    model, tokenizer = AutoModelForCausalLM.from_pretrained(release), AutoTokenizer.from_pretrained(release)
    prompt = tokenizer(template.split("{caption}")[0] + "Rain falls on", return_tensors="pt")
    generated = model.generate(**prompt, max_new_tokens=6, do_sample=False)
    assert "metal" in tokenizer.decode(generated[0, prompt["input_ids"].shape[1] :])  # it memorised its captions


@pytest.mark.parametrize("stage", ["clap_contrastive", "lm_text"])
def test_interrupted_stage_resumes_bit_identically(stage, tiny_checkpoints, esc_pairs, caption_text, tmp_path):
    clap, llama = tiny_checkpoints
    start, pairs = (clap, esc_pairs) if stage == "clap_contrastive" else (llama, caption_text)
    common = {"stage": stage, "model_name_or_path": str(start), "train_pairs": [str(pairs)], "max_steps": 8}
    common["per_device_batch_size"] = 4  # two batches per epoch: the resume lands mid-epoch
    whole = train(stage_config(tmp_path, "whole", **common))
    train(stage_config(tmp_path, "parts", stop_after_steps=5, **common))
    resumed = train(stage_config(tmp_path, "parts", resume=True, **common))
    expected, actual = weights(whole), weights(resumed)
    assert expected.keys() == actual.keys()
    assert all(torch.equal(expected[name], actual[name]) for name in expected)


def test_stand_in_stages_take_no_retrieved_examples(tmp_path):
    with pytest.raises(ValueError, match="without retrieved examples"):
        TrainConfig(
            stage="lm_text", model_name_or_path="x", output_dir=str(tmp_path), train_pairs=["y"], max_examples=2
        )
    with pytest.raises(ValueError, match="stage must be one of"):
        TrainConfig(stage="pretrain", model_name_or_path="x", output_dir=str(tmp_path), train_pairs=["y"])


def test_clap_collator_matches_the_captioning_processors_features(tiny_release, esc_pairs):
    """CLAP trains on the log-mel features PairCap computes at inference (repeat-padded 10 s windows)."""
    from datasets import load_from_disk

    folder, _, processor = tiny_release
    pairs = load_from_disk(str(esc_pairs))
    feature_extractor = processor.feature_extractor
    dataset = ClapPairSet(pairs, feature_extractor)
    batch = ClapPairCollator(processor.clap_tokenizer)([dataset[0], None, dataset[1]])
    waveforms = processor.load_audio([pairs[0]["audio"], pairs[1]["audio"]])
    expected = torch.from_numpy(processor.extract_features([w for w in waveforms]))
    torch.testing.assert_close(batch["input_features"], expected, rtol=1e-5, atol=1e-4)
    assert batch["input_ids"].shape[0] == 2


def test_caption_text_batches_cover_every_real_token(tiny_checkpoints):
    _, llama = tiny_checkpoints
    tokenizer = AutoTokenizer.from_pretrained(llama)
    dataset = CaptionTextSet(CAPTIONS[:2], tokenizer)
    batch = CaptionTextCollator(tokenizer)([dataset[0], dataset[1]])
    for row, ids in enumerate([dataset[0], dataset[1]]):
        length = len(ids) + 1
        assert batch["input_ids"][row, length - 1] == tokenizer.eos_token_id
        assert batch["attention_mask"][row].sum() == length
        assert (batch["labels"][row, :length] == batch["input_ids"][row, :length]).all()
        assert (batch["labels"][row, length:] == -100).all()
    with pytest.raises(ValueError, match="caption"):
        CaptionTextSet(CAPTIONS, tokenizer, template="no placeholder")


def test_caption_text_keywords_are_the_captions_content_words_shuffled_by_seed(tiny_checkpoints):
    _, llama = tiny_checkpoints
    tokenizer = AutoTokenizer.from_pretrained(llama)
    words = caption_keywords(CAPTIONS[1], np.random.default_rng(0)).split()
    assert sorted(words) == sorted(["rain", "falls", "metal", "roof", "thunder", "rumbles"])
    template = "USER: {keywords} Describe it. ASSISTANT: {caption}"
    texts = {
        seed: [tokenizer.decode(ids) for ids in CaptionTextSet(CAPTIONS, tokenizer, template, seed=seed)]
        for seed in (0, 1)
    }
    assert texts[0] == [tokenizer.decode(ids) for ids in CaptionTextSet(CAPTIONS, tokenizer, template, seed=0)]
    assert texts[0] != texts[1]  # another seed, another order
    prompt, caption = texts[0][1].split("ASSISTANT:")
    assert sorted(prompt.split("USER:")[1].split("Describe")[0].split()) == sorted(words)
    assert caption.strip() == CAPTIONS[1]


def test_clap_pairs_decode_only_three_windows_of_a_long_file(tiny_checkpoints, write_wav, tmp_path):
    """A 2-minute file: each epoch gives one of three evenly spaced windows, equal to the full decode there."""
    import numpy as np

    from modeling_paircap.audio_loading_paircap import load_audio_file
    from modeling_paircap.audio_windows_paircap import window_starts

    clap, _ = tiny_checkpoints
    feature_extractor = ClapFeatureExtractor.from_pretrained(clap)
    rate, window = feature_extractor.sampling_rate, feature_extractor.nb_max_samples
    noise = np.random.default_rng(0).uniform(-0.5, 0.5, 120 * rate).astype(np.float32)
    path = write_wav("long.wav", noise, rate, subtype="FLOAT")
    pairs = Dataset.from_list([{"pair_id": "p/0", "caption": "noise", "source": "s", "audio": {"path": str(path)}}])
    dataset = ClapPairSet(pairs, feature_extractor)
    whole = load_audio_file(path, rate)
    starts, _ = window_starts(len(whole), window, 3)
    expected = [dataset.log_mel(whole[start : start + window]) for start in starts]
    seen = set()
    for epoch in range(8):
        dataset.set_epoch(epoch)
        sample = dataset[0]["input_features"]
        matches = [i for i, features in enumerate(expected) if torch.equal(sample, features)]
        assert len(matches) == 1
        seen.add(matches[0])
    assert len(seen) > 1  # epochs draw different windows


def test_clap_augmentation_shifts_gain_and_time_and_leaves_the_cache_intact(tiny_release, esc_pairs):
    """Each sample's features are the clip's, rolled in time and shifted by a gain within the bound, drawn from
    (seed, epoch, index); the cached clean features are never changed by it."""
    from datasets import load_from_disk

    _, _, processor = tiny_release
    pairs = load_from_disk(str(esc_pairs)).select([0])
    clean = ClapPairSet(pairs, processor.feature_extractor)[0]["input_features"]
    augmented = ClapPairSet(
        pairs, processor.feature_extractor, seed=3, augmentation=LogMelAugmentation(6.0, True), cache_features=True
    )

    def gain_and_shift(sample):  # the (shift, gain) that turn the clean features into the sample
        for shift in range(clean.shape[-2]):
            difference = sample - torch.roll(clean, shift, dims=-2)
            if torch.allclose(difference, difference.mean().expand_as(difference), atol=1e-4):
                return shift, round(float(difference.mean()), 3)
        return None

    draws = []
    for epoch in range(4):
        augmented.set_epoch(epoch)
        sample = augmented[0]["input_features"]
        draw = gain_and_shift(sample)
        assert draw is not None and abs(draw[1]) <= 6.0
        assert torch.equal(augmented[0]["input_features"], sample)  # same (seed, epoch, index): same draw
        draws.append(draw)
    assert len(set(draws)) > 1
    assert torch.equal(augmented._cache[pairs[0]["audio"]["path"]], clean)


def test_clap_batches_are_random_draws_not_caption_length_groups(tiny_checkpoints, esc_pairs, tmp_path):
    # a class's phrasings have similar lengths: length-grouped batches would make them each other's negatives
    from accelerate import Accelerator

    from paircap.training.loop import build_dataloader
    from paircap.training.stage_setups import clap_contrastive_setup

    clip = Dataset.load_from_disk(str(esc_pairs))[0]
    rows = [{**clip, "pair_id": f"p/{n}", "caption": " ".join(["word"] * n)} for n in range(1, 65)]
    Dataset.from_list(rows).save_to_disk(str(tmp_path / "pairs"))
    clap, _ = tiny_checkpoints
    cfg = stage_config(
        tmp_path, "clap", stage="clap_contrastive", model_name_or_path=str(clap), train_pairs=[str(tmp_path / "pairs")]
    )
    setup = clap_contrastive_setup(cfg, Accelerator(cpu=True))
    _, sampler = build_dataloader(cfg, setup.train, setup.collator, shuffle=True)
    spreads = [max(batch) - min(batch) for batch in sampler.batches(0)]  # index n holds a caption of n + 1 words
    assert len(spreads) == 8 and sum(spreads) / len(spreads) > 30, spreads  # grouped: < 8; random draws: ~50


# ---- teacher distillation in clap_contrastive ----------------------------------------------------------------------


def write_targets(path, audio_ids, dims=(6, 5)) -> DistillTargets:
    rng = np.random.default_rng(0)
    targets = DistillTargets(
        tuple(audio_ids),
        torch.from_numpy(rng.standard_normal((len(audio_ids), dims[0])).astype(np.float32)),
        torch.from_numpy(rng.uniform(size=(len(audio_ids), dims[1])).astype(np.float32)),
    )
    targets.save(path)
    return targets


BAD_TARGETS = {  # file name: (content, the error's words)
    "missing.npz": (None, "no such distillation targets file"),
    "text.npz": (b"not an archive", "not a distillation targets .npz file"),
    "no_embeddings.npz": ({"audio_ids": np.array(["a"])}, "no `embeddings` array"),
    "short.npz": ({"audio_ids": np.array(["a", "b"]), "embeddings": np.zeros((1, 3), np.float32)}, "with 2 rows"),
    "nan.npz": ({"audio_ids": np.array(["a"]), "embeddings": np.full((1, 3), np.nan, np.float32)}, "NaN or infinite"),
    "repeat.npz": ({"audio_ids": np.array(["a", "a"]), "embeddings": np.zeros((2, 3), np.float32)}, "repeats an id"),
    "tags.npz": (
        {
            "audio_ids": np.array(["a"]),
            "embeddings": np.zeros((1, 3), np.float32),
            "probabilities": np.ones((1, 2)) * 2,
        },
        r"must lie in \[0, 1\]",
    ),
}


def test_distillation_targets_round_trip_and_a_bad_file_is_named(tmp_path):
    written = write_targets(tmp_path / "targets.npz", ["a", "b", "c"])
    read = DistillTargets.load(tmp_path / "targets.npz")
    assert read.audio_ids == ("a", "b", "c") and torch.equal(read.probabilities, written.probabilities)
    rows = read.rows_for(["c", "a", "c"], "targets.npz")
    assert torch.equal(rows["distill_embeddings"], written.embeddings[[2, 0, 2]])
    with pytest.raises(ValueError, match=r"targets.npz: no targets for 1 training clips, e.g. \['z'\]"):
        read.rows_for(["a", "z"], "targets.npz")
    for name, (content, problem) in BAD_TARGETS.items():
        if isinstance(content, bytes):
            (tmp_path / name).write_bytes(content)
        elif content is not None:
            np.savez(tmp_path / name, **content)
        with pytest.raises(ValueError, match=rf"{name}: .*{problem}"):
            DistillTargets.load(tmp_path / name)


def test_distillation_loss_adds_its_terms_to_the_contrastive_loss(tiny_checkpoints, esc_pairs, tmp_path):
    clap, _ = tiny_checkpoints
    pairs = load_from_disk(str(esc_pairs))
    targets = write_targets(tmp_path / "targets.npz", pairs["audio_id"])
    dataset = ClapPairSet(
        pairs, ClapFeatureExtractor.from_pretrained(clap), targets=targets.rows_for(pairs["audio_id"], "t")
    )
    batch = ClapPairCollator(AutoTokenizer.from_pretrained(clap))([dataset[i] for i in range(4)])
    assert batch["distill_embeddings"].shape == (4, 6) and batch["distill_probabilities"].shape == (4, 5)
    torch.manual_seed(0)
    model = ClapWithDistillation(ClapModel.from_pretrained(clap), 6, 5, weight=2.0, tag_weight=0.5).eval()
    inputs = {key: value for key, value in batch.items() if not key.startswith("distill_")}
    with torch.no_grad():
        contrastive = model.clap(**inputs, return_loss=True)
        audio = contrastive.audio_embeds
        cosine = 1 - torch.nn.functional.cosine_similarity(model.embedding_head(audio), batch["distill_embeddings"])
        tags = torch.nn.functional.binary_cross_entropy_with_logits(
            model.tag_head(audio), batch["distill_probabilities"]
        )
        assert torch.allclose(model(**batch), contrastive.loss + 2.0 * (cosine.mean() + 0.5 * tags), atol=1e-6)
        assert torch.allclose(model(**inputs), contrastive.loss)  # validation batches carry no targets


def test_clap_stage_distils_and_exports_the_clap_without_its_heads(tiny_checkpoints, esc_pairs, tmp_path):
    clap, _ = tiny_checkpoints
    write_targets(tmp_path / "targets.npz", load_from_disk(str(esc_pairs))["audio_id"])
    cfg = stage_config(
        tmp_path, "clap", stage="clap_contrastive", model_name_or_path=str(clap), train_pairs=[str(esc_pairs)],
        validation_pairs=[str(esc_pairs)], max_steps=4, eval_every=4, distill_targets=str(tmp_path / "targets.npz"),
        distill_weight=5.0,
    )  # fmt: skip
    release = train(cfg)
    log = [json.loads(line) for line in (tmp_path / "clap" / "log.jsonl").read_text().splitlines()]
    validation = [line["validation_loss"] for line in log if "validation_loss" in line]
    assert logged_losses(tmp_path / "clap")[0] > validation[0] + 2.0  # + 5 x (cosine distance ~1 + tag BCE ~0.7)
    start = ClapModel.from_pretrained(clap).state_dict()
    saved = weights(release)
    assert set(saved) <= set(start) and not any("head" in name for name in saved)
    ClapModel.from_pretrained(release)
    assert any(not torch.equal(value, start[name]) for name, value in saved.items())


def test_distill_targets_belong_to_the_clap_stage(tiny_checkpoints, esc_pairs, tmp_path):
    with pytest.raises(ValueError, match="distill_targets is a clap_contrastive setting"):
        stage_config(tmp_path, "lm", stage="lm_text", model_name_or_path="x", train_pairs=["p"], distill_targets="t")
    clap, _ = tiny_checkpoints
    audio_ids = load_from_disk(str(esc_pairs))["audio_id"]
    write_targets(tmp_path / "targets.npz", audio_ids[1:])
    cfg = stage_config(
        tmp_path, "clap", stage="clap_contrastive", model_name_or_path=str(clap), train_pairs=[str(esc_pairs)],
        max_steps=1, distill_targets=str(tmp_path / "targets.npz"),
    )  # fmt: skip
    with pytest.raises(ValueError, match=rf"targets.npz: no targets for 1 training clips, e.g. \['{audio_ids[0]}'\]"):
        train(cfg)


def test_clap_stage_learns_its_audio_tower_at_the_scaled_rate_or_freezes_it(tiny_checkpoints, esc_pairs, tmp_path):
    clap, _ = tiny_checkpoints
    model = ClapModel.from_pretrained(clap)
    tower = {id(parameter) for parameter in model.audio_model.parameters()}
    cfg = stage_config(
        tmp_path, "scaled", stage="clap_contrastive", model_name_or_path=str(clap), train_pairs=[str(esc_pairs)],
        audio_tower_lr_scale=0.1,
    )  # fmt: skip
    fast, slow = clap_parameter_groups(cfg, model, model)
    assert {id(p) for p in slow["params"]} == tower and slow["lr"] == pytest.approx(3e-4) and fast["lr"] == 3e-3
    assert len(fast["params"]) + len(slow["params"]) == len(list(model.parameters()))
    cfg = stage_config(
        tmp_path, "frozen", stage="clap_contrastive", model_name_or_path=str(clap), train_pairs=[str(esc_pairs)],
        max_steps=2, audio_tower_lr_scale=0.0,
    )  # fmt: skip
    start, trained = model.state_dict(), ClapModel.from_pretrained(train(cfg)).state_dict()
    moved = {name for name, value in trained.items() if not torch.equal(value, start[name])}
    assert moved and not any(name.startswith("audio_model.") for name in moved)
    assert any(name.startswith("audio_projection.") for name in moved)
    with pytest.raises(ValueError, match="audio_tower_lr_scale is a clap_contrastive setting"):
        stage_config(
            tmp_path, "lm", stage="lm_text", model_name_or_path="x", train_pairs=["p"], audio_tower_lr_scale=0.5
        )
